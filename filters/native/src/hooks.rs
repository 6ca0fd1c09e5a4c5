//! The bodies of the exported hooks: [`crate::export!`] defines each
//! `envoy_dynamic_module_on_*` symbol as a call to the function of the same name here.
//!
//! Each turns Envoy's raw arguments into the module's objects and safe handles, and runs under
//! `catch_unwind`: an unwind out of an `extern "C"` function would abort Envoy (`ABI.md` §8).
//! A hook that panics outside the suite's own guard ([`crate::module::Filter`]) returns the
//! safest value: no config (Envoy refuses it), no per-route config, a stream that continues.

// The ABI layer: raw pointers from Envoy become the module's objects here.
#![allow(unsafe_code)]

use crate::abi::*;
use crate::ffi::{self, ConfigPtr, Stream};
use crate::module::{self, Config, Filter, Module};
use core::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs a hook body; a panic is logged and replaced by `fallback`.
fn guard<T>(hook: &str, fallback: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            let message = module::panic_message(&*payload);
            ffi::log(
                log::Level::Error,
                &format!("mesh: panic in {hook}, caught: {message}"),
            );
            fallback
        }
    }
}

/// `envoy_dynamic_module_on_program_init`: the log facade, the panic hook, the ABI version.
pub fn program_init() -> *const c_char {
    guard("program_init", core::ptr::null(), || {
        ffi::install_logger();
        module::install_panic_hook();
        ABI_VERSION.as_ptr()
    })
}

