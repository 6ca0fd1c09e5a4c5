//! Test HTTP client: one fresh connection per call, HTTP/1.1 or h2c (prior knowledge).
//!
//! The connection always goes to the given socket address. A `host` entry in the request
//! headers sets the `Host` header (HTTP/1.1) or the `:authority` (h2c) instead of the
//! address, so requests can target any Envoy virtual host.

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
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    match tokio::time::timeout(TIMEOUT, send(addr, proto, method, path, headers, body)).await {
        Ok(result) => result,
        Err(_) => Err(format!("{method} {path} to {addr}: no response within {TIMEOUT:?}").into()),
    }
}

/// `GET path` over HTTP/1.1.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    request(addr, Proto::Http1, "GET", path, headers, None).await
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

async fn send(
    addr: SocketAddr,
    proto: Proto,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Response> {
    let start = Instant::now();
    let request = build_request(addr, proto, "http", method, path, headers, body)?;
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    exchange(TokioIo::new(stream), proto, request, start).await
}

/// The request as sent: `Host` for HTTP/1.1, an absolute URI (`scheme://authority/path`) for
/// HTTP/2; a `host` entry in `headers` names the authority, else the socket address does.
pub(crate) fn build_request(
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
pub(crate) async fn exchange<IO>(
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
