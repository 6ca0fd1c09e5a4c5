//! Safe handles over the raw ABI ([`crate::abi`]): the one place besides `abi.rs` and the
//! exported hooks (`hooks.rs`) where the native module dereferences what Envoy hands it.
//!
//! Each handle is created by an `unsafe fn new` whose contract is the ABI's thread and lifetime
//! rule for that pointer (`ABI.md` §8); its methods are then safe. Buffers Envoy returns are
//! copied before the method returns, so no Envoy-owned byte outlives the call that produced it.

// The ABI layer: calls into Envoy and reads the buffers it fills.
#![allow(unsafe_code)]

use crate::abi::*;
use crate::input::{status_of, text};
use crate::per_route::PerRoute;
use core::ffi::c_void;
use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

// ---------------------------------------------------------------- logging

/// Envoy's level for a `log` level (`log` has no critical; Envoy's `off` is never asked for).
fn level(l: log::Level) -> LogLevel {
    match l {
        log::Level::Error => LogLevel::ERROR,
        log::Level::Warn => LogLevel::WARN,
        log::Level::Info => LogLevel::INFO,
        log::Level::Debug => LogLevel::DEBUG,
        log::Level::Trace => LogLevel::TRACE,
    }
}

/// Whether Envoy's `dynamic_modules` logger writes `l` (a cheap call).
pub fn log_enabled(l: log::Level) -> bool {
    // SAFETY: no pointers; allowed on any thread Envoy runs the module on.
    unsafe { envoy_dynamic_module_callback_log_enabled(level(l)) }
}

/// One line in Envoy's log, under `[dynamic_modules]`.
pub fn log(l: log::Level, message: &str) {
    // SAFETY: the buffer borrows `message` for the duration of the call, which copies it.
    unsafe { envoy_dynamic_module_callback_log(level(l), ModuleBuffer::from(message)) }
}

/// The `log` facade over Envoy's log: what the kit and the stages write with `log::warn!`.
struct EnvoyLogger;

impl log::Log for EnvoyLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        log_enabled(metadata.level())
    }

    fn log(&self, record: &log::Record<'_>) {
        if log_enabled(record.level()) {
            log(record.level(), &record.args().to_string());
        }
    }

    fn flush(&self) {}
}

static LOGGER: EnvoyLogger = EnvoyLogger;

/// Routes the `log` facade to Envoy's log (once per process; later calls do nothing).
pub fn install_logger() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
}

// ---------------------------------------------------------------- module objects

/// A module object handed to Envoy as an opaque pointer (config, per-route config, filter).
pub fn into_module_ptr<T>(value: Box<T>) -> *const c_void {
    Box::into_raw(value).cast_const().cast::<c_void>()
}

/// The module object behind a pointer made by [`into_module_ptr`].
///
/// # Safety
/// `ptr` is null or was made by [`into_module_ptr::<T>`] and has not been given to
/// [`take_module`]; the reference is not used after that.
pub unsafe fn module_ref<'a, T>(ptr: *const c_void) -> Option<&'a T> {
    // SAFETY: the caller's guarantee: a live `Box<T>` allocation, or null.
    unsafe { ptr.cast::<T>().as_ref() }
}

/// Takes back ownership of a module object (its destroy hook).
///
/// # Safety
/// As for [`module_ref`], and no reference obtained from it is still in use; called once.
pub unsafe fn take_module<T>(ptr: *const c_void) -> Option<Box<T>> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller's guarantee: `ptr` came from `Box::into_raw` of a `Box<T>`.
    Some(unsafe { Box::from_raw(ptr.cast::<T>().cast_mut()) })
}

