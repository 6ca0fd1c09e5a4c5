//! A sliding window of counts: ten buckets, each `window / 10` long, in a ring.
//!
//! Time is cut into slices of `window / 10` microseconds; slice `n` is counted in bucket
//! `n % 10`, which is emptied first when it last held an older slice. The window's totals are
//! the sums over the buckets of the last ten slices, so counts age out one tenth of the window
//! at a time. The breaker counts calls, failures and slow calls this way; the retry budget
//! requests, retries and reservations. Time comes in as an argument, never read inside.
//!
//! ```
//! use mesh_kit::window::Window;
//! let mut w = Window::<2>::default();
//! let window_us = 10_000_000; // 10 s: buckets of 1 s
//! w.add(window_us, 0, [1, 0]);
//! w.add(window_us, 500_000, [1, 1]);
//! assert_eq!(w.totals(window_us, 9_999_999), [2, 1]);
//! assert_eq!(w.totals(window_us, 10_000_000), [0, 0], "slice 0 aged out");
//! ```

use crate::record::{Reader, Writer};

/// Buckets of every window.
pub const BUCKETS: usize = 10;

/// One slice of time and its counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket<const K: usize> {
    /// Which `window / 10` slice of time this bucket counts (`now / (window / 10)`).
    pub slice: u64,
    pub counts: [u32; K],
}

impl<const K: usize> Default for Bucket<K> {
    fn default() -> Self {
        Bucket {
            slice: 0,
            counts: [0; K],
        }
    }
}

/// `K` counts over a sliding window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window<const K: usize> {
    pub buckets: [Bucket<K>; BUCKETS],
}

impl<const K: usize> Default for Window<K> {
    fn default() -> Self {
        Window {
            buckets: [Bucket::default(); BUCKETS],
        }
    }
}

/// The slice `now_us` falls in, for a window of `window_us`.
pub fn slice(window_us: u64, now_us: u64) -> u64 {
    now_us / (window_us / BUCKETS as u64).max(1)
}

fn index(slice: u64) -> usize {
    usize::try_from(slice % BUCKETS as u64).unwrap_or(0)
}

impl<const K: usize> Window<K> {
    /// Bytes of [`Window::encode`].
    pub const ENCODED_LEN: usize = BUCKETS * (8 + 4 * K);

    /// Adds `delta` to the counts of the slice `now_us` falls in (saturating).
    pub fn add(&mut self, window_us: u64, now_us: u64, delta: [u32; K]) {
        let current = slice(window_us, now_us);
        if let Some(b) = self.buckets.get_mut(index(current)) {
            if b.slice != current {
                *b = Bucket {
                    slice: current,
                    counts: [0; K],
                };
            }
            for (c, d) in b.counts.iter_mut().zip(delta) {
                *c = c.saturating_add(d);
            }
        }
    }

    /// The counts of `slice`, if its bucket still holds that slice.
    pub fn at_slice(&mut self, slice: u64) -> Option<&mut [u32; K]> {
        self.buckets
            .get_mut(index(slice))
            .filter(|b| b.slice == slice)
            .map(|b| &mut b.counts)
    }

    /// The sums over the last ten slices up to `now_us`.
    pub fn totals(&self, window_us: u64, now_us: u64) -> [u32; K] {
        let current = slice(window_us, now_us);
        let oldest = current.saturating_sub(BUCKETS as u64 - 1);
        let mut sum = [0u32; K];
        for b in self
            .buckets
            .iter()
            .filter(|b| b.slice >= oldest && b.slice <= current)
        {
            for (s, c) in sum.iter_mut().zip(b.counts) {
                *s = s.saturating_add(c);
            }
        }
        sum
    }

    pub fn clear(&mut self) {
        *self = Window::default();
    }

    /// Appends the buckets to a record: slice then counts, bucket by bucket.
    pub fn encode(&self, w: &mut Writer) {
        for b in &self.buckets {
            w.u64(b.slice);
            for c in b.counts {
                w.u32(c);
            }
        }
    }

    /// Reads what [`Window::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Option<Window<K>> {
        let mut w = Window::default();
        for b in &mut w.buckets {
            b.slice = r.u64()?;
            for c in &mut b.counts {
                *c = r.u32()?;
            }
        }
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SEC: u64 = 1_000_000;

    #[test]
    fn counts_age_out_a_tenth_of_the_window_at_a_time() {
        let mut w = Window::<1>::default();
        for s in 0..10 {
            w.add(10 * SEC, s * SEC, [1]);
        }
        assert_eq!(w.totals(10 * SEC, 9 * SEC), [10]);
        assert_eq!(w.totals(10 * SEC, 10 * SEC), [9]);
        assert_eq!(w.totals(10 * SEC, 18 * SEC), [1]);
        assert_eq!(w.totals(10 * SEC, 19 * SEC), [0]);
    }

    #[test]
    fn a_reused_bucket_starts_empty_and_old_slices_are_not_found() {
        let mut w = Window::<2>::default();
        w.add(10 * SEC, 0, [5, 5]);
        w.add(10 * SEC, 10 * SEC, [1, 0]);
        assert_eq!(w.totals(10 * SEC, 10 * SEC), [1, 0]);
        assert!(w.at_slice(0).is_none());
        assert_eq!(w.at_slice(10), Some(&mut [1, 0]));
    }

    proptest! {
        #[test]
        fn encoding_round_trips(adds in proptest::collection::vec((0u64..1_000_000_000, 0u32..1000, 0u32..1000, 0u32..1000), 0..50)) {
            let mut w = Window::<3>::default();
            for (now, a, b, c) in adds {
                w.add(SEC, now, [a, b, c]);
            }
            let mut out = Writer::new(1, 1 + Window::<3>::ENCODED_LEN);
            w.encode(&mut out);
            let bytes = out.finish();
            prop_assert_eq!(bytes.len(), 1 + Window::<3>::ENCODED_LEN);
            let mut r = Reader::new(&bytes, 1, bytes.len()).unwrap();
            prop_assert_eq!(Window::<3>::decode(&mut r), Some(w));
        }
    }
}
