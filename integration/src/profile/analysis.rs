//! The profile's arithmetic, pure: references interpolated between their runs, slopes per call,
//! medians and spreads over rounds, the suite's host calls by stage, and the prediction of the
//! suite's overhead from its parts.
//! Over 600 lines: a third is its unit tests, which pin each formula with hand-computed cases.

use std::collections::BTreeMap;

use crate::bench::{median, Variant};

/// One measured run: which listener, where in its round's sequence, what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub round: usize,
    /// Position in the round's sequence for this variant (0, 1, 2, …).
    pub pos: usize,
    pub listener: String,
    pub variant: Variant,
    /// Envoy CPU µs per request.
    pub cpu: f64,
    pub rps: f64,
    pub errors: u64,
}

/// The value of `points` (position, value) at `pos`: linear between the nearest point before
/// and the nearest after, the nearest one when `pos` is outside them, `None` without points.
pub fn interpolate(points: &[(usize, f64)], pos: usize) -> Option<f64> {
    let before = points
        .iter()
        .filter(|(p, _)| *p <= pos)
        .max_by_key(|(p, _)| *p);
    let after = points
        .iter()
        .filter(|(p, _)| *p >= pos)
        .min_by_key(|(p, _)| *p);
    match (before, after) {
        (Some(&(p0, v0)), Some(&(p1, v1))) if p1 > p0 => {
            let t = (pos - p0) as f64 / (p1 - p0) as f64;
            Some(v0 + (v1 - v0) * t)
        }
        (Some(&(_, v)), _) | (None, Some(&(_, v))) => Some(v),
        (None, None) => None,
    }
}

/// The measurements of one profile run.
#[derive(Clone, Debug, Default)]
pub struct Runs {
    pub rounds: usize,
    pub measurements: Vec<Measurement>,
}

impl Runs {
    fn of<'a>(
        &'a self,
        listener: &'a str,
        variant: Variant,
        round: usize,
    ) -> impl Iterator<Item = &'a Measurement> + 'a {
        self.measurements
            .iter()
            .filter(move |m| m.listener == listener && m.variant == variant && m.round == round)
    }

    /// `listener`'s CPU µs/request in `round` at position `pos`, interpolated between its runs.
    pub fn reference(
        &self,
        listener: &str,
        variant: Variant,
        round: usize,
        pos: usize,
    ) -> Option<f64> {
        let points: Vec<(usize, f64)> = self
            .of(listener, variant, round)
            .map(|m| (m.pos, m.cpu))
            .collect();
        interpolate(&points, pos)
    }

    /// Per round: the mean over `listener`'s runs of (its CPU − `reference`'s at the same
    /// position), divided by `per`.
    pub fn paired(&self, listener: &str, reference: &str, variant: Variant, per: f64) -> Vec<f64> {
        (0..self.rounds)
            .filter_map(|round| {
                let diffs: Vec<f64> = self
                    .of(listener, variant, round)
                    .filter_map(|m| Some(m.cpu - self.reference(reference, variant, round, m.pos)?))
                    .collect();
                (!diffs.is_empty() && per > 0.0)
                    .then(|| diffs.iter().sum::<f64>() / diffs.len() as f64 / per)
            })
            .collect()
    }

    /// CPU µs/request of `listener`, per round (mean of its runs in the round).
    pub fn cpu(&self, listener: &str, variant: Variant) -> Vec<f64> {
        (0..self.rounds)
            .filter_map(|round| {
                let v: Vec<f64> = self.of(listener, variant, round).map(|m| m.cpu).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            })
            .collect()
    }

    /// Load-generator errors of `listener` over every run.
    pub fn errors(&self, listener: &str, variant: Variant) -> u64 {
        self.measurements
            .iter()
            .filter(|m| m.listener == listener && m.variant == variant)
            .map(|m| m.errors)
            .sum()
    }
}

/// A median over rounds and half the range, in the value's unit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub median: f64,
    /// Half the range over rounds (0 with one round).
    pub spread: f64,
    pub rounds: usize,
}