/// The per-route configs this module made and has not destroyed, by address. Envoy hands a
/// filter whatever per-route config the route carries under the filter's name, made by
/// whichever module the route's `DynamicModuleFilterPerRoute` names: only one of these may be
/// read as a [`PerRoute`].
fn live_per_route() -> MutexGuard<'static, HashSet<usize>> {
    static LIVE: OnceLock<Mutex<HashSet<usize>>> = OnceLock::new();
    // The set is valid whatever a panicking holder was doing (one insert or remove).
    LIVE.get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// A per-route config handed to Envoy (`on_http_filter_per_route_config_new`).
pub fn per_route_into_ptr(config: Box<PerRoute>) -> *const c_void {
    let ptr = into_module_ptr(config);
    live_per_route().insert(ptr as usize);
    ptr
}

/// Takes back a per-route config (`on_http_filter_per_route_config_destroy`); `None` for a
/// pointer this module did not make.
///
/// # Safety
/// Called once per pointer, when Envoy destroys it, with no reference from
/// [`Stream::with_route_config`] still in use.
pub unsafe fn per_route_take(ptr: *const c_void) -> Option<Box<PerRoute>> {
    if !live_per_route().remove(&(ptr as usize)) {
        return None;
    }
    // SAFETY: a pointer made by `per_route_into_ptr`, destroyed once (the caller's guarantee).
    unsafe { take_module::<PerRoute>(ptr) }
}

/// A route's per-route config under this filter's name was made by another module.
#[derive(Debug)]
pub struct ForeignPerRoute;

/// The bytes of a buffer Envoy passed to a hook, copied.
///
/// # Safety
/// `buffer` is an argument of the hook that is running.
pub unsafe fn copy_buffer(buffer: EnvoyBuffer) -> Vec<u8> {
    // SAFETY: the caller's guarantee: valid for the duration of the hook; copied here.
    unsafe { buffer.as_bytes() }.to_vec()
}

/// The `:status` of a callout answer.
///
/// # Safety
/// `headers` and `count` are the arguments of the callout-done hook that is running (null is
/// allowed).
pub unsafe fn callout_status(headers: *const EnvoyHttpHeader, count: usize) -> Option<u32> {
    if headers.is_null() {
        return None;
    }
    // SAFETY: the caller's guarantee: `count` pairs at `headers`, valid during the hook.
    let pairs = unsafe { core::slice::from_raw_parts(headers, count) };
    status_of(pairs.iter().map(|h| {
        // SAFETY: as above; `status_of` reads the pairs before the hook returns.
        unsafe { h.as_bytes() }
    }))
}

// ---------------------------------------------------------------- metrics

/// What a metric update does, with which ABI call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricOp {
    CounterAdd,
    GaugeAdd,
    GaugeSub,
    GaugeSet,
}

fn label_buffers(label: Option<&str>) -> ([ModuleBuffer; 1], usize) {
    match label {
        Some(v) => ([ModuleBuffer::from(v)], 1),
        None => ([ModuleBuffer::NULL], 0),
    }
}

// ---------------------------------------------------------------- the stream

/// Envoy's filter of one stream (`filter_envoy_ptr`).
#[derive(Clone, Copy, Debug)]
pub struct Stream(HttpFilterEnvoyPtr);

impl Stream {
    /// # Safety
    /// `ptr` is the `filter_envoy_ptr` Envoy gave for this stream, and the handle is used only
    /// inside that stream's hooks (on its worker thread), never after `on_http_filter_destroy`.
    pub unsafe fn new(ptr: HttpFilterEnvoyPtr) -> Stream {
        Stream(ptr)
    }

