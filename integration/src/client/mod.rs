//! The test clients: one [`Response`] for every way a test talks HTTP.
//!
//! * [`request`] / [`get`]: one fresh connection per call, HTTP/1.1 or h2c (prior knowledge);
//!   [`tls::Tls`] does the same over TLS, optionally presenting a client certificate (mTLS).
//! * [`Connection`]: one kept-alive HTTP/1.1 connection, for calls that must reach one Envoy
//!   worker.
//! * [`grpc_h2`]: a unary gRPC call as a plain HTTP/2 request, for tests that look at the
//!   HTTP answer itself (trailers-only or not); [`grpc`] makes real gRPC calls with tonic.
//! * [`raw`]: HTTP/1.1 bytes written exactly as given (odd-case and repeated header lines),
//!   for tests about what a client can put on the wire.
//! * [`blocking`] / [`http_get`]: the same client for the few callers that are not async
//!   (Envoy's admin interface during start-up).
//!
//! The connection always goes to the given socket address. A `host` entry in the request
//! headers sets the `Host` header (HTTP/1.1) or the `:authority` (HTTP/2) instead of the
//! address, so requests can target any Envoy virtual host.

pub mod grpc;
pub mod raw;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HOST};
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Error of a client call (connection, protocol, bad arguments or timeout).
pub use crate::Error;

/// Result of a client call.
pub type Result<T> = std::result::Result<T, Error>;

/// Upper bound on one call (connect, send, read the whole response), so that a broken
/// test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Protocol spoken on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers in order, lowercase names, values decoded lossily.
    pub headers: Vec<(String, String)>,
    /// Response trailers (HTTP/2, or chunked HTTP/1.1), same form as `headers`.
    pub trailers: Vec<(String, String)>,
    /// The whole response body.
    pub body: Bytes,
    /// Time from the start of the call (before connecting) until the body was read.
    pub elapsed: Duration,
}

impl Response {
    /// First value of a response header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        find(&self.headers, name)
    }

    /// All values of a response header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// First value of a trailer (name compared case-insensitively).
    pub fn trailer(&self, name: &str) -> Option<&str> {
        find(&self.trailers, name)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; [`serde_json::Value::Null`] when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        self.try_json().unwrap_or(serde_json::Value::Null)
    }

    /// The body parsed as JSON.
    pub fn try_json(&self) -> std::result::Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The `grpc-status` of a gRPC response: from the headers (trailers-only) or the trailers.
    pub fn grpc_status(&self) -> Option<u32> {
        self.header("grpc-status")
            .or(self.trailer("grpc-status"))?
            .trim()
            .parse()
            .ok()
    }
}

fn find<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
    list.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Sends one request over a new connection to `addr` and reads the whole response.
///
/// `path` is the request target starting with `/` (query included). `body: None` sends
/// no body. The call fails after [`TIMEOUT`].
pub async fn request(
    addr: SocketAddr,
    proto: Proto,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Response> {
    send(addr, None, proto, method, path, headers, body).await
}

/// `GET path` over HTTP/1.1.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    request(addr, Proto::Http1, "GET", path, headers, None).await
}

/// A unary gRPC call as a raw HTTP/2 request over h2c: `POST path` with `content-type:
/// application/grpc`, `te: trailers`, the `metadata` and `body` (a framed message, see
/// [`grpc::frame`], or any bytes). For tests that look at the HTTP answer itself, or whose
/// `grpc-timeout` a gRPC library would also enforce on its own side (tonic does).
pub async fn grpc_h2(
    addr: SocketAddr,
    path: &str,
    metadata: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<Response> {
    let mut headers = vec![("content-type", "application/grpc"), ("te", "trailers")];
    headers.extend_from_slice(metadata);
    request(addr, Proto::H2c, "POST", path, &headers, Some(body)).await
}

/// One kept-alive HTTP/1.1 connection: requests on it go one after another, all to the Envoy
/// worker that accepted it (tests that must reach both workers open one per worker).
pub struct Connection {
    addr: SocketAddr,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    _driver: Driver,
}

impl Connection {
    /// Connects to `addr` (no request is sent yet).
    pub async fn open(addr: SocketAddr) -> Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let driver = Driver(tokio::spawn(async move {
            let _ = connection.await;
        }));
        Ok(Connection {
            addr,
            sender,
            _driver: driver,
        })
    }

    /// Whether the server closed the connection (or it failed): the next request needs a new
    /// one.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// `GET path` on this connection; fails after [`TIMEOUT`] or when the connection is gone.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
        let start = Instant::now();
        let request = build_request(self.addr, Proto::Http1, "http", "GET", path, headers, None)?;
        let work = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            collect(response, start).await
        };
        match tokio::time::timeout(TIMEOUT, work).await {
            Ok(result) => result,
            Err(_) => Err(format!("GET {path}: no response within {TIMEOUT:?}").into()),
        }
    }
}

