//! The targets ([`Check`]), computed from the results, the module sizes and the
//! criterion estimates: PASS, MISS, or NOT RUN when a configuration is missing.

use std::collections::BTreeMap;

use super::{median, Kind, Results, Route, Stage, Variant, NATIVE_MODULE, SUITE_MODULE};

/// Target of the issue: `mesh_filters.wasm` at most 250 KB (KiB: 256,000 bytes).
pub const SUITE_MAX_BYTES: u64 = 250 * 1024;

/// The criterion benchmarks of `bench/micro`, in the order reported.
pub const MICRO_BENCHMARKS: [(&str, &str); 5] = [
    ("traceparent_parse_format", "traceparent parse + format"),
    (
        "spiffe_parse_match_50",
        "SPIFFE ID parse + match against 50 patterns",
    ),
    (
        "breaker_record_decide",
        "breaker decide (admit) + record, failure-rate window",
    ),
    (
        "budget_deposit_withdraw",
        "retry budget deposit + reserve + withdraw",
    ),
    ("grpc_timeout_parse", "grpc-timeout parse"),
];

/// A target of the issue, checked against the numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub target: String,
    /// `None` when it could not be evaluated (a configuration missing or failed).
    pub pass: Option<bool>,
    pub measured: String,
}

impl Check {
    pub fn word(&self) -> &'static str {
        match self.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "NOT RUN",
        }
    }
}

/// Module sizes in bytes, by module name.
pub type Sizes = BTreeMap<String, u64>;

/// Criterion results: `(benchmark id, ns per operation)`.
pub type Micro = Vec<(String, f64)>;

fn fmt_ratio(x: f64) -> String {
    format!("{x:.2}×")
}

fn per_variant(
    variants: &[Variant],
    value: impl Fn(Variant) -> Option<f64>,
    limit: impl Fn(f64) -> bool,
    show: impl Fn(f64) -> String,
) -> (Option<bool>, String) {
    let mut parts = Vec::new();
    let mut all = Some(true);
    for &v in variants {
        match value(v) {
            Some(x) => {
                parts.push(format!("{} {}", v.short(), show(x)));
                if !limit(x) {
                    all = all.map(|_| false);
                }
            }
            None => {
                parts.push(format!("{} n/a", v.short()));
                all = None;
            }
        }
    }
    (all, parts.join(", "))
}

fn not_run(target: &str, why: &str) -> Check {
    Check {
        target: target.to_owned(),
        pass: None,
        measured: why.to_owned(),
    }
}

/// A target on one ratio per variant: met when every variant's median meets `limit`.
fn per_variant_check(
    target: &str,
    measured: Result<(), &str>,
    variants: &[Variant],
    value: impl Fn(Variant) -> Option<f64>,
    limit: impl Fn(f64) -> bool,
) -> Check {
    match measured {
        Ok(()) => {
            let (pass, measured) = per_variant(variants, value, limit, fmt_ratio);
            Check {
                target: target.to_owned(),
                pass,
                measured,
            }
        }
        Err(why) => not_run(target, why),
    }
}

/// A target on the stages alone: each one's highest overhead ratio to the calibration filter
/// over the variants must be at most `limit`. Missed as soon as one is over; met only when
/// every stage was measured on every variant.
fn alone_check(target: &str, results: &Results, stages: &[Stage], limit: f64) -> Check {
    let mut per_filter: Vec<(Kind, f64, Variant)> = Vec::new();
    let mut complete = true;
    for kind in stages.iter().map(|&s| Kind::Wasm(s)) {
        if !results.kinds.contains(&kind) {
            complete = false;
            continue;
        }
        let mut highest: Option<(f64, Variant)> = None;
        for v in Variant::ALL {
            match median(&results.vs_calibration(kind, v)) {
                Some(x) => {
                    if highest.map_or(true, |(h, _)| x > h) {
                        highest = Some((x, v));
                    }
                }
                None => complete = false,
            }
        }
        if let Some((x, v)) = highest {
            per_filter.push((kind, x, v));
        }
    }
    if per_filter.is_empty() {
        return not_run(target, "not measured (BENCH_ONLY)");
    }
    let shown: Vec<String> = per_filter
        .iter()
        .map(|(k, x, v)| format!("{} {} ({})", k.label(), fmt_ratio(*x), v.short()))
        .collect();
    let over = per_filter.iter().any(|(_, x, _)| *x > limit);
    Check {
        target: target.to_owned(),
        pass: if over {
            Some(false)
        } else {
            complete.then_some(true)
        },
        measured: format!("highest per filter: {}", shown.join(", ")),
    }
}

