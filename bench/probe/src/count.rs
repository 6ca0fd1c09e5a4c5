//! The host of `suite_counted`: the real host, counting every call the suite makes through it,
//! by phase and by the proxy-wasm call it becomes (`request get_property xds.route_name`,
//! `log get_shared_data`, …). The counts are what the profile prices with the measured cost of
//! each call.

use crate::plan::Phase;
use mesh_kit::host::{CasError, Host, MetricKind, MetricName, Property};
use mesh_kit::reply::Rendered;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The phase of a request a call is counted in: the probe's phases and the trailers hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallPhase {
    Configure,
    Of(Phase),
    Trailers,
}

impl CallPhase {
    pub fn name(self) -> &'static str {
        match self {
            CallPhase::Configure => "configure",
            CallPhase::Of(p) => p.name(),
            CallPhase::Trailers => "trailers",
        }
    }
}

/// `inner` with every call counted.
pub struct Counting<H: Host> {
    inner: H,
    phase: Cell<CallPhase>,
    calls: RefCell<BTreeMap<String, u64>>,
    /// Requests whose `on_log` ran since the last [`Counting::reset`].
    pub requests: Cell<u64>,
}

impl<H: Host> Counting<H> {
    pub fn new(inner: H) -> Self {
        Counting {
            inner,
            phase: Cell::new(CallPhase::Configure),
            calls: RefCell::new(BTreeMap::new()),
            requests: Cell::new(0),
        }
    }

    pub fn set_phase(&self, phase: CallPhase) {
        self.phase.set(phase);
    }

    fn count(&self, call: &str) {
        let key = format!("{} {call}", self.phase.get().name());
        *self.calls.borrow_mut().entry(key).or_default() += 1;
    }

    /// Forgets the counts (after warm-up).
    pub fn reset(&self) {
        self.calls.borrow_mut().clear();
        self.requests.set(0);
    }

    /// `{"requests": 4, "calls": {"request get_map request_headers": 4, …}}`
    pub fn report(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.requests.get(),
            "calls": *self.calls.borrow(),
        })
    }
}

impl<H: Host> Host for Counting<H> {
    fn now(&self) -> SystemTime {
        self.count("get_current_time");
        self.inner.now()
    }
    fn random(&self, out: &mut [u8]) {
        self.count("random_get");
        self.inner.random(out);
    }
    fn property(&self, p: Property) -> Option<Vec<u8>> {
        self.count(&format!("get_property {}", p.path().join(".")));
        self.inner.property(p)
    }
    fn route_config(&self, key: &str) -> Result<Option<serde_json::Value>, String> {
        self.count("get_property xds.route_metadata");
        self.inner.route_config(key)
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.count("get_map request_headers");
        self.inner.request_headers()
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.count(match value {
            Some(_) => "set_map_value request_headers",
            None => "remove_map_value request_headers",
        });
        self.inner.set_request_header(name, value);
    }
    fn add_request_header(&self, name: &str, value: &str) {
        self.count("add_map_value request_headers");
        self.inner.add_request_header(name, value);
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.count("get_map_value response_headers");
        self.inner.response_header(name)
    }
    fn set_response_header(&self, name: &str, value: Option<&str>) {
        self.count(match value {
            Some(_) => "set_map_value response_headers",
            None => "remove_map_value response_headers",
        });
        self.inner.set_response_header(name, value);
    }
    fn response_trailer(&self, name: &str) -> Option<String> {
        self.count("get_map_value response_trailers");
        self.inner.response_trailer(name)
    }
    fn set_response_trailer(&self, name: &str, value: Option<&str>) {
        self.count("set_map_value response_trailers");
        self.inner.set_response_trailer(name, value);
    }
    fn send_reply(&self, reply: &Rendered) {
        self.count("send_local_response");
        self.inner.send_reply(reply);
    }
    fn define_metric(&self, kind: MetricKind, name: &MetricName<'_>) -> Option<u32> {
        self.count("define_metric");
        self.inner.define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, delta: i64) {
        self.count("increment_metric");
        self.inner.increment_metric(id, delta);
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.count("record_metric");
        self.inner.record_metric(id, value);
    }
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<u32> {
        self.count("dispatch_http_call");
        self.inner.http_call(cluster, headers, body, timeout)
    }
    fn http_call_status(&self) -> Option<u32> {
        self.count("get_map_value http_call_response_headers");
        self.inner.http_call_status()
    }
    fn set_tick_period(&self, period: Duration) {
        self.count("set_tick_period");
        self.inner.set_tick_period(period);
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.count("get_shared_data");
        self.inner.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError> {
        self.count("set_shared_data");
        self.inner.shared_set(key, value, cas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_kit::testing::TestHost;

    #[test]
    fn calls_are_counted_by_phase_and_proxy_wasm_call() {
        let host = Counting::new(TestHost::default());
        host.set_phase(CallPhase::Of(Phase::Request));
        host.request_headers();
        host.property(Property::RouteName);
        host.property(Property::RouteName);
        host.set_request_header("a", Some("1"));
        host.set_request_header("a", None);
        host.set_phase(CallPhase::Of(Phase::Log));
        let (_, cas) = host.shared_get("k");
        let _ = host.shared_set("k", b"v", cas);
        host.requests.set(1);
        let r = host.report();
        assert_eq!(r["requests"], 1);
        let calls = r["calls"].as_object().unwrap();
        assert_eq!(calls["request get_map request_headers"], 1);
        assert_eq!(calls["request get_property xds.route_name"], 2);
        assert_eq!(calls["request set_map_value request_headers"], 1);
        assert_eq!(calls["request remove_map_value request_headers"], 1);
        assert_eq!(calls["log get_shared_data"], 1);
        assert_eq!(calls["log set_shared_data"], 1);
        host.reset();
        assert_eq!(host.report()["calls"], serde_json::json!({}));
    }
}
