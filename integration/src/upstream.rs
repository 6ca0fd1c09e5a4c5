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

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
const DEADLINE_HEADER: &str = "x-envoy-expected-rq-timeout-ms";

/// gRPC status codes used by the service.
const GRPC_OK: u32 = 0;
const GRPC_INVALID_ARGUMENT: u32 = 3;
const GRPC_UNIMPLEMENTED: u32 = 12;
const GRPC_INTERNAL: u32 = 13;
const GRPC_UNAVAILABLE: u32 = 14;

use crate::client::grpc::frame;
use crate::serve::{self, Body};

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
    fn from_parts(parts: &Parts) -> Self {
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), lossy(value)))
            .collect();
        Record {
            method: parts.method.as_str().to_owned(),
            path: path_and_query(parts),
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

struct Shared {
    name: String,
    started: Instant,
    records: Mutex<Vec<Record>>,
    rng: Mutex<u64>,
    stop: watch::Receiver<bool>,
}

impl Shared {
    /// Uniform value in [0, 1) from an xorshift64* generator.
    fn random(&self) -> f64 {
        let mut state = lock(&self.rng);
        let mut x = *state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *state = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (r >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Sleeps for `duration`; returns false when the service was shut down meanwhile.
    async fn sleep(&self, duration: Duration) -> bool {
        let mut stop = self.stop.clone();
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            _ = stop.wait_for(|stopped| *stopped) => false,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running demo service. Dropping it (or calling [`Upstream::shutdown`]) closes the
/// listener, all connections and cuts short handlers that are still sleeping.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.shared.name)
            .field("addr", &self.addr)
            .finish()
    }
}

/// Starts a demo service called `name` on `addr` (port 0 picks a free port; see
/// [`Upstream::addr`]). Must be called inside a tokio runtime.
pub async fn spawn(name: &str, addr: SocketAddr) -> std::io::Result<Upstream> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9_7F4A_7C15)
        ^ u64::from(addr.port()).rotate_left(32);
    let shared = Arc::new(Shared {
        name: name.to_owned(),
        started: Instant::now(),
        records: Mutex::new(Vec::new()),
        rng: Mutex::new(seed | 1),
        stop: stop_rx,
    });
    let task = tokio::spawn(serve::accept_loop_fallible(
        listener,
        Arc::clone(&shared),
        serve_or_abort,
    ));
    Ok(Upstream {
        addr,
        shared,
        stop,
        task: Some(task),
    })
}

impl Upstream {
    /// The address the service listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
        let deadline = Instant::now() + timeout;
        loop {
            if self.count() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the service and waits until its listener and connections are closed.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------
// Serving, and aborting on purpose

/// The error a handler returns to cut a request short (`x-demo-abort`): hyper then closes the
/// HTTP/1.1 connection or resets the HTTP/2 stream.
#[derive(Debug)]
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("demo: request aborted on purpose (x-demo-abort)")
    }
}

impl std::error::Error for Aborted {}

/// Response bodies of the service: the usual ones, or one that fails mid-stream.
type ServiceBody = BoxBody<Bytes, Aborted>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Abort {
    BeforeHeaders,
    AfterHeaders,
}

async fn serve_or_abort(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ServiceBody>, Aborted> {
    let (parts, body) = request.into_parts();
    let abort = if parts.uri.path().starts_with(ADMIN_PREFIX) {
        None
    } else {
        Controls::new(&parts).get("x-demo-abort", "abort")
    };
    let Some(abort) = abort else {
        let response = handle(&shared, Request::from_parts(parts, body)).await;
        return Ok(response.map(|b| b.map_err(|never| match never {}).boxed()));
    };
    lock(&shared.records).push(Record::from_parts(&parts));
    let plan = match abort.trim() {
        "before-headers" => Ok(Abort::BeforeHeaders),
        "after-headers" => Ok(Abort::AfterHeaders),
        other => Err(format!(
            "bad x-demo-abort / abort value {other:?}: expected before-headers or after-headers"
        )),
    };
    let sleep_ms = Controls::new(&parts).number::<u64>("x-demo-sleep-ms", "sleep_ms");
    let (plan, sleep_ms) = match (plan, sleep_ms) {
        (Ok(plan), Ok(sleep_ms)) => (plan, sleep_ms),
        (Err(msg), _) | (_, Err(msg)) => {
            let response = error_response(&shared, StatusCode::BAD_REQUEST, msg);
            return Ok(response.map(|b| b.map_err(|never| match never {}).boxed()));
        }
    };
    if let Some(ms) = sleep_ms {
        if !shared.sleep(Duration::from_millis(ms)).await {
            return Err(Aborted);
        }
    }
    match plan {
        Abort::BeforeHeaders => Err(Aborted),
        Abort::AfterHeaders => {
            let mut response = Response::new(BodyExt::boxed(AbortMidBody::default()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            add_service_header(&shared, response.headers_mut());
            Ok(response)
        }
    }
}

/// A body that sends one chunk, waits 50 ms (so the headers and the chunk are on the wire) and
/// then fails.
#[derive(Default)]
struct AbortMidBody {
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for AbortMidBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match self.wait.as_mut() {
            None => {
                self.wait = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                    b"the first part of a body that never ends\n",
                )))))
            }
            Some(wait) => wait.as_mut().poll(cx).map(|()| Some(Err(Aborted))),
        }
    }
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    if parts.uri.path().starts_with(ADMIN_PREFIX) {
        return admin(shared, &parts);
    }
    let record = Record::from_parts(&parts);
    let attempt = record.attempt;
    lock(&shared.records).push(record);
    if is_grpc(&parts.headers) {
        serve_grpc(shared, &parts, body, attempt).await
    } else {
        serve_http(shared, &parts, body, attempt).await
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

// ---------------------------------------------------------------------------------------
// Plain HTTP

async fn serve_http(
    shared: &Shared,
    parts: &Parts,
    body: Incoming,
    attempt: Option<u32>,
) -> Response<Body> {
    let arrived = Instant::now();
    let body_len = match body.collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(err) => {
            return error_response(
                shared,
                StatusCode::BAD_REQUEST,
                format!("reading request body: {err}"),
            )
        }
    };
    let plan = match HttpPlan::from_request(parts) {
        Ok(plan) => plan,
        Err(msg) => return error_response(shared, StatusCode::BAD_REQUEST, msg),
    };
    if let Some(ms) = plan.sleep_ms {
        if !shared.sleep(Duration::from_millis(ms)).await {
            return error_response(
                shared,
                StatusCode::SERVICE_UNAVAILABLE,
                "service shutting down".to_owned(),
            );
        }
    }
    let effective_attempt = attempt.unwrap_or(1);
    let failed = plan.fail_attempts.is_some_and(|n| effective_attempt <= n)
        || plan.fail_rate.is_some_and(|rate| shared.random() < rate);
    // A failing service fails before it calls on.
    let call = match plan.call.as_deref() {
        Some(url) if !failed => Some(call_next_hop(url, &parts.headers, arrived).await),
        _ => None,
    };
    let status = if failed {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        plan.status
            .or_else(|| call.as_ref().map(|(status, _)| *status))
            .unwrap_or(StatusCode::OK)
    };

    let mut echo = json!({
        "service": shared.name,
        "method": parts.method.as_str(),
        "path": path_and_query(parts),
        "version": format!("{:?}", parts.version),
        "headers": Value::Object(joined_headers(&parts.headers)),
        "attempt": attempt,
        "body_len": body_len,
    });
    if let (Some((_, call)), Value::Object(echo)) = (call, &mut echo) {
        echo.insert("call".to_owned(), call);
    }
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        let mut response = Response::new(Empty::new().boxed());
        *response.status_mut() = status;
        add_service_header(shared, response.headers_mut());
        return response;
    }
    let mut response = json_response(shared, status, &echo);
    if let Some(value) = plan
        .rejected_by
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        response.headers_mut().insert("x-mesh-rejected-by", value);
    }
    response
}

