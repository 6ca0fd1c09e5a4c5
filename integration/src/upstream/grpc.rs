//! gRPC requests: the first message echoed in one frame, statuses in trailers or
//! trailers-only, injected failures.

use std::time::Duration;

use http::header::{HeaderName, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;

use super::controls::Controls;
use super::plain::add_service_header;
use super::{
    Shared, ECHOED_GRPC_HEADERS, GRPC_INTERNAL, GRPC_INVALID_ARGUMENT, GRPC_OK, GRPC_UNAVAILABLE,
    GRPC_UNIMPLEMENTED,
};
use crate::client::grpc::frame;
use crate::server::Body;

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

pub(super) async fn serve_grpc(
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
        if !shared.stop.sleep(Duration::from_millis(ms)).await {
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
pub(super) fn percent_encode_grpc_message(message: &str) -> String {
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
