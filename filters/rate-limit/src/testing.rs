//! What the unit tests add to the kit's [`TestHost`]: this stage's metrics by stat and route,
//! and the shared-data calls made since the last look.

use mesh_kit::testing::TestHost;

pub type Store = TestHost;

pub trait StoreExt {
    /// The value of `mesh.rate_limit.<stat>.route=<route>` (0 when never defined).
    fn stat(&self, stat: &str, route: &str) -> i64;
    /// (shared-data reads, writes) since the last look at the host calls.
    fn take_shared(&self) -> (u32, u32);
}

impl StoreExt for TestHost {
    fn stat(&self, stat: &str, route: &str) -> i64 {
        self.metric(&format!("mesh.rate_limit.{stat}.route={route}"))
            .unwrap_or(0)
    }
    fn take_shared(&self) -> (u32, u32) {
        let calls = self.take_calls();
        let n = |k: &str| calls.get(k).copied().unwrap_or(0);
        (n("shared_get"), n("shared_set"))
    }
}