struct HttpPlan {
    sleep_ms: Option<u64>,
    status: Option<StatusCode>,
    fail_attempts: Option<u32>,
    fail_rate: Option<f64>,
    rejected_by: Option<String>,
    call: Option<String>,
}

impl HttpPlan {
    fn from_request(parts: &Parts) -> Result<Self, String> {
        let controls = Controls::new(parts);
        let status = match controls.number::<u16>("x-demo-status", "status")? {
            None => None,
            Some(code) if (200..=599).contains(&code) => {
                Some(StatusCode::from_u16(code).map_err(|e| format!("status {code}: {e}"))?)
            }
            Some(code) => return Err(format!("status {code} is outside 200..=599")),
        };
        Ok(HttpPlan {
            sleep_ms: controls.number("x-demo-sleep-ms", "sleep_ms")?,
            status,
            fail_attempts: controls.number("x-demo-fail-attempts", "fail_attempts")?,
            fail_rate: controls.rate("x-demo-fail-rate", "fail_rate")?,
            rejected_by: controls.get("x-demo-rejected-by", "rejected_by"),
            call: controls.get("x-demo-call", "call"),
        })
    }
}

/// Calls the next hop for `x-demo-call`: its status (`502` when the call failed) and the
/// `call` member of the echo.
async fn call_next_hop(url: &str, incoming: &HeaderMap, arrived: Instant) -> (StatusCode, Value) {
    match try_call(url, incoming, arrived).await {
        Ok(response) => {
            let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY);
            let headers: Map<String, Value> = response
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), Value::String(v.clone())))
                .collect();
            let body = response
                .try_json()
                .unwrap_or_else(|_| Value::String(response.text()));
            let call =
                json!({"url": url, "status": response.status, "headers": headers, "body": body});
            (status, call)
        }
        Err(err) => (
            StatusCode::BAD_GATEWAY,
            json!({"url": url, "error": err.to_string()}),
        ),
    }
}

