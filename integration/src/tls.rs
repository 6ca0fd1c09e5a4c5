//! Test clients over TLS, optionally presenting a client certificate (mTLS): HTTP/1.1 or
//! HTTP/2 with hyper on rustls, and gRPC unary calls with tonic.
//!
//! Every call opens a fresh TCP connection to the given socket address and verifies the
//! server's certificate against the given CA only, for `server_name` (sent as SNI and
//! matched against the certificate's DNS or IP SANs). The connection address and the
//! name are independent: tests connect to `127.0.0.1` and check the name
//! `envoy.mesh.local`. The crypto provider is ring.
//!
//! [`request`] mirrors [`client::request`]: [`Proto::H2c`] means HTTP/2 here (over TLS,
//! ALPN `h2`), [`Proto::Http1`] HTTP/1.1 (ALPN `http/1.1`); a `host` header sets the
//! `Host` (HTTP/1.1) or `:authority` (HTTP/2), which defaults to the socket address.
//!
//! A server that refuses the client certificate (or its absence) makes the call fail.
//! With TLS 1.3 the client only learns that when it reads, so the error may come from
//! the request rather than from the handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::metadata::MetadataMap;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::certs::Leaf;
use crate::client::{self, Proto, Response, Result};
use crate::grpc::{GrpcReply, RawCodec, CONNECT_TIMEOUT, TIMEOUT};

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Sends one request over a new TLS connection to `addr` and reads the whole response.
///
/// The server certificate must chain to `ca_pem` (one or more PEM certificates) and be
/// valid for `server_name`. `client_cert` is presented when the server asks for one.
/// `path` is the request target starting with `/` (query included); `body: None` sends
/// no body. HTTP/2 fails unless the server selects ALPN `h2`. The call fails after
/// [`client::TIMEOUT`].
#[allow(clippy::too_many_arguments)] // `client::request` plus the three TLS settings
pub async fn request(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client_cert: Option<&Leaf>,
    proto: Proto,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Response> {
    let call = send(
        addr,
        server_name,
        ca_pem,
        client_cert,
        proto,
        method,
        path,
        headers,
        body,
    );
    match tokio::time::timeout(client::TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "{method} {path} to {addr} over TLS: no response within {:?}",
            client::TIMEOUT
        )
        .into()),
    }
}

