//! The proof module: a small HTTP filter that exercises the `mesh-native` bindings inside a real
//! Envoy 1.40, built as `libmesh_native_proof.so` and driven by `tests/envoy.rs`.
//!
//! What it does is chosen by the filter config and the request path, and everything it observes
//! goes back out as `x-proof-*` response headers or as one `mesh.proof …` line in Envoy's log,
//! where the test reads it:
//!
//! * filter `main` (config `tick` or anything else; `reject` makes `on_http_filter_config_new`
//!   fail): reads request headers, writes request headers the upstream sees, reads the route name,
//!   the route metadata (`mesh.proof` namespace), the per-route config and the cluster, counts the
//!   request in labelled counters, a gauge and a histogram, and probes attributes at request,
//!   response and stream end. Paths: `/local` (local reply), `/grpc` and `/grpc-explicit` (gRPC
//!   replies), `/panic` (a panic caught in the hook), `/abort` (a module that aborts), `/delay`
//!   (a worker-thread scheduled event from a module thread), `/callout` (an HTTP callout from the
//!   filter). With config `tick`, a module thread commits a main-thread event every 100 ms; the
//!   events count ticks, define a metric late and make a config-level HTTP callout.
//! * filters `echo-*`: only echo their config bytes in `x-proof-config-<name>`.
//!
//! Every hook runs its body under `catch_unwind` ([`guard`]): with the `native` profile
//! (`panic = "unwind"`) a panic becomes a log line and a fallback value instead of an abort of the
//! whole Envoy process.

// A dynamic module is FFI from end to end: `#[no_mangle]` exports, raw Envoy pointers, calls
// through `mesh_native::abi`. The unsafe code is in the small wrappers at the top of this file.
#![allow(unsafe_code)]
// The module threads below (a ticker, a delayed commit) sleep; no Envoy worker ever does.
#![allow(clippy::disallowed_methods)]
// The exported hooks are `unsafe extern "C"`: only Envoy calls them, and their safety contract is
// the ABI's, documented once on the `On*` types of `mesh_native::abi`.
#![allow(clippy::missing_safety_doc)]

use core::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_native::abi::*;

// ---------------------------------------------------------------- small safe wrappers

/// A raw Envoy pointer that the module keeps across threads. Envoy documents which thread may
/// use which pointer (see `ABI.md`); this wrapper only lets the value be stored in shared state.
#[derive(Clone, Copy, Debug)]
struct Raw(*mut c_void);
// SAFETY: the pointer is an opaque handle; every use goes through a callback whose thread rules
// the call sites follow (config pointer on the main thread, scheduler commit from any thread).
unsafe impl Send for Raw {}
// SAFETY: as above; the handle is never dereferenced by the module.
unsafe impl Sync for Raw {}

impl Raw {
    /// The pointer (a method, so that closures capture the whole `Raw`, which is `Send`).
    fn ptr(self) -> *mut c_void {
        self.0
    }
}

fn log(level: LogLevel, msg: &str) {
    // SAFETY: the buffer borrows `msg` for the duration of the call; logging is allowed on any
    // thread.
    unsafe { envoy_dynamic_module_callback_log(level, ModuleBuffer::from(msg)) }
}

fn info(msg: &str) {
    log(LogLevel::INFO, msg);
}

/// The kernel's name of the calling thread (`envoy` for Envoy's main thread, `wrk:worker_N` for
/// workers); Envoy's threads are not Rust threads, so `std::thread::current().name()` is `None`.
fn thread_name() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".to_string())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Runs a hook body; a panic is logged and replaced by `fallback()`.
fn guard<T>(hook: &str, fallback: impl FnOnce() -> T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log(
                LogLevel::ERROR,
                &format!("mesh.proof panic caught in {hook}: {msg}"),
            );
            fallback()
        }
    }
}

/// Per-stream calls, on the worker thread that runs the stream.
#[derive(Clone, Copy)]
struct Stream(HttpFilterEnvoyPtr);

impl Stream {
    fn header(self, map: HttpHeaderType, key: &str) -> (Option<String>, usize) {
        let mut out = EnvoyBuffer::EMPTY;
        let mut count = 0usize;
        // SAFETY: valid filter pointer during the hook; out-pointers are live locals.
        let found = unsafe {
            envoy_dynamic_module_callback_http_get_header(
                self.0,
                map,
                ModuleBuffer::from(key),
                &mut out,
                0,
                &mut count,
            )
        };
        // SAFETY: Envoy filled `out`; it is read before any setter is called.
        let value = found.then(|| text(unsafe { out.as_bytes() }));
        (value.filter(|_| !out.ptr.is_null()), count)
    }

