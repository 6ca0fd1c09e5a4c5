//! A real OTLP/HTTP trace receiver for the end-to-end tests, in process.
//!
//! It speaks the OTLP/HTTP protocol of an OpenTelemetry collector on one TCP port (HTTP/1.1
//! and h2c): `POST /v1/traces` with `content-type: application/x-protobuf` and a protobuf
//! `ExportTraceServiceRequest` body. The body is decoded with prost (the messages of
//! [`mesh_trace_propagation::otlp::pb`]), every span is stored as a [`ReceivedSpan`]
//! together with the `service.name` of its resource, and the answer is `200` with an
//! encoded, empty `ExportTraceServiceResponse` (everything accepted).
//!
//! | request to `/v1/traces`                           | answer |
//! |---------------------------------------------------|--------|
//! | `POST`, protobuf content type, decodable body     | `200`, `ExportTraceServiceResponse` |
//! | body that does not decode                         | `400`, `google.rpc.Status` (code 3) |
//! | other content type, or a `content-encoding`       | `415`, `google.rpc.Status` (code 3) |
//! | other method                                      | `405` |
//!
//! Every request to `/v1/traces` counts in [`Receiver::requests`]; those not answered `200`
//! also count in [`Receiver::bad_requests`]. Other paths get `404` and are not counted.
//!
//! [`Receiver::set_delay`] turns it into a slow or "hanging" collector: requests are still
//! counted and their spans stored as soon as they arrive, but the answer waits that long.
//! Dropping the receiver (or [`Receiver::shutdown`]) closes the listener and every
//! connection and cuts such waits short.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use mesh_kit::proto::google_rpc;
use mesh_trace_propagation::otlp::pb::collector::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use mesh_trace_propagation::otlp::pb::common::{any_value, AnyValue, KeyValue};
use mesh_trace_propagation::otlp::pb::trace::span::SpanKind;
use mesh_trace_propagation::otlp::pb::trace::status::StatusCode as SpanStatusCode;
use mesh_trace_propagation::otlp::pb::trace::Span;
use mesh_trace_propagation::otlp::{self, SERVICE_NAME_KEY};
use prost::Message;
use serde_json::Value;

/// The path OTLP/HTTP exporters post traces to.
pub const TRACES_PATH: &str = otlp::EXPORT_PATH;

/// The `content-type` of OTLP/HTTP protobuf requests and responses.
pub const PROTOBUF: &str = otlp::CONTENT_TYPE;

/// `google.rpc.Code.INVALID_ARGUMENT`, the code of the `Status` in a rejection body.
const INVALID_ARGUMENT: i32 = 3;

use crate::server::{self, Body, Server, Stop};
use crate::wait;

/// One span as the receiver stored it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The `service.name` attribute of the span's resource (stringified), empty when absent.
    pub service_name: String,
    /// The name of the span's instrumentation scope.
    pub scope_name: String,
    /// The version of the span's instrumentation scope.
    pub scope_version: String,
    /// The trace id in lowercase hex, as sent (32 digits for a valid id).
    pub trace_id: String,
    /// The span id in lowercase hex, as sent (16 digits for a valid id).
    pub span_id: String,
    /// The parent span id in lowercase hex; `None` when empty (a root span).
    pub parent_span_id: Option<String>,
    /// The W3C `tracestate` of the span.
    pub trace_state: String,
    /// `Span.flags`: W3C trace flags in bits 0-7, the remote-parent bits 8 and 9.
    pub flags: u32,
    /// The span name.
    pub name: String,
    /// The span kind as sent: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer,
    /// 5 consumer (see [`ReceivedSpan::span_kind`]).
    pub kind: i32,
    /// Start time, UNIX epoch nanoseconds.
    pub start_unix_nano: u64,
    /// End time, UNIX epoch nanoseconds.
    pub end_unix_nano: u64,
    /// The attributes in order, values stringified: strings as they are, booleans, integers
    /// and doubles in their usual text form, bytes in lowercase hex, arrays and key-value
    /// lists as JSON, an empty value as the empty string.
    pub attributes: Vec<(String, String)>,
    /// The status code as sent: 0 unset (also when the span has no status), 1 ok, 2 error
    /// (see [`ReceivedSpan::status`]).
    pub status_code: i32,
    /// The status message.
    pub status_message: String,
    /// When the export request that carried the span arrived.
    pub received_at: Instant,
}

impl ReceivedSpan {
    /// The value of the first attribute called `key`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The kind as the protobuf enum; an unknown value reads as `Unspecified`.
    pub fn span_kind(&self) -> SpanKind {
        SpanKind::try_from(self.kind).unwrap_or(SpanKind::Unspecified)
    }

    /// The status code as the protobuf enum; an unknown value reads as `Unset`.
    pub fn status(&self) -> SpanStatusCode {
        SpanStatusCode::try_from(self.status_code).unwrap_or(SpanStatusCode::Unset)
    }

