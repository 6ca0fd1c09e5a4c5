//! Zipkin B3: the single `b3` header and the multiple `X-B3-*` headers.
//!
//! The rules are those of openzipkin/b3-propagation (README: "Identifiers", "Sampling State",
//! "Multiple Headers", "Single Header"):
//!
//! - the trace id is 16 or 32 lowercase hex digits ("32 or 16 lower-hex characters"); a 64-bit
//!   id is read as the 128-bit id whose first 8 bytes are zero, and [`B3::Context`] remembers
//!   that it arrived as 64 bits (`trace_id_64`);
//! - the span id and the parent span id are exactly 16 lowercase hex digits;
//! - an all-zero trace id, span id or parent span id is invalid (none of them is a valid id);
//! - sampling states: accept, deny, debug ("an emphasized accept decision that implies accept"),
//!   and defer, which is the absence of a sampling state.
//!
//! Single header ([`parse_b3`]): `{TraceId}-{SpanId}`, `{TraceId}-{SpanId}-{SamplingState}` or
//! `{TraceId}-{SpanId}-{SamplingState}-{ParentSpanId}`, the sampling state one of `1`, `0`, `d`;
//! or the sampling state alone (`b3: 0`, also `1` and `d`), which [`parse_b3`] returns as
//! [`B3::SamplingOnly`] so the filter can honour `b3: 0` without a context. Anything else, an
//! empty field included, is invalid. [`format_b3`] always writes a 32-digit trace id, and the
//! sampling state (`d` for debug) unless the decision is deferred. The parent can only follow a
//! sampling state (the fields are positional), so with a deferred decision the parent is not
//! written; it is optional ("the last two fields are optional").
//!
//! Multiple headers ([`parse_b3_multi`]), header names lowercase as HTTP/2 and gRPC send them:
//!
//! - `x-b3-traceid` and `x-b3-spanid` are both present, or both absent;
//! - `x-b3-parentspanid` is optional (never without the ids);
//! - `x-b3-sampled`: `1` or `0`, and, for tracers older than the specification, `true` or
//!   `false` ("a lenient implementation may accept them"); anything else is invalid; absent is
//!   a deferred decision;
//! - `x-b3-flags: 1` is debug, and implies sampled whatever `x-b3-sampled` says; other values
//!   are ignored, as the specification notes that no implementation reads it as a bit field;
//! - without the ids, `x-b3-sampled` and/or `x-b3-flags: 1` alone are a [`B3::SamplingOnly`]
//!   decision ("valid to propagate only a reject sampling decision"); no B3 header at all is
//!   invalid.
//!
//! [`format_b3_multi`] writes the trace id (32 digits), span id, parent when given, and either
//! `x-b3-flags: 1` (debug, then without `x-b3-sampled`: "don't also send the `X-B3-Sampled`
//! header") or `x-b3-sampled` unless the decision is deferred. The filter should remove all five
//! headers before writing, so no stale one stays.
//!
//! What B3 cannot carry: the W3C `random` flag (read back `false`).

use super::{
    decode_hex, push_hex, trim_ows, Case, Invalid, Sampling, SpanContext, SpanId, TraceId,
};

/// The single header's name.
pub const B3_HEADER: &str = "b3";
/// `X-B3-TraceId`, lowercase.
pub const X_B3_TRACEID: &str = "x-b3-traceid";
/// `X-B3-SpanId`, lowercase.
pub const X_B3_SPANID: &str = "x-b3-spanid";
/// `X-B3-ParentSpanId`, lowercase.
pub const X_B3_PARENTSPANID: &str = "x-b3-parentspanid";
/// `X-B3-Sampled`, lowercase.
pub const X_B3_SAMPLED: &str = "x-b3-sampled";
/// `X-B3-Flags`, lowercase.
pub const X_B3_FLAGS: &str = "x-b3-flags";

/// What a B3 header (or set of headers) carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum B3 {
    /// A trace context.
    Context {
        context: SpanContext,
        /// The caller's parent span, when sent.
        parent: Option<SpanId>,
        /// The trace id arrived as 16 hex digits (its first 8 bytes are then zero).
        trace_id_64: bool,
    },
    /// A sampling decision without ids (`b3: 0`, `b3: d`, `X-B3-Sampled: 0` alone). `sampling`
    /// is never [`Sampling::Deferred`]; `debug` implies [`Sampling::Sampled`].
    SamplingOnly { sampling: Sampling, debug: bool },
}

