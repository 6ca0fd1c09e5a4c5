//! The native runtime: the twin of `mesh_kit::wasm`, over the dynamic-module ABI.
//!
//! - [`Config`] (one per `DynamicModuleFilter` per HCM, created on the main thread): the
//!   plugin configuration parsed and its stages built once ([`Configured`]), the metric
//!   families ([`crate::metrics`]), the ticker. Envoy hands the same config to every worker,
//!   so what it holds ([`Shared`]) is `Send + Sync`.
//! - Per worker thread, built on its first stream of a config: a [`Root`] over the shared
//!   stages with this thread's route and metric-id caches, exactly as one wasm VM per worker
//!   has its own ([`local`]).
//! - [`Filter`], per stream: a kit [`Request`] on a [`StreamHost`].
//!
//! Failure safety: every hook runs under `catch_unwind` (`hooks.rs`); a panic while the suite
//! runs on a stream is logged (the first on each thread), counted in `native.panics`, and the
//! suite's failure policy applies: when a configured stage fails closed (the identity stage)
//! the request gets that stage's "cannot decide" reply, otherwise it passes untouched.

use crate::ffi::{ConfigPtr, Stream, Ticker};
use crate::host::{self, ConfigHost, MainHost, StreamHost};
use crate::metrics::{MetricTable, ThreadHandles};
use crate::per_route::PerRoute;
use mesh_kit::host::{Host, MetricKind, MetricName};
use mesh_kit::registry::Entry;
use mesh_kit::reply::{is_grpc, Reply};
use mesh_kit::stage::{Configured, Factory, OnInvalid, Request, Root};
use std::any::Any;
use std::cell::{Cell, OnceCell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What a cdylib exports as its module ([`crate::export!`]).
pub struct Module {
    /// The filter's name in log lines (`mesh`: `mesh: invalid configuration: …`).
    pub name: &'static str,
    /// Builds the stages from the plugin configuration.
    pub factory: Factory,
    /// Every stage the factory may build: their per-route stats are defined at config time,
    /// and their names are the keys of a per-route configuration.
    pub stages: &'static [Entry],
}

/// The name the panics counter has under the module's namespace: `native.panics`
/// (`envoy_mesh_native_panics` in Prometheus with `metrics_namespace: mesh`).
pub const PANICS: MetricName<'static> = MetricName {
    stage: "mesh.native",
    stat: "panics",
    label: None,
};

/// What every thread shares of one filter config.
pub struct Shared {
    id: u64,
    pub(crate) envoy: ConfigPtr,
    configured: Configured,
    pub(crate) metrics: MetricTable,
    panics: Option<u32>,
    /// The reply of the first configured stage that fails closed.
    fail_closed: Option<(&'static str, Reply)>,
    destroyed: AtomicBool,
    #[cfg(feature = "test-panic")]
    test_panic: Option<String>,
}

/// The module's filter config.
pub struct Config {
    shared: Arc<Shared>,
    ticker: Mutex<Option<Ticker>>,
}

static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);

impl Config {
    /// Parses and builds a plugin configuration (main thread, inside config_new); the error is
    /// the line to log before refusing it. `filter_name` picks what runs: a stage's name
    /// (`mesh.deadline`) runs that stage alone on its own configuration, as its single-stage
    /// wasm module (`mesh_deadline.wasm`) does, and logs under that name; anything else
    /// (`suite`) is the suite, configured with one section per stage.
    pub fn new(
        module: &Module,
        envoy: ConfigPtr,
        filter_name: &str,
        bytes: &[u8],
    ) -> Result<Config, String> {
        let (name, factory) = match module.stages.iter().find(|e| e.name == filter_name) {
            Some(stage) => (stage.name, stage.single),
            None => (module.name, module.factory),
        };
        #[cfg(feature = "test-panic")]
        let (stripped, test_panic) = test_panic::strip(name, bytes)?;
        #[cfg(feature = "test-panic")]
        let bytes = stripped.as_slice();
        let host = ConfigHost::new(envoy);
        let configured = Configured::new(name, factory, bytes, &host)?;
        for built in configured.stages.iter() {
            let Some(entry) = module.stages.iter().find(|e| e.name == built.stage.name()) else {
                continue;
            };
            for stat in entry.stats {
                for label in ["route", "cluster"] {
                    host.define_family(stat.kind, entry.name, stat.name, label);
                }
            }
        }
        let panics = host.define_metric(MetricKind::Counter, &PANICS);
        let fail_closed =
            configured
                .stages
                .iter()
                .find_map(|b| match b.stage.on_invalid_route_config() {
                    OnInvalid::Reject(reply) => Some((b.stage.name(), reply)),
                    _ => None,
                });
        let period = configured.tick_period();
        let shared = Arc::new(Shared {
            id: NEXT_CONFIG.fetch_add(1, Ordering::Relaxed),
            envoy,
            configured,
            metrics: host.into_table(),
            panics,
            fail_closed,
            destroyed: AtomicBool::new(false),
            #[cfg(feature = "test-panic")]
            test_panic,
        });
        let ticker = period.and_then(|p| {
            let t = Ticker::start(envoy, p);
            if t.is_none() {
                log::error!(
                    "{}: could not start the ticker; background work (span export) will not run",
                    module.name
                );
            }
            t
        });
        Ok(Config {
            shared,
            ticker: Mutex::new(ticker),
        })
    }