    /// End minus start time (zero when the end is before the start).
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nano.saturating_sub(self.start_unix_nano))
    }

    fn from_pb(span: &Span, service_name: &str, scope: (&str, &str), now: Instant) -> Self {
        let status = span.status.as_ref();
        ReceivedSpan {
            service_name: service_name.to_owned(),
            scope_name: scope.0.to_owned(),
            scope_version: scope.1.to_owned(),
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
            trace_state: span.trace_state.clone(),
            flags: span.flags,
            name: span.name.clone(),
            kind: span.kind,
            start_unix_nano: span.start_time_unix_nano,
            end_unix_nano: span.end_time_unix_nano,
            attributes: span
                .attributes
                .iter()
                .map(|kv| (kv.key.clone(), stringify(kv.value.as_ref())))
                .collect(),
            status_code: status.map_or(0, |s| s.code),
            status_message: status.map(|s| s.message.clone()).unwrap_or_default(),
            received_at: now,
        }
    }
}

#[derive(Default)]
struct Counters {
    requests: usize,
    bad_requests: usize,
}

struct Shared {
    spans: Mutex<Vec<ReceivedSpan>>,
    counters: Mutex<Counters>,
    delay: Mutex<Duration>,
    stop: Stop,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running OTLP/HTTP receiver. Dropping it (or calling [`Receiver::shutdown`]) closes the
/// listener and all connections.
pub struct Receiver {
    server: Server,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.server.addr())
            .finish()
    }
}

/// Starts a receiver on `addr` (port 0 picks a free port; see [`Receiver::addr`]). Must be
/// called inside a tokio runtime.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<Receiver> {
    let state = |stop| Shared {
        spans: Mutex::new(Vec::new()),
        counters: Mutex::new(Counters::default()),
        delay: Mutex::new(Duration::ZERO),
        stop,
    };
    let (server, shared) = Server::http(addr, state, |shared, request| async move {
        server::ok(handle(&shared, request).await)
    })
    .await?;
    Ok(Receiver { server, shared })
}

/// [`spawn`] on a free loopback port.
pub async fn local() -> std::io::Result<Receiver> {
    spawn(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

impl Receiver {
    /// The address the receiver listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Every stored span, in arrival order (request by request, in request order within one).
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        lock(&self.shared.spans).clone()
    }

    /// Takes the stored spans out (the store is empty afterwards; nothing arriving meanwhile is
    /// lost), for long runs that must not keep every span.
    pub fn take_spans(&self) -> Vec<ReceivedSpan> {
        std::mem::take(&mut *lock(&self.shared.spans))
    }

    /// The number of requests to `/v1/traces` (export calls), accepted or not.
    pub fn requests(&self) -> usize {
        lock(&self.shared.counters).requests
    }

    /// The number of requests to `/v1/traces` answered with an error (400, 405 or 415).
    pub fn bad_requests(&self) -> usize {
        lock(&self.shared.counters).bad_requests
    }

    /// Answers requests that arrive from now on only after `delay` (zero: at once).
    /// Requests are counted and their spans stored on arrival all the same.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.shared.delay) = delay;
    }

    /// Forgets the stored spans and resets the request counters.
    pub fn clear(&self) {
        lock(&self.shared.spans).clear();
        *lock(&self.shared.counters) = Counters::default();
    }

    /// Waits until at least `n` spans were stored; false if `timeout` passed first.
    pub async fn wait_for_spans(&self, n: usize, timeout: Duration) -> bool {
        wait::until(timeout, || lock(&self.shared.spans).len() >= n).await
    }

    /// Waits until at least `n` requests to `/v1/traces` arrived; false if `timeout` passed
    /// first.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        wait::until(timeout, || self.requests() >= n).await
    }

    /// Stops the receiver and waits until its listener and connections are closed.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

async fn handle(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    if parts.uri.path() != TRACES_PATH {
        return plain(StatusCode::NOT_FOUND);
    }
    let arrived = Instant::now();
    lock(&shared.counters).requests += 1;
    let delay = *lock(&shared.delay);

    let response = if parts.method != Method::POST {
        plain(StatusCode::METHOD_NOT_ALLOWED)
    } else {
        match check_headers(&parts.headers) {
            Err(msg) => rejection(StatusCode::UNSUPPORTED_MEDIA_TYPE, &msg),
            Ok(()) => match body.collect().await {
                Err(err) => rejection(
                    StatusCode::BAD_REQUEST,
                    &format!("reading request body: {err}"),
                ),
                Ok(collected) => store(shared, &collected.to_bytes(), arrived),
            },
        }
    };
    if response.status() != StatusCode::OK {
        lock(&shared.counters).bad_requests += 1;
    }

    if shared.stop.sleep(delay).await {
        response
    } else {
        plain(StatusCode::SERVICE_UNAVAILABLE)
    }
}

