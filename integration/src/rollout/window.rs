//! The load's requests within a time window: counts and latency quantiles.

use std::time::Duration;

use super::*;

/// The load's requests sent within a time window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    pub requests: usize,
    /// Answered 200.
    pub ok: usize,
    /// Answered with another status.
    pub non_2xx: usize,
    /// Sent and never answered.
    pub failed: usize,
    /// Answers that closed their connection (a draining Envoy moving its clients).
    pub closed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Window {
    /// Requests lost: failed or not answered 200.
    pub fn lost(&self) -> usize {
        self.failed + self.non_2xx
    }
}

/// The `q` quantile (0..=1) of sorted values, nearest rank; 0 when there are none.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

/// The requests of `events` sent in `[from, to)`.
pub fn window(events: &[Event], from: Duration, to: Duration) -> Window {
    let inside: Vec<&Event> = events
        .iter()
        .filter(|e| e.at >= from && e.at < to)
        .collect();
    let mut latencies: Vec<f64> = inside
        .iter()
        .map(|e| e.latency.as_secs_f64() * 1e3)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mut w = Window {
        requests: inside.len(),
        p50_ms: quantile(&latencies, 0.5),
        p99_ms: quantile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        ..Window::default()
    };
    for e in inside {
        match &e.outcome {
            Outcome::Answered { status, closed, .. } => {
                if *status == 200 {
                    w.ok += 1;
                } else {
                    w.non_2xx += 1;
                }
                if *closed {
                    w.closed += 1;
                }
            }
            Outcome::Failed(_) => w.failed += 1,
        }
    }
    w
}
