//! The token bucket, pure: time comes in as microseconds, nothing is read inside.
//!
//! A bucket holds at most `burst` tokens and starts full; it gains `rate` tokens per second,
//! continuously; a request takes one token, and a request that finds less than one whole token
//! is limited (and takes nothing). Over any interval of `d` seconds a bucket therefore admits at
//! most `burst + rate × d` requests, and a client that keeps asking gets exactly that many,
//! rounded down.
//!
//! **Fixed point, no rounding.** Tokens are counted in units of 10⁻¹² of a token ([`TOKEN`]
//! units make one) in a `u64`; time in microseconds. A rate is given with at most six decimals,
//! i.e. as a whole number of micro-tokens per second, which is exactly the number of units the
//! bucket gains per microsecond: refilling is one multiplication, exact, whatever the rate and
//! however often it is done. The limits ([`MAX_RATE`] tokens per second, [`MAX_BURST`] tokens)
//! keep every amount far below `u64::MAX`.
//!
//! A refill never goes back in time: when `now` is earlier than the bucket's own time (another
//! worker read the clock a little later and wrote first), the bucket gains nothing and keeps
//! its later time.
//!
//! ```
//! use mesh_rate_limit::bucket::{Bucket, Decision, Limit};
//! let limit = Limit::new(2_000_000, 3); // 2 tokens/s, burst 3
//! let mut b = Bucket::full(&limit, 0);
//! for _ in 0..3 {
//!     let (next, d) = b.take(&limit, 0);
//!     assert!(matches!(d, Decision::Allowed { .. }));
//!     b = next;
//! }
//! // Empty: the next token comes in half a second.
//! assert_eq!(b.take(&limit, 0).1, Decision::Limited { retry_in_us: 500_000 });
//! assert!(matches!(b.take(&limit, 500_000).1, Decision::Allowed { remaining: 0 }));
//! ```

/// Units of one token.
pub const TOKEN: u64 = 1_000_000_000_000;
/// Micro-tokens per second in one token per second.
pub const MICRO: u64 = 1_000_000;
/// Highest rate accepted, in tokens per second.
pub const MAX_RATE: u64 = 1_000_000;
/// Largest bucket accepted, in tokens.
pub const MAX_BURST: u32 = 1_000_000;

/// A bucket's size and rate in the units the arithmetic uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Units gained per microsecond: the rate in micro-tokens per second (at least 1).
    pub per_us: u64,
    /// Units held when full: `burst × TOKEN` (at least one token).
    pub capacity: u64,
}

impl Limit {
    /// `rate_micro` micro-tokens per second (tokens per second × 10⁶), `burst` tokens; both are
    /// brought within the accepted limits (at least 1 micro-token per second, at least 1 token).
    pub fn new(rate_micro: u64, burst: u32) -> Limit {
        Limit {
            per_us: rate_micro.clamp(1, MAX_RATE * MICRO),
            capacity: u64::from(burst.clamp(1, MAX_BURST)) * TOKEN,
        }
    }

    /// The bucket size in whole tokens.
    pub fn burst(&self) -> u64 {
        self.capacity / TOKEN
    }

    /// Microseconds an empty bucket takes to fill.
    pub fn fill_us(&self) -> u64 {
        self.capacity.div_ceil(self.per_us)
    }

    /// The `w` of `RateLimit-Policy`: whole seconds an empty bucket takes to fill, at least 1.
    /// A client that sends `burst` requests at most once per window never exceeds the limit.
    pub fn window_seconds(&self) -> u64 {
        self.fill_us().div_ceil(1_000_000).max(1)
    }
}

/// One client's bucket: its tokens as of `at_us`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Units held at `at_us`, at most the limit's capacity.
    pub tokens: u64,
    /// When the tokens were counted (µs since the Unix epoch).
    pub at_us: u64,
}

