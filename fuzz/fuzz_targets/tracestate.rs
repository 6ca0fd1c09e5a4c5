//! `tracestate` (W3C): `TraceState::parse` never panics; a parsed list prints back to a value
//! that parses to the same list; `limited` keeps at most 32 members, accounts for every member
//! it removes, and writes a valid list.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_trace_propagation::formats::{TraceState, MAX_TRACESTATE_MEMBERS};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ts) = TraceState::parse(s) else {
        return;
    };
    let written = ts.to_string();
    assert_eq!(
        TraceState::parse(&written).as_ref(),
        Ok(&ts),
        "{s:?} -> {written:?}"
    );

    let (limited, dropped) = ts.limited();
    let kept = TraceState::parse(&limited).unwrap_or_else(|e| panic!("{limited:?}: {e}"));
    assert!(
        kept.len() <= MAX_TRACESTATE_MEMBERS as usize,
        "{} members",
        kept.len()
    );
    assert_eq!(
        kept.len() + dropped as usize,
        ts.len(),
        "{s:?} -> {limited:?}"
    );
    // Whole entries, in their order: the kept members are a subsequence of the parsed ones.
    let mut all = ts.iter();
    for member in kept.iter() {
        assert!(all.any(|m| m == member), "{member:?} not from {s:?}");
    }
    if ts.len() <= MAX_TRACESTATE_MEMBERS as usize {
        assert_eq!(dropped, 0);
        assert_eq!(limited, written);
    }
});
