//! A host for the unit tests: the kit's in-memory shared data, with the properties, headers,
//! clock and metrics a test sets, recording what the stage does and counting host calls.

use mesh_kit::host::{CasError, Host, MetricKind, MetricName, Property};
use mesh_kit::reply::Rendered;
use mesh_kit::shared::MemoryStore;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

#[derive(Default)]
pub struct Store {
    pub memory: MemoryStore,
    /// Properties served, by dotted path (`connection.mtls`).
    pub properties: RefCell<BTreeMap<String, Vec<u8>>>,
    pub headers: RefCell<Vec<(String, String)>>,
    /// µs since the epoch.
    pub now_us: Cell<u64>,
    /// Every shared-data key written.
    pub keys: RefCell<BTreeSet<String>>,
    pub reads: Cell<u32>,
    pub writes: Cell<u32>,
    pub replies: RefCell<Vec<Rendered>>,
    pub response_headers: RefCell<Vec<(String, String)>>,
    /// Metric names by id, and their values.
    pub metric_names: RefCell<Vec<String>>,
    pub metrics: RefCell<BTreeMap<String, i64>>,
    /// Host calls by name.
    pub calls: RefCell<BTreeMap<&'static str, u32>>,
}

impl Store {
    fn count(&self, what: &'static str) {
        *self.calls.borrow_mut().entry(what).or_default() += 1;
    }

    /// (shared-data reads, writes) since the last call.
    pub fn take_shared(&self) -> (u32, u32) {
        (self.reads.replace(0), self.writes.replace(0))
    }

    pub fn take_calls(&self) -> BTreeMap<&'static str, u32> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }

    pub fn set_property(&self, path: &str, value: &[u8]) {
        self.properties
            .borrow_mut()
            .insert(path.to_string(), value.to_vec());
    }

    pub fn set_headers(&self, headers: &[(&str, &str)]) {
        *self.headers.borrow_mut() = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// The value of `mesh.rate_limit.<stat>.route=<route>`.
    pub fn metric(&self, stat: &str, route: &str) -> i64 {
        let name = format!("mesh.rate_limit.{stat}.route={route}");
        self.metrics.borrow().get(&name).copied().unwrap_or(0)
    }
}

impl Host for Store {
    fn now(&self) -> SystemTime {
        self.count("now");
        SystemTime::UNIX_EPOCH + Duration::from_micros(self.now_us.get())
    }
    fn random(&self, out: &mut [u8]) {
        self.memory.random(out);
    }
    fn property(&self, p: Property) -> Option<Vec<u8>> {
        self.count("property");
        self.properties.borrow().get(&p.path().join(".")).cloned()
    }
    fn route_config(&self, _: &str) -> Result<Option<serde_json::Value>, String> {
        self.count("property");
        Ok(None)
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.count("request_headers");
        self.headers.borrow().clone()
    }
    fn set_request_header(&self, _: &str, _: Option<&str>) {
        self.count("set_request_header");
    }
    fn response_header(&self, _: &str) -> Option<String> {
        self.count("response_header");
        None
    }
    fn set_response_header(&self, name: &str, value: Option<&str>) {
        self.count("set_response_header");
        if let Some(v) = value {
            self.response_headers
                .borrow_mut()
                .push((name.to_string(), v.to_string()));
        }
    }
    fn response_trailer(&self, _: &str) -> Option<String> {
        None
    }
    fn set_response_trailer(&self, _: &str, _: Option<&str>) {}
    fn send_reply(&self, reply: &Rendered) {
        self.count("send_reply");
        self.replies.borrow_mut().push(reply.clone());
    }
    fn define_metric(&self, _: MetricKind, name: &MetricName<'_>) -> Option<u32> {
        self.count("define_metric");
        let mut names = self.metric_names.borrow_mut();
        names.push(name.flat());
        u32::try_from(names.len() - 1).ok()
    }
    fn increment_metric(&self, id: u32, delta: i64) {
        self.count("increment_metric");
        if let Some(name) = self.metric_names.borrow().get(id as usize) {
            *self.metrics.borrow_mut().entry(name.clone()).or_default() += delta;
        }
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.count("record_metric");
        if let Some(name) = self.metric_names.borrow().get(id as usize) {
            self.metrics
                .borrow_mut()
                .insert(name.clone(), i64::try_from(value).unwrap_or(i64::MAX));
        }
    }
    fn http_call(&self, _: &str, _: &[(&str, &str)], _: &[u8], _: Duration) -> Option<u32> {
        None
    }
    fn http_call_status(&self) -> Option<u32> {
        None
    }
    fn set_tick_period(&self, _: Duration) {}
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.count("shared_get");
        self.reads.set(self.reads.get() + 1);
        self.memory.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError> {
        self.count("shared_set");
        self.writes.set(self.writes.get() + 1);
        self.keys.borrow_mut().insert(key.to_string());
        self.memory.shared_set(key, value, cas)
    }
}
