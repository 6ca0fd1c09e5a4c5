//! The proxy-wasm side of the probe: a root context per plugin configuration, an HttpContext per
//! request that performs the plan in its phase.

use crate::count::{CallPhase, Counting};
use crate::plan::{self, Op, Phase, Plan};
use crate::replay::{Replay, Source};
use crate::trace::{self, Call, Recording};
use mesh_kit::host::{Host, Property};
use mesh_kit::stage::{Request, Root};
use mesh_kit::wasm::Proxy;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType, MetricType};
use std::rc::Rc;
use std::time::SystemTime;

/// The probe's name in log lines, its root_id.
pub const NAME: &str = "bench.probe";
/// `suite_counted`: the index of the configuration (in `suites`) this request runs.
pub const STAGES_HEADER: &str = "x-probe-stages";
/// `suite_counted`: a request carrying this header gets the counts as JSON instead.
pub const REPORT_HEADER: &str = "x-probe-report";
/// `suite_counted`: a request carrying this header forgets the counts so far.
pub const RESET_HEADER: &str = "x-probe-reset";

/// The real host as the source of the answers [`Replay`] records.
pub struct Real;

impl Source for Real {
    fn route_config(&self, key: &str) -> Result<Option<serde_json::Value>, String> {
        Proxy.route_config(key)
    }
    fn property(&self, p: Property) -> Option<Vec<u8>> {
        Proxy.property(p)
    }
    fn response_header(&self, name: &str) -> Option<String> {
        Proxy.response_header(name)
    }
    fn response_trailer(&self, name: &str) -> Option<String> {
        Proxy.response_trailer(name)
    }
    fn now(&self) -> SystemTime {
        Proxy.now()
    }
}

/// `suite_counted`: one suite per configuration, each over its own counting host.
struct CountedSuite {
    root: Root,
    host: Rc<Counting<Proxy>>,
}

/// Requests of the suite per route before the one `call_mix` records.
pub const MIX_WARMUP: u32 = 3;

type Trace = Rc<Vec<(CallPhase, Call)>>;

/// `call_mix`: the suite over a recording host until a trace exists for the route, then the
/// traces.
struct Mix {
    root: Root,
    host: Rc<Recording<Proxy>>,
    /// Requests of the suite seen per route.
    seen: std::cell::RefCell<Vec<(String, u32)>>,
    traces: std::cell::RefCell<Vec<(String, Trace)>>,
}

/// What a `call_mix` request does.
enum Mixing {
    Idle,
    /// Runs the suite; `true` when this is the request being recorded (on this route).
    Suite(bool, String),
    Replay(Trace),
}

/// What every request of one plugin configuration shares.
struct Shared {
    plan: Plan,
    /// Header names written by set/add, one per repetition.
    names: Vec<String>,
    path: Vec<String>,
    value: Vec<u8>,
    counter: u32,
    gauge: u32,
    in_vm: Option<(Root, Rc<Replay<Real>>)>,
    counted: Vec<CountedSuite>,
    mix: Option<Mix>,
}

/// The root context of one plugin configuration.
#[derive(Default)]
pub struct ProbeRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for ProbeRoot {}