impl B3 {
    /// The trace context, unless only a sampling decision was sent.
    pub fn context(&self) -> Option<SpanContext> {
        match self {
            B3::Context { context, .. } => Some(*context),
            B3::SamplingOnly { .. } => None,
        }
    }

    /// The sampling decision: `Some(true)` sampled (or debug), `Some(false)` not sampled,
    /// `None` deferred.
    pub fn sampled(&self) -> Option<bool> {
        let (sampling, debug) = match self {
            B3::Context { context, .. } => (context.sampling, context.debug),
            B3::SamplingOnly { sampling, debug } => (*sampling, *debug),
        };
        match sampling {
            _ if debug => Some(true),
            Sampling::Sampled => Some(true),
            Sampling::NotSampled => Some(false),
            Sampling::Deferred => None,
        }
    }
}

/// The longest valid `b3` value: 32 + 1 + 16 + 1 + 1 + 1 + 16.
const MAX_B3_LEN: usize = 68;

/// Reads a `b3` single-header value. See the module documentation for the rules.
pub fn parse_b3(value: &str) -> Result<B3, Invalid> {
    let s = trim_ows(value);
    if s.len() > MAX_B3_LEN {
        return Err(Invalid("longer than the longest b3 value"));
    }
    let fields: Vec<&str> = s.splitn(5, '-').collect();
    let (trace, span, state, parent) = match fields.as_slice() {
        [state] => {
            return match sampling_state(state)? {
                Some((sampling, debug)) => Ok(B3::SamplingOnly { sampling, debug }),
                None => Err(Invalid("empty")),
            }
        }
        [trace, span] => (trace, span, None, None),
        [trace, span, state] => (trace, span, Some(*state), None),
        [trace, span, state, parent] => (trace, span, Some(*state), Some(*parent)),
        _ => return Err(Invalid("more than 4 fields")),
    };
    let (sampling, debug) = match state {
        None => (Sampling::Deferred, false),
        Some(state) => sampling_state(state)?.ok_or(Invalid("sampling state is empty"))?,
    };
    ids(trace, span, parent, sampling, debug)
}

/// `1`, `0` or `d`; `None` for the empty string.
fn sampling_state(s: &str) -> Result<Option<(Sampling, bool)>, Invalid> {
    match s {
        "" => Ok(None),
        "1" => Ok(Some((Sampling::Sampled, false))),
        "0" => Ok(Some((Sampling::NotSampled, false))),
        "d" => Ok(Some((Sampling::Sampled, true))),
        _ => Err(Invalid("sampling state is not 1, 0 or d")),
    }
}

/// The ids of either encoding, checked, with the decision already read.
fn ids(
    trace: &str,
    span: &str,
    parent: Option<&str>,
    sampling: Sampling,
    debug: bool,
) -> Result<B3, Invalid> {
    let (trace_id, trace_id_64) = match trace.len() {
        16 => (
            decode_hex::<8>(trace.as_bytes(), Case::Lower).map(widen),
            true,
        ),
        32 => (
            decode_hex(trace.as_bytes(), Case::Lower).map(TraceId),
            false,
        ),
        _ => (None, false),
    };
    let trace_id = trace_id.ok_or(Invalid("trace id is not 16 or 32 lowercase hex digits"))?;
    let span_id = decode_hex(span.as_bytes(), Case::Lower)
        .map(SpanId)
        .ok_or(Invalid("span id is not 16 lowercase hex digits"))?;
    let parent = match parent {
        None => None,
        Some(p) => Some(
            decode_hex(p.as_bytes(), Case::Lower)
                .map(SpanId)
                .ok_or(Invalid("parent span id is not 16 lowercase hex digits"))?,
        ),
    };
    if !trace_id.is_valid() {
        return Err(Invalid("trace id is all zeros"));
    }
    if !span_id.is_valid() {
        return Err(Invalid("span id is all zeros"));
    }
    if parent.is_some_and(|p| !p.is_valid()) {
        return Err(Invalid("parent span id is all zeros"));
    }
    Ok(B3::Context {
        context: SpanContext {
            trace_id,
            span_id,
            sampling,
            debug,
            random: false,
        },
        parent,
        trace_id_64,
    })
}

