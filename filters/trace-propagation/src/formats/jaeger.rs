//! Jaeger: the `uber-trace-id` header.
//!
//! The rules are those of the Jaeger client libraries' "Propagation Format" (Jaeger
//! documentation, `client-libraries`, "Trace/Span Identity"): the value is
//! `{trace-id}:{span-id}:{parent-span-id}:{flags}`, and
//!
//! - the trace id is a 64- or 128-bit number in hex, "variable length, shorter values are
//!   0-padded on the left": 1 to 32 hex digits, no leading zeros required; 0 is invalid;
//! - the span id is a 64-bit number in hex: 1 to 16 digits, left-padded; 0 is invalid (Jaeger
//!   clients refuse a context whose span id is 0);
//! - the parent span id is deprecated: 1 to 16 hex digits, `0` meaning none. It must be hex, but
//!   it is not returned; the filter's own parent is what it writes;
//! - flags: "one byte bitmap, as two hex digits" (1 or 2 digits accepted, as clients write
//!   `1`); bit `0x01` sampled, bit `0x02` debug, which "implies sampled"; other bits (firehose
//!   `0x08`) are ignored;
//! - hex digits may be upper or lowercase (Jaeger clients parse base-16 numbers, which accept
//!   both); the value is written in lowercase;
//! - the `:` separators may arrive percent-encoded as `%3A` or `%3a`: Jaeger's Go client
//!   URL-encodes the value when it writes HTTP headers. No other percent-encoding is accepted.
//!
//! [`format_uber_trace_id`] writes the trace id with 16 digits when its first 8 bytes are zero
//! (a 64-bit id, written as Jaeger clients write one) and with 32 otherwise, the span id and the
//! parent with 16 digits (`0` when there is no parent), and flags as two hex digits: `01`
//! sampled, `03` debug, `00` otherwise.
//!
//! What Jaeger cannot carry: a deferred decision (written as flags `00`, read back
//! `NotSampled`) and the W3C `random` flag (read back `false`).

use std::borrow::Cow;

use super::{
    decode_hex_left_padded, push_hex, trim_ows, Case, Invalid, Sampling, SpanContext, SpanId,
    TraceId,
};

/// The header's name.
pub const UBER_TRACE_ID_HEADER: &str = "uber-trace-id";
/// Flags bit: sampled.
pub const FLAG_SAMPLED: u8 = 0x01;
/// Flags bit: debug (implies sampled).
pub const FLAG_DEBUG: u8 = 0x02;

/// Reads an `uber-trace-id` value. See the module documentation for the rules.
pub fn parse_uber_trace_id(value: &str) -> Result<SpanContext, Invalid> {
    let s = trim_ows(value);
    let s: Cow<'_, str> = if s.contains('%') {
        Cow::Owned(s.replace("%3A", ":").replace("%3a", ":"))
    } else {
        Cow::Borrowed(s)
    };
    let fields: Vec<&str> = s.splitn(5, ':').collect();
    let [trace, span, parent, flags] = fields.as_slice() else {
        return Err(Invalid("not 4 fields separated by ':'"));
    };
    let trace_id = decode_hex_left_padded(trace.as_bytes(), Case::Any)
        .map(TraceId)
        .ok_or(Invalid("trace id is not 1 to 32 hex digits"))?;
    let span_id = decode_hex_left_padded(span.as_bytes(), Case::Any)
        .map(SpanId)
        .ok_or(Invalid("span id is not 1 to 16 hex digits"))?;
    decode_hex_left_padded::<8>(parent.as_bytes(), Case::Any)
        .ok_or(Invalid("parent span id is not 1 to 16 hex digits"))?;
    let [flags] = decode_hex_left_padded::<1>(flags.as_bytes(), Case::Any)
        .ok_or(Invalid("flags are not 1 or 2 hex digits"))?;
    if !trace_id.is_valid() {
        return Err(Invalid("trace id is zero"));
    }
    if !span_id.is_valid() {
        return Err(Invalid("span id is zero"));
    }
    let debug = flags & FLAG_DEBUG != 0;
    Ok(SpanContext {
        trace_id,
        span_id,
        sampling: if debug || flags & FLAG_SAMPLED != 0 {
            Sampling::Sampled
        } else {
            Sampling::NotSampled
        },
        debug,
        random: false,
    })
}

