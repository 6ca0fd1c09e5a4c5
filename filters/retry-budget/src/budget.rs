//! The retry budget, pure: time comes in as microseconds.
//!
//! As in Finagle's and Linkerd's budgets, every request deposits `retry_ratio` of a retry, and a
//! floor of `min_retries_per_second` is always allowed; deposits and retries count for `ttl`.
//! Over any `ttl`, retries therefore stay within `requests × retry_ratio + min_retries_per_second
//! × ttl`. The window is ten buckets of `ttl / 10` kept in one fixed-size record in Envoy's shared
//! data, so every worker draws from the same budget.
//!
//! A request does not withdraw when it retries (the router retries, out of our sight): it
//! **reserves** up to `max_retries` on arrival, and on completion the retries actually made are
//! withdrawn and the rest of the reservation goes back. Reservations count against the budget
//! while they are outstanding, so concurrent requests cannot together overrun it.
//!
//! ```
//! use mesh_retry_budget::budget::{Budget, Settings};
//! let s = Settings { ratio: 0.2, min_per_second: 1, ttl_us: 10_000_000, max_retries: 3 };
//! let mut b = Budget::default();
//! // An idle budget holds the floor: 1/s × 10 s = 10 retries.
//! let r = b.admit(&s, 0);
//! assert_eq!(r.retries, 3);
//! b.settle(&s, &r, 1, 1_000); // one retry made, two go back
//! assert_eq!(b.available(&s, 1_000), 10 - 1); // the request's deposit: 0.2 (floored away)
//! ```

use mesh_kit::record::{Reader, Writer};
use mesh_kit::window::{self, Window};

const RECORD_VERSION: u8 = 1;
/// Bytes of an encoded [`Budget`].
pub const RECORD_LEN: usize = 1 + Window::<3>::ENCODED_LEN;
/// Indices of the window's counts.
const REQUESTS: usize = 0;
const RETRIES: usize = 1;
const RESERVED: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    pub ratio: f64,
    pub min_per_second: u32,
    pub ttl_us: u64,
    pub max_retries: u32,
}

impl Settings {
    /// Retries always allowed in one `ttl`: `min_retries_per_second × ttl`.
    pub fn floor(&self) -> f64 {
        f64::from(self.min_per_second) * (self.ttl_us as f64 / 1e6)
    }
}

/// Requests, retries and outstanding reservations over the last `ttl` (the kit's [`Window`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    pub window: Window<3>,
}

/// What one request may do, and where its reservation is recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    /// Retries the router may make for this request.
    pub retries: u32,
    /// The bucket holding the reservation.
    pub slice: u64,
    /// Fewer than `max_retries` because the budget ran short.
    pub limited: bool,
    /// Retries left in the budget after this reservation.
    pub available_after: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u32,
    pub retries: u32,
    pub reserved: u32,
}

impl Budget {
    pub fn totals(&self, s: &Settings, now_us: u64) -> Totals {
        let t = self.window.totals(s.ttl_us, now_us);
        Totals {
            requests: t[REQUESTS],
            retries: t[RETRIES],
            reserved: t[RESERVED],
        }
    }

    /// Whole retries that may still be reserved now.
    pub fn available(&self, s: &Settings, now_us: u64) -> u32 {
        let t = self.totals(s, now_us);
        let allowed = (f64::from(t.requests) * s.ratio + s.floor()).floor();
        let used = f64::from(t.retries) + f64::from(t.reserved);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let left = (allowed - used).clamp(0.0, f64::from(u32::MAX)) as u32;
        left
    }

    /// Deposits one request and reserves up to `max_retries` for it.
    pub fn admit(&mut self, s: &Settings, now_us: u64) -> Reservation {
        let mut deposit = [0; 3];
        deposit[REQUESTS] = 1;
        self.window.add(s.ttl_us, now_us, deposit);
        let retries = s.max_retries.min(self.available(s, now_us));
        let mut reserve = [0; 3];
        reserve[RESERVED] = retries;
        self.window.add(s.ttl_us, now_us, reserve);
        Reservation {
            retries,
            slice: window::slice(s.ttl_us, now_us),
            limited: retries < s.max_retries,
            available_after: self.available(s, now_us),
        }
    }