/// The targets, computed from the results.
pub fn checks(results: &Results, sizes: &Sizes, micro: &Micro) -> Vec<Check> {
    let mut out = Vec::new();
    let have = |k: Kind| results.kinds.contains(&k);
    let suite = have(Kind::Suite);
    let no_suite = if sizes.contains_key(SUITE_MODULE) {
        "the suite was not measured (BENCH_ONLY)"
    } else {
        "mesh_filters.wasm was not built: the suite was not measured"
    };
    let measured = |k: Kind, why: &'static str| if have(k) { Ok(()) } else { Err(why) };
    let proxied: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| v.route == Route::Proxied)
        .collect();

    out.push(per_variant_check(
        "suite overhead ≤ 1.3× calibration overhead (CPU µs/request above bare)",
        measured(Kind::Suite, no_suite),
        &Variant::ALL,
        |v| median(&results.vs_calibration(Kind::Suite, v)),
        |x| x <= 1.3,
    ));
    out.push(per_variant_check(
        "proxied requests/s with the suite ≥ 0.85× bare Envoy",
        measured(Kind::Suite, no_suite),
        &proxied,
        |v| median(&results.rps_vs_bare(Kind::Suite, v)),
        |x| x >= 0.85,
    ));
    let others: Vec<Stage> = Stage::ALL
        .into_iter()
        .filter(|s| *s != Stage::RateLimit)
        .collect();
    out.push(alone_check(
        "each filter alone ≤ 1.25× calibration overhead (rate-limit: below)",
        results,
        &others,
        1.25,
    ));
    out.push(alone_check(
        "rate-limit alone ≤ 1.5× calibration overhead",
        results,
        &[Stage::RateLimit],
        1.5,
    ));

    let no_native = if sizes.contains_key(NATIVE_MODULE) {
        "the native suite was not measured (BENCH_ONLY)"
    } else {
        "libmesh_filters.so was not built: the native module was not measured"
    };
    let native_and_rbac = match (have(Kind::NativeSuite), have(Kind::NativeRbac)) {
        (false, _) => Err(no_native),
        (true, false) => Err("native RBAC was not measured (BENCH_ONLY)"),
        (true, true) => Ok(()),
    };
    out.push(per_variant_check(
        "native suite overhead ≤ 1.5× native RBAC's overhead",
        native_and_rbac,
        &Variant::ALL,
        |v| median(&results.overhead_vs(Kind::NativeSuite, Kind::NativeRbac, v)),
        |x| x <= 1.5,
    ));
    out.push(per_variant_check(
        "native suite overhead ≤ 0.5× calibration overhead (the wasm do-little filter)",
        measured(Kind::NativeSuite, no_native),
        &Variant::ALL,
        |v| median(&results.vs_calibration(Kind::NativeSuite, v)),
        |x| x <= 0.5,
    ));
    out.push(per_variant_check(
        "proxied requests/s with the native suite ≥ 0.9× bare Envoy",
        measured(Kind::NativeSuite, no_native),
        &proxied,
        |v| median(&results.rps_vs_bare(Kind::NativeSuite, v)),
        |x| x >= 0.9,
    ));

    let t = "mesh_filters.wasm ≤ 250 KB (256,000 bytes)";
    out.push(match sizes.get(SUITE_MODULE) {
        Some(&bytes) => Check {
            target: t.to_owned(),
            pass: Some(bytes <= SUITE_MAX_BYTES),
            measured: format!("{bytes} bytes ({:.0} KB)", bytes as f64 / 1024.0),
        },
        None => not_run(t, "mesh_filters.wasm was not built"),
    });

    let t = "Envoy RSS with the suite ≤ bare + 25 MiB";
    out.push(match median(&results.rss_vs_bare(Kind::Suite)) {
        Some(d) => Check {
            target: t.to_owned(),
            pass: Some(d <= 25.0),
            measured: format!("bare {d:+.1} MiB"),
        },
        None => not_run(t, if suite { "not measured" } else { no_suite }),
    });

    let t = "start-up with the suite ≤ bare + 250 ms";
    out.push(match median(&results.startup_vs_bare(Kind::Suite)) {
        Some(d) => Check {
            target: t.to_owned(),
            pass: Some(d <= 250.0),
            measured: format!("bare {d:+.0} ms"),
        },
        None => not_run(t, if suite { "not measured" } else { no_suite }),
    });

    let t = "policy hot paths < 1 µs each, natively (criterion)";
    if micro.is_empty() {
        out.push(not_run(
            t,
            "no criterion results: run `cargo bench -p mesh-bench-micro`",
        ));
    } else {
        let slow: Vec<String> = micro
            .iter()
            .filter(|(_, ns)| *ns >= 1000.0)
            .map(|(id, ns)| format!("{id} {ns:.0} ns"))
            .collect();
        let max = micro
            .iter()
            .map(|(_, ns)| *ns)
            .fold(f64::NEG_INFINITY, f64::max);
        out.push(Check {
            target: t.to_owned(),
            pass: Some(slow.is_empty() && micro.len() == MICRO_BENCHMARKS.len()),
            measured: if slow.is_empty() {
                format!("slowest {max:.0} ns")
            } else {
                format!("over 1 µs: {}", slow.join(", "))
            },
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bench::test_support::results;

    #[test]
    fn targets_are_computed_from_the_numbers() {
        let r = results(&[
            (Kind::Bare, 50.0, 10000.0),
            (Kind::Calibration, 70.0, 8000.0),
            (Kind::Wasm(Stage::Deadline), 74.0, 7900.0),
            (Kind::Suite, 80.0, 7000.0),
        ]);
        assert_eq!(
            median(&r.overhead(Kind::Suite, Variant::ALL[0])),
            Some(30.0)
        );
        assert_eq!(
            median(&r.vs_calibration(Kind::Suite, Variant::ALL[0])),
            Some(1.5)
        );
        let sizes: Sizes = [(SUITE_MODULE.to_owned(), 200_000)].into_iter().collect();
        let micro = vec![("grpc_timeout_parse".to_owned(), 12.0)];
        let c = checks(&r, &sizes, &micro);
        let word = |prefix: &str| {
            c.iter()
                .find(|c| c.target.starts_with(prefix))
                .unwrap()
                .word()
        };
        assert_eq!(word("suite overhead"), "MISS"); // 1.5× > 1.3×
        assert_eq!(word("proxied requests/s"), "MISS"); // 0.7× < 0.85×
        assert_eq!(word("each filter alone"), "NOT RUN"); // four filters were not measured
        assert_eq!(word("rate-limit alone"), "NOT RUN");
        assert_eq!(word("native suite overhead ≤ 1.5×"), "NOT RUN");
        assert_eq!(word("mesh_filters.wasm"), "PASS");
        assert_eq!(word("Envoy RSS"), "PASS"); // +20 MiB
        assert_eq!(word("start-up"), "MISS"); // +400 ms
        assert_eq!(word("policy hot paths"), "MISS"); // four benchmarks missing

        let no_suite = results(&[(Kind::Bare, 50.0, 1.0), (Kind::Calibration, 60.0, 1.0)]);
        let c = checks(&no_suite, &Sizes::new(), &Micro::new());
        assert!(c
            .iter()
            .filter(|c| c.target.contains("suite"))
            .all(|c| c.pass.is_none()));
    }

    #[test]
    fn the_native_module_and_the_rate_limit_have_targets_of_their_own() {
        let r = results(&[
            (Kind::Bare, 50.0, 10000.0),
            (Kind::Calibration, 70.0, 8000.0),
            (Kind::Wasm(Stage::RateLimit), 75.0, 7800.0),
            (Kind::NativeRbac, 57.0, 9800.0),
            (Kind::NativeSuite, 58.0, 9500.0),
        ]);
        let sizes: Sizes = [(NATIVE_MODULE.to_owned(), 1_000_000)]
            .into_iter()
            .collect();
        let c = checks(&r, &sizes, &Micro::new());
        let check = |prefix: &str| c.iter().find(|c| c.target.starts_with(prefix)).unwrap();
        // 25 / 20 µs.
        assert_eq!(check("rate-limit alone").word(), "PASS");
        // 8 / 7 µs, 8 / 20 µs, 9,500 / 10,000 requests/s.
        let rbac = check("native suite overhead ≤ 1.5× native RBAC");
        assert_eq!(rbac.word(), "PASS", "{rbac:?}");
        assert!(rbac.measured.contains("h1 direct 1.14×"), "{rbac:?}");
        assert_eq!(check("native suite overhead ≤ 0.5×").word(), "PASS");
        assert_eq!(check("proxied requests/s with the native").word(), "PASS");
        // The suite (wasm) was not measured, the native one was.
        assert_eq!(check("suite overhead").word(), "NOT RUN");

        let slow = results(&[
            (Kind::Bare, 50.0, 10000.0),
            (Kind::Calibration, 70.0, 8000.0),
            (Kind::Wasm(Stage::RateLimit), 90.0, 7000.0),
            (Kind::NativeSuite, 65.0, 8500.0),
        ]);
        let c = checks(&slow, &sizes, &Micro::new());
        let word = |prefix: &str| {
            c.iter()
                .find(|c| c.target.starts_with(prefix))
                .unwrap()
                .word()
        };
        assert_eq!(word("rate-limit alone"), "MISS"); // 2×
        assert_eq!(word("native suite overhead ≤ 1.5× native RBAC"), "NOT RUN");
        assert_eq!(word("native suite overhead ≤ 0.5×"), "MISS"); // 0.75×
        assert_eq!(word("proxied requests/s with the native"), "MISS"); // 0.85×
    }
}
