//! The circuit-breaker stage: the adapter-facing table of contents of the filter.
//!
//! Request headers: read the breaker of this route (or cluster) from shared data and ask it
//! ([`Snapshot::admit`]); write back only when admitting changed it (a probe slot taken, Open →
//! HalfOpen). A rejection answers 503 / UNAVAILABLE with `retry-after` and `RetryInfo`.
//! End of stream (`on_log`): classify the outcome and record it with compare-and-swap, so one
//! breaker serves every worker. Replies our own filters made locally are not upstream outcomes:
//! they are not recorded, and a probe they stopped gives its slot back.

use crate::breaker::{Admission, Outcome, Phase, Snapshot, Transition, Trigger};
use crate::config::Config;
use mesh_kit::host::{Host, Property};
use mesh_kit::metrics::Stats;
use mesh_kit::reply::{GrpcCode, Reply};
use mesh_kit::shared::{update, Label, CAS_TRIES};
use mesh_kit::stage::{Cx, Flow, Stage};
use mesh_kit::values::format_duration;
use std::time::Duration;

mesh_kit::stats! {
    /// The breaker's stats, per route or per cluster (`scope`).
    pub enum Stat {
        State = gauge("state"),
        RqRejected = counter("rq_rejected"),
        Failures = counter("failures"),
        SlowCalls = counter("slow_calls"),
        Opened = counter("opened"),
        Closed = counter("closed"),
        ConfigError = counter("config_error"),
        StateError = counter("state_error"),
    }
}

pub struct CircuitBreaker;

/// What one request carries from admission to its end.
#[derive(Default)]
pub struct State {
    key: Option<std::rc::Rc<str>>,
    label: Label,
    admission: Option<Admission>,
    start_us: u64,
}

impl Stage for CircuitBreaker {
    const NAME: &'static str = "mesh.circuit_breaker";
    type Stat = Stat;

    type Config = Config;
    type Request = State;

    fn describe(c: &Config) -> String {
        let mut s = format!("{} fails", c.consecutive_failures);
        if let Some(r) = c.failure_rate {
            s.push_str(&format!("|{}%", r.get() * 100.0));
        }
        if let Some(d) = c.slow_call_duration {
            s.push_str(&format!("|{}%>{d}", c.slow_call_rate.get() * 100.0));
        }
        s.push_str(&format!(", open {}", c.open_duration));
        s
    }

    fn new(_config: &Config, _host: &dyn Host) -> Self {
        CircuitBreaker
    }

    fn on_request_headers(&self, cx: &mut Cx<'_, Self>) -> Flow {
        let label = cx.config.scope.label(cx.ex);
        let key = cx.state_key(&label);
        let settings = cx.config.settings();
        let now = cx.ex.now_us();
        let decided = update(cx.host(), &key, CAS_TRIES, |bytes| {
            let mut snap = bytes.and_then(Snapshot::decode).unwrap_or_default();
            let (admission, transition) = snap.admit(&settings, now);
            let write = matches!(admission, Admission::Probe { .. }).then(|| snap.encode());
            (write, (admission, transition))
        });
        let stats = cx.stats_for(&label);
        let (admission, transition) = match decided {
            Ok(d) => d,
            Err(e) => {
                // Fail open: let the call through unrecorded.
                stats.inc(cx.host(), Stat::StateError);
                log::warn!(
                    "{}: {} {:?}: shared state update failed ({e:?}); request let through",
                    Self::NAME,
                    label.kind,
                    label.name
                );
                return Flow::Continue;
            }
        };
        if let Some(t) = transition {
            announce(cx.host(), &stats, &label, t);
        }
        match admission {
            Admission::Reject { retry_after_us } => {
                stats.inc(cx.host(), Stat::RqRejected);
                let retry = Duration::from_micros(retry_after_us);
                let message = format!(
                    "circuit breaker open for {} {}; retry in {}",
                    label.kind,
                    label.name,
                    format_duration(retry)
                );
                Flow::Reject(
                    Reply::new(503, GrpcCode::Unavailable, "circuit_open", message)
                        .with_retry_after(retry)
                        .with_error_info(),
                )
            }
            admitted => {
                *cx.state = State {
                    key: Some(key),
                    label,
                    admission: Some(admitted),
                    start_us: now,
                };
                Flow::Continue
            }
        }
    }

