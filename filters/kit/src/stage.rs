//! The adapter core, written once for both runtimes: configured stages, and the request path
//! that runs them in order.
//!
//! A filter crate supplies a [`Stage`]: its name, its configuration type, its stats and the hooks
//! (request headers, response headers and trailers, end of stream, background ticks). This module
//! does the rest, without knowing which runtime it is in:
//!
//! - [`Root::configure`]: parses the plugin JSON and builds the stages; a bad configuration is
//!   one line naming filter, field, value and reason, which the runtime logs before refusing it;
//! - per request ([`Request`]): reads the request headers once ([`Exchange`]), looks up each
//!   stage's effective configuration for the route in a per-route cache
//!   ([`crate::route::RouteCache`]), applies the stage's failure policy to invalid per-route
//!   configuration, and sends the local reply a stage asks for;
//! - response headers, trailers and end of stream: calls the stages that ran, in order.
//!
//! Two levels of state: a configured stage ([`AnyStage`], the `Stage` value itself) is built once
//! per plugin configuration and is `Send + Sync`, so the native module shares one across its
//! worker threads; its per-thread caches (route configurations, metric ids) live in an
//! [`AnySlot`], one per thread. In the wasm module both live in the one VM of a worker. The
//! proxy-wasm glue is [`crate::wasm`]; the native glue is the `mesh-native` crate.

use crate::config::{from_value, parse_json, ConfigError, Schema, Validate};
use crate::hash::FxHashMap;
use crate::host::{le_u64, unix_us, Host, Property};
use crate::metrics::{StatSet, Stats, StatsCache};
use crate::reply::{is_grpc, Reply};
use crate::route::{RouteCache, RouteConfig};
use crate::shared::Label;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What a stage decides on request headers.
#[derive(Debug, PartialEq)]
pub enum Flow {
    Continue,
    /// Answer locally with this reply; later stages and the upstream never see the request.
    Reject(Reply),
}

/// What a stage does when a route's per-route configuration is invalid (its failure policy). The
/// adapter has already logged the error (once per route) and counted the stage's `config_error`.
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

