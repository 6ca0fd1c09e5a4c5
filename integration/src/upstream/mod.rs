//! Demo upstream service.
//!
//! One TCP port serves HTTP/1.1 and h2c (HTTP/2 with prior knowledge). Every request
//! except the admin paths under [`ADMIN_PREFIX`] is recorded (see [`Record`]) and then
//! answered according to its kind:
//!
//! **Plain HTTP** requests get `200 application/json` with the body
//! `{"service", "method", "path", "version", "headers", "attempt", "body_len"}`:
//! `headers` maps each lowercase header name to its value (repeated headers joined with
//! `,`), `attempt` is the value of `x-envoy-attempt-count` (or `null`), `version` is
//! `"HTTP/1.1"` or `"HTTP/2.0"` and `body_len` the request body size. Every response
//! carries `x-demo-service: <name>`.
//!
//! **gRPC** requests (`content-type: application/grpc*`, any path) get the first request
//! message echoed back as one length-prefixed frame, followed by trailers `grpc-status`
//! and `grpc-message`. The response headers carry `x-demo-seen-grpc-timeout` and
//! `x-demo-seen-x-envoy-expected-rq-timeout-ms` echoing those request headers when
//! present.
//!
//! # Controls
//!
//! Each control is a request header or a query parameter; the header wins when both are
//! present. A control with an unparseable value is answered with `400` (HTTP) or
//! `grpc-status: 3` (gRPC).
//!
//! | header                 | query           | effect |
//! |------------------------|-----------------|--------|
//! | `x-demo-sleep-ms`      | `sleep_ms`      | wait that long before answering |
//! | `x-demo-status`        | `status`        | HTTP status to answer (200..=599) |
//! | `x-demo-fail-attempts` | `fail_attempts` | answer 503 (gRPC: status 14) while `x-envoy-attempt-count` ≤ N (absent counts as 1) |
//! | `x-demo-fail-rate`     | `fail_rate`     | answer 503 (gRPC: status 14) with this probability (0..=1) |
//! | `x-demo-grpc-status`   | `grpc_status`   | gRPC status to answer; non-zero sends no message |
//! | `x-demo-grpc-message`  | `grpc_message`  | `grpc-message` for a non-zero gRPC status |
//! | `x-demo-trailers-only` | `trailers_only` | `1`: send the gRPC status as a trailers-only response |
//! | `x-demo-rejected-by`   | `rejected_by`   | HTTP: add `x-mesh-rejected-by: <value>` to the response, as a misbehaving upstream could |
//! | `x-demo-call`          | `call`          | HTTP: call the next hop, `GET http://HOST:PORT/PATH?QUERY`, before answering (below) |
//! | `x-demo-abort`         | `abort`         | after `sleep_ms`, cut the request short instead of answering (below) |
//!
//! **Calling the next hop** (`x-demo-call`, plain HTTP requests only) makes the service a
//! middle tier: after `sleep_ms`, and unless `fail_attempts`/`fail_rate` fail the request,
//! it sends `GET` to the URL over HTTP/1.1 (scheme `http` only; the query of the URL carries
//! the next hop's own controls, and a percent-encoded `call` in it chains further). It passes
//! on what a service in a mesh passes on: the trace context ([`PROPAGATED_HEADERS`]) as
//! received, and `x-envoy-expected-rq-timeout-ms` minus the time spent since the request
//! arrived. The echo then has a `call` member, `{"url", "status", "headers", "body"}` (`body`
//! as JSON when it parses, else text) or `{"url", "error"}`, and the service answers with the
//! next hop's status (`502` when the call failed) unless `status` is given.
//!
//! A non-zero `x-demo-grpc-status` is sent in trailers after the response headers unless
//! `x-demo-trailers-only: 1`. Failures injected by `fail_attempts`/`fail_rate` on gRPC
//! requests are trailers-only by default (that is the form a proxy can retry), unless
//! `x-demo-trailers-only: 0` asks for the status in trailers.
//!
//! **Aborting** (`x-demo-abort`, plain HTTP and gRPC alike) plays a service that dies while it
//! handles the request. `before-headers`: no answer at all; an HTTP/1.1 connection is closed, an
//! HTTP/2 stream is reset (`RST_STREAM`). `after-headers`: `200` response headers and the first
//! part of a body are sent, then, 50 ms later, the connection is closed (HTTP/1.1) or the stream
//! reset (HTTP/2) in the middle of the body. Any other value is answered with `400`. Aborted
//! requests are recorded like the others.
//!
//! # Admin paths
//!
//! `GET /__demo/requests` returns the records as a JSON list, `GET /__demo/count` the
//! number of records as a JSON number, `POST /__demo/reset` clears them. Requests to
//! admin paths are not recorded.
//!
//! # Modules
//!
//! This module holds the service (records, start and stop, the dispatch of a request and the
//! admin paths); `plain` answers plain HTTP (and calls the next hop), `grpc` answers gRPC,
//! `abort` cuts requests short on purpose and `controls` reads the controls of a request. The
//! server skeleton is [`crate::server`].