    /// Every entry of a header map, pseudo-headers included (two host calls).
    pub fn headers(self, map: HttpHeaderType) -> Vec<(String, String)> {
        // SAFETY: a live filter pointer during a hook (the constructor's contract).
        let n = unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.0, map) };
        if n == 0 {
            return Vec::new();
        }
        let mut out = vec![EnvoyHttpHeader::EMPTY; n];
        // SAFETY: `out` holds the `n` entries Envoy just reported.
        if !unsafe { envoy_dynamic_module_callback_http_get_headers(self.0, map, out.as_mut_ptr()) }
        {
            return Vec::new();
        }
        out.iter()
            .map(|h| {
                // SAFETY: filled by Envoy, read before any setter of the map is called.
                let (k, v) = unsafe { h.as_bytes() };
                (text(k), text(v))
            })
            .collect()
    }

    /// The first value of a header.
    pub fn header(self, map: HttpHeaderType, key: &str) -> Option<String> {
        let mut out = EnvoyBuffer::EMPTY;
        let mut count = 0usize;
        // SAFETY: a live filter pointer; the out-pointers are locals.
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
        if !found || out.ptr.is_null() {
            return None;
        }
        // SAFETY: filled by Envoy, copied before any setter is called.
        Some(text(unsafe { out.as_bytes() }))
    }

    /// Replaces every value of a header, or removes it (`None`).
    pub fn set_header(self, map: HttpHeaderType, key: &str, value: Option<&str>) {
        let value = value.map_or(ModuleBuffer::NULL, ModuleBuffer::from);
        // SAFETY: a live filter pointer; the buffers borrow live strings for the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                map,
                ModuleBuffer::from(key),
                value,
            );
        }
    }

    /// Appends a value to a header (`addCopy`: no scan of the map for values to replace).
    pub fn add_header(self, map: HttpHeaderType, key: &str, value: &str) {
        // SAFETY: a live filter pointer; the buffers borrow live strings for the call.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.0,
                map,
                ModuleBuffer::from(key),
                ModuleBuffer::from(value),
            );
        }
    }

    /// A local reply (`sendLocalReply`); `details` becomes `response.code_details`.
    pub fn send_response(self, status: u32, headers: &[(&str, &str)], body: &[u8], details: &str) {
        let mut pairs: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader::new(k.as_bytes(), v.as_bytes()))
            .collect();
        // SAFETY: a live filter pointer; every buffer borrows data that outlives the call.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                status,
                pairs.as_mut_ptr(),
                pairs.len(),
                ModuleBuffer::new(body),
                ModuleBuffer::from(details),
            );
        }
    }

    /// A string attribute, copied.
    pub fn attribute_bytes(self, id: AttributeId) -> Option<Vec<u8>> {
        let mut out = EnvoyBuffer::EMPTY;
        // SAFETY: a live filter pointer; the out-pointer is a local.
        let found = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(self.0, id, &mut out)
        };
        // SAFETY: filled by Envoy during this hook; copied here.
        found.then(|| unsafe { out.as_bytes() }.to_vec())
    }

    pub fn attribute_int(self, id: AttributeId) -> Option<u64> {
        let mut out = 0u64;
        // SAFETY: a live filter pointer; the out-pointer is a local.
        let found = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_int(self.0, id, &mut out)
        };
        found.then_some(out)
    }

    pub fn attribute_bool(self, id: AttributeId) -> Option<bool> {
        let mut out = false;
        // SAFETY: a live filter pointer; the out-pointer is a local.
        let found = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_bool(self.0, id, &mut out)
        };
        found.then_some(out)
    }

    /// Reads the route's per-route configuration (the most specific one for this filter):
    /// `Ok(None)` when the route has none, an error when another module made it.
    pub fn with_route_config<R>(
        self,
        read: impl FnOnce(&PerRoute) -> R,
    ) -> Result<Option<R>, ForeignPerRoute> {
        // SAFETY: a live filter pointer.
        let ptr = unsafe { envoy_dynamic_module_callback_get_most_specific_route_config(self.0) };
        if ptr.is_null() {
            return Ok(None);
        }
        if !live_per_route().contains(&(ptr as usize)) {
            return Err(ForeignPerRoute);
        }
        // SAFETY: a `Box<PerRoute>` this module made (it is in the live set), which Envoy
        // destroys only after every route using it is gone; this stream holds its route. The
        // reference does not leave this call.
        Ok(unsafe { module_ref::<PerRoute>(ptr) }.map(read))
    }

    /// A metric update from a stream hook, with one label value or none.
    pub fn metric(self, op: MetricOp, id: usize, label: Option<&str>, value: u64) -> MetricsResult {
        let (mut labels, n) = label_buffers(label);
        let labels = labels.as_mut_ptr();
        // SAFETY: a live filter pointer; `labels` holds `n` buffers borrowing `label`.
        unsafe {
            match op {
                MetricOp::CounterAdd => {
                    envoy_dynamic_module_callback_http_filter_increment_counter(
                        self.0, id, labels, n, value,
                    )
                }
                MetricOp::GaugeAdd => envoy_dynamic_module_callback_http_filter_increment_gauge(
                    self.0, id, labels, n, value,
                ),
                MetricOp::GaugeSub => envoy_dynamic_module_callback_http_filter_decrement_gauge(
                    self.0, id, labels, n, value,
                ),
                MetricOp::GaugeSet => envoy_dynamic_module_callback_http_filter_set_gauge(
                    self.0, id, labels, n, value,
                ),
            }
        }
    }
}

