//! Configuration durations (mesh_kit::values): `parse_duration` never panics, never returns
//! more than `MAX_DURATION`, and `format_duration` of what it returns parses back to the same
//! duration.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_kit::values::{format_duration, parse_duration, MAX_DURATION};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = parse_duration(s) {
        assert!(d <= MAX_DURATION, "{s:?} -> {d:?}");
        let written = format_duration(d);
        assert_eq!(parse_duration(&written), Ok(d), "{s:?} -> {written:?}");
    }
});