mod abort;
mod controls;
mod grpc;
mod plain;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::http::header::CONTENT_TYPE;
use ::http::request::Parts;
use ::http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::server::{Body, Server, Stop};
use controls::parse_header;
use plain::json_response;

pub use abort::Aborted;
pub(crate) use grpc::first_message;

/// Paths starting with this prefix are the admin API and are never recorded.
pub const ADMIN_PREFIX: &str = "/__demo/";

/// Request headers that gRPC responses echo back as `x-demo-seen-<name>`.
pub const ECHOED_GRPC_HEADERS: [&str; 2] = ["grpc-timeout", "x-envoy-expected-rq-timeout-ms"];

/// Request headers a service passes on when it calls the next hop (`x-demo-call`): the trace
/// context of every format the mesh's trace filter reads, and baggage.
pub const PROPAGATED_HEADERS: [&str; 11] = [
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "uber-trace-id",
    "grpc-trace-bin",
];

/// The deadline header a service passes on, less the time it spent (`x-demo-call`).
pub(super) const DEADLINE_HEADER: &str = "x-envoy-expected-rq-timeout-ms";

/// gRPC status codes used by the service.
pub(super) const GRPC_OK: u32 = 0;
pub(super) const GRPC_INVALID_ARGUMENT: u32 = 3;
pub(super) const GRPC_UNIMPLEMENTED: u32 = 12;
pub(super) const GRPC_INTERNAL: u32 = 13;
pub(super) const GRPC_UNAVAILABLE: u32 = 14;

/// One request received by the service.
#[derive(Debug, Clone)]
pub struct Record {
    /// Request method, e.g. `GET`.
    pub method: String,
    /// Path including the query string.
    pub path: String,
    /// All request headers in arrival order, lowercase names, values decoded lossily.
    pub headers: Vec<(String, String)>,
    /// When the request headers arrived.
    pub received_at: Instant,
    /// Value of `x-envoy-attempt-count`, when present and numeric.
    pub attempt: Option<u32>,
}

impl Record {
    pub(super) fn from_parts(parts: &Parts) -> Self {
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), controls::lossy(value)))
            .collect();
        Record {
            method: parts.method.as_str().to_owned(),
            path: controls::path_and_query(parts),
            headers,
            received_at: Instant::now(),
            attempt: parse_header(&parts.headers, "x-envoy-attempt-count"),
        }
    }

    /// First value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request was a gRPC request.
    pub fn is_grpc(&self) -> bool {
        self.header("content-type")
            .is_some_and(|v| v.starts_with("application/grpc"))
    }

    /// JSON form served by `GET /__demo/requests`; `received_ms` counts from `origin`.
    pub fn to_json(&self, origin: Instant) -> Value {
        let headers: Vec<Value> = self.headers.iter().map(|(n, v)| json!([n, v])).collect();
        json!({
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "attempt": self.attempt,
            "received_ms": self.received_at.saturating_duration_since(origin).as_secs_f64() * 1000.0,
        })
    }
}