/// # Safety
/// Called only as `envoy_dynamic_module_on_http_filter_config_new`, with Envoy's arguments.
pub unsafe fn http_filter_config_new(
    module: &Module,
    envoy: HttpFilterConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> HttpFilterConfigModulePtr {
    guard("http_filter_config_new", core::ptr::null(), || {
        // SAFETY: the hook's arguments, copied during the hook.
        let bytes = unsafe { ffi::copy_buffer(config) };
        // SAFETY: as above.
        let name = unsafe { ffi::copy_buffer(name) };
        // SAFETY: Envoy's config pointer, used on the main thread until config_destroy (the
        // config keeps it for its ticks and callouts, which run on the main thread).
        let envoy = unsafe { ConfigPtr::new(envoy) };
        match Config::new(module, envoy, &String::from_utf8_lossy(&name), &bytes) {
            Ok(config) => ffi::into_module_ptr(Box::new(config)),
            Err(line) => {
                log::error!("{line}");
                core::ptr::null()
            }
        }
    })
}

/// # Safety
/// Called only as `envoy_dynamic_module_on_http_filter_config_destroy`.
pub unsafe fn http_filter_config_destroy(ptr: HttpFilterConfigModulePtr) {
    guard("http_filter_config_destroy", (), || {
        // SAFETY: the `Box<Config>` made in config_new; Envoy destroys it once, after every
        // filter made from it.
        if let Some(config) = unsafe { ffi::take_module::<Config>(ptr) } {
            config.destroy();
        }
    });
}

/// # Safety
/// Called only as `envoy_dynamic_module_on_http_filter_config_scheduled`.
pub unsafe fn http_filter_config_scheduled(
    _envoy: HttpFilterConfigEnvoyPtr,
    ptr: HttpFilterConfigModulePtr,
    _event_id: u64,
) {
    guard("http_filter_config_scheduled", (), || {
        // SAFETY: the module's `Config`, alive until config_destroy.
        if let Some(config) = unsafe { ffi::module_ref::<Config>(ptr) } {
            config.on_scheduled();
        }
    });
}

/// # Safety
/// Called only as `envoy_dynamic_module_on_http_filter_config_http_callout_done`, with Envoy's
/// arguments.
#[allow(clippy::too_many_arguments)]
pub unsafe fn http_filter_config_http_callout_done(
    _envoy: HttpFilterConfigEnvoyPtr,
    ptr: HttpFilterConfigModulePtr,
    callout_id: u64,
    result: HttpCalloutResult,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    _body_chunks: *mut EnvoyBuffer,
    _body_chunks_size: usize,
) {
    guard("http_filter_config_http_callout_done", (), || {
        let status = if result == HttpCalloutResult::SUCCESS {
            // SAFETY: the hook's arguments, read during the hook.
            unsafe { ffi::callout_status(headers, headers_size) }
        } else {
            None
        };
        // SAFETY: the module's `Config`, alive until config_destroy.
        if let Some(config) = unsafe { ffi::module_ref::<Config>(ptr) } {
            config.on_callout_done(callout_id, status);
        }
    });
}

/// # Safety
/// Called only as `envoy_dynamic_module_on_http_filter_per_route_config_new`, with Envoy's
/// arguments.
pub unsafe fn http_filter_per_route_config_new(
    module: &Module,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> HttpFilterPerRouteConfigModulePtr {
    guard(
        "http_filter_per_route_config_new",
        core::ptr::null(),
        || {
            // SAFETY: the hook's arguments, copied during the hook.
            let (name, bytes) = unsafe { (ffi::copy_buffer(name), ffi::copy_buffer(config)) };
            match module::per_route(module, &name, &bytes) {
                Ok(per_route) => ffi::per_route_into_ptr(Box::new(per_route)),
                Err(line) => {
                    log::error!("{line}");
                    core::ptr::null()
                }
            }
        },
    )
}

/// # Safety
/// Called only as `envoy_dynamic_module_on_http_filter_per_route_config_destroy`.
pub unsafe fn http_filter_per_route_config_destroy(ptr: HttpFilterPerRouteConfigModulePtr) {
    guard("http_filter_per_route_config_destroy", (), || {
        // SAFETY: Envoy destroys each per-route config once, after the routes using it.
        drop(unsafe { ffi::per_route_take(ptr) });
    });
}

/// # Safety
/// Called only as `envoy_dynamic_module_on_http_filter_new`, with Envoy's arguments.
pub unsafe fn http_filter_new(
    config: HttpFilterConfigModulePtr,
    envoy: HttpFilterEnvoyPtr,
) -> HttpFilterModulePtr {
    // Null (also after a panic here) makes Envoy close the stream (ABI.md §2).
    guard("http_filter_new", core::ptr::null(), || {
        // SAFETY: the module's `Config`, which outlives every filter made from it.
        let Some(config) = (unsafe { ffi::module_ref::<Config>(config) }) else {
            return core::ptr::null();
        };
        // SAFETY: Envoy's filter pointer for this stream, used by the filter's hooks only,
        // on this worker, until filter_destroy.
        let stream = unsafe { Stream::new(envoy) };
        ffi::into_module_ptr(Box::new(config.new_filter(stream)))
    })
}

/// The module's filter behind a filter pointer.
///
/// # Safety
/// `ptr` was returned by `http_filter_new` and `http_filter_destroy` has not run for it.
unsafe fn filter<'a>(ptr: HttpFilterModulePtr) -> Option<&'a Filter> {
    // SAFETY: the caller's guarantee. Shared references only: should Envoy ever run a hook of
    // the stream inside another (a callback that calls back), two `&mut` would alias; `Filter`
    // guards its state with a `RefCell` instead.
    unsafe { ffi::module_ref::<Filter>(ptr) }
}

/// # Safety
/// Called only as `envoy_dynamic_module_on_http_filter_request_headers`.
pub unsafe fn http_filter_request_headers(
    _envoy: HttpFilterEnvoyPtr,
    ptr: HttpFilterModulePtr,
    _end_of_stream: bool,
) -> OnHttpFilterRequestHeadersStatus {
    guard(
        "http_filter_request_headers",
        OnHttpFilterRequestHeadersStatus::CONTINUE,
        || {
            // SAFETY: this stream's filter, during its hook.
            match unsafe { filter(ptr) } {
                Some(f) if !f.request_headers() => OnHttpFilterRequestHeadersStatus::STOP_ITERATION,
                _ => OnHttpFilterRequestHeadersStatus::CONTINUE,
            }
        },
    )
}

/// # Safety
/// Called only as `envoy_dynamic_module_on_http_filter_response_headers`.
pub unsafe fn http_filter_response_headers(
    _envoy: HttpFilterEnvoyPtr,
    ptr: HttpFilterModulePtr,
    _end_of_stream: bool,
) -> OnHttpFilterResponseHeadersStatus {
    guard("http_filter_response_headers", (), || {
        // SAFETY: this stream's filter, during its hook.
        if let Some(f) = unsafe { filter(ptr) } {
            f.response_headers();
        }
    });
    OnHttpFilterResponseHeadersStatus::CONTINUE
}

/// # Safety
/// Called only as `envoy_dynamic_module_on_http_filter_response_trailers`.
pub unsafe fn http_filter_response_trailers(
    _envoy: HttpFilterEnvoyPtr,
    ptr: HttpFilterModulePtr,
) -> OnHttpFilterResponseTrailersStatus {
    guard("http_filter_response_trailers", (), || {
        // SAFETY: this stream's filter, during its hook.
        if let Some(f) = unsafe { filter(ptr) } {
            f.response_trailers();
        }
    });
    OnHttpFilterResponseTrailersStatus::CONTINUE
}

/// # Safety
/// Called only as `envoy_dynamic_module_on_http_filter_stream_complete`.
pub unsafe fn http_filter_stream_complete(_envoy: HttpFilterEnvoyPtr, ptr: HttpFilterModulePtr) {
    guard("http_filter_stream_complete", (), || {
        // SAFETY: this stream's filter, during its hook.
        if let Some(f) = unsafe { filter(ptr) } {
            f.stream_complete();
        }
    });
}

/// # Safety
/// Called only as `envoy_dynamic_module_on_http_filter_destroy`.
pub unsafe fn http_filter_destroy(ptr: HttpFilterModulePtr) {
    guard("http_filter_destroy", (), || {
        // SAFETY: the `Box<Filter>` made in filter_new; Envoy destroys it once, after its last
        // hook.
        drop(unsafe { ffi::take_module::<Filter>(ptr) });
    });
}
