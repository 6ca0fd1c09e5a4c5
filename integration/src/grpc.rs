//! gRPC client for end-to-end tests: tonic over a fresh `Channel` to `http://ADDR`,
//! unary calls of raw protobuf bytes (no generated code).
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
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

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
    let start = Instant::now();
    let result = match tokio::time::timeout(TIMEOUT, call(addr, path, metadata, message)).await {
        Ok(result) => result,
        Err(_) => Err(Status::deadline_exceeded(format!(
            "client: no reply from {addr}{path} within {TIMEOUT:?}"
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

    let channel = connect(addr).await?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(format!("client: channel to {addr} not ready: {e}")))?;
    let (metadata, message, _extensions) =
        client.unary(request, path, RawCodec).await?.into_parts();
    Ok((metadata, message))
}

async fn connect(addr: SocketAddr) -> Result<Channel, Status> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::invalid_argument(format!("client: bad address {addr}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("client: connect to {addr}: {e}")))
}

pub(crate) fn append_metadata(map: &mut MetadataMap, key: &str, value: &str) -> Result<(), Status> {
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
/// with [`crate::client`]).
pub fn frame(message: &[u8]) -> Bytes {
    crate::upstream::frame(message)
}

/// The first message of a length-prefixed gRPC body, if it holds a complete
/// uncompressed one.
pub fn unframe(body: &[u8]) -> Option<Bytes> {
    crate::upstream::first_message(body)
        .ok()
        .map(Bytes::copy_from_slice)
}
