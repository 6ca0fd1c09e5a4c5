//! `b3` single header: `parse_b3` never panics; a context it reads is valid and written back by
//! `format_b3` (at most 68 characters) reads as the same context and parent; a lone sampling
//! state is never a deferred decision.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_trace_propagation::formats::{format_b3, parse_b3, Sampling, B3};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match parse_b3(s) {
        Err(_) => {}
        Ok(B3::SamplingOnly { sampling, debug }) => {
            assert_ne!(sampling, Sampling::Deferred, "{s:?}");
            assert!(!debug || sampling == Sampling::Sampled, "{s:?}");
        }
        Ok(B3::Context {
            context, parent, ..
        }) => {
            assert!(context.is_valid(), "{s:?}");
            assert!(parent.is_none_or(|p| p.is_valid()), "{s:?}");
            let written = format_b3(&context, parent);
            assert!(written.len() <= 68, "{written:?}");
            match parse_b3(&written) {
                Ok(B3::Context {
                    context: c2,
                    parent: p2,
                    trace_id_64: false,
                }) => {
                    assert_eq!(c2, context, "{s:?} -> {written:?}");
                    assert_eq!(p2, parent, "{s:?} -> {written:?}");
                }
                other => panic!("{s:?} -> {written:?} -> {other:?}"),
            }
        }
    }
});
