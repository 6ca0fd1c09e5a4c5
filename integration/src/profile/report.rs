//! The profile's section of BENCHMARKS.md, "Where each microsecond goes": the cost of each host
//! call, the suite's calls by kind and stage, and the suite's overhead predicted from its parts
//! against the measured one.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::bench::{Route, Stage};
use crate::profile::analysis::{self, marginal, split_key, Costs, Estimate, VariantAnalysis};
use crate::profile::catalogue::{Prices, Probe};
use crate::profile::reasons;
use crate::profile::Profile;

fn est(e: Option<Estimate>, digits: usize) -> String {
    match e {
        Some(e) if e.rounds > 1 => format!("{:.digits$} ±{:.digits$}", e.median, e.spread),
        Some(e) => format!("{:.digits$}", e.median),
        None => "–".to_owned(),
    }
}

fn num(x: f64, digits: usize) -> String {
    if x.abs() < 0.5 * 10f64.powi(-(digits as i32)) {
        "0".to_owned()
    } else {
        format!("{x:.digits$}")
    }
}

/// A count as shown: whole numbers plain, averages with two decimals, 0 as blank.
fn count(x: f64) -> String {
    if x.abs() < 1e-9 {
        String::new()
    } else if (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn phase_rank(key: &str) -> usize {
    match split_key(key).0 {
        "request" => 0,
        "response" => 1,
        "trailers" => 2,
        "log" => 3,
        _ => 4,
    }
}

fn sorted_keys<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let set: BTreeSet<&String> = keys.collect();
    let mut v: Vec<&String> = set.into_iter().collect();
    v.sort_by_key(|k| (phase_rank(k), split_key(k).1.to_owned()));
    v
}

fn slope_cell(a: &VariantAnalysis, probe: usize) -> String {
    match a.slopes.get(probe) {
        Some(s) if s.estimate.is_some() => {
            let v = est(s.estimate, 2);
            if s.borrowed {
                format!("({v})")
            } else {
                v
            }
        }
        _ => "–".to_owned(),
    }
}

/// The section (without its markers), rendered from a profile run.
pub fn render(profile: &Profile, command: &str) -> String {
    let analyses = profile.analyse();
    let mut md = String::new();
    let p = &profile.params;
    let _ = writeln!(md, "## Where each microsecond goes\n");
    let _ = writeln!(
        md,
        "The profile (`integration/src/profile.rs`, method there): the probe filter \
         (`bench/probe`, `mesh_bench_probe.wasm`) performs one kind of host call `k` times per \
         request, in the phase where the suite performs it; the cost of one call is the CPU \
         µs/request of the probe at `n = k` minus its reference's (the probe doing nothing, or \
         its own `n = 0` run), divided by `k`. All configurations are listeners of one measured \
         Envoy (`--concurrency 1`, core 0; mTLS with an Envoy-built `x-forwarded-client-cert`), \
         references measured on both sides of every run and interpolated. Medians over {} \
         round(s) of {:.1} s windows ({:.1} s warm-up), `±` half the range over rounds; {:.0} s \
         in all. Reproduce alone: `{command}`.\n",
        p.rounds, p.seconds, p.warmup, profile.elapsed_s
    );

    // Per-call costs.
    let _ = writeln!(md, "### What one host call costs\n");
    let _ = writeln!(
        md,
        "µs of Envoy CPU per call (per request for a local reply, per iteration for \
         `suite_in_vm`). In parentheses: not measured on this route, the direct route's cost of \
         the same protocol, used for the prediction (these calls do not depend on the route).\n"
    );
    let mut head = "| host call | k |".to_owned();
    let mut rule = "|---|---:|".to_owned();
    for a in &analyses {
        let _ = write!(head, " {} |", a.variant.label());
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    let fixed_row = analyses.iter().fold(
        "| a wasm HttpContext that does nothing (per request, above bare Envoy) | – |".to_owned(),
        |mut row, a| {
            let _ = write!(row, " {} |", est(a.fixed, 2));
            row
        },
    );
    let _ = writeln!(md, "{fixed_row}");
    for (i, probe) in profile.probes.iter().enumerate() {
        let mut row = format!("| {} | {} |", probe_label(probe), probe.k);
        for a in &analyses {
            let _ = write!(row, " {} |", slope_cell(a, i));
        }
        let _ = writeln!(md, "{row}");
    }
    let _ = writeln!(md);

    // Counts by kind and stage.
    let _ = writeln!(
        md,
        "### The suite's host calls per request, by kind and stage\n"
    );
    let _ = writeln!(
        md,
        "Counted in Envoy (`suite_counted`: the suite's request path over the real host, every \
         call counted) for one HTTP/1.1 request after warm-up, averaged over 4; the bench's \
         suite configuration with its first 0, 1, …, 5 stages. A stage's column is the marginal \
         count when it is added in suite order (\"adapter\": the suite with no stage, which \
         still reads the request headers); a negative count is a call an earlier stage's cache \
         saves. The last rows price each stage's calls at the route's first variant's costs, and \
         give each stage's own code (`suite_in_vm` of the suite with its first 0…5 stages, \
         per iteration of a loop: the marginal when the stage is added).\n"
    );
    for route in [Route::Direct, Route::Proxied] {
        let Some(prefixes) = profile.counts.get(&route) else {
            continue;
        };
        let stages = marginal(prefixes);
        let total = prefixes.last().cloned().unwrap_or_default();
        let _ = writeln!(
            md,
            "**{} route**\n",
            match route {
                Route::Direct => "direct_response",
                Route::Proxied => "proxied",
            }
        );
        let mut head = "| call | adapter |".to_owned();
        let mut rule = "|---|---:|".to_owned();
        for s in Stage::ALL {
            let _ = write!(head, " {} |", s.label());
            rule.push_str("---:|");
        }
        let _ = writeln!(md, "{head} total |\n{rule}---:|");
        let keys = sorted_keys(stages.iter().flat_map(|c| c.keys()));
        for key in &keys {
            let mut row = format!("| {key} |");
            for c in &stages {
                let _ = write!(row, " {} |", count(c.get(*key).copied().unwrap_or(0.0)));
            }
            let _ = writeln!(
                row,
                " **{}** |",
                count(total.get(*key).copied().unwrap_or(0.0))
            );
            md.push_str(&row);
        }
        let mut row = "| **calls** |".to_owned();
        for c in &stages {
            let _ = write!(row, " {} |", count(c.values().sum()));
        }
        let _ = writeln!(md, "{row} **{}** |", count(total.values().sum()));
        if let Some(a) = analyses.iter().find(|a| a.variant.route == route) {
            let mut row = format!("| **µs of host calls** ({}) |", a.variant.short());
            for c in &stages {
                let _ = write!(row, " {} |", num(priced_total(c, &a.costs), 1));
            }
            let _ = writeln!(md, "{row} **{}** |", num(priced_total(&total, &a.costs), 1));
            if a.stage_compute.iter().any(Option::is_some) {
                let mut row = format!(
                    "| **µs of own code** ({}, `suite_in_vm` per iteration of 4) |",
                    a.variant.short()
                );
                let medians: Vec<Option<f64>> = a
                    .stage_compute
                    .iter()
                    .map(|e| e.map(|e| e.median))
                    .collect();
                for (i, m) in medians.iter().enumerate() {
                    let before = if i == 0 {
                        Some(0.0)
                    } else {
                        medians.get(i - 1).copied().flatten()
                    };
                    match (m, before) {
                        (Some(m), Some(b)) => {
                            let _ = write!(row, " {} |", num(m - b, 1));
                        }
                        _ => row.push_str(" – |"),
                    }
                }
                let _ = writeln!(
                    md,
                    "{row} **{}** |",
                    medians
                        .last()
                        .copied()
                        .flatten()
                        .map_or("–".to_owned(), |m| num(m, 1))
                );
            }
        }
        let _ = writeln!(md);
    }

    why_each_call(&mut md, profile);

    // Predicted vs measured.
    let _ = writeln!(md, "### Predicted against measured\n");
    let _ = writeln!(
        md,
        "**From per-call costs**: fixed cost of an HttpContext + Σ count × cost per call (the \
         table above, each kind measured in a loop of its own) + the suite's own code \
         (`suite_in_vm` per iteration of a loop). **As the suite runs them**: the fixed cost + \
         the suite's recorded calls replayed once per request in its order and mix \
         (`call_mix`, `n = 1`) + the suite's code once per request (`suite_in_vm`, `n = 1`). \
         Measured: the suite's listener − bare Envoy's, in the same run. Within 20 % counts as \
         explained.\n"
    );
    let _ = writeln!(
        md,
        "| variant | fixed µs | host calls µs | compute µs | predicted µs | measured µs | predicted ÷ measured |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|");
    let verdict = |p: &analysis::Prediction| match p.explains() {
        Some(true) => " (explained)",
        Some(false) => " (**not explained**)",
        None => "",
    };
    for a in &analyses {
        for (how, pr) in [
            ("from per-call costs", &a.prediction),
            ("as the suite runs them", &a.as_run),
        ] {
            let _ = writeln!(
                md,
                "| {}, {how} | {} | {} | {} | {} | {} | {}{} |",
                a.variant.label(),
                num(pr.fixed, 1),
                num(pr.calls, 1),
                num(pr.compute, 1),
                num(pr.predicted(), 1),
                est(a.suite, 1),
                pr.ratio().map_or("–".to_owned(), |r| format!("{r:.2}")),
                verdict(pr),
            );
        }
    }
    let _ = writeln!(md);
    let _ = writeln!(
        md,
        "Checks of the method. The suite's calls: Σ count × cost per call against the same calls \
         replayed in the suite's mix, per iteration of a loop and once per request. The suite's \
         code: per iteration of a loop against once per request. The calibration filter (one \
         request header read, one request and one response header added): its fixed cost + its \
         three calls priced, against its measured overhead.\n"
    );
    let _ = writeln!(
        md,
        "| variant | calls: Σ count × cost µs | calls: mix, per iteration µs | calls: mix once µs | once ÷ Σ | code: per iteration µs | code: once µs | once ÷ per iteration | calibration: predicted µs | calibration: measured µs |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let factor = |f: Option<f64>| f.map_or("–".to_owned(), |f| format!("{f:.2}×"));
    for a in &analyses {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            a.variant.label(),
            num(a.prediction.calls, 1),
            est(a.mix, 1),
            est(a.mix_once, 1),
            factor(a.calls_factor()),
            est(a.compute, 1),
            est(a.compute_once, 1),
            factor(a.code_factor()),
            num(a.calibration_prediction.predicted(), 1),
            est(a.calibration, 1),
        );
    }
    let _ = writeln!(md);

    // Where the µs go.
    let _ = writeln!(md, "### Where the suite's µs go\n");
    let _ = writeln!(
        md,
        "µs per request of each part, most expensive first (by the first variant, as run). \
         **loop**: count × cost per call from the table above, the code per iteration of a loop. \
         **as run**: the code once per request, each call's loop cost × the variant's \
         once ÷ Σ factor of the checks above (the calls' share of the replayed mix). **share**: \
         of the measured overhead. A cut saves about its row.\n"
    );
    let mut head = "| part | calls per request |".to_owned();
    let mut rule = "|---|---:|".to_owned();
    for a in &analyses {
        let s = a.variant.short();
        let _ = write!(head, " {s} loop µs | {s} as run µs | share |");
        rule.push_str("---:|---:|---:|");
    }
    let _ = writeln!(md, "{head}\n{rule}");
    let mut parts: Vec<Part> = vec![
        (
            "fixed cost of a wasm HttpContext".to_owned(),
            "–".to_owned(),
            analyses
                .iter()
                .map(|a| a.fixed.map(|e| (e.median, e.median)))
                .collect(),
        ),
        (
            "the suite's own code (`suite_in_vm`)".to_owned(),
            "–".to_owned(),
            analyses
                .iter()
                .map(|a| match (a.compute, a.compute_once) {
                    (Some(l), Some(o)) => Some((l.median, o.median)),
                    (Some(l), None) => Some((l.median, l.median)),
                    _ => None,
                })
                .collect(),
        ),
    ];
    let mut keys: Vec<(String, f64)> = Vec::new();
    for a in &analyses {
        for r in &a.priced {
            if !keys.iter().any(|(k, _)| *k == r.key) {
                keys.push((r.key.clone(), r.count));
            }
        }
    }
    for (key, n) in &keys {
        let cells = analyses
            .iter()
            .map(|a| {
                let r = a.priced.iter().find(|r| r.key == *key)?;
                r.cost?;
                Some((r.total, r.total * a.calls_factor().unwrap_or(1.0)))
            })
            .collect();
        parts.push((key.clone(), count(*n), cells));
    }
    parts.sort_by(|a, b| {
        let x = a.2.first().copied().flatten().map_or(0.0, |c| c.1);
        let y = b.2.first().copied().flatten().map_or(0.0, |c| c.1);
        y.total_cmp(&x)
    });
    for (name, n, cells) in &parts {
        let mut row = format!("| {name} | {n} |");
        for (a, c) in analyses.iter().zip(cells) {
            match c {
                Some((l, r)) => {
                    let share = a
                        .suite
                        .filter(|m| m.median > 0.0)
                        .map_or(String::new(), |m| format!("{:.0} %", r / m.median * 100.0));
                    let _ = write!(row, " {} | {} | {share} |", num(*l, 1), num(*r, 1));
                }
                None => row.push_str(" – | – | |"),
            }
        }
        let _ = writeln!(md, "{row}");
    }
    let unpriced: Vec<&str> = analyses
        .iter()
        .flat_map(|a| a.priced.iter().filter(|r| r.cost.is_none()))
        .map(|r| r.key.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !unpriced.is_empty() {
        let _ = writeln!(
            md,
            "\nCounted but not priced on some route (no probe measures them there): {}.",
            unpriced.join(", ")
        );
    }
    let _ = writeln!(md);
    if !profile.failures.is_empty() {
        let _ = writeln!(md, "Runs that failed (left out):\n");
        for f in &profile.failures {
            let _ = writeln!(md, "- {}", f.replace('\n', " "));
        }
        let _ = writeln!(md);
    }
    md
}

/// A row of "Where the suite's µs go": name, calls per request, per variant (loop µs, as run µs).
type Part = (String, String, Vec<Option<(f64, f64)>>);

fn priced_total(counts: &analysis::Counts, costs: &Costs) -> f64 {
    analysis::price(counts, costs).iter().map(|r| r.total).sum()
}

fn probe_label(p: &Probe) -> String {
    match &p.prices {
        Prices::Call(_) => format!("`{}`", p.label),
        Prices::Check(_) => format!("`{}` (check)", p.label),
        _ => p.label.clone(),
    }
}

/// "Why each call remains": every call a stage (or the adapter) makes per request on either
/// route, with the reason it is needed (`crate::profile::reasons`).
fn why_each_call(md: &mut String, profile: &Profile) {
    // (call, stage) → the most it makes on either route.
    let mut made: Vec<(String, Option<Stage>, f64)> = Vec::new();
    for prefixes in profile.counts.values() {
        for (i, counts) in marginal(prefixes).iter().enumerate() {
            let stage = i.checked_sub(1).and_then(|s| Stage::ALL.get(s).copied());
            for (call, &n) in counts {
                if n <= 0.0 {
                    continue;
                }
                match made.iter_mut().find(|(c, s, _)| c == call && *s == stage) {
                    Some(entry) => entry.2 = entry.2.max(n),
                    None => made.push((call.clone(), stage, n)),
                }
            }
        }
    }
    if made.is_empty() {
        return;
    }
    made.sort_by_key(|(call, stage, _)| (*stage, call.clone()));
    let _ = writeln!(md, "### Why each call remains\n");
    let _ = writeln!(
        md,
        "Every call counted above, by the stage that makes it (the most it makes on either \
         route), and what it is for: what a further cut would have to give up.\n"
    );
    let _ = writeln!(md, "| stage | call | per request | why it is needed |");
    let _ = writeln!(md, "|---|---|---:|---|");
    for (call, stage, n) in made {
        let why = reasons::reason(&call, stage).unwrap_or("**no reason recorded**");
        let _ = writeln!(
            md,
            "| {} | {call} | {} | {why} |",
            stage.map_or("adapter", Stage::label),
            count(n)
        );
    }
    let _ = writeln!(md);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::profile::analysis::{Counts, Measurement, Runs};
    use crate::profile::catalogue::{self, BARE, CALIBRATION, NONE, SUITE};
    use crate::profile::Params;
    use std::collections::BTreeMap;

    fn profile() -> Profile {
        let probes = catalogue::probes();
        let v = catalogue::VARIANTS[0];
        let mut ms = Vec::new();
        let mut add = |round: usize, pos: usize, l: &str, cpu: f64| {
            ms.push(Measurement {
                round,
                pos,
                listener: l.to_owned(),
                variant: v,
                cpu,
                rps: 10_000.0,
                errors: 0,
            });
        };
        for round in 0..2 {
            let j = round as f64;
            add(round, 0, BARE, 50.0);
            add(round, 1, NONE, 70.0);
            add(round, 2, SUITE, 150.0 + j);
            add(round, 3, CALIBRATION, 75.0);
            for (i, p) in probes.iter().enumerate() {
                let base = if p.reference() == NONE { 70.0 } else { 80.0 };
                if p.own_reference {
                    add(round, 4 + 2 * i, &p.reference(), base);
                }
                add(
                    round,
                    5 + 2 * i,
                    &p.listener,
                    base + f64::from(p.k) * (1.0 + j / 10.0),
                );
            }
            add(round, 200, NONE, 70.0);
            add(round, 201, BARE, 50.0);
        }
        let c = |pairs: &[(&str, f64)]| -> Counts {
            pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
        };
        let base = c(&[("request get_map request_headers", 1.0)]);
        let full = c(&[
            ("request get_map request_headers", 1.0),
            ("request get_property xds.route_name", 1.0),
            ("log get_shared_data", 2.0),
            ("log something_unmeasured", 1.0),
        ]);
        let prefixes = vec![
            base.clone(),
            base.clone(),
            base,
            full.clone(),
            full.clone(),
            full,
        ];
        Profile {
            params: Params {
                rounds: 2,
                variants: vec![v],
                ..Params::default()
            },
            probes,
            runs: Runs {
                rounds: 2,
                measurements: ms,
            },
            counts: BTreeMap::from([(Route::Direct, prefixes)]),
            failures: vec!["HTTP/1.1 direct_response p03: boom".to_owned()],
            elapsed_s: 12.0,
        }
    }

    #[test]
    fn the_section_has_every_table() {
        let md = render(
            &profile(),
            "cargo run --release -p mesh-integration --bin profile",
        );
        for part in [
            "## Where each microsecond goes",
            "### What one host call costs",
            "### The suite's host calls per request, by kind and stage",
            "### Predicted against measured",
            "### Where the suite's µs go",
            "| a wasm HttpContext that does nothing (per request, above bare Envoy) | – | 20.00 ±0.00 |",
            "| `request get_property xds.route_name` | 32 | 1.05 ±0.05 |",
            "| request get_property xds.route_name |  |  |  | 1 |  |  | **1** |",
            "| **calls** | 1 |  |  | 4 |  |  | **5** |",
            "Counted but not priced on some route (no probe measures them there): log something_unmeasured.",
            "- HTTP/1.1 direct_response p03: boom",
            "### Why each call remains",
            "| adapter | request get_map request_headers | 1 | every stage reads request headers",
            "| circuit-breaker | log get_shared_data | 2 | records the outcome",
            "| circuit-breaker | log something_unmeasured | 1 | **no reason recorded** |",
        ] {
            assert!(md.contains(part), "missing {part:?} in\n{md}");
        }
        assert!(md.contains("| HTTP/1.1 direct_response, as the suite runs them | 20.0 |"));
        assert!(md.contains("| calls: Σ count × cost µs | calls: mix, per iteration µs |"));
        assert!(md.contains("**µs of own code** (h1 direct, `suite_in_vm` per iteration of 4)"));
        // fixed 20 + calls (get_map 1 × 1.05 + route_name 1.05 + 2 × 1.05) + compute 1.05 × 1
        let row = md
            .lines()
            .find(|l| l.starts_with("| HTTP/1.1 direct_response, from per-call costs | 20.0 |"))
            .unwrap();
        assert!(row.contains("| 4.2 | 1.1 | 25.2 | 100.5 ±0.5 |"), "{row}");
    }

    #[test]
    fn counts_and_numbers_are_shown_briefly() {
        assert_eq!(count(0.0), "");
        assert_eq!(count(2.0), "2");
        assert_eq!(count(1.25), "1.25");
        assert_eq!(num(0.0001, 1), "0");
        assert_eq!(num(-1.26, 1), "-1.3");
        assert_eq!(est(None, 1), "–");
    }
}