/// Writes an `uber-trace-id` value: `{trace-id}:{span-id}:{parent or 0}:{flags}`.
pub fn format_uber_trace_id(c: &SpanContext, parent: Option<SpanId>) -> String {
    let mut out = String::with_capacity(32 + 1 + 16 + 1 + 16 + 1 + 2);
    match c.trace_id.0.split_first_chunk::<8>() {
        Some((_, low)) if c.trace_id.high_half_is_zero() => push_hex(&mut out, low),
        _ => push_hex(&mut out, &c.trace_id.0),
    }
    out.push(':');
    push_hex(&mut out, &c.span_id.0);
    out.push(':');
    match parent {
        Some(p) => push_hex(&mut out, &p.0),
        None => out.push('0'),
    }
    out.push(':');
    let mut flags = 0u8;
    if c.is_sampled() {
        flags |= FLAG_SAMPLED;
    }
    if c.debug {
        flags |= FLAG_DEBUG;
    }
    push_hex(&mut out, &[flags]);
    out
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
    use crate::formats::tests::{parent, span_context};
    use proptest::prelude::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute (proptest's #[test] too), so these
    // tests also run compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn ok(s: &str) -> SpanContext {
        parse_uber_trace_id(s).unwrap_or_else(|e| panic!("{s:?} should be valid: {e}"))
    }

    #[test]
    fn reads_full_width_and_short_ids() {
        let c = ok("4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1");
        assert_eq!(c.trace_id.to_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id.to_hex(), "00f067aa0ba902b7");
        assert_eq!(
            (c.sampling, c.debug, c.random),
            (Sampling::Sampled, false, false)
        );
        // Leading zeros are optional: ids are numbers, left-padded.
        let c = ok("deadbeef:f067aa0ba902b7:53ce929d0e0e4736:01");
        assert_eq!(c.trace_id.to_hex(), "000000000000000000000000deadbeef");
        assert_eq!(c.span_id.to_hex(), "00f067aa0ba902b7");
        let c = ok("000000000000000000000000deadbeef:00000000deadbef0:00000000:01");
        assert_eq!(c.trace_id.to_hex(), "000000000000000000000000deadbeef");
        assert_eq!(c.span_id.to_hex(), "00000000deadbef0");
        assert_eq!(ok("1:1:0:0").trace_id.0[15], 1);
        // Either case.
        assert_eq!(
            ok("DEADBEEF:ABC:0:1").trace_id,
            ok("deadbeef:abc:0:1").trace_id
        );
    }

    #[test]
    fn reads_the_sampled_and_debug_flags() {
        for (flags, sampling, debug) in [
            ("0", Sampling::NotSampled, false),
            ("00", Sampling::NotSampled, false),
            ("1", Sampling::Sampled, false),
            ("01", Sampling::Sampled, false),
            ("3", Sampling::Sampled, true),
            ("03", Sampling::Sampled, true),
            // Debug implies sampled even without the sampled bit.
            ("2", Sampling::Sampled, true),
            // Firehose (0x08) and other bits are ignored.
            ("8", Sampling::NotSampled, false),
            ("09", Sampling::Sampled, false),
            ("ff", Sampling::Sampled, true),
        ] {
            let c = ok(&format!("abc:def:0:{flags}"));
            assert_eq!((c.sampling, c.debug), (sampling, debug), "{flags:?}");
        }
    }

    #[test]
    fn accepts_percent_encoded_separators() {
        let plain = ok("4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1");
        assert_eq!(
            ok("4bf92f3577b34da6a3ce929d0e0e4736%3A00f067aa0ba902b7%3A0%3A1"),
            plain
        );
        assert_eq!(
            ok("4bf92f3577b34da6a3ce929d0e0e4736%3a00f067aa0ba902b7%3a0%3a1"),
            plain
        );
        assert_eq!(
            ok("4bf92f3577b34da6a3ce929d0e0e4736%3A00f067aa0ba902b7:0%3a1"),
            plain
        );
        assert!(parse_uber_trace_id("4bf92f3577b34da6%20:00f067aa0ba902b7:0:1").is_err());
        assert!(parse_uber_trace_id("4bf92f3577b34da6%3:00f067aa0ba902b7:0:1").is_err());
    }

    #[test]
    fn refuses_values_the_format_rules_out() {
        for (value, why) in [
            ("", "not 4 fields separated by ':'"),
            ("abc:def:0", "not 4 fields separated by ':'"),
            ("abc:def:0:1:x", "not 4 fields separated by ':'"),
            ("abc-def-0-1", "not 4 fields separated by ':'"),
            (":def:0:1", "trace id is not 1 to 32 hex digits"),
            ("abcg:def:0:1", "trace id is not 1 to 32 hex digits"),
            (
                "14bf92f3577b34da6a3ce929d0e0e4736:def:0:1",
                "trace id is not 1 to 32 hex digits",
            ),
            ("abc::0:1", "span id is not 1 to 16 hex digits"),
            (
                "abc:100f067aa0ba902b7:0:1",
                "span id is not 1 to 16 hex digits",
            ),
            ("abc:def::1", "parent span id is not 1 to 16 hex digits"),
            ("abc:def:x:1", "parent span id is not 1 to 16 hex digits"),
            ("abc:def:0:", "flags are not 1 or 2 hex digits"),
            ("abc:def:0:001", "flags are not 1 or 2 hex digits"),
            ("abc:def:0:z", "flags are not 1 or 2 hex digits"),
            ("abc:def:0:-1", "flags are not 1 or 2 hex digits"),
            ("0:def:0:1", "trace id is zero"),
            (
                "00000000000000000000000000000000:def:0:1",
                "trace id is zero",
            ),
            ("abc:0:0:1", "span id is zero"),
            ("abc:def: 0:1", "parent span id is not 1 to 16 hex digits"),
        ] {
            assert_eq!(parse_uber_trace_id(value), Err(Invalid(why)), "{value:?}");
        }
    }

    #[test]
    fn writes_a_64_bit_trace_id_with_16_digits_and_the_debug_flag() {
        let mut c = ok("463ac35c9f6413ad:a2fb4a1d1a96d312:0:1");
        assert_eq!(
            format_uber_trace_id(&c, None),
            "463ac35c9f6413ad:a2fb4a1d1a96d312:0:01"
        );
        let p = Some(SpanId::from_hex("0020000000000001").unwrap());
        c.debug = true;
        assert_eq!(
            format_uber_trace_id(&c, p),
            "463ac35c9f6413ad:a2fb4a1d1a96d312:0020000000000001:03"
        );
        let back = ok(&format_uber_trace_id(&c, p));
        assert_eq!((back.sampling, back.debug), (Sampling::Sampled, true));
        c.debug = false;
        c.sampling = Sampling::Deferred;
        assert_eq!(
            format_uber_trace_id(&c, None),
            "463ac35c9f6413ad:a2fb4a1d1a96d312:0:00"
        );
        let wide = ok("4bf92f3577b34da6a3ce929d0e0e4736:1:0:0");
        assert_eq!(
            format_uber_trace_id(&wide, None),
            "4bf92f3577b34da6a3ce929d0e0e4736:0000000000000001:0:00"
        );
    }

    proptest! {
        #[test]
        fn round_trips(c in span_context(), p in parent()) {
            let back = parse_uber_trace_id(&format_uber_trace_id(&c, p)).unwrap();
            prop_assert_eq!((back.trace_id, back.span_id, back.debug), (c.trace_id, c.span_id, c.debug));
            prop_assert_eq!(back.sampling == Sampling::Sampled, c.is_sampled());
        }

        #[test]
        fn reads_ids_of_any_width_as_numbers(t in any::<u128>().prop_filter("valid", |v| *v != 0), s in any::<u64>().prop_filter("valid", |v| *v != 0)) {
            let c = parse_uber_trace_id(&format!("{t:x}:{s:X}:0:1")).unwrap();
            prop_assert_eq!(c.trace_id.0, t.to_be_bytes());
            prop_assert_eq!(c.span_id.0, s.to_be_bytes());
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            let _ = parse_uber_trace_id(&s);
        }

        #[test]
        fn parse_never_panics_on_near_misses(s in "[0-9a-fA-F:%3]{0,80}") {
            if let Ok(c) = parse_uber_trace_id(&s) {
                prop_assert!(c.trace_id.is_valid() && c.span_id.is_valid());
            }
        }
    }
}