impl Estimate {
    pub fn of(values: &[f64]) -> Option<Estimate> {
        let m = median(values)?;
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Estimate {
            median: m,
            spread: if values.len() > 1 {
                (hi - lo) / 2.0
            } else {
                0.0
            },
            rounds: values.len(),
        })
    }
}

/// Host calls per request, by `"<phase> <call>"` (`request get_property xds.route_name`).
pub type Counts = BTreeMap<String, f64>;

/// The suite's counts report (`{"suites": [{"requests": n, "calls": {key: total}}, …]}`) as
/// calls per request, one map per configuration.
pub fn counts_from_report(json: &serde_json::Value) -> Result<Vec<Counts>, String> {
    let suites = json
        .get("suites")
        .and_then(|s| s.as_array())
        .ok_or("the report has no `suites` list")?;
    suites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let requests = s.get("requests").and_then(|r| r.as_f64()).unwrap_or(0.0);
            if requests <= 0.0 {
                return Err(format!("suite {i}: no request was counted"));
            }
            let calls = s
                .get("calls")
                .and_then(|c| c.as_object())
                .ok_or_else(|| format!("suite {i}: no `calls`"))?;
            Ok(calls
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()? / requests)))
                .collect())
        })
        .collect()
}

/// Marginal counts: the first configuration's own, then each one's minus the one before (the
/// configurations add one stage at a time). Calls a later stage saves (a property cached since
/// an earlier stage read it) show as negative.
pub fn marginal(prefixes: &[Counts]) -> Vec<Counts> {
    let empty = Counts::new();
    let mut out = Vec::new();
    for (i, c) in prefixes.iter().enumerate() {
        let before = if i == 0 {
            &empty
        } else {
            prefixes.get(i - 1).unwrap_or(&empty)
        };
        let mut d = Counts::new();
        for key in c.keys().chain(before.keys()) {
            let x = c.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0);
            if x.abs() > 1e-9 {
                d.insert(key.clone(), x);
            }
        }
        out.push(d);
    }
    out
}

/// `"request get_property xds.route_name"` → (`"request"`, `"get_property xds.route_name"`).
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once(' ').unwrap_or(("", key))
}

/// Measured cost per call, µs, by `"<phase> <call>"`.
pub type Costs = BTreeMap<String, f64>;

/// The cost of a counted call: measured in its phase, else the same call measured in another
/// phase (request first). The key it was priced with comes along.
pub fn cost_of<'a>(costs: &'a Costs, key: &'a str) -> Option<(&'a str, f64)> {
    if let Some((k, v)) = costs.get_key_value(key) {
        return Some((k.as_str(), *v));
    }
    let (_, call) = split_key(key);
    let mut same: Vec<(&String, &f64)> = costs
        .iter()
        .filter(|(k, _)| split_key(k).1 == call)
        .collect();
    same.sort_by_key(|(k, _)| !k.starts_with("request "));
    same.first().map(|(k, v)| (k.as_str(), **v))
}

/// One priced row: a counted call, its count per request, what one costs, the product.
#[derive(Clone, Debug, PartialEq)]
pub struct Priced {
    pub key: String,
    pub count: f64,
    /// The measured key it was priced with (itself, or the same call in another phase).
    pub priced_as: Option<String>,
    pub cost: Option<f64>,
    pub total: f64,
}

/// Every counted call priced, most expensive first; unpriced calls count 0 and carry no cost.
pub fn price(counts: &Counts, costs: &Costs) -> Vec<Priced> {
    let mut rows: Vec<Priced> = counts
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(key, &count)| {
            let found = cost_of(costs, key);
            Priced {
                key: key.clone(),
                count,
                priced_as: found.map(|(k, _)| k.to_owned()),
                cost: found.map(|(_, c)| c),
                total: found.map_or(0.0, |(_, c)| c * count),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.total.total_cmp(&a.total));
    rows
}

/// The suite's overhead from its parts, against the measured one.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// A wasm HttpContext that does nothing, above bare Envoy.
    pub fixed: f64,
    /// Σ count × cost per call.
    pub calls: f64,
    /// The suite's own code per request (`suite_in_vm` per iteration).
    pub compute: f64,
    /// Measured overhead of the suite above bare Envoy.
    pub measured: Option<f64>,
}