    /// `on_http_filter_config_destroy`: stops and joins the ticker before its scheduler is
    /// deleted; threads drop their state of this config on their next new config.
    pub fn destroy(self) {
        let ticker = self
            .ticker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(ticker);
        self.shared.destroyed.store(true, Ordering::Release);
    }

    fn main_host(&self) -> MainHost {
        MainHost::new(Arc::clone(&self.shared), local(&self.shared).handles())
    }

    /// A tick (`on_http_filter_config_scheduled`, main thread).
    pub fn on_scheduled(&self) {
        let host = self.main_host();
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| {
            self.shared.configured.on_tick(&host);
        })) {
            report_panic("a tick", p, &host, self.shared.panics);
        }
    }

    /// The answer of a config-level HTTP call (main thread).
    pub fn on_callout_done(&self, id: u64, status: Option<u32>) {
        let Ok(token) = u32::try_from(id) else {
            return;
        };
        let host = self.main_host();
        host.set_callout_status(status);
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| {
            self.shared.configured.on_http_call_response(&host, token);
        })) {
            report_panic("an HTTP call answer", p, &host, self.shared.panics);
        }
    }

    /// A stream's filter (`on_http_filter_new`, worker thread).
    pub fn new_filter(&self, stream: Stream) -> Filter {
        let local = local(&self.shared);
        let host = Rc::new(StreamHost::new(
            stream,
            Arc::clone(&self.shared),
            local.handles(),
        ));
        let state = local
            .root()
            .map(|root| root.request_on(Rc::clone(&host) as Rc<dyn Host>));
        Filter {
            shared: Arc::clone(&self.shared),
            host,
            state: RefCell::new(state),
        }
    }
}

// ---------------------------------------------------------------- per thread

/// One thread's state of one config: its metric handles and, on workers, its root.
struct Local {
    shared: Arc<Shared>,
    handles: Rc<RefCell<ThreadHandles>>,
    root: OnceCell<Option<Root>>,
}

impl Local {
    fn handles(&self) -> Rc<RefCell<ThreadHandles>> {
        Rc::clone(&self.handles)
    }

    /// This thread's root, built on first use; `None` if it could not be (logged once).
    fn root(&self) -> Option<&Root> {
        self.root
            .get_or_init(|| {
                let host = Rc::new(MainHost::new(Arc::clone(&self.shared), self.handles()));
                match Root::with(self.shared.configured.clone(), host) {
                    Ok(root) => Some(root),
                    Err(e) => {
                        log::error!("mesh: the stages could not start on this thread: {e}");
                        None
                    }
                }
            })
            .as_ref()
    }
}