// ---------------------------------------------------------------- the filter config

/// Envoy's filter config object (`filter_config_envoy_ptr`). Kept in the module's config,
/// which every worker shares, hence `Send + Sync`; it is only *used* on the main thread.
#[derive(Clone, Copy, Debug)]
pub struct ConfigPtr(HttpFilterConfigEnvoyPtr);

// SAFETY: an opaque handle the module never dereferences; every call through it is made on
// Envoy's main thread (the constructor's contract), whichever thread holds the value.
unsafe impl Send for ConfigPtr {}
// SAFETY: as above.
unsafe impl Sync for ConfigPtr {}

impl ConfigPtr {
    /// # Safety
    /// `ptr` is the `filter_config_envoy_ptr` Envoy passed to `on_http_filter_config_new`; the
    /// handle's methods are called only on the main thread (metric definitions only during that
    /// hook) and never after `on_http_filter_config_destroy`.
    pub unsafe fn new(ptr: HttpFilterConfigEnvoyPtr) -> ConfigPtr {
        ConfigPtr(ptr)
    }

    /// Defines a counter or gauge with these label names; its id, or Envoy's refusal.
    pub fn define(
        self,
        kind: mesh_kit::host::MetricKind,
        name: &str,
        labels: &[&str],
    ) -> Result<usize, MetricsResult> {
        let mut names: Vec<ModuleBuffer> = labels.iter().map(|l| ModuleBuffer::from(*l)).collect();
        let mut id = 0usize;
        let name = ModuleBuffer::from(name);
        // SAFETY: a live config pointer inside config_new; the buffers borrow live strings and
        // `id` is a local.
        let r = unsafe {
            match kind {
                mesh_kit::host::MetricKind::Counter => {
                    envoy_dynamic_module_callback_http_filter_config_define_counter(
                        self.0,
                        name,
                        names.as_mut_ptr(),
                        names.len(),
                        &mut id,
                    )
                }
                mesh_kit::host::MetricKind::Gauge => {
                    envoy_dynamic_module_callback_http_filter_config_define_gauge(
                        self.0,
                        name,
                        names.as_mut_ptr(),
                        names.len(),
                        &mut id,
                    )
                }
            }
        };
        if r == MetricsResult::SUCCESS {
            Ok(id)
        } else {
            Err(r)
        }
    }

