//! The IETF RateLimit response fields (draft-ietf-httpapi-ratelimit-headers, the two-field
//! syntax of its latest versions), for a token bucket:
//!
//! - `RateLimit-Policy: "default";q=<burst>;w=<window>`: the quota policy. A token bucket has
//!   two parameters and the field one quota and one window; `q` is the burst and `w` the whole
//!   seconds an empty bucket takes to refill (`burst / rate`, rounded up, at least 1). A client
//!   that sends at most `q` requests per `w` seconds is never limited; the sustained rate the
//!   bucket allows is never below `q / w`.
//! - `RateLimit: "default";r=<remaining>;t=<reset>`: the whole tokens left, and the seconds until
//!   the next one, rounded up (at least 1: the same moment as `retry-after`).
//!
//! The policy is named `"default"`, or `"override-<n>"` when the `n`-th (from 1) identity
//! override applies. Both are Structured Field items (RFC 8941): a string and integer
//! parameters.
//!
//! ```
//! use mesh_rate_limit::bucket::Limit;
//! use mesh_rate_limit::fields::{policy, remaining};
//! let limit = Limit::new(5_000_000, 10);
//! assert_eq!(policy(None, &limit), r#""default";q=10;w=2"#);
//! assert_eq!(remaining(Some(0), 0, 200_000), r#""override-1";r=0;t=1"#);
//! ```

use crate::bucket::Limit;
use crate::config::Which;

/// Header names (lowercase, as HTTP/2 sends them).
pub const POLICY: &str = "ratelimit-policy";
pub const RATELIMIT: &str = "ratelimit";

/// The policy identifier of `which` limit applies.
pub fn name(which: Which) -> String {
    match which {
        None => "default".to_string(),
        Some(i) => format!("override-{}", i.saturating_add(1)),
    }
}

/// The `RateLimit-Policy` value.
pub fn policy(which: Which, limit: &Limit) -> String {
    format!(
        "\"{}\";q={};w={}",
        name(which),
        limit.burst(),
        limit.window_seconds()
    )
}

/// The `RateLimit` value: `tokens` whole tokens left, the next one in `next_in_us`.
pub fn remaining(which: Which, tokens: u64, next_in_us: u64) -> String {
    let t = next_in_us.div_ceil(1_000_000).max(1);
    format!("\"{}\";r={tokens};t={t}", name(which))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::MICRO;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn the_policy_states_the_burst_and_the_time_to_refill_it() {
        assert_eq!(policy(None, &Limit::new(MICRO, 1)), "\"default\";q=1;w=1");
        assert_eq!(
            policy(None, &Limit::new(3 * MICRO, 10)),
            "\"default\";q=10;w=4"
        );
        assert_eq!(
            policy(Some(2), &Limit::new(MICRO / 10, 2)),
            "\"override-3\";q=2;w=20"
        );
    }

    #[test]
    fn the_reset_is_whole_seconds_rounded_up_like_retry_after() {
        assert_eq!(remaining(None, 0, 1), "\"default\";r=0;t=1");
        assert_eq!(remaining(None, 0, 1_000_000), "\"default\";r=0;t=1");
        assert_eq!(remaining(None, 0, 1_000_001), "\"default\";r=0;t=2");
        assert_eq!(
            mesh_kit::reply::retry_after_seconds(std::time::Duration::from_micros(1_000_001)),
            2
        );
    }
}
