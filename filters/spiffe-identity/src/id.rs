//! SPIFFE IDs of workloads, validated strictly: `spiffe://<trust-domain>/<path>`.
//!
//! The rules are those of the SPIFFE ID specification (`standards/SPIFFE-ID.md` in
//! spiffe/spiffe, §2) and the X.509-SVID specification (`standards/X509-SVID.md`, §3.1), checked
//! on the exact bytes, without any normalisation:
//!
//! - the scheme is `spiffe` followed by `://`, in lowercase;
//! - the trust domain (the URI's host) is non-empty, at most 255 bytes, and only `[a-z0-9.-_]`:
//!   no uppercase letter, no userinfo (`@`), no port (`:`, which also excludes IPv6 literals);
//! - the path is non-empty, its segments only `[a-zA-Z0-9.-_]`; no empty segment (`//`), no `.`
//!   or `..` segment, no trailing `/`;
//! - no percent-encoding anywhere, no query (`?`), no fragment (`#`);
//! - the whole ID is at most 2048 bytes.
//!
//! Where the specifications say more, or less, than the list above:
//!
//! - **The path must be non-empty.** SPIFFE-ID §2 makes the path optional (`spiffe://td` names
//!   the trust domain itself, which SPIFFE-ID §3.1 gives to signing authorities), but X.509-SVID
//!   §3.1 says "Leaf certificate SPIFFE IDs MUST have a non-root path component" and that only a
//!   leaf may identify a caller; X.509-SVID §3.2 says a signing certificate's ID "MUST NOT have a
//!   path component". An ID without a path therefore never names a workload, and [`parse`],
//!   which reads callers' identities, refuses it ([`IdError::NoPath`]).
//! - **The scheme is case-sensitive here.** SPIFFE-ID §2.4 says "the scheme and trust domain name
//!   of the SPIFFE ID are case-insensitive", yet §2.1 says the trust domain "MUST be lowercase",
//!   so only the scheme could differ in case, and X.509-SVID §5.2 asks the validator to "ensure
//!   that the scheme of the SPIFFE ID is set to `spiffe`". The reference implementation
//!   (go-spiffe's `spiffeid.FromString`) also requires the exact prefix `spiffe://`. Accepting
//!   `SPIFFE://…` would mean two spellings of one identity, which is what authorization must
//!   not have, so it is refused ([`IdError::Scheme`]).
//! - **2048 bytes is a hard limit.** SPIFFE-ID §2.3 says implementations "MUST support SPIFFE
//!   URIs up to 2048 bytes" and "SHOULD NOT generate" longer ones; it does not require refusing
//!   them. This filter refuses them, before any other check, which also bounds the work done on
//!   an untrusted string.
//! - The trust domain is not checked to be a DNS name or an IP address: SPIFFE-ID §2.1 says
//!   implementations "MUST NOT process trust domain names differently" when they are either.
//!
//! Because the rules leave exactly one spelling for every ID, two IDs are the same identity if
//! and only if their strings are equal; [`SpiffeId`] compares as its string.
//!
//! Strings read from requests are untrusted: log them through [`escape_for_log`].
//!
//! ```
//! use mesh_spiffe_identity::id::{parse, IdError};
//! let id = parse("spiffe://prod.example.org/ns/payments/sa/api").unwrap();
//! assert_eq!(id.trust_domain(), "prod.example.org");
//! assert_eq!(id.path(), "/ns/payments/sa/api");
//! assert_eq!(id.segments().collect::<Vec<_>>(), ["ns", "payments", "sa", "api"]);
//! assert_eq!(parse("spiffe://Prod.example.org/api"), Err(IdError::TrustDomainUppercase));
//! assert_eq!(parse("spiffe://prod.example.org"), Err(IdError::NoPath));
//! ```

use std::fmt;
use std::str::FromStr;

/// The longest ID accepted, in bytes (SPIFFE-ID §2.3).
pub const MAX_ID_LEN: usize = 2048;
/// The longest trust domain accepted, in bytes (SPIFFE-ID §2.3, after RFC 3986's host limit).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME_PREFIX: &str = "spiffe://";

/// A valid SPIFFE ID of a workload. It owns its string, which is exactly the one parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    /// Byte offset of the path's leading `/` in `id`.
    path_at: usize,
}

impl SpiffeId {
    /// The whole ID, as parsed.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain, e.g. `prod.example.org`.
    pub fn trust_domain(&self) -> &str {
        self.id
            .get(SCHEME_PREFIX.len()..self.path_at)
            .unwrap_or_default()
    }

