//! `mesh-rate-limit`: a token bucket per client, keyed by the caller's verified SPIFFE ID (or a
//! request header, or the route), with a burst allowance, shared by every Envoy worker.
//!
//! - [`bucket`]: the token bucket arithmetic in fixed point (refill, take, time to the next
//!   token), pure;
//! - [`table`]: the fixed table of buckets in Envoy's shared data (slots, probing, eviction,
//!   compare-and-swap), over the kit's host trait;
//! - [`key`]: which client a request belongs to, and its hash;
//! - [`fields`]: the IETF `RateLimit-Policy` and `RateLimit` response fields;
//! - [`config`]: the configuration and its validation;
//! - [`filter`]: the stage the kit's adapter runs.
//!
//! Built with the default `standalone` feature this crate is `mesh_rate_limit.wasm`, root_id
//! `mesh.rate_limit`. See README.md.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod bucket;
pub mod config;
pub mod fields;
pub mod filter;
pub mod key;
pub mod table;

#[cfg(test)]
mod testing;

/// This stage as the suite, the checker and the schema know it.
pub const STAGE: mesh_kit::registry::Entry = mesh_kit::registry::entry::<filter::RateLimit>();

#[cfg(all(feature = "standalone", target_arch = "wasm32"))]
#[allow(unsafe_code)]
mod entry {
    mesh_kit::export_stage!(crate::filter::RateLimit);
}
