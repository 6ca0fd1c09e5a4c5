//! The trace-context propagation formats, pure: a header value in, a [`SpanContext`] out, and
//! back. Nothing here reads the host; every parser is property-tested never to panic.
//!
//! | [`Format`] | headers | module | specification |
//! |---|---|---|---|
//! | `w3c` | `traceparent`, `tracestate`; `baggage` | [`w3c`], [`baggage`] | W3C Trace Context Level 2; W3C Baggage |
//! | `b3` | `b3` | [`b3`] | openzipkin/b3-propagation, "Single Header" |
//! | `b3-multi` | `x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`, `x-b3-flags` | [`b3`] | openzipkin/b3-propagation, "Multiple Headers" |
//! | `jaeger` | `uber-trace-id` | [`jaeger`] | Jaeger client libraries, "Propagation Format" |
//! | `grpc-trace-bin` | `grpc-trace-bin` | [`grpc_bin`] | OpenCensus `encodings/BinaryEncoding.md`, Trace Context |
//!
//! Each module's header lists the rules it enforces and where it departs from its specification.
//!
//! **One model.** Every format is read into a [`SpanContext`]: a 128-bit [`TraceId`], the 64-bit
//! [`SpanId`] of the caller's span, a [`Sampling`] decision, a `debug` flag and the W3C Level 2
//! `random` flag. Debug always implies sampled: no parser returns `debug: true` without
//! [`Sampling::Sampled`], and every writer treats a debug context as sampled
//! ([`SpanContext::is_sampled`]).
//!
//! **What each format cannot carry.** Written in a format and read back, a context keeps its trace
//! id and span id in every format; the rest survives as this table says (the property
//! `every_format_round_trips_what_it_can_carry` in the tests checks exactly this table):
//!
//! | format | `Deferred` | `NotSampled` | `debug` | `random` |
//! |---|---|---|---|---|
//! | W3C `traceparent` | read back `NotSampled` (sampled flag 0) | kept | lost: written as sampled, read back `Sampled` | kept |
//! | B3 single | kept (sampling field omitted; the parent is then not written either) | kept | kept (`d`) | lost |
//! | B3 multi | kept (`x-b3-sampled` omitted) | kept | kept (`x-b3-flags: 1`) | lost |
//! | Jaeger | read back `NotSampled` (flags 0) | kept | kept (flag 0x02) | lost |
//! | `grpc-trace-bin` | kept (option bit 0) | read back `Deferred` (option bit 0) | lost: written as sampled, read back `Sampled` | lost |
//!
//! No format has a bit for "deferred" besides B3, and the unset sampled bit means "not sampled"
//! in W3C and Jaeger but "no decision, may be deferred" in the OpenCensus binary format, which is
//! why `Deferred` and `NotSampled` swap places between those rows. A filter that has made its own
//! decision before writing (the usual case) loses nothing but `debug` and `random`.
//!
//! **64-bit trace ids.** B3 and Jaeger also carry 64-bit trace ids. They are read as the 128-bit id
//! whose first 8 bytes are zero (B3: "16 lower-hex characters"; Jaeger: "shorter values are
//! 0-padded on the left"), so the same trace keeps the same [`TraceId`] whichever width it
//! arrived in. B3 is always written with 32 hex digits (which B3 allows); Jaeger with 16 when the
//! high half is zero, as Jaeger clients do. Both read either width, so a 64-bit id translated to
//! 128 bits and back is still the same trace.
//!
//! **Whitespace.** Leading and trailing SP and HTAB are not part of an HTTP field value
//! (RFC 9110 §5.5); every parser ignores them, and nothing else is trimmed.
//!
//! **Repeated headers.** A request may carry a header in several field lines (Envoy hands each
//! line to the filter as its own entry, in order). RFC 9110 §5.3 allows that only for fields
//! whose value is a comma-separated list, and a recipient may then combine the lines, in order,
//! into one value joined with `,`:
//!
//! - `tracestate` and `baggage` are lists: every line is read, and the lines are one list
//!   ([`TraceState::parse_lines`], [`baggage::limit_baggage_lines`]);
//! - `traceparent`, `b3`, `uber-trace-id` and `grpc-trace-bin` are not: two lines are two
//!   contexts, which cannot both be right, and combined they parse as none, so a repeated one is
//!   invalid ([`single_line`]), as the W3C test suite expects of `traceparent`
//!   ("traceparent duplicated": a new trace);
//! - the `X-B3-*` headers: "When extracting state headers, the first value wins" (B3, "Multiple
//!   Headers"), so only the first line of each is read.
//!
//! ```
//! use mesh_trace_propagation::formats::{self, Sampling};
//! let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
//! let ctx = formats::parse_traceparent(traceparent).unwrap();
//! assert_eq!(ctx.sampling, Sampling::Sampled);
//! assert_eq!(
//!     formats::format_b3(&ctx, None),
//!     "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"
//! );
//! assert_eq!(
//!     formats::format_uber_trace_id(&ctx, None),
//!     "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:01"
//! );
//! assert_eq!(
//!     formats::parse_b3("0-1"),
//!     Err(formats::Invalid("trace id is not 16 or 32 lowercase hex digits"))
//! );
//! ```

