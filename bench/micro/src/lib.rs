//! Inputs of the policy micro-benchmarks (`cargo bench -p mesh-bench-micro`), kept here so they
//! are unit-tested: every input must take the path the benchmark claims to measure.
//!
//! The benchmarks (in `benches/policy.rs`) time the pure policy code that runs on every request,
//! natively, one call sequence per iteration:
//!
//! | benchmark | what one iteration does |
//! |---|---|
//! | `traceparent_parse_format` | parse a W3C `traceparent`, write it back |
//! | `spiffe_parse_match_50` | validate a SPIFFE ID, match it against 50 patterns (the last one matches) |
//! | `breaker_record_decide` | admit a request and record its outcome, failure-rate window on |
//! | `budget_deposit_withdraw` | deposit a request and reserve retries, settle with one retry made |
//! | `grpc_timeout_parse` | parse a `grpc-timeout` value |
//!
//! `make bench` copies the resulting ns per operation from
//! `target/criterion/<benchmark>/new/estimates.json` into BENCHMARKS.md.

use mesh_circuit_breaker::breaker;
use mesh_retry_budget::budget;
use mesh_spiffe_identity::pattern::Pattern;

/// A sampled version-00 `traceparent` with the random flag.
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";

/// The ID that the 50 patterns are matched against: only the last pattern matches it.
pub const SPIFFE_ID: &str = "spiffe://mesh.local/ns/prod/sa/checkout-api";

/// A `grpc-timeout` value as gRPC clients send it.
pub const GRPC_TIMEOUT: &str = "2500m";

/// The names of the benchmarks, as criterion stores them under `target/criterion/`.
pub const BENCHMARKS: [&str; 5] = [
    "traceparent_parse_format",
    "spiffe_parse_match_50",
    "breaker_record_decide",
    "budget_deposit_withdraw",
    "grpc_timeout_parse",
];

/// The texts of 50 patterns, a mix of exact IDs, `*` segments, globs within a segment and
/// trailing `/**`, none of which matches [`SPIFFE_ID`] except the last
/// (`spiffe://mesh.local/ns/*/sa/checkout-*`).
pub fn pattern_texts() -> Vec<String> {
    let mut out = Vec::with_capacity(50);
    for i in 0..49 {
        out.push(match i % 4 {
            0 => format!("spiffe://mesh.local/ns/default/sa/service-{i}"),
            1 => format!("spiffe://mesh.local/ns/*/sa/worker-{i}"),
            2 => format!("spiffe://mesh.local/ns/team-{i}/**"),
            _ => format!("spiffe://mesh.local/ns/prod/sa/api-{i}-*"),
        });
    }
    out.push("spiffe://mesh.local/ns/*/sa/checkout-*".to_owned());
    out
}

/// The 50 patterns, parsed; patterns that do not parse are left out (a unit test checks that
/// there are none).
pub fn patterns() -> Vec<Pattern> {
    pattern_texts()
        .iter()
        .filter_map(|p| Pattern::parse(p).ok())
        .collect()
}

/// Breaker thresholds as a service would set them: 5 consecutive failures, or a 50 % failure
/// rate over a 10 s window of at least 20 calls (so every outcome is counted in the window).
pub fn breaker_settings() -> breaker::Settings {
    breaker::Settings {
        consecutive_failures: 5,
        failure_rate: Some(0.5),
        slow_call_rate: None,
        window_us: 10_000_000,
        minimum_requests: 20,
        open_us: 60_000_000,
        max_open_us: 60_000_000,
        half_open_requests: 3,
    }
}

/// The retry budget's defaults: ratio 0.2, 10 retries/s floor, 10 s ttl, 3 retries per request.
pub fn budget_settings() -> budget::Settings {
    budget::Settings {
        ratio: 0.2,
        min_per_second: 10,
        ttl_us: 10_000_000,
        max_retries: 3,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mesh_spiffe_identity::pattern::first_match;

    #[test]
    fn all_fifty_patterns_parse_and_only_the_last_matches() {
        let patterns = patterns();
        assert_eq!(patterns.len(), 50);
        let id = mesh_spiffe_identity::id::parse(SPIFFE_ID).unwrap();
        let matching: Vec<_> = patterns.iter().filter(|p| p.matches(&id)).collect();
        assert_eq!(matching.len(), 1);
        assert_eq!(
            first_match(&patterns, &id).map(Pattern::as_str),
            Some("spiffe://mesh.local/ns/*/sa/checkout-*")
        );
    }

    #[test]
    fn the_traceparent_round_trips() {
        use mesh_trace_propagation::formats::{format_traceparent, parse_traceparent};
        let ctx = parse_traceparent(TRACEPARENT).unwrap();
        assert_eq!(format_traceparent(&ctx), TRACEPARENT);
    }

    #[test]
    fn the_grpc_timeout_parses() {
        assert_eq!(
            mesh_deadline::grpc_timeout::parse(GRPC_TIMEOUT),
            Some(std::time::Duration::from_millis(2500))
        );
    }

    #[test]
    fn a_healthy_breaker_admits_and_records_without_opening() {
        let s = breaker_settings();
        let mut snap = breaker::Snapshot::default();
        for i in 0..1000u64 {
            let (admission, t) = snap.admit(&s, i * 1000);
            assert!(t.is_none());
            let outcome = breaker::Outcome {
                failed: i % 10 == 0,
                slow: false,
            };
            assert!(snap.record(&s, admission, outcome, i * 1000).is_none());
        }
        assert_eq!(snap.phase, breaker::Phase::Closed);
    }

    #[test]
    fn the_budget_keeps_granting_retries_under_steady_traffic() {
        let s = budget_settings();
        let mut b = budget::Budget::default();
        for i in 0..1000u64 {
            let r = b.admit(&s, i * 1000);
            b.settle(&s, &r, u32::from(i % 10 == 0), i * 1000);
        }
        assert!(b.available(&s, 1_000_000) > 0);
    }
}