/// What a request may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// One token taken; `remaining` whole tokens are left.
    Allowed { remaining: u64 },
    /// Less than a whole token: nothing taken. The next token arrives in `retry_in_us`.
    Limited { retry_in_us: u64 },
}

impl Bucket {
    /// A new bucket: full.
    pub fn full(limit: &Limit, now_us: u64) -> Bucket {
        Bucket {
            tokens: limit.capacity,
            at_us: now_us,
        }
    }

    /// The bucket as of `now_us`: refilled since `at_us`, never above the capacity (a bucket
    /// counted under a larger limit is cut down to this one), never moved back in time.
    pub fn refilled(self, limit: &Limit, now_us: u64) -> Bucket {
        let elapsed = now_us.saturating_sub(self.at_us);
        let gained = u128::from(elapsed) * u128::from(limit.per_us);
        let tokens = (u128::from(self.tokens) + gained).min(u128::from(limit.capacity));
        Bucket {
            tokens: u64::try_from(tokens).unwrap_or(limit.capacity),
            at_us: self.at_us.max(now_us),
        }
    }

    /// Whether the bucket has refilled completely: it is then the same as a new one.
    pub fn is_full(self, limit: &Limit, now_us: u64) -> bool {
        self.refilled(limit, now_us).tokens >= limit.capacity
    }

    /// Units the bucket lacks to be full at `now_us`: what replacing it by a new bucket would
    /// give its client.
    pub fn deficit(self, limit: &Limit, now_us: u64) -> u64 {
        limit
            .capacity
            .saturating_sub(self.refilled(limit, now_us).tokens)
    }