async fn try_call(
    url: &str,
    incoming: &HeaderMap,
    arrived: Instant,
) -> crate::client::Result<crate::client::Response> {
    let (authority, path) = split_http_url(url)?;
    let addr = tokio::net::lookup_host(&authority)
        .await?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut headers: Vec<(&str, String)> = vec![("host", authority.clone())];
    for name in PROPAGATED_HEADERS {
        for value in incoming.get_all(name) {
            headers.push((name, lossy(value)));
        }
    }
    if let Some(budget) = parse_header::<u64>(incoming, DEADLINE_HEADER) {
        let spent = u64::try_from(arrived.elapsed().as_millis()).unwrap_or(u64::MAX);
        headers.push((DEADLINE_HEADER, budget.saturating_sub(spent).to_string()));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    crate::client::request(
        addr,
        crate::client::Proto::Http1,
        "GET",
        &path,
        &headers,
        None,
    )
    .await
}

/// `http://HOST[:PORT]/PATH?QUERY` as (`HOST:PORT`, `/PATH?QUERY`); the port defaults to 80.
fn split_http_url(url: &str) -> Result<(String, String), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("call {url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("call {url:?}: only http:// URLs are supported"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("call {url:?} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    Ok((format!("{host}:{port}"), path))
}

fn joined_headers(headers: &HeaderMap) -> Map<String, Value> {
    let mut map = Map::new();
    for (name, value) in headers {
        let value = lossy(value);
        match map.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    map
}

// ---------------------------------------------------------------------------------------
// gRPC

struct GrpcPlan {
    sleep_ms: Option<u64>,
    grpc_status: u32,
    grpc_message: Option<String>,
    trailers_only: Option<bool>,
    fail_attempts: Option<u32>,
    fail_rate: Option<f64>,
}

impl GrpcPlan {
    fn from_request(parts: &Parts) -> Result<Self, String> {
        let controls = Controls::new(parts);
        Ok(GrpcPlan {
            sleep_ms: controls.number("x-demo-sleep-ms", "sleep_ms")?,
            grpc_status: controls
                .number("x-demo-grpc-status", "grpc_status")?
                .unwrap_or(GRPC_OK),
            grpc_message: controls.get("x-demo-grpc-message", "grpc_message"),
            trailers_only: controls.flag("x-demo-trailers-only", "trailers_only")?,
            fail_attempts: controls.number("x-demo-fail-attempts", "fail_attempts")?,
            fail_rate: controls.rate("x-demo-fail-rate", "fail_rate")?,
        })
    }
}

async fn serve_grpc(
    shared: &Shared,
    parts: &Parts,
    body: Incoming,
    attempt: Option<u32>,
) -> Response<Body> {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    add_service_header(shared, &mut headers);
    for name in ECHOED_GRPC_HEADERS {
        if let Some(value) = parts.headers.get(name) {
            if let Ok(echo_name) = HeaderName::from_bytes(format!("x-demo-seen-{name}").as_bytes())
            {
                headers.insert(echo_name, value.clone());
            }
        }
    }

    let request_body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            let msg = format!("reading request body: {err}");
            return grpc_status_response(headers, GRPC_INTERNAL, &msg, true);
        }
    };
    let plan = match GrpcPlan::from_request(parts) {
        Ok(plan) => plan,
        Err(msg) => return grpc_status_response(headers, GRPC_INVALID_ARGUMENT, &msg, true),
    };
    if let Some(ms) = plan.sleep_ms {
        if !shared.sleep(Duration::from_millis(ms)).await {
            return grpc_status_response(headers, GRPC_UNAVAILABLE, "service shutting down", true);
        }
    }

    let effective_attempt = attempt.unwrap_or(1);
    if let Some(n) = plan.fail_attempts.filter(|n| effective_attempt <= *n) {
        let msg = format!("demo: failing attempt {effective_attempt} (fail_attempts {n})");
        let trailers_only = plan.trailers_only.unwrap_or(true);
        return grpc_status_response(headers, GRPC_UNAVAILABLE, &msg, trailers_only);
    }
    if let Some(rate) = plan.fail_rate.filter(|rate| shared.random() < *rate) {
        let msg = format!("demo: random failure (fail_rate {rate})");
        let trailers_only = plan.trailers_only.unwrap_or(true);
        return grpc_status_response(headers, GRPC_UNAVAILABLE, &msg, trailers_only);
    }
    if plan.grpc_status != GRPC_OK {
        let msg = plan
            .grpc_message
            .unwrap_or_else(|| format!("demo: grpc-status {} requested", plan.grpc_status));
        let trailers_only = plan.trailers_only.unwrap_or(false);
        return grpc_status_response(headers, plan.grpc_status, &msg, trailers_only);
    }

    let message = match first_message(&request_body) {
        Ok(message) => message,
        Err((code, msg)) => return grpc_status_response(headers, code, msg, true),
    };
    let mut trailers = HeaderMap::new();
    insert_grpc_status(&mut trailers, GRPC_OK, "");
    let body = Full::new(frame(message))
        .with_trailers(std::future::ready(Some(Ok(trailers))))
        .boxed();
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    response
}

