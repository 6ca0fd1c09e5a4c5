//! The in-memory host of `suite_in_vm`: answers the suite like Envoy does, without crossing the
//! wasm boundary, so that running the suite's request path `n` times per request costs only the
//! suite's own Rust code (as V8 runs it) and this host's bookkeeping.
//!
//! It is the counting host of `filters/suite/tests/hostcalls.rs` made to answer with Envoy's own
//! values: every property and response header the suite asks for is read from the real host the
//! first time (per route and phase) and replayed from memory afterwards; the request headers are
//! the real request's, handed in once per request by the probe ([`Replay::begin_request`]).
//! Shared data lives in a [`TestHost`] (Envoy's CAS semantics); the clock starts at the real
//! time and advances 1 µs per read; randomness is the store's deterministic generator; writes
//! (headers, replies, metrics) go nowhere.
//!
//! What it adds to the suite's own cost, so is in `suite_in_vm`'s slope: a linear search of the
//! recorded answers per property read and a copy of each answer, which the real host call also
//! makes (the SDK copies what the host returns into a fresh buffer), so one small allocation per
//! call is counted twice.

use crate::plan::Phase;
use mesh_kit::host::{CasError, Host, MetricKind, MetricName, Property};
use mesh_kit::reply::Rendered;
use mesh_kit::testing::TestHost;
use std::cell::{Cell, RefCell};
use std::time::{Duration, SystemTime};

/// Where real answers come from the first time (the real host in Envoy; a fixture in tests).
pub trait Source {
    fn property(&self, p: Property) -> Option<Vec<u8>>;
    fn route_config(&self, key: &str) -> Result<Option<serde_json::Value>, String>;
    fn response_header(&self, name: &str) -> Option<String>;
    fn response_trailer(&self, name: &str) -> Option<String>;
    fn now(&self) -> SystemTime;
}

/// One recorded answer: a property (`hdr` false) or a response header or trailer.
struct Recorded {
    route: String,
    phase: Phase,
    what: What,
    key: Vec<String>,
    value: Option<Vec<u8>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum What {
    Property,
    ResponseHeader,
    ResponseTrailer,
}

pub struct Replay<S: Source> {
    source: S,
    store: TestHost,
    phase: Cell<Phase>,
    route: RefCell<String>,
    headers: RefCell<Vec<(String, String)>>,
    recorded: RefCell<Vec<Recorded>>,
    clock: Cell<Option<SystemTime>>,
    next_metric: Cell<u32>,
    /// Answers read from the source so far (misses of the replay).
    pub misses: Cell<u64>,
}

impl<S: Source> Replay<S> {
    pub fn new(source: S) -> Self {
        Replay {
            source,
            store: TestHost::default(),
            phase: Cell::new(Phase::Request),
            route: RefCell::new(String::new()),
            headers: RefCell::new(Vec::new()),
            recorded: RefCell::new(Vec::new()),
            clock: Cell::new(None),
            next_metric: Cell::new(1),
            misses: Cell::new(0),
        }
    }

    /// A new request: its route name and request headers, as the real host gave them.
    pub fn begin_request(&self, route: &str, headers: Vec<(String, String)>) {
        if *self.route.borrow() != route {
            *self.route.borrow_mut() = route.to_owned();
        }
        *self.headers.borrow_mut() = headers;
        self.phase.set(Phase::Request);
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.set(phase);
    }

