//! The mesh filters as a native Envoy dynamic module.
//!
//! Envoy 1.40 loads native HTTP filters through
//! `envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter`: a shared object
//! (`lib<name>.so`) that exports the event hooks (`envoy_dynamic_module_on_*`) and calls back
//! into Envoy (`envoy_dynamic_module_callback_*`). This crate is the runtime that runs the kit's
//! stages there, the twin of `mesh_kit::wasm` for proxy-wasm:
//!
//! - [`abi`]: hand-written bindings of the ABI (`v0.2.0`; `ABI.md` records the verified facts);
//! - `ffi`: safe handles over it (streams, the filter config, the ticker, Envoy's log);
//! - [`host`]: the kit's `Host` per stream, on the main thread and at config time;
//! - [`input`]: the pure conversions of the bytes Envoy hands the module (header text, a
//!   callout's `:status`), fuzzed without Envoy;
//! - [`module`]: configs, per-thread roots, per-stream filters, failure safety;
//! - [`metrics`], [`store`], [`per_route`]: labelled metrics, shared data, per-route config;
//! - [`hooks`] and [`export!`]: the exported hooks a cdylib defines with one macro call.
//!
//! The suite is the module: `filters/suite` with feature `native` invokes [`export!`], and
//! `cargo build --profile native -p mesh-suite --features native` produces
//! `target/native/libmesh_filters.so`. Unsafe code lives in `abi`, `ffi` and `hooks` only.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod abi;
mod ffi;
pub mod hooks;
pub mod host;
pub mod input;
pub mod metrics;
pub mod module;
pub mod per_route;
pub mod store;

pub use abi::ABI_VERSION;
pub use module::Module;