    /// The path with its leading `/`, e.g. `/ns/payments/sa/api`; never empty.
    pub fn path(&self) -> &str {
        self.id.get(self.path_at..).unwrap_or_default()
    }

    /// The path's segments, in order; there is at least one and none is empty.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.path().split('/').skip(1)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.id
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;

    /// Same as [`parse`].
    fn from_str(s: &str) -> Result<Self, IdError> {
        parse(s)
    }
}

/// Why a string is not a valid workload SPIFFE ID: one variant per rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdError {
    /// The empty string.
    Empty,
    /// More than [`MAX_ID_LEN`] bytes.
    TooLong,
    /// Does not start with `spiffe://` (in lowercase).
    Scheme,
    /// A `%`: percent-encoding is not allowed anywhere.
    PercentEncoded,
    /// A `?`.
    Query,
    /// A `#`.
    Fragment,
    /// An `@` in the authority.
    UserInfo,
    /// A `:` in the authority.
    Port,
    /// Nothing between `spiffe://` and the path.
    EmptyTrustDomain,
    /// More than [`MAX_TRUST_DOMAIN_LEN`] bytes.
    TrustDomainTooLong,
    /// An uppercase ASCII letter in the trust domain.
    TrustDomainUppercase,
    /// A character other than `[a-z0-9.-_]` in the trust domain.
    TrustDomainChar(char),
    /// Nothing after the trust domain: `spiffe://td` names a trust domain, not a workload
    /// (X.509-SVID §3.1).
    NoPath,
    /// The path ends with `/` (`spiffe://td/` included).
    TrailingSlash,
    /// Two `/` in a row.
    EmptySegment,
    /// A segment that is `.` or `..`.
    DotSegment,
    /// A character other than `[a-zA-Z0-9.-_]` in the path.
    PathChar(char),
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => f.write_str("empty"),
            IdError::TooLong => write!(f, "longer than {MAX_ID_LEN} bytes"),
            IdError::Scheme => f.write_str("scheme is not spiffe://"),
            IdError::PercentEncoded => f.write_str("percent-encoding is not allowed"),
            IdError::Query => f.write_str("query is not allowed"),
            IdError::Fragment => f.write_str("fragment is not allowed"),
            IdError::UserInfo => f.write_str("userinfo is not allowed"),
            IdError::Port => f.write_str("port is not allowed"),
            IdError::EmptyTrustDomain => f.write_str("trust domain is empty"),
            IdError::TrustDomainTooLong => {
                write!(
                    f,
                    "trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes"
                )
            }
            IdError::TrustDomainUppercase => f.write_str("trust domain has an uppercase letter"),
            IdError::TrustDomainChar(c) => write!(
                f,
                "trust domain has a character outside [a-z0-9.-_]: '{}'",
                c.escape_default()
            ),
            IdError::NoPath => f.write_str("path is empty (a workload ID needs one)"),
            IdError::TrailingSlash => f.write_str("path has a trailing slash"),
            IdError::EmptySegment => f.write_str("path has an empty segment"),
            IdError::DotSegment => f.write_str("path has a '.' or '..' segment"),
            IdError::PathChar(c) => write!(
                f,
                "path has a character outside [a-zA-Z0-9.-_]: '{}'",
                c.escape_default()
            ),
        }
    }
}

impl std::error::Error for IdError {}

/// Validates a workload SPIFFE ID. Runs in time linear in `s`, and refuses anything longer than
/// [`MAX_ID_LEN`] before looking further.
pub fn parse(s: &str) -> Result<SpiffeId, IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    let rest = s.strip_prefix(SCHEME_PREFIX).ok_or(IdError::Scheme)?;
    // Characters that would make it another kind of URI, wherever they are.
    for c in rest.chars() {
        match c {
            '%' => return Err(IdError::PercentEncoded),
            '?' => return Err(IdError::Query),
            '#' => return Err(IdError::Fragment),
            _ => {}
        }
    }
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    check_trust_domain(authority)?;
    check_path(path)?;
    Ok(SpiffeId {
        id: s.to_string(),
        path_at: SCHEME_PREFIX.len() + authority.len(),
    })
}

fn check_trust_domain(td: &str) -> Result<(), IdError> {
    if td.contains('@') {
        return Err(IdError::UserInfo);
    }
    if td.contains(':') {
        return Err(IdError::Port);
    }
    if td.is_empty() {
        return Err(IdError::EmptyTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong);
    }
    for c in td.chars() {
        if c.is_ascii_uppercase() {
            return Err(IdError::TrustDomainUppercase);
        }
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')) {
            return Err(IdError::TrustDomainChar(c));
        }
    }
    Ok(())
}

