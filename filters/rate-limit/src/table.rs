//! The buckets of one route (or cluster), in Envoy's shared data, bounded.
//!
//! Shared-data keys cannot be deleted, so there is no key per client: a route has a fixed table
//! of `max_keys` **slots**, each one shared-data key (`mesh.rate_limit:route:events/slots=1024/17`)
//! holding one [`Slot`] record of 41 bytes: the hash of the client key that owns it, its bucket,
//! and the limit the bucket was counted under. The table never grows past `max_keys` keys,
//! however many clients come and go.
//!
//! A client key's hash `h` names its home slot `h mod max_keys`; the next [`PROBES`] − 1 slots
//! (wrapping) are its alternatives. A request reads the probed slots in order until it finds
//! the one holding its hash, and uses that bucket. When none holds it, the client gets a new
//! (full) bucket in the first probed slot that is free: never written, unreadable, or holding a
//! bucket that has **refilled to its burst**, which is exactly a new bucket, so taking it over
//! changes nothing for its previous owner. When every probed slot holds a bucket that is not
//! full, the one **nearest to full** is evicted (`evicted`): its client would get a new bucket
//! back, which gives it at most what its bucket lacked, never more than one burst.
//!
//! The write is a compare-and-swap with the token of the value read; on a conflict (another
//! worker wrote the slot in between) the probe starts again on fresh data, so every worker
//! decides on the bucket it writes over and no token is taken twice. A limited request changes
//! nothing and writes nothing. The one exception Envoy leaves: a slot that was never written has
//! no token to compare with, so two workers creating the same slot at once can lose one take
//! (once per slot, ever).
//!
//! Cost: a client in its home slot costs one read, plus one write when it is allowed; a client
//! not in the table reads all of its probed slots before it writes.
//!
//! ```
//! use mesh_kit::testing::TestHost;
//! use mesh_rate_limit::bucket::{Decision, Limit};
//! use mesh_rate_limit::table::{admit, Table};
//! let store = TestHost::default();
//! let table = Table::new("mesh.rate_limit:route:events", 1024);
//! let limit = Limit::new(5_000_000, 2); // 5/s, burst 2
//! let now = 1_700_000_000_000_000;
//! for want_allowed in [true, true, false] {
//!     let a = admit(&store, &table, 42, &limit, now).unwrap();
//!     assert_eq!(matches!(a.decision, Decision::Allowed { .. }), want_allowed);
//! }
//! ```

use crate::bucket::{Bucket, Decision, Limit};
use mesh_kit::host::{CasError, Host};
use mesh_kit::record::{Reader, Writer};
use mesh_kit::shared::{UpdateError, CAS_TRIES};

/// Slots a client key may occupy: its home slot and the next ones.
pub const PROBES: u32 = 4;
/// Most slots of one table.
pub const MAX_SLOTS: u32 = 65_536;

const RECORD_VERSION: u8 = 1;
/// Bytes of an encoded [`Slot`].
pub const RECORD_LEN: usize = 1 + 5 * 8;

/// What one slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// [`crate::key::ClientKey::hash`] of the client whose bucket this is.
    pub hash: u64,
    pub bucket: Bucket,
    /// The limit the bucket was last counted under (to tell, for another client, whether it
    /// has refilled).
    pub limit: Limit,
}

impl Slot {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(RECORD_VERSION, RECORD_LEN);
        w.u64(self.hash);
        w.u64(self.bucket.tokens);
        w.u64(self.bucket.at_us);
        w.u64(self.limit.per_us);
        w.u64(self.limit.capacity);
        w.finish()
    }

    /// Reads a record; `None` when it is not one (another version, or garbage).
    pub fn decode(bytes: &[u8]) -> Option<Slot> {
        let mut r = Reader::new(bytes, RECORD_VERSION, RECORD_LEN)?;
        let hash = r.u64()?;
        let bucket = Bucket {
            tokens: r.u64()?,
            at_us: r.u64()?,
        };
        let limit = Limit {
            per_us: r.u64()?.max(1),
            capacity: r.u64()?,
        };
        Some(Slot {
            hash,
            bucket,
            limit,
        })
    }

    /// Whether another client may take the slot over without changing anything for this one.
    pub fn is_free(&self, now_us: u64) -> bool {
        self.bucket.is_full(&self.limit, now_us)
    }
}

/// The table of one route or cluster: `slots` shared-data keys under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    prefix: String,
    slots: u32,
}

