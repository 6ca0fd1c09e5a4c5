//! W3C Trace Context: the `traceparent` and `tracestate` request headers.
//!
//! The rules are those of W3C Trace Context Level 2 (<https://www.w3.org/TR/trace-context-2/>,
//! sections "Traceparent Header" and "Tracestate Header").
//!
//! `traceparent` ([`parse_traceparent`]):
//!
//! - `version "-" trace-id "-" parent-id "-" trace-flags`, with 2, 32, 16 and 2 digits of
//!   `HEXDIGLC` (`0-9a-f`): an uppercase hex digit anywhere is invalid;
//! - version `ff` is invalid; version `00` is exactly 55 characters, so anything after the flags
//!   (`-` included) is invalid;
//! - a higher version is read as "Versioning of traceparent" says: at least 55 characters,
//!   the trace-id, parent-id and flags at the version-00 positions, and the 56th character, if
//!   any, must be `-`; what follows is not looked at. [`format_traceparent`] writes it back as
//!   version `00` (the "downgrade the version" mutation);
//! - an all-zero trace-id or parent-id is invalid ("vendors MUST ignore the `traceparent`");
//! - trace-flags: bit `0x01` is `sampled`, bit `0x02` the Level 2 `random` flag ("Random Trace ID
//!   Flag": at least the 7 right-most bytes of the trace-id are random). Other bits are ignored
//!   when read and written as zero ("Vendors MUST set those to zero"). Both bits are read in higher
//!   versions too, which the spec says are additive.
//!
//! [`format_traceparent`] writes version `00`, the sampled flag when [`SpanContext::is_sampled`],
//! the random flag when `random` is set. What `traceparent` cannot carry: `debug` (written as
//! sampled) and a deferred decision (written with the sampled flag unset, which "Sampled flag"
//! calls "the default option when the trace is initiated by this component", and read back as
//! `NotSampled`).
//!
//! `tracestate` ([`TraceState`]):
//!
//! - a list of members separated by `,`; SP and HTAB around a member are ignored, and empty
//!   members are allowed and skipped ("Empty and whitespace-only list members are allowed"), so
//!   several `tracestate` header fields joined with `,` parse as one list (RFC 9110 §5.3);
//! - a member is `key "=" value`, split at the first `=`;
//! - the key follows the Level 1 Recommendation's grammar ("Key"): a `simple-key` of 1 to
//!   256 characters, `lcalpha` then `lcalpha / DIGIT / "_" / "-" / "*" / "/"`; or a
//!   `multi-tenant-key` `tenant-id "@" system-id`, the tenant 1 to 241 characters starting with
//!   `lcalpha / DIGIT`, the system 1 to 14 starting with `lcalpha`. Level 2 drafts relax this to
//!   any `@` anywhere and a leading digit in every key; this module keeps the Level 1 grammar,
//!   which the W3C test suite's strict level and the OpenTelemetry SDKs check, so a header the
//!   filter forwards is one they accept;
//! - the value is 1 to 256 printable ASCII characters (`0x20-0x7E`) other than `,` and `=`, and
//!   does not end with a space; leading spaces are part of the value;
//! - a member that breaks these rules, or a key that appears twice ("Only one entry per key is
//!   allowed"), makes the whole header invalid, as the W3C test suite expects. The filter must not
//!   parse `tracestate` when `traceparent` was invalid ("Tracestate Header": "it MUST NOT attempt
//!   to parse `tracestate`").
//!
//! Limits ([`TraceState::limited`]): at most [`MAX_TRACESTATE_MEMBERS`] (32) members.
//! [`TraceState::parse`] accepts more and [`TraceState::limited`] truncates, in whole entries
//! ("tracestate Limits": "the vendor MUST truncate whole entries"): first entries longer than 128
//! characters, right-most first, then entries from the end, removing only as many as needed. (The
//! test suite's strict level discards a 33-member header instead; truncating keeps the left-most,
//! most recent members.) No length limit is applied beyond that: "tracestate Limits" asks to
//! propagate at least 512 characters, and 32 members of at most 256 + 1 + 256 characters is bounded
//! anyway.

use std::collections::BTreeSet;
use std::fmt;

use super::{
    decode_hex, push_hex, trim_ows, Case, Invalid, Sampling, SpanContext, SpanId, TraceId,
};