/// `path` is empty or starts with `/`.
fn check_path(path: &str) -> Result<(), IdError> {
    if path.is_empty() {
        return Err(IdError::NoPath);
    }
    if path.ends_with('/') {
        return Err(IdError::TrailingSlash);
    }
    for segment in path.split('/').skip(1) {
        match segment {
            "" => return Err(IdError::EmptySegment),
            "." | ".." => return Err(IdError::DotSegment),
            _ => {}
        }
        if let Some(c) = segment.chars().find(|&c| !is_path_char(c)) {
            return Err(IdError::PathChar(c));
        }
    }
    Ok(())
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// Makes an untrusted string safe to put in a log line: printable ASCII is kept, except `"` and
/// `\`, which become `\"` and `\\`; every other byte (controls, DEL, each byte of a non-ASCII
/// character) becomes `\xNN`. The result is pure ASCII apart from the truncation marker, and at
/// most `max` bytes: when the escaped text is longer it is cut between two escapes and ends
/// with `…` (3 bytes), or is empty when `max` leaves no room for the marker.
///
/// ```
/// use mesh_spiffe_identity::id::escape_for_log;
/// assert_eq!(escape_for_log("a\"b\n\u{e9}", 64), "a\\\"b\\x0a\\xc3\\xa9");
/// assert_eq!(escape_for_log("spiffe://td/very/long/path", 15), "spiffe://td/…");
/// ```
pub fn escape_for_log(s: &str, max: usize) -> String {
    const MARKER: &str = "…";
    let mut out = String::with_capacity(s.len().min(max));
    // Length of `out` at the last point where the marker still fits within `max`.
    let mut cut = 0;
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\x");
                for nibble in [b >> 4, b & 0x0f] {
                    let digit = HEX.get(usize::from(nibble)).copied().unwrap_or(b'?');
                    out.push(char::from(digit));
                }
            }
        }
        if out.len() + MARKER.len() <= max {
            cut = out.len();
        }
        if out.len() > max {
            if MARKER.len() <= max {
                out.truncate(cut);
                out.push_str(MARKER);
            } else {
                out.clear();
            }
            return out;
        }
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
    use proptest::prelude::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute (proptest's #[test] too), so these
    // tests also run compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn ok(s: &str) -> SpiffeId {
        parse(s).unwrap_or_else(|e| panic!("{s:?} should be valid: {e}"))
    }

    #[test]
    fn accepts_ids_made_of_the_allowed_alphabets() {
        for s in [
            "spiffe://td/a",
            "spiffe://example.org/ns/default/sa/default",
            "spiffe://k8s-west.example.com/ns/staging/sa/default",
            "spiffe://example.com/9eebccd2-12bf-40a6-b262-65fe0487d453",
            "spiffe://a_b.c-d.0/A.b-C_d/..x/x../.../...-",
            "spiffe://10.0.0.1/ip/looking/trust/domain",
            "spiffe://-.-/_",
        ] {
            assert_eq!(ok(s).as_str(), s);
        }
    }

    #[test]
    fn splits_an_id_into_trust_domain_path_and_segments() {
        let id = ok("spiffe://prod.example.org/ns/payments/sa/api");
        assert_eq!(id.trust_domain(), "prod.example.org");
        assert_eq!(id.path(), "/ns/payments/sa/api");
        assert_eq!(
            id.segments().collect::<Vec<_>>(),
            ["ns", "payments", "sa", "api"]
        );
        let one = ok("spiffe://td/x");
        assert_eq!(
            (one.trust_domain(), one.path(), one.segments().count()),
            ("td", "/x", 1)
        );
        assert_eq!(one.to_string(), "spiffe://td/x");
        assert_eq!("spiffe://td/x".parse::<SpiffeId>(), Ok(one));
    }

    #[test]
    fn refuses_every_broken_rule_with_its_own_reason() {
        for (s, want) in [
            ("", IdError::Empty),
            ("https://td/a", IdError::Scheme),
            ("spiffe:/td/a", IdError::Scheme),
            ("spiffe:td/a", IdError::Scheme),
            ("SPIFFE://td/a", IdError::Scheme),
            ("Spiffe://td/a", IdError::Scheme),
            ("td/a", IdError::Scheme),
            (" spiffe://td/a", IdError::Scheme),
            ("spiffe://td/a%20b", IdError::PercentEncoded),
            ("spiffe://t%41d/a", IdError::PercentEncoded),
            ("spiffe://td/a?b=c", IdError::Query),
            ("spiffe://td?x", IdError::Query),
            ("spiffe://td/a#frag", IdError::Fragment),
            ("spiffe://user@td/a", IdError::UserInfo),
            ("spiffe://user:pw@td/a", IdError::UserInfo),
            ("spiffe://td:8080/a", IdError::Port),
            ("spiffe://td:/a", IdError::Port),
            ("spiffe://[::1]/a", IdError::Port),
            ("spiffe://", IdError::EmptyTrustDomain),
            ("spiffe:///a", IdError::EmptyTrustDomain),
            ("spiffe://Td/a", IdError::TrustDomainUppercase),
            ("spiffe://example.ORG/a", IdError::TrustDomainUppercase),
            ("spiffe://t d/a", IdError::TrustDomainChar(' ')),
            ("spiffe://t*d/a", IdError::TrustDomainChar('*')),
            ("spiffe://tdé/a", IdError::TrustDomainChar('é')),
            ("spiffe://td", IdError::NoPath),
            ("spiffe://example.org", IdError::NoPath),
            ("spiffe://td/", IdError::TrailingSlash),
            ("spiffe://td/a/", IdError::TrailingSlash),
            ("spiffe://td//a", IdError::EmptySegment),
            ("spiffe://td/a//b", IdError::EmptySegment),
            ("spiffe://td/a/../b", IdError::DotSegment),
            ("spiffe://td/..", IdError::DotSegment),
            ("spiffe://td/./a", IdError::DotSegment),
            ("spiffe://td/a/.", IdError::DotSegment),
            ("spiffe://td/a b", IdError::PathChar(' ')),
            ("spiffe://td/a+b", IdError::PathChar('+')),
            ("spiffe://td/a*", IdError::PathChar('*')),
            ("spiffe://td/a\\b", IdError::PathChar('\\')),
            ("spiffe://td/a\nb", IdError::PathChar('\n')),
            ("spiffe://td/naïve", IdError::PathChar('ï')),
            ("spiffe://td/a:b", IdError::PathChar(':')),
            ("spiffe://td/a@b", IdError::PathChar('@')),
        ] {
            assert_eq!(parse(s), Err(want), "{s:?}");
        }
    }

    #[test]
    fn accepts_2048_bytes_and_refuses_2049() {
        let prefix = "spiffe://td/";
        let at_limit = format!("{prefix}{}", "a".repeat(MAX_ID_LEN - prefix.len()));
        assert_eq!(at_limit.len(), 2048);
        assert_eq!(ok(&at_limit).as_str(), at_limit);
        let over = format!("{at_limit}a");
        assert_eq!(parse(&over), Err(IdError::TooLong));
        // The length is checked first, whatever else is wrong.
        assert_eq!(parse(&"%".repeat(3000)), Err(IdError::TooLong));
    }

    #[test]
    fn accepts_a_255_byte_trust_domain_and_refuses_256() {
        let td = "a".repeat(255);
        assert_eq!(ok(&format!("spiffe://{td}/x")).trust_domain(), td);
        assert_eq!(
            parse(&format!("spiffe://{td}a/x")),
            Err(IdError::TrustDomainTooLong)
        );
    }

    #[test]
    fn reasons_are_short_and_escape_what_they_quote() {
        assert_eq!(
            IdError::TrustDomainUppercase.to_string(),
            "trust domain has an uppercase letter"
        );
        assert_eq!(IdError::Port.to_string(), "port is not allowed");
        assert_eq!(IdError::TooLong.to_string(), "longer than 2048 bytes");
        assert_eq!(
            IdError::PathChar('\n').to_string(),
            "path has a character outside [a-zA-Z0-9.-_]: '\\n'"
        );
        assert_eq!(
            IdError::TrustDomainChar('\u{202e}').to_string(),
            "trust domain has a character outside [a-z0-9.-_]: '\\u{202e}'"
        );
    }

    #[test]
    fn escape_for_log_escapes_quotes_controls_and_non_ascii() {
        assert_eq!(escape_for_log("spiffe://td/a", 64), "spiffe://td/a");
        assert_eq!(escape_for_log("", 0), "");
        assert_eq!(escape_for_log("a\"b\\c", 64), "a\\\"b\\\\c");
        assert_eq!(
            escape_for_log("\r\n\t\x00\x7f", 64),
            "\\x0d\\x0a\\x09\\x00\\x7f"
        );
        assert_eq!(escape_for_log("é\u{202e}", 64), "\\xc3\\xa9\\xe2\\x80\\xae");
    }

    #[test]
    fn escape_for_log_truncates_with_a_marker_within_max_bytes() {
        assert_eq!(escape_for_log("abcdef", 6), "abcdef");
        assert_eq!(escape_for_log("abcdefg", 6), "abc…");
        assert_eq!(escape_for_log("abcdefg", 3), "…");
        assert_eq!(escape_for_log("abcdefg", 2), "");
        assert_eq!(escape_for_log("abcdefg", 0), "");
        // Never cuts an escape in half.
        assert_eq!(escape_for_log("a\nbcdefgh", 7), "a…");
        assert_eq!(escape_for_log("a\nbcdefgh", 8), "a\\x0a…");
    }

    /// Generated valid IDs: trust domain, then 1..6 segments, from the allowed alphabets.
    fn valid_id() -> impl Strategy<Value = String> {
        let segment =
            "[a-zA-Z0-9._-]{1,12}".prop_filter("not a dot segment", |s| s != "." && s != "..");
        ("[a-z0-9._-]{1,40}", prop::collection::vec(segment, 1..6))
            .prop_map(|(td, segments)| format!("spiffe://{td}/{}", segments.join("/")))
    }

    proptest! {
        #[test]
        fn generated_valid_ids_are_accepted_and_round_trip(s in valid_id()) {
            let id = parse(&s);
            prop_assert!(id.is_ok(), "{s:?}: {id:?}");
            let id = id.unwrap();
            prop_assert_eq!(id.as_str(), s.as_str());
            let rebuilt = format!("spiffe://{}{}", id.trust_domain(), id.path());
            prop_assert_eq!(rebuilt, s.clone());
            prop_assert_eq!(id.segments().collect::<Vec<_>>().join("/"), id.path()[1..].to_string());
        }

        #[test]
        fn an_uppercase_letter_in_the_trust_domain_is_refused(s in valid_id(), at in any::<prop::sample::Index>(), c in "[A-Z]") {
            let td_len = parse(&s).unwrap().trust_domain().len();
            let at = 9 + at.index(td_len + 1);
            let mut m = s.clone();
            m.insert_str(at, &c);
            prop_assert_eq!(parse(&m), Err(IdError::TrustDomainUppercase));
        }

        #[test]
        fn a_trailing_slash_is_refused(s in valid_id()) {
            prop_assert_eq!(parse(&format!("{s}/")), Err(IdError::TrailingSlash));
        }

        #[test]
        fn percent_encoding_anywhere_after_the_scheme_is_refused(s in valid_id(), at in any::<prop::sample::Index>()) {
            let at = 9 + at.index(s.len() - 9 + 1);
            let mut m = s.clone();
            m.insert_str(at, "%20");
            prop_assert_eq!(parse(&m), Err(IdError::PercentEncoded));
        }

        #[test]
        fn a_port_after_the_trust_domain_is_refused(s in valid_id()) {
            let id = parse(&s).unwrap();
            let m = format!("spiffe://{}:8080{}", id.trust_domain(), id.path());
            prop_assert_eq!(parse(&m), Err(IdError::Port));
        }

        #[test]
        fn a_dot_dot_segment_anywhere_in_the_path_is_refused(s in valid_id(), at in any::<prop::sample::Index>()) {
            let id = parse(&s).unwrap();
            let mut segments: Vec<&str> = id.segments().collect();
            segments.insert(at.index(segments.len() + 1), "..");
            let m = format!("spiffe://{}/{}", id.trust_domain(), segments.join("/"));
            prop_assert_eq!(parse(&m), Err(IdError::DotSegment));
        }

        #[test]
        fn parse_never_panics_on_arbitrary_strings(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn parse_never_panics_on_near_misses(s in "spiffe://[a-zA-Z0-9./:@%?#*é _-]{0,40}") {
            if let Ok(id) = parse(&s) {
                prop_assert_eq!(id.as_str(), s.as_str());
                prop_assert!(id.segments().all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
            }
        }

        #[test]
        fn escape_for_log_stays_within_max_and_is_ascii_but_for_the_marker(s in any::<String>(), max in 0usize..64) {
            let out = escape_for_log(&s, max);
            prop_assert!(out.len() <= max, "{out:?} longer than {max}");
            let body = out.strip_suffix('…').unwrap_or(&out);
            prop_assert!(body.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{out:?}");
        }
    }
}
