//! Which finished calls are failures.
//!
//! `failure_on` names HTTP outcomes: `"5xx"`, `"4xx"`, `"gateway-error"` (502, 503, 504),
//! `"reset"` (the upstream reset the stream or closed the connection: Envoy flags UR, UC, and UPE,
//! which is what an HTTP/1.1 upstream that dies in the middle of a chunked body produces),
//! `"connect-failure"` (UF), `"timeout"` (UT: the router's timeout fired), and explicit codes
//! such as `"429"` or `"503"`. `grpc_failure_on` names gRPC statuses as in gRPC's code list,
//! lowercase with dashes (`"unavailable"`, `"deadline-exceeded"`), or by number (`"14"`).

use serde::{Deserialize, Deserializer};

/// Envoy response flags (the `response.flags` bitmask).
pub mod flags {
    pub const UPSTREAM_REQUEST_TIMEOUT: u64 = 0x4;
    pub const UPSTREAM_REMOTE_RESET: u64 = 0x10;
    pub const UPSTREAM_CONNECTION_FAILURE: u64 = 0x20;
    pub const UPSTREAM_CONNECTION_TERMINATION: u64 = 0x40;
    /// UPE: Envoy 1.40 reports an HTTP/1.1 upstream that closes its connection in the middle of
    /// a chunked response body as a protocol error (`upstream_reset_after_response_started
    /// {protocol_error}`), not as UC.
    pub const UPSTREAM_PROTOCOL_ERROR: u64 = 0x80_0000;
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailureOn {
    pub any_5xx: bool,
    pub any_4xx: bool,
    pub gateway_error: bool,
    pub reset: bool,
    pub connect_failure: bool,
    pub timeout: bool,
    pub codes: Vec<u16>,
}

impl FailureOn {
    pub fn parse(names: &[String]) -> Result<Self, String> {
        let mut f = FailureOn::default();
        for n in names {
            match n.as_str() {
                "5xx" => f.any_5xx = true,
                "4xx" => f.any_4xx = true,
                "gateway-error" => f.gateway_error = true,
                "reset" => f.reset = true,
                "connect-failure" => f.connect_failure = true,
                "timeout" => f.timeout = true,
                code => match code.parse::<u16>() {
                    Ok(c) if (100..=599).contains(&c) && code.len() == 3 => f.codes.push(c),
                    _ => {
                        return Err(format!(
                            "{n:?} is not one of 5xx, 4xx, gateway-error, reset, connect-failure, timeout or an HTTP status code"
                        ))
                    }
                },
            }
        }
        Ok(f)
    }

    /// Does a call that ended with this HTTP status and these Envoy flags count as failed?
    pub fn matches(&self, status: u64, response_flags: u64) -> bool {
        (self.any_5xx && (500..600).contains(&status))
            || (self.any_4xx && (400..500).contains(&status))
            || (self.gateway_error && matches!(status, 502..=504))
            || (self.reset
                && response_flags
                    & (flags::UPSTREAM_REMOTE_RESET
                        | flags::UPSTREAM_CONNECTION_TERMINATION
                        | flags::UPSTREAM_PROTOCOL_ERROR)
                    != 0)
            || (self.connect_failure && response_flags & flags::UPSTREAM_CONNECTION_FAILURE != 0)
            || (self.timeout && response_flags & flags::UPSTREAM_REQUEST_TIMEOUT != 0)
            || self.codes.iter().any(|c| u64::from(*c) == status)
    }
}

const GRPC_NAMES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid-argument",
    "deadline-exceeded",
    "not-found",
    "already-exists",
    "permission-denied",
    "resource-exhausted",
    "failed-precondition",
    "aborted",
    "out-of-range",
    "unimplemented",
    "internal",
    "unavailable",
    "data-loss",
    "unauthenticated",
];

/// A set of gRPC status codes (bit n = code n).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrpcFailureOn(pub u32);

impl GrpcFailureOn {
    pub fn parse(names: &[String]) -> Result<Self, String> {
        let mut bits = 0u32;
        for n in names {
            let code = GRPC_NAMES
                .iter()
                .position(|g| g == n)
                .or_else(|| n.parse::<usize>().ok().filter(|c| *c < GRPC_NAMES.len() && !n.starts_with('+')))
                .ok_or_else(|| format!("{n:?} is not a gRPC status (e.g. \"unavailable\", \"deadline-exceeded\", \"14\")"))?;
            bits |= 1 << code;
        }
        Ok(GrpcFailureOn(bits))
    }

    pub fn matches(&self, grpc_status: u64) -> bool {
        grpc_status < 32 && self.0 & (1 << grpc_status) != 0
    }
}

pub fn default_failure_on() -> Vec<String> {
    ["5xx", "reset", "connect-failure", "timeout"]
        .map(String::from)
        .to_vec()
}

pub fn default_grpc_failure_on() -> Vec<String> {
    ["unavailable", "deadline-exceeded", "internal", "data-loss"]
        .map(String::from)
        .to_vec()
}