    fn header_values(self, map: HttpHeaderType, key: &str) -> Vec<String> {
        let (_, count) = self.header(map, key);
        let mut out = vec![EnvoyBuffer::EMPTY; count];
        // SAFETY: `out` holds `count` entries, the number Envoy just reported for `key`.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_header_values(
                self.0,
                map,
                ModuleBuffer::from(key),
                out.as_mut_ptr(),
            )
        };
        if !ok {
            return Vec::new();
        }
        // SAFETY: filled by Envoy, read within the hook.
        out.iter().map(|b| text(unsafe { b.as_bytes() })).collect()
    }

    fn headers(self, map: HttpHeaderType) -> Vec<(String, String)> {
        // SAFETY: valid filter pointer during the hook.
        let n = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.0, map) };
        let mut out = vec![EnvoyHttpHeader::EMPTY; n];
        // SAFETY: `out` holds as many entries as Envoy reported.
        if !unsafe { envoy_dynamic_module_callback_http_get_headers(self.0, map, out.as_mut_ptr()) }
        {
            return Vec::new();
        }
        out.iter()
            .map(|h| {
                // SAFETY: filled by Envoy, read within the hook.
                let (k, v) = unsafe { h.as_bytes() };
                (text(k), text(v))
            })
            .collect()
    }

    fn set(self, map: HttpHeaderType, key: &str, value: Option<&str>) -> bool {
        let value = value.map_or(ModuleBuffer::NULL, ModuleBuffer::from);
        // SAFETY: buffers borrow live strings for the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                map,
                ModuleBuffer::from(key),
                value,
            )
        }
    }

    fn add(self, map: HttpHeaderType, key: &str, value: &str) -> bool {
        // SAFETY: buffers borrow live strings for the call.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.0,
                map,
                ModuleBuffer::from(key),
                ModuleBuffer::from(value),
            )
        }
    }

    fn send_response(self, status: u32, headers: &[(&str, &str)], body: &str, details: &str) {
        let mut hs: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader::new(k.as_bytes(), v.as_bytes()))
            .collect();
        // SAFETY: every buffer borrows data that lives until the call returns.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                status,
                hs.as_mut_ptr(),
                hs.len(),
                ModuleBuffer::from(body),
                ModuleBuffer::from(details),
            )
        }
    }

    /// `s:<text>`, `i:<n>` or `b:<bool>`: whichever getter answers for the attribute, or `none`.
    fn attribute(self, id: AttributeId) -> String {
        let mut buf = EnvoyBuffer::EMPTY;
        // SAFETY: valid filter pointer during the hook; out-pointers are live locals.
        if unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(self.0, id, &mut buf)
        } {
            // SAFETY: filled by Envoy, read within the hook.
            return format!("s:{}", text(unsafe { buf.as_bytes() }));
        }
        let mut n = 0u64;
        // SAFETY: as above.
        if unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_int(self.0, id, &mut n)
        } {
            return format!("i:{n}");
        }
        let mut b = false;
        // SAFETY: as above.
        if unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_bool(self.0, id, &mut b)
        } {
            return format!("b:{b}");
        }
        "none".to_string()
    }

    fn route_metadata(self, key: &str) -> String {
        let (ns, key) = (ModuleBuffer::from("mesh.proof"), ModuleBuffer::from(key));
        let mut s = EnvoyBuffer::EMPTY;
        // SAFETY: valid filter pointer; out-pointers are live locals.
        if unsafe {
            envoy_dynamic_module_callback_http_get_metadata_string(
                self.0,
                MetadataSource::ROUTE,
                ns,
                key,
                &mut s,
            )
        } {
            // SAFETY: filled by Envoy, read within the hook.
            return format!("s:{}", text(unsafe { s.as_bytes() }));
        }
        let mut n = 0f64;
        // SAFETY: as above.
        if unsafe {
            envoy_dynamic_module_callback_http_get_metadata_number(
                self.0,
                MetadataSource::ROUTE,
                ns,
                key,
                &mut n,
            )
        } {
            return format!("n:{n}");
        }
        let mut b = false;
        // SAFETY: as above.
        if unsafe {
            envoy_dynamic_module_callback_http_get_metadata_bool(
                self.0,
                MetadataSource::ROUTE,
                ns,
                key,
                &mut b,
            )
        } {
            return format!("b:{b}");
        }
        "none".to_string()
    }

    fn cluster(self) -> String {
        let mut buf = EnvoyBuffer::EMPTY;
        // SAFETY: valid filter pointer; out-pointer is a live local.
        if unsafe { envoy_dynamic_module_callback_http_get_cluster_name(self.0, &mut buf) } {
            // SAFETY: filled by Envoy, read within the hook.
            text(unsafe { buf.as_bytes() })
        } else {
            "none".to_string()
        }
    }

    fn per_route(self) -> Option<&'static PerRoute> {
        // SAFETY: valid filter pointer; the result is null or a pointer this module returned from
        // `on_http_filter_per_route_config_new`, alive until its destroy hook, which Envoy calls
        // only after the routes that use it are gone.
        let p = unsafe { envoy_dynamic_module_callback_get_most_specific_route_config(self.0) };
        // SAFETY: see above; the module only ever hands out `Box<PerRoute>` pointers.
        unsafe { p.cast::<PerRoute>().as_ref() }
    }

    fn count(self, id: usize, labels: &[&str], value: u64) -> MetricsResult {
        let mut ls: Vec<ModuleBuffer> = labels.iter().map(|l| ModuleBuffer::from(*l)).collect();
        // SAFETY: label buffers borrow live strings for the call.
        unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                self.0,
                id,
                ls.as_mut_ptr(),
                ls.len(),
                value,
            )
        }
    }
}

