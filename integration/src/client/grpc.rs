//! gRPC client for end-to-end tests: tonic over a fresh `Channel` to `http://ADDR` (or
//! `https://ADDR` through [`super::tls::Tls::grpc_unary`]), unary calls of raw protobuf bytes
//! (no generated code).
//!
//! Timing: [`GrpcReply::elapsed`] holds the duration of a successful call; use
//! [`unary_timed`] to also time calls that end with a [`Status`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, BinaryMetadataKey, MetadataMap};
use tonic::metadata::{BinaryMetadataValue, KeyAndValueRef};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use super::tls::Tls;

/// Time allowed to establish the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound on one call, so that a broken test fails instead of hanging. It is not
/// sent as `grpc-timeout`; pass that header in the metadata when a test needs it.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A [`Codec`] whose messages are the raw bytes of the message (already serialized).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A successful unary call.
#[derive(Debug, Clone)]
pub struct GrpcReply {
    /// Response metadata: the response headers merged with the trailers.
    pub metadata: MetadataMap,
    /// The response message.
    pub message: Bytes,
    /// Time from the start of the call (before connecting) until the reply was complete.
    pub elapsed: Duration,
}

impl GrpcReply {
    /// First ASCII value of a metadata entry.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.metadata.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Unary call of `path` (e.g. `/mesh.demo.Demo/Echo`) on `addr` sending `message` with
/// `metadata` (keys ending in `-bin` take the raw bytes of the value).
///
/// A failed call is a [`Status`]: the server's, or one made by tonic (connection
/// failure: `Unavailable`; invalid metadata or path: `InvalidArgument`).
pub async fn unary(
    addr: SocketAddr,
    path: &str,
    metadata: &[(&str, &str)],
    message: Bytes,
) -> Result<GrpcReply, Status> {
    unary_timed(addr, path, metadata, message).await.0
}

/// Like [`unary`], also returning the elapsed time of the call whatever its outcome.
pub async fn unary_timed(
    addr: SocketAddr,
    path: &str,
    metadata: &[(&str, &str)],
    message: Bytes,
) -> (Result<GrpcReply, Status>, Duration) {
    timed(addr, None, path, metadata, message).await
}

/// One call, plain or over TLS, within [`TIMEOUT`], timed.
pub(crate) async fn timed(
    addr: SocketAddr,
    tls: Option<&Tls>,
    path: &str,
    metadata: &[(&str, &str)],
    message: Bytes,
) -> (Result<GrpcReply, Status>, Duration) {
    let start = Instant::now();
    let over = if tls.is_some() { " over TLS" } else { "" };
    let call = call(addr, tls, path, metadata, message);
    let result = match tokio::time::timeout(TIMEOUT, call).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "client: no reply from {addr}{path}{over} within {TIMEOUT:?}"
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

async fn call(
    addr: SocketAddr,
    tls: Option<&Tls>,
    path: &str,
    metadata: &[(&str, &str)],
    message: Bytes,
) -> Result<(MetadataMap, Bytes), Status> {
    let path = PathAndQuery::try_from(path)
        .map_err(|e| Status::invalid_argument(format!("client: bad path {path:?}: {e}")))?;
    let mut request = Request::new(message);
    for (key, value) in metadata {
        append_metadata(request.metadata_mut(), key, value)?;
    }

    let channel = connect(addr, tls).await?;
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.map_err(|e| {
        Status::unavailable(format!(
            "client: channel to {addr} not ready: {}",
            chain(&e)
        ))
    })?;
    let reply = client.unary(request, path, RawCodec).await;
    let reply = match tls {
        Some(_) => reply.map_err(|status| transport_failure(addr, status)),
        None => reply,
    };
    let (metadata, message, _extensions) = reply?.into_parts();
    Ok((metadata, message))
}

async fn connect(addr: SocketAddr, tls: Option<&Tls>) -> Result<Channel, Status> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
        .map_err(|e| Status::invalid_argument(format!("client: bad address {addr}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = tls {
        let mut config = ClientTlsConfig::new()
            .domain_name(&tls.server_name)
            .ca_certificate(Certificate::from_pem(&tls.ca_pem));
        if let Some(leaf) = &tls.client_cert {
            config = config.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
        }
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| Status::invalid_argument(format!("client: TLS config: {}", chain(&e))))?;
    }
    endpoint.connect().await.map_err(|e| {
        let name = tls
            .map(|t| format!(" as {:?}", t.server_name))
            .unwrap_or_default();
        Status::unavailable(format!("client: connect to {addr}{name}: {}", chain(&e)))
    })
}

/// tonic reports a TLS connection that fails during the call (with TLS 1.3, a server that
/// refuses the client certificate says so only then) as `Unknown: transport error`. Such a
/// status becomes `Unavailable` with the whole cause in its message; statuses sent by the
/// server are kept.
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

fn append_metadata(map: &mut MetadataMap, key: &str, value: &str) -> Result<(), Status> {
    let bad = |e: &dyn std::fmt::Display| {
        Status::invalid_argument(format!("client: bad metadata {key:?}: {e}"))
    };
    if key.to_ascii_lowercase().ends_with("-bin") {
        let key = BinaryMetadataKey::from_bytes(key.as_bytes()).map_err(|e| bad(&e))?;
        map.append_bin(key, BinaryMetadataValue::from_bytes(value.as_bytes()));
    } else {
        let key = AsciiMetadataKey::from_bytes(key.as_bytes()).map_err(|e| bad(&e))?;
        let value: AsciiMetadataValue = value.parse().map_err(|e| bad(&e))?;
        map.append(key, value);
    }
    Ok(())
}

/// The metadata entries as `(name, value)` pairs; binary values are shown as their
/// base64 wire form.
pub fn metadata_pairs(map: &MetadataMap) -> Vec<(String, String)> {
    map.iter()
        .map(|entry| match entry {
            KeyAndValueRef::Ascii(key, value) => (
                key.as_str().to_owned(),
                String::from_utf8_lossy(value.as_encoded_bytes()).into_owned(),
            ),
            KeyAndValueRef::Binary(key, value) => (
                key.as_str().to_owned(),
                String::from_utf8_lossy(value.as_encoded_bytes()).into_owned(),
            ),
        })
        .collect()
}

/// One uncompressed length-prefixed gRPC message frame (for raw HTTP/2 requests made
/// with [`super::grpc_h2`]).
pub fn frame(message: &[u8]) -> Bytes {
    let mut out = bytes::BytesMut::with_capacity(message.len() + 5);
    out.put_u8(0);
    // Messages over 4 GiB cannot be framed; the length saturates (never reached in tests).
    out.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    out.put_slice(message);
    out.freeze()
}

/// The first message of a length-prefixed gRPC body, if it holds a complete
/// uncompressed one.
pub fn unframe(body: &[u8]) -> Option<Bytes> {
    crate::upstream::first_message(body)
        .ok()
        .map(Bytes::copy_from_slice)
}
