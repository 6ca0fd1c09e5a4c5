//! The breaker state machine, pure: time comes in as microseconds, nothing is read inside.
//!
//! Words: **Closed = traffic flows**, Open = rejecting, HalfOpen = probing.
//!
//! - Closed: every outcome is recorded in a sliding window of ten buckets (each `window / 10`
//!   long) and in a consecutive-failure count. The breaker opens when `consecutive_failures`
//!   failures arrive in a row, or, once the window holds `minimum_requests` calls, when the
//!   failure ratio reaches `failure_rate` or the slow-call ratio reaches `slow_call_rate`.
//! - Open: requests are rejected until `open_until`; the first request after it turns the
//!   breaker HalfOpen and is admitted as a probe.
//! - HalfOpen: at most `half_open_requests` probes are admitted in this period; when that many
//!   have succeeded the breaker closes (counts reset); the first probe that fails re-opens it for
//!   twice the previous open time, up to `max_open`.
//!
//! Every transition bumps `generation`. A request remembers the generation it was admitted in,
//! and its outcome is recorded only if the breaker is still in that generation: a call admitted
//! before the breaker opened cannot close it, a probe of an earlier half-open period cannot
//! count in a later one.
//!
//! The whole state is a fixed-size record ([`Snapshot::encode`]) kept in Envoy's shared data, so
//! every worker of the process sees one breaker; the adapter reads it, applies one of these
//! functions and writes it back with compare-and-swap. The sliding window is the kit's
//! [`Window`] of three counts: calls, failures, slow calls.

use mesh_kit::record::{Reader, Writer};
use mesh_kit::window::Window;

const RECORD_VERSION: u8 = 1;
/// Bytes of an encoded [`Snapshot`].
pub const RECORD_LEN: usize = 2 + 4 + 4 + 8 + 8 + 4 + 4 + Window::<3>::ENCODED_LEN;
/// Indices of the window's counts.
const CALLS: usize = 0;
const FAILURES: usize = 1;
const SLOW: usize = 2;

/// The thresholds, in the units the machine uses (microseconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub consecutive_failures: u32,
    pub failure_rate: Option<f64>,
    /// Ratio of slow calls that opens the breaker; `None` when slow calls are not judged.
    pub slow_call_rate: Option<f64>,
    pub window_us: u64,
    pub minimum_requests: u32,
    pub open_us: u64,
    pub max_open_us: u64,
    pub half_open_requests: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

/// One breaker's whole state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub phase: Phase,
    pub generation: u32,
    pub consecutive: u32,
    pub open_until_us: u64,
    /// The open time of the current (or last) open period; doubles on each failed probe.
    pub open_for_us: u64,
    pub probes_in_flight: u32,
    pub probes_ok: u32,
    /// Calls, failures and slow calls in the sliding window.
    pub window: Window<3>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            phase: Phase::Closed,
            generation: 0,
            consecutive: 0,
            open_until_us: 0,
            open_for_us: 0,
            probes_in_flight: 0,
            probes_ok: 0,
            window: Window::default(),
        }
    }
}

/// What to do with a new request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Closed: let it through; its outcome is recorded.
    Allow { generation: u32 },
    /// HalfOpen: let it through as a probe.
    Probe { generation: u32 },
    /// Open, or HalfOpen with every probe slot taken.
    Reject { retry_after_us: u64 },
}

/// How a call ended, as the adapter classified it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub failed: bool,
    pub slow: bool,
}

/// Why the breaker opened.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trigger {
    ConsecutiveFailures(u32),
    FailureRate(f64),
    SlowCallRate(f64),
}

/// A change of phase, for the log and the metrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Transition {
    Opened { for_us: u64, trigger: Trigger },
    HalfOpened,
    Closed,
    Reopened { for_us: u64 },
}

/// Window totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub calls: u32,
    pub failures: u32,
    pub slow: u32,
}

