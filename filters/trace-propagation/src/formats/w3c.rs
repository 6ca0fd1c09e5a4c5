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
//! - "Multiple tracestate header fields MUST be handled as specified by RFC7230 Section 3.2.2
//!   Field Order" and "When receiving multiple tracestate header fields, they MUST be combined
//!   into a single header": [`TraceState::parse_lines`] reads every field line, in order, as one
//!   list (`foo=1,bar=2` + `rojo=1,congo=2` + `baz=3` is five members). The filter writes the
//!   list back as one field ("SHOULD be sent as a single field when possible");
//! - a list of members separated by `,`; SP and HTAB around a member are ignored ("Spaces and
//!   horizontal tabs surrounding list-members are ignored"), and empty members are skipped
//!   ("Empty and whitespace-only list members are allowed"), so an empty field line next to a
//!   valid one changes nothing and an empty header is a valid empty list ("Vendors MUST accept
//!   empty tracestate headers but SHOULD avoid sending them": the filter then sends none);
//! - a member is `key "=" value`, split at the first `=`;
//! - the key follows the Level 2 grammar ("Key"): `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`,
//!   `keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"`: 1 to 256 characters starting
//!   with `a-z` or `0-9`, `@` allowed anywhere after the first character. So `tenant@system`,
//!   `foo@`, `foo@@bar` and `foo@bar@baz` are keys and `@foo` is not, as the W3C test suite
//!   checks since it follows the Level 2 grammar (w3c/trace-context#584). The Level 1
//!   multi-tenant form (tenant of at most 241, system of at most 14 characters) is a subset;
//! - the value ("Value"): 1 to 256 printable ASCII characters (`0x20-0x7E`) other than `,` and
//!   `=`, not ending with a space; leading spaces are part of the value ("all leading spaces
//!   MUST be preserved as part of the value"), trailing ones are optional whitespace;
//! - a member that breaks these rules is dropped and the valid ones are kept ("Invalid
//!   tracestate entries MAY also be discarded", from the processing model, which also allows
//!   discarding the whole header: the W3C test suite's strict level expects that; keeping the
//!   valid members loses less of other vendors' state);
//! - "Only one entry per key is allowed": a member whose key an earlier member has is dropped.
//!   The left-most is kept: it is the most recent position ("Modified keys MUST be moved to the
//!   beginning (left) of the list");
//! - "There can be a maximum of 32 list-members in a list" (`list = list-member 0*31( OWS ","
//!   OWS list-member )`): more than 32 members (once the above are dropped) is not a
//!   `tracestate` list, and is dropped whole, as the W3C test suite expects; exactly 32 pass
//!   whole, however many field lines they came in;
//! - nothing else is limited: at most 32 members of at most 256 + 1 + 256 characters are
//!   propagated whole ("Vendors SHOULD propagate at least 512 characters of a combined header"),
//!   so the filter never truncates for size and the truncation order of "tracestate Limits"
//!   (entries over 128 characters first) never applies;
//! - order: kept members keep their order ("the order of unmodified key/value pairs MUST be
//!   preserved"), and the filter adds, updates or moves none (it has no entry of its own).
//!
//! The filter does not parse `tracestate` when `traceparent` was invalid ("If the vendor failed
//! to parse `traceparent`, it MUST NOT attempt to parse `tracestate`"), and a `tracestate` it
//! drops members from never makes `traceparent` invalid ("failure to parse `tracestate` MUST NOT
//! affect the parsing of `traceparent`").

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
/// The most members a `tracestate` list has; a longer one is dropped whole.
pub const MAX_TRACESTATE_MEMBERS: u32 = 32;
/// The longest key of a `tracestate` member.
pub const MAX_TRACESTATE_KEY: usize = 256;
/// The longest value of a `tracestate` member.
pub const MAX_TRACESTATE_VALUE: usize = 256;

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

/// A `tracestate` list as the filter propagates it: valid members only, in order (left-most
/// first), keys unique, at most [`MAX_TRACESTATE_MEMBERS`]; and how many members were left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceState {
    members: Vec<(String, String)>,
    dropped: u32,
}

impl TraceState {
    /// Reads one `tracestate` value. Same as [`TraceState::parse_lines`] with one line.
    pub fn parse(value: &str) -> TraceState {
        TraceState::parse_lines([value])
    }

