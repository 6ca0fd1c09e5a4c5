//! Criterion micro-benchmarks of the policy hot paths: see the crate documentation
//! (`bench/micro/src/lib.rs`) for what each iteration does. `cargo bench -p mesh-bench-micro`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use mesh_bench_micro as inputs;
use mesh_circuit_breaker::breaker;
use mesh_retry_budget::budget;
use mesh_spiffe_identity::{id, pattern};
use mesh_trace_propagation::formats::{format_traceparent, parse_traceparent};

/// Time advances 250 µs per request, so the windows' buckets rotate as under real traffic.
const STEP_US: u64 = 250;

fn traceparent(c: &mut Criterion) {
    c.bench_function("traceparent_parse_format", |b| {
        b.iter(|| {
            parse_traceparent(black_box(inputs::TRACEPARENT))
                .map(|ctx| format_traceparent(&ctx))
                .ok()
        })
    });
}

fn spiffe(c: &mut Criterion) {
    let patterns = inputs::patterns();
    if patterns.len() != 50 {
        eprintln!(
            "spiffe_parse_match_50: only {} patterns parse",
            patterns.len()
        );
    }
    c.bench_function("spiffe_parse_match_50", |b| {
        b.iter(|| {
            id::parse(black_box(inputs::SPIFFE_ID))
                .ok()
                .and_then(|id| pattern::first_match(&patterns, &id).map(|p| p.as_str().len()))
        })
    });
}

fn breaker(c: &mut Criterion) {
    let settings = inputs::breaker_settings();
    let mut snapshot = breaker::Snapshot::default();
    let mut now_us = 0u64;
    let mut n = 0u32;
    c.bench_function("breaker_record_decide", |b| {
        b.iter(|| {
            now_us += STEP_US;
            n = n.wrapping_add(1);
            let (admission, _) = snapshot.admit(black_box(&settings), now_us);
            // One call in 20 fails: the breaker stays closed, the window counts every call.
            let outcome = breaker::Outcome {
                failed: n % 20 == 0,
                slow: false,
            };
            snapshot.record(&settings, black_box(admission), outcome, now_us)
        })
    });
}

fn retry_budget(c: &mut Criterion) {
    let settings = inputs::budget_settings();
    let mut budget = budget::Budget::default();
    let mut now_us = 0u64;
    c.bench_function("budget_deposit_withdraw", |b| {
        b.iter(|| {
            now_us += STEP_US;
            let reservation = budget.admit(black_box(&settings), now_us);
            budget.settle(&settings, &reservation, black_box(1), now_us);
            reservation.retries
        })
    });
}

fn grpc_timeout(c: &mut Criterion) {
    c.bench_function("grpc_timeout_parse", |b| {
        b.iter(|| mesh_deadline::grpc_timeout::parse(black_box(inputs::GRPC_TIMEOUT)))
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = policy;
    config = config();
    targets = traceparent, spiffe, breaker, retry_budget, grpc_timeout
}
criterion_main!(policy);