    fn on_log(&self, cx: &mut Cx<'_, Self>) {
        let Some(admission) = cx.state.admission else {
            return;
        };
        let Some(key) = cx.state.key.take() else {
            return;
        };
        let label = std::mem::take(&mut cx.state.label);
        let stats = cx.stats_for(&label);
        if cx.ex.is_our_local_reply() {
            // Another of our filters answered: not an upstream outcome. Free a probe slot.
            if matches!(admission, Admission::Probe { .. }) {
                let _ = update(cx.host(), &key, CAS_TRIES, |bytes| {
                    let mut snap = bytes.and_then(Snapshot::decode).unwrap_or_default();
                    let write = snap.release(admission).then(|| snap.encode());
                    (write, ())
                });
            }
            return;
        }
        let now = cx.ex.now_us();
        let outcome = classify(cx, now.saturating_sub(cx.state.start_us));
        if outcome.failed {
            stats.inc(cx.host(), Stat::Failures);
        }
        if outcome.slow {
            stats.inc(cx.host(), Stat::SlowCalls);
        }
        let settings = cx.config.settings();
        let recorded = update(cx.host(), &key, CAS_TRIES, |bytes| {
            let before = bytes.and_then(Snapshot::decode).unwrap_or_default();
            let mut snap = before.clone();
            let transition = snap.record(&settings, admission, outcome, now);
            let write = (snap != before).then(|| snap.encode());
            (write, transition)
        });
        match recorded {
            Ok(Some(t)) => announce(cx.host(), &stats, &label, t),
            Ok(None) => {}
            Err(e) => {
                stats.inc(cx.host(), Stat::StateError);
                log::warn!(
                    "{}: {} {:?}: outcome not recorded ({e:?})",
                    Self::NAME,
                    label.kind,
                    label.name
                );
            }
        }
    }
}

/// Failure and slowness of a finished call, from Envoy's view of it.
fn classify(cx: &Cx<'_, CircuitBreaker>, elapsed_us: u64) -> Outcome {
    let code = cx.ex.int(Property::ResponseCode).unwrap_or(0);
    let flags = cx.ex.int(Property::ResponseFlags).unwrap_or(0);
    let mut failed = cx.config.failure_on.matches(code, flags);
    if !failed && cx.ex.is_grpc() {
        // Derived from headers or trailers by Envoy; meaningful because the request is gRPC.
        if let Some(status) = cx.ex.int(Property::ResponseGrpcStatus) {
            failed = cx.config.grpc_failure_on.matches(status);
        }
    }
    let slow = cx
        .config
        .slow_call_duration
        .is_some_and(|d| u128::from(elapsed_us) > d.get().as_micros());
    Outcome { failed, slow }
}

/// Logs a transition once (the worker whose write made it) and updates the metrics.
fn announce(host: &dyn Host, stats: &Stats<Stat>, label: &Label, t: Transition) {
    let (scope, name) = (label.kind, &label.name);
    let name_s = CircuitBreaker::NAME;
    match t {
        Transition::Opened { for_us, trigger } => {
            stats.set(host, Stat::State, Phase::Open as u64);
            stats.inc(host, Stat::Opened);
            let why = match trigger {
                Trigger::ConsecutiveFailures(n) => format!("{n} consecutive failures"),
                Trigger::FailureRate(r) => format!("failure rate {:.0}%", r * 100.0),
                Trigger::SlowCallRate(r) => format!("slow-call rate {:.0}%", r * 100.0),
            };
            log::warn!(
                "{name_s}: {scope} {name:?} opened for {} after {why}",
                format_duration(Duration::from_micros(for_us))
            );
        }
        Transition::Reopened { for_us } => {
            stats.set(host, Stat::State, Phase::Open as u64);
            stats.inc(host, Stat::Opened);
            log::warn!(
                "{name_s}: {scope} {name:?} re-opened for {}: a probe failed",
                format_duration(Duration::from_micros(for_us))
            );
        }
        Transition::HalfOpened => {
            stats.set(host, Stat::State, Phase::HalfOpen as u64);
            log::info!("{name_s}: {scope} {name:?} half-open: probing");
        }
        Transition::Closed => {
            stats.set(host, Stat::State, Phase::Closed as u64);
            stats.inc(host, Stat::Closed);
            log::info!("{name_s}: {scope} {name:?} closed: probes succeeded");
        }
    }
}
