//! SPIFFE ID patterns (mesh_spiffe_identity::pattern): `Pattern::parse` never panics; a pattern
//! keeps its text, matches its own ID (each `*` written as `x`), and `matches` / `first_match`
//! agree with a plain reference matcher (dynamic-programming glob per segment) on every ID.
//!
//! Input: the pattern, `\n`, then the ID to match.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_spiffe_identity::id::{parse, SpiffeId};
use mesh_spiffe_identity::pattern::{first_match, Pattern};

/// `*` matches any run of bytes, every other byte itself.
fn glob(p: &[u8], t: &[u8]) -> bool {
    // m[j]: p[..i] matches t[..j]
    let mut m = vec![false; t.len() + 1];
    m[0] = true;
    for &pc in p {
        let mut next = vec![false; t.len() + 1];
        if pc == b'*' {
            let mut any = false;
            for j in 0..=t.len() {
                any |= m[j];
                next[j] = any;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = m[j - 1] && t[j - 1] == pc;
            }
        }
        m = next;
    }
    m[t.len()]
}

fn reference(pattern: &str, id: &SpiffeId) -> bool {
    let rest = &pattern["spiffe://".len()..];
    let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut parts: Vec<&str> = path.split('/').skip(1).collect();
    let any_tail = parts.last() == Some(&"**");
    if any_tail {
        parts.pop();
    }
    let segments: Vec<&str> = id.segments().collect();
    let count_fits = if any_tail {
        segments.len() > parts.len()
    } else {
        segments.len() == parts.len()
    };
    count_fits
        && td == id.trust_domain()
        && parts
            .iter()
            .zip(&segments)
            .all(|(p, s)| glob(p.as_bytes(), s.as_bytes()))
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (text, id) = s.split_once('\n').unwrap_or((s, ""));
    let Ok(pattern) = Pattern::parse(text) else {
        return;
    };
    assert_eq!(pattern.as_str(), text);
    assert_eq!(pattern.to_string(), text);
    let own = parse(&text.replace('*', "x")).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(pattern.matches(&own), "{text:?} does not match {own}");
    if !text.contains('*') {
        assert_eq!(own.as_str(), text);
    }
    if let Ok(id) = parse(id) {
        let matches = pattern.matches(&id);
        assert_eq!(matches, reference(text, &id), "{text:?} on {id}");
        let patterns = [pattern];
        assert_eq!(first_match(&patterns, &id).is_some(), matches);
        if !text.contains('*') {
            assert_eq!(matches, id.as_str() == text, "{text:?} on {id}");
        }
    }
});