    fn lookup(
        &self,
        what: What,
        key: &[&str],
        read: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        let route = self.route.borrow();
        let phase = self.phase.get();
        if let Some(r) = self.recorded.borrow().iter().find(|r| {
            r.what == what
                && r.phase == phase
                && r.key.len() == key.len()
                && r.key.iter().zip(key).all(|(a, b)| a == b)
                && *r.route == **route
        }) {
            return r.value.clone();
        }
        let value = read();
        self.misses.set(self.misses.get() + 1);
        self.recorded.borrow_mut().push(Recorded {
            route: route.clone(),
            phase,
            what,
            key: key.iter().map(|s| (*s).to_owned()).collect(),
            value: value.clone(),
        });
        value
    }
}

fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

impl<S: Source> Host for Replay<S> {
    fn now(&self) -> SystemTime {
        let t = match self.clock.get() {
            Some(t) => t + Duration::from_micros(1),
            None => self.source.now(),
        };
        self.clock.set(Some(t));
        t
    }
    fn random(&self, out: &mut [u8]) {
        self.store.random(out);
    }
    fn property(&self, p: Property) -> Option<Vec<u8>> {
        self.lookup(What::Property, p.path(), || self.source.property(p))
    }
    fn route_config(&self, key: &str) -> Result<Option<serde_json::Value>, String> {
        self.source.route_config(key)
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.headers.borrow().clone()
    }
    fn set_request_header(&self, _: &str, _: Option<&str>) {}
    fn response_header(&self, name: &str) -> Option<String> {
        text(self.lookup(What::ResponseHeader, &[name], || {
            self.source.response_header(name).map(String::into_bytes)
        }))
    }
    fn set_response_header(&self, _: &str, _: Option<&str>) {}
    fn response_trailer(&self, name: &str) -> Option<String> {
        text(self.lookup(What::ResponseTrailer, &[name], || {
            self.source.response_trailer(name).map(String::into_bytes)
        }))
    }
    fn set_response_trailer(&self, _: &str, _: Option<&str>) {}
    fn send_reply(&self, _: &Rendered) {}
    fn define_metric(&self, _: MetricKind, _: &MetricName<'_>) -> Option<u32> {
        let id = self.next_metric.get();
        self.next_metric.set(id.wrapping_add(1));
        Some(id)
    }
    fn increment_metric(&self, _: u32, _: i64) {}
    fn record_metric(&self, _: u32, _: u64) {}
    fn http_call(&self, _: &str, _: &[(&str, &str)], _: &[u8], _: Duration) -> Option<u32> {
        None
    }
    fn http_call_status(&self) -> Option<u32> {
        None
    }
    fn set_tick_period(&self, _: Duration) {}
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.store.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError> {
        self.store.shared_set(key, value, cas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[derive(Default)]
    struct Fixture {
        reads: RefCell<Vec<String>>,
    }

    impl Source for &Fixture {
        fn property(&self, p: Property) -> Option<Vec<u8>> {
            self.reads.borrow_mut().push(p.path().join("."));
            (p == Property::RouteName).then(|| b"direct".to_vec())
        }
        fn route_config(&self, _: &str) -> Result<Option<serde_json::Value>, String> {
            Ok(None)
        }
        fn response_header(&self, name: &str) -> Option<String> {
            self.reads.borrow_mut().push(name.to_owned());
            (name == ":status").then(|| "200".to_owned())
        }
        fn response_trailer(&self, _: &str) -> Option<String> {
            None
        }
        fn now(&self) -> SystemTime {
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
        }
    }

    #[test]
    fn answers_are_read_once_per_route_and_phase_then_replayed() {
        let f = Fixture::default();
        let host = Replay::new(&f);
        host.begin_request("direct", vec![("te".to_owned(), "trailers".to_owned())]);
        for _ in 0..3 {
            assert_eq!(host.property(Property::RouteName), Some(b"direct".to_vec()));
            assert_eq!(host.property(Property::ClusterName), None);
        }
        host.set_phase(Phase::Log);
        assert_eq!(host.response_header(":status").as_deref(), Some("200"));
        assert_eq!(host.response_header(":status").as_deref(), Some("200"));
        host.begin_request("proxied", vec![]);
        host.property(Property::RouteName);
        assert_eq!(
            *f.reads.borrow(),
            [
                "xds.route_name",
                "xds.cluster_name",
                ":status",
                "xds.route_name"
            ]
        );
        assert_eq!(host.misses.get(), 4);
        assert!(host.request_headers().is_empty());
    }

    #[test]
    fn the_clock_starts_at_the_real_time_and_moves_forward() {
        let f = Fixture::default();
        let host = Replay::new(&f);
        let a = host.now();
        let b = host.now();
        assert_eq!(a, (&f).now());
        assert_eq!(b.duration_since(a).ok(), Some(Duration::from_micros(1)));
    }

    #[test]
    fn shared_data_keeps_the_cas_semantics() {
        let f = Fixture::default();
        let host = Replay::new(&f);
        host.shared_set("k", &[1], None).unwrap();
        let (v, cas) = host.shared_get("k");
        assert_eq!(v, Some(vec![1]));
        host.shared_set("k", &[2], cas).unwrap();
        assert_eq!(host.shared_set("k", &[3], cas), Err(CasError::Mismatch));
    }
}
