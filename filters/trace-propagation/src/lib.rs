//! `mesh-trace-propagation`: one trace across W3C trace context, B3, Jaeger and gRPC's
//! `grpc-trace-bin`, in and out, a new span id per hop, the W3C limits on tracestate and baggage,
//! and optional OTLP/HTTP span export.
//!
//! - [`formats`]: parse and format every propagation format, pure;
//! - [`otlp`]: the OTLP protobuf messages (prost) and the encoding of finished spans, pure;
//! - [`config`]: the configuration and its validation;
//! - [`filter`]: the stage the kit's adapter runs.
//!
//! Built with the default `standalone` feature this crate is `mesh_trace_propagation.wasm`,
//! root_id `mesh.trace_propagation`. See README.md.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod config;
pub mod filter;
pub mod formats;
pub mod otlp;

/// This stage as the suite, the checker and the schema know it.
pub const STAGE: mesh_kit::registry::Entry =
    mesh_kit::registry::entry::<filter::TracePropagation>();

#[cfg(all(feature = "standalone", target_arch = "wasm32"))]
#[allow(unsafe_code)]
mod entry {
    mesh_kit::export_stage!(crate::filter::TracePropagation);
}
