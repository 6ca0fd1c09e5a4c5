//! `uber-trace-id` (Jaeger): `parse_uber_trace_id` never panics; a context it reads is valid,
//! and `format_uber_trace_id` writes it (with or without a parent, at most 69 characters) so
//! that it reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_trace_propagation::formats::{format_uber_trace_id, parse_uber_trace_id, Sampling};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = parse_uber_trace_id(s) else {
        return;
    };
    assert!(c.is_valid(), "{s:?}");
    assert!(!c.random, "{s:?}");
    assert_ne!(c.sampling, Sampling::Deferred, "{s:?}");
    for parent in [None, Some(c.span_id)] {
        let written = format_uber_trace_id(&c, parent);
        assert!(written.len() <= 69, "{written:?}");
        assert_eq!(parse_uber_trace_id(&written), Ok(c), "{s:?} -> {written:?}");
    }
});
