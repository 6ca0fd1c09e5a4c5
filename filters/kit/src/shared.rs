//! State shared by every worker: compare-and-swap updates over Envoy's shared data.
//!
//! Envoy runs one VM per worker thread; a breaker or a budget that must be one for the whole
//! process lives in shared data. A write carries the CAS token of the value it read and fails
//! with a mismatch when another worker wrote in between; [`update`] then reads again and
//! re-applies the change, a bounded number of times. A key that does not exist has no token to
//! compare with, so keys are created with [`seed`] in `on_configure`, before traffic.
//!
//! ```
//! # use mesh_kit::shared::{seed, update};
//! # use mesh_kit::testing::TestHost;
//! let store = TestHost::default();
//! seed(&store, "budget", &0u64.to_le_bytes());
//! let new = update(&store, "budget", 8, |old| {
//!     let n = old.and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0) + 1;
//!     (Some(n.to_le_bytes().to_vec()), n)
//! });
//! assert_eq!(new, Ok(1));
//! ```

use crate::host::{CasError, Host};
use crate::stage::Exchange;
use serde::Deserialize;

/// What one piece of shared state (a breaker, a budget) covers: a route by name, or an upstream
/// cluster, shared by every route to it.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Route,
    Cluster,
}

/// The route or cluster one request's state belongs to; also the label of its metrics.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Label {
    /// `route` or `cluster`.
    pub kind: &'static str,
    pub name: std::rc::Rc<str>,
}

impl Default for Label {
    fn default() -> Self {
        Label {
            kind: "route",
            name: std::rc::Rc::from(""),
        }
    }
}

impl Scope {
    /// This request's label: its route name, or its upstream cluster (the route name when
    /// Envoy does not say, see [`Exchange::cluster`]).
    pub fn label(self, ex: &mut Exchange) -> Label {
        match self {
            Scope::Route => Label {
                kind: "route",
                name: ex.route_name(),
            },
            Scope::Cluster => Label {
                kind: "cluster",
                name: ex.cluster(),
            },
        }
    }
}

impl Label {
    /// The shared-data key of a stage's state under this label: `mesh.retry_budget:route:auth`.
    pub fn key(&self, stage: &str) -> String {
        format!("{stage}:{}:{}", self.kind, self.name)
    }
}

/// Attempts at a compare-and-swap write before an [`update`] gives up (the breaker's and the
/// budget's): enough for every worker of a large Envoy to win once.
pub const CAS_TRIES: u32 = 32;

/// Why an [`update`] did not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateError {
    /// Other writers won every one of the allowed attempts.
    Contended,
    /// The host failed the call.
    Failed,
}

/// Creates `key` with `initial` unless it exists already (another VM may have seeded it).
pub fn seed(store: &dyn Host, key: &str, initial: &[u8]) -> bool {
    match store.shared_get(key) {
        (Some(_), _) => true,
        _ => store.shared_set(key, initial, None).is_ok(),
    }
}

/// Reads `key`, applies `change` to the current bytes and writes the result with CAS, retrying
/// on conflict up to `max_tries` times. `change` returns the new bytes (`None`: nothing to
/// write) and a value to hand back; it is called again on fresh data after a conflict, so its
/// decision is always made on the value that is written over.
pub fn update<T>(
    store: &dyn Host,
    key: &str,
    max_tries: u32,
    mut change: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
) -> Result<T, UpdateError> {
    for _ in 0..max_tries.max(1) {
        let (current, cas) = store.shared_get(key);
        let (write, out) = change(current.as_deref());
        let Some(bytes) = write else {
            return Ok(out);
        };
        match store.shared_set(key, &bytes, cas) {
            Ok(()) => return Ok(out),
            Err(CasError::Mismatch) => continue,
            Err(CasError::Failed) => return Err(UpdateError::Failed),
        }
    }
    Err(UpdateError::Contended)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute, so these tests also run compiled to
    // wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn incr(store: &TestHost, tries: u32) -> Result<u64, UpdateError> {
        update(store, "k", tries, |old| {
            let n = old
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
                + 1;
            (Some(n.to_le_bytes().to_vec()), n)
        })
    }

    #[test]
    fn seeding_twice_keeps_the_first_value() {
        let s = TestHost::default();
        assert!(seed(&s, "k", &[1]));
        assert!(seed(&s, "k", &[2]));
        assert_eq!(s.shared_get("k").0, Some(vec![1]));
    }

    #[test]
    fn a_conflicting_write_is_retried_and_no_update_is_lost() {
        let s = TestHost::default();
        seed(&s, "k", &0u64.to_le_bytes());
        s.conflicts.set(3);
        assert_eq!(incr(&s, 8), Ok(1));
        assert_eq!(incr(&s, 8), Ok(2));
    }

    #[test]
    fn updates_give_up_after_the_allowed_attempts() {
        let s = TestHost::default();
        seed(&s, "k", &0u64.to_le_bytes());
        s.conflicts.set(10);
        assert_eq!(incr(&s, 4), Err(UpdateError::Contended));
    }

    #[test]
    fn a_stale_token_is_a_mismatch() {
        let s = TestHost::default();
        seed(&s, "k", &[0]);
        let (_, cas) = s.shared_get("k");
        s.shared_set("k", &[1], cas).unwrap();
        assert_eq!(s.shared_set("k", &[2], cas), Err(CasError::Mismatch));
    }

    #[test]
    fn declining_to_change_writes_nothing() {
        let s = TestHost::default();
        seed(&s, "k", &[7]);
        assert_eq!(
            update(&s, "k", 3, |old| (None, old.map(<[u8]>::to_vec))),
            Ok(Some(vec![7]))
        );
        assert_eq!(s.shared_get("k").0, Some(vec![7]));
    }
}
