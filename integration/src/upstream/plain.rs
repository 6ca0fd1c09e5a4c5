//! Plain HTTP requests: the JSON echo, the controls, and the call to the next hop
//! (`x-demo-call`).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};

use super::controls::{lossy, parse_header, path_and_query, Controls};
use super::{Shared, DEADLINE_HEADER, PROPAGATED_HEADERS};
use crate::server::Body;

pub(super) async fn serve_http(
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
        if !shared.stop.sleep(Duration::from_millis(ms)).await {
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
pub(super) fn split_http_url(url: &str) -> Result<(String, String), String> {
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

pub(super) fn add_service_header(shared: &Shared, headers: &mut HeaderMap) {
    if let Ok(value) = HeaderValue::from_str(&shared.name) {
        headers.insert("x-demo-service", value);
    }
}

pub(super) fn json_response(shared: &Shared, status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    add_service_header(shared, headers);
    response
}

pub(super) fn error_response(
    shared: &Shared,
    status: StatusCode,
    message: String,
) -> Response<Body> {
    json_response(
        shared,
        status,
        &json!({ "service": shared.name, "error": message }),
    )
}
