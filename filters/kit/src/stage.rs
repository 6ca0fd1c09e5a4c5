//! The proxy-wasm adapter, written once: a RootContext/HttpContext pair that runs an ordered list
//! of stages.
//!
//! A filter crate supplies a [`Stage`]: its name, its configuration type, its stats and three
//! hooks (request headers, response headers, end of stream). The adapter does the rest:
//!
//! - `on_configure`: parses the plugin JSON; a bad configuration logs one line naming filter,
//!   field, value and reason, and returns false, so Envoy refuses it;
//! - per request: reads the request headers once ([`Exchange`]), looks up the route's effective
//!   configuration in a per-route cache ([`crate::route::RouteCache`]), applies the stage's
//!   failure policy to invalid route metadata, and sends the local reply a stage asks for;
//! - response headers and `on_log`: calls the stages that ran, in order.
//!
//! A filter's own `.wasm` is this adapter with one stage ([`export_stage!`](crate::export_stage)).

use crate::config::{from_value, parse_json, ConfigError, Schema, Validate};
use crate::host::{Host, PhaseHost, Proxy};
use crate::metrics::{StatSet, Stats, StatsCache};
use crate::reply::{is_grpc, Reply};
use crate::route::{RouteCache, RouteConfig};
use crate::shared::Label;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::cell::RefCell;
use std::rc::Rc;

/// What a stage decides on request headers.
#[derive(Debug, PartialEq)]
pub enum Flow {
    Continue,
    /// Answer locally with this reply; later stages and the upstream never see the request.
    Reject(Reply),
}

/// What a stage does when a route's metadata is invalid (its failure policy). The adapter has
/// already logged the error (once per route) and counted the stage's `config_error` stat.
#[derive(Debug, PartialEq)]
pub enum OnInvalid {
    /// Run with the plugin configuration; [`Cx::route_config_invalid`] tells the stage, for
    /// policies such as "no retries" that still need the stage to act.
    UsePluginConfig,
    /// Fail open: do nothing on this request.
    Skip,
    /// Fail closed: answer with this reply.
    Reject(Reply),
}

