//! The five variants every configuration is measured on: a protocol (HTTP/1.1 with `wrk`,
//! HTTP/2 and unary gRPC with `h2load`) on a route (Envoy's `direct_response`, or proxied to the
//! upstream).

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Http1,
    Http2,
    /// Unary gRPC calls over HTTP/2 (h2load with a framed empty message), answered by the
    /// upstream with `grpc-status: 0` in trailers.
    Grpc,
}

impl Protocol {
    /// The protocol the measured Envoy sees downstream.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// A `direct_response` route: Envoy answers itself.
    Direct,
    /// A route to the upstream.
    Proxied,
}

/// One protocol on one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Variant {
    pub protocol: Protocol,
    pub route: Route,
}

impl Variant {
    pub const ALL: [Variant; 5] = [
        Variant {
            protocol: Protocol::Http1,
            route: Route::Direct,
        },
        Variant {
            protocol: Protocol::Http1,
            route: Route::Proxied,
        },
        Variant {
            protocol: Protocol::Http2,
            route: Route::Direct,
        },
        Variant {
            protocol: Protocol::Http2,
            route: Route::Proxied,
        },
        Variant {
            protocol: Protocol::Grpc,
            route: Route::Proxied,
        },
    ];

    pub fn label(self) -> &'static str {
        match (self.protocol, self.route) {
            (Protocol::Http1, Route::Direct) => "HTTP/1.1 direct_response",
            (Protocol::Http1, Route::Proxied) => "HTTP/1.1 proxied",
            (Protocol::Http2, Route::Direct) => "HTTP/2 direct_response",
            (Protocol::Http2, Route::Proxied) => "HTTP/2 proxied",
            (Protocol::Grpc, Route::Direct) => "gRPC direct_response",
            (Protocol::Grpc, Route::Proxied) => "gRPC proxied",
        }
    }

    pub fn short(self) -> &'static str {
        match (self.protocol, self.route) {
            (Protocol::Http1, Route::Direct) => "h1 direct",
            (Protocol::Http1, Route::Proxied) => "h1 proxied",
            (Protocol::Http2, Route::Direct) => "h2 direct",
            (Protocol::Http2, Route::Proxied) => "h2 proxied",
            (Protocol::Grpc, Route::Direct) => "grpc direct",
            (Protocol::Grpc, Route::Proxied) => "grpc proxied",
        }
    }

    /// The request path on the measured Envoy.
    pub fn path(self) -> &'static str {
        match (self.protocol, self.route) {
            (Protocol::Grpc, Route::Direct) => "/direct/mesh.bench.Bench/Call",
            (Protocol::Grpc, Route::Proxied) => "/proxied/mesh.bench.Bench/Call",
            (_, Route::Direct) => "/direct",
            (_, Route::Proxied) => "/proxied",
        }
    }
}
