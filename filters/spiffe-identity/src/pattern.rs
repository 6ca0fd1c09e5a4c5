//! Authorization patterns over SPIFFE IDs.
//!
//! A pattern is written like an ID, with two wildcards in the path:
//!
//! - `*` matches any run of characters *within one segment* (never a `/`), possibly none, and
//!   can sit among literal text: `spiffe://td/ns/*/sa/api-*` matches
//!   `spiffe://td/ns/prod/sa/api-v2` but not `spiffe://td/ns/a/b/sa/api-v2`;
//! - `**` as the whole *last* segment matches **one or more** further segments:
//!   `spiffe://td/ns/prod/**` matches `spiffe://td/ns/prod/sa/api` but not `spiffe://td/ns/prod`,
//!   and `spiffe://td/**` matches every workload of trust domain `td`.
//!
//! Everything else is literal and compared exactly (case-sensitively, like the path of an ID).
//! The trust domain is always literal: a pattern never reaches across trust domains, which are
//! separate roots of trust.
//!
//! A pattern is checked when it is configured, so that a typo is a configuration error, not a
//! rule that silently never matches. It must be a valid ID (see [`crate::id`]) once each `*` is
//! replaced by a letter: scheme `spiffe://`, a valid trust domain without wildcards, a non-empty
//! path of non-empty segments of `[a-zA-Z0-9.-_]` and `*`, no `.` or `..` segment, no trailing
//! `/`, no port, userinfo, query, fragment or percent-encoding, at most 2048 bytes. `**` is
//! allowed only as the whole last segment. The error names the pattern and the reason.
//!
//! Matching is linear in the ID for literal segments and `**`, and each `*` segment is matched
//! with the two-pointer glob algorithm (on a mismatch, resume just after the last `*`, one
//! character further into the text), which is O(pattern × segment) in the worst case and never
//! backtracks exponentially, however many `*` a segment has.
//!
//! ```
//! use mesh_spiffe_identity::id::SpiffeId;
//! use mesh_spiffe_identity::pattern::{first_match, Pattern};
//! let rules = [
//!     Pattern::parse("spiffe://td/ns/*/sa/api-*").unwrap(),
//!     Pattern::parse("spiffe://td/batch/**").unwrap(),
//! ];
//! let id: SpiffeId = "spiffe://td/ns/prod/sa/api-v2".parse().unwrap();
//! assert_eq!(first_match(&rules, &id).map(Pattern::as_str), Some("spiffe://td/ns/*/sa/api-*"));
//! let other: SpiffeId = "spiffe://other/batch/job".parse().unwrap();
//! assert!(first_match(&rules, &other).is_none());
//! assert!(Pattern::parse("spiffe://td/**/x").is_err());
//! ```

use crate::id::SpiffeId;
use std::fmt;

const SCHEME_PREFIX: &str = "spiffe://";

/// A validated pattern; see the module documentation for the syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    trust_domain: String,
    /// The path segments before a final `**`, or all of them.
    segments: Vec<Segment>,
    /// The pattern ends with `/**`: one or more further segments.
    any_tail: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// Contains at least one `*`.
    Glob(String),
}

impl Segment {
    fn matches(&self, segment: &str) -> bool {
        match self {
            Segment::Literal(literal) => literal == segment,
            Segment::Glob(glob) => glob_matches(glob.as_bytes(), segment.as_bytes()),
        }
    }
}

impl Pattern {
    /// Parses and validates a pattern. The error reads `invalid pattern "<pattern>": <reason>`.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        let fail = |why: &dyn fmt::Display| format!("invalid pattern {s:?}: {why}");
        let (authority, path) = match s.strip_prefix(SCHEME_PREFIX) {
            Some(rest) => rest.split_at(rest.find('/').unwrap_or(rest.len())),
            None => ("", ""),
        };
        if authority.contains('*') {
            return Err(fail(&"the trust domain cannot have wildcards"));
        }
        // With every `*` turned into a letter, the pattern must be a valid ID: this checks the
        // scheme, the trust domain, the alphabet and the structure exactly as `id` does.
        s.replace('*', "x")
            .parse::<SpiffeId>()
            .map_err(|e| fail(&e))?;

