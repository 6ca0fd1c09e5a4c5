//! [`TestHost`]: an in-memory [`Host`] for tests, examples, the checker and the fuzz targets.
//!
//! It answers like Envoy does, from what a test sets: request headers, properties, per-route
//! configuration, the clock; shared data has Envoy's compare-and-swap semantics (the token
//! changes on every write) and can be made to conflict; random bytes are deterministic. It
//! records what the stages do (header writes, replies, metrics by name, HTTP calls) and counts
//! every host call by kind, so a test can assert a host-call budget.

use crate::host::{CasError, Host, MetricKind, MetricName, Property};
use crate::reply::Rendered;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

/// An HTTP call a stage made: cluster, headers, body.
pub type HttpCall = (String, Vec<(String, String)>, Vec<u8>);

#[derive(Default)]
pub struct TestHost {
    data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    /// Writes to make fail with a mismatch before succeeding (simulates other workers).
    pub conflicts: Cell<u32>,
    /// The request headers the host serves.
    pub headers: RefCell<Vec<(String, String)>>,
    /// Request-header writes in order: `(name, Some(value))` set, `(name, None)` removed.
    pub header_writes: RefCell<Vec<(String, Option<String>)>>,
    /// The response headers the host serves; writes replace them.
    pub response_headers: RefCell<Vec<(String, String)>>,
    /// The response trailers the host serves; writes replace them.
    pub response_trailers: RefCell<Vec<(String, String)>>,
    properties: RefCell<HashMap<usize, Vec<u8>>>,
    /// The current route's per-route configuration: stage key → its section.
    pub route_configs: RefCell<BTreeMap<String, Value>>,
    /// The clock, µs since the Unix epoch.
    pub now_us: Cell<u64>,
    /// State of the deterministic random source (xorshift64*; 0 starts from a fixed seed).
    pub random_state: Cell<u64>,
    /// Local replies sent.
    pub replies: RefCell<Vec<Rendered>>,
    metric_names: RefCell<Vec<String>>,
    metric_values: RefCell<BTreeMap<String, i64>>,
    /// HTTP calls made.
    pub http_calls: RefCell<Vec<HttpCall>>,
    /// The `:status` served to `http_call_status`.
    pub call_status: Cell<Option<u32>>,
    /// The tick period asked for last.
    pub tick_period: Cell<Option<Duration>>,
    calls: RefCell<BTreeMap<String, u32>>,
}

impl TestHost {
    /// A host serving these request headers.
    pub fn with_headers(headers: &[(&str, &str)]) -> TestHost {
        let host = TestHost::default();
        host.set_headers(headers);
        host
    }

    pub fn set_headers(&self, headers: &[(&str, &str)]) {
        *self.headers.borrow_mut() = pairs(headers);
    }

    pub fn set_property(&self, p: Property, value: &[u8]) {
        self.properties
            .borrow_mut()
            .insert(p.index(), value.to_vec());
    }

    /// An integer property, as Envoy serializes it (8 bytes little-endian).
    pub fn set_int(&self, p: Property, value: u64) {
        self.set_property(p, &value.to_le_bytes());
    }

    pub fn set_text(&self, p: Property, value: &str) {
        self.set_property(p, value.as_bytes());
    }

    pub fn clear_property(&self, p: Property) {
        self.properties.borrow_mut().remove(&p.index());
    }

    /// The value of a metric by its wasm name (`mesh.deadline.rq_total.route=auth`); `None`
    /// when it was never defined.
    pub fn metric(&self, flat_name: &str) -> Option<i64> {
        self.metric_values.borrow().get(flat_name).copied()
    }

    /// Host calls by kind since the last call (`property xds.route_name`, `shared_get`, ...).
    pub fn take_calls(&self) -> BTreeMap<String, u32> {
        std::mem::take(&mut *self.calls.borrow_mut())
    }

    /// The shared-data keys written so far.
    pub fn shared_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.data.borrow().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The request headers as the upstream would receive them: the served ones with the writes
    /// applied (a write replaces every line of its header, a removal removes them all).
    pub fn outgoing(&self) -> Vec<(String, String)> {
        let mut headers = self.headers.borrow().clone();
        for (name, value) in self.header_writes.borrow().iter() {
            headers.retain(|(k, _)| k != name);
            if let Some(v) = value {
                headers.push((name.clone(), v.clone()));
            }
        }
        headers
    }

    fn count(&self, what: &str) {
        *self.calls.borrow_mut().entry(what.to_string()).or_default() += 1;
    }
}

