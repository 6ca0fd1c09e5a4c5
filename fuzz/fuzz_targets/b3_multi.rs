//! `x-b3-*` multiple headers: `parse_b3_multi` never panics whatever subset of the five headers
//! is present; a context it reads, written back by `format_b3_multi`, reads the same.
//!
//! Input: the first byte says which headers are present (bit i: header i of `NAMES`), the rest
//! is their values in that order, separated by `\n`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_trace_propagation::formats::b3::{
    X_B3_FLAGS, X_B3_PARENTSPANID, X_B3_SAMPLED, X_B3_SPANID, X_B3_TRACEID,
};
use mesh_trace_propagation::formats::{format_b3_multi, parse_b3_multi, Sampling, B3};

const NAMES: [&str; 5] = [
    X_B3_TRACEID,
    X_B3_SPANID,
    X_B3_PARENTSPANID,
    X_B3_SAMPLED,
    X_B3_FLAGS,
];

fuzz_target!(|data: &[u8]| {
    let Some((&present, rest)) = data.split_first() else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let mut values = rest.split('\n');
    let headers: Vec<(&'static str, &str)> = NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| present & (1 << i) != 0)
        .map(|(_, &name)| (name, values.next().unwrap_or("")))
        .collect();
    let get = |name: &'static str| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    match parse_b3_multi(get) {
        Err(_) => {}
        Ok(B3::SamplingOnly { sampling, debug }) => {
            assert_ne!(sampling, Sampling::Deferred, "{headers:?}");
            assert!(!debug || sampling == Sampling::Sampled, "{headers:?}");
        }
        Ok(B3::Context {
            context, parent, ..
        }) => {
            assert!(context.is_valid(), "{headers:?}");
            assert!(
                !context.debug || context.sampling == Sampling::Sampled,
                "{headers:?}"
            );
            let written = format_b3_multi(&context, parent);
            let get2 = |name: &'static str| {
                written
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.as_str())
            };
            match parse_b3_multi(get2) {
                Ok(B3::Context {
                    context: c2,
                    parent: p2,
                    trace_id_64: false,
                }) => {
                    assert_eq!(c2, context, "{headers:?} -> {written:?}");
                    assert_eq!(p2, parent, "{headers:?} -> {written:?}");
                }
                other => panic!("{headers:?} -> {written:?} -> {other:?}"),
            }
        }
    }
});