/// A 64-bit id as the 128-bit id whose first 8 bytes are zero.
fn widen(low: [u8; 8]) -> TraceId {
    let mut id = [0u8; 16];
    for (to, from) in id.iter_mut().skip(8).zip(low) {
        *to = from;
    }
    TraceId(id)
}

/// Writes a `b3` single-header value: `{trace}-{span}[-{1|0|d}[-{parent}]]`.
pub fn format_b3(c: &SpanContext, parent: Option<SpanId>) -> String {
    let mut out = String::with_capacity(MAX_B3_LEN);
    push_hex(&mut out, &c.trace_id.0);
    out.push('-');
    push_hex(&mut out, &c.span_id.0);
    if let Some(state) = state_of(c) {
        out.push('-');
        out.push_str(state);
        if let Some(p) = parent {
            out.push('-');
            push_hex(&mut out, &p.0);
        }
    }
    out
}

/// The single-header sampling state, `None` when deferred.
fn state_of(c: &SpanContext) -> Option<&'static str> {
    match c.sampling {
        _ if c.debug => Some("d"),
        Sampling::Sampled => Some("1"),
        Sampling::NotSampled => Some("0"),
        Sampling::Deferred => None,
    }
}

/// Reads the `x-b3-*` headers through `get` (called with the lowercase names above). See the
/// module documentation for the rules.
pub fn parse_b3_multi<'h>(get: impl Fn(&'static str) -> Option<&'h str>) -> Result<B3, Invalid> {
    let trace = get(X_B3_TRACEID).map(trim_ows);
    let span = get(X_B3_SPANID).map(trim_ows);
    let parent = get(X_B3_PARENTSPANID).map(trim_ows);
    let debug = get(X_B3_FLAGS).map(trim_ows) == Some("1");
    let sampling = match get(X_B3_SAMPLED).map(trim_ows) {
        _ if debug => Sampling::Sampled,
        None => Sampling::Deferred,
        Some("1" | "true") => Sampling::Sampled,
        Some("0" | "false") => Sampling::NotSampled,
        Some(_) => return Err(Invalid("x-b3-sampled is not 1, 0, true or false")),
    };
    match (trace, span) {
        (Some(trace), Some(span)) => ids(trace, span, parent, sampling, debug),
        (None, None) if parent.is_some() => Err(Invalid("x-b3-parentspanid without x-b3-traceid")),
        (None, None) if sampling == Sampling::Deferred => Err(Invalid("no b3 headers")),
        (None, None) => Ok(B3::SamplingOnly { sampling, debug }),
        _ => Err(Invalid("x-b3-traceid and x-b3-spanid are not both present")),
    }
}