use std::fmt;
use std::str::FromStr;

pub mod b3;
pub mod baggage;
pub mod grpc_bin;
pub mod jaeger;
pub mod w3c;

pub use b3::{format_b3, format_b3_multi, parse_b3, parse_b3_multi, B3};
pub use baggage::{limit_baggage, limit_baggage_lines, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS};
pub use grpc_bin::{format_grpc_trace_bin, parse_grpc_trace_bin};
pub use jaeger::{format_uber_trace_id, parse_uber_trace_id};
pub use w3c::{format_traceparent, parse_traceparent, TraceState, MAX_TRACESTATE_MEMBERS};

/// The one field line of a header whose value is not a list: `None` when the request has none,
/// [`Invalid`] when it has several (see "Repeated headers" above).
///
/// ```
/// use mesh_trace_propagation::formats::{single_line, Invalid};
/// assert_eq!(single_line([]), None);
/// assert_eq!(single_line(["a"]), Some(Ok("a")));
/// assert_eq!(single_line(["a", "a"]), Some(Err(Invalid("the header is repeated"))));
/// ```
pub fn single_line<'a>(
    lines: impl IntoIterator<Item = &'a str>,
) -> Option<Result<&'a str, Invalid>> {
    let mut lines = lines.into_iter();
    let first = lines.next()?;
    match lines.next() {
        None => Some(Ok(first)),
        Some(_) => Some(Err(Invalid("the header is repeated"))),
    }
}

/// A 128-bit trace id, as bytes in wire order (the first byte is the left-most hex pair).
/// All zeros is the invalid id of every format.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

impl TraceId {
    /// Not all zeros.
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 16]
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(32);
        push_hex(&mut out, &self.0);
        out
    }

    /// Exactly 32 lowercase hex digits. All zeros is accepted here: check [`TraceId::is_valid`].
    pub fn from_hex(s: &str) -> Result<TraceId, Invalid> {
        decode_hex(s.as_bytes(), Case::Lower)
            .map(TraceId)
            .ok_or(Invalid("trace id is not 32 lowercase hex digits"))
    }

    /// The first 8 bytes are zero: a 64-bit id read into 128 bits.
    fn high_half_is_zero(&self) -> bool {
        self.0.iter().take(8).all(|&b| b == 0)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// A 64-bit span id, as bytes in wire order. All zeros is the invalid id of every format.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl SpanId {
    /// Not all zeros.
    pub fn is_valid(&self) -> bool {
        self.0 != [0; 8]
    }

    /// 16 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(16);
        push_hex(&mut out, &self.0);
        out
    }

    /// Exactly 16 lowercase hex digits. All zeros is accepted here: check [`SpanId::is_valid`].
    pub fn from_hex(s: &str) -> Result<SpanId, Invalid> {
        decode_hex(s.as_bytes(), Case::Lower)
            .map(SpanId)
            .ok_or(Invalid("span id is not 16 lowercase hex digits"))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// The caller's sampling decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sampling {
    /// Record this trace.
    Sampled,
    /// Do not record this trace.
    NotSampled,
    /// No decision carried: the receiver decides (B3 without a sampling state; the OpenCensus
    /// binary format with its sampled bit unset).
    Deferred,
}

