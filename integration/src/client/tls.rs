//! The clients over TLS, optionally presenting a client certificate (mTLS): [`Tls`] holds
//! what a client trusts and presents, and makes HTTP/1.1 and HTTP/2 calls (the same code as
//! [`super::request`]), raw HTTP/1.1 bytes ([`super::raw`]) and gRPC unary calls
//! ([`super::grpc`]).
//!
//! Every call opens a fresh TCP connection to the given socket address and verifies the
//! server's certificate against the given CA only, for `server_name` (sent as SNI and
//! matched against the certificate's DNS or IP SANs). The connection address and the
//! name are independent: tests connect to `127.0.0.1` and check the name
//! `envoy.mesh.local`. The crypto provider is ring.
//!
//! [`Proto::H2c`] means HTTP/2 here (over TLS, ALPN `h2`), [`Proto::Http1`] HTTP/1.1 (ALPN
//! `http/1.1`); a `host` header sets the `Host` (HTTP/1.1) or `:authority` (HTTP/2), which
//! defaults to the socket address.
//!
//! A server that refuses the client certificate (or its absence) makes the call fail.
//! With TLS 1.3 the client only learns that when it reads, so the error may come from
//! the request rather than from the handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tonic::Status;

use super::grpc::{self, GrpcReply};
use super::{Proto, Response, Result};
use crate::certs::Leaf;

/// ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// What a TLS client trusts and presents.
#[derive(Clone, Debug)]
pub struct Tls {
    /// The name the server's certificate must be valid for (and the SNI).
    pub server_name: String,
    /// The CA (one or more PEM certificates) the server's certificate must chain to.
    pub ca_pem: String,
    /// Presented when the server asks for a client certificate.
    pub client_cert: Option<Leaf>,
}

impl Tls {
    /// A client that trusts `ca_pem` for `server_name` and presents no certificate.
    pub fn new(server_name: &str, ca_pem: &str) -> Tls {
        Tls {
            server_name: server_name.to_owned(),
            ca_pem: ca_pem.to_owned(),
            client_cert: None,
        }
    }

    /// The same client presenting `cert` (`None`: no certificate).
    pub fn presenting(&self, cert: Option<&Leaf>) -> Tls {
        Tls {
            client_cert: cert.cloned(),
            ..self.clone()
        }
    }

    /// Sends one request over a new TLS connection to `addr` and reads the whole response
    /// (see [`super::request`]). HTTP/2 fails unless the server selects ALPN `h2`.
    pub async fn request(
        &self,
        addr: SocketAddr,
        proto: Proto,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response> {
        super::send(addr, Some(self), proto, method, path, headers, body).await
    }

    /// `GET path` over HTTP/1.1 over TLS.
    pub async fn get(
        &self,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response> {
        self.request(addr, Proto::Http1, "GET", path, headers, None)
            .await
    }

    /// gRPC unary call over TLS, like [`grpc::unary`]. A failed call is a [`Status`]: the
    /// server's, or one made by the client (connection or TLS failure, including a refused
    /// client certificate: `Unavailable`; invalid metadata, path or TLS material:
    /// `InvalidArgument`; no reply within [`grpc::TIMEOUT`]: `DeadlineExceeded`).
    pub async fn grpc_unary(
        &self,
        addr: SocketAddr,
        path: &str,
        metadata: &[(&str, &str)],
        message: Bytes,
    ) -> std::result::Result<GrpcReply, Status> {
        self.grpc_unary_timed(addr, path, metadata, message).await.0
    }

    /// Like [`Tls::grpc_unary`], also returning the elapsed time whatever the outcome.
    pub async fn grpc_unary_timed(
        &self,
        addr: SocketAddr,
        path: &str,
        metadata: &[(&str, &str)],
        message: Bytes,
    ) -> (std::result::Result<GrpcReply, Status>, Duration) {
        grpc::timed(addr, Some(self), path, metadata, message).await
    }

    /// The rustls configuration: trusts the certificates of `ca_pem` only, presents the
    /// client certificate when asked, offers the given ALPN protocols.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.map_err(|e| format!("CA PEM: {e}"))?)?;
        }
        if roots.is_empty() {
            return Err("CA PEM holds no certificate".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match &self.client_cert {
            Some(leaf) => {
                let (chain, key) = identity(leaf)?;
                builder.with_client_auth_cert(chain, key)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// The TLS handshake on a connected stream, offering the ALPN of `proto`; HTTP/2 fails
    /// unless the server selects `h2`.
    pub async fn handshake(
        &self,
        addr: SocketAddr,
        stream: TcpStream,
        proto: Proto,
    ) -> Result<TlsStream<TcpStream>> {
        let alpn = match proto {
            Proto::Http1 => ALPN_HTTP1,
            Proto::H2c => ALPN_H2,
        };
        let name = ServerName::try_from(self.server_name.clone())
            .map_err(|e| format!("bad server name {:?}: {e}", self.server_name))?;
        let config = self.client_config(&[alpn])?;
        let stream = TlsConnector::from(Arc::new(config))
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake with {addr} as {:?}: {e}", self.server_name))?;
        let negotiated = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if proto == Proto::H2c && negotiated.as_deref() != Some(ALPN_H2) {
            let got = negotiated.as_deref().map(String::from_utf8_lossy);
            return Err(format!("{addr} did not negotiate ALPN h2 (got {got:?})").into());
        }
        Ok(stream)
    }
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