/// `GET path` over HTTP/1.1 over TLS.
pub async fn get(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client_cert: Option<&Leaf>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response> {
    request(
        addr,
        server_name,
        ca_pem,
        client_cert,
        Proto::Http1,
        "GET",
        path,
        headers,
        None,
    )
    .await
}

/// The rustls client configuration used by [`request`]: trusts the certificates of
/// `ca_pem` only, presents `client_cert` when asked, offers the given ALPN protocols.
pub fn client_config(
    ca_pem: &str,
    client_cert: Option<&Leaf>,
    alpn: &[&[u8]],
) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| format!("CA PEM: {e}"))?)?;
    }
    if roots.is_empty() {
        return Err("CA PEM holds no certificate".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some(leaf) => {
            let (chain, key) = identity(leaf)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The certificate chain and private key of a leaf, as rustls wants them.
pub fn identity(leaf: &Leaf) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    if chain.is_empty() {
        return Err("certificate PEM holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())
        .map_err(|e| format!("private key PEM: {e}"))?;
    Ok((chain, key))
}

/// Aborts the connection driver task when the call ends.
#[allow(clippy::too_many_arguments)]
async fn send(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client_cert: Option<&Leaf>,
    proto: Proto,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Response> {
    let start = Instant::now();
    let request = client::build_request(addr, proto, "https", method, path, headers, body)?;
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("bad server name {server_name:?}: {e}"))?;
    let alpn = match proto {
        Proto::Http1 => ALPN_HTTP1,
        Proto::H2c => ALPN_H2,
    };
    let config = client_config(ca_pem, client_cert, &[alpn])?;
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let stream = TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
        .map_err(|e| format!("TLS handshake with {addr} as {server_name:?}: {e}"))?;
    let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    if proto == Proto::H2c && negotiated.as_deref() != Some(ALPN_H2) {
        let got = negotiated.as_deref().map(String::from_utf8_lossy);
        return Err(format!("{addr} did not negotiate ALPN h2 (got {got:?})").into());
    }
    client::exchange(TokioIo::new(stream), proto, request, start).await
}

/// gRPC unary call of `path` (e.g. `/mesh.demo.Demo/Echo`) over TLS, like
/// [`crate::grpc::unary`]: a tonic channel to `https://ADDR` that verifies the server
/// against `ca_pem` for `server_name` and presents `client_cert` when asked.
///
/// A failed call is a [`Status`]: the server's, or one made by the client (connection
/// or TLS failure, including a refused client certificate: `Unavailable`; invalid metadata, path or TLS material:
/// `InvalidArgument`; no reply within [`crate::grpc::TIMEOUT`]: `DeadlineExceeded`).
pub async fn grpc_unary(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client_cert: Option<&Leaf>,
    path: &str,
    metadata: &[(&str, &str)],
    message: Bytes,
) -> std::result::Result<GrpcReply, Status> {
    grpc_unary_timed(
        addr,
        server_name,
        ca_pem,
        client_cert,
        path,
        metadata,
        message,
    )
    .await
    .0
}

/// Like [`grpc_unary`], also returning the elapsed time of the call whatever its outcome.
pub async fn grpc_unary_timed(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client_cert: Option<&Leaf>,
    path: &str,
    metadata: &[(&str, &str)],
    message: Bytes,
) -> (std::result::Result<GrpcReply, Status>, Duration) {
    let start = Instant::now();
    let call = grpc_call(
        addr,
        server_name,
        ca_pem,
        client_cert,
        path,
        metadata,
        message,
    );
    let result = match tokio::time::timeout(TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "client: no reply from {addr}{path} over TLS within {TIMEOUT:?}"
        ))),
    };
    let elapsed = start.elapsed();
    let result = result.map(|(metadata, message)| GrpcReply {
        metadata,
        message,
        elapsed,
    });
    (result, elapsed)
}

async fn grpc_call(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client_cert: Option<&Leaf>,
    path: &str,
    metadata: &[(&str, &str)],
    message: Bytes,
) -> std::result::Result<(MetadataMap, Bytes), Status> {
    let path = PathAndQuery::try_from(path)
        .map_err(|e| Status::invalid_argument(format!("client: bad path {path:?}: {e}")))?;
    let mut request = tonic::Request::new(message);
    for (key, value) in metadata {
        crate::grpc::append_metadata(request.metadata_mut(), key, value)?;
    }

    let channel = grpc_connect(addr, server_name, ca_pem, client_cert).await?;
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.map_err(|e| {
        Status::unavailable(format!(
            "client: TLS channel to {addr} not ready: {}",
            chain(&e)
        ))
    })?;
    let (metadata, message, _extensions) = client
        .unary(request, path, RawCodec)
        .await
        .map_err(|status| transport_failure(addr, status))?
        .into_parts();
    Ok((metadata, message))
}

/// tonic reports a connection that fails during the call (with TLS 1.3, a server that
/// refuses the client certificate says so only then) as `Unknown: transport error`.
/// Such a status becomes `Unavailable` with the whole cause in its message; statuses
/// sent by the server are kept.
fn transport_failure(addr: SocketAddr, status: Status) -> Status {
    let transport = std::error::Error::source(&status)
        .and_then(|source| source.downcast_ref::<tonic::transport::Error>());
    match transport {
        Some(error) if status.code() == Code::Unknown => Status::unavailable(format!(
            "client: TLS connection to {addr} failed: {}",
            chain(error)
        )),
        _ => status,
    }
}

async fn grpc_connect(
    addr: SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client_cert: Option<&Leaf>,
) -> std::result::Result<Channel, Status> {
    let mut tls = ClientTlsConfig::new()
        .domain_name(server_name)
        .ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(leaf) = client_cert {
        tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| Status::invalid_argument(format!("client: bad address {addr}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tls_config(tls)
        .map_err(|e| Status::invalid_argument(format!("client: TLS config: {}", chain(&e))))?
        .connect()
        .await
        .map_err(|e| {
            Status::unavailable(format!(
                "client: TLS connect to {addr} as {server_name:?}: {}",
                chain(&e)
            ))
        })
}

/// An error and its sources, `: `-separated (tonic's transport errors say little alone).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
