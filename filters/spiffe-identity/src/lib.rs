//! `mesh-spiffe-identity`: authorizes the mTLS peer's SPIFFE ID per route, strictly validated,
//! with patterns, deny lists and an audit mode, and forwards the verified identity upstream —
//! never one a client sent.
//!
//! - [`id`]: SPIFFE ID validation (SPIFFE ID and X.509-SVID specs), pure;
//! - [`pattern`]: allow / deny patterns (`*` in a segment, trailing `/**`), pure;
//! - [`xfcc`]: Envoy's `x-forwarded-client-cert` parser, pure;
//! - [`config`]: the configuration and its validation;
//! - [`filter`]: the stage the kit's adapter runs.
//!
//! Built with the default `standalone` feature this crate is `mesh_spiffe_identity.wasm`, root_id
//! `mesh.spiffe_identity`. See README.md.

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
pub mod id;
pub mod pattern;
pub mod xfcc;

/// This stage as the suite, the checker and the schema know it.
pub const STAGE: mesh_kit::registry::Entry = mesh_kit::registry::entry::<filter::SpiffeIdentity>();

#[cfg(all(feature = "standalone", target_arch = "wasm32"))]
#[allow(unsafe_code)]
mod entry {
    mesh_kit::export_stage!(crate::filter::SpiffeIdentity);
}
