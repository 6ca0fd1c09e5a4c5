//! `traceparent` (W3C): `parse_traceparent` never panics; what it accepts is a valid context
//! that `format_traceparent` writes as a 55-character version-00 value reading back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_trace_propagation::formats::{format_traceparent, parse_traceparent};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = parse_traceparent(s) {
        assert!(c.is_valid(), "{s:?}");
        assert!(!c.debug, "{s:?}");
        let written = format_traceparent(&c);
        assert_eq!(written.len(), 55, "{written:?}");
        assert!(written.starts_with("00-"), "{written:?}");
        assert_eq!(parse_traceparent(&written), Ok(c), "{s:?} -> {written:?}");
    }
});
