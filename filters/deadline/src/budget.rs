//! The budget arithmetic, pure.
//!
//! A request's budget at arrival is the smallest of the route's `timeout` and every incoming
//! deadline the filter honours, each minus `offset` (time the caller says was spent before this
//! hop). What is written upstream is that budget minus the time already spent in this Envoy.
//! A budget below `min_budget` cannot finish: the request is rejected on arrival. Every step
//! only ever shrinks a deadline; nothing here can grow one.

use std::time::Duration;

/// The limits of one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub timeout: Duration,
    pub offset: Duration,
    pub min_budget: Duration,
    pub per_try_timeout: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Too little time left: answer DEADLINE_EXCEEDED / 504 now.
    Expired { remaining: Duration },
    /// Forward with this budget; `per_try` is the per-attempt cap, never above the budget.
    Proceed {
        budget: Duration,
        per_try: Option<Duration>,
    },
}

/// Decides from the smallest incoming deadline (if any) and the time spent here so far.
pub fn decide(limits: &Limits, incoming: Option<Duration>, elapsed: Duration) -> Decision {
    let from_caller = incoming.map(|d| d.saturating_sub(limits.offset));
    let at_arrival = from_caller.map_or(limits.timeout, |d| d.min(limits.timeout));
    let remaining = at_arrival.saturating_sub(elapsed);
    if remaining < limits.min_budget || remaining.is_zero() {
        return Decision::Expired { remaining };
    }
    Decision::Proceed {
        budget: remaining,
        per_try: limits.per_try_timeout.map(|p| p.min(remaining)),
    }
}

/// Whole milliseconds, rounded down, for Envoy's `x-envoy-*-timeout-ms` headers. Never 0 for a
/// budget of at least 1 ms (0 would mean "no timeout" to Envoy's router).
pub fn millis_floor(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute (proptest's #[test] too), so these
    // tests also run compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn limits(timeout: u64) -> Limits {
        Limits {
            timeout: MS(timeout),
            offset: MS(0),
            min_budget: MS(1),
            per_try_timeout: None,
        }
    }

    #[test]
    fn without_an_incoming_deadline_the_route_timeout_applies() {
        assert_eq!(
            decide(&limits(5000), None, MS(0)),
            Decision::Proceed {
                budget: MS(5000),
                per_try: None
            }
        );
    }

    #[test]
    fn a_shorter_incoming_deadline_wins_and_a_longer_one_does_not() {
        assert_eq!(
            decide(&limits(5000), Some(MS(300)), MS(0)),
            Decision::Proceed {
                budget: MS(300),
                per_try: None
            }
        );
        assert_eq!(
            decide(&limits(5000), Some(MS(9000)), MS(0)),
            Decision::Proceed {
                budget: MS(5000),
                per_try: None
            }
        );
    }

    #[test]
    fn offset_and_time_spent_here_are_subtracted() {
        let l = Limits {
            offset: MS(50),
            ..limits(5000)
        };
        assert_eq!(
            decide(&l, Some(MS(300)), MS(10)),
            Decision::Proceed {
                budget: MS(240),
                per_try: None
            }
        );
    }

    #[test]
    fn an_expired_or_too_small_budget_is_rejected() {
        assert_eq!(
            decide(&limits(5000), Some(Duration::from_nanos(1)), MS(0)),
            Decision::Expired {
                remaining: Duration::from_nanos(1)
            }
        );
        assert_eq!(
            decide(&limits(5000), Some(MS(0)), MS(0)),
            Decision::Expired { remaining: MS(0) }
        );
        let l = Limits {
            min_budget: MS(20),
            ..limits(5000)
        };
        assert!(matches!(
            decide(&l, Some(MS(19)), MS(0)),
            Decision::Expired { .. }
        ));
    }

    #[test]
    fn per_try_timeout_never_exceeds_the_budget() {
        let l = Limits {
            per_try_timeout: Some(MS(1000)),
            ..limits(5000)
        };
        assert_eq!(
            decide(&l, Some(MS(300)), MS(0)),
            Decision::Proceed {
                budget: MS(300),
                per_try: Some(MS(300))
            }
        );
        assert_eq!(
            decide(&l, None, MS(0)),
            Decision::Proceed {
                budget: MS(5000),
                per_try: Some(MS(1000))
            }
        );
    }

    proptest! {
        #[test]
        fn the_budget_never_grows_a_deadline(
            timeout in 1u64..100_000, offset in 0u64..10_000, min_budget in 1u64..1000,
            incoming in proptest::option::of(0u64..200_000), elapsed in 0u64..10_000, per_try in proptest::option::of(1u64..100_000),
        ) {
            let l = Limits { timeout: MS(timeout), offset: MS(offset), min_budget: MS(min_budget), per_try_timeout: per_try.map(MS) };
            match decide(&l, incoming.map(MS), MS(elapsed)) {
                Decision::Proceed { budget, per_try: p } => {
                    prop_assert!(budget <= l.timeout);
                    prop_assert!(budget >= l.min_budget);
                    if let Some(i) = incoming { prop_assert!(budget <= MS(i).saturating_sub(l.offset)); }
                    prop_assert!(budget <= l.timeout.saturating_sub(MS(elapsed)));
                    if let Some(p) = p { prop_assert!(p <= budget); }
                    prop_assert!(millis_floor(budget) >= 1);
                    prop_assert!(MS(millis_floor(budget)) <= budget);
                }
                Decision::Expired { remaining } => prop_assert!(remaining < l.min_budget),
            }
        }
    }
}