impl Table {
    /// The table under `label_key` (the kit's `Label::key`, e.g. `mesh.rate_limit:route:events`)
    /// with `slots` slots (1 to [`MAX_SLOTS`]). The size is part of the keys: routes that share
    /// a cluster's table but disagree on its size get one table each.
    pub fn new(label_key: &str, slots: u32) -> Table {
        let slots = slots.clamp(1, MAX_SLOTS);
        Table {
            prefix: format!("{label_key}/slots={slots}/"),
            slots,
        }
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The prefix of every slot key: the table's identity.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn slot_key(&self, index: u32) -> String {
        format!("{}{index}", self.prefix)
    }

    /// The slots a key hashed to `hash` may occupy, home slot first.
    pub fn probes(&self, hash: u64) -> impl Iterator<Item = u32> {
        let n = u64::from(self.slots);
        let home = hash % n;
        (0..u64::from(PROBES.min(self.slots)))
            .map(move |k| u32::try_from((home + k) % n).unwrap_or(0))
    }
}

/// What [`admit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub decision: Decision,
    /// The client had no bucket in the table: it got a new one.
    pub new_bucket: bool,
    /// Getting it evicted another client's bucket that had not refilled.
    pub evicted: bool,
}

/// A probed slot as read.
struct Seen {
    index: u32,
    slot: Option<Slot>,
    cas: Option<u32>,
}

/// Where the request's bucket is.
enum Choice {
    /// The client's own bucket, in the probed slot at this position.
    Own(usize),
    /// A new bucket in a free slot.
    Free(usize),
    /// A new bucket in place of the bucket nearest to full.
    Evict(usize),
}

/// Takes one token from the bucket of the client hashed to `hash` under `limit`, at `now_us`,
/// in `table`; see the module documentation.
pub fn admit(
    host: &dyn Host,
    table: &Table,
    hash: u64,
    limit: &Limit,
    now_us: u64,
) -> Result<Admission, UpdateError> {
    for _ in 0..CAS_TRIES {
        let mut seen: Vec<Seen> = Vec::with_capacity(PROBES as usize);
        let mut own = None;
        for index in table.probes(hash) {
            let (bytes, cas) = host.shared_get(&table.slot_key(index));
            let slot = bytes.as_deref().and_then(Slot::decode);
            let mine = slot.is_some_and(|s| s.hash == hash);
            seen.push(Seen { index, slot, cas });
            if mine {
                own = Some(seen.len() - 1);
                break;
            }
        }
        let choice = match own {
            Some(at) => Choice::Own(at),
            None => choose_new(&seen, now_us),
        };
        let (at, bucket, new_bucket, evicted) = match choice {
            Choice::Own(at) => {
                let bucket = seen
                    .get(at)
                    .and_then(|s| s.slot)
                    .map_or(Bucket::full(limit, now_us), |s| s.bucket);
                (at, bucket, false, false)
            }
            Choice::Free(at) => (at, Bucket::full(limit, now_us), true, false),
            Choice::Evict(at) => (at, Bucket::full(limit, now_us), true, true),
        };
        let Some(target) = seen.get(at) else {
            return Err(UpdateError::Failed);
        };
        let (after, decision) = bucket.take(limit, now_us);
        let admission = Admission {
            decision,
            new_bucket,
            evicted,
        };
        if matches!(decision, Decision::Limited { .. }) && !new_bucket {
            // Nothing taken, nothing to write: the bucket refills by arithmetic alone.
            return Ok(admission);
        }
        let record = Slot {
            hash,
            bucket: after,
            limit: *limit,
        }
        .encode();
        match host.shared_set(&table.slot_key(target.index), &record, target.cas) {
            Ok(()) => return Ok(admission),
            Err(CasError::Mismatch) => continue,
            Err(CasError::Failed) => return Err(UpdateError::Failed),
        }
    }
    Err(UpdateError::Contended)
}

/// The slot a client without a bucket takes: the first free one, else the one whose bucket is
/// nearest to full (the first of those, on a tie).
fn choose_new(seen: &[Seen], now_us: u64) -> Choice {
    if let Some(at) = seen
        .iter()
        .position(|s| s.slot.is_none_or(|slot| slot.is_free(now_us)))
    {
        return Choice::Free(at);
    }
    let nearest = seen
        .iter()
        .enumerate()
        .min_by_key(|(i, s)| {
            let deficit = s
                .slot
                .map_or(0, |slot| slot.bucket.deficit(&slot.limit, now_us));
            (deficit, *i)
        })
        .map_or(0, |(i, _)| i);
    Choice::Evict(nearest)
}

