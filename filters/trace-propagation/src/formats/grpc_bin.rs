//! gRPC's `grpc-trace-bin`: the OpenCensus binary trace context, base64-encoded.
//!
//! The binary rules are those of OpenCensus `encodings/BinaryEncoding.md` (census-instrumentation/
//! opencensus-specs), "Trace Context":
//!
//! - one version byte, then fields, each a one-byte field id and its value; version `0` is the
//!   only one defined, any other is invalid;
//! - field `0`: trace id, 16 bytes; field `1`: span id, 8 bytes; field `2`: trace options, 1
//!   byte. Fields may come in any order ("Fields within a data type version can be serialized
//!   in any order"); reading stops at the end or at the first unknown field id, which "should
//!   not be considered a parse error", so what follows is ignored;
//! - a known field cut short by the end of the value is invalid, and so is a field given twice
//!   (a context has one trace id; two that differ cannot both be right);
//! - the three fields are optional in the encoding, but a context without a trace id or a span
//!   id cannot be continued: both are required here; all-zero ids are invalid;
//! - trace options: the least significant bit set recommends tracing (`Sampled`); unset, "the
//!   caller does not make a decision to trace and the decision might be deferred", which is
//!   read as `Deferred`. A missing options field is 0. Other bits are ignored.
//!
//! The header value is base64 of those bytes (gRPC's `-bin` metadata, PROTOCOL-HTTP2.md:
//! "Implementations MUST accept padded and un-padded values"): the standard alphabet, padded or
//! not. Nothing else (URL-safe alphabet, embedded whitespace) is accepted.
//!
//! [`format_grpc_trace_bin`] writes the 29 bytes version 0, trace id, span id, options, in field
//! order, as padded base64 (40 characters).
//!
//! What it cannot carry: `debug` (written as sampled, read back `debug: false`), a "not sampled"
//! decision (option bit 0, read back `Deferred`), and the W3C `random` flag (read back `false`).

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::{trim_ows, Invalid, Sampling, SpanContext, SpanId, TraceId};

/// The header's name.
pub const GRPC_TRACE_BIN_HEADER: &str = "grpc-trace-bin";
/// Trace options bit: sampled.
pub const OPTION_SAMPLED: u8 = 0x01;

const VERSION: u8 = 0;
const FIELD_TRACE_ID: u8 = 0;
const FIELD_SPAN_ID: u8 = 1;
const FIELD_OPTIONS: u8 = 2;
/// Bytes written: version, then each field id and its value.
const ENCODED_LEN: usize = 1 + (1 + 16) + (1 + 8) + (1 + 1);

/// Standard base64, writing padding, reading it present or absent.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Reads a `grpc-trace-bin` value. See the module documentation for the rules.
pub fn parse_grpc_trace_bin(value: &str) -> Result<SpanContext, Invalid> {
    let bytes = BASE64
        .decode(trim_ows(value))
        .map_err(|_| Invalid("not base64"))?;
    decode(&bytes)
}

/// Reads the binary trace context (not base64).
pub fn decode(bytes: &[u8]) -> Result<SpanContext, Invalid> {
    let (&version, mut rest) = bytes.split_first().ok_or(Invalid("empty"))?;
    if version != VERSION {
        return Err(Invalid("version is not 0"));
    }
    let mut trace_id = None;
    let mut span_id = None;
    let mut options = None;
    while let Some((&field, value)) = rest.split_first() {
        match field {
            FIELD_TRACE_ID => {
                let (id, tail) = value
                    .split_first_chunk::<16>()
                    .ok_or(Invalid("trace id field is cut short"))?;
                if trace_id.replace(TraceId(*id)).is_some() {
                    return Err(Invalid("trace id field appears twice"));
                }
                rest = tail;
            }
            FIELD_SPAN_ID => {
                let (id, tail) = value
                    .split_first_chunk::<8>()
                    .ok_or(Invalid("span id field is cut short"))?;
                if span_id.replace(SpanId(*id)).is_some() {
                    return Err(Invalid("span id field appears twice"));
                }
                rest = tail;
            }
            FIELD_OPTIONS => {
                let (&o, tail) = value
                    .split_first()
                    .ok_or(Invalid("trace options field is cut short"))?;
                if options.replace(o).is_some() {
                    return Err(Invalid("trace options field appears twice"));
                }
                rest = tail;
            }
            // An unknown field: stop, what follows belongs to a later data type version.
            _ => break,
        }
    }
    let trace_id = trace_id.ok_or(Invalid("no trace id"))?;
    let span_id = span_id.ok_or(Invalid("no span id"))?;
    if !trace_id.is_valid() {
        return Err(Invalid("trace id is all zeros"));
    }
    if !span_id.is_valid() {
        return Err(Invalid("span id is all zeros"));
    }
    Ok(SpanContext {
        trace_id,
        span_id,
        sampling: if options.unwrap_or(0) & OPTION_SAMPLED != 0 {
            Sampling::Sampled
        } else {
            Sampling::Deferred
        },
        debug: false,
        random: false,
    })
}