/// One hop's trace context, the same whatever format carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanContext {
    pub trace_id: TraceId,
    /// The caller's span: the parent of the span this hop starts.
    pub span_id: SpanId,
    pub sampling: Sampling,
    /// Force tracing (B3 `d` / `X-B3-Flags: 1`, Jaeger flag 0x02). Implies sampled.
    pub debug: bool,
    /// W3C Trace Context Level 2 random flag: at least the 7 right-most bytes of the trace id
    /// were chosen at random.
    pub random: bool,
}

impl SpanContext {
    /// What a one-bit format writes: sampled, or debug (which implies sampled).
    pub fn is_sampled(&self) -> bool {
        self.debug || self.sampling == Sampling::Sampled
    }

    /// Both ids valid (not all zeros). Every parser checks this; a context built by hand can
    /// use it.
    pub fn is_valid(&self) -> bool {
        self.trace_id.is_valid() && self.span_id.is_valid()
    }
}

/// A propagation format, named in configuration as [`Format::name`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// W3C Trace Context (`traceparent`, with `tracestate`).
    W3c,
    /// B3 single header (`b3`).
    B3,
    /// B3 multiple headers (`x-b3-*`).
    B3Multi,
    /// Jaeger (`uber-trace-id`).
    Jaeger,
    /// gRPC's `grpc-trace-bin` (OpenCensus binary format, base64).
    GrpcTraceBin,
}

impl Format {
    /// Every format, in the order of this enum.
    pub const ALL: [Format; 5] = [
        Format::W3c,
        Format::B3,
        Format::B3Multi,
        Format::Jaeger,
        Format::GrpcTraceBin,
    ];

    /// The configuration name: `w3c`, `b3`, `b3-multi`, `jaeger`, `grpc-trace-bin`.
    pub fn name(self) -> &'static str {
        match self {
            Format::W3c => "w3c",
            Format::B3 => "b3",
            Format::B3Multi => "b3-multi",
            Format::Jaeger => "jaeger",
            Format::GrpcTraceBin => "grpc-trace-bin",
        }
    }

    /// The format with this configuration name (exactly, lowercase), or `None`.
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Invalid;

    /// Same as [`Format::parse`].
    fn from_str(s: &str) -> Result<Format, Invalid> {
        Format::parse(s).ok_or(Invalid(
            "not a format (w3c, b3, b3-multi, jaeger, grpc-trace-bin)",
        ))
    }
}

/// JSON Schema of a format name (feature `schema`, for `mesh-filters schema`): the names
/// [`Format::parse`] accepts.
#[cfg(feature = "schema")]
mod schema {
    use super::Format;
    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
    use serde::{Serialize, Serializer};
    use std::borrow::Cow;

    impl JsonSchema for Format {
        fn schema_name() -> Cow<'static, str> {
            "TraceFormat".into()
        }
        fn schema_id() -> Cow<'static, str> {
            "mesh_trace_propagation::formats::Format".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
            json_schema!({
                "type": "string",
                "description": "A propagation format: `w3c` (traceparent, tracestate), `b3` (single header), `b3-multi` (x-b3-*), `jaeger` (uber-trace-id), `grpc-trace-bin`.",
                "enum": names
            })
        }
    }

    impl Serialize for Format {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(self.name())
        }
    }
}

/// Why a header value was refused: a short reason, without the value (which is untrusted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Invalid(pub &'static str);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Invalid {}

/// Which hex digits a format allows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    /// `0-9a-f` only (W3C `HEXDIGLC`, B3 "lower-hex").
    Lower,
    /// `0-9a-fA-F`.
    Any,
}

fn hex_value(c: u8, case: Case) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' if case == Case::Any => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Exactly `2 * N` hex digits into `N` bytes.
fn decode_hex<const N: usize>(digits: &[u8], case: Case) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    decode_hex_left_padded(digits, case)
}