    /// Takes one token if there is a whole one; the bucket after the request and the decision.
    pub fn take(self, limit: &Limit, now_us: u64) -> (Bucket, Decision) {
        let mut b = self.refilled(limit, now_us);
        if b.tokens >= TOKEN {
            b.tokens -= TOKEN;
            (
                b,
                Decision::Allowed {
                    remaining: b.tokens / TOKEN,
                },
            )
        } else {
            let missing = TOKEN - b.tokens;
            (
                b,
                Decision::Limited {
                    retry_in_us: missing.div_ceil(limit.per_us),
                },
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SEC: u64 = 1_000_000;

    fn rate(tokens_per_second: u64) -> u64 {
        tokens_per_second * MICRO
    }

    /// Requests at `times` (non-decreasing) through one bucket: how many were allowed.
    fn run(limit: &Limit, times: &[u64]) -> (u64, Bucket) {
        let mut b = Bucket::full(limit, times.first().copied().unwrap_or(0));
        let mut allowed = 0;
        for &t in times {
            let (next, d) = b.take(limit, t);
            b = next;
            if matches!(d, Decision::Allowed { .. }) {
                allowed += 1;
            }
        }
        (allowed, b)
    }

    #[test]
    fn a_new_bucket_allows_its_burst_at_once_then_limits() {
        let limit = Limit::new(rate(5), 10);
        let (allowed, b) = run(&limit, &[7 * SEC; 25]);
        assert_eq!(allowed, 10);
        assert_eq!(b.tokens, 0);
        assert_eq!(
            b.take(&limit, 7 * SEC).1,
            Decision::Limited {
                retry_in_us: 200_000
            }
        );
    }

    #[test]
    fn remaining_counts_whole_tokens_after_the_request() {
        let limit = Limit::new(rate(1), 3);
        let b = Bucket::full(&limit, 0);
        let (b, d) = b.take(&limit, 0);
        assert_eq!(d, Decision::Allowed { remaining: 2 });
        let (b, _) = b.take(&limit, 0);
        // Half a second later: 1.5 tokens, one taken, 0.5 left.
        let (_, d) = b.take(&limit, 500_000);
        assert_eq!(d, Decision::Allowed { remaining: 0 });
    }

    #[test]
    fn tokens_arrive_at_the_rate_and_the_retry_time_is_when_the_next_one_does() {
        let limit = Limit::new(rate(4), 1);
        let (b, _) = Bucket::full(&limit, 0).take(&limit, 0);
        assert_eq!(
            b.take(&limit, 100_000).1,
            Decision::Limited {
                retry_in_us: 150_000
            }
        );
        assert!(matches!(
            b.take(&limit, 249_999).1,
            Decision::Limited { retry_in_us: 1 }
        ));
        assert!(matches!(
            b.take(&limit, 250_000).1,
            Decision::Allowed { .. }
        ));
    }

    #[test]
    fn a_fractional_rate_is_exact() {
        // 0.3 tokens/s: one token every 3.333… s, three every 10 s exactly. (Burst 2, so that
        // asking once a millisecond never finds the bucket full and no fraction is lost.)
        let limit = Limit::new(300_000, 2);
        let times: Vec<u64> = (0..=10_000).map(|ms| ms * 1_000).collect();
        let (allowed, b) = run(&limit, &times);
        assert_eq!(allowed, 2 + 3);
        assert_eq!(b.tokens, 0, "the third token arrived at exactly 10 s");
    }

    #[test]
    fn a_full_bucket_gains_nothing_and_an_idle_one_never_overflows() {
        let limit = Limit::new(rate(MAX_RATE), MAX_BURST);
        let b = Bucket::full(&limit, 0).refilled(&limit, u64::MAX);
        assert_eq!(b.tokens, limit.capacity);
        assert!(b.is_full(&limit, u64::MAX));
        assert_eq!(b.deficit(&limit, u64::MAX), 0);
    }

    #[test]
    fn time_that_goes_backwards_adds_nothing_and_keeps_the_later_time() {
        let limit = Limit::new(rate(10), 5);
        let b = Bucket {
            tokens: 0,
            at_us: 10 * SEC,
        };
        assert_eq!(b.refilled(&limit, 9 * SEC), b);
        let (after, d) = b.take(&limit, 9 * SEC);
        assert_eq!(after.at_us, 10 * SEC);
        assert_eq!(
            d,
            Decision::Limited {
                retry_in_us: 100_000
            }
        );
    }

    #[test]
    fn a_bucket_counted_under_a_larger_limit_is_cut_to_the_new_capacity() {
        let big = Limit::new(rate(1), 100);
        let small = Limit::new(rate(1), 2);
        let b = Bucket::full(&big, 0).refilled(&small, 0);
        assert_eq!(b.tokens, small.capacity);
    }

    #[test]
    fn the_window_is_the_time_an_empty_bucket_takes_to_fill_in_whole_seconds() {
        assert_eq!(Limit::new(rate(5), 10).window_seconds(), 2);
        assert_eq!(Limit::new(rate(3), 10).window_seconds(), 4);
        assert_eq!(Limit::new(rate(100), 10).window_seconds(), 1);
        assert_eq!(Limit::new(500_000, 1).window_seconds(), 2);
        assert_eq!(Limit::new(rate(5), 10).fill_us(), 2 * SEC);
    }

    #[test]
    fn limits_are_brought_within_range() {
        let l = Limit::new(0, 0);
        assert_eq!((l.per_us, l.burst()), (1, 1));
        let l = Limit::new(u64::MAX, u32::MAX);
        assert_eq!(
            (l.per_us, l.burst()),
            (MAX_RATE * MICRO, u64::from(MAX_BURST))
        );
    }

    fn limits() -> impl Strategy<Value = Limit> {
        // From one micro-token per second to 10^6 tokens per second; bursts of 1 to 10^6.
        (
            prop_oneof![
                1u64..1_000,
                1_000u64..1_000_000,
                1_000_000u64..=MAX_RATE * MICRO
            ],
            prop_oneof![1u32..10, 10u32..=MAX_BURST],
        )
            .prop_map(|(r, b)| Limit::new(r, b))
    }

    /// `burst + rate × d` requests, rounded down, in units: the most a window of `d_us` admits.
    fn bound(limit: &Limit, d_us: u64) -> u128 {
        (u128::from(limit.capacity) + u128::from(d_us) * u128::from(limit.per_us))
            / u128::from(TOKEN)
    }

    proptest! {
        #[test]
        fn no_window_admits_more_than_burst_plus_rate_times_its_length(
            limit in limits(),
            gaps in proptest::collection::vec(0u64..2_000_000, 1..200),
        ) {
            let mut t = 1_700_000_000 * SEC;
            let mut b = Bucket::full(&limit, t);
            let mut allowed_at = Vec::new();
            for gap in gaps {
                t += gap;
                let (next, d) = b.take(&limit, t);
                prop_assert!(next.tokens <= limit.capacity);
                b = next;
                if matches!(d, Decision::Allowed { .. }) {
                    allowed_at.push(t);
                }
            }
            for (i, &start) in allowed_at.iter().enumerate() {
                for (j, &end) in allowed_at.iter().enumerate().skip(i) {
                    let n = (j - i + 1) as u128;
                    prop_assert!(n <= bound(&limit, end - start),
                        "{n} allowed within {} µs, bound {}", end - start, bound(&limit, end - start));
                }
            }
        }

        #[test]
        fn a_client_that_never_stops_asking_gets_exactly_burst_plus_rate_times_time(
            rate_micro in 1u64..=20 * MICRO, burst in 1u32..50, millis in 1u64..5_000,
        ) {
            // A request every microsecond for `millis` ms: no token is ever wasted, so the
            // count is the bound itself, to the token.
            let limit = Limit::new(rate_micro, burst);
            let t0 = 1_700_000_000 * SEC;
            let mut b = Bucket::full(&limit, t0);
            let mut allowed: u128 = 0;
            let end = t0 + millis * 1_000;
            let mut t = t0;
            while t <= end {
                let (next, d) = b.take(&limit, t);
                b = next;
                match d {
                    Decision::Allowed { .. } => allowed += 1,
                    // Skip straight to the next token: the same as asking every microsecond.
                    Decision::Limited { retry_in_us } => {
                        t += retry_in_us;
                        continue;
                    }
                }
                t += 1;
            }
            let span = b.at_us - t0;
            prop_assert!(span <= millis * 1_000);
            prop_assert_eq!(allowed, bound(&limit, millis * 1_000));
        }

        #[test]
        fn a_limited_request_succeeds_exactly_when_told_to_retry(
            limit in limits(), tokens in 0u64..TOKEN, at in 0u64..u64::MAX / 2,
        ) {
            let b = Bucket { tokens, at_us: at };
            let (same, d) = b.take(&limit, at);
            prop_assert_eq!(same, b);
            let Decision::Limited { retry_in_us } = d else {
                return Err(TestCaseError::fail("a bucket under one token allowed a request"));
            };
            prop_assert!(retry_in_us >= 1);
            let on_time = matches!(b.take(&limit, at + retry_in_us).1, Decision::Allowed { .. });
            let early = matches!(b.take(&limit, at + retry_in_us - 1).1, Decision::Limited { .. });
            prop_assert!(on_time, "not allowed after {} µs", retry_in_us);
            prop_assert!(early, "allowed 1 µs before {} µs", retry_in_us);
        }

        #[test]
        fn refills_in_one_step_or_many_give_the_same_bucket(
            limit in limits(), tokens in 0u64..=1_000 * TOKEN, steps in proptest::collection::vec(0u64..10_000_000, 0..20),
        ) {
            let start = Bucket { tokens: tokens.min(limit.capacity), at_us: 0 };
            let mut stepped = start;
            let mut t = 0;
            for s in &steps {
                t += s;
                stepped = stepped.refilled(&limit, t);
            }
            prop_assert_eq!(stepped, start.refilled(&limit, t));
        }
    }
}