/// Answers a gRPC status without a message: in the headers of a trailers-only response,
/// or in trailers after the response headers.
fn grpc_status_response(
    mut headers: HeaderMap,
    code: u32,
    message: &str,
    trailers_only: bool,
) -> Response<Body> {
    let body = if trailers_only {
        insert_grpc_status(&mut headers, code, message);
        Empty::new().boxed()
    } else {
        let mut trailers = HeaderMap::new();
        insert_grpc_status(&mut trailers, code, message);
        Empty::new()
            .with_trailers(std::future::ready(Some(Ok(trailers))))
            .boxed()
    };
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    response
}

fn insert_grpc_status(headers: &mut HeaderMap, code: u32, message: &str) {
    headers.insert("grpc-status", HeaderValue::from(code));
    let encoded = percent_encode_grpc_message(message);
    if let Ok(value) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", value);
    }
}

/// Percent-encodes a `grpc-message` as the gRPC HTTP/2 protocol describes.
fn percent_encode_grpc_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The first length-prefixed message of a gRPC request body.
pub(crate) fn first_message(body: &[u8]) -> Result<&[u8], (u32, &'static str)> {
    let Some((&compressed, rest)) = body.split_first() else {
        return Err((GRPC_INTERNAL, "request has no message"));
    };
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|s| s.try_into().ok())
        .ok_or((GRPC_INTERNAL, "truncated message frame header"))?;
    let len = usize::try_from(u32::from_be_bytes(len_bytes))
        .map_err(|_| (GRPC_INTERNAL, "message too large"))?;
    let message = len
        .checked_add(4)
        .and_then(|end| rest.get(4..end))
        .ok_or((GRPC_INTERNAL, "truncated message"))?;
    if compressed != 0 {
        return Err((GRPC_UNIMPLEMENTED, "compressed messages are not supported"));
    }
    Ok(message)
}