/// The `traceparent` header's name.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The `tracestate` header's name.
pub const TRACESTATE_HEADER: &str = "tracestate";
/// trace-flags bit: the caller may have recorded trace data.
pub const FLAG_SAMPLED: u8 = 0x01;
/// trace-flags bit (Level 2): the right-most 7 bytes of the trace-id are random.
pub const FLAG_RANDOM: u8 = 0x02;
/// The most `tracestate` members propagated.
pub const MAX_TRACESTATE_MEMBERS: u32 = 32;
/// Entries longer than this are the first removed when `tracestate` is truncated.
pub const TRACESTATE_LONG_ENTRY: usize = 128;

/// Length of a version-00 `traceparent`, and the length of the part read in higher versions.
const TRACEPARENT_LEN: usize = 55;

/// Reads a `traceparent` value. See the module documentation for the rules.
pub fn parse_traceparent(value: &str) -> Result<SpanContext, Invalid> {
    let b = trim_ows(value).as_bytes();
    let version: [u8; 1] = b
        .get(0..2)
        .and_then(|v| decode_hex(v, Case::Lower))
        .ok_or(Invalid("version is not 2 lowercase hex digits"))?;
    if b.get(2) != Some(&b'-') {
        return Err(Invalid("version is not followed by '-'"));
    }
    match version {
        [0xff] => return Err(Invalid("version ff is invalid")),
        [0x00] if b.len() != TRACEPARENT_LEN => {
            return Err(Invalid("version 00 is not exactly 55 characters"))
        }
        _ if b.len() < TRACEPARENT_LEN => return Err(Invalid("shorter than 55 characters")),
        _ if b.len() > TRACEPARENT_LEN && b.get(TRACEPARENT_LEN) != Some(&b'-') => {
            return Err(Invalid("flags are not followed by '-' or the end"))
        }
        _ => {}
    }
    let trace_id = b
        .get(3..35)
        .and_then(|v| decode_hex(v, Case::Lower))
        .map(TraceId)
        .ok_or(Invalid("trace-id is not 32 lowercase hex digits"))?;
    if b.get(35) != Some(&b'-') {
        return Err(Invalid("trace-id is not followed by '-'"));
    }
    let span_id = b
        .get(36..52)
        .and_then(|v| decode_hex(v, Case::Lower))
        .map(SpanId)
        .ok_or(Invalid("parent-id is not 16 lowercase hex digits"))?;
    if b.get(52) != Some(&b'-') {
        return Err(Invalid("parent-id is not followed by '-'"));
    }
    let [flags] = b
        .get(53..55)
        .and_then(|v| decode_hex::<1>(v, Case::Lower))
        .ok_or(Invalid("trace-flags are not 2 lowercase hex digits"))?;
    if !trace_id.is_valid() {
        return Err(Invalid("trace-id is all zeros"));
    }
    if !span_id.is_valid() {
        return Err(Invalid("parent-id is all zeros"));
    }
    Ok(SpanContext {
        trace_id,
        span_id,
        sampling: if flags & FLAG_SAMPLED != 0 {
            Sampling::Sampled
        } else {
            Sampling::NotSampled
        },
        debug: false,
        random: flags & FLAG_RANDOM != 0,
    })
}

/// Writes a version-00 `traceparent`: `00-{trace-id}-{span-id}-{flags}`.
pub fn format_traceparent(c: &SpanContext) -> String {
    let mut flags = 0u8;
    if c.is_sampled() {
        flags |= FLAG_SAMPLED;
    }
    if c.random {
        flags |= FLAG_RANDOM;
    }
    let mut out = String::with_capacity(TRACEPARENT_LEN);
    out.push_str("00-");
    push_hex(&mut out, &c.trace_id.0);
    out.push('-');
    push_hex(&mut out, &c.span_id.0);
    out.push('-');
    push_hex(&mut out, &[flags]);
    out
}

/// A valid `tracestate` list, members in order (left-most first), keys unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceState {
    members: Vec<(String, String)>,
}