/// Slots in `from..to` of `table` holding a bucket that has not refilled: the clients the
/// table tracks right now (the `keys` gauge). One shared-data read per slot.
pub fn count_active(host: &dyn Host, table: &Table, from: u32, to: u32, now_us: u64) -> u32 {
    let mut n = 0;
    for index in from..to.min(table.slots()) {
        let (bytes, _) = host.shared_get(&table.slot_key(index));
        if bytes
            .as_deref()
            .and_then(Slot::decode)
            .is_some_and(|s| !s.is_free(now_us))
        {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::{MICRO, TOKEN};
    use crate::key::ClientKey;
    use crate::testing::{Store, StoreExt};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const T0: u64 = 1_700_000_000_000_000;
    const SEC: u64 = 1_000_000;

    fn allowed(a: &Admission) -> bool {
        matches!(a.decision, Decision::Allowed { .. })
    }

    fn key(i: u32) -> u64 {
        ClientKey::Header(format!("client-{i}")).hash()
    }

    #[test]
    fn records_round_trip_and_another_version_reads_as_free() {
        let s = Slot {
            hash: 7,
            bucket: Bucket {
                tokens: 3 * TOKEN,
                at_us: T0,
            },
            limit: Limit::new(MICRO, 5),
        };
        let bytes = s.encode();
        assert_eq!(bytes.len(), RECORD_LEN);
        assert_eq!(Slot::decode(&bytes), Some(s));
        let mut other = bytes.clone();
        other[0] = 2;
        assert_eq!(Slot::decode(&other), None);
        assert_eq!(Slot::decode(&bytes[1..]), None);
    }

    #[test]
    fn probes_start_at_home_wrap_and_never_repeat_in_a_small_table() {
        let t = Table::new("p", 10);
        assert_eq!(t.probes(18).collect::<Vec<_>>(), [8, 9, 0, 1]);
        let t = Table::new("p", 2);
        assert_eq!(t.probes(3).collect::<Vec<_>>(), [1, 0]);
        assert_eq!(Table::new("p", 0).slots(), 1);
        assert_eq!(Table::new("p", u32::MAX).slots(), MAX_SLOTS);
        assert_eq!(t.slot_key(1), "p/slots=2/1");
    }

    #[test]
    fn a_client_in_its_home_slot_costs_one_read_and_one_write_and_a_limited_one_no_write() {
        let store = Store::default();
        let table = Table::new("t", 64);
        let limit = Limit::new(MICRO, 2);
        let h = key(1);
        assert!(allowed(&admit(&store, &table, h, &limit, T0).unwrap()));
        // New client: every probed slot read (none holds it), then the write.
        assert_eq!(store.take_shared(), (4, 1));
        assert!(allowed(&admit(&store, &table, h, &limit, T0).unwrap()));
        assert_eq!(store.take_shared(), (1, 1));
        assert!(!allowed(&admit(&store, &table, h, &limit, T0).unwrap()));
        assert_eq!(store.take_shared(), (1, 0));
    }

    #[test]
    fn clients_in_one_table_do_not_share_buckets() {
        let store = Store::default();
        let table = Table::new("t", 8);
        let limit = Limit::new(MICRO, 3);
        for client in 0..8 {
            let got: Vec<bool> = (0..5)
                .map(|_| allowed(&admit(&store, &table, key(client), &limit, T0).unwrap()))
                .collect();
            assert_eq!(got, [true, true, true, false, false], "client {client}");
        }
    }

    #[test]
    fn a_refilled_bucket_is_taken_over_without_an_eviction() {
        let store = Store::default();
        let table = Table::new("t", 1);
        let limit = Limit::new(MICRO, 2);
        let a = admit(&store, &table, key(1), &limit, T0).unwrap();
        assert!(a.new_bucket && !a.evicted);
        // Client 1's bucket lacks one token: full again after 1 s.
        let b = admit(&store, &table, key(2), &limit, T0 + SEC).unwrap();
        assert!(b.new_bucket && !b.evicted, "{b:?}");
        assert!(allowed(&b));
    }

    #[test]
    fn a_full_table_evicts_the_bucket_nearest_to_full() {
        let store = Store::default();
        let table = Table::new("t", 4);
        let limit = Limit::new(MICRO / 100, 10); // 0.01/s: nothing refills within the test
                                                 // Four clients fill the four slots (each probes all four), taking 1, 2, 3, 4 tokens.
        let clients: Vec<u64> = (0..4).map(key).collect();
        for (i, h) in clients.iter().enumerate() {
            for _ in 0..=i {
                admit(&store, &table, *h, &limit, T0).unwrap();
            }
        }
        let slot_of = |h: u64| {
            (0..4).find(|i| {
                Slot::decode(&store.shared_get(&table.slot_key(*i)).0.unwrap())
                    .unwrap()
                    .hash
                    == h
            })
        };
        assert!(clients.iter().all(|h| slot_of(*h).is_some()));
        let newcomer = key(99);
        let a = admit(&store, &table, newcomer, &limit, T0).unwrap();
        assert!(a.evicted && a.new_bucket && allowed(&a));
        // The client that had taken one token was evicted: it loses the least.
        assert_eq!(slot_of(clients[0]), None);
        assert!(clients[1..].iter().all(|h| slot_of(*h).is_some()));
        // Coming back, it gets a new bucket: at most one token more than it had.
        let back = admit(&store, &table, clients[0], &limit, T0).unwrap();
        assert!(back.evicted && back.new_bucket);
        assert_eq!(back.decision, Decision::Allowed { remaining: 9 });
    }

    #[test]
    fn a_conflicting_write_is_redone_on_fresh_data() {
        let store = Store::default();
        let table = Table::new("t", 16);
        let limit = Limit::new(MICRO, 5);
        admit(&store, &table, key(1), &limit, T0).unwrap();
        store.conflicts.set(3);
        let a = admit(&store, &table, key(1), &limit, T0).unwrap();
        assert_eq!(a.decision, Decision::Allowed { remaining: 3 });
        store.conflicts.set(CAS_TRIES);
        assert_eq!(
            admit(&store, &table, key(1), &limit, T0),
            Err(UpdateError::Contended)
        );
    }

    #[test]
    fn an_unreadable_slot_is_free() {
        let store = Store::default();
        let table = Table::new("t", 1);
        store.shared_set(&table.slot_key(0), b"junk", None).unwrap();
        let a = admit(&store, &table, key(1), &limit1(), T0).unwrap();
        assert!(a.new_bucket && !a.evicted);
    }

    fn limit1() -> Limit {
        Limit::new(MICRO, 1)
    }

    #[test]
    fn the_census_counts_buckets_that_have_not_refilled() {
        let store = Store::default();
        let table = Table::new("t", 32);
        let limit = Limit::new(MICRO, 1);
        for c in 0..10 {
            admit(&store, &table, key(c), &limit, T0).unwrap();
        }
        assert_eq!(count_active(&store, &table, 0, 32, T0), 10);
        assert_eq!(count_active(&store, &table, 0, 1000, T0 + SEC), 0);
    }

    proptest! {
        #[test]
        fn churning_keys_never_write_outside_the_table_and_never_exceed_the_per_key_bound(
            slots in 1u32..40,
            steps in proptest::collection::vec((0u32..120, 0u64..300_000), 1..400),
        ) {
            let store = Store::default();
            let table = Table::new("mesh.rate_limit:route:r", slots);
            let limit = Limit::new(2 * MICRO, 3); // 2/s, burst 3
            let mut now = T0;
            // Per client: requests allowed, times it got a new bucket, first request time.
            let mut per: std::collections::HashMap<u32, (u64, u64, u64)> = Default::default();
            let mut evictions = 0;
            for (client, dt) in steps {
                now += dt;
                let a = admit(&store, &table, key(client), &limit, now).unwrap();
                let e = per.entry(client).or_insert((0, 0, now));
                if allowed(&a) { e.0 += 1; }
                if a.new_bucket { e.1 += 1; }
                if a.evicted { evictions += 1; }
            }
            let allowed_keys: BTreeSet<String> = (0..slots).map(|i| table.slot_key(i)).collect();
            prop_assert!(store.shared_keys().into_iter().collect::<std::collections::BTreeSet<_>>().is_subset(&allowed_keys));
            prop_assert!(evictions <= per.values().map(|e| e.1).sum::<u64>());
            for (client, (n, new_buckets, first)) in per {
                // The guarantee: burst + rate × time, plus one burst per new bucket after the first.
                let bound = 3 * new_buckets + 2 * (now - first) / SEC;
                prop_assert!(n <= bound, "client {}: {} allowed, bound {}", client, n, bound);
            }
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Slot::decode(&bytes);
        }
    }
}