/// One filter's logic, run by the adapter.
pub trait Stage: Sized + 'static {
    /// The filter's root_id, metric prefix and route-metadata key, e.g. `mesh.deadline`.
    const NAME: &'static str;
    /// The stats defined per label value (route or cluster), declared with
    /// [`stats!`](crate::stats).
    type Stat: StatSet;

    type Config: DeserializeOwned + Validate + Schema + 'static;
    /// Per-request state, created empty for every request the stage runs on.
    type Request: Default + 'static;

    /// Root-level state, built from the plugin configuration in `on_configure`.
    fn new(config: &Self::Config, host: &dyn Host) -> Self;

    fn on_invalid_route_config(&self) -> OnInvalid {
        OnInvalid::UsePluginConfig
    }

    /// A configuration's effective settings in a few words, defaults included, for the
    /// per-route table of `mesh-filters check` (e.g. `2s (500ms/try)`).
    fn describe(_config: &Self::Config) -> String {
        String::new()
    }

    fn on_request_headers(&self, cx: &mut Cx<'_, Self>) -> Flow;

    /// Runs instead of [`Stage::on_request_headers`] on a route where route metadata switches
    /// the stage off (`{"disabled": true}`): for what must happen even there, such as removing
    /// a request header that only the stage may set.
    fn on_disabled_route(&self, _ex: &mut Exchange) {}

    fn on_response_headers(&self, _cx: &mut Cx<'_, Self>) {}

    fn on_response_trailers(&self, _cx: &mut Cx<'_, Self>) {}

    fn on_log(&self, _cx: &mut Cx<'_, Self>) {}

    /// How often [`Stage::on_tick`] should run in every VM (workers and main thread); `None`:
    /// never. The adapter uses the shortest period any stage asks for.
    fn tick_period(&self) -> Option<std::time::Duration> {
        None
    }

    /// Background work of the root context: never on a request's path.
    fn on_tick(&self, _host: &dyn Host) {}

    /// The response to an HTTP call this stage made; `false` when the token is not its own.
    fn on_http_call_response(&self, _host: &dyn Host, _token: u32) -> bool {
        false
    }
}

/// What a stage's hook gets: its effective configuration, its per-request state, the shared
/// view of the request, and its stats for this route.
pub struct Cx<'a, S: Stage> {
    pub config: &'a S::Config,
    pub state: &'a mut S::Request,
    pub ex: &'a mut Exchange,
    pub stats: &'a Stats<S::Stat>,
    /// The route's metadata for this stage is invalid; `config` is the plugin configuration.
    pub route_config_invalid: bool,
    all_stats: &'a RefCell<StatsCache<S::Stat>>,
}

impl<S: Stage> Cx<'_, S> {
    pub fn host(&self) -> &dyn Host {
        self.ex.host()
    }
    pub fn inc(&self, stat: S::Stat) {
        self.stats.inc(self.ex.host(), stat);
    }
    /// The stage's stats under another label than the route, e.g. a cluster.
    pub fn stats_for(&self, label: &Label) -> Stats<S::Stat> {
        self.all_stats
            .borrow_mut()
            .get(self.ex.host(), label.kind, &label.name)
    }
}

/// The request as every stage sees it: headers read once, the route name read once, and the
/// writes made so far (so a later stage sees an earlier stage's header changes).
pub struct Exchange {
    host: Rc<PhaseHost>,
    headers: Vec<(String, String)>,
    route: Option<String>,
    grpc: bool,
    /// The filter that answered locally, if one did.
    pub rejected_by: Option<&'static str>,
    /// The caller's SPIFFE ID, as the identity stage verified it on this request (never read
    /// from a request header): what later stages may key on.
    pub verified_identity: Option<String>,
}

impl Exchange {
    pub fn new(host: Rc<dyn Host>) -> Self {
        Exchange {
            host: Rc::new(PhaseHost::new(host)),
            headers: Vec::new(),
            route: None,
            grpc: false,
            rejected_by: None,
            verified_identity: None,
        }
    }

    /// Reads the request headers (one host call).
    pub fn load_request(&mut self) {
        self.headers = self.host.request_headers();
        self.grpc = is_grpc(self.header("content-type"));
    }

    pub fn host(&self) -> &dyn Host {
        &*self.host
    }

    /// Starts a new phase of the request: the clock and properties are read afresh.
    pub fn new_phase(&self) {
        self.host.new_phase();
    }

    /// The route name (`xds.route_name`), read on first use; empty when the route has none.
    pub fn route(&mut self) -> &str {
        if self.route.is_none() {
            let name = self
                .host
                .property(&["xds", "route_name"])
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            self.route = Some(name);
        }
        self.route.as_deref().unwrap_or_default()
    }

    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// The upstream cluster of the route (`xds.cluster_name`, which Envoy resolves before the
    /// router runs); the route name when Envoy does not say, so a per-cluster scope degrades to
    /// per-route rather than to one shared key.
    pub fn cluster(&mut self) -> String {
        match self.host.property(&["xds", "cluster_name"]) {
            Some(b) if !b.is_empty() => String::from_utf8_lossy(&b).into_owned(),
            _ => self.route().to_string(),
        }
    }

    /// The first value of a request header (names are lowercase in Envoy).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a request header, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|(k, _)| k == name)
    }

    /// Replaces every value of a request header (one host call).
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.host.set_request_header(name, Some(value));
        self.headers.retain(|(k, _)| k != name);
        self.headers.push((name.to_string(), value.to_string()));
    }

    /// Removes a request header; no host call when it is absent.
    pub fn remove_header(&mut self, name: &str) {
        if self.has_header(name) {
            self.host.set_request_header(name, None);
            self.headers.retain(|(k, _)| k != name);
        }
    }

    pub fn response_header(&self, name: &str) -> Option<String> {
        self.host.response_header(name)
    }

    pub fn set_response_header(&self, name: &str, value: &str) {
        self.host.set_response_header(name, Some(value));
    }

    pub fn response_trailer(&self, name: &str) -> Option<String> {
        self.host.response_trailer(name)
    }

    pub fn set_response_trailer(&self, name: &str, value: &str) {
        self.host.set_response_trailer(name, Some(value));
    }

    pub fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.host.property(path)
    }

    /// Whether the response is a local reply made by one of our filters, in this module (a
    /// stage of this adapter) or in another mesh filter of the same Envoy: it carries
    /// `x-mesh-rejected-by` and did not come from the upstream. For response headers and
    /// `on_log`. An upstream cannot fake it: a response via the upstream is never ours.
    pub fn is_our_local_reply(&self) -> bool {
        if self.rejected_by.is_some() {
            return true;
        }
        if self
            .host
            .response_header(crate::reply::REJECTED_BY)
            .is_none()
        {
            return false;
        }
        let details = self
            .host
            .property(&["response", "code_details"])
            .unwrap_or_default();
        details != b"via_upstream"
    }

    fn reply(&mut self, filter: &'static str, reply: &Reply) {
        self.rejected_by = Some(filter);
        self.host.send_reply(&reply.render(filter, self.grpc));
    }
}

