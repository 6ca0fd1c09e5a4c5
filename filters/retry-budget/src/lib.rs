//! `mesh-retry-budget`: retries driven through Envoy's router, bounded by a time-windowed budget
//! (retry ratio + floor + TTL, as Finagle and Linkerd do) shared by every Envoy worker.
//!
//! - [`budget`]: the budget arithmetic and its shared-data record, pure;
//! - [`config`]: the configuration and its validation;
//! - [`filter`]: the stage the kit's adapter runs.
//!
//! Built with the default `standalone` feature this crate is `mesh_retry_budget.wasm`, root_id
//! `mesh.retry_budget`. See README.md.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod budget;
pub mod config;
pub mod filter;

/// This stage as the suite, the checker and the schema know it.
pub const STAGE: mesh_kit::registry::Entry = mesh_kit::registry::entry::<filter::RetryBudget>();

#[cfg(all(feature = "standalone", target_arch = "wasm32"))]
#[allow(unsafe_code)]
mod entry {
    mesh_kit::export_stage!(crate::filter::RetryBudget);
}
