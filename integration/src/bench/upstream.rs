//! The upstream of the proxied routes: the harness's server skeleton ([`crate::server`]) with
//! the smallest answers that keep the load core free for the load. It answers `ok` to
//! everything, HTTP/1.1 and h2c on one port; a path ending in `/echo` answers with the request
//! headers it received, as JSON (`{"headers": [[name, value], …]}`, in arrival order); a path
//! ending in `/fail` is answered `503` (the functional check's failed call, which the breaker
//! counts); a gRPC request (`content-type: application/grpc*`) gets an empty message and
//! `grpc-status: 0` in trailers.
//!
//! It records nothing: the demo service ([`crate::upstream`]) keeps every request, which a
//! benchmark's millions of requests would turn into memory and work on the load core.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::client;
use crate::server::{Body, Server};

/// The body h2load sends on gRPC runs: one length-prefixed frame holding an empty message.
pub const GRPC_EMPTY_MESSAGE: [u8; 5] = [0, 0, 0, 0, 0];

/// Starts the upstream on `addr` (port 0: a free one). Must be called inside a tokio runtime;
/// it serves until the [`Server`] is dropped.
pub async fn serve(addr: SocketAddr) -> std::io::Result<Server> {
    let (server, _) = Server::http(addr, |_| (), answer).await?;
    Ok(server)
}

async fn answer(_: Arc<()>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = Full::new(Bytes::from_static(&GRPC_EMPTY_MESSAGE))
            .with_trailers(std::future::ready(Some(Ok(trailers))))
            .boxed();
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        return Ok(response);
    }
    if req.uri().path().ends_with("/fail") {
        let mut response = Response::new(Full::new(Bytes::from_static(b"fail\n")).boxed());
        *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        return Ok(response);
    }
    let body = if req.uri().path().ends_with("/echo") {
        let headers: Vec<Value> = req
            .headers()
            .iter()
            .map(|(name, value)| json!([name.as_str(), String::from_utf8_lossy(value.as_bytes())]))
            .collect();
        Bytes::from(json!({ "headers": headers }).to_string())
    } else {
        Bytes::from_static(b"ok\n")
    };
    Ok(Response::new(Full::new(body).boxed()))
}

/// The request headers an `/echo` answer carries (lowercase names, in arrival order).
pub fn echoed_headers(echo: &client::Response) -> Result<Vec<(String, String)>, String> {
    let shown = || format!("not an echo of the upstream: {}", echo.text().trim());
    let json = echo.try_json().map_err(|_| shown())?;
    let pairs = json
        .get("headers")
        .and_then(Value::as_array)
        .ok_or_else(shown)?;
    pairs
        .iter()
        .map(|pair| match pair.as_array().map(Vec::as_slice) {
            Some([Value::String(name), Value::String(value)]) => Ok((name.clone(), value.clone())),
            _ => Err(shown()),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echo_ok_fail_and_grpc_are_answered() {
        let server = serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.addr();
        let echo = client::get(addr, "/proxied/echo", &[("x-spiffe-id", "spiffe://a/b")])
            .await
            .unwrap();
        let headers = echoed_headers(&echo).unwrap();
        assert!(headers.contains(&("x-spiffe-id".to_owned(), "spiffe://a/b".to_owned())));
        let ok = client::get(addr, "/proxied", &[]).await.unwrap();
        assert_eq!((ok.status, ok.text().as_str()), (200, "ok\n"));
        let fail = client::get(addr, "/proxied/fail", &[]).await.unwrap();
        assert_eq!(fail.status, 503);
        assert!(echoed_headers(&ok).is_err());
        let grpc = client::grpc_h2(
            addr,
            "/mesh.bench.Bench/Call",
            &[],
            GRPC_EMPTY_MESSAGE.to_vec(),
        )
        .await
        .unwrap();
        assert_eq!(grpc.grpc_status(), Some(0));
        assert_eq!(grpc.body.as_ref(), GRPC_EMPTY_MESSAGE.as_slice());
    }
}