pub fn failure_on<'de, D: Deserializer<'de>>(de: D) -> Result<FailureOn, D::Error> {
    FailureOn::parse(&Vec::<String>::deserialize(de)?).map_err(serde::de::Error::custom)
}

pub fn grpc_failure_on<'de, D: Deserializer<'de>>(de: D) -> Result<GrpcFailureOn, D::Error> {
    GrpcFailureOn::parse(&Vec::<String>::deserialize(de)?).map_err(serde::de::Error::custom)
}

/// JSON Schema of `failure_on` and `grpc_failure_on` (feature `schema`, for `mesh-filters
/// schema`): exactly the names and numbers [`FailureOn::parse`] and [`GrpcFailureOn::parse`]
/// accept.
#[cfg(feature = "schema")]
mod schema {
    use super::{FailureOn, GrpcFailureOn, GRPC_NAMES};
    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
    use std::borrow::Cow;

    impl JsonSchema for FailureOn {
        fn schema_name() -> Cow<'static, str> {
            "FailureOn".into()
        }
        fn schema_id() -> Cow<'static, str> {
            "mesh_circuit_breaker::classify::FailureOn".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "array",
                "description": "HTTP outcomes that count as failures: `5xx`, `4xx`, `gateway-error` (502, 503, 504), `reset` (Envoy flags UR, UC, UPE), `connect-failure` (UF), `timeout` (UT: the router's timeout fired), or an HTTP status code from 100 to 599 such as \"429\".",
                "items": {
                    "type": "string",
                    "anyOf": [
                        {"enum": ["5xx", "4xx", "gateway-error", "reset", "connect-failure", "timeout"]},
                        {"pattern": "^[1-5][0-9][0-9]$"}
                    ]
                }
            })
        }
    }

    impl JsonSchema for GrpcFailureOn {
        fn schema_name() -> Cow<'static, str> {
            "GrpcFailureOn".into()
        }
        fn schema_id() -> Cow<'static, str> {
            "mesh_circuit_breaker::classify::GrpcFailureOn".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "array",
                "description": "gRPC statuses that count as failures, by name (lowercase with dashes, as in gRPC's code list) or by number (\"0\" to \"16\").",
                "items": {
                    "type": "string",
                    "anyOf": [
                        {"enum": GRPC_NAMES},
                        {"pattern": "^0*(1[0-6]|[0-9])$"}
                    ]
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_default_http_failures_are_5xx_resets_connect_failures_and_timeouts() {
        let f = FailureOn::parse(&default_failure_on()).unwrap();
        assert!(f.matches(503, 0));
        assert!(f.matches(500, 0));
        assert!(!f.matches(429, 0));
        assert!(!f.matches(200, 0));
        assert!(f.matches(0, flags::UPSTREAM_REMOTE_RESET));
        assert!(f.matches(503, flags::UPSTREAM_CONNECTION_FAILURE));
        assert!(f.matches(200, flags::UPSTREAM_REQUEST_TIMEOUT));
    }

    #[test]
    fn an_upstream_that_dies_mid_body_counts_as_a_reset() {
        // Envoy 1.40: an HTTP/1.1 upstream closing its connection inside a chunked body is
        // `200` with UPE; over HTTP/2 the same death is UR; a dead connection otherwise UC.
        let f = FailureOn::parse(&names(&["reset"])).unwrap();
        assert!(f.matches(200, flags::UPSTREAM_PROTOCOL_ERROR));
        assert!(f.matches(200, flags::UPSTREAM_REMOTE_RESET));
        assert!(f.matches(200, flags::UPSTREAM_CONNECTION_TERMINATION));
        let f = FailureOn::parse(&names(&["5xx"])).unwrap();
        assert!(
            !f.matches(200, flags::UPSTREAM_PROTOCOL_ERROR),
            "only with reset"
        );
    }

    #[test]
    fn explicit_codes_and_gateway_errors() {
        let f = FailureOn::parse(&names(&["429", "gateway-error"])).unwrap();
        assert!(f.matches(429, 0));
        assert!(f.matches(502, 0));
        assert!(!f.matches(500, 0));
        for bad in ["5XX", "42", "600", "+429", "oops", ""] {
            assert!(FailureOn::parse(&names(&[bad])).is_err(), "{bad}");
        }
    }

    #[test]
    fn grpc_statuses_by_name_or_number() {
        let g = GrpcFailureOn::parse(&default_grpc_failure_on()).unwrap();
        assert!(g.matches(14) && g.matches(4) && g.matches(13) && g.matches(15));
        assert!(!g.matches(0) && !g.matches(5) && !g.matches(99));
        let g = GrpcFailureOn::parse(&names(&["8"])).unwrap();
        assert!(g.matches(8));
        for bad in ["UNAVAILABLE", "17", "-1", "nope"] {
            assert!(GrpcFailureOn::parse(&names(&[bad])).is_err(), "{bad}");
        }
    }
}