/// The `x-b3-*` headers to set, names lowercase.
pub fn format_b3_multi(c: &SpanContext, parent: Option<SpanId>) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (X_B3_TRACEID, c.trace_id.to_hex()),
        (X_B3_SPANID, c.span_id.to_hex()),
    ];
    if let Some(p) = parent {
        out.push((X_B3_PARENTSPANID, p.to_hex()));
    }
    match c.sampling {
        _ if c.debug => out.push((X_B3_FLAGS, "1".to_string())),
        Sampling::Sampled => out.push((X_B3_SAMPLED, "1".to_string())),
        Sampling::NotSampled => out.push((X_B3_SAMPLED, "0".to_string())),
        Sampling::Deferred => {}
    }
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

    const TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const SPAN: &str = "e457b5a2e4d86bd1";
    const PARENT: &str = "05e3ac9a4f6e3b90";

    fn context(b3: Result<B3, Invalid>) -> (SpanContext, Option<SpanId>, bool) {
        match b3 {
            Ok(B3::Context {
                context,
                parent,
                trace_id_64,
            }) => (context, parent, trace_id_64),
            other => panic!("expected a context, got {other:?}"),
        }
    }

    fn multi<'a>(headers: &'a [(&'static str, &'a str)]) -> Result<B3, Invalid> {
        parse_b3_multi(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v))
    }

    #[test]
    fn reads_the_single_header_examples() {
        let (c, p, w) = context(parse_b3(&format!("{TRACE}-{SPAN}-1-{PARENT}")));
        assert_eq!(
            (c.trace_id.to_hex(), c.span_id.to_hex()),
            (TRACE.into(), SPAN.into())
        );
        assert_eq!(
            (c.sampling, c.debug, c.random, w),
            (Sampling::Sampled, false, false, false)
        );
        assert_eq!(p.unwrap().to_hex(), PARENT);
        let (c, p, _) = context(parse_b3(&format!("{TRACE}-{SPAN}-d")));
        assert_eq!((c.sampling, c.debug, p), (Sampling::Sampled, true, None));
        let (c, _, _) = context(parse_b3(&format!("{TRACE}-{SPAN}-0")));
        assert_eq!((c.sampling, c.debug), (Sampling::NotSampled, false));
        let (c, _, _) = context(parse_b3(&format!("{TRACE}-{SPAN}")));
        assert_eq!(c.sampling, Sampling::Deferred);
    }

    #[test]
    fn a_lone_sampling_state_is_a_decision_without_a_context() {
        let zero = parse_b3("0").unwrap();
        assert_eq!(
            zero,
            B3::SamplingOnly {
                sampling: Sampling::NotSampled,
                debug: false
            }
        );
        assert_eq!((zero.context(), zero.sampled()), (None, Some(false)));
        assert_eq!(parse_b3(" 1 ").unwrap().sampled(), Some(true));
        let d = parse_b3("d").unwrap();
        assert_eq!(
            d,
            B3::SamplingOnly {
                sampling: Sampling::Sampled,
                debug: true
            }
        );
        assert_eq!(d.sampled(), Some(true));
        for bad in ["", " ", "2", "true", "D", "00"] {
            assert!(parse_b3(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_64_bit_trace_id_is_padded_and_remembered() {
        let (c, _, w) = context(parse_b3(&format!("{}-{SPAN}-1", &TRACE[16..])));
        assert!(w);
        assert_eq!(
            c.trace_id.to_hex(),
            format!("0000000000000000{}", &TRACE[16..])
        );
        assert_eq!(
            format_b3(&c, None),
            format!("0000000000000000{}-{SPAN}-1", &TRACE[16..])
        );
        let (back, _, w) = context(parse_b3(&format_b3(&c, None)));
        assert_eq!((back.trace_id, w), (c.trace_id, false));
    }

    #[test]
    fn refuses_single_headers_the_spec_rules_out() {
        for (value, why) in [
            (
                format!("{}-{SPAN}-1", TRACE.to_uppercase()),
                "trace id is not 16 or 32 lowercase hex digits",
            ),
            (
                format!("{}-{SPAN}-1", &TRACE[1..]),
                "trace id is not 16 or 32 lowercase hex digits",
            ),
            (
                format!("{}-{SPAN}-1", &TRACE[..20]),
                "trace id is not 16 or 32 lowercase hex digits",
            ),
            (
                format!("{TRACE}-{}-1", SPAN.to_uppercase()),
                "span id is not 16 lowercase hex digits",
            ),
            (
                format!("{TRACE}-{}-1", &SPAN[1..]),
                "span id is not 16 lowercase hex digits",
            ),
            (
                format!("{TRACE}-{SPAN}-1-{}", &PARENT[1..]),
                "parent span id is not 16 lowercase hex digits",
            ),
            (
                format!("{}-{SPAN}-1", "0".repeat(32)),
                "trace id is all zeros",
            ),
            (
                format!("{}-{SPAN}-1", "0".repeat(16)),
                "trace id is all zeros",
            ),
            (
                format!("{TRACE}-{}-1", "0".repeat(16)),
                "span id is all zeros",
            ),
            (
                format!("{TRACE}-{SPAN}-1-{}", "0".repeat(16)),
                "parent span id is all zeros",
            ),
            (
                format!("{TRACE}-{SPAN}-2"),
                "sampling state is not 1, 0 or d",
            ),
            (
                format!("{TRACE}-{SPAN}-true"),
                "sampling state is not 1, 0 or d",
            ),
            (format!("{TRACE}-{SPAN}-"), "sampling state is empty"),
            (
                format!("{TRACE}-{SPAN}--{PARENT}"),
                "sampling state is empty",
            ),
            (
                format!("{TRACE}-{SPAN}-1-{PARENT}-x"),
                "longer than the longest b3 value",
            ),
            (
                format!("{}-{SPAN}-1-{PARENT}-", &TRACE[..16]),
                "more than 4 fields",
            ),
            (format!("{TRACE}{SPAN}"), "sampling state is not 1, 0 or d"),
            (
                format!("{TRACE}-{SPAN}-1-{PARENT}0"),
                "longer than the longest b3 value",
            ),
        ] {
            assert_eq!(parse_b3(&value), Err(Invalid(why)), "{value:?}");
        }
    }

    #[test]
    fn writes_the_single_header_with_the_sampling_state_and_parent() {
        let (mut c, _, _) = context(parse_b3(&format!("{TRACE}-{SPAN}-1")));
        let p = Some(SpanId::from_hex(PARENT).unwrap());
        assert_eq!(format_b3(&c, p), format!("{TRACE}-{SPAN}-1-{PARENT}"));
        c.sampling = Sampling::NotSampled;
        assert_eq!(format_b3(&c, None), format!("{TRACE}-{SPAN}-0"));
        c.debug = true;
        assert_eq!(format_b3(&c, p), format!("{TRACE}-{SPAN}-d-{PARENT}"));
        c.debug = false;
        c.sampling = Sampling::Deferred;
        // No sampling state to put the parent after: neither is written.
        assert_eq!(format_b3(&c, p), format!("{TRACE}-{SPAN}"));
    }

    #[test]
    fn reads_the_multiple_headers_example() {
        let (c, p, w) = context(multi(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "0020000000000001"),
            ("x-b3-sampled", "1"),
        ]));
        assert_eq!(c.trace_id.to_hex(), "463ac35c9f6413ad48485a3953bb6124");
        assert_eq!(c.span_id.to_hex(), "a2fb4a1d1a96d312");
        assert_eq!(p.unwrap().to_hex(), "0020000000000001");
        assert_eq!((c.sampling, c.debug, w), (Sampling::Sampled, false, false));
    }

    #[test]
    fn reads_x_b3_sampled_including_the_old_true_and_false() {
        for (sampled, want) in [
            (Some("1"), Sampling::Sampled),
            (Some("true"), Sampling::Sampled),
            (Some("0"), Sampling::NotSampled),
            (Some("false"), Sampling::NotSampled),
            (None, Sampling::Deferred),
        ] {
            let mut h = vec![("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN)];
            if let Some(s) = sampled {
                h.push(("x-b3-sampled", s));
            }
            assert_eq!(context(multi(&h)).0.sampling, want, "{sampled:?}");
        }
        for bad in ["2", "True", "yes", "", "d"] {
            let h = [
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-sampled", bad),
            ];
            assert_eq!(
                multi(&h),
                Err(Invalid("x-b3-sampled is not 1, 0, true or false")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn x_b3_flags_1_is_debug_and_implies_sampled() {
        let h = [
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-flags", "1"),
        ];
        let (c, _, _) = context(multi(&h));
        assert_eq!((c.sampling, c.debug), (Sampling::Sampled, true));
        let h = [
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "0"),
            ("x-b3-flags", "1"),
        ];
        assert_eq!(context(multi(&h)).0.sampling, Sampling::Sampled);
        // Other values are not debug.
        for flags in ["0", "2", "true", ""] {
            let h = [
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-flags", flags),
            ];
            let (c, _, _) = context(multi(&h));
            assert_eq!(
                (c.sampling, c.debug),
                (Sampling::Deferred, false),
                "{flags:?}"
            );
        }
        // Written as x-b3-flags, without x-b3-sampled.
        assert_eq!(
            format_b3_multi(&c_with(Sampling::NotSampled, true), None),
            [
                ("x-b3-traceid", TRACE.to_string()),
                ("x-b3-spanid", SPAN.to_string()),
                ("x-b3-flags", "1".to_string())
            ]
        );
    }

    fn c_with(sampling: Sampling, debug: bool) -> SpanContext {
        SpanContext {
            trace_id: TraceId::from_hex(TRACE).unwrap(),
            span_id: SpanId::from_hex(SPAN).unwrap(),
            sampling,
            debug,
            random: false,
        }
    }

    #[test]
    fn multiple_headers_carry_a_decision_alone() {
        assert_eq!(
            multi(&[("x-b3-sampled", "0")]),
            Ok(B3::SamplingOnly {
                sampling: Sampling::NotSampled,
                debug: false
            })
        );
        assert_eq!(
            multi(&[("x-b3-flags", "1")]),
            Ok(B3::SamplingOnly {
                sampling: Sampling::Sampled,
                debug: true
            })
        );
        assert_eq!(multi(&[]), Err(Invalid("no b3 headers")));
        assert_eq!(multi(&[("x-b3-flags", "0")]), Err(Invalid("no b3 headers")));
    }

    #[test]
    fn refuses_incomplete_or_malformed_multiple_headers() {
        for (h, why) in [
            (
                vec![("x-b3-traceid", TRACE)],
                "x-b3-traceid and x-b3-spanid are not both present",
            ),
            (
                vec![("x-b3-spanid", SPAN), ("x-b3-sampled", "1")],
                "x-b3-traceid and x-b3-spanid are not both present",
            ),
            (
                vec![("x-b3-parentspanid", PARENT)],
                "x-b3-parentspanid without x-b3-traceid",
            ),
            (
                vec![("x-b3-traceid", "abc"), ("x-b3-spanid", SPAN)],
                "trace id is not 16 or 32 lowercase hex digits",
            ),
            (
                vec![("x-b3-traceid", TRACE), ("x-b3-spanid", "")],
                "span id is not 16 lowercase hex digits",
            ),
            (
                vec![
                    ("x-b3-traceid", TRACE),
                    ("x-b3-spanid", SPAN),
                    ("x-b3-parentspanid", "0000000000000000"),
                ],
                "parent span id is all zeros",
            ),
        ] {
            assert_eq!(multi(&h), Err(Invalid(why)), "{h:?}");
        }
    }

    #[test]
    fn writes_multiple_headers_lowercase_without_a_deferred_decision() {
        let p = Some(SpanId::from_hex(PARENT).unwrap());
        let names = |c: &SpanContext, p| {
            format_b3_multi(c, p)
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&c_with(Sampling::Sampled, false), p),
            [
                "x-b3-traceid",
                "x-b3-spanid",
                "x-b3-parentspanid",
                "x-b3-sampled"
            ]
        );
        assert_eq!(
            names(&c_with(Sampling::Deferred, false), None),
            ["x-b3-traceid", "x-b3-spanid"]
        );
        assert_eq!(
            format_b3_multi(&c_with(Sampling::NotSampled, false), None)[2],
            ("x-b3-sampled", "0".to_string())
        );
    }

    proptest! {
        #[test]
        fn single_header_round_trips(c in span_context(), p in parent()) {
            let text = format_b3(&c, p);
            let (back, back_parent, w) = context(parse_b3(&text));
            prop_assert!(!w);
            prop_assert_eq!((back.trace_id, back.span_id, back.debug), (c.trace_id, c.span_id, c.debug));
            prop_assert_eq!(back.sampling, if c.debug { Sampling::Sampled } else { c.sampling });
            prop_assert_eq!(back_parent, if c.debug || c.sampling != Sampling::Deferred { p } else { None });
        }

        #[test]
        fn multiple_headers_round_trip(c in span_context(), p in parent()) {
            let headers = format_b3_multi(&c, p);
            let (back, back_parent, _) = context(parse_b3_multi(|n| headers.iter().find(|(h, _)| *h == n).map(|(_, v)| v.as_str())));
            prop_assert_eq!((back.trace_id, back.span_id, back.debug, back_parent), (c.trace_id, c.span_id, c.debug, p));
            prop_assert_eq!(back.sampling, if c.debug { Sampling::Sampled } else { c.sampling });
        }

        #[test]
        fn parse_b3_never_panics(s in any::<String>()) {
            let _ = parse_b3(&s);
        }

        #[test]
        fn parse_b3_never_panics_on_near_misses(s in "[0-9a-fA-Fdé\\-]{0,70}") {
            if let Ok(B3::Context { context, .. }) = parse_b3(&s) {
                prop_assert!(context.trace_id.is_valid() && context.span_id.is_valid());
            }
        }

        #[test]
        fn parse_b3_multi_never_panics(values in proptest::collection::vec(proptest::option::of(any::<String>()), 5)) {
            let names = [X_B3_TRACEID, X_B3_SPANID, X_B3_PARENTSPANID, X_B3_SAMPLED, X_B3_FLAGS];
            let _ = parse_b3_multi(|n| {
                names.iter().position(|m| *m == n).and_then(|i| values[i].as_deref())
            });
        }
    }
}