/// 1 to `2 * N` hex digits into `N` bytes, as a number left-padded with zeros.
fn decode_hex_left_padded<const N: usize>(digits: &[u8], case: Case) -> Option<[u8; N]> {
    if digits.is_empty() || digits.len() > 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    // The i-th digit from the right is the low (even i) or high (odd i) nibble of byte
    // N - 1 - i / 2.
    for (i, &c) in digits.iter().rev().enumerate() {
        let nibble = hex_value(c, case)?;
        let at = (N - 1).checked_sub(i / 2)?;
        let byte = out.get_mut(at)?;
        *byte |= if i % 2 == 0 { nibble } else { nibble << 4 };
    }
    Some(out)
}

/// Appends two lowercase hex digits per byte.
fn push_hex(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        for nibble in [b >> 4, b & 0x0f] {
            out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
}

/// Without leading and trailing SP / HTAB (RFC 9110 §5.6.3 OWS).
fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute (proptest's #[test] too), so these
    // tests also run compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// Any valid context: non-zero ids, any sampling, any flags (debug with `NotSampled` too, which
    /// no parser returns but a caller could build).
    pub(crate) fn span_context() -> impl Strategy<Value = SpanContext> {
        let sampling = prop_oneof![
            Just(Sampling::Sampled),
            Just(Sampling::NotSampled),
            Just(Sampling::Deferred)
        ];
        (
            any::<[u8; 16]>().prop_filter("valid", |b| *b != [0; 16]),
            any::<[u8; 8]>().prop_filter("valid", |b| *b != [0; 8]),
            sampling,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(t, s, sampling, debug, random)| SpanContext {
                trace_id: TraceId(t),
                span_id: SpanId(s),
                sampling,
                debug,
                random,
            })
    }

    /// Any valid span id, or none.
    pub(crate) fn parent() -> impl Strategy<Value = Option<SpanId>> {
        proptest::option::of(
            any::<[u8; 8]>()
                .prop_filter("valid", |b| *b != [0; 8])
                .prop_map(SpanId),
        )
    }

    /// The context `format` gives back after writing `c`: the module header's table, as code.
    fn carried(format: Format, c: &SpanContext) -> SpanContext {
        let one_bit = |unset: Sampling| {
            if c.is_sampled() {
                Sampling::Sampled
            } else {
                unset
            }
        };
        let (sampling, debug, random) = match format {
            Format::W3c => (one_bit(Sampling::NotSampled), false, c.random),
            Format::B3 | Format::B3Multi => (
                if c.debug {
                    Sampling::Sampled
                } else {
                    c.sampling
                },
                c.debug,
                false,
            ),
            Format::Jaeger => (one_bit(Sampling::NotSampled), c.debug, false),
            Format::GrpcTraceBin => (one_bit(Sampling::Deferred), false, false),
        };
        SpanContext {
            sampling,
            debug,
            random,
            ..*c
        }
    }

    fn write(
        format: Format,
        c: &SpanContext,
        parent: Option<SpanId>,
    ) -> Vec<(&'static str, String)> {
        match format {
            Format::W3c => vec![("traceparent", format_traceparent(c))],
            Format::B3 => vec![("b3", format_b3(c, parent))],
            Format::B3Multi => format_b3_multi(c, parent),
            Format::Jaeger => vec![("uber-trace-id", format_uber_trace_id(c, parent))],
            Format::GrpcTraceBin => vec![("grpc-trace-bin", format_grpc_trace_bin(c))],
        }
    }

    fn read(format: Format, headers: &[(&'static str, String)]) -> Result<SpanContext, Invalid> {
        let get = |name: &'static str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        let one = || get(headers[0].0).unwrap();
        match format {
            Format::W3c => parse_traceparent(one()),
            Format::B3 => parse_b3(one()).map(|b| b.context().unwrap()),
            Format::B3Multi => parse_b3_multi(get).map(|b| b.context().unwrap()),
            Format::Jaeger => parse_uber_trace_id(one()),
            Format::GrpcTraceBin => parse_grpc_trace_bin(one()),
        }
    }

    #[test]
    fn formats_are_named_as_in_configuration_and_parse_back() {
        let names: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names, ["w3c", "b3", "b3-multi", "jaeger", "grpc-trace-bin"]);
        for f in Format::ALL {
            assert_eq!(Format::parse(f.name()), Some(f));
            assert_eq!(f.name().parse::<Format>(), Ok(f));
            assert_eq!(f.to_string(), f.name());
        }
        for bad in [
            "",
            "W3C",
            "b3multi",
            "b3_multi",
            "jaeger ",
            "grpc",
            "tracecontext",
        ] {
            assert_eq!(Format::parse(bad), None, "{bad:?}");
            assert!(bad.parse::<Format>().is_err());
        }
    }

    #[test]
    fn ids_are_written_and_read_as_lowercase_hex() {
        let t = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(t.0[0], 0x4b);
        assert_eq!(t.0[15], 0x36);
        assert_eq!(t.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(format!("{t}"), t.to_hex());
        assert_eq!(
            format!("{t:?}"),
            "TraceId(4bf92f3577b34da6a3ce929d0e0e4736)"
        );
        let s = SpanId::from_hex("00f067aa0ba902b7").unwrap();
        assert_eq!(s.0, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(s.to_hex(), "00f067aa0ba902b7");
        assert!(TraceId::from_hex("4BF92F3577B34DA6A3CE929D0E0E4736").is_err());
        assert!(TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e473").is_err());
        assert!(SpanId::from_hex("00f067aa0ba902b").is_err());
        assert!(SpanId::from_hex("00f067aa0ba902bz").is_err());
        assert!(SpanId::from_hex("é0f067aa0ba902b").is_err());
    }

    #[test]
    fn all_zero_ids_parse_as_hex_but_are_not_valid() {
        let t = TraceId::from_hex(&"0".repeat(32)).unwrap();
        let s = SpanId::from_hex(&"0".repeat(16)).unwrap();
        assert!(!t.is_valid());
        assert!(!s.is_valid());
        assert!(TraceId([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).is_valid());
        assert!(SpanId([1, 0, 0, 0, 0, 0, 0, 0]).is_valid());
    }

    #[test]
    fn left_padded_hex_fills_bytes_from_the_right() {
        assert_eq!(
            decode_hex_left_padded::<2>(b"1", Case::Lower),
            Some([0x00, 0x01])
        );
        assert_eq!(
            decode_hex_left_padded::<2>(b"abc", Case::Lower),
            Some([0x0a, 0xbc])
        );
        assert_eq!(
            decode_hex_left_padded::<2>(b"ABC", Case::Any),
            Some([0x0a, 0xbc])
        );
        assert_eq!(decode_hex_left_padded::<2>(b"ABC", Case::Lower), None);
        assert_eq!(decode_hex_left_padded::<2>(b"12345", Case::Lower), None);
        assert_eq!(decode_hex_left_padded::<2>(b"", Case::Lower), None);
    }

    #[test]
    fn invalid_reasons_display_as_their_text() {
        assert_eq!(
            Invalid("trace id is all zeros").to_string(),
            "trace id is all zeros"
        );
    }

    #[test]
    fn one_context_written_in_every_format_reads_back_as_the_same_trace() {
        let start =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let b3 = parse_b3(&format_b3(&start, None))
            .unwrap()
            .context()
            .unwrap();
        let multi = read(Format::B3Multi, &format_b3_multi(&b3, None)).unwrap();
        let jaeger = parse_uber_trace_id(&format_uber_trace_id(&multi, None)).unwrap();
        let bin = parse_grpc_trace_bin(&format_grpc_trace_bin(&jaeger)).unwrap();
        let back = parse_traceparent(&format_traceparent(&bin)).unwrap();
        for c in [b3, multi, jaeger, bin, back] {
            assert_eq!(
                (c.trace_id, c.span_id, c.sampling),
                (start.trace_id, start.span_id, Sampling::Sampled)
            );
        }
        assert_eq!(
            format_traceparent(&back),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn a_64_bit_trace_id_stays_the_same_trace_through_128_bits_and_back() {
        // A 64-bit B3 trace id, padded to 128 bits on the way in...
        let b3 = parse_b3("463ac35c9f6413ad-a2fb4a1d1a96d312-1").unwrap();
        let B3::Context {
            context,
            trace_id_64,
            ..
        } = b3
        else {
            panic!("{b3:?}")
        };
        assert!(trace_id_64);
        assert_eq!(
            context.trace_id.to_hex(),
            "0000000000000000463ac35c9f6413ad"
        );
        // ...written as 128 bits in B3 and W3C, as 64 bits in Jaeger, and read back the same.
        assert_eq!(
            format_b3(&context, None),
            "0000000000000000463ac35c9f6413ad-a2fb4a1d1a96d312-1"
        );
        assert_eq!(
            parse_b3(&format_b3(&context, None)).unwrap().context(),
            Some(context)
        );
        assert_eq!(
            format_uber_trace_id(&context, None),
            "463ac35c9f6413ad:a2fb4a1d1a96d312:0:01"
        );
        assert_eq!(
            parse_uber_trace_id(&format_uber_trace_id(&context, None))
                .unwrap()
                .trace_id,
            context.trace_id
        );
        let w3c = parse_traceparent(&format_traceparent(&context)).unwrap();
        assert_eq!(w3c.trace_id, context.trace_id);
        // The 64-bit and the zero-padded 128-bit spellings are one trace in every reader.
        assert_eq!(
            parse_b3("0000000000000000463ac35c9f6413ad-a2fb4a1d1a96d312")
                .unwrap()
                .context()
                .unwrap()
                .trace_id,
            context.trace_id
        );
        assert_eq!(
            parse_uber_trace_id("0000000000000000463ac35c9f6413ad:a2fb4a1d1a96d312:0:1")
                .unwrap()
                .trace_id,
            context.trace_id
        );
    }

    proptest! {
        #[test]
        fn every_format_round_trips_what_it_can_carry(c in span_context(), p in parent()) {
            for format in Format::ALL {
                let headers = write(format, &c, p);
                let back = read(format, &headers);
                prop_assert_eq!(back, Ok(carried(format, &c)), "{} {:?}", format, headers);
                // What was read back is a fixed point: written again, it is the same text.
                prop_assert_eq!(write(format, &back.unwrap(), p), headers);
            }
        }

        #[test]
        fn ids_survive_any_chain_of_formats(c in span_context(), chain in proptest::collection::vec(0usize..5, 1..8)) {
            let mut now = c;
            for i in chain {
                let format = Format::ALL[i];
                now = read(format, &write(format, &now, None)).unwrap();
                prop_assert_eq!((now.trace_id, now.span_id), (c.trace_id, c.span_id));
            }
        }

        #[test]
        fn a_64_bit_trace_id_is_one_trace_in_every_format(low in any::<u64>().prop_filter("valid", |v| *v != 0), s in any::<[u8; 8]>().prop_filter("valid", |b| *b != [0; 8])) {
            let hex64 = format!("{low:016x}");
            let span = SpanId(s).to_hex();
            let from_b3 = parse_b3(&format!("{hex64}-{span}-1")).unwrap().context().unwrap();
            let from_jaeger = parse_uber_trace_id(&format!("{low:x}:{span}:0:1")).unwrap();
            prop_assert_eq!(from_b3.trace_id, from_jaeger.trace_id);
            prop_assert_eq!(from_b3.trace_id.to_hex(), format!("{:032x}", low));
            for format in Format::ALL {
                let back = read(format, &write(format, &from_b3, None)).unwrap();
                prop_assert_eq!(back.trace_id, from_b3.trace_id);
            }
        }

        #[test]
        fn hex_ids_round_trip(t in any::<[u8; 16]>(), s in any::<[u8; 8]>()) {
            prop_assert_eq!(TraceId::from_hex(&TraceId(t).to_hex()), Ok(TraceId(t)));
            prop_assert_eq!(SpanId::from_hex(&SpanId(s).to_hex()), Ok(SpanId(s)));
        }

        #[test]
        fn hex_decoding_never_panics(s in any::<String>()) {
            let _ = TraceId::from_hex(&s);
            let _ = SpanId::from_hex(&s);
            let _ = decode_hex_left_padded::<16>(s.as_bytes(), Case::Any);
            let _ = decode_hex_left_padded::<1>(s.as_bytes(), Case::Lower);
        }
    }
}