impl TraceState {
    /// Reads a `tracestate` value (several header fields joined with `,` included). An empty or
    /// whitespace-only value is a valid empty list. See the module documentation for the rules.
    pub fn parse(value: &str) -> Result<TraceState, Invalid> {
        let mut members = Vec::new();
        let mut keys = BTreeSet::new();
        for raw in value.split(',') {
            let member = trim_ows(raw);
            if member.is_empty() {
                continue;
            }
            let (key, value) = member
                .split_once('=')
                .ok_or(Invalid("a member has no '='"))?;
            if !is_key(key.as_bytes()) {
                return Err(Invalid("a key is not a valid tracestate key"));
            }
            if !is_value(value.as_bytes()) {
                return Err(Invalid("a value is not a valid tracestate value"));
            }
            if !keys.insert(key) {
                return Err(Invalid("a key appears twice"));
            }
            members.push((key.to_string(), value.to_string()));
        }
        Ok(TraceState { members })
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// No members: the filter should then send no `tracestate` at all ("Vendors … SHOULD avoid
    /// sending them").
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members as `(key, value)`, left-most first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The header value to propagate, within [`MAX_TRACESTATE_MEMBERS`], and how many members
    /// were removed. Whole entries only: first those longer than [`TRACESTATE_LONG_ENTRY`]
    /// characters (right-most first), then from the end, as many as needed.
    pub fn limited(&self) -> (String, u32) {
        let max = usize::try_from(MAX_TRACESTATE_MEMBERS).unwrap_or(usize::MAX);
        let mut excess = self.members.len().saturating_sub(max);
        let mut keep = vec![true; self.members.len()];
        let long = |(k, v): &(String, String)| k.len() + 1 + v.len() > TRACESTATE_LONG_ENTRY;
        for (kept, member) in keep.iter_mut().zip(&self.members).rev() {
            if excess == 0 {
                break;
            }
            if long(member) {
                *kept = false;
                excess -= 1;
            }
        }
        for kept in keep.iter_mut().rev() {
            if excess == 0 {
                break;
            }
            if *kept {
                *kept = false;
                excess -= 1;
            }
        }
        let mut out = String::new();
        let mut dropped = 0u32;
        for (kept, (k, v)) in keep.iter().zip(&self.members) {
            if !kept {
                dropped = dropped.saturating_add(1);
                continue;
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(v);
        }
        (out, dropped)
    }
}

impl fmt::Display for TraceState {
    /// All members, `key=value` joined with `,` (no limit applied: see [`TraceState::limited`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// `lcalpha / DIGIT / "_" / "-" / "*" / "/"`.
fn is_key_char(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-' | b'*' | b'/')
}

/// `first` then `0..=max_rest` of [`is_key_char`].
fn is_key_part(s: &[u8], first: impl Fn(u8) -> bool, max_len: usize) -> bool {
    match s.split_first() {
        Some((&c, rest)) => first(c) && s.len() <= max_len && rest.iter().all(|&c| is_key_char(c)),
        None => false,
    }
}

/// Level 1 `key = simple-key / multi-tenant-key`.
fn is_key(key: &[u8]) -> bool {
    match key.iter().position(|&c| c == b'@') {
        None => is_key_part(key, |c| c.is_ascii_lowercase(), 256),
        Some(at) => {
            let (tenant, system) = key.split_at(at);
            let system = system.get(1..).unwrap_or_default();
            is_key_part(
                tenant,
                |c| c.is_ascii_lowercase() || c.is_ascii_digit(),
                241,
            ) && is_key_part(system, |c| c.is_ascii_lowercase(), 14)
        }
    }
}

/// `value = 0*255(chr) nblk-chr`, with `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E` and
/// `chr = %x20 / nblk-chr`.
fn is_value(value: &[u8]) -> bool {
    let chr = |c: u8| matches!(c, 0x20..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e);
    match value.last() {
        Some(&last) => last != b' ' && value.len() <= 256 && value.iter().all(|&c| chr(c)),
        None => false,
    }
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
    use proptest::prelude::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute (proptest's #[test] too), so these
    // tests also run compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    fn ok(s: &str) -> SpanContext {
        parse_traceparent(s).unwrap_or_else(|e| panic!("{s:?} should be valid: {e}"))
    }

    #[test]
    fn reads_the_spec_examples() {
        let sampled = ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(sampled.trace_id.to_hex(), TRACE);
        assert_eq!(sampled.span_id.to_hex(), SPAN);
        assert_eq!(sampled.sampling, Sampling::Sampled);
        assert!(!sampled.debug && !sampled.random);
        let not = ok("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        assert_eq!(not.sampling, Sampling::NotSampled);
        let other = ok("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert_eq!(other.span_id.to_hex(), "b7ad6b7169203331");
    }

    #[test]
    fn reads_the_level_2_random_flag_and_ignores_unknown_flags() {
        let c = ok(&format!("00-{TRACE}-{SPAN}-03"));
        assert_eq!((c.sampling, c.random), (Sampling::Sampled, true));
        let c = ok(&format!("00-{TRACE}-{SPAN}-02"));
        assert_eq!((c.sampling, c.random), (Sampling::NotSampled, true));
        // 0x09 = sampled + an undefined bit, which is masked, not read as a number.
        let c = ok(&format!("00-{TRACE}-{SPAN}-09"));
        assert_eq!((c.sampling, c.random), (Sampling::Sampled, false));
        let c = ok(&format!("00-{TRACE}-{SPAN}-fc"));
        assert_eq!((c.sampling, c.random), (Sampling::NotSampled, false));
    }

    #[test]
    fn reads_a_future_version_by_its_first_55_characters() {
        let c = ok(&format!("cc-{TRACE}-{SPAN}-01"));
        assert_eq!(
            (c.trace_id.to_hex(), c.sampling),
            (TRACE.to_string(), Sampling::Sampled)
        );
        let c = ok(&format!(
            "cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like"
        ));
        assert_eq!(c.span_id.to_hex(), SPAN);
        let c = ok(&format!("01-{TRACE}-{SPAN}-03-"));
        assert!(c.random);
        // ...and writes it back as version 00, without the unknown fields.
        assert_eq!(format_traceparent(&c), format!("00-{TRACE}-{SPAN}-03"));
    }

    #[test]
    fn ignores_surrounding_spaces_and_tabs_only() {
        for s in [
            format!(" 00-{TRACE}-{SPAN}-01"),
            format!("\t00-{TRACE}-{SPAN}-01"),
            format!("00-{TRACE}-{SPAN}-01 "),
            format!("\t 00-{TRACE}-{SPAN}-01 \t"),
        ] {
            assert_eq!(ok(&s).trace_id.to_hex(), TRACE, "{s:?}");
        }
        assert!(parse_traceparent(&format!("00-{TRACE} -{SPAN}-01")).is_err());
        assert!(parse_traceparent(&format!("\n00-{TRACE}-{SPAN}-01")).is_err());
    }

    #[test]
    fn refuses_every_traceparent_the_spec_rules_out() {
        let t = TRACE;
        let s = SPAN;
        let z32 = "0".repeat(32);
        let z16 = "0".repeat(16);
        for (value, why) in [
            // Uppercase hex in every field.
            (
                format!("00-{}-{s}-01", t.to_uppercase()),
                "trace-id is not 32 lowercase hex digits",
            ),
            (
                format!("00-4BF92F3577B34DA6a3ce929d0e0e4736-{s}-01"),
                "trace-id is not 32 lowercase hex digits",
            ),
            (
                format!("00-{t}-{}-01", s.to_uppercase()),
                "parent-id is not 16 lowercase hex digits",
            ),
            (
                format!("00-{t}-{s}-0A"),
                "trace-flags are not 2 lowercase hex digits",
            ),
            (
                format!("0A-{t}-{s}-01"),
                "version is not 2 lowercase hex digits",
            ),
            // Version ff, and versions that are not 2 hex digits.
            (format!("ff-{t}-{s}-01"), "version ff is invalid"),
            (format!("ff-{t}-{s}-01-more"), "version ff is invalid"),
            (
                format!(".0-{t}-{s}-01"),
                "version is not 2 lowercase hex digits",
            ),
            (
                format!("0.-{t}-{s}-01"),
                "version is not 2 lowercase hex digits",
            ),
            (
                format!("0-{t}-{s}-01"),
                "version is not 2 lowercase hex digits",
            ),
            (format!("000-{t}-{s}-01"), "version is not followed by '-'"),
            (format!("0000-{t}-{s}-01"), "version is not followed by '-'"),
            // All-zero ids.
            (format!("00-{z32}-{s}-01"), "trace-id is all zeros"),
            (format!("00-{t}-{z16}-01"), "parent-id is all zeros"),
            (format!("cc-{z32}-{s}-01"), "trace-id is all zeros"),
            // Wrong lengths.
            (
                format!("00-{}-{s}-01", &t[1..]),
                "version 00 is not exactly 55 characters",
            ),
            (
                format!("00-{t}0-{s}-01"),
                "version 00 is not exactly 55 characters",
            ),
            (
                format!("00-{t}-{}-01", &s[1..]),
                "version 00 is not exactly 55 characters",
            ),
            (
                format!("00-{t}-{s}0-01"),
                "version 00 is not exactly 55 characters",
            ),
            (
                format!("00-{t}-{s}-1"),
                "version 00 is not exactly 55 characters",
            ),
            (
                format!("00-{t}-{s}-001"),
                "version 00 is not exactly 55 characters",
            ),
            (format!("cc-{t}-{s}-1"), "shorter than 55 characters"),
            ("".to_string(), "version is not 2 lowercase hex digits"),
            ("00".to_string(), "version is not followed by '-'"),
            ("00-".to_string(), "version 00 is not exactly 55 characters"),
            // Bad flag characters.
            (
                format!("00-{t}-{s}-.0"),
                "trace-flags are not 2 lowercase hex digits",
            ),
            (
                format!("00-{t}-{s}-0."),
                "trace-flags are not 2 lowercase hex digits",
            ),
            (
                format!("00-{t}-{s}-0g"),
                "trace-flags are not 2 lowercase hex digits",
            ),
            (
                format!("00-{t}-{s}- 1"),
                "trace-flags are not 2 lowercase hex digits",
            ),
            // Bad id characters.
            (
                format!("00-.{}-{s}-01", &t[1..]),
                "trace-id is not 32 lowercase hex digits",
            ),
            (
                format!("00-{}.-{s}-01", &t[..31]),
                "trace-id is not 32 lowercase hex digits",
            ),
            (
                format!("00-{t}-.{}-01", &s[1..]),
                "parent-id is not 16 lowercase hex digits",
            ),
            (
                format!("00-{t}-{}.-01", &s[..15]),
                "parent-id is not 16 lowercase hex digits",
            ),
            // Missing dashes (same length, another separator).
            (format!("00_{t}-{s}-01"), "version is not followed by '-'"),
            (format!("00-{t}_{s}-01"), "trace-id is not followed by '-'"),
            (format!("00-{t}-{s}_01"), "parent-id is not followed by '-'"),
            (format!("00{t}-{s}-01-"), "version is not followed by '-'"),
            // Extra data on version 00; a future version's extra data must start with '-'.
            (
                format!("00-{t}-{s}-01-"),
                "version 00 is not exactly 55 characters",
            ),
            (
                format!("00-{t}-{s}-01.what-the-future-will-be-like"),
                "version 00 is not exactly 55 characters",
            ),
            (
                format!("00-{t}-{s}-01-what-the-future-will-be-like"),
                "version 00 is not exactly 55 characters",
            ),
            (
                format!("cc-{t}-{s}-01.what-the-future-will-be-like"),
                "flags are not followed by '-' or the end",
            ),
            (
                format!("cc-{t}-{s}-010"),
                "flags are not followed by '-' or the end",
            ),
            // Not ASCII where a digit should be.
            (
                format!("00-{}é-{s}-01", &t[..30]),
                "trace-id is not 32 lowercase hex digits",
            ),
            (
                format!("00-{}é-{s}-01", &t[..31]),
                "version 00 is not exactly 55 characters",
            ),
        ] {
            assert_eq!(parse_traceparent(&value), Err(Invalid(why)), "{value:?}");
        }
    }

    #[test]
    fn writes_version_00_with_the_sampled_and_random_flags() {
        let mut c = ok(&format!("00-{TRACE}-{SPAN}-01"));
        assert_eq!(format_traceparent(&c), format!("00-{TRACE}-{SPAN}-01"));
        c.sampling = Sampling::NotSampled;
        assert_eq!(format_traceparent(&c), format!("00-{TRACE}-{SPAN}-00"));
        c.random = true;
        assert_eq!(format_traceparent(&c), format!("00-{TRACE}-{SPAN}-02"));
        c.sampling = Sampling::Deferred;
        assert_eq!(format_traceparent(&c), format!("00-{TRACE}-{SPAN}-02"));
        // Debug implies sampled; W3C has no debug bit.
        c.debug = true;
        assert_eq!(format_traceparent(&c), format!("00-{TRACE}-{SPAN}-03"));
        assert!(!ok(&format_traceparent(&c)).debug);
    }

    #[test]
    fn tracestate_reads_the_spec_examples() {
        let ts = TraceState::parse("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE").unwrap();
        assert_eq!(
            ts.iter().collect::<Vec<_>>(),
            [("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]
        );
        assert_eq!(ts.get("congo"), Some("t61rcWkgMzE"));
        assert_eq!(ts.get("nope"), None);
        assert_eq!(ts.to_string(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
        assert_eq!(
            ts.limited(),
            ("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_string(), 0)
        );
    }

    #[test]
    fn tracestate_accepts_spaces_empty_members_and_joined_headers() {
        let ts = TraceState::parse("foo=1 \t , \t bar=2, \t baz=3").unwrap();
        assert_eq!(ts.to_string(), "foo=1,bar=2,baz=3");
        let ts = TraceState::parse("foo=1\t \t,\t \tbar=2,\t \tbaz=3").unwrap();
        assert_eq!(ts.len(), 3);
        for empty in ["", " ", "\t", ",", " , ,\t,"] {
            assert!(TraceState::parse(empty).unwrap().is_empty(), "{empty:?}");
        }
        let ts = TraceState::parse("foo=1,bar=2,,rojo=1,congo=2, ,baz=3").unwrap();
        assert_eq!(ts.to_string(), "foo=1,bar=2,rojo=1,congo=2,baz=3");
        // Leading spaces belong to the value; trailing ones are optional whitespace.
        let ts = TraceState::parse("foo=  1  ").unwrap();
        assert_eq!(ts.get("foo"), Some("  1"));
    }

    #[test]
    fn tracestate_accepts_every_allowed_character_and_tenant_keys() {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
        let value: String = (0x20u8..=0x7e)
            .filter(|c| *c != b',' && *c != b'=')
            .map(char::from)
            .collect();
        let with_vendor = format!("{key}@a-z0-9_-*/");
        for k in [
            key.to_string(),
            with_vendor,
            "0tenant@system".into(),
            "t@s".into(),
        ] {
            let ts = TraceState::parse(&format!("{k}={value}")).unwrap();
            assert_eq!(ts.get(&k), Some(value.as_str()), "{k:?}");
        }
        // Key length limits: 256 simple; tenant 241 and system 14.
        assert!(TraceState::parse(&format!("{}=1", "z".repeat(256))).is_ok());
        assert!(TraceState::parse(&format!("{}@{}=1", "t".repeat(241), "v".repeat(14))).is_ok());
        // Value length limit: 256.
        assert!(TraceState::parse(&format!("k={}", "v".repeat(256))).is_ok());
    }

    #[test]
    fn tracestate_refuses_bad_members_and_duplicate_keys() {
        for bad in [
            "foo =1",
            "FOO=1",
            "foo.bar=1",
            "1foo=1",
            "_foo=1",
            "foo@=1,bar=2",
            "@foo=1,bar=2",
            "foo@@bar=1,bar=2",
            "foo@bar@baz=1,bar=2",
            "foo@1bar=1",
            "foo=bar=baz",
            "foo=,bar=3",
            "foo",
            "=1",
            "foo=1\tx",
            "foo=é",
            "foo=1,foo=1",
            "foo=1,foo=2",
            "foo=1 , bar=2, foo=3",
        ] {
            assert!(TraceState::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            TraceState::parse("foo=1,foo=2"),
            Err(Invalid("a key appears twice"))
        );
        assert!(TraceState::parse(&format!("{}=1", "z".repeat(257))).is_err());
        assert!(TraceState::parse(&format!("{}@v=1", "t".repeat(242))).is_err());
        assert!(TraceState::parse(&format!("t@{}=1", "v".repeat(15))).is_err());
        assert!(TraceState::parse(&format!("k={}", "v".repeat(257))).is_err());
    }

    fn members(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("bar{i:02}={i:02}")).collect()
    }

    #[test]
    fn thirty_two_members_pass_whole() {
        let header = members(32).join(",");
        let ts = TraceState::parse(&header).unwrap();
        assert_eq!(ts.len(), 32);
        assert_eq!(ts.limited(), (header, 0));
    }

    #[test]
    fn thirty_three_members_lose_the_long_one_first() {
        let mut m = members(33);
        m[10] = format!("long={}", "x".repeat(124)); // 129 characters
        let ts = TraceState::parse(&m.join(",")).unwrap();
        let (out, dropped) = ts.limited();
        assert_eq!(dropped, 1);
        let mut want = m.clone();
        want.remove(10);
        assert_eq!(out, want.join(","));
        // 128 characters is not "larger than 128": then the last member goes.
        m[10] = format!("long={}", "x".repeat(123));
        let (out, dropped) = TraceState::parse(&m.join(",")).unwrap().limited();
        assert_eq!((out, dropped), (m[..32].join(","), 1));
    }

    #[test]
    fn truncation_removes_long_entries_right_most_first_then_from_the_end() {
        let mut m = members(36);
        for i in [3, 20, 30] {
            m[i] = format!("long{i}={}", "y".repeat(200));
        }
        // 4 to remove: the three long ones, then the last.
        let (out, dropped) = TraceState::parse(&m.join(",")).unwrap().limited();
        assert_eq!(dropped, 4);
        let want: Vec<&String> = m
            .iter()
            .enumerate()
            .filter(|(i, _)| ![3, 20, 30, 35].contains(i))
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            out,
            want.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        );
        // 2 to remove: the two right-most long ones only.
        let (out, dropped) = TraceState::parse(&m[..34].join(",")).unwrap().limited();
        assert_eq!(dropped, 2);
        assert!(out.contains("long3=") && !out.contains("long20=") && !out.contains("long30="));
        assert!(out.ends_with("bar34=34"));
    }

    /// A generated valid member: simple or tenant key, value from the allowed characters.
    fn member() -> impl Strategy<Value = (String, String)> {
        let key = prop_oneof![
            "[a-z][a-z0-9_*/-]{0,20}",
            "[a-z0-9][a-z0-9_*/-]{0,10}@[a-z][a-z0-9_*/-]{0,13}",
        ];
        let value = prop_oneof!["[!-+\\--<>-~]{1,20}", "[ -+\\--<>-~]{0,200}[!-+\\--<>-~]",];
        (key, value)
    }

    proptest! {
        #[test]
        fn traceparent_round_trips(c in span_context()) {
            let text = format_traceparent(&c);
            prop_assert_eq!(text.len(), 55);
            let back = parse_traceparent(&text).unwrap();
            prop_assert_eq!((back.trace_id, back.span_id, back.random), (c.trace_id, c.span_id, c.random));
            prop_assert_eq!(back.sampling == Sampling::Sampled, c.is_sampled());
        }

        #[test]
        fn parse_traceparent_never_panics(s in any::<String>()) {
            let _ = parse_traceparent(&s);
        }

        #[test]
        fn parse_traceparent_never_panics_on_near_misses(s in "[0-9a-fA-F.é -]{50,70}") {
            if let Ok(c) = parse_traceparent(&s) {
                prop_assert!(c.trace_id.is_valid() && c.span_id.is_valid());
            }
        }

        #[test]
        fn tracestate_parse_never_panics(s in any::<String>()) {
            if let Ok(ts) = TraceState::parse(&s) {
                let _ = ts.limited();
            }
        }

        #[test]
        fn tracestate_never_propagates_more_than_32_members(
            ms in proptest::collection::vec(member(), 0..80),
        ) {
            let mut seen = BTreeSet::new();
            let ms: Vec<(String, String)> = ms.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect();
            let header = ms.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" , ");
            let ts = TraceState::parse(&header).unwrap();
            prop_assert_eq!(ts.len(), ms.len());
            let (out, dropped) = ts.limited();
            let again = TraceState::parse(&out).unwrap();
            prop_assert!(again.len() <= 32);
            prop_assert_eq!(again.len() + dropped as usize, ms.len());
            prop_assert_eq!(dropped as usize, ms.len().saturating_sub(32));
            // Kept members keep their order; a short member is only dropped when no long one is left.
            let kept: Vec<(&str, &str)> = again.iter().collect();
            let mut it = ms.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            for k in &kept {
                prop_assert!(it.any(|m| m == *k));
            }
            let long = |(k, v): (&str, &str)| k.len() + 1 + v.len() > 128;
            if ms.iter().map(|(k, v)| (k.as_str(), v.as_str())).any(|m| !long(m) && !kept.contains(&m)) {
                prop_assert!(kept.iter().all(|m| !long(*m)));
            }
            prop_assert_eq!(again.limited(), (out.clone(), 0));
        }
    }
}