/// A configured stage, with its per-route config cache and stats; shared by the root context
/// and every request of this VM.
pub struct Slot<S: Stage> {
    stage: S,
    routes: RefCell<RouteCache<S::Config>>,
    stats: RefCell<StatsCache<S::Stat>>,
}

impl<S: Stage> Slot<S> {
    /// Builds the stage from its JSON configuration, or says what is wrong with it.
    pub fn configure(json: &Value, host: &dyn Host) -> Result<Self, ConfigError> {
        let config: S::Config = from_value(json)?;
        let stage = S::new(&config, host);
        Ok(Slot {
            stage,
            routes: RefCell::new(RouteCache::new(S::NAME, json.clone(), config)),
            stats: RefCell::new(StatsCache::new(S::NAME)),
        })
    }
}

/// Object-safe face of a [`Slot`] for the adapter's stage list.
pub trait AnySlot {
    fn name(&self) -> &'static str;
    fn tick_period(&self) -> Option<std::time::Duration>;
    fn on_tick(&self, host: &dyn Host);
    fn on_http_call_response(&self, host: &dyn Host, token: u32) -> bool;
    /// Starts the stage on a request: `None` when it is off for this route.
    fn start(self: Rc<Self>, ex: &mut Exchange) -> Option<Box<dyn Run>>;
}

/// A stage running on one request.
pub trait Run {
    fn on_request_headers(&mut self, ex: &mut Exchange) -> Flow;
    fn on_response_headers(&mut self, ex: &mut Exchange);
    fn on_response_trailers(&mut self, ex: &mut Exchange);
    fn on_log(&mut self, ex: &mut Exchange);
}

enum Mode {
    Normal,
    /// Invalid route metadata, running with the plugin configuration.
    Fallback,
    Reject(Reply),
}

struct RunOf<S: Stage> {
    slot: Rc<Slot<S>>,
    config: Rc<S::Config>,
    stats: Stats<S::Stat>,
    state: S::Request,
    mode: Mode,
}