impl Prediction {
    pub fn predicted(&self) -> f64 {
        self.fixed + self.calls + self.compute
    }

    /// predicted ÷ measured.
    pub fn ratio(&self) -> Option<f64> {
        self.measured
            .filter(|m| *m > 0.0)
            .map(|m| self.predicted() / m)
    }

    /// Within 20 % of the measured overhead.
    pub fn explains(&self) -> Option<bool> {
        self.ratio().map(|r| (0.8..=1.2).contains(&r))
    }
}

/// A probe's slope in one variant.
#[derive(Clone, Debug, PartialEq)]
pub struct Slope {
    /// Index into the probe list.
    pub probe: usize,
    /// µs per call (per request for a local reply; per iteration for `suite_in_vm`).
    pub estimate: Option<Estimate>,
    /// Measured on another variant's route (the same protocol, direct), since the call does
    /// not depend on the route.
    pub borrowed: bool,
}

/// Everything the profile concludes for one variant.
#[derive(Clone, Debug, PartialEq)]
pub struct VariantAnalysis {
    pub variant: Variant,
    pub slopes: Vec<Slope>,
    /// Per call, µs, by counted key (the medians of the slopes that price a call).
    pub costs: Costs,
    /// The do-nothing probe above bare Envoy.
    pub fixed: Option<Estimate>,
    /// `suite_in_vm` per iteration of a loop.
    pub compute: Option<Estimate>,
    /// `suite_in_vm` once per request.
    pub compute_once: Option<Estimate>,
    /// `suite_in_vm` per iteration of the suite with its first 0, 1, …, 5 stages.
    pub stage_compute: Vec<Option<Estimate>>,
    /// `call_mix` per iteration of a loop: the suite's calls in its order and mix.
    pub mix: Option<Estimate>,
    /// `call_mix` once per request.
    pub mix_once: Option<Estimate>,
    /// The suite above bare Envoy.
    pub suite: Option<Estimate>,
    /// The calibration filter above bare Envoy.
    pub calibration: Option<Estimate>,
    /// The suite's calls on this route, priced.
    pub priced: Vec<Priced>,
    pub prediction: Prediction,
    /// The same from parts measured as the suite runs them, once per request: the fixed cost,
    /// the suite's calls replayed once (`call_mix`), its code once (`suite_in_vm`).
    pub as_run: Prediction,
    /// The calibration filter from its parts: the fixed cost, one request-header read, one
    /// request-header add, one response-header add.
    pub calibration_prediction: Prediction,
}

impl VariantAnalysis {
    /// The suite's calls replayed once per request ÷ Σ count × cost per call: how much more the
    /// calls cost as the suite makes them than in loops of one kind.
    pub fn calls_factor(&self) -> Option<f64> {
        let sum = self.prediction.calls;
        self.mix_once
            .map(|m| m.median / sum)
            .filter(|f| f.is_finite() && sum > 0.0)
    }

    /// The suite's code once per request ÷ per iteration of a loop.
    pub fn code_factor(&self) -> Option<f64> {
        match (self.compute_once, self.compute) {
            (Some(once), Some(looped)) if looped.median > 0.0 => Some(once.median / looped.median),
            _ => None,
        }
    }
}

/// The calls the calibration filter makes per request.
pub const CALIBRATION_CALLS: [&str; 3] = [
    "request get_map_value request_headers",
    "request add_map_value request_headers",
    "response add_map_value response_headers",
];

