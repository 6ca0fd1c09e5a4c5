//! The `mesh-filters` command-line tool, built from the same configuration code as the filters.
//!
//! - [`check`]: validates the mesh filters' plugin configurations and route metadata in an
//!   Envoy bootstrap or admin `config_dump` and prints the effective settings per route.
//! - [`schema`]: writes the JSON Schema of every filter's configuration, of its route metadata
//!   and of the suite, generated from the filters' configuration types.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod check;
pub mod schema;
