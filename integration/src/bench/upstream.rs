//! The upstream of the proxied routes, and the small blocking client of the functional check.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The body h2load sends on gRPC runs: one length-prefixed frame holding an empty message.
pub const GRPC_EMPTY_MESSAGE: [u8; 5] = [0, 0, 0, 0, 0];

/// The upstream: answers `ok` to everything, HTTP/1.1 and h2c on one port; a path ending in
/// `/echo` answers with the request headers it received, one `name: value` per line; a gRPC
/// request (`content-type: application/grpc*`) gets an empty message and `grpc-status: 0` in
/// trailers.
pub async fn serve_upstream(listener: tokio::net::TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req: Request<Incoming>| async move {
                let grpc = req
                    .headers()
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
                if grpc {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    let body = Full::new(Bytes::from_static(&GRPC_EMPTY_MESSAGE))
                        .with_trailers(std::future::ready(Some(Ok(trailers))))
                        .boxed();
                    let mut response = Response::new(body);
                    response.headers_mut().insert(
                        "content-type",
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    return Ok::<_, Infallible>(response);
                }
                let body = if req.uri().path().ends_with("/echo") {
                    let mut text = String::new();
                    for (name, value) in req.headers() {
                        let _ = writeln!(
                            text,
                            "{}: {}",
                            name.as_str(),
                            String::from_utf8_lossy(value.as_bytes())
                        );
                    }
                    Bytes::from(text)
                } else {
                    Bytes::from_static(b"ok\n")
                };
                Ok::<_, Infallible>(Response::new(Full::new(body).boxed()))
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A response to [`get`]: status, headers (lowercase names), body.
#[derive(Clone, Debug, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `name: value` lines (the echo body) as pairs.
pub fn header_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect()
}

/// A blocking HTTP/1.1 GET with these headers and `Connection: close`.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n");
    for (n, v) in headers {
        let _ = write!(req, "{n}: {v}\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = header_lines(&lines.collect::<Vec<_>>().join("\n"));
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        crate::envoy::dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(Reply {
        status,
        headers,
        body,
    })
}
