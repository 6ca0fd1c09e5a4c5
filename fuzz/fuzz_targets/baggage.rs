//! `baggage` (W3C): `limit_baggage` never panics, never forwards more than 64 members or 8192
//! bytes, forwards only whole members of the input, and is idempotent (what it forwards passes
//! through it again unchanged, nothing dropped).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_trace_propagation::formats::{limit_baggage, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_MEMBERS};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (out, dropped) = limit_baggage(s);
    assert!(out.len() <= MAX_BAGGAGE_BYTES, "{} bytes", out.len());
    let members: Vec<&str> = if out.is_empty() {
        Vec::new()
    } else {
        out.split(',').collect()
    };
    assert!(
        members.len() <= MAX_BAGGAGE_MEMBERS as usize,
        "{} members",
        members.len()
    );
    let input: Vec<&str> = s
        .split(',')
        .map(|m| m.trim_matches(|c| c == ' ' || c == '\t'))
        .filter(|m| !m.is_empty())
        .collect();
    assert_eq!(
        members.len() + dropped as usize,
        input.len(),
        "{s:?} -> {out:?}"
    );
    let mut all = input.iter();
    for member in &members {
        assert!(
            all.any(|m| m == member),
            "{member:?} is not a member of {s:?}"
        );
    }
    assert_eq!(
        limit_baggage(&out),
        (out.clone(), 0),
        "not idempotent on {out:?}"
    );
});