/// One filter's logic, run by the adapter. The value is the stage's root-level state, built once
/// per plugin configuration and shared by every thread that serves requests (hence `Sync`).
pub trait Stage: Send + Sync + Sized + 'static {
    /// The filter's root_id, metric prefix and per-route configuration key, e.g. `mesh.deadline`.
    const NAME: &'static str;
    /// The stats defined per label value (route or cluster), declared with
    /// [`stats!`](crate::stats).
    type Stat: StatSet;

    type Config: DeserializeOwned + Validate + Schema + 'static;
    /// Per-request state, created empty for every request the stage runs on.
    type Request: Default + 'static;

    /// Root-level state, built from the plugin configuration when it is loaded.
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

    /// Runs instead of [`Stage::on_request_headers`] on a route where the per-route
    /// configuration switches the stage off (`{"disabled": true}`): for what must happen even
    /// there, such as removing a request header that only the stage may set.
    fn on_disabled_route(&self, _ex: &mut Exchange) {}

    fn on_response_headers(&self, _cx: &mut Cx<'_, Self>) {}

    fn on_response_trailers(&self, _cx: &mut Cx<'_, Self>) {}

    fn on_log(&self, _cx: &mut Cx<'_, Self>) {}

    /// How often [`Stage::on_tick`] should run; `None`: never. The adapter uses the shortest
    /// period any stage asks for. In the wasm module every VM ticks (workers and main thread);
    /// in the native module the main thread does.
    fn tick_period(&self) -> Option<Duration> {
        None
    }

    /// Background work: never on a request's path.
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
    /// The route's configuration for this stage is invalid; `config` is the plugin's.
    pub route_config_invalid: bool,
    all_stats: &'a RefCell<StatsCache<S::Stat>>,
    keys: &'a RefCell<FxHashMap<Label, Rc<str>>>,
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
    /// The shared-data key of this stage's state under `label` (`mesh.retry_budget:route:auth`),
    /// made once per label.
    pub fn state_key(&self, label: &Label) -> Rc<str> {
        let mut keys = self.keys.borrow_mut();
        if let Some(k) = keys.get(label) {
            return Rc::clone(k);
        }
        if keys.len() >= crate::metrics::MAX_LABELS {
            keys.clear();
        }
        let key: Rc<str> = Rc::from(label.key(S::NAME));
        keys.insert(label.clone(), Rc::clone(&key));
        key
    }
}

/// The request as every stage sees it: headers read once, the route name read once, the clock
/// and each property read at most once per phase (several stages asking for `response.code`
/// cost one host call), and the writes made so far (so a later stage sees an earlier stage's
/// header changes).
pub struct Exchange {
    host: Rc<dyn Host>,
    headers: Vec<(String, String)>,
    route: Option<Rc<str>>,
    grpc: bool,
    now: Cell<Option<SystemTime>>,
    properties: RefCell<[Option<Option<Vec<u8>>>; Property::ALL.len()]>,
    /// The filter that answered locally, if one did.
    pub rejected_by: Option<&'static str>,
    /// The caller's SPIFFE ID, as the identity stage verified it on this request (never read
    /// from a request header): what later stages may key on.
    pub verified_identity: Option<String>,
}

impl Exchange {
    pub fn new(host: Rc<dyn Host>) -> Self {
        Exchange {
            host,
            headers: Vec::new(),
            route: None,
            grpc: false,
            now: Cell::new(None),
            properties: RefCell::new(Default::default()),
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

    /// Starts a new phase of the request: the clock and properties are read afresh (properties
    /// such as `response.code` change between phases).
    pub fn new_phase(&self) {
        self.now.set(None);
        *self.properties.borrow_mut() = Default::default();
    }

    /// The host's clock, read once per phase.
    pub fn now(&self) -> SystemTime {
        if let Some(t) = self.now.get() {
            return t;
        }
        let t = self.host.now();
        self.now.set(Some(t));
        t
    }

    /// [`Exchange::now`] in microseconds since the Unix epoch.
    pub fn now_us(&self) -> u64 {
        unix_us(self.now())
    }

    /// A property's raw value, read once per phase.
    pub fn property(&self, p: Property) -> Option<Vec<u8>> {
        if let Some(Some(cached)) = self.properties.borrow().get(p.index()) {
            return cached.clone();
        }
        let v = self.host.property(p);
        if let Some(slot) = self.properties.borrow_mut().get_mut(p.index()) {
            *slot = Some(v.clone());
        }
        v
    }

    /// An integer property.
    pub fn int(&self, p: Property) -> Option<u64> {
        self.property(p).as_deref().and_then(le_u64)
    }

    /// A string property (absent when it is not UTF-8).
    pub fn text(&self, p: Property) -> Option<String> {
        self.property(p).and_then(|b| String::from_utf8(b).ok())
    }

    /// A boolean property: false when absent.
    pub fn flag(&self, p: Property) -> bool {
        self.property(p).is_some_and(|b| b.first() == Some(&1))
    }

    /// The route name (`xds.route_name`), read on first use; empty when the route has none.
    pub fn route(&mut self) -> &str {
        self.route_rc_ref()
    }

    /// The route name, shared (no copy).
    pub fn route_name(&mut self) -> Rc<str> {
        Rc::clone(self.route_rc_ref())
    }

    fn route_rc_ref(&mut self) -> &Rc<str> {
        if self.route.is_none() {
            let name: Rc<str> = self
                .property(Property::RouteName)
                .map(|b| Rc::from(String::from_utf8_lossy(&b).as_ref()))
                .unwrap_or_else(|| Rc::from(""));
            self.route = Some(name);
        }
        self.route.get_or_insert_with(|| Rc::from(""))
    }

    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// The upstream cluster of the route (`xds.cluster_name`, which Envoy resolves before the
    /// router runs); the route name when Envoy does not say, so a per-cluster scope degrades to
    /// per-route rather than to one shared key.
    pub fn cluster(&mut self) -> Rc<str> {
        match self.property(Property::ClusterName) {
            Some(b) if !b.is_empty() => Rc::from(String::from_utf8_lossy(&b).as_ref()),
            _ => self.route_name(),
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

    /// Replaces every value of a request header (one host call; `name` in lowercase, as Envoy
    /// keeps them). A header the request does not carry is added rather than set: the same
    /// result, without Envoy's scan of the map for values to replace.
    pub fn set_header(&mut self, name: &str, value: &str) {
        debug_assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name}");
        if self.has_header(name) {
            self.host.set_request_header(name, Some(value));
            self.headers.retain(|(k, _)| k != name);
        } else {
            self.host.add_request_header(name, value);
        }
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

    /// Whether the response is a local reply made by one of our filters, in this module (a
    /// stage of this adapter) or in another mesh filter of the same Envoy: it carries
    /// `x-mesh-rejected-by` and did not come from the upstream. For response headers and
    /// end of stream. An upstream cannot fake it: a response via the upstream is never ours.
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
            .property(Property::ResponseCodeDetails)
            .unwrap_or_default();
        details != b"via_upstream"
    }

    fn reply(&mut self, filter: &'static str, reply: &Reply) {
        self.rejected_by = Some(filter);
        self.host.send_reply(&reply.render(filter, self.grpc));
    }
}

/// A configured stage, shared by every thread: what the native module's main thread ticks.
pub trait AnyStage: Send + Sync {
    fn name(&self) -> &'static str;
    fn tick_period(&self) -> Option<Duration>;
    fn on_tick(&self, host: &dyn Host);
    fn on_http_call_response(&self, host: &dyn Host, token: u32) -> bool;
    /// The stage's failure policy ([`Stage::on_invalid_route_config`]), which the native module
    /// also applies to a request on which the suite panicked.
    fn on_invalid_route_config(&self) -> OnInvalid;
    /// This stage's per-thread slot (route-configuration and metric caches), for the plugin
    /// configuration `json` it was built from.
    fn slot(self: Arc<Self>, json: &Value) -> Result<Rc<dyn AnySlot>, ConfigError>;
}

/// A configured stage and the plugin configuration it was built from.
#[derive(Clone)]
pub struct Built {
    pub stage: Arc<dyn AnyStage>,
    pub json: Value,
}

/// Builds the stage from its JSON configuration, or says what is wrong with it.
pub fn build<S: Stage>(json: &Value, host: &dyn Host) -> Result<Built, ConfigError> {
    let config: S::Config = from_value(json)?;
    Ok(Built {
        stage: Arc::new(S::new(&config, host)),
        json: json.clone(),
    })
}

impl<S: Stage> AnyStage for S {
    fn name(&self) -> &'static str {
        S::NAME
    }
    fn tick_period(&self) -> Option<Duration> {
        Stage::tick_period(self)
    }
    fn on_tick(&self, host: &dyn Host) {
        Stage::on_tick(self, host);
    }
    fn on_http_call_response(&self, host: &dyn Host, token: u32) -> bool {
        Stage::on_http_call_response(self, host, token)
    }
    fn on_invalid_route_config(&self) -> OnInvalid {
        Stage::on_invalid_route_config(self)
    }
    fn slot(self: Arc<Self>, json: &Value) -> Result<Rc<dyn AnySlot>, ConfigError> {
        let config: S::Config = from_value(json)?;
        Ok(Rc::new(Slot {
            stage: self,
            routes: RefCell::new(RouteCache::new(json.clone(), config)),
            stats: RefCell::new(StatsCache::new(S::NAME)),
            keys: RefCell::new(FxHashMap::default()),
        }))
    }
}

/// A configured stage on one thread, with its per-route config cache and stats.
pub struct Slot<S: Stage> {
    stage: Arc<S>,
    /// Per route: the effective configuration and the route's metric ids, one lookup.
    routes: RefCell<RouteCache<S::Config, Stats<S::Stat>>>,
    stats: RefCell<StatsCache<S::Stat>>,
    /// Shared-data keys by label ([`Cx::state_key`]), built once.
    keys: RefCell<FxHashMap<Label, Rc<str>>>,
}

/// Object-safe face of a [`Slot`] for the request path.
pub trait AnySlot {
    fn name(&self) -> &'static str;
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
    /// Invalid per-route configuration, running with the plugin configuration.
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

    fn start(self: Rc<Self>, ex: &mut Exchange) -> Option<Box<dyn Run>> {
        let route = ex.route_name();
        let host = Rc::clone(&ex.host);
        let now_us = ex.now_us();
        let lookup = self.routes.borrow_mut().get_with(
            &route,
            now_us,
            || host.route_config(S::NAME),
            || self.stats.borrow_mut().get(&*host, "route", &route),
        );
        let stats = lookup.extra;
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
            keys: &self.slot.keys,
        };
        (&*self.slot.stage, cx)
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

/// Builds the configured stages from the plugin configuration.
pub type Factory = fn(&Value, &dyn Host) -> Result<Vec<Built>, ConfigError>;

/// The factory of a filter with one stage: the whole plugin configuration is the stage's.
pub fn single<S: Stage>(json: &Value, host: &dyn Host) -> Result<Vec<Built>, ConfigError> {
    Ok(vec![build::<S>(json, host)?])
}

/// A plugin configuration, parsed and built: the stages, shared by every thread.
#[derive(Clone)]
pub struct Configured {
    pub stages: Arc<[Built]>,
}

impl Configured {
    /// Parses and builds a plugin configuration; the error is the line to log.
    pub fn new(
        name: &'static str,
        factory: Factory,
        bytes: &[u8],
        host: &dyn Host,
    ) -> Result<Configured, String> {
        let json = parse_json(bytes).map_err(|e| e.line(name))?;
        let stages = factory(&json, host).map_err(|e| e.line(name))?;
        Ok(Configured {
            stages: Arc::from(stages),
        })
    }

    /// The shortest tick period any stage asks for.
    pub fn tick_period(&self) -> Option<Duration> {
        self.stages
            .iter()
            .filter_map(|b| b.stage.tick_period())
            .min()
    }

    pub fn on_tick(&self, host: &dyn Host) {
        for b in self.stages.iter() {
            b.stage.on_tick(host);
        }
    }

    pub fn on_http_call_response(&self, host: &dyn Host, token: u32) {
        for b in self.stages.iter() {
            if b.stage.on_http_call_response(host, token) {
                return;
            }
        }
    }

    /// This thread's slots over the configured stages.
    pub fn slots(&self) -> Result<Rc<[Rc<dyn AnySlot>]>, String> {
        let slots: Result<Vec<_>, _> = self
            .stages
            .iter()
            .map(|b| Arc::clone(&b.stage).slot(&b.json))
            .collect();
        slots.map(Rc::from).map_err(|e| e.to_string())
    }
}

/// The root of one thread (a wasm VM, or a native worker): the configured stages and this
/// thread's slots over them.
pub struct Root {
    name: &'static str,
    factory: Factory,
    host: Rc<dyn Host>,
    configured: Option<Configured>,
    slots: Rc<[Rc<dyn AnySlot>]>,
}

impl Root {
    pub fn new(name: &'static str, factory: Factory, host: Rc<dyn Host>) -> Self {
        Root {
            name,
            factory,
            host,
            configured: None,
            slots: Rc::from(Vec::new()),
        }
    }

    /// A root over stages configured elsewhere (the native module's main thread).
    pub fn with(configured: Configured, host: Rc<dyn Host>) -> Result<Self, String> {
        let slots = configured.slots()?;
        Ok(Root {
            name: "",
            factory: |_, _| Ok(Vec::new()),
            host,
            configured: Some(configured),
            slots,
        })
    }

    /// Parses and applies a plugin configuration; the error is the line to log.
    pub fn configure(&mut self, bytes: &[u8]) -> Result<(), String> {
        let configured = Configured::new(self.name, self.factory, bytes, &*self.host)?;
        if let Some(period) = configured.tick_period() {
            self.host.set_tick_period(period);
        }
        self.slots = configured.slots()?;
        self.configured = Some(configured);
        Ok(())
    }

    pub fn on_tick(&self) {
        if let Some(c) = &self.configured {
            c.on_tick(&*self.host);
        }
    }

    pub fn on_http_call_response(&self, token: u32) {
        if let Some(c) = &self.configured {
            c.on_http_call_response(&*self.host, token);
        }
    }

    /// A request on this root's host.
    pub fn new_request(&self) -> Request {
        self.request_on(Rc::clone(&self.host))
    }

    /// A request on its own host (the native module's per-stream host).
    pub fn request_on(&self, host: Rc<dyn Host>) -> Request {
        Request {
            slots: Rc::clone(&self.slots),
            runs: Vec::new(),
            ex: Exchange::new(host),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    #[test]
    fn set_header_adds_a_header_the_request_lacks_and_sets_one_it_has() {
        let host = Rc::new(TestHost::with_headers(&[("x-have", "old")]));
        let mut ex = Exchange::new(Rc::clone(&host) as Rc<dyn Host>);
        ex.load_request();
        let _ = host.take_calls();
        ex.set_header("x-new", "1");
        ex.set_header("x-have", "2");
        ex.set_header("x-new", "3");
        let calls = host.take_calls();
        assert_eq!(calls.get("add_request_header"), Some(&1), "{calls:?}");
        assert_eq!(calls.get("set_request_header"), Some(&2), "{calls:?}");
        assert_eq!(ex.header_values("x-new").collect::<Vec<_>>(), ["3"]);
        assert_eq!(ex.header_values("x-have").collect::<Vec<_>>(), ["2"]);
        assert_eq!(
            *host.header_writes.borrow(),
            [
                ("x-new".to_owned(), Some("1".to_owned())),
                ("x-have".to_owned(), Some("2".to_owned())),
                ("x-new".to_owned(), Some("3".to_owned())),
            ]
        );
    }
}