impl Snapshot {
    /// Decides on a new request. May change the state (Open → HalfOpen, a probe slot taken);
    /// the caller writes it back when it did (`changed`).
    pub fn admit(&mut self, s: &Settings, now_us: u64) -> (Admission, Option<Transition>) {
        match self.phase {
            Phase::Closed => (
                Admission::Allow {
                    generation: self.generation,
                },
                None,
            ),
            Phase::Open if now_us < self.open_until_us => (
                Admission::Reject {
                    retry_after_us: self.open_until_us - now_us,
                },
                None,
            ),
            Phase::Open => {
                self.enter(Phase::HalfOpen);
                self.probes_in_flight = 1;
                (
                    Admission::Probe {
                        generation: self.generation,
                    },
                    Some(Transition::HalfOpened),
                )
            }
            Phase::HalfOpen => {
                if self.probes_in_flight.saturating_add(self.probes_ok)
                    < s.half_open_requests.max(1)
                {
                    self.probes_in_flight += 1;
                    (
                        Admission::Probe {
                            generation: self.generation,
                        },
                        None,
                    )
                } else {
                    // Probes are out; their answer decides. Ask again in a second.
                    (
                        Admission::Reject {
                            retry_after_us: 1_000_000,
                        },
                        None,
                    )
                }
            }
        }
    }

    /// Records the outcome of a call admitted with `admission`.
    pub fn record(
        &mut self,
        s: &Settings,
        admission: Admission,
        outcome: Outcome,
        now_us: u64,
    ) -> Option<Transition> {
        match admission {
            Admission::Allow { generation }
                if generation == self.generation && self.phase == Phase::Closed =>
            {
                if s.failure_rate.is_some() || s.slow_call_rate.is_some() {
                    // Without a rate to judge, the window is not kept: a success on a healthy
                    // breaker then changes nothing, and the adapter writes nothing.
                    self.count(s, outcome, now_us);
                }
                self.consecutive = if outcome.failed {
                    self.consecutive.saturating_add(1)
                } else {
                    0
                };
                let trigger = self.trigger(s, outcome, now_us)?;
                self.open(s.open_us, now_us);
                Some(Transition::Opened {
                    for_us: self.open_for_us,
                    trigger,
                })
            }
            Admission::Probe { generation }
                if generation == self.generation && self.phase == Phase::HalfOpen =>
            {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                if outcome.failed {
                    let doubled = self
                        .open_for_us
                        .saturating_mul(2)
                        .min(s.max_open_us.max(s.open_us));
                    self.open(doubled.max(s.open_us), now_us);
                    return Some(Transition::Reopened {
                        for_us: self.open_for_us,
                    });
                }
                self.probes_ok = self.probes_ok.saturating_add(1);
                if self.probes_ok >= s.half_open_requests.max(1) {
                    self.enter(Phase::Closed);
                    self.open_for_us = 0;
                    return Some(Transition::Closed);
                }
                None
            }
            _ => None,
        }
    }