impl ProbeRoot {
    fn configure(&mut self, bytes: &[u8]) -> Result<(), String> {
        let plan = Plan::parse(bytes)?;
        let counter = hostcalls::define_metric(MetricType::Counter, "bench.probe.counter")
            .map_err(|s| format!("define_metric: {s:?}"))?;
        let gauge = hostcalls::define_metric(MetricType::Gauge, "bench.probe.gauge")
            .map_err(|s| format!("define_metric: {s:?}"))?;
        let value = plan::shared_value();
        if let Ok((None, _)) = hostcalls::get_shared_data(plan::SHARED_KEY) {
            hostcalls::set_shared_data(plan::SHARED_KEY, Some(&value), None)
                .map_err(|s| format!("set_shared_data: {s:?}"))?;
        }
        let mut in_vm = None;
        let mut counted = Vec::new();
        let mut mix = None;
        match &plan.op {
            Op::SuiteInVm(suite) => {
                let host = Rc::new(Replay::new(Real));
                let mut root = Root::new("mesh", crate::suite_factory, host.clone());
                root.configure(suite.to_string().as_bytes())?;
                in_vm = Some((root, host));
            }
            Op::CallMix(suite) => {
                let host = Rc::new(Recording::new(Proxy));
                let mut root = Root::new("mesh", crate::suite_factory, host.clone());
                root.configure(suite.to_string().as_bytes())?;
                mix = Some(Mix {
                    root,
                    host,
                    seen: std::cell::RefCell::new(Vec::new()),
                    traces: std::cell::RefCell::new(Vec::new()),
                });
            }
            Op::SuiteCounted(suites) => {
                for suite in suites {
                    let host = Rc::new(Counting::new(Proxy));
                    let mut root = Root::new("mesh", crate::suite_factory, host.clone());
                    root.configure(suite.to_string().as_bytes())?;
                    counted.push(CountedSuite { root, host });
                }
            }
            _ => {}
        }
        let path = match &plan.op {
            Op::GetProperty(p) => p.clone(),
            _ => Vec::new(),
        };
        self.shared = Some(Rc::new(Shared {
            names: plan::header_names(plan.n),
            plan,
            path,
            value,
            counter,
            gauge,
            in_vm,
            counted,
            mix,
        }));
        Ok(())
    }
}

