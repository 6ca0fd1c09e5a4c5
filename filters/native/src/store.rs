//! Shared data for the native module: process memory, one map for every worker and every
//! filter config of the module (as Envoy's wasm shared data is one per VM id), with the
//! compare-and-swap semantics of Envoy's and of [`mesh_kit::testing::TestHost`]: every write
//! gives the value a new token; a write that carries a token other than the stored one is a
//! mismatch; a write without a token (or to a key that does not exist yet) always succeeds.

use mesh_kit::host::CasError;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

#[derive(Default)]
struct Store {
    values: HashMap<String, (Vec<u8>, u32)>,
    /// The last token given out: one counter for the whole store, so a token is never reused
    /// for a key while the process lives (until it wraps after 2^32 writes; 0 is skipped, which
    /// Envoy reads as "no token").
    last: u32,
}

fn store() -> MutexGuard<'static, Store> {
    static STORE: OnceLock<Mutex<Store>> = OnceLock::new();
    // A panic cannot leave the map half-written (every mutation is one insert), so a poisoned
    // lock is still usable.
    STORE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// The value of `key` and its token.
pub fn get(key: &str) -> (Option<Vec<u8>>, Option<u32>) {
    match store().values.get(key) {
        Some((v, token)) => (Some(v.clone()), Some(*token)),
        None => (None, None),
    }
}

/// Writes `value` when `cas` is `None` or still the stored token.
pub fn set(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError> {
    let mut s = store();
    let current = s.values.get(key).map(|(_, t)| *t);
    if let (Some(want), Some(have)) = (cas, current) {
        if want != have {
            return Err(CasError::Mismatch);
        }
    }
    s.last = match s.last.wrapping_add(1) {
        0 => 1,
        n => n,
    };
    let token = s.last;
    match s.values.get_mut(key) {
        Some(entry) => {
            entry.0.clear();
            entry.0.extend_from_slice(value);
            entry.1 = token;
        }
        None => {
            s.values.insert(key.to_string(), (value.to_vec(), token));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_kit::shared::seed;
    use mesh_kit::testing::TestHost;

    #[test]
    fn a_stale_token_is_a_mismatch_and_every_write_changes_the_token() {
        set("test:stale", b"a", None).unwrap();
        let (_, first) = get("test:stale");
        set("test:stale", b"b", first).unwrap();
        let (value, second) = get("test:stale");
        assert_eq!(value.as_deref(), Some(&b"b"[..]));
        assert_ne!(first, second);
        assert_eq!(set("test:stale", b"c", first), Err(CasError::Mismatch));
        // An unconditional write always lands.
        set("test:stale", b"d", None).unwrap();
        assert_eq!(get("test:stale").0.as_deref(), Some(&b"d"[..]));
    }

    #[test]
    fn a_missing_key_reads_as_nothing_and_any_write_creates_it() {
        assert_eq!(get("test:missing"), (None, None));
        set("test:missing-created", b"x", Some(42)).unwrap();
        assert!(get("test:missing-created").1.is_some());
    }

    /// The same operations on this store and on the kit's reference store have the same
    /// outcomes.
    #[test]
    fn behaves_as_the_kits_memory_store() {
        use mesh_kit::host::Host;
        let reference = TestHost::default();
        let key = "test:reference";
        seed(&reference, key, &[0]);
        set(key, &[0], None).unwrap();
        let (_, r_token) = reference.shared_get(key);
        let (_, o_token) = get(key);
        // The token read wins once, then is stale, in both.
        for value in [1u8, 2] {
            assert_eq!(
                reference.shared_set(key, &[value], r_token),
                set(key, &[value], o_token)
            );
        }
        assert_eq!(reference.shared_get(key).0, get(key).0);
        assert_eq!(get(key).0, Some(vec![1]));
    }

    #[test]
    fn concurrent_increments_under_cas_lose_nothing() {
        let key = "test:concurrent";
        set(key, &0u64.to_le_bytes(), None).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        loop {
                            let (v, token) = get(key);
                            let n = u64::from_le_bytes(v.unwrap().try_into().unwrap());
                            if set(key, &(n + 1).to_le_bytes(), token).is_ok() {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = u64::from_le_bytes(get(key).0.unwrap().try_into().unwrap());
        assert_eq!(n, 2000);
    }
}