    /// Gives back a probe slot whose request never reached the upstream (another filter
    /// answered it), so it neither closes nor re-opens the breaker.
    pub fn release(&mut self, admission: Admission) -> bool {
        match admission {
            Admission::Probe { generation }
                if generation == self.generation && self.phase == Phase::HalfOpen =>
            {
                self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    pub fn totals(&self, s: &Settings, now_us: u64) -> Totals {
        let t = self.window.totals(s.window_us, now_us);
        Totals {
            calls: t[CALLS],
            failures: t[FAILURES],
            slow: t[SLOW],
        }
    }

    fn count(&mut self, s: &Settings, outcome: Outcome, now_us: u64) {
        let mut delta = [0; 3];
        delta[CALLS] = 1;
        delta[FAILURES] = u32::from(outcome.failed);
        delta[SLOW] = u32::from(outcome.slow);
        self.window.add(s.window_us, now_us, delta);
    }

    fn trigger(&self, s: &Settings, outcome: Outcome, now_us: u64) -> Option<Trigger> {
        if outcome.failed && self.consecutive >= s.consecutive_failures.max(1) {
            return Some(Trigger::ConsecutiveFailures(self.consecutive));
        }
        let t = self.totals(s, now_us);
        if t.calls == 0 || t.calls < s.minimum_requests {
            return None;
        }
        let calls = f64::from(t.calls);
        if let Some(rate) = s.failure_rate {
            let r = f64::from(t.failures) / calls;
            if t.failures > 0 && r >= rate {
                return Some(Trigger::FailureRate(r));
            }
        }
        if let Some(rate) = s.slow_call_rate {
            let r = f64::from(t.slow) / calls;
            if t.slow > 0 && r >= rate {
                return Some(Trigger::SlowCallRate(r));
            }
        }
        None
    }

    fn open(&mut self, for_us: u64, now_us: u64) {
        self.enter(Phase::Open);
        self.open_for_us = for_us;
        self.open_until_us = now_us.saturating_add(for_us);
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.generation = self.generation.wrapping_add(1);
        self.probes_in_flight = 0;
        self.probes_ok = 0;
        if phase == Phase::Closed {
            self.consecutive = 0;
            self.window.clear();
        }
    }

    /// The fixed-size little-endian record kept in shared data.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(RECORD_VERSION, RECORD_LEN);
        w.u8(self.phase as u8);
        w.u32(self.generation);
        w.u32(self.consecutive);
        w.u64(self.open_until_us);
        w.u64(self.open_for_us);
        w.u32(self.probes_in_flight);
        w.u32(self.probes_ok);
        self.window.encode(&mut w);
        w.finish()
    }

    /// Reads a record; `None` when it is not one (wrong length, version or phase).
    pub fn decode(bytes: &[u8]) -> Option<Snapshot> {
        let mut r = Reader::new(bytes, RECORD_VERSION, RECORD_LEN)?;
        let phase = match r.u8()? {
            0 => Phase::Closed,
            1 => Phase::Open,
            2 => Phase::HalfOpen,
            _ => return None,
        };
        Some(Snapshot {
            phase,
            generation: r.u32()?,
            consecutive: r.u32()?,
            open_until_us: r.u64()?,
            open_for_us: r.u64()?,
            probes_in_flight: r.u32()?,
            probes_ok: r.u32()?,
            window: Window::decode(&mut r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute (proptest's #[test] too), so these
    // tests also run compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SEC: u64 = 1_000_000;
    const OK: Outcome = Outcome {
        failed: false,
        slow: false,
    };
    const FAIL: Outcome = Outcome {
        failed: true,
        slow: false,
    };
    const SLOW: Outcome = Outcome {
        failed: false,
        slow: true,
    };

    fn settings() -> Settings {
        Settings {
            consecutive_failures: 5,
            failure_rate: None,
            slow_call_rate: None,
            window_us: 10 * SEC,
            minimum_requests: 20,
            open_us: 60 * SEC,
            max_open_us: 240 * SEC,
            half_open_requests: 3,
        }
    }

    fn call(
        b: &mut Snapshot,
        s: &Settings,
        outcome: Outcome,
        now: u64,
    ) -> (Admission, Option<Transition>) {
        let (a, t1) = b.admit(s, now);
        if matches!(a, Admission::Reject { .. }) {
            return (a, t1);
        }
        (a, b.record(s, a, outcome, now).or(t1))
    }

    #[test]
    fn five_consecutive_failures_open_the_breaker_and_the_sixth_call_is_rejected() {
        let s = settings();
        let mut b = Snapshot::default();
        for i in 0..4 {
            assert_eq!(call(&mut b, &s, FAIL, i).1, None);
        }
        assert_eq!(
            call(&mut b, &s, FAIL, 4).1,
            Some(Transition::Opened {
                for_us: 60 * SEC,
                trigger: Trigger::ConsecutiveFailures(5)
            })
        );
        assert_eq!(
            b.admit(&s, 5).0,
            Admission::Reject {
                retry_after_us: 60 * SEC - 1
            }
        );
    }

    #[test]
    fn a_success_resets_the_consecutive_count() {
        let s = settings();
        let mut b = Snapshot::default();
        for i in 0..20 {
            let outcome = if i % 4 == 3 { OK } else { FAIL };
            call(&mut b, &s, outcome, i);
        }
        assert_eq!(b.phase, Phase::Closed);
    }

    #[test]
    fn after_the_open_time_probes_pass_and_enough_successes_close_it() {
        let s = settings();
        let mut b = Snapshot::default();
        for i in 0..5 {
            call(&mut b, &s, FAIL, i);
        }
        let t = 61 * SEC;
        let (p1, tr) = b.admit(&s, t);
        assert_eq!(
            (matches!(p1, Admission::Probe { .. }), tr),
            (true, Some(Transition::HalfOpened))
        );
        let (p2, _) = b.admit(&s, t);
        let (p3, _) = b.admit(&s, t);
        assert!(
            matches!(b.admit(&s, t).0, Admission::Reject { .. }),
            "a fourth probe is refused"
        );
        assert_eq!(b.record(&s, p1, OK, t), None);
        assert_eq!(b.record(&s, p2, OK, t), None);
        assert_eq!(b.record(&s, p3, OK, t), Some(Transition::Closed));
        assert_eq!(b.phase, Phase::Closed);
        assert_eq!(b.totals(&s, t).calls, 0);
    }

    #[test]
    fn a_failed_probe_reopens_for_twice_as_long_up_to_the_maximum() {
        let s = settings();
        let mut b = Snapshot::default();
        for i in 0..5 {
            call(&mut b, &s, FAIL, i);
        }
        let mut now = 0;
        for expected in [120, 240, 240] {
            now = b.open_until_us;
            let (p, _) = b.admit(&s, now);
            assert_eq!(
                b.record(&s, p, FAIL, now),
                Some(Transition::Reopened {
                    for_us: expected * SEC
                })
            );
        }
        assert_eq!(b.open_until_us, now + 240 * SEC);
    }

    #[test]
    fn a_probe_of_an_earlier_period_and_a_call_admitted_before_opening_are_not_counted() {
        let s = settings();
        let mut b = Snapshot::default();
        let early = b.admit(&s, 0).0;
        for i in 0..5 {
            call(&mut b, &s, FAIL, i);
        }
        assert_eq!(b.record(&s, early, OK, 1), None);
        assert_eq!(b.phase, Phase::Open);
        let now = b.open_until_us;
        let (p1, _) = b.admit(&s, now);
        let (p2, _) = b.admit(&s, now);
        b.record(&s, p1, FAIL, now); // re-opens
        assert_eq!(b.record(&s, p2, OK, now), None);
        assert_eq!(b.phase, Phase::Open);
    }

    #[test]
    fn a_released_probe_frees_its_slot() {
        let s = Settings {
            half_open_requests: 1,
            ..settings()
        };
        let mut b = Snapshot {
            phase: Phase::Open,
            open_until_us: 10,
            ..Snapshot::default()
        };
        let (p, _) = b.admit(&s, 10);
        assert!(matches!(b.admit(&s, 10).0, Admission::Reject { .. }));
        assert!(b.release(p));
        assert!(matches!(b.admit(&s, 10).0, Admission::Probe { .. }));
    }

    #[test]
    fn half_failures_over_minimum_requests_open_it_and_a_tenth_does_not() {
        let s = Settings {
            failure_rate: Some(0.5),
            consecutive_failures: 1000,
            ..settings()
        };
        let mut b = Snapshot::default();
        for i in 0..19 {
            call(&mut b, &s, if i % 2 == 0 { FAIL } else { OK }, i * 1000);
        }
        assert_eq!(b.phase, Phase::Closed, "below minimum_requests");
        let (_, t) = call(&mut b, &s, FAIL, 20_000);
        assert!(
            matches!(
                t,
                Some(Transition::Opened {
                    trigger: Trigger::FailureRate(_),
                    ..
                })
            ),
            "{t:?}"
        );

        let mut b = Snapshot::default();
        for i in 0..100 {
            call(&mut b, &s, if i % 10 == 0 { FAIL } else { OK }, i * 1000);
        }
        assert_eq!(b.phase, Phase::Closed);
    }

    #[test]
    fn slow_calls_open_it_when_their_ratio_is_reached() {
        let s = Settings {
            slow_call_rate: Some(1.0),
            minimum_requests: 5,
            ..settings()
        };
        let mut b = Snapshot::default();
        for i in 0..4 {
            call(&mut b, &s, SLOW, i);
        }
        let (_, t) = call(&mut b, &s, SLOW, 5);
        assert!(matches!(
            t,
            Some(Transition::Opened {
                trigger: Trigger::SlowCallRate(_),
                ..
            })
        ));
    }

    #[test]
    fn samples_age_out_after_the_window() {
        let s = Settings {
            failure_rate: Some(0.5),
            consecutive_failures: 1000,
            minimum_requests: 4,
            ..settings()
        };
        let mut b = Snapshot::default();
        for i in 0..3 {
            call(&mut b, &s, FAIL, i);
        }
        assert_eq!(b.totals(&s, 3).calls, 3);
        assert_eq!(b.totals(&s, 11 * SEC).calls, 0);
        call(&mut b, &s, FAIL, 11 * SEC);
        assert_eq!(b.phase, Phase::Closed, "the old failures no longer count");
    }

    #[test]
    fn records_round_trip_and_junk_is_refused() {
        let mut b = Snapshot {
            phase: Phase::HalfOpen,
            generation: 7,
            consecutive: 3,
            open_until_us: 99,
            open_for_us: 5,
            probes_in_flight: 2,
            probes_ok: 1,
            ..Snapshot::default()
        };
        b.window.buckets[3] = mesh_kit::window::Bucket {
            slice: 42,
            counts: [9, 4, 1],
        };
        let bytes = b.encode();
        assert_eq!(bytes.len(), RECORD_LEN);
        assert_eq!(Snapshot::decode(&bytes), Some(b));
        assert_eq!(Snapshot::decode(&bytes[1..]), None);
        let mut bad = bytes.clone();
        bad[1] = 9;
        assert_eq!(Snapshot::decode(&bad), None);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Admit,
        Finish(usize, bool, bool),
        Release(usize),
        Wait(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Admit),
            3 => (0usize..16, any::<bool>(), any::<bool>()).prop_map(|(i, f, s)| Step::Finish(i, f, s)),
            1 => (0usize..16).prop_map(Step::Release),
            2 => (0u64..3_000_000).prop_map(Step::Wait),
        ]
    }

    fn legal(from: Phase, t: Transition) -> bool {
        matches!(
            (from, t),
            (Phase::Closed, Transition::Opened { .. })
                | (Phase::Open, Transition::HalfOpened)
                | (Phase::HalfOpen, Transition::Closed)
                | (Phase::HalfOpen, Transition::Reopened { .. })
        )
    }

    proptest! {
        #[test]
        fn only_legal_transitions_and_never_more_probes_than_allowed(
            steps in proptest::collection::vec(step(), 1..200),
            half_open in 1u32..4, consecutive in 1u32..6, rate in proptest::option::of(0.1f64..1.0),
        ) {
            let s = Settings { half_open_requests: half_open, consecutive_failures: consecutive, failure_rate: rate,
                slow_call_rate: Some(0.8), minimum_requests: 3, open_us: SEC, max_open_us: 4 * SEC, window_us: 2 * SEC };
            let mut b = Snapshot::default();
            let mut now = 0u64;
            let mut open: Vec<Admission> = Vec::new();
            for st in steps {
                let before = b.phase;
                let t = match st {
                    Step::Admit => {
                        let (a, t) = b.admit(&s, now);
                        if !matches!(a, Admission::Reject { .. }) { open.push(a); }
                        t
                    }
                    Step::Finish(i, failed, slow) if !open.is_empty() => {
                        let a = open.remove(i % open.len());
                        b.record(&s, a, Outcome { failed, slow }, now)
                    }
                    Step::Release(i) if !open.is_empty() => {
                        let a = open.remove(i % open.len());
                        b.release(a);
                        None
                    }
                    Step::Wait(d) => { now += d; None }
                    _ => None,
                };
                if let Some(t) = t { prop_assert!(legal(before, t), "{before:?} -> {t:?}"); }
                if b.phase == Phase::HalfOpen {
                    prop_assert!(b.probes_in_flight + b.probes_ok <= half_open);
                }
                prop_assert!(b.open_for_us <= 4 * SEC);
                prop_assert_eq!(Snapshot::decode(&b.encode()), Some(b.clone()));
            }
        }

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Snapshot::decode(&bytes);
        }
    }
}