/// Accepts `content-type: application/x-protobuf` (parameters allowed) without a
/// `content-encoding` other than `identity`.
fn check_headers(headers: &HeaderMap) -> Result<(), String> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let essence = content_type
        .as_deref()
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if !essence.is_some_and(|v| v.eq_ignore_ascii_case(PROTOBUF)) {
        return Err(format!(
            "content-type {content_type:?} not supported, expected {PROTOBUF}"
        ));
    }
    if let Some(encoding) = headers.get(CONTENT_ENCODING) {
        if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
            let encoding = String::from_utf8_lossy(encoding.as_bytes());
            return Err(format!("content-encoding {encoding:?} not supported"));
        }
    }
    Ok(())
}

/// Decodes an export request and stores its spans: `200`, or `400` when it does not decode.
fn store(shared: &Shared, body: &[u8], arrived: Instant) -> Response<Body> {
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(err) => {
            let msg = format!("decoding ExportTraceServiceRequest: {err}");
            return rejection(StatusCode::BAD_REQUEST, &msg);
        }
    };
    let mut received = Vec::new();
    for resource_spans in &request.resource_spans {
        let service_name = resource_spans
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == SERVICE_NAME_KEY))
            .map(|kv| stringify(kv.value.as_ref()))
            .unwrap_or_default();
        for scope_spans in &resource_spans.scope_spans {
            let scope = scope_spans
                .scope
                .as_ref()
                .map_or(("", ""), |s| (s.name.as_str(), s.version.as_str()));
            received.extend(
                scope_spans
                    .spans
                    .iter()
                    .map(|span| ReceivedSpan::from_pb(span, &service_name, scope, arrived)),
            );
        }
    }
    lock(&shared.spans).extend(received);
    protobuf(
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn protobuf(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
    response
}

/// An OTLP/HTTP error answer: the body is a protobuf `google.rpc.Status`.
fn rejection(status: StatusCode, message: &str) -> Response<Body> {
    let body = google_rpc::Status {
        code: INVALID_ARGUMENT,
        message: message.to_owned(),
        details: Vec::new(),
    };
    protobuf(status, body.encode_to_vec())
}

fn plain(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().boxed());
    *response.status_mut() = status;
    response
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An attribute value as text: see [`ReceivedSpan::attributes`].
fn stringify(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(other) => to_json(Some(other)).to_string(),
    }
}

fn to_json(value: Option<&any_value::Value>) -> Value {
    match value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::from(s.as_str()),
        Some(any_value::Value::BoolValue(b)) => Value::from(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
        Some(any_value::Value::BytesValue(b)) => Value::from(hex(b)),
        Some(any_value::Value::ArrayValue(array)) => array
            .values
            .iter()
            .map(|v| to_json(v.value.as_ref()))
            .collect(),
        Some(any_value::Value::KvlistValue(list)) => Value::Object(
            list.values
                .iter()
                .map(|kv: &KeyValue| {
                    let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                    (kv.key.clone(), to_json(value))
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use mesh_trace_propagation::otlp::pb::common::{ArrayValue, KeyValueList};

    fn any(value: any_value::Value) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    #[test]
    fn attribute_values_are_stringified() {
        use any_value::Value as V;
        let s = |v| stringify(Some(&any(v)));
        assert_eq!(stringify(None), "");
        assert_eq!(stringify(Some(&AnyValue { value: None })), "");
        assert_eq!(s(V::StringValue("GET /x".to_owned())), "GET /x");
        assert_eq!(s(V::BoolValue(false)), "false");
        assert_eq!(s(V::IntValue(-7)), "-7");
        assert_eq!(s(V::DoubleValue(1.5)), "1.5");
        assert_eq!(s(V::BytesValue(vec![0, 0xab])), "00ab");
        let array = V::ArrayValue(ArrayValue {
            values: vec![any(V::StringValue("a".to_owned())), any(V::IntValue(2))],
        });
        assert_eq!(s(array), r#"["a",2]"#);
        let kvlist = V::KvlistValue(KeyValueList {
            values: vec![KeyValue {
                key: "k".to_owned(),
                value: Some(any(V::BoolValue(true))),
            }],
        });
        assert_eq!(s(kvlist), r#"{"k":true}"#);
    }

    #[test]
    fn only_protobuf_without_encoding_is_accepted() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, HeaderValue::from_static(value));
            }
            map
        };
        assert!(check_headers(&headers(&[("content-type", "application/x-protobuf")])).is_ok());
        assert!(check_headers(&headers(&[(
            "content-type",
            "Application/X-Protobuf; charset=binary"
        )]))
        .is_ok());
        assert!(check_headers(&headers(&[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "identity")
        ]))
        .is_ok());
        assert!(check_headers(&headers(&[])).is_err());
        assert!(check_headers(&headers(&[("content-type", "application/json")])).is_err());
        assert!(check_headers(&headers(&[
            ("content-type", "application/x-protobuf"),
            ("content-encoding", "gzip")
        ]))
        .is_err());
    }

    #[test]
    fn ids_are_lowercase_hex() {
        assert_eq!(hex(&[0x0a, 0xff, 0x00]), "0aff00");
        assert_eq!(hex(&[]), "");
    }
}
