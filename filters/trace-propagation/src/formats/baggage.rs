//! W3C Baggage: the `baggage` header, passed on within the specification's limits.
//!
//! The rules are those of W3C Baggage (<https://www.w3.org/TR/baggage/>, "Header Content" and
//! "Limits"). The filter does not interpret baggage; it forwards it, and
//! [`limit_baggage`] decides what is forwarded:
//!
//! - the value is a list of `list-member`s separated by `,`; SP and HTAB around a member are
//!   ignored. "Multiple baggage headers are allowed. Values can be combined in a single header
//!   according to RFC 7230": [`limit_baggage_lines`] reads every field line, in order, as one
//!   list, the limits apply to them combined, and the result is one value (the filter writes it
//!   as one field when the request had several);
//! - a member is `key OWS "=" OWS value *( OWS ";" OWS property )`, a property is
//!   `key OWS "=" OWS value` or `key OWS`; a key is an RFC 9110 `token`, a value is zero or more
//!   `baggage-octet`s (`%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E`: printable ASCII except
//!   space, `"`, `,`, `;` and `\`, so non-ASCII must be percent-encoded). `=` may appear in a
//!   value ("Parsers MUST NOT assume that the equal sign is only used to separate key and
//!   value"), so a member is split at its first `=`;
//! - a member that breaks this grammar is dropped and counted as dropped ("Mutating baggage": "If a
//!   system determines that the value of a baggage entry is not in the format defined in this
//!   specification, it MAY remove that entry"); an empty member (`a=1,,b=2`, a trailing `,`)
//!   carries nothing and is skipped without being counted;
//! - limits: at most [`MAX_BAGGAGE_MEMBERS`] (64) members and [`MAX_BAGGAGE_BYTES`] (8192) bytes
//!   for the whole value forwarded, commas included. "Limits" requires propagating everything
//!   within both limits and allows dropping members beyond them, but never part of one ("MUST
//!   NOT propagate any partial list-members"). Members are kept in order while both limits
//!   hold; the first valid member that would break one, and every member after it, is dropped
//!   whole (members are removed from the end);
//! - kept members are forwarded as they were written (without the whitespace around them),
//!   joined with `,`; duplicate keys are kept ("Uniqueness of keys … is not guaranteed").

use super::trim_ows;

/// The `baggage` header's name.
pub const BAGGAGE_HEADER: &str = "baggage";
/// The most baggage members forwarded.
pub const MAX_BAGGAGE_MEMBERS: u32 = 64;
/// The most bytes of baggage forwarded, members and commas.
pub const MAX_BAGGAGE_BYTES: usize = 8192;

/// The `baggage` value to forward, and how many members were dropped (malformed ones and those
/// beyond the limits). The result is empty when nothing is kept: send no header then.
pub fn limit_baggage(value: &str) -> (String, u32) {
    limit_baggage_lines([value])
}

/// [`limit_baggage`] over every `baggage` field line of a request, in order, as one list: the
/// same as the lines joined with `,`.
pub fn limit_baggage_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> (String, u32) {
    let max_members = usize::try_from(MAX_BAGGAGE_MEMBERS).unwrap_or(usize::MAX);
    let mut out = String::new();
    let mut kept = 0usize;
    let mut dropped = 0u32;
    let mut full = false;
    for raw in lines.into_iter().flat_map(|line| line.split(',')) {
        let member = trim_ows(raw);
        if member.is_empty() {
            continue;
        }
        if full || !is_member(member) {
            dropped = dropped.saturating_add(1);
            continue;
        }
        let separator = usize::from(kept > 0);
        if kept >= max_members || out.len() + separator + member.len() > MAX_BAGGAGE_BYTES {
            full = true;
            dropped = dropped.saturating_add(1);
            continue;
        }
        if separator == 1 {
            out.push(',');
        }
        out.push_str(member);
        kept += 1;
    }
    (out, dropped)
}

