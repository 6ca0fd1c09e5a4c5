//! The numbers: one measured run of one variant ([`Sample`]), one configuration in one round
//! ([`Run`]), everything ([`Results`]) with the paired per-round comparisons (overheads over bare
//! Envoy, ratios to the calibration filter), and the statistics over rounds (median, spread,
//! percentile).

use std::collections::BTreeMap;

use super::{Kind, Variant};

/// One measured run of one variant.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Requests the measured Envoy completed in the window.
    pub requests: u64,
    pub window_s: f64,
    /// Envoy CPU time in the window, µs.
    pub cpu_us: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx and failed requests the load generator saw over its whole run.
    pub errors: u64,
}

impl Sample {
    pub fn rps(&self) -> f64 {
        if self.window_s > 0.0 {
            self.requests as f64 / self.window_s
        } else {
            0.0
        }
    }

    pub fn cpu_per_request(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.cpu_us / self.requests as f64)
    }

    /// Share of one core the measured Envoy used in the window: near 1 when Envoy, not the load
    /// core, limits the throughput.
    pub fn utilisation(&self) -> f64 {
        if self.window_s > 0.0 {
            self.cpu_us / 1e6 / self.window_s
        } else {
            0.0
        }
    }
}

/// One configuration in one round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Run {
    pub startup_ms: f64,
    pub rss_kib: u64,
    pub samples: BTreeMap<Variant, Result<Sample, String>>,
}

/// Everything measured: `rounds[r][kind]`.
#[derive(Clone, Debug, Default)]
pub struct Results {
    pub kinds: Vec<Kind>,
    pub rounds: Vec<BTreeMap<Kind, Result<Run, String>>>,
}

/// Median of values (mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v.get(mid).copied()
    } else {
        Some((v.get(mid - 1)? + v.get(mid)?) / 2.0)
    }
}

/// Half the range, as a fraction of the median: `±x`.
pub fn spread(values: &[f64]) -> Option<f64> {
    let m = median(values)?;
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (m != 0.0 && values.len() > 1).then(|| (hi - lo) / 2.0 / m.abs())
}

impl Results {
    fn run(&self, round: usize, kind: Kind) -> Option<&Run> {
        self.rounds.get(round)?.get(&kind)?.as_ref().ok()
    }

    fn sample(&self, round: usize, kind: Kind, v: Variant) -> Option<&Sample> {
        self.run(round, kind)?.samples.get(&v)?.as_ref().ok()
    }

    /// Per-round values of `f` where it is defined.
    fn per_round(&self, f: impl Fn(usize) -> Option<f64>) -> Vec<f64> {
        (0..self.rounds.len()).filter_map(f).collect()
    }

    pub fn rps(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| Some(self.sample(r, kind, v)?.rps()))
    }

    pub fn cpu(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| self.sample(r, kind, v)?.cpu_per_request())
    }

    pub fn utilisation(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| Some(self.sample(r, kind, v)?.utilisation()))
    }

    pub fn p50(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| Some(self.sample(r, kind, v)?.p50_ms))
    }

    pub fn p99(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| Some(self.sample(r, kind, v)?.p99_ms))
    }

    pub fn errors(&self, kind: Kind, v: Variant) -> u64 {
        (0..self.rounds.len())
            .filter_map(|r| self.sample(r, kind, v).map(|s| s.errors))
            .sum()
    }

    /// CPU µs per request above bare Envoy, per round.
    pub fn overhead(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| {
            Some(
                self.sample(r, kind, v)?.cpu_per_request()?
                    - self.sample(r, Kind::Bare, v)?.cpu_per_request()?,
            )
        })
    }

    /// Overhead ÷ the calibration filter's overhead, per round.
    pub fn vs_calibration(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.overhead_vs(kind, Kind::Calibration, v)
    }

    /// Overhead ÷ the overhead of `reference`, per round (rounds where the reference's
    /// overhead is not above 0 have no ratio).
    pub fn overhead_vs(&self, kind: Kind, reference: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| {
            let bare = self.sample(r, Kind::Bare, v)?.cpu_per_request()?;
            let theirs = self.sample(r, reference, v)?.cpu_per_request()? - bare;
            let own = self.sample(r, kind, v)?.cpu_per_request()? - bare;
            (theirs > 0.0).then(|| own / theirs)
        })
    }

    /// CPU per request ÷ bare Envoy's, per round.
    pub fn cpu_vs_bare(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| {
            let bare = self.sample(r, Kind::Bare, v)?.cpu_per_request()?;
            Some(self.sample(r, kind, v)?.cpu_per_request()? / bare)
        })
    }

    /// Requests/s ÷ bare Envoy's, per round.
    pub fn rps_vs_bare(&self, kind: Kind, v: Variant) -> Vec<f64> {
        self.per_round(|r| {
            let bare = self.sample(r, Kind::Bare, v)?.rps();
            (bare > 0.0).then_some(self.sample(r, kind, v)?.rps() / bare)
        })
    }

    pub fn startup_ms(&self, kind: Kind) -> Vec<f64> {
        self.per_round(|r| Some(self.run(r, kind)?.startup_ms))
    }

    pub fn rss_mib(&self, kind: Kind) -> Vec<f64> {
        self.per_round(|r| Some(self.run(r, kind)?.rss_kib as f64 / 1024.0))
    }

    /// Start-up above bare Envoy, per round, ms.
    pub fn startup_vs_bare(&self, kind: Kind) -> Vec<f64> {
        self.per_round(|r| {
            Some(self.run(r, kind)?.startup_ms - self.run(r, Kind::Bare)?.startup_ms)
        })
    }

    /// RSS above bare Envoy, per round, MiB.
    pub fn rss_vs_bare(&self, kind: Kind) -> Vec<f64> {
        self.per_round(|r| {
            let own = self.run(r, kind)?.rss_kib as f64;
            let bare = self.run(r, Kind::Bare)?.rss_kib as f64;
            Some((own - bare) / 1024.0)
        })
    }

    /// The errors of a configuration (failed starts, failed checks, failed runs), deduplicated.
    pub fn failures(&self, kind: Kind) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for round in &self.rounds {
            let messages: Vec<String> = match round.get(&kind) {
                Some(Err(e)) => vec![e.clone()],
                Some(Ok(run)) => run
                    .samples
                    .iter()
                    .filter_map(|(v, s)| s.as_ref().err().map(|e| format!("{}: {e}", v.label())))
                    .collect(),
                None => vec![],
            };
            for m in messages {
                if !out.contains(&m) {
                    out.push(m);
                }
            }
        }
        out
    }
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn medians_spreads_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert!((spread(&[9.0, 10.0, 11.0]).unwrap() - 0.1).abs() < 1e-9);
        assert_eq!(spread(&[5.0]), None);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
    }
}