/// What the handlers of one service share.
pub(super) struct Shared {
    pub(super) name: String,
    started: Instant,
    pub(super) records: Mutex<Vec<Record>>,
    rng: Mutex<u64>,
    pub(super) stop: Stop,
}

impl Shared {
    /// Uniform value in [0, 1) from an xorshift64* generator.
    pub(super) fn random(&self) -> f64 {
        let mut state = lock(&self.rng);
        let mut x = *state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *state = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running demo service. Dropping it (or calling [`Upstream::shutdown`]) closes the
/// listener, all connections and cuts short handlers that are still sleeping.
pub struct Upstream {
    server: Server,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.shared.name)
            .field("addr", &self.server.addr())
            .finish()
    }
}

/// Starts a demo service called `name` on `addr` (port 0 picks a free port; see
/// [`Upstream::addr`]). Must be called inside a tokio runtime.
pub async fn spawn(name: &str, addr: SocketAddr) -> std::io::Result<Upstream> {
    // Each service its own random sequence (fail_rate), seeded from the clock.
    static SERVICES: AtomicU64 = AtomicU64::new(0);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9_7F4A_7C15)
        ^ SERVICES.fetch_add(1, Ordering::Relaxed).rotate_left(32);
    let state = |stop| Shared {
        name: name.to_owned(),
        started: Instant::now(),
        records: Mutex::new(Vec::new()),
        rng: Mutex::new(seed | 1),
        stop,
    };
    let (server, shared) = Server::http(addr, state, abort::serve_or_abort).await?;
    Ok(Upstream { server, shared })
}

