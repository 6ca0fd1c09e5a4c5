//! `BENCHMARKS.md`: the machine, the targets, the per-request tables of every variant, where the
//! time goes (the filters alone, chained and as the suite), the profile's section, memory and
//! start-up, the criterion estimates, the configurations and the failures.

use std::fmt::Write as _;

use super::{
    checks, median, spread, suite_config, Kind, Micro, Params, Results, Sizes, Variant,
    CALIBRATION_HEADER, CALIBRATION_MODULE, CALIBRATION_ROOT_ID, CLIENT_ID, MICRO_BENCHMARKS,
    SUITE_MODULE,
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
        return "native".to_owned();
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
         request, throughput and latency of every mesh filter, the suite and Envoy's native \
         analogues, against bare Envoy and a calibration filter (`bench/calibration`: reads one \
         request header, adds one request and one response header). **Quote ratios, not absolute \
         times**: ratios are taken within each round, so they hold on a shared, noisy machine.\n",
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

    if results.kinds.contains(&Kind::FiveFilters) || results.kinds.contains(&Kind::Suite) {
        let _ = writeln!(md, "## Where the time goes\n");
        let _ = writeln!(
            md,
            "Median overheads (CPU µs/request above bare Envoy). What five filters cost apart \
             (the sum of each alone), chained (five VMs, five HTTP filters) and as the suite (one \
             filter, one VM, five stages); the gap between the calibration filter and a filter \
             alone is the filter's own work (host calls, shared data, metrics, parsing).\n"
        );
        let _ = writeln!(
            md,
            "| variant | calibration | each filter alone (sum of five) | five filters (chain) | suite | suite ÷ chain |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|");
        for v in Variant::ALL {
            let over = |k: Kind| median(&results.overhead(k, v));
            let sum: Option<f64> = Kind::ALL
                .iter()
                .filter(|k| k.stage().is_some())
                .map(|&k| over(k))
                .sum();
            let chain = over(Kind::FiveFilters);
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
         (20 ms polling). Module: the `.wasm` files loaded.\n"
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
         with `b3`, the deadline's timeout, the calibration header; the breaker's and the \
         budget's metrics move; RBAC allows).\n"
    );
    let _ = writeln!(md, "| configuration | filters and configuration |");
    let _ = writeln!(md, "|---|---|");
    for &kind in &results.kinds {
        let what = match kind {
            Kind::Bare => "no HTTP filter but the router".to_owned(),
            Kind::Calibration => format!(
                "`{CALIBRATION_MODULE}.wasm`, root_id `{CALIBRATION_ROOT_ID}`"
            ),
            Kind::FiveFilters => {
                "the five modules as five HTTP filters (five VMs), in the suite's order, each with the configuration above".to_owned()
            }
            Kind::Suite => format!("`{SUITE_MODULE}.wasm`, root_id `mesh`: `{}`", suite_config()),
            Kind::NativeRbac => format!(
                "`envoy.filters.http.rbac`: ALLOW, one policy, principal `authenticated.principal_name.exact: {CLIENT_ID}` (vs spiffe-identity)"
            ),
            Kind::NativeRouteTimeout => {
                "route `timeout: 15s` on `/proxied` (vs deadline; on `/direct` nothing to do)".to_owned()
            }
            k => match k.stage() {
                Some(s) => format!("`{}.wasm`, root_id `{}`: `{}`", s.module(), s.root_id(), s.config()),
                None => String::new(),
            },
        };
        let _ = writeln!(md, "| {} | {} |", kind.label(), what);
    }
    let _ = writeln!(md);

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
}