impl<S: Stage> AnySlot for Slot<S> {
    fn name(&self) -> &'static str {
        S::NAME
    }

    fn tick_period(&self) -> Option<std::time::Duration> {
        self.stage.tick_period()
    }

    fn on_tick(&self, host: &dyn Host) {
        self.stage.on_tick(host);
    }

    fn on_http_call_response(&self, host: &dyn Host, token: u32) -> bool {
        self.stage.on_http_call_response(host, token)
    }

    fn start(self: Rc<Self>, ex: &mut Exchange) -> Option<Box<dyn Run>> {
        let route = ex.route().to_string();
        let host = Rc::clone(&ex.host);
        let lookup = self
            .routes
            .borrow_mut()
            .get(&route, || host.property(&["xds", "route_metadata"]));
        let stats = self.stats.borrow_mut().get(&*host, "route", &route);
        let (config, mode) = match lookup.config {
            RouteConfig::Disabled => {
                self.stage.on_disabled_route(ex);
                return None;
            }
            RouteConfig::Enabled(c) => (c, Mode::Normal),
            RouteConfig::Invalid { fallback } => {
                if let Some(e) = lookup.new_error {
                    log::warn!(
                        "{}: invalid route metadata on route {route:?}: {e}",
                        S::NAME
                    );
                }
                stats.inc(&*host, S::Stat::CONFIG_ERROR);
                match self.stage.on_invalid_route_config() {
                    OnInvalid::UsePluginConfig => (fallback, Mode::Fallback),
                    OnInvalid::Skip => return None,
                    OnInvalid::Reject(reply) => (fallback, Mode::Reject(reply)),
                }
            }
        };
        Some(Box::new(RunOf {
            slot: self,
            config,
            stats,
            state: S::Request::default(),
            mode,
        }))
    }
}

impl<S: Stage> RunOf<S> {
    fn cx<'a>(&'a mut self, ex: &'a mut Exchange) -> (&'a S, Cx<'a, S>) {
        let cx = Cx {
            config: &*self.config,
            state: &mut self.state,
            ex,
            stats: &self.stats,
            route_config_invalid: matches!(self.mode, Mode::Fallback),
            all_stats: &self.slot.stats,
        };
        (&self.slot.stage, cx)
    }
}

impl<S: Stage> Run for RunOf<S> {
    fn on_request_headers(&mut self, ex: &mut Exchange) -> Flow {
        if let Mode::Reject(reply) = &self.mode {
            return Flow::Reject(reply.clone());
        }
        let (stage, mut cx) = self.cx(ex);
        stage.on_request_headers(&mut cx)
    }

    fn on_response_headers(&mut self, ex: &mut Exchange) {
        let (stage, mut cx) = self.cx(ex);
        stage.on_response_headers(&mut cx);
    }

    fn on_response_trailers(&mut self, ex: &mut Exchange) {
        let (stage, mut cx) = self.cx(ex);
        stage.on_response_trailers(&mut cx);
    }

    fn on_log(&mut self, ex: &mut Exchange) {
        let (stage, mut cx) = self.cx(ex);
        stage.on_log(&mut cx);
    }
}

/// Builds the stage list from the plugin configuration.
pub type Factory = fn(&Value, &dyn Host) -> Result<Vec<Rc<dyn AnySlot>>, ConfigError>;

/// The factory of a filter with one stage: the whole plugin configuration is the stage's.
pub fn single<S: Stage>(
    json: &Value,
    host: &dyn Host,
) -> Result<Vec<Rc<dyn AnySlot>>, ConfigError> {
    Ok(vec![Rc::new(Slot::<S>::configure(json, host)?)])
}

/// The root context: parses the plugin configuration and hands the stages to each request.
pub struct Root {
    name: &'static str,
    factory: Factory,
    host: Rc<dyn Host>,
    slots: Rc<[Rc<dyn AnySlot>]>,
}

impl Root {
    pub fn new(name: &'static str, factory: Factory, host: Rc<dyn Host>) -> Self {
        Root {
            name,
            factory,
            host,
            slots: Rc::from(Vec::new()),
        }
    }

    /// Parses and applies a plugin configuration; the error is the line to log.
    pub fn configure(&mut self, bytes: &[u8]) -> Result<(), String> {
        let json = parse_json(bytes).map_err(|e| e.line(self.name))?;
        let slots = (self.factory)(&json, &*self.host).map_err(|e| e.line(self.name))?;
        if let Some(period) = slots.iter().filter_map(|s| s.tick_period()).min() {
            self.host.set_tick_period(period);
        }
        self.slots = Rc::from(slots);
        Ok(())
    }

