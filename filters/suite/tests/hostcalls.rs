//! How many hostcalls one request costs the suite with every stage configured: a request driven
//! through the real adapter (`Root` → `Request`) over a host that answers like Envoy for an
//! allowed mTLS caller on a named route, and counts every call. In Envoy each hostcall crosses the
//! wasm boundary (the dominant per-request cost, see BENCHMARKS.md), so the counts are the budget
//! to keep, and the bounds below fail a change that adds calls to the request path.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_kit::host::{CasError, Host, MetricKind, MetricName, Property};
use mesh_kit::reply::Rendered;
use mesh_kit::shared::MemoryStore;
use mesh_kit::stage::Root;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

const PEER: &str = "spiffe://mesh.local/ns/default/sa/learner";
const DIGEST: &str = "aa11";

#[derive(Default)]
struct Counting {
    store: MemoryStore,
    calls: RefCell<BTreeMap<String, u32>>,
}

impl Counting {
    fn count(&self, what: impl Into<String>) {
        *self.calls.borrow_mut().entry(what.into()).or_default() += 1;
    }
    fn take(&self) -> BTreeMap<String, u32> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }
}

impl Host for Counting {
    fn now(&self) -> SystemTime {
        self.count("now");
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }
    fn random(&self, out: &mut [u8]) {
        // WASI random_get: a host call like the others.
        self.count("random");
        self.store.random(out);
    }
    fn property(&self, p: Property) -> Option<Vec<u8>> {
        self.count(format!("property {}", p.path().join(".")));
        match p {
            Property::RouteName => Some(b"orders".to_vec()),
            Property::ClusterName => Some(b"svc".to_vec()),
            Property::Mtls => Some(vec![1]),
            Property::PeerDigest => Some(DIGEST.into()),
            Property::PeerUriSan => Some(PEER.into()),
            Property::RequestTime => Some(1_800_000_000_000_000_000u64.to_le_bytes().to_vec()),
            Property::ResponseCode => Some(200u64.to_le_bytes().to_vec()),
            Property::ResponseFlags => Some(0u64.to_le_bytes().to_vec()),
            Property::ResponseCodeDetails => Some(b"via_upstream".to_vec()),
            Property::AttemptCount => Some(1u64.to_le_bytes().to_vec()),
            Property::ResponseGrpcStatus => None,
        }
    }
    fn route_config(&self, _: &str) -> Result<Option<serde_json::Value>, String> {
        // As the wasm host does: one read of xds.route_metadata (here: none).
        self.count("property xds.route_metadata");
        Ok(None)
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.count("request_headers");
        [
            (":method", "GET"),
            (":path", "/orders/1"),
            (":authority", "svc"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "x-forwarded-client-cert",
                &format!("By=spiffe://mesh.local/ns/default/sa/envoy;Hash={DIGEST};URI={PEER}"),
            ),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
    fn set_request_header(&self, _: &str, _: Option<&str>) {
        self.count("set_request_header");
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.count("response_header");
        (name == ":status").then(|| "200".to_string())
    }
    fn set_response_header(&self, _: &str, _: Option<&str>) {
        self.count("set_response_header");
    }
    fn response_trailer(&self, _: &str) -> Option<String> {
        self.count("response_trailer");
        None
    }
    fn set_response_trailer(&self, _: &str, _: Option<&str>) {
        self.count("set_response_trailer");
    }
    fn send_reply(&self, _: &Rendered) {
        self.count("send_reply");
    }
    fn define_metric(&self, _: MetricKind, name: &MetricName<'_>) -> Option<u32> {
        self.count("define_metric");
        Some(u32::try_from(name.flat().len()).unwrap())
    }
    fn increment_metric(&self, _: u32, _: i64) {
        self.count("increment_metric");
    }
    fn record_metric(&self, _: u32, _: u64) {
        self.count("record_metric");
    }
    fn http_call(&self, _: &str, _: &[(&str, &str)], _: &[u8], _: Duration) -> Option<u32> {
        self.count("http_call");
        None
    }
    fn http_call_status(&self) -> Option<u32> {
        None
    }
    fn set_tick_period(&self, _: Duration) {}
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.count("shared_get");
        self.store.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError> {
        self.count("shared_set");
        self.store.shared_set(key, value, cas)
    }
}

const EVERYTHING: &str = r#"{
    "spiffe_identity": {"allow": ["spiffe://mesh.local/ns/default/sa/*"]},
    "circuit_breaker": {},
    "deadline": {"timeout": "5s"},
    "retry_budget": {},
    "trace_propagation": {"inject": ["w3c", "b3"]}
}"#;

/// Hostcalls of one request after warm-up (route config and stats cached), by phase.
fn one_request(config: &str) -> [(&'static str, BTreeMap<String, u32>); 3] {
    let host = Rc::new(Counting::default());
    let mut root = Root::new("mesh", mesh_filters::factory, host.clone());
    root.configure(config.as_bytes()).unwrap();
    for _ in 0..3 {
        let mut r = root.new_request();
        assert!(r.request_headers(), "the warm-up request is allowed");
        r.response_headers();
        r.log();
    }
    host.take();
    let mut r = root.new_request();
    assert!(r.request_headers());
    let request = host.take();
    r.response_headers();
    let response = host.take();
    r.log();
    let log = host.take();
    [("request", request), ("response", response), ("log", log)]
}

fn total(phase: &BTreeMap<String, u32>) -> u32 {
    phase.values().sum()
}

#[test]
fn one_request_through_every_stage_stays_within_its_hostcall_budget() {
    let phases = one_request(EVERYTHING);
    for (name, calls) in &phases {
        eprintln!("{name}: {} hostcalls {calls:?}", total(calls));
    }
    let [(_, request), (_, response), (_, log)] = &phases;
    // Read once for all five stages.
    assert_eq!(request.get("request_headers"), Some(&1));
    assert_eq!(request.get("property xds.route_name"), Some(&1));
    assert_eq!(
        request.get("property xds.route_metadata"),
        None,
        "cached per route"
    );
    // Bounds measured with this test (38 hostcalls before the per-phase cache of the clock and
    // properties, 33 after; 34 once the span id's WASI random_get was counted like the others);
    // raise them only with a reason.
    assert!(total(request) <= 24, "request path: {request:?}");
    assert!(total(response) <= 1, "response headers: {response:?}");
    assert!(total(log) <= 9, "end of stream: {log:?}");
}

#[test]
fn a_property_two_stages_need_is_read_once_per_phase() {
    let [(_, request), _, (_, log)] = one_request(EVERYTHING);
    for (calls, phase) in [(&request, "request"), (&log, "log")] {
        for (what, n) in calls.iter() {
            if what.starts_with("property ") {
                assert_eq!(*n, 1, "{phase}: {what} read {n} times");
            }
        }
    }
}