fn pairs(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn set(map: &RefCell<Vec<(String, String)>>, name: &str, value: Option<&str>) {
    let mut m = map.borrow_mut();
    m.retain(|(k, _)| k != name);
    if let Some(v) = value {
        m.push((name.to_string(), v.to_string()));
    }
}

fn get(map: &RefCell<Vec<(String, String)>>, name: &str) -> Option<String> {
    map.borrow()
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

impl Host for TestHost {
    fn now(&self) -> SystemTime {
        self.count("now");
        SystemTime::UNIX_EPOCH + Duration::from_micros(self.now_us.get())
    }

    /// Deterministic bytes (xorshift64*), so tests that draw ids repeat.
    fn random(&self, out: &mut [u8]) {
        self.count("random");
        let mut x = match self.random_state.get() {
            0 => 0x9E37_79B9_7F4A_7C15,
            s => s,
        };
        for chunk in out.chunks_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            for (b, w) in chunk.iter_mut().zip(word) {
                *b = w;
            }
        }
        self.random_state.set(x);
    }

    fn property(&self, p: Property) -> Option<Vec<u8>> {
        self.count(&format!("property {}", p.path().join(".")));
        self.properties.borrow().get(&p.index()).cloned()
    }

    fn route_config(&self, key: &str) -> Result<Option<Value>, String> {
        self.count("route_config");
        Ok(self.route_configs.borrow().get(key).cloned())
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        self.count("request_headers");
        self.headers.borrow().clone()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.count("set_request_header");
        self.header_writes
            .borrow_mut()
            .push((name.to_string(), value.map(str::to_string)));
    }

    fn add_request_header(&self, name: &str, value: &str) {
        self.count("add_request_header");
        self.header_writes
            .borrow_mut()
            .push((name.to_string(), Some(value.to_string())));
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.count("response_header");
        get(&self.response_headers, name)
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) {
        self.count("set_response_header");
        set(&self.response_headers, name, value);
    }

    fn response_trailer(&self, name: &str) -> Option<String> {
        self.count("response_trailer");
        get(&self.response_trailers, name)
    }

    fn set_response_trailer(&self, name: &str, value: Option<&str>) {
        self.count("set_response_trailer");
        set(&self.response_trailers, name, value);
    }

    fn send_reply(&self, reply: &Rendered) {
        self.count("send_reply");
        self.replies.borrow_mut().push(reply.clone());
    }

    fn define_metric(&self, _: MetricKind, name: &MetricName<'_>) -> Option<u32> {
        self.count("define_metric");
        let flat = name.flat();
        self.metric_values
            .borrow_mut()
            .entry(flat.clone())
            .or_insert(0);
        let mut names = self.metric_names.borrow_mut();
        names.push(flat);
        u32::try_from(names.len() - 1).ok()
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        self.count("increment_metric");
        if let Some(name) = self.metric_names.borrow().get(id as usize) {
            *self
                .metric_values
                .borrow_mut()
                .entry(name.clone())
                .or_default() += delta;
        }
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.count("record_metric");
        if let Some(name) = self.metric_names.borrow().get(id as usize) {
            self.metric_values
                .borrow_mut()
                .insert(name.clone(), i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        _: Duration,
    ) -> Option<u32> {
        self.count("http_call");
        let mut calls = self.http_calls.borrow_mut();
        calls.push((cluster.to_string(), pairs(headers), body.to_vec()));
        u32::try_from(calls.len()).ok()
    }

    fn http_call_status(&self) -> Option<u32> {
        self.count("http_call_status");
        self.call_status.get()
    }

    fn set_tick_period(&self, period: Duration) {
        self.tick_period.set(Some(period));
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.count("shared_get");
        match self.data.borrow().get(key) {
            Some((v, cas)) => (Some(v.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError> {
        self.count("shared_set");
        let mut data = self.data.borrow_mut();
        let current = data.get(key).map(|(_, c)| *c);
        if let (Some(want), Some(have)) = (cas, current) {
            if want != have {
                return Err(CasError::Mismatch);
            }
        }
        let conflicts = self.conflicts.get();
        if conflicts > 0 {
            self.conflicts.set(conflicts - 1);
            // Another worker wrote: bump the token, keep the value.
            if let Some(entry) = data.get_mut(key) {
                entry.1 = entry.1.wrapping_add(1);
            }
            return Err(CasError::Mismatch);
        }
        let next = current.unwrap_or(0).wrapping_add(1);
        data.insert(key.to_string(), (value.to_vec(), next));
        Ok(())
    }
}
