//! Which client a request belongs to, and the hash its bucket is found by.
//!
//! A client key is a kind and a value: the verified SPIFFE ID (`identity`), the value of a
//! configured request header (`header`), or the route (`route`). A request without one (no
//! verified identity, or no such header) belongs to the one shared bucket of its route for
//! requests without a key ([`ClientKey::Unkeyed`]); it never borrows another client's.
//!
//! The kind is part of what is hashed, so a header value can never name the bucket of an
//! identity (or the unkeyed bucket) even where two routes with different keys share a table
//! (`scope: cluster`).
//!
//! The hash is FNV-1a (64 bits) finished with the `fmix64` step of MurmurHash3, which spreads
//! neighbouring keys over the whole table; it is the same in every VM of every worker, which is
//! what lets them find the same slot. It is not keyed: a client able to choose its key freely
//! (a header) can aim at other slots, but such a client can just as well send another client's
//! header value, which is why the verified identity is the default key.
//!
//! ```
//! use mesh_rate_limit::key::ClientKey;
//! let a = ClientKey::Identity("spiffe://mesh.local/ns/default/sa/learner".into());
//! let b = ClientKey::Header("spiffe://mesh.local/ns/default/sa/learner".into());
//! assert_ne!(a.hash(), b.hash(), "the same text under another kind is another client");
//! assert_eq!(a.hash(), a.clone().hash());
//! ```

/// The client a request is counted against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientKey {
    /// A verified SPIFFE ID.
    Identity(String),
    /// The value of the configured request header.
    Header(String),
    /// Every request of the route (or of the cluster's routes) together.
    Route(String),
    /// No key: the route's shared bucket of requests without one.
    Unkeyed,
}

impl ClientKey {
    /// The 64-bit hash that places the key in a table and tells it apart from the other keys
    /// in its slot.
    pub fn hash(&self) -> u64 {
        let (kind, value): (&[u8], &str) = match self {
            ClientKey::Identity(v) => (b"identity", v),
            ClientKey::Header(v) => (b"header", v),
            ClientKey::Route(v) => (b"route", v),
            ClientKey::Unkeyed => (b"unkeyed", ""),
        };
        let mut h = Fnv::default();
        h.write(kind);
        h.write(&[0]);
        h.write(value.as_bytes());
        fmix64(h.0)
    }

    pub fn is_unkeyed(&self) -> bool {
        matches!(self, ClientKey::Unkeyed)
    }
}

/// FNV-1a, 64 bits.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn the_hash_is_fixed_across_builds_and_targets() {
        // Every VM of every worker must find the same slot: the hash may not depend on the
        // platform, the process or a random seed.
        assert_eq!(ClientKey::Unkeyed.hash(), ClientKey::Unkeyed.hash());
        assert_eq!(
            ClientKey::Header("a".into()).hash(),
            0x88a3_2966_08bf_2c98,
            "{:#x}",
            ClientKey::Header("a".into()).hash()
        );
    }

    #[test]
    fn kinds_and_values_are_told_apart() {
        let keys = [
            ClientKey::Identity("x".into()),
            ClientKey::Header("x".into()),
            ClientKey::Route("x".into()),
            ClientKey::Header("".into()),
            ClientKey::Unkeyed,
        ];
        let hashes: HashSet<u64> = keys.iter().map(ClientKey::hash).collect();
        assert_eq!(hashes.len(), keys.len());
    }

    #[test]
    fn neighbouring_keys_spread_over_a_small_table() {
        let slots = 64u64;
        let mut used = vec![0u32; slots as usize];
        for i in 0..6400 {
            used[(ClientKey::Header(format!("client-{i}")).hash() % slots) as usize] += 1;
        }
        // 100 expected per slot; a poor hash piles them up.
        assert!(used.iter().all(|n| (50..=150).contains(n)), "{used:?}");
    }
}