/// Defines the exported hooks of a dynamic module that runs the stages `factory` builds:
///
/// ```text
/// mesh_native::export!(crate::NAME, crate::factory, &crate::STAGES);
/// ```
///
/// `name` is the filter's name in log lines (`mesh`), `factory` a
/// [`mesh_kit::stage::Factory`], `stages` every [`mesh_kit::registry::Entry`] it may build
/// (their per-route stats are defined when a configuration loads, their names key the
/// per-route configuration). Invoke it once, in the cdylib crate, for native targets only.
#[macro_export]
macro_rules! export {
    ($name:expr, $factory:expr, $stages:expr) => {
        // The exports are `#[no_mangle]` (what the `unsafe_code` lint flags) and call the hook
        // bodies under the ABI's contract; the bodies are `mesh_native::hooks`.
        #[allow(unsafe_code, clippy::missing_safety_doc)]
        mod __mesh_native_exports {
            use $crate::abi::*;

            static MODULE: $crate::Module = $crate::Module {
                name: $name,
                factory: $factory,
                stages: $stages,
            };

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const ::core::ffi::c_char {
                $crate::hooks::program_init()
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
                envoy: HttpFilterConfigEnvoyPtr,
                name: EnvoyBuffer,
                config: EnvoyBuffer,
            ) -> HttpFilterConfigModulePtr {
                // SAFETY: Envoy calls this export as the hook of that name, with its arguments.
                unsafe { $crate::hooks::http_filter_config_new(&MODULE, envoy, name, config) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
                ptr: HttpFilterConfigModulePtr,
            ) {
                // SAFETY: as above.
                unsafe { $crate::hooks::http_filter_config_destroy(ptr) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
                envoy: HttpFilterConfigEnvoyPtr,
                ptr: HttpFilterConfigModulePtr,
                event_id: u64,
            ) {
                // SAFETY: as above.
                unsafe { $crate::hooks::http_filter_config_scheduled(envoy, ptr, event_id) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
                envoy: HttpFilterConfigEnvoyPtr,
                ptr: HttpFilterConfigModulePtr,
                callout_id: u64,
                result: HttpCalloutResult,
                headers: *mut EnvoyHttpHeader,
                headers_size: usize,
                body_chunks: *mut EnvoyBuffer,
                body_chunks_size: usize,
            ) {
                // SAFETY: as above.
                unsafe {
                    $crate::hooks::http_filter_config_http_callout_done(
                        envoy,
                        ptr,
                        callout_id,
                        result,
                        headers,
                        headers_size,
                        body_chunks,
                        body_chunks_size,
                    )
                }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
                name: EnvoyBuffer,
                config: EnvoyBuffer,
            ) -> HttpFilterPerRouteConfigModulePtr {
                // SAFETY: as above.
                unsafe { $crate::hooks::http_filter_per_route_config_new(&MODULE, name, config) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
                ptr: HttpFilterPerRouteConfigModulePtr,
            ) {
                // SAFETY: as above.
                unsafe { $crate::hooks::http_filter_per_route_config_destroy(ptr) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
                config: HttpFilterConfigModulePtr,
                envoy: HttpFilterEnvoyPtr,
            ) -> HttpFilterModulePtr {
                // SAFETY: as above.
                unsafe { $crate::hooks::http_filter_new(config, envoy) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
                envoy: HttpFilterEnvoyPtr,
                ptr: HttpFilterModulePtr,
                end_of_stream: bool,
            ) -> OnHttpFilterRequestHeadersStatus {
                // SAFETY: as above.
                unsafe { $crate::hooks::http_filter_request_headers(envoy, ptr, end_of_stream) }
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
                _envoy: HttpFilterEnvoyPtr,
                _ptr: HttpFilterModulePtr,
                _end_of_stream: bool,
            ) -> OnHttpFilterRequestBodyStatus {
                OnHttpFilterRequestBodyStatus::CONTINUE
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
                _envoy: HttpFilterEnvoyPtr,
                _ptr: HttpFilterModulePtr,
            ) -> OnHttpFilterRequestTrailersStatus {
                OnHttpFilterRequestTrailersStatus::CONTINUE
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
                envoy: HttpFilterEnvoyPtr,
                ptr: HttpFilterModulePtr,
                end_of_stream: bool,
            ) -> OnHttpFilterResponseHeadersStatus {
                // SAFETY: as above.
                unsafe { $crate::hooks::http_filter_response_headers(envoy, ptr, end_of_stream) }
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
                _envoy: HttpFilterEnvoyPtr,
                _ptr: HttpFilterModulePtr,
                _end_of_stream: bool,
            ) -> OnHttpFilterResponseBodyStatus {
                OnHttpFilterResponseBodyStatus::CONTINUE
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
                envoy: HttpFilterEnvoyPtr,
                ptr: HttpFilterModulePtr,
            ) -> OnHttpFilterResponseTrailersStatus {
                // SAFETY: as above.
                unsafe { $crate::hooks::http_filter_response_trailers(envoy, ptr) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
                envoy: HttpFilterEnvoyPtr,
                ptr: HttpFilterModulePtr,
            ) {
                // SAFETY: as above.
                unsafe { $crate::hooks::http_filter_stream_complete(envoy, ptr) }
            }

            #[no_mangle]
            pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(
                ptr: HttpFilterModulePtr,
            ) {
                // SAFETY: as above.
                unsafe { $crate::hooks::http_filter_destroy(ptr) }
            }

            // Required by Envoy, unused by the stages (no stream callouts, no filter
            // scheduler, no streamed callouts, no flow control).

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
                _envoy: HttpFilterEnvoyPtr,
                _ptr: HttpFilterModulePtr,
                _callout_id: u64,
                _result: HttpCalloutResult,
                _headers: *mut EnvoyHttpHeader,
                _headers_size: usize,
                _body_chunks: *mut EnvoyBuffer,
                _body_chunks_size: usize,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
                _envoy: HttpFilterEnvoyPtr,
                _ptr: HttpFilterModulePtr,
                _stream_id: u64,
                _headers: *mut EnvoyHttpHeader,
                _headers_size: usize,
                _end_stream: bool,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
                _envoy: HttpFilterEnvoyPtr,
                _ptr: HttpFilterModulePtr,
                _stream_id: u64,
                _data: *const EnvoyBuffer,
                _data_count: usize,
                _end_stream: bool,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
                _envoy: HttpFilterEnvoyPtr,
                _ptr: HttpFilterModulePtr,
                _stream_id: u64,
                _trailers: *mut EnvoyHttpHeader,
                _trailers_size: usize,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
                _envoy: HttpFilterEnvoyPtr,
                _ptr: HttpFilterModulePtr,
                _stream_id: u64,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
                _envoy: HttpFilterEnvoyPtr,
                _ptr: HttpFilterModulePtr,
                _stream_id: u64,
                _reason: HttpStreamResetReason,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
                _envoy: HttpFilterEnvoyPtr,
                _ptr: HttpFilterModulePtr,
                _event_id: u64,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
                _envoy: HttpFilterEnvoyPtr,
                _ptr: HttpFilterModulePtr,
            ) {
            }

            #[no_mangle]
            pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
                _envoy: HttpFilterEnvoyPtr,
                _ptr: HttpFilterModulePtr,
            ) {
            }

            // The exports have exactly the ABI's hook signatures.
            const _: OnProgramInit = envoy_dynamic_module_on_program_init;
            const _: OnHttpFilterConfigNew = envoy_dynamic_module_on_http_filter_config_new;
            const _: OnHttpFilterConfigDestroy = envoy_dynamic_module_on_http_filter_config_destroy;
            const _: OnHttpFilterConfigScheduled =
                envoy_dynamic_module_on_http_filter_config_scheduled;
            const _: OnHttpFilterConfigHttpCalloutDone =
                envoy_dynamic_module_on_http_filter_config_http_callout_done;
            const _: OnHttpFilterPerRouteConfigNew =
                envoy_dynamic_module_on_http_filter_per_route_config_new;
            const _: OnHttpFilterPerRouteConfigDestroy =
                envoy_dynamic_module_on_http_filter_per_route_config_destroy;
            const _: OnHttpFilterNew = envoy_dynamic_module_on_http_filter_new;
            const _: OnHttpFilterRequestHeaders = envoy_dynamic_module_on_http_filter_request_headers;
            const _: OnHttpFilterRequestBody = envoy_dynamic_module_on_http_filter_request_body;
            const _: OnHttpFilterRequestTrailers =
                envoy_dynamic_module_on_http_filter_request_trailers;
            const _: OnHttpFilterResponseHeaders =
                envoy_dynamic_module_on_http_filter_response_headers;
            const _: OnHttpFilterResponseBody = envoy_dynamic_module_on_http_filter_response_body;
            const _: OnHttpFilterResponseTrailers =
                envoy_dynamic_module_on_http_filter_response_trailers;
            const _: OnHttpFilterStreamComplete = envoy_dynamic_module_on_http_filter_stream_complete;
            const _: OnHttpFilterDestroy = envoy_dynamic_module_on_http_filter_destroy;
            const _: OnHttpFilterHttpCalloutDone =
                envoy_dynamic_module_on_http_filter_http_callout_done;
            const _: OnHttpFilterHttpStreamHeaders =
                envoy_dynamic_module_on_http_filter_http_stream_headers;
            const _: OnHttpFilterHttpStreamData = envoy_dynamic_module_on_http_filter_http_stream_data;
            const _: OnHttpFilterHttpStreamTrailers =
                envoy_dynamic_module_on_http_filter_http_stream_trailers;
            const _: OnHttpFilterHttpStreamComplete =
                envoy_dynamic_module_on_http_filter_http_stream_complete;
            const _: OnHttpFilterHttpStreamReset = envoy_dynamic_module_on_http_filter_http_stream_reset;
            const _: OnHttpFilterScheduled = envoy_dynamic_module_on_http_filter_scheduled;
            const _: OnHttpFilterDownstreamAboveWriteBufferHighWatermark =
                envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark;
            const _: OnHttpFilterDownstreamBelowWriteBufferLowWatermark =
                envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark;
        }
    };
}
