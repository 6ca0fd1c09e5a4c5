//! Bindings of the Envoy dynamic-module ABI for the mesh filters.
//!
//! Envoy 1.40 loads native HTTP filters through
//! `envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter`: a shared object
//! (`lib<name>.so`) that exports the event hooks (`envoy_dynamic_module_on_*`) and calls back
//! into Envoy (`envoy_dynamic_module_callback_*`). No Rust SDK of this ABI is published, so
//! [`abi`] declares the subset the mesh filters need by hand, from the C header of ABI version
//! `v0.2.0` (see `ABI.md` in this crate for the verified facts and how each was checked).
//!
//! This crate is the raw layer only: `#[repr(C)]` types, `extern "C"` callbacks and the hook
//! signatures. It holds every `unsafe` of the native build; the adapter on top of it turns the raw
//! pointers into safe handles.

pub mod abi;

pub use abi::ABI_VERSION;