/// `key OWS "=" OWS value *( OWS ";" OWS property )`, already trimmed of outer OWS.
fn is_member(member: &str) -> bool {
    let mut parts = member.split(';');
    let first = parts.next().unwrap_or_default();
    let pair = match first.split_once('=') {
        Some((key, value)) => is_token(trim_ows(key)) && is_value(trim_ows(value)),
        None => false,
    };
    pair && parts.all(|property| match trim_ows(property).split_once('=') {
        Some((key, value)) => is_token(trim_ows(key)) && is_value(trim_ows(value)),
        None => is_token(trim_ows(property)),
    })
}

/// RFC 9110 §5.6.2 `token = 1*tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

/// `*baggage-octet`.
fn is_value(s: &str) -> bool {
    s.bytes()
        .all(|c| matches!(c, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e))
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

    #[test]
    fn keeps_the_spec_examples_whole() {
        let spec = "key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue";
        assert_eq!(
            limit_baggage(spec),
            (
                "key1=value1;property1;property2,key2 = value2,key3=value3; propertyKey=propertyValue".to_string(),
                0
            )
        );
        let single = "userId=alice,serverNode=DF%2028,isProduction=false";
        assert_eq!(limit_baggage(single), (single.to_string(), 0));
        // Two header fields joined with ',' are one list.
        assert_eq!(
            limit_baggage("userId =   alice, serverNode = DF%2028, isProduction = false"),
            (
                "userId =   alice,serverNode = DF%2028,isProduction = false".to_string(),
                0
            )
        );
    }

    #[test]
    fn accepts_equal_signs_empty_values_and_valueless_properties() {
        for ok in [
            "k=a=b",
            "k=",
            "k= ;p",
            "k=v;p=",
            "k=v ; p = q ; r",
            "k=%E2%82%AC",
            "!#$%&'*+-.^_`|~09AZaz=v",
        ] {
            assert_eq!(limit_baggage(ok), (ok.to_string(), 0), "{ok:?}");
        }
    }

    #[test]
    fn drops_and_counts_malformed_members_only() {
        let (out, dropped) = limit_baggage("a=1,b,c=2,=3,d e=4,f=\"x\",g=1;,h=é,i=x y,j=5");
        assert_eq!(out, "a=1,c=2,j=5");
        assert_eq!(dropped, 7);
        for bad in [
            "k",
            "=v",
            "k=v\\",
            "k=v;",
            "k=v;;p",
            "k=v;=x",
            "k(=v",
            "k=\tv\tx",
            "k=v;p=\"q\"",
        ] {
            assert_eq!(limit_baggage(bad), (String::new(), 1), "{bad:?}");
        }
    }

    #[test]
    fn several_lines_are_one_list_and_the_limits_apply_to_them_combined() {
        assert_eq!(
            limit_baggage_lines(["userId=alice", "serverNode=DF%2028,isProduction=false"]),
            (
                "userId=alice,serverNode=DF%2028,isProduction=false".to_string(),
                0
            )
        );
        assert_eq!(
            limit_baggage_lines(["", "a=1", " "]),
            ("a=1".to_string(), 0)
        );
        // 40 + 40 members on two lines: 64 pass, the last 16 are dropped whole.
        let members: Vec<String> = (0..80).map(|i| format!("k{i}=v{i}")).collect();
        let (out, dropped) = limit_baggage_lines(
            [members[..40].join(","), members[40..].join(",")]
                .iter()
                .map(String::as_str),
        );
        assert_eq!((out, dropped), (members[..64].join(","), 16));
        // Two lines of 5000 bytes: the second does not fit in 8192.
        let a = format!("a={}", "x".repeat(4998));
        let b = format!("b={}", "y".repeat(4998));
        assert_eq!(
            limit_baggage_lines([a.as_str(), b.as_str()]),
            (a.clone(), 1)
        );
    }

    #[test]
    fn empty_members_are_skipped_without_counting() {
        assert_eq!(limit_baggage(""), (String::new(), 0));
        assert_eq!(limit_baggage(" , ,\t"), (String::new(), 0));
        assert_eq!(limit_baggage("a=1,,b=2,"), ("a=1,b=2".to_string(), 0));
    }

    #[test]
    fn sixty_five_members_become_sixty_four() {
        let members: Vec<String> = (0..65).map(|i| format!("k{i}=v{i}")).collect();
        let (out, dropped) = limit_baggage(&members.join(","));
        assert_eq!(dropped, 1);
        assert_eq!(out, members[..64].join(","));
        let (out, dropped) = limit_baggage(&members[..64].join(","));
        assert_eq!((out.split(',').count(), dropped), (64, 0));
    }

    #[test]
    fn exactly_8192_bytes_pass_and_one_more_drops_the_last_member() {
        // One member of 8192 bytes: "a=" and 8190 value bytes.
        let one = format!("a={}", "0123456789".repeat(819));
        assert_eq!(one.len(), 8192);
        assert_eq!(limit_baggage(&one), (one.clone(), 0));
        let (out, dropped) = limit_baggage(&format!("{one}x"));
        assert_eq!((out.as_str(), dropped), ("", 1));
        // Two members whose total with the comma is exactly 8192.
        let first = format!("a={}", "x".repeat(4094)); // 4096
        let second = format!("b={}", "y".repeat(4093)); // 4095, + 1 comma = 8192
        let both = format!("{first},{second}");
        assert_eq!(both.len(), 8192);
        assert_eq!(limit_baggage(&both), (both.clone(), 0));
        let (out, dropped) = limit_baggage(&format!("{first},{second}y,c=1"));
        assert_eq!((out, dropped), (first.clone(), 2));
    }

    #[test]
    fn members_after_the_first_one_that_does_not_fit_are_dropped_too() {
        let big = format!("big={}", "z".repeat(8189)); // 8193 bytes: never fits
        let (out, dropped) = limit_baggage(&format!("a=1,{big},b=2,c=3"));
        assert_eq!((out.as_str(), dropped), ("a=1", 3));
    }

    /// A generated member: valid (possibly with properties), or malformed.
    fn member() -> impl Strategy<Value = String> {
        let token = "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}";
        let value = "[!#-+\\--:<-\\[\\]-~]{0,300}";
        prop_oneof![
            4 => (token, value, proptest::collection::vec((token, proptest::option::of(value)), 0..3)).prop_map(|(k, v, props)| {
                let mut m = format!("{k}={v}");
                for (pk, pv) in props {
                    m.push(';');
                    m.push_str(&pk);
                    if let Some(pv) = pv {
                        m.push('=');
                        m.push_str(&pv);
                    }
                }
                m
            }),
            1 => "[^,]{0,40}",
        ]
    }

    proptest! {
        #[test]
        fn limit_baggage_never_panics(s in any::<String>(), t in any::<String>()) {
            let _ = limit_baggage(&s);
            let _ = limit_baggage_lines([s.as_str(), t.as_str()]);
        }

        #[test]
        fn lines_limit_as_their_values_joined_with_commas(
            lines in proptest::collection::vec(proptest::collection::vec(member(), 0..30), 0..5),
        ) {
            let lines: Vec<String> = lines.iter().map(|l| l.join(",")).collect();
            prop_assert_eq!(
                limit_baggage_lines(lines.iter().map(String::as_str)),
                limit_baggage(&lines.join(","))
            );
        }

        #[test]
        fn limits_always_hold_and_the_result_passes_unchanged(
            members in proptest::collection::vec(member(), 0..120),
            ows in "[ \t]{0,2}",
        ) {
            let header = members.join(&format!("{ows},{ows}"));
            let (out, dropped) = limit_baggage(&header);
            prop_assert!(out.len() <= MAX_BAGGAGE_BYTES);
            let kept = if out.is_empty() { 0 } else { out.split(',').count() };
            prop_assert!(kept <= 64);
            let non_empty = header.split(',').filter(|m| !trim_ows(m).is_empty()).count();
            prop_assert_eq!(kept + dropped as usize, non_empty);
            // Every kept member is one of the input's, whole, in order.
            let mut inputs = header.split(',').map(trim_ows);
            for m in out.split(',').filter(|m| !m.is_empty()) {
                prop_assert!(inputs.any(|i| i == m), "{:?} is not a whole input member", m);
            }
            prop_assert_eq!(limit_baggage(&out), (out.clone(), 0));
        }
    }
}