// ---------------------------------------------------------------------------------------
// Controls and helpers

/// Looks a control up as a request header first, then as a query parameter.
struct Controls<'a> {
    headers: &'a HeaderMap,
    query: Vec<(String, String)>,
}

impl<'a> Controls<'a> {
    fn new(parts: &'a Parts) -> Self {
        let query = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) => (percent_decode(k), percent_decode(v)),
                None => (percent_decode(pair), String::new()),
            })
            .collect();
        Controls {
            headers: &parts.headers,
            query,
        }
    }

    fn get(&self, header: &str, param: &str) -> Option<String> {
        if let Some(value) = self.headers.get(header) {
            return Some(lossy(value));
        }
        self.query
            .iter()
            .find(|(k, _)| k == param)
            .map(|(_, v)| v.clone())
    }

    fn number<T: FromStr>(&self, header: &str, param: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(header, param) {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse()
                .map(Some)
                .map_err(|e| format!("bad {header} / {param} value {raw:?}: {e}")),
        }
    }

    fn rate(&self, header: &str, param: &str) -> Result<Option<f64>, String> {
        match self.number::<f64>(header, param)? {
            Some(rate) if !(0.0..=1.0).contains(&rate) => Err(format!(
                "bad {header} / {param} value {rate}: must be within 0..=1"
            )),
            other => Ok(other),
        }
    }

    fn flag(&self, header: &str, param: &str) -> Result<Option<bool>, String> {
        match self.get(header, param).as_deref().map(str::trim) {
            None => Ok(None),
            Some("1" | "true") => Ok(Some(true)),
            Some("0" | "false") => Ok(Some(false)),
            Some(other) => Err(format!(
                "bad {header} / {param} value {other:?}: expected 1, 0, true or false"
            )),
        }
    }
}

fn percent_decode(input: &str) -> String {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(decoded) = hex {
                    out.push(decoded);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

fn parse_header<T: FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn path_and_query(parts: &Parts) -> String {
    parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned())
}

fn add_service_header(shared: &Shared, headers: &mut HeaderMap) {
    if let Ok(value) = HeaderValue::from_str(&shared.name) {
        headers.insert("x-demo-service", value);
    }
}

fn json_response(shared: &Shared, status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_service_header(shared, headers);
    response
}

fn error_response(shared: &Shared, status: StatusCode, message: String) -> Response<Body> {
    json_response(
        shared,
        status,
        &json!({ "service": shared.name, "error": message }),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

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