        let parts: Vec<&str> = path.split('/').skip(1).collect();
        let (last, init) = parts
            .split_last()
            .ok_or_else(|| fail(&"the path is empty"))?;
        if init.iter().any(|p| p.contains("**")) || (last.contains("**") && *last != "**") {
            return Err(fail(&"`**` is allowed only as the whole last segment"));
        }
        let any_tail = *last == "**";
        let kept = if any_tail { init } else { parts.as_slice() };
        let segments = kept
            .iter()
            .map(|p| {
                if p.contains('*') {
                    Segment::Glob((*p).to_string())
                } else {
                    Segment::Literal((*p).to_string())
                }
            })
            .collect();
        Ok(Pattern {
            text: s.to_string(),
            trust_domain: authority.to_string(),
            segments,
            any_tail,
        })
    }

    /// Whether `id` is in the pattern's trust domain and its path matches segment by segment.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        let segments: Vec<&str> = id.segments().collect();
        self.matches_parts(id.trust_domain(), &segments)
    }

    /// [`Pattern::matches`] on an ID already split into its trust domain and path segments, so
    /// that matching one ID against many patterns splits it once.
    fn matches_parts(&self, trust_domain: &str, segments: &[&str]) -> bool {
        let count_fits = if self.any_tail {
            segments.len() > self.segments.len()
        } else {
            segments.len() == self.segments.len()
        };
        count_fits
            && trust_domain == self.trust_domain
            && self
                .segments
                .iter()
                .zip(segments)
                .all(|(pattern, segment)| pattern.matches(segment))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The first pattern, in order, that matches `id`.
pub fn first_match<'a>(patterns: &'a [Pattern], id: &SpiffeId) -> Option<&'a Pattern> {
    let segments: Vec<&str> = id.segments().collect();
    let trust_domain = id.trust_domain();
    patterns
        .iter()
        .find(|p| p.matches_parts(trust_domain, &segments))
}

/// `*` matches any run of bytes, possibly empty; every other byte matches itself.
///
/// Two pointers: walk pattern and text together; at a `*`, remember where it is and where the
/// text was; on a mismatch, go back to just after the last `*` and let it swallow one more byte
/// of text. Only the last `*` ever needs revisiting, because whatever an earlier `*` swallowed
/// more could equally be swallowed by the later one, so the loop runs at most
/// `text.len() × pattern.len()` steps.
fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // (position of the last `*` in the pattern, text position it is resumed from)
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match (pattern.get(p), text.get(t)) {
            (Some(b'*'), _) => {
                star = Some((p, t));
                p += 1;
            }
            (Some(a), Some(b)) if a == b => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    star = Some((star_p, star_t + 1));
                    p = star_p + 1;
                    t = star_t + 1;
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|tail| tail.iter().all(|&c| c == b'*'))
}

/// JSON Schema of patterns, SPIFFE IDs and trust domains (feature `schema`, for `mesh-filters
/// schema`): the rules of [`Pattern::parse`] and [`crate::id::parse`] as regular expressions.
#[cfg(feature = "schema")]
pub mod schema {
    use super::Pattern;
    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
    use serde::{Serialize, Serializer};
    use std::borrow::Cow;

    /// A trust domain: 1 to 255 of `[a-z0-9._-]`.
    pub const TRUST_DOMAIN_PATTERN: &str = "^[a-z0-9._-]{1,255}$";

    /// A workload SPIFFE ID: `spiffe://`, a trust domain, then one or more `/`-separated
    /// segments of `[a-zA-Z0-9._-]` that are not `.` or `..`. (Plus: at most 2048 bytes.)
    pub const SPIFFE_ID_PATTERN: &str =
        r"^spiffe://[a-z0-9._-]{1,255}(/(\.{0,2}[a-zA-Z0-9_-]|\.{3})[a-zA-Z0-9._-]*)+$";

    /// A pattern: a SPIFFE ID whose path segments may also hold `*`. (Plus: at most 2048 bytes,
    /// and `**` only as the whole last segment: [`MISPLACED_DOUBLE_STAR`].)
    pub const PATTERN_PATTERN: &str =
        r"^spiffe://[a-z0-9._-]{1,255}(/(\.{0,2}[a-zA-Z0-9_*-]|\.{3})[a-zA-Z0-9._*-]*)+$";

    /// Matches a pattern whose `**` is anything but the whole last segment.
    pub const MISPLACED_DOUBLE_STAR: &str = r"[^/]\*\*|\*\*.";