    /// Reads every `tracestate` field line of a request, in order, as one list. Never fails:
    /// invalid members and repeated keys are dropped, and a list of more than 32 members is
    /// dropped whole (the result is then empty); [`TraceState::dropped`] counts what was left
    /// out. See the module documentation for the rules.
    pub fn parse_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> TraceState {
        let max = usize::try_from(MAX_TRACESTATE_MEMBERS).unwrap_or(usize::MAX);
        let mut members: Vec<(String, String)> = Vec::new();
        let mut dropped = 0u32;
        let mut over = false;
        for raw in lines.into_iter().flat_map(|line| line.split(',')) {
            let member = trim_ows(raw);
            if member.is_empty() {
                continue;
            }
            if over {
                // The list is dropped whole: only the count matters now (and the work stays
                // linear in the header, whatever its length).
                dropped = dropped.saturating_add(1);
                continue;
            }
            let valid = member
                .split_once('=')
                .filter(|(k, v)| is_key(k.as_bytes()) && is_value(v.as_bytes()));
            match valid {
                Some((k, v)) if !members.iter().any(|(have, _)| have == k) => {
                    members.push((k.to_string(), v.to_string()));
                    over = members.len() > max;
                }
                _ => dropped = dropped.saturating_add(1),
            }
        }
        if over {
            let n = u32::try_from(members.len()).unwrap_or(u32::MAX);
            dropped = dropped.saturating_add(n);
            members.clear();
        }
        TraceState { members, dropped }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// No members: the filter then sends no `tracestate` at all ("Vendors MUST accept empty
    /// tracestate headers but SHOULD avoid sending them").
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Members left out: invalid ones, repeated keys, or all of a list over 32 members.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    /// The members as `(key, value)`, left-most first.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.members.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl fmt::Display for TraceState {
    /// The header value: `key=value` members joined with `,`, no whitespace.
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

/// Level 2 `key = ( lcalpha / DIGIT ) 0*255 ( keychar )`,
/// `keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"`.
fn is_key(key: &[u8]) -> bool {
    let keychar = |c: u8| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, b'_' | b'-' | b'*' | b'/' | b'@')
    };
    match key.split_first() {
        Some((&first, rest)) => {
            (first.is_ascii_lowercase() || first.is_ascii_digit())
                && key.len() <= MAX_TRACESTATE_KEY
                && rest.iter().all(|&c| keychar(c))
        }
        None => false,
    }
}