    /// Ends a request: its reservation goes back, the retries it made are withdrawn.
    pub fn settle(&mut self, s: &Settings, r: &Reservation, retries_made: u32, now_us: u64) {
        if let Some(counts) = self.window.at_slice(r.slice) {
            counts[RESERVED] = counts[RESERVED].saturating_sub(r.retries);
        }
        if retries_made > 0 {
            let mut withdraw = [0; 3];
            withdraw[RETRIES] = retries_made;
            self.window.add(s.ttl_us, now_us, withdraw);
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(RECORD_VERSION, RECORD_LEN);
        self.window.encode(&mut w);
        w.finish()
    }

    /// Reads a record; `None` when it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Budget> {
        let mut r = Reader::new(bytes, RECORD_VERSION, RECORD_LEN)?;
        Some(Budget {
            window: Window::decode(&mut r)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SEC: u64 = 1_000_000;

    fn settings() -> Settings {
        Settings {
            ratio: 0.2,
            min_per_second: 1,
            ttl_us: 10 * SEC,
            max_retries: 3,
        }
    }

    #[test]
    fn an_idle_budget_allows_the_floor() {
        assert_eq!(Budget::default().available(&settings(), 0), 10);
    }

    #[test]
    fn sustained_failure_is_bounded_by_ratio_plus_floor() {
        let s = settings();
        let mut b = Budget::default();
        let mut retries = 0u64;
        // 200 requests/s for 10 s, every attempt fails: each uses all it may.
        for i in 0..2000u64 {
            let now = i * 5_000;
            let r = b.admit(&s, now);
            retries += u64::from(r.retries);
            b.settle(&s, &r, r.retries, now);
        }
        assert!(retries <= 2000 * 2 / 10 + 10, "{retries}");
        assert!(
            retries >= 2000 * 2 / 10 - 10,
            "the budget is used: {retries}"
        );
    }

    #[test]
    fn an_empty_budget_reserves_nothing_and_says_so() {
        let s = Settings {
            min_per_second: 0,
            ..settings()
        };
        let mut b = Budget::default();
        let r = b.admit(&s, 0);
        assert_eq!((r.retries, r.limited), (0, true));
    }

    #[test]
    fn unused_reservations_go_back() {
        let s = settings();
        let mut b = Budget::default();
        let r = b.admit(&s, 0);
        assert_eq!(b.available(&s, 0), 7);
        b.settle(&s, &r, 0, 10);
        assert_eq!(b.available(&s, 10), 10);
    }

    #[test]
    fn the_budget_refills_within_ttl() {
        let s = settings();
        let mut b = Budget::default();
        for _ in 0..20 {
            let r = b.admit(&s, 0);
            b.settle(&s, &r, r.retries, 0);
        }
        assert_eq!(b.available(&s, 0), 0);
        assert_eq!(
            b.available(&s, 10 * SEC + 1),
            10,
            "the window moved past the withdrawals"
        );
    }

    #[test]
    fn records_round_trip() {
        let mut b = Budget::default();
        b.window.buckets[4] = mesh_kit::window::Bucket {
            slice: 99,
            counts: [5, 2, 1],
        };
        assert_eq!(Budget::decode(&b.encode()), Some(b.clone()));
        assert_eq!(b.encode().len(), RECORD_LEN);
        assert_eq!(Budget::decode(&b.encode()[1..]), None);
    }

    proptest! {
        #[test]
        fn withdrawals_and_reservations_never_exceed_deposits_times_ratio_plus_floor(
            steps in proptest::collection::vec((0u64..400_000, any::<bool>(), 0u32..4), 1..300),
            ratio in 0.0f64..1.0, floor in 0u32..5, max_retries in 0u32..5,
        ) {
            let s = Settings { ratio, min_per_second: floor, ttl_us: 2 * SEC, max_retries };
            let mut b = Budget::default();
            let mut now = 0;
            let mut open: Vec<Reservation> = Vec::new();
            for (dt, finish, used) in steps {
                now += dt;
                if finish && !open.is_empty() {
                    let r = open.remove(0);
                    b.settle(&s, &r, used.min(r.retries), now);
                } else {
                    let r = b.admit(&s, now);
                    prop_assert!(r.retries <= max_retries);
                    let t = b.totals(&s, now);
                    let allowed = (f64::from(t.requests) * ratio + s.floor()).floor();
                    // A request that got retries got them out of what the window allowed. (With
                    // none reserved, retries settled late by older requests may already exceed it.)
                    prop_assert!(r.retries == 0 || f64::from(t.retries) + f64::from(t.reserved) <= allowed,
                        "retries {} + reserved {} > {}", t.retries, t.reserved, allowed);
                    open.push(r);
                }
                prop_assert_eq!(Budget::decode(&b.encode()), Some(b.clone()));
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..260)) {
            let _ = Budget::decode(&bytes);
        }
    }
}
