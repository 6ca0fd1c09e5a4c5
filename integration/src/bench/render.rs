//! `BENCHMARKS.md`: the machine, the targets, the per-request tables of every variant, where the
//! time goes (the filters alone, chained and as the suite), wasm and native side by side, the
//! profile's section, memory and start-up, the criterion estimates, the configurations and the
//! failures.

use std::fmt::Write as _;

use super::{
    checks, median, spread, suite_config, Kind, Micro, Params, Results, Sizes, Stage, Variant,
    CALIBRATION_HEADER, CALIBRATION_MODULE, CALIBRATION_ROOT_ID, CLIENT_ID, MICRO_BENCHMARKS,
    NATIVE_MODULE, NATIVE_SEARCH_PATH, SUITE_MODULE,
};

/// What the report says about the machine and the run.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: String,
    pub kernel: String,
    pub envoy: String,
    pub wrk: String,
    pub h2load: String,
    pub date: String,
    pub pinned: bool,
}

fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(x) => format!("{x:.digits$}"),
        None => "–".to_owned(),
    }
}

fn fmt_spread(values: &[f64]) -> String {
    match spread(values) {
        Some(s) => format!(" ±{:.0}%", s * 100.0),
        None => String::new(),
    }
}

fn fmt_thousands(x: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = x.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The module size column: one module's size, or the sum of several.
fn module_size(kind: Kind, sizes: &Sizes) -> String {
    let modules = kind.modules();
    if modules.is_empty() {
        return "built into Envoy".to_owned();
    }
    let total: Option<u64> = modules.iter().map(|m| sizes.get(m).copied()).sum();
    match total {
        Some(b) if modules.len() == 1 => format!("{:.0} KB", b as f64 / 1024.0),
        Some(b) => format!("{:.0} KB ({} modules)", b as f64 / 1024.0, modules.len()),
        None => "?".to_owned(),
    }
}

/// BENCHMARKS.md.
#[allow(clippy::too_many_arguments)]
pub fn render_markdown(
    params: &Params,
    machine: &Machine,
    results: &Results,
    sizes: &Sizes,
    micro: &Micro,
    notes: &[String],
    command: &str,
    profile: &str,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `make bench` (the `bench` program of `integration/`), {}. Envoy CPU time per \
         request, throughput and latency of every mesh filter and the suite, as wasm and as the \
         native module `libmesh_filters.so`, and of Envoy's native analogues, against bare Envoy \
         and a calibration filter (`bench/calibration`, wasm: reads one request header, adds one \
         request and one response header). **Quote ratios, not absolute times**: ratios are \
         taken within each round, so they hold on a shared, noisy machine.\n",
        machine.date
    );
    let _ = writeln!(md, "Reproduce:\n\n```sh\n{command}\n```\n");

    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| CPU | {} |", machine.cpu_model);
    let _ = writeln!(md, "| cores | {} |", machine.cores);
    let _ = writeln!(md, "| kernel | {} |", machine.kernel);
    let _ = writeln!(md, "| Envoy | {} |", machine.envoy);
    let _ = writeln!(
        md,
        "| load generators | {}; {} |",
        machine.wrk, machine.h2load
    );
    let _ = writeln!(
        md,
        "| pinning | {} |",
        if machine.pinned {
            "measured Envoy `--concurrency 1` on core 0 (`taskset -c 0`); wrk, h2load, the client Envoy and the upstream on core 1"
        } else {
            "none (fewer than 2 cores or no `taskset`): numbers are not comparable with pinned runs"
        }
    );
    let _ = writeln!(
        md,
        "| runs | {} round(s) over all configurations (A B C … A B C …); per variant {:.1} s warm-up, {:.1} s measured; wrk `-t1 -c{}`, h2load `-c{} -m{}` |\n",
        params.rounds, params.warmup, params.seconds, params.h1_connections, params.h2_connections, params.h2_streams
    );

    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(
        md,
        "Computed from the numbers below. h1 / h2 / grpc: HTTP/1.1 (wrk) / HTTP/2 (h2load) / unary \
         gRPC over HTTP/2 (h2load); direct: the `direct_response` route; proxied: the route to \
         the upstream. Ratios are medians over \
         rounds of the ratio within each round.\n"
    );
    for c in checks(results, sizes, micro) {
        let _ = writeln!(md, "- **{}** {}: {}", c.word(), c.target, c.measured);
    }
    let _ = writeln!(md);
    if !notes.is_empty() {
        for n in notes {
            let _ = writeln!(md, "> {n}\n");
        }
    }

    let _ = writeln!(md, "## CPU overhead per request\n");
    let _ = writeln!(
        md,
        "![Envoy CPU µs per request above bare Envoy, by configuration](bench/chart.svg)\n"
    );

    let _ = writeln!(
        md,
        "## Per request\n\nMedians over rounds; `±` is half the range over rounds. **CPU µs/req**: \
         user + system time of the measured Envoy process ÷ requests it completed in the \
         window. **Envoy CPU %**: that CPU time ÷ the window; below 100 % the load core, which \
         also runs the client Envoy and the upstream, limits the throughput, so requests/s \
         ratios understate what the measured Envoy could do and CPU µs/req is the number to \
         compare. **overhead**: CPU µs/req − bare Envoy's, in the same round. **× calibration**: \
         overhead ÷ the calibration filter's overhead, in the same round.\n"
    );
    for v in Variant::ALL {
        let _ = writeln!(md, "### {}\n", v.label());
        let _ = writeln!(
            md,
            "| configuration | requests/s | × bare rps | p50 ms | p99 ms | Envoy CPU % | CPU µs/req | × bare CPU | overhead µs/req | × calibration |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for &kind in &results.kinds {
            let rps = results.rps(kind, v);
            let cpu = results.cpu(kind, v);
            if rps.is_empty() {
                let _ = writeln!(md, "| {} | failed | | | | | | | | |", kind.label());
                continue;
            }
            let errors = results.errors(kind, v);
            let flag = if errors > 0 {
                format!(" ({errors} errors)")
            } else {
                String::new()
            };
            let is_bare = kind == Kind::Bare;
            let _ = writeln!(
                md,
                "| {}{} | {}{} | {} | {} | {} | {} | {}{} | {} | {} | {} |",
                kind.label(),
                flag,
                median(&rps).map(fmt_thousands).unwrap_or_default(),
                fmt_spread(&rps),
                if is_bare {
                    "1".to_owned()
                } else {
                    fmt_opt(median(&results.rps_vs_bare(kind, v)), 2)
                },
                fmt_opt(median(&results.p50(kind, v)), 2),
                fmt_opt(median(&results.p99(kind, v)), 2),
                fmt_opt(median(&results.utilisation(kind, v)).map(|u| u * 100.0), 0),
                fmt_opt(median(&cpu), 1),
                fmt_spread(&cpu),
                if is_bare {
                    "1".to_owned()
                } else {
                    fmt_opt(median(&results.cpu_vs_bare(kind, v)), 2)
                },
                if is_bare {
                    "0".to_owned()
                } else {
                    fmt_opt(median(&results.overhead(kind, v)), 1)
                },
                if is_bare {
                    "–".to_owned()
                } else {
                    fmt_opt(median(&results.vs_calibration(kind, v)), 2)
                },
            );
        }
        let _ = writeln!(md);
    }

    where_the_time_goes(&mut md, results);
    side_by_side(&mut md, results);

    let _ = writeln!(
        md,
        "{}\n{}\n{}\n",
        crate::profile::SECTION_START,
        profile.trim_end(),
        crate::profile::SECTION_END
    );

    let _ = writeln!(md, "## Memory, start-up, module size\n");
    let _ = writeln!(
        md,
        "RSS: `VmRSS` of the measured Envoy after its runs. Start-up: spawn → `/ready` LIVE \
         (20 ms polling). Module: the `.wasm` files loaded, or `libmesh_filters.so`.\n"
    );
    let _ = writeln!(
        md,
        "| configuration | module | RSS MiB | RSS − bare MiB | start-up ms | start-up − bare ms |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for &kind in &results.kinds {
        let rss = results.rss_mib(kind);
        let startup = results.startup_ms(kind);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {}{} | {} |",
            kind.label(),
            module_size(kind, sizes),
            fmt_opt(median(&rss), 1),
            fmt_opt(median(&results.rss_vs_bare(kind)), 1),
            fmt_opt(median(&startup), 0),
            fmt_spread(&startup),
            fmt_opt(median(&results.startup_vs_bare(kind)), 0),
        );
    }
    let _ = writeln!(md);

    let _ = writeln!(md, "## Policy hot paths (criterion, native)\n");
    if micro.is_empty() {
        let _ = writeln!(
            md,
            "No criterion results found (`target/criterion/*/new/estimates.json`): run \
             `cargo bench -p mesh-bench-micro` (`make bench` does).\n"
        );
    } else {
        let _ = writeln!(
            md,
            "`bench/micro`: one iteration as described; ns per operation is criterion's slope \
             estimate.\n"
        );
        let _ = writeln!(md, "| benchmark | what | ns/op |");
        let _ = writeln!(md, "|---|---|---:|");
        for (id, ns) in micro {
            let what = MICRO_BENCHMARKS
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, w)| *w)
                .unwrap_or("");
            let _ = writeln!(md, "| `{id}` | {what} | {ns:.1} |");
        }
        let _ = writeln!(md);
    }

    configurations(&mut md, results);

    let failures: Vec<(Kind, Vec<String>)> = results
        .kinds
        .iter()
        .map(|&k| (k, results.failures(k)))
        .filter(|(_, f)| !f.is_empty())
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(md, "## Failures\n");
        for (k, fs) in failures {
            for f in fs {
                let _ = writeln!(md, "- {}: {}", k.label(), f.replace('\n', " "));
            }
        }
        let _ = writeln!(md);
    }
    md
}