    pub fn new_request(&self) -> Request {
        Request {
            slots: Rc::clone(&self.slots),
            runs: Vec::new(),
            ex: Exchange::new(Rc::clone(&self.host)),
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
        for slot in self.slots.iter() {
            if slot.on_http_call_response(&*self.host, token_id) {
                return;
            }
        }
    }
}

impl RootContext for Root {
    fn on_tick(&mut self) {
        for slot in self.slots.iter() {
            slot.on_tick(&*self.host);
        }
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match self.configure(&bytes) {
            Ok(()) => true,
            Err(line) => {
                log::error!("{line}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(self.new_request()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request: the stages that run on it, in order, and the shared [`Exchange`].
pub struct Request {
    slots: Rc<[Rc<dyn AnySlot>]>,
    runs: Vec<Box<dyn Run>>,
    pub ex: Exchange,
}

impl Request {
    /// Runs every stage on the request headers; `false` when one answered locally.
    pub fn request_headers(&mut self) -> bool {
        self.ex.load_request();
        let slots = Rc::clone(&self.slots);
        for slot in slots.iter() {
            let Some(mut run) = Rc::clone(slot).start(&mut self.ex) else {
                continue;
            };
            let flow = run.on_request_headers(&mut self.ex);
            self.runs.push(run);
            if let Flow::Reject(reply) = flow {
                self.ex.reply(slot.name(), &reply);
                return false;
            }
        }
        true
    }

    pub fn response_headers(&mut self) {
        self.ex.new_phase();
        for run in &mut self.runs {
            run.on_response_headers(&mut self.ex);
        }
    }

    pub fn response_trailers(&mut self) {
        self.ex.new_phase();
        for run in &mut self.runs {
            run.on_response_trailers(&mut self.ex);
        }
    }

    pub fn log(&mut self) {
        self.ex.new_phase();
        for run in &mut self.runs {
            run.on_log(&mut self.ex);
        }
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.request_headers() {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.response_headers();
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.response_trailers();
        Action::Continue
    }

    fn on_log(&mut self) {
        self.log();
    }
}

/// A root context on the real host.
pub fn root(name: &'static str, factory: Factory) -> Box<dyn RootContext> {
    Box::new(Root::new(name, factory, Rc::new(Proxy)))
}

/// Installs the root context factory (called from the wasm entry point).
pub fn install(new_root: fn(u32) -> Box<dyn RootContext>) {
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(new_root);
}

/// The wasm entry point of a filter with one stage:
///
/// ```text
/// #[cfg(feature = "standalone")]
/// mesh_kit::export_stage!(crate::filter::Deadline);
/// ```
#[macro_export]
macro_rules! export_stage {
    ($stage:ty) => {
        fn __mesh_new_root(_context_id: u32) -> Box<dyn $crate::proxy_wasm::traits::RootContext> {
            $crate::stage::root(
                <$stage as $crate::stage::Stage>::NAME,
                $crate::stage::single::<$stage>,
            )
        }
        $crate::proxy_wasm::main! {{
            $crate::stage::install(__mesh_new_root);
        }}
    };
}

/// The wasm entry point of a filter whose stages a factory builds from the configuration (the
/// suite):
///
/// ```text
/// mesh_kit::export_filter!("mesh", crate::factory);
/// ```
#[macro_export]
macro_rules! export_filter {
    ($name:expr, $factory:path) => {
        fn __mesh_new_root(_context_id: u32) -> Box<dyn $crate::proxy_wasm::traits::RootContext> {
            $crate::stage::root($name, $factory)
        }
        $crate::proxy_wasm::main! {{
            $crate::stage::install(__mesh_new_root);
        }}
    };
}