fn define(
    cfg: HttpFilterConfigEnvoyPtr,
    kind: &str,
    name: &str,
    labels: &[&str],
) -> (MetricsResult, usize) {
    let mut ls: Vec<ModuleBuffer> = labels.iter().map(|l| ModuleBuffer::from(*l)).collect();
    let mut id = 0usize;
    let name = ModuleBuffer::from(name);
    // SAFETY: the config pointer is valid on the main thread until its destroy hook; buffers
    // borrow live strings for the call.
    let r = unsafe {
        match kind {
            "gauge" => envoy_dynamic_module_callback_http_filter_config_define_gauge(
                cfg,
                name,
                ls.as_mut_ptr(),
                ls.len(),
                &mut id,
            ),
            "histogram" => envoy_dynamic_module_callback_http_filter_config_define_histogram(
                cfg,
                name,
                ls.as_mut_ptr(),
                ls.len(),
                &mut id,
            ),
            _ => envoy_dynamic_module_callback_http_filter_config_define_counter(
                cfg,
                name,
                ls.as_mut_ptr(),
                ls.len(),
                &mut id,
            ),
        }
    };
    (r, id)
}

// ---------------------------------------------------------------- the module's objects

struct Metrics {
    requests: usize,
    completed: usize,
    ticks: usize,
    inflight: usize,
    latency: usize,
}

struct Config {
    envoy: Raw,
    name: String,
    raw: Vec<u8>,
    metrics: Option<Metrics>,
    ticker: Mutex<Option<Ticker>>,
}

struct Ticker {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    scheduler: Raw,
}

struct PerRoute {
    name: String,
    config: String,
}

struct Filter {
    config: &'static Config,
    envoy: Raw,
    seen: Vec<(String, String)>,
    scheduler: Option<Raw>,
}

static FILTERS_CREATED: AtomicU64 = AtomicU64::new(0);

// ---------------------------------------------------------------- program and config hooks

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    info(&format!("mesh.proof program_init thread={}", thread_name()));
    ABI_VERSION.as_ptr()
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    envoy: HttpFilterConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> HttpFilterConfigModulePtr {
    guard("config_new", core::ptr::null, || {
        // SAFETY: both buffers are valid for the duration of this hook; they are copied here.
        let (name, raw) = unsafe { (text(name.as_bytes()), config.as_bytes().to_vec()) };
        // SAFETY: main thread, inside config_new.
        let (workers, validate) = unsafe {
            (
                envoy_dynamic_module_callback_get_concurrency(),
                envoy_dynamic_module_callback_is_validation_mode(),
            )
        };
        info(&format!(
            "mesh.proof config_new name={name} config={} thread={} concurrency={workers} validate={validate}",
            text(&raw),
            thread_name()
        ));
        if raw == b"reject" {
            log(
                LogLevel::ERROR,
                "mesh.proof rejecting filter_config \"reject\"",
            );
            return core::ptr::null();
        }
        let metrics = (name == "main").then(|| {
            let (r1, requests) = define(envoy, "counter", "requests", &["route"]);
            let (r2, completed) = define(envoy, "counter", "completed", &["code"]);
            let (r3, ticks) = define(envoy, "counter", "ticks", &[]);
            let (r4, inflight) = define(envoy, "gauge", "inflight", &[]);
            let (r5, latency) = define(envoy, "histogram", "latency_ms", &["route"]);
            info(&format!(
                "mesh.proof defined metrics results={},{},{},{},{}",
                r1.0, r2.0, r3.0, r4.0, r5.0
            ));
            Metrics {
                requests,
                completed,
                ticks,
                inflight,
                latency,
            }
        });
        if name != "main" {
            // A counter in the default metrics namespace, counted through the config pointer
            // while still inside config_new.
            let (r, id) = define(envoy, "counter", "echo_configs", &[]);
            // SAFETY: main thread, valid config pointer, no labels.
            let r2 = unsafe {
                envoy_dynamic_module_callback_http_filter_config_increment_counter(
                    envoy,
                    id,
                    core::ptr::null_mut(),
                    0,
                    1,
                )
            };
            info(&format!("mesh.proof echo counter results={},{}", r.0, r2.0));
        }
        let cfg: &'static Config = Box::leak(Box::new(Config {
            envoy: Raw(envoy),
            name,
            raw,
            metrics,
            ticker: Mutex::new(None),
        }));
        if cfg.raw == b"tick" {
            start_ticker(cfg);
        }
        info(&format!("mesh.proof config_ptr={:p}", cfg));
        (cfg as *const Config).cast::<c_void>()
    })
}