    impl JsonSchema for Pattern {
        fn schema_name() -> Cow<'static, str> {
            "SpiffePattern".into()
        }
        fn schema_id() -> Cow<'static, str> {
            "mesh_spiffe_identity::pattern::Pattern".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "description": "A SPIFFE ID pattern: `spiffe://<trust-domain>/<path>`. `*` matches any run of characters within one path segment; `**` as the whole last segment matches one or more further segments. The trust domain is literal.",
                "examples": ["spiffe://mesh.local/ns/*/sa/auth", "spiffe://mesh.local/ns/prod/**"],
                "pattern": PATTERN_PATTERN,
                "maxLength": crate::id::MAX_ID_LEN,
                "not": {"pattern": MISPLACED_DOUBLE_STAR}
            })
        }
    }

    impl Serialize for Pattern {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(self.as_str())
        }
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
    use proptest::prelude::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute (proptest's #[test] too), so these
    // tests also run compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn pattern(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn check(p: &str, matching: &[&str], not_matching: &[&str]) {
        let p = pattern(p);
        for s in matching {
            assert!(p.matches(&id(s)), "{p} should match {s}");
        }
        for s in not_matching {
            assert!(!p.matches(&id(s)), "{p} should not match {s}");
        }
    }

    #[test]
    fn an_exact_pattern_matches_only_that_id() {
        check(
            "spiffe://td/ns/prod/sa/api",
            &["spiffe://td/ns/prod/sa/api"],
            &[
                "spiffe://td/ns/prod/sa",
                "spiffe://td/ns/prod/sa/api/x",
                "spiffe://td/ns/prod/sa/API",
                "spiffe://td/ns/prod/sa/apix",
                "spiffe://td2/ns/prod/sa/api",
            ],
        );
    }

    #[test]
    fn a_star_matches_exactly_one_whole_segment() {
        check(
            "spiffe://td/ns/*/sa/api",
            &["spiffe://td/ns/prod/sa/api", "spiffe://td/ns/x/sa/api"],
            &[
                "spiffe://td/ns/sa/api",
                "spiffe://td/ns/a/b/sa/api",
                "spiffe://td/ns/prod/sa/web",
            ],
        );
    }

    #[test]
    fn a_star_combines_with_literal_text_in_a_segment() {
        check(
            "spiffe://td/ns/*/sa/api-*",
            &[
                "spiffe://td/ns/prod/sa/api-",
                "spiffe://td/ns/prod/sa/api-v2",
                "spiffe://td/ns/prod/sa/api-a-b.c_d",
            ],
            &[
                "spiffe://td/ns/prod/sa/api",
                "spiffe://td/ns/prod/sa/xapi-v2",
                "spiffe://td/ns/prod/sa/api-v2/x",
                "spiffe://td/ns/prod/sa/API-v2",
            ],
        );
        check(
            "spiffe://td/*-api-*.v*",
            &[
                "spiffe://td/a-api-b.v1",
                "spiffe://td/-api-.v",
                "spiffe://td/x-api-y-api-z.v.v2",
            ],
            &[
                "spiffe://td/a-api-b.w1",
                "spiffe://td/api-b.v1",
                "spiffe://td/a-api-b",
            ],
        );
    }

    #[test]
    fn a_final_double_star_matches_one_or_more_segments() {
        check(
            "spiffe://td/ns/prod/**",
            &[
                "spiffe://td/ns/prod/a",
                "spiffe://td/ns/prod/sa/api",
                "spiffe://td/ns/prod/a/b/c/d",
            ],
            &[
                "spiffe://td/ns/prod",
                "spiffe://td/ns/production/a",
                "spiffe://td/ns/x/a",
                "spiffe://other/ns/prod/a",
            ],
        );
        check(
            "spiffe://td/ns/*/sa/**",
            &["spiffe://td/ns/a/sa/b", "spiffe://td/ns/a/sa/b/c"],
            &["spiffe://td/ns/a/sa", "spiffe://td/ns/a/b/sa/c"],
        );
    }

    #[test]
    fn td_double_star_is_any_workload_of_that_trust_domain_only() {
        check(
            "spiffe://td/**",
            &["spiffe://td/a", "spiffe://td/ns/prod/sa/api"],
            &[
                "spiffe://td2/a",
                "spiffe://t/a",
                "spiffe://x.td/a",
                "spiffe://td.evil/a",
            ],
        );
    }

    #[test]
    fn another_trust_domain_never_matches() {
        for p in [
            "spiffe://td/a",
            "spiffe://td/*",
            "spiffe://td/**",
            "spiffe://td/*/**",
        ] {
            let p = pattern(p);
            for s in [
                "spiffe://other/a",
                "spiffe://td.other/a/b",
                "spiffe://tdx/a",
            ] {
                assert!(!p.matches(&id(s)), "{p} matched {s}");
            }
        }
    }

    #[test]
    fn invalid_patterns_are_refused_with_the_pattern_and_the_reason() {
        for (p, reason) in [
            ("", "empty"),
            ("td/a", "scheme"),
            ("https://td/a", "scheme"),
            (
                "spiffe://td/**/a",
                "`**` is allowed only as the whole last segment",
            ),
            (
                "spiffe://td/a**",
                "`**` is allowed only as the whole last segment",
            ),
            (
                "spiffe://td/***",
                "`**` is allowed only as the whole last segment",
            ),
            (
                "spiffe://td/a/**b/c",
                "`**` is allowed only as the whole last segment",
            ),
            ("spiffe://*/a", "trust domain cannot have wildcards"),
            ("spiffe://td*/a", "trust domain cannot have wildcards"),
            ("spiffe://*.td/**", "trust domain cannot have wildcards"),
            ("spiffe://**", "trust domain cannot have wildcards"),
            ("spiffe://TD/a", "uppercase"),
            ("spiffe://td:8443/a", "port"),
            ("spiffe://u@td/a", "userinfo"),
            ("spiffe://td", "path is empty"),
            ("spiffe://td/", "trailing slash"),
            ("spiffe://td/a/", "trailing slash"),
            ("spiffe://td/**/", "trailing slash"),
            ("spiffe://td//a", "empty segment"),
            ("spiffe://td/a/../b", "'.' or '..'"),
            ("spiffe://td/./*", "'.' or '..'"),
            ("spiffe://td/a%2Fb", "percent"),
            ("spiffe://td/a?b", "query"),
            ("spiffe://td/a#b", "fragment"),
            ("spiffe://td/a b", "character outside"),
            ("spiffe://td/a/[ab]", "character outside"),
            ("spiffe://td/a/?", "query"),
        ] {
            let e = Pattern::parse(p).expect_err(p);
            assert!(e.starts_with(&format!("invalid pattern {p:?}: ")), "{e}");
            assert!(e.contains(reason), "{p:?}: {e} (wanted {reason:?})");
        }
        let long = format!("spiffe://td/{}", "*".repeat(2040));
        assert!(Pattern::parse(&long)
            .unwrap_err()
            .contains("longer than 2048 bytes"));
    }

    #[test]
    fn a_pattern_keeps_its_text() {
        let p = pattern("spiffe://td/ns/*/sa/**");
        assert_eq!(p.as_str(), "spiffe://td/ns/*/sa/**");
        assert_eq!(p.to_string(), "spiffe://td/ns/*/sa/**");
    }

    #[test]
    fn first_match_returns_the_first_matching_pattern_in_order() {
        let rules = [
            pattern("spiffe://td/a/b"),
            pattern("spiffe://td/a/*"),
            pattern("spiffe://td/**"),
        ];
        let hit = |s: &str| first_match(&rules, &id(s)).map(Pattern::as_str);
        assert_eq!(hit("spiffe://td/a/b"), Some("spiffe://td/a/b"));
        assert_eq!(hit("spiffe://td/a/c"), Some("spiffe://td/a/*"));
        assert_eq!(hit("spiffe://td/x/y/z"), Some("spiffe://td/**"));
        assert_eq!(hit("spiffe://other/a/b"), None);
        assert_eq!(first_match(&[], &id("spiffe://td/a")), None);
    }

    #[test]
    fn many_stars_in_one_segment_do_not_backtrack_exponentially() {
        // A classic exponential case for recursive globbing: (*a)^n against a^m b.
        let p = format!("spiffe://td/{}", "*a".repeat(500));
        let p = pattern(&p);
        let s = format!("spiffe://td/{}b", "a".repeat(2000));
        assert!(!p.matches(&id(&s)));
        let s = format!("spiffe://td/{}", "a".repeat(2000));
        assert!(p.matches(&id(&s)));
    }

    #[test]
    fn glob_handles_edge_cases() {
        for (p, t, want) in [
            ("*", "", true),
            ("*", "abc", true),
            ("", "", true),
            ("", "a", false),
            ("a", "", false),
            ("a*", "a", true),
            ("*a", "ba", true),
            ("*a", "ab", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("**", "x", true),
            ("*ab", "aab", true),
            ("a*a", "a", false),
        ] {
            assert_eq!(
                glob_matches(p.as_bytes(), t.as_bytes()),
                want,
                "{p:?} vs {t:?}"
            );
        }
    }

    /// Obviously-correct (and exponential) reference for the glob.
    fn glob_reference(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len()).any(|i| glob_reference(rest, &t[i..])),
            Some((c, rest)) => t.first() == Some(c) && glob_reference(rest, &t[1..]),
        }
    }

    fn valid_id() -> impl Strategy<Value = String> {
        let segment =
            "[a-zA-Z0-9._-]{1,12}".prop_filter("not a dot segment", |s| s != "." && s != "..");
        ("[a-z0-9._-]{1,20}", prop::collection::vec(segment, 1..6))
            .prop_map(|(td, segments)| format!("spiffe://{td}/{}", segments.join("/")))
    }

    proptest! {
        #[test]
        fn a_pattern_with_one_segment_replaced_by_a_star_matches_the_id(s in valid_id(), at in any::<prop::sample::Index>()) {
            let id = id(&s);
            let mut segments: Vec<&str> = id.segments().collect();
            let at = at.index(segments.len());
            segments[at] = "*";
            let p = pattern(&format!("spiffe://{}/{}", id.trust_domain(), segments.join("/")));
            prop_assert!(p.matches(&id), "{} should match {}", p, id);
        }

        #[test]
        fn a_pattern_with_a_star_inside_a_segment_matches_the_id(s in valid_id(), at in any::<prop::sample::Index>(), from in any::<prop::sample::Index>(), len in 0usize..4) {
            let id = id(&s);
            let mut segments: Vec<String> = id.segments().map(str::to_string).collect();
            let at = at.index(segments.len());
            let seg = &segments[at];
            let from = from.index(seg.len() + 1);
            let to = (from + len).min(seg.len());
            segments[at] = format!("{}*{}", &seg[..from], &seg[to..]);
            let text = format!("spiffe://{}/{}", id.trust_domain(), segments.join("/"));
            if let Ok(p) = Pattern::parse(&text) {
                prop_assert!(p.matches(&id), "{} should match {}", p, id);
            } else {
                // Only a `*` next to another one can make it invalid (`**` in a segment).
                prop_assert!(text.contains("**"), "{text}");
            }
        }

        #[test]
        fn the_id_itself_its_trust_domain_and_any_prefix_with_double_star_match(s in valid_id(), keep in any::<prop::sample::Index>()) {
            let id = id(&s);
            let itself = pattern(&s);
            prop_assert!(itself.matches(&id));
            let whole_td = pattern(&format!("spiffe://{}/**", id.trust_domain()));
            prop_assert!(whole_td.matches(&id));
            let segments: Vec<&str> = id.segments().collect();
            let keep = keep.index(segments.len());
            let prefix: String = segments[..keep].iter().map(|s| format!("/{s}")).collect();
            let p = pattern(&format!("spiffe://{}{prefix}/**", id.trust_domain()));
            prop_assert!(p.matches(&id), "{} should match {}", p, id);
            // ... but `/**` needs one segment more than it names.
            let all: String = segments.iter().map(|s| format!("/{s}")).collect();
            let p = pattern(&format!("spiffe://{}{all}/**", id.trust_domain()));
            prop_assert!(!p.matches(&id), "{} should not match {}", p, id);
        }

        #[test]
        fn a_pattern_of_another_trust_domain_never_matches(s in valid_id(), other in "[a-z0-9._-]{1,20}") {
            let id = id(&s);
            prop_assume!(other != id.trust_domain());
            let whole_td = pattern(&format!("spiffe://{other}/**"));
            prop_assert!(!whole_td.matches(&id));
            let same_path = pattern(&format!("spiffe://{other}{}", id.path()));
            prop_assert!(!same_path.matches(&id));
        }

        #[test]
        fn the_glob_agrees_with_the_reference(p in "[ab*]{0,8}", t in "[ab]{0,10}") {
            prop_assert_eq!(glob_matches(p.as_bytes(), t.as_bytes()), glob_reference(p.as_bytes(), t.as_bytes()));
        }

        #[test]
        fn parse_never_panics_on_arbitrary_strings(s in any::<String>()) {
            let _ = Pattern::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_near_misses_and_what_it_accepts_matches_sanely(s in "spiffe://[a-z*./:%]{0,6}/[a-zA-Z*./%?_ -]{0,30}", t in valid_id()) {
            if let Ok(p) = Pattern::parse(&s) {
                let _ = p.matches(&id(&t));
            }
        }
    }
}