thread_local! {
    static LOCALS: RefCell<Vec<Rc<Local>>> = const { RefCell::new(Vec::new()) };
    static PANIC_LOGGED: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// This thread's state of `shared`; a thread meeting a new config drops its state of the
/// configs destroyed since.
fn local(shared: &Arc<Shared>) -> Rc<Local> {
    LOCALS.with(|cell| {
        let mut locals = cell.borrow_mut();
        if let Some(l) = locals.iter().find(|l| l.shared.id == shared.id) {
            return Rc::clone(l);
        }
        locals.retain(|l| !l.shared.destroyed.load(Ordering::Acquire));
        let l = Rc::new(Local {
            shared: Arc::clone(shared),
            handles: Rc::default(),
            root: OnceCell::new(),
        });
        locals.push(Rc::clone(&l));
        l
    })
}

// ---------------------------------------------------------------- per stream

/// The module's filter of one stream.
pub struct Filter {
    shared: Arc<Shared>,
    host: Rc<StreamHost>,
    /// The request the stages run on; `None` when they could not start, or panicked on this
    /// stream (later hooks then do nothing). Borrowed by one hook at a time: a hook Envoy would
    /// run inside another finds it borrowed and does nothing. (Envoy does not run this filter's
    /// response hooks for its own local reply, ABI.md §4; the reply is sent after the suite
    /// has returned anyway.)
    state: RefCell<Option<Request>>,
}

enum Outcome {
    Ran(bool),
    Panicked(Box<dyn Any + Send>),
    Failed,
}

impl Filter {
    /// Runs `phase` on the request under `catch_unwind`; a panic fails the stream.
    fn run(&self, hook: &'static str, phase: impl FnOnce(&mut Request) -> bool) -> Outcome {
        #[cfg(not(feature = "test-panic"))]
        let _ = hook;
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return Outcome::Ran(true);
        };
        let Some(request) = state.as_mut() else {
            return Outcome::Failed;
        };
        match catch_unwind(AssertUnwindSafe(|| {
            #[cfg(feature = "test-panic")]
            test_panic::maybe(&self.shared, self.host.stream(), hook);
            phase(request)
        })) {
            Ok(go_on) => Outcome::Ran(go_on),
            Err(payload) => {
                *state = None;
                Outcome::Panicked(payload)
            }
        }
    }

    fn panicked(&self, hook: &str, payload: Box<dyn Any + Send>) {
        report_panic(hook, payload, &*self.host, self.shared.panics);
    }

    /// Request headers; `false`: answered locally (the hook returns StopIteration).
    pub fn request_headers(&self) -> bool {
        match self.run("request_headers", Request::request_headers) {
            Outcome::Ran(true) => true,
            Outcome::Ran(false) => self.send_pending().unwrap_or(true),
            Outcome::Panicked(p) => {
                self.panicked("request_headers", p);
                self.fail()
            }
            Outcome::Failed => self.fail(),
        }
    }

    /// Sends the reply a stage asked for: `Some(false)`, or `None` when there is none.
    fn send_pending(&self) -> Option<bool> {
        let reply = self.host.take_reply()?;
        host::send(self.host.stream(), &reply);
        Some(false)
    }

    /// The failure policy on a stream the suite cannot run on.
    fn fail(&self) -> bool {
        if let Some(sent) = self.send_pending() {
            // A stage had answered before the panic.
            return sent;
        }
        let Some((stage, reply)) = &self.shared.fail_closed else {
            return true;
        };
        let stream = self.host.stream();
        let grpc = is_grpc(
            stream
                .header(crate::abi::HttpHeaderType::REQUEST_HEADER, "content-type")
                .as_deref(),
        );
        host::send(stream, &reply.render(stage, grpc));
        false
    }

    fn after_request(&self, hook: &'static str, phase: fn(&mut Request)) {
        if let Outcome::Panicked(p) = self.run(hook, |r| {
            phase(r);
            true
        }) {
            self.panicked(hook, p);
        }
    }

    pub fn response_headers(&self) {
        self.after_request("response_headers", Request::response_headers);
    }

    pub fn response_trailers(&self) {
        self.after_request("response_trailers", Request::response_trailers);
    }

    /// End of stream (the stages' `on_log`).
    pub fn stream_complete(&self) {
        self.after_request("stream_complete", Request::log);
    }
}

// ---------------------------------------------------------------- panics

/// Records where a panic happened, for [`report_panic`], instead of printing it to stderr.
/// Installed once, by `program_init`; the hook is this module's own (its Rust runtime is its own).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let text = info.to_string().replace('\n', " ");
        LAST_PANIC.with(|last| {
            if let Ok(mut last) = last.try_borrow_mut() {
                *last = Some(text);
            }
        });
    }));
}

/// The message of a caught panic: what the hook recorded, or the payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    LAST_PANIC
        .with(|last| last.try_borrow_mut().ok().and_then(|mut l| l.take()))
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Logs a panic (the first on this thread) and counts it.
fn report_panic(hook: &str, payload: Box<dyn Any + Send>, host: &dyn Host, counter: Option<u32>) {
    let message = panic_message(&*payload);
    if !PANIC_LOGGED.with(|logged| logged.replace(true)) {
        log::error!(
            "mesh: panic in {hook}, caught; the request got the suite's failure policy: {message} (later panics on this thread are counted in native.panics, not logged)"
        );
    }
    if let Some(id) = counter {
        host.increment_metric(id, 1);
    }
}

// ---------------------------------------------------------------- per-route configs

/// `on_http_filter_per_route_config_new`: the error is the line to log.
pub fn per_route(module: &Module, name: &[u8], bytes: &[u8]) -> Result<PerRoute, String> {
    PerRoute::parse(
        module.name,
        module.stages,
        &String::from_utf8_lossy(name),
        bytes,
    )
}

// ---------------------------------------------------------------- test builds

/// The deliberate panic of the end-to-end tests (feature `test-panic`, never in `make build`):
/// a plugin configuration may name a hook in `test_panic`, and requests carrying
/// `x-mesh-test-panic` then panic there.
#[cfg(feature = "test-panic")]
mod test_panic {
    use super::Shared;
    use crate::abi::HttpHeaderType;
    use crate::ffi::Stream;
    use serde_json::Value;

    pub fn strip(name: &str, bytes: &[u8]) -> Result<(Vec<u8>, Option<String>), String> {
        let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(bytes) else {
            return Ok((bytes.to_vec(), None));
        };
        let hook = match map.remove("test_panic") {
            None => None,
            Some(Value::String(hook)) => Some(hook),
            Some(_) => return Err(format!("{name}: test_panic must name a hook")),
        };
        Ok((Value::Object(map).to_string().into_bytes(), hook))
    }

    #[allow(clippy::panic)]
    pub fn maybe(shared: &Shared, stream: Stream, hook: &str) {
        if shared.test_panic.as_deref() == Some(hook)
            && stream
                .header(HttpHeaderType::REQUEST_HEADER, "x-mesh-test-panic")
                .is_some()
        {
            panic!("deliberate test panic in {hook}");
        }
    }
}