/// `value = 0*255(chr) nblk-chr`, with `nblk-chr = %x21-2B / %x2D-3C / %x3E-7E` and
/// `chr = %x20 / nblk-chr`.
fn is_value(value: &[u8]) -> bool {
    let chr = |c: u8| matches!(c, 0x20..=0x2b | 0x2d..=0x3c | 0x3e..=0x7e);
    match value.last() {
        Some(&last) => {
            last != b' ' && value.len() <= MAX_TRACESTATE_VALUE && value.iter().all(|&c| chr(c))
        }
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
        let ts = TraceState::parse("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
        assert_eq!(
            ts.iter().collect::<Vec<_>>(),
            [("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]
        );
        assert_eq!(ts.get("congo"), Some("t61rcWkgMzE"));
        assert_eq!(ts.get("nope"), None);
        assert_eq!(ts.to_string(), "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE");
        assert_eq!(ts.dropped(), 0);
    }

    #[test]
    fn tracestate_lines_combine_into_one_list_in_order() {
        let ts = TraceState::parse_lines(["foo=1,bar=2", "rojo=1,congo=2", "baz=3"]);
        assert_eq!(ts.to_string(), "foo=1,bar=2,rojo=1,congo=2,baz=3");
        assert_eq!(ts.dropped(), 0);
        // An empty line next to a valid one adds nothing, wherever it is.
        for lines in [
            ["foo=1", ""],
            ["", "foo=1"],
            [" \t", "foo=1"],
            ["foo=1", ","],
        ] {
            let ts = TraceState::parse_lines(lines);
            assert_eq!(
                (ts.to_string(), ts.dropped()),
                ("foo=1".into(), 0),
                "{lines:?}"
            );
        }
        assert!(TraceState::parse_lines([]).is_empty());
        assert!(TraceState::parse_lines(["", ""]).is_empty());
        // A member does not span lines: `foo` and `=1` are two bad members.
        let ts = TraceState::parse_lines(["foo", "=1"]);
        assert_eq!((ts.len(), ts.dropped()), (0, 2));
    }

    #[test]
    fn tracestate_accepts_spaces_and_empty_members() {
        let ts = TraceState::parse("foo=1 \t , \t bar=2, \t baz=3");
        assert_eq!(ts.to_string(), "foo=1,bar=2,baz=3");
        let ts = TraceState::parse("foo=1\t \t,\t \tbar=2,\t \tbaz=3");
        assert_eq!(ts.len(), 3);
        for empty in ["", " ", "\t", ",", " , ,\t,"] {
            let ts = TraceState::parse(empty);
            assert!(ts.is_empty() && ts.dropped() == 0, "{empty:?}");
        }
        let ts = TraceState::parse("foo=1,bar=2,,rojo=1,congo=2, ,baz=3");
        assert_eq!(ts.to_string(), "foo=1,bar=2,rojo=1,congo=2,baz=3");
        // Leading spaces belong to the value; trailing ones are optional whitespace.
        assert_eq!(TraceState::parse("foo=  1  ").get("foo"), Some("  1"));
        for ows in [" foo=1", "\tfoo=1", "foo=1 ", "foo=1\t", "\t foo=1 \t"] {
            assert_eq!(TraceState::parse(ows).to_string(), "foo=1", "{ows:?}");
        }
    }

    #[test]
    fn tracestate_accepts_every_allowed_character() {
        let key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
        let value: String = (0x20u8..=0x7e)
            .filter(|c| *c != b',' && *c != b'=')
            .map(char::from)
            .collect();
        for k in [key.to_string(), format!("{key}@a-z0-9_-*/")] {
            let ts = TraceState::parse(&format!("{k}={value}"));
            assert_eq!(ts.get(&k), Some(value.as_str()), "{k:?}");
        }
        // Value length limit: 256.
        let v256 = "v".repeat(256);
        assert_eq!(
            TraceState::parse(&format!("k={v256}")).get("k"),
            Some(v256.as_str())
        );
        let ts = TraceState::parse(&format!("k={v256}v,foo=1"));
        assert_eq!((ts.to_string(), ts.dropped()), ("foo=1".into(), 1));
    }

    #[test]
    fn tracestate_keys_follow_the_level_2_grammar() {
        // `( lcalpha / DIGIT ) 0*255 ( keychar )`, `@` a key character after the first.
        for key in [
            "foo".to_string(),
            "0tenant@system".into(),
            "tenant@system".into(),
            "t@s".into(),
            "1foo".into(),
            "foo@".into(),
            "foo@@bar".into(),
            "foo@bar@baz".into(),
            "foo@1bar".into(),
            "z".repeat(256),
            format!("{}@{}", "t".repeat(241), "v".repeat(14)),
            format!("{}@v", "t".repeat(242)),
            format!("t@{}", "v".repeat(15)),
        ] {
            let ts = TraceState::parse(&format!("{key}=1,bar=2"));
            assert_eq!(
                (ts.get(&key), ts.get("bar"), ts.dropped()),
                (Some("1"), Some("2"), 0),
                "{key:?}"
            );
        }
        for key in [
            "".to_string(),
            "@foo".into(),
            "_foo".into(),
            "*foo".into(),
            "FOO".into(),
            "fOo".into(),
            "foo bar".into(),
            "foo.bar".into(),
            "fooé".into(),
            "z".repeat(257),
            format!("{}@v", "t".repeat(255)),
        ] {
            let ts = TraceState::parse(&format!("{key}=1,bar=2"));
            assert_eq!(
                (ts.to_string(), ts.dropped()),
                ("bar=2".to_string(), 1),
                "{key:?}: the bad member goes, the valid one stays"
            );
        }
    }

    #[test]
    fn bad_members_are_dropped_and_the_valid_ones_kept_in_order() {
        for bad in [
            "foo =1",
            "FOO=1",
            "foo.bar=1",
            "_foo=1",
            "@foo=1",
            "foo=bar=baz",
            "foo=",
            "foo",
            "=1",
            "foo=1\tx",
            "foo=é",
            "foo=1\u{b}",
        ] {
            let ts = TraceState::parse(&format!("a=1,{bad},z=2"));
            assert_eq!(
                (ts.to_string(), ts.dropped()),
                ("a=1,z=2".to_string(), 1),
                "{bad:?}"
            );
        }
        // `foo=,bar=3`: the empty value goes, bar stays.
        assert_eq!(TraceState::parse("foo=,bar=3").to_string(), "bar=3");
    }

    #[test]
    fn a_repeated_key_keeps_its_left_most_entry() {
        for (lines, want) in [
            (vec!["foo=1,foo=1"], "foo=1"),
            (vec!["foo=1,foo=2"], "foo=1"),
            (vec!["foo=1", "foo=1"], "foo=1"),
            (vec!["foo=1", "foo=2"], "foo=1"),
            (vec!["foo=1 , bar=2, foo=3"], "foo=1,bar=2"),
        ] {
            let ts = TraceState::parse_lines(lines.iter().copied());
            assert_eq!(ts.to_string(), want, "{lines:?}");
            assert_eq!(ts.dropped(), 1, "{lines:?}");
        }
        // A bad member does not claim its key: the valid one after it is kept.
        assert_eq!(TraceState::parse("foo=,foo=2").to_string(), "foo=2");
    }

    fn members(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("bar{i:02}={i:02}")).collect()
    }

    /// The W3C test suite's member-count case: members 1-10, 11-20, 21-30, and the rest.
    fn test_suite_lines(n: usize) -> Vec<String> {
        members(n).chunks(10).map(|c| c.join(",")).collect()
    }

    #[test]
    fn thirty_two_members_on_several_lines_pass_whole_and_thirty_three_are_dropped() {
        let lines = test_suite_lines(32);
        assert_eq!(lines.len(), 4);
        let ts = TraceState::parse_lines(lines.iter().map(String::as_str));
        assert_eq!((ts.len(), ts.dropped()), (32, 0));
        assert_eq!(ts.get("bar01"), Some("01"));
        assert_eq!(ts.to_string(), members(32).join(","));

        let lines = test_suite_lines(33);
        let ts = TraceState::parse_lines(lines.iter().map(String::as_str));
        assert!(ts.is_empty());
        assert_eq!(ts.dropped(), 33);
        // 33 members of which one is invalid and one a repeated key: 31 valid, kept.
        let mut m = members(31);
        m.insert(3, "BAD=1".into());
        m.insert(7, "bar01=again".into());
        let ts = TraceState::parse(&m.join(","));
        assert_eq!((ts.len(), ts.dropped()), (31, 2));
        // The longest members pass whole: 32 of 256 + 1 + 256 characters.
        let big: Vec<String> = (0..32)
            .map(|i| format!("{:a<256}={}", format!("k{i}"), "v".repeat(256)))
            .collect();
        let ts = TraceState::parse(&big.join(","));
        assert_eq!((ts.len(), ts.dropped()), (32, 0));
        assert_eq!(ts.to_string(), big.join(","));
    }

    /// A generated valid member: any Level 2 key, value from the allowed characters.
    fn member() -> impl Strategy<Value = (String, String)> {
        let key = prop_oneof![
            "[a-z][a-z0-9_*/-]{0,20}",
            "[a-z0-9][a-z0-9_*/@-]{0,20}",
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
        fn tracestate_parse_never_panics_and_writes_what_it_reads_back(
            s in any::<String>(),
            t in any::<String>(),
        ) {
            let ts = TraceState::parse_lines([s.as_str(), t.as_str()]);
            prop_assert!(ts.len() <= 32);
            let again = TraceState::parse(&ts.to_string());
            prop_assert_eq!(again.iter().collect::<Vec<_>>(), ts.iter().collect::<Vec<_>>());
            prop_assert_eq!(again.dropped(), 0);
        }

        #[test]
        fn lines_read_as_their_values_joined_with_commas(
            ms in proptest::collection::vec(member(), 0..40),
            cuts in proptest::collection::vec(any::<bool>(), 0..40),
            ows in "[ \t]{0,2}",
        ) {
            let texts: Vec<String> = ms.iter().map(|(k, v)| format!("{ows}{k}={v}{ows}")).collect();
            // Split the members into lines wherever `cuts` says.
            let mut lines: Vec<String> = vec![String::new()];
            for (i, m) in texts.iter().enumerate() {
                if cuts.get(i).copied().unwrap_or(false) {
                    lines.push(String::new());
                }
                let line = lines.last_mut().unwrap();
                if !line.is_empty() {
                    line.push(',');
                }
                line.push_str(m);
            }
            let split = TraceState::parse_lines(lines.iter().map(String::as_str));
            let joined = TraceState::parse(&lines.join(","));
            prop_assert_eq!(&split, &joined);
        }

        #[test]
        fn valid_members_are_kept_in_order_once_each_up_to_32(
            ms in proptest::collection::vec(member(), 0..50),
        ) {
            let header = ms.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" , ");
            let ts = TraceState::parse(&header);
            let mut unique: Vec<(&str, &str)> = Vec::new();
            for (k, v) in &ms {
                if !unique.iter().any(|(u, _)| u == k) {
                    unique.push((k.as_str(), v.as_str()));
                }
            }
            if unique.len() <= 32 {
                prop_assert_eq!(ts.iter().collect::<Vec<_>>(), unique);
                prop_assert_eq!(ts.dropped() as usize, ms.len() - ts.len());
            } else {
                prop_assert!(ts.is_empty());
                prop_assert_eq!(ts.dropped() as usize, ms.len());
            }
        }
    }
}
