//! `tracestate` (W3C): `TraceState::parse_lines` never panics; what it keeps is at most 32
//! members, keys unique, each a whole member of the input in the input's order; it accounts for
//! every member it leaves out; and what it writes parses back to the same list, nothing dropped.
//!
//! Input: field lines separated by `\n` (a request's `tracestate` lines).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_trace_propagation::formats::{TraceState, MAX_TRACESTATE_MEMBERS};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = s.split('\n').collect();
    let ts = TraceState::parse_lines(lines.iter().copied());
    assert!(
        ts.len() <= MAX_TRACESTATE_MEMBERS as usize,
        "{} members",
        ts.len()
    );

    // Every non-empty member of the input is either kept or counted as dropped.
    let input: Vec<&str> = lines
        .iter()
        .flat_map(|l| l.split(','))
        .map(|m| m.trim_matches(|c| c == ' ' || c == '\t'))
        .filter(|m| !m.is_empty())
        .collect();
    assert_eq!(ts.len() + ts.dropped() as usize, input.len(), "{s:?}");

    // Kept members are whole input members, in order, keys unique.
    let mut all = input.iter();
    let mut keys = std::collections::BTreeSet::new();
    for (k, v) in ts.iter() {
        let member = format!("{k}={v}");
        assert!(all.any(|m| *m == member), "{member:?} not from {s:?}");
        assert!(keys.insert(k), "{k:?} twice in {s:?}");
    }

    // One line, as the filter writes it, reads back the same, nothing dropped.
    let written = ts.to_string();
    assert!(!written.contains('\n'));
    let again = TraceState::parse(&written);
    assert!(
        again.iter().eq(ts.iter()) && again.dropped() == 0,
        "{s:?} -> {written:?}"
    );
});