/// [`spawn`] on a free loopback port.
pub async fn local(name: &str) -> std::io::Result<Upstream> {
    spawn(name, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

impl Upstream {
    /// The address the service listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The service name given to [`spawn`].
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// When the service started; the origin of `received_ms` in the admin JSON.
    pub fn started(&self) -> Instant {
        self.shared.started
    }

    /// Every recorded request, in arrival order.
    pub fn requests(&self) -> Vec<Record> {
        lock(&self.shared.records).clone()
    }

    /// Number of recorded requests.
    pub fn count(&self) -> usize {
        lock(&self.shared.records).len()
    }

    /// Number of recorded requests whose path (with query) starts with `prefix`.
    pub fn count_path_prefix(&self, prefix: &str) -> usize {
        lock(&self.shared.records)
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    }

    /// Forgets all recorded requests.
    pub fn clear(&self) {
        lock(&self.shared.records).clear();
    }

    /// Waits until at least `n` requests were recorded; false if `timeout` passed first.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> bool {
        crate::wait::until(timeout, || self.count() >= n).await
    }

    /// Stops the service and waits until its listener and connections are closed.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

pub(super) async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    if parts.uri.path().starts_with(ADMIN_PREFIX) {
        return admin(shared, &parts);
    }
    let record = Record::from_parts(&parts);
    let attempt = record.attempt;
    lock(&shared.records).push(record);
    if is_grpc(&parts.headers) {
        grpc::serve_grpc(shared, &parts, body, attempt).await
    } else {
        plain::serve_http(shared, &parts, body, attempt).await
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

// ---------------------------------------------------------------------------------------
// Admin API

fn admin(shared: &Shared, parts: &Parts) -> Response<Body> {
    let path = parts.uri.path();
    let method = &parts.method;
    match path.strip_prefix(ADMIN_PREFIX) {
        Some("requests") if method == Method::GET || method == Method::HEAD => {
            let list: Vec<Value> = lock(&shared.records)
                .iter()
                .map(|r| r.to_json(shared.started))
                .collect();
            json_response(shared, StatusCode::OK, &Value::Array(list))
        }
        Some("count") if method == Method::GET || method == Method::HEAD => {
            let count = lock(&shared.records).len();
            json_response(shared, StatusCode::OK, &json!(count))
        }
        Some("reset") if method == Method::POST => {
            let cleared = {
                let mut records = lock(&shared.records);
                let n = records.len();
                records.clear();
                n
            };
            json_response(shared, StatusCode::OK, &json!({ "cleared": cleared }))
        }
        Some("requests" | "count" | "reset") => json_response(
            shared,
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({ "service": shared.name, "error": format!("method {method} not allowed on {path}") }),
        ),
        _ => json_response(
            shared,
            StatusCode::NOT_FOUND,
            &json!({ "service": shared.name, "error": format!("unknown admin path {path}") }),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::controls::percent_decode;
    use super::grpc::percent_encode_grpc_message;
    use super::plain::split_http_url;
    use super::*;
    use crate::client::grpc::frame;

    #[test]
    fn frames_round_trip() {
        let framed = frame(b"hello");
        assert_eq!(&framed[..], b"\0\0\0\0\x05hello");
        assert_eq!(first_message(&framed).unwrap(), b"hello");
        assert!(first_message(b"").is_err());
        assert!(first_message(b"\0\0\0").is_err());
        assert!(first_message(b"\0\0\0\0\x09short").is_err());
        assert_eq!(
            first_message(b"\x01\0\0\0\x01x").unwrap_err().0,
            GRPC_UNIMPLEMENTED
        );
    }

    #[test]
    fn call_urls_split_into_authority_and_path() {
        assert_eq!(
            split_http_url("http://127.0.0.1:15001/learner/x?sleep_ms=5").unwrap(),
            (
                "127.0.0.1:15001".to_owned(),
                "/learner/x?sleep_ms=5".to_owned()
            )
        );
        assert_eq!(
            split_http_url("http://auth-sidecar").unwrap(),
            ("auth-sidecar:80".to_owned(), "/".to_owned())
        );
        assert!(split_http_url("https://auth-sidecar/x").is_err());
        assert!(split_http_url("/relative").is_err());
        assert!(split_http_url("not a url").is_err());
    }

    #[tokio::test]
    async fn a_call_reaches_the_next_hop_with_trace_context_and_the_remaining_deadline() {
        let next = spawn("next", "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let front = spawn("front", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let url = format!("http://{}/b?status=201", next.addr());
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let resp = crate::client::get(
            front.addr(),
            "/a?sleep_ms=50",
            &[
                ("x-demo-call", url.as_str()),
                ("traceparent", traceparent),
                ("x-envoy-expected-rq-timeout-ms", "1000"),
                ("x-other", "not passed on"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 201, "the next hop's status");
        let call = &resp.json()["call"];
        assert_eq!(call["status"], 201);
        assert_eq!(call["body"]["service"], "next");
        let seen = &call["body"]["headers"];
        assert_eq!(seen["traceparent"], traceparent);
        assert!(seen.get("x-other").is_none());
        let budget: u64 = seen["x-envoy-expected-rq-timeout-ms"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((500..=950).contains(&budget), "budget {budget}");

        let resp = crate::client::get(
            front.addr(),
            "/a?status=200",
            &[("x-demo-call", "http://127.0.0.1:1/unreachable")],
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 200, "an explicit status wins");
        assert!(resp.json()["call"]["error"].is_string());
        let resp = crate::client::get(
            front.addr(),
            "/a",
            &[("x-demo-call", "http://127.0.0.1:1/unreachable")],
        )
        .await
        .unwrap();
        assert_eq!(resp.status, 502);
    }

    #[test]
    fn percent_coding() {
        assert_eq!(percent_decode("a%20b+c%zz%"), "a b c%zz%");
        assert_eq!(percent_encode_grpc_message("50% ok\n"), "50%25 ok%0A");
    }
}