/// A module thread that posts a main-thread event every 100 ms: the ABI has no timer, but a
/// config scheduler can be committed from any thread.
fn start_ticker(cfg: &'static Config) {
    // SAFETY: main thread, valid config pointer.
    let scheduler =
        Raw(unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(cfg.envoy.0) });
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || {
        let mut n = 0u64;
        while !flag.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(100));
            n += 1;
            // SAFETY: commit is allowed from any thread; the scheduler is deleted only after
            // this thread has been joined.
            unsafe {
                envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
                    scheduler.ptr(),
                    n,
                )
            };
        }
    });
    if let Ok(mut t) = cfg.ticker.lock() {
        *t = Some(Ticker {
            stop,
            thread,
            scheduler,
        });
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    ptr: HttpFilterConfigModulePtr,
) {
    guard(
        "config_destroy",
        || (),
        || {
            // SAFETY: `ptr` is the `Box<Config>` leaked in config_new; Envoy destroys it once.
            let cfg = unsafe { Box::from_raw(ptr.cast::<Config>().cast_mut()) };
            info(&format!(
                "mesh.proof config_destroy name={} thread={}",
                cfg.name,
                thread_name()
            ));
            let ticker = cfg.ticker.lock().ok().and_then(|mut t| t.take());
            if let Some(t) = ticker {
                t.stop.store(true, Ordering::Release);
                let _ = t.thread.join();
                // SAFETY: the only thread that committed to it has been joined.
                unsafe {
                    envoy_dynamic_module_callback_http_filter_config_scheduler_delete(t.scheduler.0)
                };
            }
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    envoy: HttpFilterConfigEnvoyPtr,
    ptr: HttpFilterConfigModulePtr,
    event_id: u64,
) {
    guard(
        "config_scheduled",
        || (),
        || {
            // SAFETY: the module's own `Config`, alive until config_destroy.
            let Some(cfg) = (unsafe { ptr.cast::<Config>().as_ref() }) else {
                return;
            };
            if let Some(m) = &cfg.metrics {
                // SAFETY: config pointer on the main thread; no labels.
                unsafe {
                    envoy_dynamic_module_callback_http_filter_config_increment_counter(
                        envoy,
                        m.ticks,
                        core::ptr::null_mut(),
                        0,
                        1,
                    )
                };
            }
            if event_id <= 3 {
                info(&format!(
                    "mesh.proof config_scheduled event={event_id} thread={}",
                    thread_name()
                ));
            }
            if event_id == 2 {
                let (r, _) = define(envoy, "counter", "late", &[]);
                info(&format!("mesh.proof late_define result={}", r.0));
            }
            if event_id == 3 {
                let mut hs = [
                    ModuleHttpHeader::new(b":method", b"GET"),
                    ModuleHttpHeader::new(b":path", b"/from-config"),
                    ModuleHttpHeader::new(b"host", b"upstream"),
                ];
                let mut id = 0u64;
                // SAFETY: config pointer on the main thread; headers borrow static bytes.
                let r = unsafe {
                    envoy_dynamic_module_callback_http_filter_config_http_callout(
                        envoy,
                        &mut id,
                        ModuleBuffer::from("upstream"),
                        hs.as_mut_ptr(),
                        hs.len(),
                        ModuleBuffer::NULL,
                        2000,
                    )
                };
                info(&format!("mesh.proof config_callout start={} id={id}", r.0));
            }
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _envoy: HttpFilterConfigEnvoyPtr,
    _ptr: HttpFilterConfigModulePtr,
    callout_id: u64,
    result: HttpCalloutResult,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) {
    guard(
        "config_callout_done",
        || (),
        || {
            // SAFETY: arrays owned by Envoy, valid during this hook, with the given lengths.
            let (status, body) =
                unsafe { callout_answer(headers, headers_size, body_chunks, body_chunks_size) };
            info(&format!(
            "mesh.proof config_callout_done id={callout_id} result={} status={status} body_len={} thread={}",
            result.0,
            body.len(),
            thread_name()
        ));
        },
    )
}

/// The `:status` and the concatenated body of a callout answer.
///
/// # Safety
/// The pointers and lengths are those Envoy passed to a callout-done hook, still running.
unsafe fn callout_answer(
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) -> (String, Vec<u8>) {
    let hs: &[EnvoyHttpHeader] = if headers.is_null() {
        &[]
    } else {
        // SAFETY: the caller's guarantee.
        unsafe { core::slice::from_raw_parts(headers, headers_size) }
    };
    let status = hs
        .iter()
        // SAFETY: the caller's guarantee.
        .map(|h| unsafe { h.as_bytes() })
        .find(|(k, _)| *k == b":status")
        .map(|(_, v)| text(v))
        .unwrap_or_default();
    let chunks: &[EnvoyBuffer] = if body_chunks.is_null() {
        &[]
    } else {
        // SAFETY: the caller's guarantee.
        unsafe { core::slice::from_raw_parts(body_chunks, body_chunks_size) }
    };
    // SAFETY: the caller's guarantee.
    let body = chunks
        .iter()
        .flat_map(|c| unsafe { c.as_bytes() }.iter().copied())
        .collect();
    (status, body)
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> HttpFilterPerRouteConfigModulePtr {
    guard("per_route_config_new", core::ptr::null, || {
        // SAFETY: valid for the duration of this hook; copied here.
        let (name, config) = unsafe { (text(name.as_bytes()), text(config.as_bytes())) };
        info(&format!(
            "mesh.proof per_route_config_new name={name} config={config} thread={}",
            thread_name()
        ));
        if config == "reject" {
            return core::ptr::null();
        }
        Box::into_raw(Box::new(PerRoute { name, config }))
            .cast_const()
            .cast::<c_void>()
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    ptr: HttpFilterPerRouteConfigModulePtr,
) {
    guard(
        "per_route_config_destroy",
        || (),
        || {
            // SAFETY: the `Box<PerRoute>` from per_route_config_new, destroyed once.
            drop(unsafe { Box::from_raw(ptr.cast::<PerRoute>().cast_mut()) });
        },
    )
}

// ---------------------------------------------------------------- stream hooks

/// The module's filter behind a filter pointer.
///
/// # Safety
/// `ptr` is a pointer returned by `on_http_filter_new` whose destroy hook has not run, and no other
/// reference to the filter is alive (hooks of one stream run one at a time on its worker).
unsafe fn filter<'a>(ptr: HttpFilterModulePtr) -> Option<&'a mut Filter> {
    // SAFETY: the caller's guarantee.
    unsafe { ptr.cast::<Filter>().cast_mut().as_mut() }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: HttpFilterConfigModulePtr,
    envoy: HttpFilterEnvoyPtr,
) -> HttpFilterModulePtr {
    guard("filter_new", core::ptr::null, || {
        // SAFETY: the `Config` this module returned from config_new, alive until config_destroy,
        // which Envoy calls after every filter created from it is gone.
        let Some(config) = (unsafe { config.cast::<Config>().as_ref() }) else {
            return core::ptr::null();
        };
        if config.name == "main" {
            let n = FILTERS_CREATED.fetch_add(1, Ordering::Relaxed);
            if n < 16 {
                info(&format!(
                    "mesh.proof filter_new config_ptr={:p} thread={}",
                    config,
                    thread_name()
                ));
            }
        }
        let f = Box::new(Filter {
            config,
            envoy: Raw(envoy),
            seen: Vec::new(),
            scheduler: None,
        });
        Box::into_raw(f).cast_const().cast::<c_void>()
    })
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: HttpFilterEnvoyPtr,
    ptr: HttpFilterModulePtr,
    _end_of_stream: bool,
) -> OnHttpFilterRequestHeadersStatus {
    let s = Stream(envoy);
    guard(
        "request_headers",
        || {
            s.send_response(
                500,
                &[("x-proof-panic", "caught")],
                "panic caught\n",
                "mesh_proof_panic",
            );
            OnHttpFilterRequestHeadersStatus::STOP_ITERATION
        },
        || {
            // SAFETY: this stream's filter, during its hook.
            let Some(f) = (unsafe { filter(ptr) }) else {
                return OnHttpFilterRequestHeadersStatus::CONTINUE;
            };
            if f.config.name != "main" {
                return OnHttpFilterRequestHeadersStatus::CONTINUE;
            }
            request_headers(s, f)
        },
    )
}

fn request_headers(s: Stream, f: &mut Filter) -> OnHttpFilterRequestHeadersStatus {
    use HttpHeaderType as H;
    let path = s.header(H::REQUEST_HEADER, ":path").0.unwrap_or_default();
    let (proof_in, _) = s.header(H::REQUEST_HEADER, "x-proof-in");
    let multi = s.header_values(H::REQUEST_HEADER, "x-multi");
    let all = s.headers(H::REQUEST_HEADER);
    let route = s.attribute(AttributeId::XDS_ROUTE_NAME);
    let route_name = route.strip_prefix("s:").unwrap_or("none").to_string();
    let per_route = s
        .per_route()
        .map_or("none".to_string(), |p| format!("{}={}", p.name, p.config));
    let keys = ModuleBuffer::from("mesh.proof");
    // SAFETY: valid filter pointer during the hook.
    let meta_keys = unsafe {
        envoy_dynamic_module_callback_http_get_metadata_keys_count(s.0, MetadataSource::ROUTE, keys)
    };
    f.seen = vec![
        (
            "x-proof-in".into(),
            proof_in.unwrap_or_else(|| "none".into()),
        ),
        ("x-proof-multi-in".into(), multi.join(",")),
        ("x-proof-header-count".into(), all.len().to_string()),
        ("x-proof-route".into(), route),
        ("x-proof-cluster".into(), s.cluster()),
        (
            "x-proof-meta".into(),
            format!(
                "mode={} limit={} flag={} keys={meta_keys}",
                s.route_metadata("mode"),
                s.route_metadata("limit"),
                s.route_metadata("flag")
            ),
        ),
        (
            "x-proof-route-metadata-attr".into(),
            s.attribute(AttributeId::XDS_ROUTE_METADATA)
                .chars()
                .take(80)
                .collect(),
        ),
        ("x-proof-per-route".into(), per_route),
        ("x-proof-thread".into(), thread_name()),
        ("x-proof-config".into(), text(&f.config.raw)),
        (
            "x-proof-mtls".into(),
            s.attribute(AttributeId::CONNECTION_MTLS),
        ),
        (
            "x-proof-uri-san".into(),
            s.attribute(AttributeId::CONNECTION_URI_SAN_PEER_CERTIFICATE),
        ),
        (
            "x-proof-digest".into(),
            s.attribute(AttributeId::CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST),
        ),
        (
            "x-proof-request-time".into(),
            s.attribute(AttributeId::REQUEST_TIME),
        ),
    ];
    probe("request", s, &route_name);

    // Writes the upstream sees.
    s.set(H::REQUEST_HEADER, "x-proof-added", Some("yes"));
    s.add(H::REQUEST_HEADER, "x-proof-multi", "a");
    s.add(H::REQUEST_HEADER, "x-proof-multi", "b");
    s.set(H::REQUEST_HEADER, "x-proof-remove", None);

    if let Some(m) = &f.config.metrics {
        let r1 = s.count(m.requests, &[&route_name], 1);
        // SAFETY: valid filter pointer during the hook; label buffers borrow live strings.
        let (r2, r3) = unsafe {
            let mut l = [ModuleBuffer::from(route_name.as_str())];
            (
                envoy_dynamic_module_callback_http_filter_increment_gauge(
                    s.0,
                    m.inflight,
                    core::ptr::null_mut(),
                    0,
                    1,
                ),
                envoy_dynamic_module_callback_http_filter_record_histogram_value(
                    s.0,
                    m.latency,
                    l.as_mut_ptr(),
                    1,
                    42,
                ),
            )
        };
        let bad = s.count(m.requests, &[], 1);
        f.seen.push((
            "x-proof-metrics".into(),
            format!("{},{},{},{}", r1.0, r2.0, r3.0, bad.0),
        ));
    }

    match path.as_str() {
        "/local" => {
            s.send_response(
                403,
                &[
                    ("x-mesh-rejected-by", "mesh.proof"),
                    ("content-type", "application/json"),
                ],
                "{\"error\":\"denied\"}",
                "mesh_proof_denied",
            );
            OnHttpFilterRequestHeadersStatus::STOP_ITERATION
        }
        "/grpc" => {
            s.send_response(
                503,
                &[("x-mesh-rejected-by", "mesh.proof")],
                "unavailable, try later",
                "mesh_proof_grpc",
            );
            OnHttpFilterRequestHeadersStatus::STOP_ITERATION
        }
        "/grpc-explicit" => {
            s.send_response(
                200,
                &[
                    ("content-type", "application/grpc"),
                    ("grpc-status", "8"),
                    ("grpc-message", "budget exhausted"),
                    ("x-mesh-rejected-by", "mesh.proof"),
                ],
                "",
                "mesh_proof_grpc_explicit",
            );
            OnHttpFilterRequestHeadersStatus::STOP_ITERATION
        }
        "/panic" => panic_now(),
        "/abort" => std::process::abort(),
        "/delay" => {
            // SAFETY: valid filter pointer during the hook.
            let sched =
                Raw(unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(s.0) });
            f.scheduler = Some(sched);
            let from = thread_name();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                // SAFETY: commit from any thread; the scheduler is deleted in the scheduled hook
                // or in filter_destroy, on the worker, after this commit.
                unsafe {
                    envoy_dynamic_module_callback_http_filter_scheduler_commit(sched.ptr(), 7)
                };
            });
            f.seen.push(("x-proof-delay-from".into(), from));
            OnHttpFilterRequestHeadersStatus::STOP_ITERATION
        }
        "/callout" => {
            let mut hs = [
                ModuleHttpHeader::new(b":method", b"GET"),
                ModuleHttpHeader::new(b":path", b"/callout-target"),
                ModuleHttpHeader::new(b"host", b"upstream"),
            ];
            let mut id = 0u64;
            // SAFETY: valid filter pointer; headers borrow static bytes.
            let r = unsafe {
                envoy_dynamic_module_callback_http_filter_http_callout(
                    s.0,
                    &mut id,
                    ModuleBuffer::from("upstream"),
                    hs.as_mut_ptr(),
                    hs.len(),
                    ModuleBuffer::NULL,
                    2000,
                )
            };
            if r == HttpCalloutInitResult::SUCCESS {
                OnHttpFilterRequestHeadersStatus::STOP_ITERATION
            } else {
                s.set(
                    H::REQUEST_HEADER,
                    "x-proof-callout",
                    Some(&format!("init={}", r.0)),
                );
                OnHttpFilterRequestHeadersStatus::CONTINUE
            }
        }
        _ => OnHttpFilterRequestHeadersStatus::CONTINUE,
    }
}

// The one deliberate panic of the proof, to show `guard` catching it.
#[allow(clippy::panic)]
fn panic_now() -> OnHttpFilterRequestHeadersStatus {
    panic!("deliberate panic in request_headers")
}

/// Logs one line with what each attribute getter answers in this phase.
fn probe(phase: &str, s: Stream, route: &str) {
    let ids = [
        ("route_name", AttributeId::XDS_ROUTE_NAME),
        ("cluster_name", AttributeId::XDS_CLUSTER_NAME),
        ("request_time", AttributeId::REQUEST_TIME),
        ("request_duration", AttributeId::REQUEST_DURATION),
        ("request_id", AttributeId::REQUEST_ID),
        ("request_protocol", AttributeId::REQUEST_PROTOCOL),
        ("response_code", AttributeId::RESPONSE_CODE),
        ("response_flags", AttributeId::RESPONSE_FLAGS),
        ("response_code_details", AttributeId::RESPONSE_CODE_DETAILS),
        ("response_grpc_status", AttributeId::RESPONSE_GRPC_STATUS),
        ("attempts", AttributeId::UPSTREAM_REQUEST_ATTEMPT_COUNT),
        ("upstream_address", AttributeId::UPSTREAM_ADDRESS),
        ("connection_mtls", AttributeId::CONNECTION_MTLS),
        (
            "uri_san_peer",
            AttributeId::CONNECTION_URI_SAN_PEER_CERTIFICATE,
        ),
        (
            "dns_san_peer",
            AttributeId::CONNECTION_DNS_SAN_PEER_CERTIFICATE,
        ),
        (
            "sha256_peer",
            AttributeId::CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST,
        ),
        (
            "subject_peer",
            AttributeId::CONNECTION_SUBJECT_PEER_CERTIFICATE,
        ),
        ("source_address", AttributeId::SOURCE_ADDRESS),
        ("virtual_host", AttributeId::XDS_VIRTUAL_HOST_NAME),
    ];
    let fields: Vec<String> = ids
        .iter()
        .map(|(n, id)| format!("{n}={}", s.attribute(*id).replace(' ', "_")))
        .collect();
    info(&format!(
        "mesh.proof attrs phase={phase} route={route} {}",
        fields.join(" ")
    ));
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _envoy: HttpFilterEnvoyPtr,
    _ptr: HttpFilterModulePtr,
    _end_of_stream: bool,
) -> OnHttpFilterRequestBodyStatus {
    OnHttpFilterRequestBodyStatus::CONTINUE
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _envoy: HttpFilterEnvoyPtr,
    _ptr: HttpFilterModulePtr,
) -> OnHttpFilterRequestTrailersStatus {
    OnHttpFilterRequestTrailersStatus::CONTINUE
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: HttpFilterEnvoyPtr,
    ptr: HttpFilterModulePtr,
    _end_of_stream: bool,
) -> OnHttpFilterResponseHeadersStatus {
    guard(
        "response_headers",
        || OnHttpFilterResponseHeadersStatus::CONTINUE,
        || {
            let s = Stream(envoy);
            // SAFETY: this stream's filter, during its hook.
            let Some(f) = (unsafe { filter(ptr) }) else {
                return OnHttpFilterResponseHeadersStatus::CONTINUE;
            };
            if f.config.name != "main" {
                let key = format!("x-proof-config-{}", f.config.name);
                s.set(
                    HttpHeaderType::RESPONSE_HEADER,
                    &key,
                    Some(&text(&f.config.raw)),
                );
                return OnHttpFilterResponseHeadersStatus::CONTINUE;
            }
            for (k, v) in &f.seen {
                s.set(HttpHeaderType::RESPONSE_HEADER, k, Some(v));
            }
            s.set(
                HttpHeaderType::RESPONSE_HEADER,
                "x-proof-response-code",
                Some(&s.attribute(AttributeId::RESPONSE_CODE)),
            );
            let route = s.attribute(AttributeId::XDS_ROUTE_NAME);
            probe("response", s, route.strip_prefix("s:").unwrap_or("none"));
            OnHttpFilterResponseHeadersStatus::CONTINUE
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _envoy: HttpFilterEnvoyPtr,
    _ptr: HttpFilterModulePtr,
    _end_of_stream: bool,
) -> OnHttpFilterResponseBodyStatus {
    OnHttpFilterResponseBodyStatus::CONTINUE
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _envoy: HttpFilterEnvoyPtr,
    _ptr: HttpFilterModulePtr,
) -> OnHttpFilterResponseTrailersStatus {
    OnHttpFilterResponseTrailersStatus::CONTINUE
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    envoy: HttpFilterEnvoyPtr,
    ptr: HttpFilterModulePtr,
) {
    guard(
        "stream_complete",
        || (),
        || {
            let s = Stream(envoy);
            // SAFETY: this stream's filter, during its hook.
            let Some(f) = (unsafe { filter(ptr) }) else {
                return;
            };
            if f.config.name != "main" {
                return;
            }
            let route = s.attribute(AttributeId::XDS_ROUTE_NAME);
            let route = route.strip_prefix("s:").unwrap_or("none").to_string();
            probe("complete", s, &route);
            if let Some(m) = &f.config.metrics {
                let code = s.attribute(AttributeId::RESPONSE_CODE);
                s.count(m.completed, &[code.strip_prefix("i:").unwrap_or("none")], 1);
                // SAFETY: valid filter pointer during the hook.
                unsafe {
                    envoy_dynamic_module_callback_http_filter_decrement_gauge(
                        s.0,
                        m.inflight,
                        core::ptr::null_mut(),
                        0,
                        1,
                    )
                };
            }
            info(&format!(
                "mesh.proof stream_complete thread={}",
                thread_name()
            ));
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(ptr: HttpFilterModulePtr) {
    guard(
        "filter_destroy",
        || (),
        || {
            // SAFETY: the `Box<Filter>` from filter_new; Envoy destroys it once.
            let f = unsafe { Box::from_raw(ptr.cast::<Filter>().cast_mut()) };
            if let Some(sched) = f.scheduler {
                // SAFETY: the scheduler this filter created; commits after the filter is gone are
                // no-ops per the header, and the committing thread holds only a copy of the handle.
                unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(sched.0) };
            }
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    envoy: HttpFilterEnvoyPtr,
    ptr: HttpFilterModulePtr,
    event_id: u64,
) {
    guard(
        "scheduled",
        || (),
        || {
            let s = Stream(envoy);
            // SAFETY: this stream's filter, during its hook.
            let Some(f) = (unsafe { filter(ptr) }) else {
                return;
            };
            f.seen.push((
                "x-proof-scheduled".into(),
                format!("event={event_id} thread={}", thread_name()),
            ));
            s.set(
                HttpHeaderType::REQUEST_HEADER,
                "x-proof-scheduled",
                Some("yes"),
            );
            debug_assert_eq!(f.envoy.0, envoy);
            // SAFETY: the stream stopped in request_headers; resuming it on its own worker.
            unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(s.0) };
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    envoy: HttpFilterEnvoyPtr,
    ptr: HttpFilterModulePtr,
    callout_id: u64,
    result: HttpCalloutResult,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
) {
    guard(
        "callout_done",
        || (),
        || {
            let s = Stream(envoy);
            // SAFETY: arrays owned by Envoy, valid during this hook, with the given lengths.
            let (status, body) =
                unsafe { callout_answer(headers, headers_size, body_chunks, body_chunks_size) };
            let summary = format!(
                "id={callout_id} result={} status={status} body_len={} thread={}",
                result.0,
                body.len(),
                thread_name()
            );
            // SAFETY: this stream's filter, during its hook.
            if let Some(f) = unsafe { filter(ptr) } {
                f.seen.push(("x-proof-callout".into(), summary.clone()));
            }
            s.set(
                HttpHeaderType::REQUEST_HEADER,
                "x-proof-callout",
                Some(&summary),
            );
            // SAFETY: the stream stopped in request_headers; resuming it on its own worker.
            unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(s.0) };
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _envoy: HttpFilterEnvoyPtr,
    _ptr: HttpFilterModulePtr,
    _stream_id: u64,
    _headers: *mut EnvoyHttpHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _envoy: HttpFilterEnvoyPtr,
    _ptr: HttpFilterModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _envoy: HttpFilterEnvoyPtr,
    _ptr: HttpFilterModulePtr,
    _stream_id: u64,
    _trailers: *mut EnvoyHttpHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _envoy: HttpFilterEnvoyPtr,
    _ptr: HttpFilterModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _envoy: HttpFilterEnvoyPtr,
    _ptr: HttpFilterModulePtr,
    _stream_id: u64,
    _reason: HttpStreamResetReason,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _envoy: HttpFilterEnvoyPtr,
    _ptr: HttpFilterModulePtr,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _envoy: HttpFilterEnvoyPtr,
    _ptr: HttpFilterModulePtr,
) {
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _envoy: HttpFilterEnvoyPtr,
    ptr: HttpFilterModulePtr,
    response_code: u32,
    details: EnvoyBuffer,
    reset_imminent: bool,
) -> OnHttpFilterLocalReplyStatus {
    guard(
        "local_reply",
        || OnHttpFilterLocalReplyStatus::CONTINUE,
        || {
            // SAFETY: this stream's filter, during its hook.
            let main = unsafe { filter(ptr) }.is_some_and(|f| f.config.name == "main");
            if main {
                // SAFETY: valid during this hook.
                let details = text(unsafe { details.as_bytes() });
                info(&format!(
                "mesh.proof local_reply code={response_code} details={details} reset={reset_imminent}"
            ));
            }
            OnHttpFilterLocalReplyStatus::CONTINUE
        },
    )
}

// The exports have exactly the documented hook signatures.
const _: OnProgramInit = envoy_dynamic_module_on_program_init;
const _: OnHttpFilterConfigNew = envoy_dynamic_module_on_http_filter_config_new;
const _: OnHttpFilterConfigDestroy = envoy_dynamic_module_on_http_filter_config_destroy;
const _: OnHttpFilterConfigScheduled = envoy_dynamic_module_on_http_filter_config_scheduled;
const _: OnHttpFilterConfigHttpCalloutDone =
    envoy_dynamic_module_on_http_filter_config_http_callout_done;
const _: OnHttpFilterPerRouteConfigNew = envoy_dynamic_module_on_http_filter_per_route_config_new;
const _: OnHttpFilterPerRouteConfigDestroy =
    envoy_dynamic_module_on_http_filter_per_route_config_destroy;
const _: OnHttpFilterNew = envoy_dynamic_module_on_http_filter_new;
const _: OnHttpFilterRequestHeaders = envoy_dynamic_module_on_http_filter_request_headers;
const _: OnHttpFilterRequestBody = envoy_dynamic_module_on_http_filter_request_body;
const _: OnHttpFilterRequestTrailers = envoy_dynamic_module_on_http_filter_request_trailers;
const _: OnHttpFilterResponseHeaders = envoy_dynamic_module_on_http_filter_response_headers;
const _: OnHttpFilterResponseBody = envoy_dynamic_module_on_http_filter_response_body;
const _: OnHttpFilterResponseTrailers = envoy_dynamic_module_on_http_filter_response_trailers;
const _: OnHttpFilterStreamComplete = envoy_dynamic_module_on_http_filter_stream_complete;
const _: OnHttpFilterDestroy = envoy_dynamic_module_on_http_filter_destroy;
const _: OnHttpFilterScheduled = envoy_dynamic_module_on_http_filter_scheduled;
const _: OnHttpFilterHttpCalloutDone = envoy_dynamic_module_on_http_filter_http_callout_done;
const _: OnHttpFilterHttpStreamHeaders = envoy_dynamic_module_on_http_filter_http_stream_headers;
const _: OnHttpFilterHttpStreamData = envoy_dynamic_module_on_http_filter_http_stream_data;
const _: OnHttpFilterHttpStreamTrailers = envoy_dynamic_module_on_http_filter_http_stream_trailers;
const _: OnHttpFilterHttpStreamComplete = envoy_dynamic_module_on_http_filter_http_stream_complete;
const _: OnHttpFilterHttpStreamReset = envoy_dynamic_module_on_http_filter_http_stream_reset;
const _: OnHttpFilterDownstreamAboveWriteBufferHighWatermark =
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark;
const _: OnHttpFilterDownstreamBelowWriteBufferLowWatermark =
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark;
const _: OnHttpFilterLocalReply = envoy_dynamic_module_on_http_filter_local_reply;