/// What the stages cost apart (the sum of each alone), chained and as the suite.
fn where_the_time_goes(md: &mut String, results: &Results) {
    if !results.kinds.contains(&Kind::Chain) && !results.kinds.contains(&Kind::Suite) {
        return;
    }
    let n = Stage::ALL.len();
    let _ = writeln!(md, "## Where the time goes\n");
    let _ = writeln!(
        md,
        "Median overheads (CPU µs/request above bare Envoy). What the {n} filters cost apart \
         (the sum of each alone), chained ({n} VMs, {n} HTTP filters) and as the suite (one \
         filter, one VM, {n} stages); the gap between the calibration filter and a filter \
         alone is the filter's own work (host calls, shared data, metrics, parsing).\n"
    );
    let _ = writeln!(
        md,
        "| variant | calibration | each filter alone (sum of {n}) | {} | suite | suite ÷ chain |",
        Kind::Chain.label()
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
    for v in Variant::ALL {
        let over = |k: Kind| median(&results.overhead(k, v));
        let sum: Option<f64> = Stage::ALL.iter().map(|&s| over(Kind::Wasm(s))).sum();
        let chain = over(Kind::Chain);
        let suite = over(Kind::Suite);
        let ratio = match (suite, chain) {
            (Some(s), Some(c)) if c > 0.0 => Some(s / c),
            _ => None,
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            v.label(),
            fmt_opt(over(Kind::Calibration), 1),
            fmt_opt(sum, 1),
            fmt_opt(chain, 1),
            fmt_opt(suite, 1),
            fmt_opt(ratio, 2),
        );
    }
    let _ = writeln!(md);
}

/// Each stage and the suite as wasm and as the native module, per variant.
fn side_by_side(md: &mut String, results: &Results) {
    let pairs: Vec<(&str, Kind, Kind)> = Stage::ALL
        .iter()
        .map(|&s| (s.label(), Kind::Wasm(s), Kind::NativeStage(s)))
        .chain([
            ("suite", Kind::Suite, Kind::NativeSuite),
            (
                "do-little: calibration / no stage",
                Kind::Calibration,
                Kind::NativeEmpty,
            ),
        ])
        .filter(|(_, w, n)| results.kinds.contains(w) || results.kinds.contains(n))
        .collect();
    if !pairs.iter().any(|(_, _, n)| results.kinds.contains(n)) {
        return;
    }
    let _ = writeln!(md, "## wasm and native side by side\n");
    let _ = writeln!(
        md,
        "Median overheads (CPU µs/request above bare Envoy) of the same stage code with the same \
         configuration in both runtimes: **wasm** (the stage's own `.wasm`, or \
         `mesh_filters.wasm`) / **native** (`libmesh_filters.so` with that stage's section only, \
         or the suite's configuration), then native ÷ wasm (median of the ratio within each \
         round). Envoy's own filters for part of the same work are in the tables above: native \
         RBAC (vs spiffe-identity), the route timeout (vs deadline), local_ratelimit (vs \
         rate-limit).\n"
    );
    let mut head = "| stage |".to_owned();
    let mut rule = "|---|".to_owned();
    for v in Variant::ALL {
        let _ = write!(head, " {} |", v.short());
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for (label, wasm, native) in pairs {
        let mut row = format!("| {label} |");
        for v in Variant::ALL {
            let ratio = match median(&results.overhead_vs(native, wasm, v)) {
                Some(x) => format!(" ({x:.2}×)"),
                None => String::new(),
            };
            let _ = write!(
                row,
                " {} / {}{ratio} |",
                fmt_opt(median(&results.overhead(wasm, v)), 1),
                fmt_opt(median(&results.overhead(native, v)), 1),
            );
        }
        let _ = writeln!(md, "{row}");
    }
    let _ = writeln!(md);
}

/// What each configuration runs, and how it is checked to do its work.
fn configurations(md: &mut String, results: &Results) {
    let _ = writeln!(md, "## Configurations\n");
    let _ = writeln!(
        md,
        "Every configuration runs on the same listener family: the measured Envoy's mTLS \
         listener (client certificate required, `forward_client_cert_details: SANITIZE_SET`, \
         `set_current_client_cert_details: {{uri: true}}`), reached through a client Envoy on the \
         load core that originates mTLS with the SVID `{CLIENT_ID}` and keeps the downstream \
         protocol. `/direct` is a `direct_response` route; `/proxied` goes to a minimal HTTP/1.1 + \
         h2c server on the load core that answers `ok` (route timeout off, except for the native \
         route timeout). Every request carries `traceparent` and `{CALIBRATION_HEADER}`, and \
         `x-envoy-expected-rq-timeout-ms: 30000` from the client Envoy. Before its runs each \
         configuration is checked to do its work (the upstream sees `x-spiffe-id`, a new span id \
         with `b3`, the deadline's timeout, the calibration header; the breaker counts the failure \
         of one request the upstream answers 503, the budget's and the rate limit's counters move, \
         in each runtime's metric names, and the rate limit limits nothing; RBAC allows; the local \
         rate limit counts every request as ok). The native \
         module is the HTTP filter `mesh` (`DynamicModuleFilter`, module `mesh_filters`, found \
         in `{NATIVE_SEARCH_PATH}`).\n"
    );
    let _ = writeln!(md, "| configuration | filters and configuration |");
    let _ = writeln!(md, "|---|---|");
    for &kind in &results.kinds {
        let what = match kind {
            Kind::Bare => "no HTTP filter but the router".to_owned(),
            Kind::Calibration => {
                format!("`{CALIBRATION_MODULE}.wasm`, root_id `{CALIBRATION_ROOT_ID}`")
            }
            Kind::Wasm(s) => format!(
                "`{}.wasm`, root_id `{}`: `{}`",
                s.module(),
                s.root_id(),
                s.config()
            ),
            Kind::Chain => format!(
                "the {n} modules as {n} HTTP filters ({n} VMs), in the suite's order, each with the \
                 configuration above",
                n = Stage::ALL.len()
            ),
            Kind::Suite => format!("`{SUITE_MODULE}.wasm`, root_id `mesh`: `{}`", suite_config()),
            Kind::NativeEmpty => format!(
                "`{NATIVE_MODULE}.so`: `{{}}`, no stage: Envoy's dynamic-module filter and the \
                 module's hooks on every stream, nothing else (the floor of every native row)"
            ),
            Kind::NativeStage(_) | Kind::NativeSuite => format!(
                "`{NATIVE_MODULE}.so`: `{}`",
                kind.suite_config().unwrap_or_default()
            ),
            Kind::NativeRbac => format!(
                "`envoy.filters.http.rbac`: ALLOW, one policy, principal \
                 `authenticated.principal_name.exact: {CLIENT_ID}` (vs spiffe-identity)"
            ),
            Kind::NativeRouteTimeout => {
                "route `timeout: 15s` on `/proxied` (vs deadline; on `/direct` nothing to do)"
                    .to_owned()
            }
            Kind::NativeLocalRateLimit => "`envoy.filters.http.local_ratelimit`: a token bucket of \
                 1,000,000 tokens, 1,000,000 more every second, enabled and enforced on every \
                 request, so it never limits (vs rate-limit)"
                .to_owned(),
        };
        let _ = writeln!(md, "| {} | {} |", kind.label(), what);
    }
    let _ = writeln!(md);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bench::test_support::results;

    #[test]
    fn reports_render() {
        let r = results(&[
            (Kind::Bare, 50.0, 10000.0),
            (Kind::Calibration, 70.0, 8000.0),
            (Kind::NativeRbac, 49.0, 10100.0),
        ]);
        let md = render_markdown(
            &Params::default(),
            &Machine::default(),
            &r,
            &Sizes::new(),
            &Micro::new(),
            &[],
            "make bench",
            "## Where each microsecond goes\n\nnot run\n",
        );
        assert!(md.contains("| calibration filter | 8,000 |"));
        assert!(md.contains("bench/chart.svg"));
        assert!(md.contains(&format!(
            "{}\n## Where each microsecond goes",
            crate::profile::SECTION_START
        )));
    }

    #[test]
    fn wasm_and_native_are_shown_side_by_side() {
        let r = results(&[
            (Kind::Bare, 50.0, 10000.0),
            (Kind::Calibration, 70.0, 8000.0),
            (Kind::Wasm(Stage::Deadline), 80.0, 7000.0),
            (Kind::NativeStage(Stage::Deadline), 55.0, 9500.0),
            (Kind::Suite, 120.0, 5000.0),
            (Kind::NativeSuite, 60.0, 9000.0),
        ]);
        let sizes: Sizes = [(NATIVE_MODULE.to_owned(), 1_024_000)]
            .into_iter()
            .collect();
        let md = render_markdown(
            &Params::default(),
            &Machine::default(),
            &r,
            &sizes,
            &Micro::new(),
            &[],
            "make bench",
            "",
        );
        assert!(md.contains("## wasm and native side by side"), "{md}");
        assert!(md.contains("| deadline | 30.0 / 5.0 (0.17×) |"), "{md}");
        assert!(md.contains("| suite | 70.0 / 10.0 (0.14×) |"), "{md}");
        assert!(
            md.contains("| suite (libmesh_filters.so) | 1000 KB |"),
            "{md}"
        );
        assert!(
            md.contains("`libmesh_filters.so`: `{\"deadline\":{\"timeout\":\"15s\"}}`"),
            "{md}"
        );
        let wasm_only = results(&[(Kind::Bare, 50.0, 1.0), (Kind::Calibration, 60.0, 1.0)]);
        let md = render_markdown(
            &Params::default(),
            &Machine::default(),
            &wasm_only,
            &Sizes::new(),
            &Micro::new(),
            &[],
            "make bench",
            "",
        );
        assert!(!md.contains("side by side"));
    }
}
