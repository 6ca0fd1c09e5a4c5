//! HTTP/1.1 written byte for byte: for tests about what a client can put on the wire, which
//! an HTTP library would normalise (header names in odd case, a header repeated on several
//! lines, the order of lines) or refuse to send (garbage).
//!
//! [`get`] writes a `GET` whose header lines are exactly the ones given, reads one response
//! (until its `content-length` or last chunk, or until the server closes) and parses it into
//! the same [`Response`] as every other client (header names lowercased, a chunked body
//! joined). [`exchange`] writes any bytes and returns the raw answer.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tls::Tls;
use super::{Proto, Response, Result, TIMEOUT};

/// How much of the answer [`exchange`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// One complete response (Envoy keeps a closing connection open for a while).
    Response,
    /// Everything until the server closes the connection.
    ToClose,
}

/// The head of a `GET path` with `Host: host`, then every header line as given (name case,
/// repeats and order kept), then `Connection: close`.
pub fn get_head(path: &str, host: &str, headers: &[(&str, &str)]) -> String {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    head
}

/// Sends [`get_head`] (`Host: mesh.local`) to `addr`, over TLS when `tls` is given, and reads
/// one response. Fails after [`TIMEOUT`].
pub async fn get(
    addr: SocketAddr,
    tls: Option<&Tls>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response> {
    let start = Instant::now();
    let raw = exchange(
        addr,
        tls,
        get_head(path, "mesh.local", headers).as_bytes(),
        Read::Response,
    )
    .await?;
    let mut response = parse(&raw)?;
    response.elapsed = start.elapsed();
    Ok(response)
}

/// Writes `request` to a new connection to `addr` (over TLS, ALPN `http/1.1`, when `tls` is
/// given) and returns what the server answered, as much as `read` says. A connection closed or
/// reset after some bytes ends the answer (a TLS peer may close without close_notify); one
/// that ends before any byte is an error only while connecting or writing.
pub async fn exchange(
    addr: SocketAddr,
    tls: Option<&Tls>,
    request: &[u8],
    read: Read,
) -> Result<Vec<u8>> {
    let call = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        match tls {
            None => write_and_read(tcp, request, read).await,
            Some(tls) => {
                let stream = tls.handshake(addr, tcp, Proto::Http1).await?;
                write_and_read(stream, request, read).await
            }
        }
    };
    tokio::time::timeout(TIMEOUT, call)
        .await
        .map_err(|_| format!("no answer from {addr} within {TIMEOUT:?}"))?
}

async fn write_and_read<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &[u8],
    read: Read,
) -> Result<Vec<u8>> {
    s.write_all(request).await?;
    s.flush().await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if read == Read::Response {
            if let Some(done) = complete(&raw) {
                raw.truncate(done);
                break;
            }
        }
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e) if raw.is_empty() && read == Read::Response => {
                return Err(format!("reading the response: {e}").into())
            }
            Err(_) => break,
        }
    }
    Ok(raw)
}

/// The length of a complete HTTP/1.1 response at the start of `raw`, if it is complete
/// (`content-length`, or a chunked body ended by its last chunk).
fn complete(raw: &[u8]) -> Option<usize> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(raw.get(..end)?).to_ascii_lowercase();
    for line in head.split("\r\n") {
        if let Some(n) = line.strip_prefix("content-length:") {
            let n: usize = n.trim().parse().ok()?;
            return (raw.len() >= end + n).then_some(end + n);
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            let body = raw.get(end..)?;
            return body
                .windows(5)
                .position(|w| w == b"0\r\n\r\n")
                .filter(|&at| at == 0 || body.get(..at).is_some_and(|b| b.ends_with(b"\r\n")))
                .map(|at| end + at + 5);
        }
    }
    None
}

/// Parses an HTTP/1.1 response: status line, header lines (names lowercased, values
/// trimmed), body (joined when chunked). `elapsed` is zero.
pub fn parse(raw: &[u8]) -> Result<Response> {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no complete response head: {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Response {
        status,
        headers,
        trailers: Vec::new(),
        body: Bytes::from(body),
        elapsed: std::time::Duration::ZERO,
    })
}

/// The body of a `Transfer-Encoding: chunked` HTTP/1.1 response, joined.
pub fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(rest.get(..n).unwrap_or(rest));
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_complete_at_their_length_or_last_chunk() {
        let fixed = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(complete(fixed), Some(fixed.len()));
        assert_eq!(complete(&fixed[..fixed.len() - 1]), None);
        let chunked = b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(complete(chunked), Some(chunked.len()));
        let r = parse(chunked).unwrap();
        assert_eq!((r.status, r.text().as_str()), (403, "ok"));
        assert_eq!(r.header("x-a"), Some("1"));
    }

    #[test]
    fn header_lines_are_written_as_given() {
        let head = get_head(
            "/x",
            "mesh.local",
            &[("X-Spiffe-Id", "a"), ("x-spiffe-id", "b")],
        );
        assert_eq!(
            head,
            "GET /x HTTP/1.1\r\nHost: mesh.local\r\nX-Spiffe-Id: a\r\nx-spiffe-id: b\r\nConnection: close\r\n\r\n"
        );
    }
}
