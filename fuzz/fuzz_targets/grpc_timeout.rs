//! `grpc-timeout` (mesh_deadline::grpc_timeout): `parse` never panics; what it accepts formats
//! back to the same duration; `format` of any duration is at most 9 characters, parses back,
//! and never lengthens the deadline. Also the deadline filter's reading of every honoured header
//! (`filter::parse_deadline`: `grpc-timeout`, or whole milliseconds) and the budget it derives
//! from an incoming deadline (`budget::decide` with the demo route's limits), which never
//! exceeds the incoming deadline nor the route timeout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_deadline::budget::{decide, millis_floor, Decision, Limits};
use mesh_deadline::filter::parse_deadline;
use mesh_deadline::grpc_timeout::{format, parse};
use std::time::Duration;

/// The limits of the demo's `auth` route: `timeout: 5s`, `min_budget: 5ms`.
const LIMITS: Limits = Limits {
    timeout: Duration::from_secs(5),
    offset: Duration::from_millis(20),
    min_budget: Duration::from_millis(5),
    per_try_timeout: Some(Duration::from_secs(1)),
};

fn budget_within(incoming: Duration) {
    match decide(&LIMITS, Some(incoming), Duration::from_micros(300)) {
        Decision::Expired { remaining } => assert!(remaining < LIMITS.min_budget),
        Decision::Proceed { budget, per_try } => {
            assert!(
                budget <= incoming && budget <= LIMITS.timeout,
                "{incoming:?}"
            );
            assert!(budget >= LIMITS.min_budget);
            assert!(per_try.is_some_and(|p| p <= budget));
            assert!(millis_floor(budget) >= 1);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let grpc = parse(s);
        assert_eq!(parse_deadline("grpc-timeout", s), grpc);
        if let Some(d) = grpc {
            let written = format(d);
            assert!(written.len() <= 9, "{s:?} -> {written:?}");
            assert_eq!(parse(&written), Some(d), "{s:?} -> {written:?}");
            budget_within(d);
        }
        if let Some(d) = parse_deadline("x-envoy-expected-rq-timeout-ms", s) {
            assert_eq!(d.subsec_nanos() % 1_000_000, 0, "{s:?}");
            let digits = s.trim_start_matches('0');
            let digits = if digits.is_empty() { "0" } else { digits };
            assert_eq!(d.as_millis().to_string(), digits, "{s:?}");
            budget_within(d);
        }
    }
    // The same bytes as a duration: seconds (8 bytes) and nanoseconds (4 bytes).
    if let Some((secs, rest)) = data.split_first_chunk::<8>() {
        let nanos = rest
            .first_chunk::<4>()
            .map_or(0, |n| u32::from_le_bytes(*n) % 1_000_000_000);
        let d = Duration::new(u64::from_le_bytes(*secs), nanos);
        let written = format(d);
        assert!(written.len() <= 9, "{d:?} -> {written:?}");
        let back = parse(&written).unwrap_or_else(|| panic!("{d:?} -> {written:?} unreadable"));
        assert!(back <= d, "{d:?} -> {written:?} -> {back:?}");
    }
});