/// The binary trace context: version 0, trace id, span id, options.
pub fn encode(c: &SpanContext) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENCODED_LEN);
    out.push(VERSION);
    out.push(FIELD_TRACE_ID);
    out.extend_from_slice(&c.trace_id.0);
    out.push(FIELD_SPAN_ID);
    out.extend_from_slice(&c.span_id.0);
    out.push(FIELD_OPTIONS);
    out.push(if c.is_sampled() { OPTION_SAMPLED } else { 0 });
    out
}

/// Writes a `grpc-trace-bin` value: padded base64 of [`encode`].
pub fn format_grpc_trace_bin(c: &SpanContext) -> String {
    BASE64.encode(encode(c))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;
    use crate::formats::tests::span_context;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
    use proptest::prelude::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute (proptest's #[test] too), so these
    // tests also run compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// The specification's valid example.
    const EXAMPLE: [u8; 29] = [
        0, 0, 75, 249, 47, 53, 119, 179, 77, 166, 163, 206, 146, 157, 0, 14, 71, 54, 1, 52, 240,
        103, 170, 11, 169, 2, 183, 2, 1,
    ];

    #[test]
    fn reads_the_spec_example_padded_and_unpadded() {
        let padded = STANDARD.encode(EXAMPLE);
        let unpadded = STANDARD_NO_PAD.encode(EXAMPLE);
        assert_eq!(padded, "AABL+S81d7NNpqPOkp0ADkc2ATTwZ6oLqQK3AgE=");
        assert_eq!(unpadded, "AABL+S81d7NNpqPOkp0ADkc2ATTwZ6oLqQK3AgE");
        for value in [
            padded.as_str(),
            unpadded.as_str(),
            " AABL+S81d7NNpqPOkp0ADkc2ATTwZ6oLqQK3AgE=\t",
        ] {
            let c = parse_grpc_trace_bin(value).unwrap();
            assert_eq!(c.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d000e4736");
            assert_eq!(c.span_id.to_hex(), "34f067aa0ba902b7");
            assert_eq!(
                (c.sampling, c.debug, c.random),
                (Sampling::Sampled, false, false)
            );
        }
    }

    #[test]
    fn writes_29_bytes_as_padded_base64() {
        let c = decode(&EXAMPLE).unwrap();
        assert_eq!(encode(&c), EXAMPLE);
        assert_eq!(
            format_grpc_trace_bin(&c),
            "AABL+S81d7NNpqPOkp0ADkc2ATTwZ6oLqQK3AgE="
        );
        assert_eq!(format_grpc_trace_bin(&c).len(), 40);
    }

    #[test]
    fn an_unset_sampled_bit_or_no_options_field_is_a_deferred_decision() {
        let mut bytes = EXAMPLE;
        bytes[28] = 0;
        assert_eq!(decode(&bytes).unwrap().sampling, Sampling::Deferred);
        assert_eq!(decode(&EXAMPLE[..27]).unwrap().sampling, Sampling::Deferred);
        bytes[28] = 0xfe;
        assert_eq!(decode(&bytes).unwrap().sampling, Sampling::Deferred);
        bytes[28] = 0x03;
        assert_eq!(decode(&bytes).unwrap().sampling, Sampling::Sampled);
        // Not sampled and debug cannot be told apart from deferred and sampled.
        let mut c = decode(&EXAMPLE).unwrap();
        c.sampling = Sampling::NotSampled;
        assert_eq!(
            parse_grpc_trace_bin(&format_grpc_trace_bin(&c))
                .unwrap()
                .sampling,
            Sampling::Deferred
        );
        c.debug = true;
        let back = parse_grpc_trace_bin(&format_grpc_trace_bin(&c)).unwrap();
        assert_eq!((back.sampling, back.debug), (Sampling::Sampled, false));
    }

    #[test]
    fn reads_fields_in_any_order_and_stops_at_an_unknown_field() {
        // Options, span id, trace id.
        let mut reordered = vec![0, 2, 1, 1];
        reordered.extend_from_slice(&EXAMPLE[19..27]);
        reordered.push(0);
        reordered.extend_from_slice(&EXAMPLE[2..18]);
        assert_eq!(decode(&reordered), decode(&EXAMPLE));
        // Anything after an unknown field id is not looked at, even a repeated field.
        let mut extended = EXAMPLE.to_vec();
        extended.extend_from_slice(&[3, 0xff, 0, 0]);
        assert_eq!(decode(&extended), decode(&EXAMPLE));
        let mut extended = EXAMPLE.to_vec();
        extended.push(127);
        assert_eq!(decode(&extended), decode(&EXAMPLE));
    }

    #[test]
    fn refuses_what_the_format_rules_out() {
        let zero_trace: Vec<u8> = [&[0u8, 0][..], &[0; 16], &EXAMPLE[18..]].concat();
        let zero_span: Vec<u8> = [&EXAMPLE[..19], &[0u8; 8][..], &EXAMPLE[27..]].concat();
        let twice: Vec<u8> = [&EXAMPLE[..], &EXAMPLE[18..27]].concat();
        let mut version_1 = EXAMPLE;
        version_1[0] = 1;
        for (bytes, why) in [
            (vec![], "empty"),
            (version_1.to_vec(), "version is not 0"),
            (vec![0], "no trace id"),
            (EXAMPLE[..18].to_vec(), "no span id"),
            (EXAMPLE[18..].to_vec(), "version is not 0"),
            ([&[0u8][..], &EXAMPLE[18..]].concat(), "no trace id"),
            (EXAMPLE[..17].to_vec(), "trace id field is cut short"),
            (EXAMPLE[..26].to_vec(), "span id field is cut short"),
            (EXAMPLE[..28].to_vec(), "trace options field is cut short"),
            (zero_trace, "trace id is all zeros"),
            (zero_span, "span id is all zeros"),
            (twice, "span id field appears twice"),
            (
                [&EXAMPLE[..], &[2, 1]].concat(),
                "trace options field appears twice",
            ),
            (
                [&EXAMPLE[..], &EXAMPLE[1..18]].concat(),
                "trace id field appears twice",
            ),
        ] {
            assert_eq!(decode(&bytes), Err(Invalid(why)), "{bytes:?}");
            assert_eq!(
                parse_grpc_trace_bin(&STANDARD.encode(&bytes)),
                Err(Invalid(why)),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_standard_base64() {
        let padded = STANDARD.encode(EXAMPLE);
        for bad in [
            "!!!!".to_string(),
            URL_SAFE.encode(EXAMPLE),
            padded.replace('+', " +"),
            format!("{padded}="),
            format!("{padded}A"),
            padded.replace('=', "%3D"),
        ] {
            assert_eq!(
                parse_grpc_trace_bin(&bad),
                Err(Invalid("not base64")),
                "{bad:?}"
            );
        }
        assert_eq!(parse_grpc_trace_bin(""), Err(Invalid("empty")));
    }

    proptest! {
        #[test]
        fn round_trips(c in span_context()) {
            let text = format_grpc_trace_bin(&c);
            prop_assert_eq!(text.len(), 40);
            let back = parse_grpc_trace_bin(&text).unwrap();
            prop_assert_eq!((back.trace_id, back.span_id), (c.trace_id, c.span_id));
            prop_assert_eq!(back.sampling, if c.is_sampled() { Sampling::Sampled } else { Sampling::Deferred });
            prop_assert_eq!(parse_grpc_trace_bin(text.trim_end_matches('=')), Ok(back));
        }

        #[test]
        fn parse_never_panics_on_arbitrary_strings(s in any::<String>()) {
            let _ = parse_grpc_trace_bin(&s);
        }

        #[test]
        fn parse_never_panics_on_arbitrary_bytes_base64_encoded(bytes in proptest::collection::vec(any::<u8>(), 0..64), pad in any::<bool>()) {
            let text = if pad { STANDARD.encode(&bytes) } else { STANDARD_NO_PAD.encode(&bytes) };
            prop_assert_eq!(parse_grpc_trace_bin(&text), decode(&bytes));
        }

        #[test]
        fn parse_never_panics_on_near_misses(fields in proptest::collection::vec((0u8..4, proptest::collection::vec(any::<u8>(), 0..18)), 0..5)) {
            // Version 0 and plausible field ids, so the field loop is reached every time.
            let mut bytes = vec![0u8];
            for (id, value) in fields {
                bytes.push(id);
                bytes.extend(value);
            }
            if let Ok(c) = parse_grpc_trace_bin(&STANDARD.encode(&bytes)) {
                prop_assert!(c.trace_id.is_valid() && c.span_id.is_valid());
            }
        }
    }
}
