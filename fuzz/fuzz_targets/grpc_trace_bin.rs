//! `grpc-trace-bin` (OpenCensus binary format): `decode` of any bytes and `parse_grpc_trace_bin`
//! of any string never panic; a context either reads is valid, and `encode` (29 bytes) and
//! `format_grpc_trace_bin` (40 characters of padded base64) write it so that it reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_trace_propagation::formats::grpc_bin::{decode, encode};
use mesh_trace_propagation::formats::{format_grpc_trace_bin, parse_grpc_trace_bin, SpanContext};

fn round_trip(c: SpanContext) {
    assert!(c.is_valid(), "{c:?}");
    let bytes = encode(&c);
    assert_eq!(bytes.len(), 29);
    assert_eq!(decode(&bytes), Ok(c));
    let written = format_grpc_trace_bin(&c);
    assert_eq!(written.len(), 40, "{written:?}");
    assert_eq!(parse_grpc_trace_bin(&written), Ok(c), "{written:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = decode(data) {
        round_trip(c);
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(c) = parse_grpc_trace_bin(s) {
            round_trip(c);
        }
    }
});
