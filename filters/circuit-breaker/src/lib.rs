//! `mesh-circuit-breaker`: a real closed / open / half-open breaker per route or per cluster,
//! one state for the whole Envoy process.
//!
//! - [`breaker`]: the state machine and its shared-data record, pure;
//! - [`classify`]: which outcomes are failures (HTTP codes, Envoy response flags, gRPC statuses);
//! - [`config`]: the configuration and its validation;
//! - [`filter`]: the stage the kit's adapter runs.
//!
//! Built with the default `standalone` feature this crate is `mesh_circuit_breaker.wasm`,
//! root_id `mesh.circuit_breaker`. See README.md.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod breaker;
pub mod classify;
pub mod config;
pub mod filter;

/// This stage as the suite, the checker and the schema know it.
pub const STAGE: mesh_kit::registry::Entry = mesh_kit::registry::entry::<filter::CircuitBreaker>();

#[cfg(all(feature = "standalone", target_arch = "wasm32"))]
#[allow(unsafe_code)]
mod entry {
    mesh_kit::export_stage!(crate::filter::CircuitBreaker);
}