/// Aborts the connection driver task when the call ends.
struct Driver(JoinHandle<()>);

impl Drop for Driver {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One request over a new connection, plain or TLS, within [`TIMEOUT`].
async fn send(
    addr: SocketAddr,
    tls: Option<&tls::Tls>,
    proto: Proto,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Response> {
    let call = async {
        let start = Instant::now();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let request = build_request(addr, proto, scheme, method, path, headers, body)?;
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        match tls {
            None => exchange(TokioIo::new(stream), proto, request, start).await,
            Some(tls) => {
                let stream = tls.handshake(addr, stream, proto).await?;
                exchange(TokioIo::new(stream), proto, request, start).await
            }
        }
    };
    let over = if tls.is_some() { " over TLS" } else { "" };
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => {
            Err(format!("{method} {path} to {addr}{over}: no response within {TIMEOUT:?}").into())
        }
    }
}

/// The request as sent: `Host` for HTTP/1.1, an absolute URI (`scheme://authority/path`) for
/// HTTP/2; a `host` entry in `headers` names the authority, else the socket address does.
fn build_request(
    addr: SocketAddr,
    proto: Proto,
    scheme: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Request<Full<Bytes>>> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'").into());
    }
    let method = Method::from_bytes(method.as_bytes())?;
    let mut header_map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())?;
        let value = HeaderValue::from_str(value)?;
        header_map.append(name, value);
    }
    let authority = match header_map.get(HOST) {
        Some(host) => host.to_str()?.to_owned(),
        None => addr.to_string(),
    };
    let mut builder = Request::builder().method(method);
    match proto {
        Proto::Http1 => {
            builder = builder.uri(path);
            if !header_map.contains_key(HOST) {
                header_map.insert(HOST, HeaderValue::from_str(&authority)?);
            }
        }
        Proto::H2c => {
            builder = builder.uri(format!("{scheme}://{authority}{path}"));
            header_map.remove(HOST);
        }
    }
    let mut request = builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    *request.headers_mut() = header_map;
    Ok(request)
}

/// One request over an established connection (plain TCP or TLS), HTTP/1.1 or HTTP/2.
async fn exchange<IO>(
    io: IO,
    proto: Proto,
    request: Request<Full<Bytes>>,
    start: Instant,
) -> Result<Response>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    match proto {
        Proto::Http1 => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            let _driver = Driver(tokio::spawn(async move {
                let _ = connection.await;
            }));
            let response = sender.send_request(request).await?;
            collect(response, start).await
        }
        Proto::H2c => {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            let _driver = Driver(tokio::spawn(async move {
                let _ = connection.await;
            }));
            let response = sender.send_request(request).await?;
            collect(response, start).await
        }
    }
}

async fn collect(
    response: http::Response<hyper::body::Incoming>,
    start: Instant,
) -> Result<Response> {
    let (parts, body) = response.into_parts();
    let collected = body.collect().await?;
    let trailers = collected.trailers().map(pairs).unwrap_or_default();
    let body = collected.to_bytes();
    Ok(Response {
        status: parts.status.as_u16(),
        headers: pairs(&parts.headers),
        trailers,
        body,
        elapsed: start.elapsed(),
    })
}

fn pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for query values.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs an async client call to completion from code that is not async, or that must not
/// await (a `Drop`, Envoy's start-up): on a runtime of its own, in a thread of its own, so it
/// works inside and outside a tokio runtime alike.
pub fn blocking<T, F>(call: F) -> Result<T>
where
    T: Send,
    F: Future<Output = Result<T>> + Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(call)
            })
            .join()
            .unwrap_or_else(|_| Err("the blocking client call panicked".into()))
    })
}

/// How long a blocking admin GET may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A blocking `GET path` over HTTP/1.1 (Envoy's admin interface): (status, body as text).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    blocking(async {
        match tokio::time::timeout(ADMIN_TIMEOUT, get(addr, path, &[])).await {
            Ok(response) => response.map(|r| (r.status, r.text())),
            Err(_) => {
                Err(format!("GET {path} on {addr}: no response within {ADMIN_TIMEOUT:?}").into())
            }
        }
    })
}