/// Concludes the profile for each variant: slopes (paired with their references within each
/// round), the fixed cost, the suite's compute, the suite's calls priced, and the predictions.
pub fn analyse(
    probes: &[crate::profile::catalogue::Probe],
    runs: &Runs,
    counts: &BTreeMap<crate::bench::Route, Counts>,
    variants: &[Variant],
) -> Vec<VariantAnalysis> {
    use crate::bench::Route;
    use crate::profile::catalogue::{Prices, BARE, CALIBRATION, NONE, SUITE};

    let slope_in = |i: usize, v: Variant| -> Option<Estimate> {
        let p = probes.get(i)?;
        if !p.routes.has(v.route) || !variants.contains(&v) {
            return None;
        }
        Estimate::of(&runs.paired(&p.listener, &p.reference(), v, f64::from(p.k)))
    };
    variants
        .iter()
        .map(|&v| {
            let direct = Variant {
                protocol: v.protocol,
                route: Route::Direct,
            };
            let slopes: Vec<Slope> = (0..probes.len())
                .map(|i| match slope_in(i, v) {
                    Some(e) => Slope {
                        probe: i,
                        estimate: Some(e),
                        borrowed: false,
                    },
                    None => {
                        let here = probes.get(i).is_some_and(|p| p.routes.has(v.route));
                        let borrowed = if here || v.route == Route::Direct {
                            None
                        } else {
                            slope_in(i, direct)
                        };
                        Slope {
                            probe: i,
                            borrowed: borrowed.is_some(),
                            estimate: borrowed,
                        }
                    }
                })
                .collect();
            let mut costs = Costs::new();
            let (mut compute, mut compute_once, mut mix, mut mix_once) = (None, None, None, None);
            let mut stage_compute = vec![None; crate::bench::Stage::ALL.len() + 1];
            for s in &slopes {
                match (probes.get(s.probe).map(|p| &p.prices), s.estimate) {
                    (Some(Prices::Call(key)), Some(e)) => {
                        costs.insert(key.clone(), e.median);
                    }
                    (Some(Prices::Compute), e) => compute = e,
                    (Some(Prices::ComputeOnce), e) => compute_once = e,
                    (Some(Prices::StageCompute(i)), e) => {
                        if let Some(slot) = stage_compute.get_mut(*i) {
                            *slot = e;
                        }
                    }
                    (Some(Prices::Mix), e) => mix = e,
                    (Some(Prices::MixOnce), e) => mix_once = e,
                    _ => {}
                }
            }
            if let Some(last) = stage_compute.last_mut() {
                *last = compute;
            }
            let fixed = Estimate::of(&runs.paired(NONE, BARE, v, 1.0));
            let suite = Estimate::of(&runs.paired(SUITE, BARE, v, 1.0));
            let calibration = Estimate::of(&runs.paired(CALIBRATION, BARE, v, 1.0));
            let empty = Counts::new();
            let priced = price(counts.get(&v.route).unwrap_or(&empty), &costs);
            let prediction = Prediction {
                fixed: fixed.map_or(0.0, |e| e.median),
                calls: priced.iter().map(|r| r.total).sum(),
                compute: compute.map_or(0.0, |e| e.median),
                measured: suite.map(|e| e.median),
            };
            let as_run = Prediction {
                fixed: prediction.fixed,
                calls: mix_once.map_or(0.0, |e| e.median),
                compute: compute_once.map_or(0.0, |e| e.median),
                measured: prediction.measured,
            };
            let calibration_prediction = Prediction {
                fixed: prediction.fixed,
                calls: CALIBRATION_CALLS
                    .iter()
                    .filter_map(|k| cost_of(&costs, k).map(|(_, c)| c))
                    .sum(),
                compute: 0.0,
                measured: calibration.map(|e| e.median),
            };
            VariantAnalysis {
                variant: v,
                slopes,
                costs,
                fixed,
                compute,
                compute_once,
                stage_compute,
                mix,
                mix_once,
                suite,
                calibration,
                priced,
                prediction,
                as_run,
                calibration_prediction,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::bench::{Protocol, Route};

    const V: Variant = Variant {
        protocol: Protocol::Http1,
        route: Route::Direct,
    };

    fn m(round: usize, pos: usize, listener: &str, cpu: f64) -> Measurement {
        Measurement {
            round,
            pos,
            listener: listener.to_owned(),
            variant: V,
            cpu,
            rps: 1000.0,
            errors: 0,
        }
    }

    #[test]
    fn references_are_interpolated_between_their_runs() {
        let p = [(2, 10.0), (6, 14.0)];
        assert_eq!(interpolate(&p, 4), Some(12.0));
        assert_eq!(interpolate(&p, 2), Some(10.0));
        assert_eq!(interpolate(&p, 0), Some(10.0));
        assert_eq!(interpolate(&p, 9), Some(14.0));
        assert_eq!(interpolate(&[], 1), None);
    }

    #[test]
    fn a_slope_is_the_paired_difference_per_call_and_its_spread_the_half_range() {
        // Baseline drifts from 50 to 54 across the round; the probe at k = 32 sits in between and
        // costs 32 µs more than the baseline at its position.
        let runs = Runs {
            rounds: 3,
            measurements: vec![
                m(0, 0, "none", 50.0),
                m(0, 1, "p", 84.0),
                m(0, 2, "none", 54.0),
                m(1, 0, "none", 50.0),
                m(1, 1, "p", 82.0),
                m(1, 2, "none", 50.0),
                m(2, 0, "none", 50.0),
                m(2, 1, "p", 83.6),
                m(2, 2, "none", 50.0),
            ],
        };
        let slopes = runs.paired("p", "none", V, 32.0);
        assert_eq!(slopes.len(), 3);
        assert!((slopes[0] - 1.0).abs() < 1e-9);
        let e = Estimate::of(&slopes).unwrap();
        assert!((e.median - 1.0).abs() < 1e-9, "{e:?}");
        assert!((e.spread - (1.05 - 1.0) / 2.0).abs() < 1e-9, "{e:?}");
        assert_eq!(e.rounds, 3);
        assert_eq!(runs.cpu("none", V), vec![52.0, 50.0, 50.0]);
        assert!(runs.paired("p", "missing", V, 32.0).is_empty());
        assert_eq!(Estimate::of(&[2.0]).unwrap().spread, 0.0);
    }

    #[test]
    fn stages_get_their_marginal_counts() {
        let c = |pairs: &[(&str, f64)]| -> Counts {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        let prefixes = vec![
            c(&[("request get_map request_headers", 1.0)]),
            c(&[
                ("request get_map request_headers", 1.0),
                ("request get_property xds.route_name", 1.0),
            ]),
            c(&[
                ("request get_map request_headers", 1.0),
                ("request get_property xds.route_name", 1.0),
                ("log get_shared_data", 2.0),
            ]),
        ];
        let d = marginal(&prefixes);
        assert_eq!(d[0], prefixes[0]);
        assert_eq!(d[1], c(&[("request get_property xds.route_name", 1.0)]));
        assert_eq!(d[2], c(&[("log get_shared_data", 2.0)]));
    }

    #[test]
    fn the_report_becomes_calls_per_request() {
        let json = serde_json::json!({"suites": [
            {"requests": 4, "calls": {"request get_map request_headers": 4, "log get_shared_data": 8}},
        ]});
        let c = counts_from_report(&json).unwrap();
        assert_eq!(c[0]["request get_map request_headers"], 1.0);
        assert_eq!(c[0]["log get_shared_data"], 2.0);
        let none = serde_json::json!({"suites": [{"requests": 0, "calls": {}}]});
        assert!(counts_from_report(&none).is_err());
    }

    #[test]
    fn calls_are_priced_in_their_phase_or_in_another() {
        let costs: Costs = [
            ("request get_property xds.route_name".to_owned(), 1.0),
            ("request get_shared_data".to_owned(), 1.5),
            ("response get_shared_data".to_owned(), 9.0),
            ("log get_property response.code".to_owned(), 0.8),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            cost_of(&costs, "log get_shared_data"),
            Some(("request get_shared_data", 1.5))
        );
        assert_eq!(
            cost_of(&costs, "response get_shared_data"),
            Some(("response get_shared_data", 9.0))
        );
        assert_eq!(cost_of(&costs, "log random_get"), None);
        let counts: Counts = [
            ("request get_property xds.route_name".to_owned(), 1.0),
            ("log get_shared_data".to_owned(), 2.0),
            ("log random_get".to_owned(), 1.0),
        ]
        .into_iter()
        .collect();
        let rows = price(&counts, &costs);
        assert_eq!(rows[0].key, "log get_shared_data");
        assert!((rows[0].total - 3.0).abs() < 1e-9);
        assert_eq!(rows.last().unwrap().cost, None);
        let total: f64 = rows.iter().map(|r| r.total).sum();
        assert!((total - 4.0).abs() < 1e-9);
    }

    #[test]
    fn a_prediction_adds_its_parts_and_says_whether_it_explains_the_measurement() {
        let p = Prediction {
            fixed: 20.0,
            calls: 40.0,
            compute: 10.0,
            measured: Some(80.0),
        };
        assert_eq!(p.predicted(), 70.0);
        assert_eq!(p.ratio(), Some(0.875));
        assert_eq!(p.explains(), Some(true));
        let far = Prediction {
            measured: Some(100.0),
            ..p.clone()
        };
        assert_eq!(far.explains(), Some(false));
        let unmeasured = Prediction {
            measured: None,
            ..p
        };
        assert_eq!(unmeasured.explains(), None);
    }

    #[test]
    fn the_analysis_prices_the_suites_calls_and_borrows_direct_costs_on_the_proxied_route() {
        use crate::profile::catalogue::{probes, Prices, BARE, CALIBRATION, NONE, SUITE};
        let probes = probes();
        let route_name = probes
            .iter()
            .position(|p| p.prices == Prices::Call("request get_property xds.route_name".into()))
            .unwrap();
        let compute = probes
            .iter()
            .position(|p| p.prices == Prices::Compute)
            .unwrap();
        let proxied = Variant {
            protocol: Protocol::Http1,
            route: Route::Proxied,
        };
        let mut ms = Vec::new();
        for (v, extra) in [(V, 0.0), (proxied, 30.0)] {
            let mut add = |pos: usize, l: &str, cpu: f64| {
                ms.push(Measurement {
                    variant: v,
                    ..m(0, pos, l, cpu + extra)
                });
            };
            add(0, BARE, 50.0);
            add(1, NONE, 70.0);
            add(2, SUITE, 150.0);
            add(3, CALIBRATION, 75.0);
            if v == V {
                add(4, &probes[route_name].listener, 70.0 + 32.0 * 1.5);
            }
            add(5, &probes[compute].reference(), 75.0);
            add(6, &probes[compute].listener, 75.0 + 4.0 * 10.0);
            add(7, NONE, 70.0);
            add(8, BARE, 50.0);
        }
        let runs = Runs {
            rounds: 1,
            measurements: ms,
        };
        let counts: BTreeMap<Route, Counts> = [Route::Direct, Route::Proxied]
            .into_iter()
            .map(|r| {
                (
                    r,
                    [("request get_property xds.route_name".to_owned(), 2.0)]
                        .into_iter()
                        .collect(),
                )
            })
            .collect();
        let a = analyse(&probes, &runs, &counts, &[V, proxied]);
        let d = &a[0];
        assert_eq!(d.fixed.unwrap().median, 20.0);
        assert_eq!(d.suite.unwrap().median, 100.0);
        assert_eq!(d.compute.unwrap().median, 10.0);
        assert_eq!(d.costs["request get_property xds.route_name"], 1.5);
        assert_eq!(d.prediction.predicted(), 20.0 + 2.0 * 1.5 + 10.0);
        assert_eq!(d.prediction.measured, Some(100.0));
        assert_eq!(d.calibration.unwrap().median, 25.0);
        // The proxied run did not measure xds.route_name: it borrows the direct cost.
        let p = &a[1];
        let s = &p.slopes[route_name];
        assert!(s.borrowed);
        assert_eq!(s.estimate.unwrap().median, 1.5);
        assert_eq!(p.compute.unwrap().median, 10.0);
        assert!(!p.slopes[compute].borrowed);
    }
}