    /// A metric update outside any stream (main thread).
    pub fn metric(self, op: MetricOp, id: usize, label: Option<&str>, value: u64) -> MetricsResult {
        let (mut labels, n) = label_buffers(label);
        let labels = labels.as_mut_ptr();
        // SAFETY: a live config pointer on the main thread; `labels` holds `n` buffers.
        unsafe {
            match op {
                MetricOp::CounterAdd => {
                    envoy_dynamic_module_callback_http_filter_config_increment_counter(
                        self.0, id, labels, n, value,
                    )
                }
                MetricOp::GaugeAdd => {
                    envoy_dynamic_module_callback_http_filter_config_increment_gauge(
                        self.0, id, labels, n, value,
                    )
                }
                MetricOp::GaugeSub => {
                    envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
                        self.0, id, labels, n, value,
                    )
                }
                MetricOp::GaugeSet => envoy_dynamic_module_callback_http_filter_config_set_gauge(
                    self.0, id, labels, n, value,
                ),
            }
        }
    }

    /// An HTTP callout tied to the config; the answer arrives in
    /// `on_http_filter_config_http_callout_done` on the main thread with the returned id.
    pub fn http_callout(
        self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u64, HttpCalloutInitResult> {
        let mut pairs: Vec<ModuleHttpHeader> = headers
            .iter()
            .map(|(k, v)| ModuleHttpHeader::new(k.as_bytes(), v.as_bytes()))
            .collect();
        let mut id = 0u64;
        let timeout_ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        // SAFETY: a live config pointer on the main thread; every buffer borrows data that
        // outlives the call, `id` is a local.
        let r = unsafe {
            envoy_dynamic_module_callback_http_filter_config_http_callout(
                self.0,
                &mut id,
                ModuleBuffer::from(cluster),
                pairs.as_mut_ptr(),
                pairs.len(),
                ModuleBuffer::new(body),
                timeout_ms,
            )
        };
        if r == HttpCalloutInitResult::SUCCESS {
            Ok(id)
        } else {
            Err(r)
        }
    }
}

// ---------------------------------------------------------------- the ticker

/// A config scheduler handle, committed to from the ticker thread.
#[derive(Clone, Copy)]
struct SchedulerPtr(HttpFilterConfigSchedulerModulePtr);

// SAFETY: Envoy allows `…_config_scheduler_commit` from any thread; the handle is deleted only
// after the one thread that commits to it has been joined (`Ticker::drop`).
unsafe impl Send for SchedulerPtr {}

impl SchedulerPtr {
    /// A method, so that the ticker's closure captures the whole (`Send`) handle.
    fn commit(self, event: u64) {
        // SAFETY: see the `Send` impl: the scheduler is alive until the ticker is joined.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, event) }
    }
}

/// The ABI has no timer (`ABI.md` §7): a module thread that commits one main-thread event
/// (`on_http_filter_config_scheduled`) per period. Dropping it stops and joins the thread,
/// then deletes the scheduler.
pub struct Ticker {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
    scheduler: SchedulerPtr,
}

impl Ticker {
    /// Starts ticking every `period` (at least 1 ms). Main thread, inside config_new.
    pub fn start(config: ConfigPtr, period: Duration) -> Option<Ticker> {
        // SAFETY: a live config pointer on the main thread.
        let raw =
            unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_new(config.0) };
        if raw.is_null() {
            return None;
        }
        let scheduler = SchedulerPtr(raw);
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = Arc::clone(&stop);
        let period = period.max(Duration::from_millis(1));
        let spawned = std::thread::Builder::new()
            .name("mesh-ticker".into())
            .spawn(move || {
                let (lock, cv) = &*flag;
                let mut stopped = lock.lock().unwrap_or_else(PoisonError::into_inner);
                let mut event = 0u64;
                loop {
                    let (guard, _) = cv
                        .wait_timeout_while(stopped, period, |s| !*s)
                        .unwrap_or_else(PoisonError::into_inner);
                    stopped = guard;
                    if *stopped {
                        return;
                    }
                    event = event.wrapping_add(1);
                    scheduler.commit(event);
                }
            });
        match spawned {
            Ok(thread) => Some(Ticker {
                stop,
                thread: Some(thread),
                scheduler,
            }),
            Err(_) => {
                // SAFETY: no thread was started; nothing else holds the scheduler.
                unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(raw) };
                None
            }
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // SAFETY: the only thread that committed to the scheduler has been joined.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.scheduler.0)
        };
    }
}
