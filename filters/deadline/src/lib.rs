//! `mesh-deadline`: per-route deadlines that honour and propagate the caller's remaining budget.
//!
//! - [`grpc_timeout`] and [`budget`]: the pure policy (wire format, arithmetic), unit- and
//!   property-tested natively and on wasm32;
//! - [`config`]: the configuration and its validation;
//! - [`filter`]: the stage the kit's adapter runs.
//!
//! Built with the default `standalone` feature this crate is `mesh_deadline.wasm`, root_id
//! `mesh.deadline`. See README.md for the configuration, metrics and an Envoy snippet.

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
pub mod grpc_timeout;

/// This stage as the suite, the checker and the schema know it.
pub const STAGE: mesh_kit::registry::Entry = mesh_kit::registry::entry::<filter::Deadline>();

#[cfg(all(feature = "standalone", target_arch = "wasm32"))]
#[allow(unsafe_code)]
mod entry {
    mesh_kit::export_stage!(crate::filter::Deadline);
}