impl RootContext for ProbeRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match self.configure(&bytes) {
            Ok(()) => true,
            Err(e) => {
                log::error!("{NAME}: invalid configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = Rc::clone(self.shared.as_ref()?);
        Some(Box::new(Probe {
            shared,
            held: Vec::new(),
            counted: None,
            mixing: Mixing::Idle,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request.
pub struct Probe {
    shared: Rc<Shared>,
    /// `suite_in_vm` / `suite_counted`: the suite's requests in flight.
    held: Vec<Request>,
    /// `suite_counted`: the configuration this request runs.
    counted: Option<usize>,
    mixing: Mixing,
}

fn map_of(phase: Phase) -> MapType {
    match phase {
        Phase::Request => MapType::HttpRequestHeaders,
        Phase::Response | Phase::Log => MapType::HttpResponseHeaders,
    }
}

impl Probe {
    /// Performs the plan's operation `n` times; `Pause` after a local response.
    fn perform(&mut self, phase: Phase) -> Action {
        let s = &*self.shared;
        if s.plan.phase != phase {
            return Action::Continue;
        }
        let map = map_of(phase);
        let n = s.plan.n;
        match &s.plan.op {
            Op::None | Op::SuiteInVm(_) | Op::SuiteCounted(_) | Op::CallMix(_) => {}
            Op::GetProperty(_) => {
                let path: Vec<&str> = s.path.iter().map(String::as_str).collect();
                for _ in 0..n {
                    let _ = hostcalls::get_property(path.clone());
                }
            }
            Op::GetMap => {
                for _ in 0..n {
                    let _ = hostcalls::get_map(map);
                }
            }
            Op::GetMapValue(name) => {
                for _ in 0..n {
                    let _ = hostcalls::get_map_value(map, name);
                }
            }
            Op::SetMapValue => {
                for name in &s.names {
                    let _ = hostcalls::set_map_value(map, name, Some(plan::HEADER_VALUE));
                }
            }
            Op::AddMapValue => {
                for name in &s.names {
                    let _ = hostcalls::add_map_value(map, name, plan::HEADER_VALUE);
                }
            }
            Op::SetMap => {
                // Read once (also at n = 0, so the slope is the writes alone).
                let current = hostcalls::get_map(map).unwrap_or_default();
                let written = ["x-probe-w0", "x-probe-w1", "x-probe-w2", "x-probe-w3"];
                let mut pairs: Vec<(&str, &str)> = current
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                pairs.extend(
                    written
                        .iter()
                        .take(plan::SET_MAP_WRITES)
                        .map(|k| (*k, plan::HEADER_VALUE)),
                );
                for _ in 0..n {
                    let _ = hostcalls::set_map(map, pairs.clone());
                }
            }
            Op::GetSharedData => {
                for _ in 0..n {
                    let _ = hostcalls::get_shared_data(plan::SHARED_KEY);
                }
            }
            Op::SetSharedData => {
                for _ in 0..n {
                    let _ = hostcalls::set_shared_data(plan::SHARED_KEY, Some(&s.value), None);
                }
            }
            Op::SharedUpdate => {
                for _ in 0..n {
                    let cas = hostcalls::get_shared_data(plan::SHARED_KEY)
                        .ok()
                        .and_then(|(_, cas)| cas);
                    let _ = hostcalls::set_shared_data(plan::SHARED_KEY, Some(&s.value), cas);
                }
            }
            Op::IncrementMetric => {
                for _ in 0..n {
                    let _ = hostcalls::increment_metric(s.counter, 1);
                }
            }
            Op::RecordMetric => {
                for i in 0..n {
                    let _ = hostcalls::record_metric(s.gauge, u64::from(i));
                }
            }
            Op::GetCurrentTime => {
                for _ in 0..n {
                    let _ = hostcalls::get_current_time();
                }
            }
            Op::RandomGet => {
                // What the suite fetches: one refill of its pool of random bytes.
                let mut id = [0u8; mesh_kit::host::RANDOM_POOL];
                for _ in 0..n {
                    let _ = getrandom::fill(&mut id);
                }
            }
            Op::SendLocalResponse => {
                if n > 0 {
                    let _ = hostcalls::send_http_response(
                        200,
                        vec![("content-type", "text/plain"), ("x-mesh-rejected-by", NAME)],
                        Some(b"ok\n"),
                    );
                    return Action::Pause;
                }
            }
        }
        Action::Continue
    }

    /// `suite_in_vm` on request headers: the real request's headers and route once, then the
    /// suite's request path `n` times over the in-memory host.
    fn in_vm_request(&mut self) {
        let Some((root, host)) = &self.shared.in_vm else {
            return;
        };
        let headers = hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default();
        let route = Proxy
            .property(Property::RouteName)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        host.begin_request(&route, headers);
        for _ in 0..self.shared.plan.n {
            let mut request = root.new_request();
            // A rejection would answer locally in Envoy; here it is only the suite's work.
            let _ = request.request_headers();
            self.held.push(request);
        }
    }

    fn in_vm_phase(&mut self, phase: Phase, trailers: bool) {
        let Some((_, host)) = &self.shared.in_vm else {
            return;
        };
        host.set_phase(phase);
        for request in &mut self.held {
            match (phase, trailers) {
                (_, true) => request.response_trailers(),
                (Phase::Response, _) => request.response_headers(),
                (Phase::Log, _) => request.log(),
                (Phase::Request, _) => {}
            }
        }
    }

    /// `suite_counted` on request headers: a report, a reset, or one request of the suite
    /// configuration `x-probe-stages` names.
    fn counted_request(&mut self) -> Action {
        let shared = Rc::clone(&self.shared);
        let header = |name: &str| {
            hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
                .ok()
                .flatten()
        };
        if header(REPORT_HEADER).is_some() {
            let reports: Vec<serde_json::Value> =
                shared.counted.iter().map(|c| c.host.report()).collect();
            let body = serde_json::json!({ "suites": reports }).to_string();
            let _ = hostcalls::send_http_response(
                200,
                vec![("content-type", "application/json")],
                Some(body.as_bytes()),
            );
            return Action::Pause;
        }
        if header(RESET_HEADER).is_some() {
            for c in &shared.counted {
                c.host.reset();
            }
            let _ = hostcalls::send_http_response(200, vec![], Some(b"reset\n"));
            return Action::Pause;
        }
        let index = header(STAGES_HEADER)
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let Some(suite) = shared.counted.get(index) else {
            let _ = hostcalls::send_http_response(400, vec![], Some(b"no such suite\n"));
            return Action::Pause;
        };
        self.counted = Some(index);
        suite.host.set_phase(CallPhase::Of(Phase::Request));
        let mut request = suite.root.new_request();
        let allowed = request.request_headers();
        self.held.push(request);
        if allowed {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn counted_phase(&mut self, phase: CallPhase) {
        let Some(suite) = self.counted.and_then(|i| self.shared.counted.get(i)) else {
            return;
        };
        suite.host.set_phase(phase);
        for request in &mut self.held {
            match phase {
                CallPhase::Of(Phase::Response) => request.response_headers(),
                CallPhase::Trailers => request.response_trailers(),
                CallPhase::Of(Phase::Log) => request.log(),
                _ => {}
            }
        }
        if phase == CallPhase::Of(Phase::Log) {
            suite.host.requests.set(suite.host.requests.get() + 1);
        }
    }
}

impl Probe {
    /// `call_mix` on request headers: the route's trace replayed `n` times, or (until it is
    /// recorded) the suite itself, the request after [`MIX_WARMUP`] recorded.
    fn mix_request(&mut self) -> Action {
        let shared = Rc::clone(&self.shared);
        let Some(mix) = &shared.mix else {
            return Action::Continue;
        };
        let route = Proxy
            .property(Property::RouteName)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let found = mix
            .traces
            .borrow()
            .iter()
            .find(|(r, _)| *r == route)
            .map(|(_, t)| Rc::clone(t));
        if let Some(t) = found {
            trace::replay(&t, CallPhase::Of(Phase::Request), shared.plan.n, &Proxy);
            self.mixing = Mixing::Replay(t);
            return Action::Continue;
        }
        let seen = {
            let mut seen = mix.seen.borrow_mut();
            match seen.iter_mut().find(|(r, _)| *r == route) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    seen.push((route.clone(), 1));
                    1
                }
            }
        };
        let record = seen == MIX_WARMUP + 1;
        if record {
            mix.host.arm();
        }
        mix.host.set_phase(CallPhase::Of(Phase::Request));
        let mut request = mix.root.new_request();
        let allowed = request.request_headers();
        mix.host.pause();
        self.held.push(request);
        self.mixing = Mixing::Suite(record, route);
        if allowed {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn mix_phase(&mut self, phase: CallPhase) {
        let shared = Rc::clone(&self.shared);
        let Some(mix) = &shared.mix else {
            return;
        };
        match &self.mixing {
            Mixing::Idle => {}
            Mixing::Replay(t) => trace::replay(t, phase, shared.plan.n, &Proxy),
            Mixing::Suite(record, route) => {
                if *record {
                    mix.host.resume();
                }
                mix.host.set_phase(phase);
                for request in &mut self.held {
                    match phase {
                        CallPhase::Of(Phase::Response) => request.response_headers(),
                        CallPhase::Trailers => request.response_trailers(),
                        CallPhase::Of(Phase::Log) => request.log(),
                        _ => {}
                    }
                }
                mix.host.pause();
                if *record && phase == CallPhase::Of(Phase::Log) {
                    let t = Rc::new(mix.host.take());
                    mix.traces.borrow_mut().push((route.clone(), t));
                }
            }
        }
    }
}

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match &self.shared.plan.op {
            Op::SuiteInVm(_) => {
                self.in_vm_request();
                Action::Continue
            }
            Op::SuiteCounted(_) => self.counted_request(),
            Op::CallMix(_) => self.mix_request(),
            _ => self.perform(Phase::Request),
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match &self.shared.plan.op {
            Op::SuiteInVm(_) => self.in_vm_phase(Phase::Response, false),
            Op::SuiteCounted(_) => self.counted_phase(CallPhase::Of(Phase::Response)),
            Op::CallMix(_) => self.mix_phase(CallPhase::Of(Phase::Response)),
            _ => {
                self.perform(Phase::Response);
            }
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        match &self.shared.plan.op {
            Op::SuiteInVm(_) => self.in_vm_phase(Phase::Response, true),
            Op::SuiteCounted(_) => self.counted_phase(CallPhase::Trailers),
            Op::CallMix(_) => self.mix_phase(CallPhase::Trailers),
            _ => {}
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        match &self.shared.plan.op {
            Op::SuiteInVm(_) => self.in_vm_phase(Phase::Log, false),
            Op::SuiteCounted(_) => self.counted_phase(CallPhase::Of(Phase::Log)),
            Op::CallMix(_) => self.mix_phase(CallPhase::Of(Phase::Log)),
            _ => {
                self.perform(Phase::Log);
            }
        }
    }
}
