//! `call_mix`: the suite's host calls without the suite. One steady-state request of the suite is
//! run over [`Recording`], which passes every call to the real host and writes it down with its
//! arguments; afterwards the probe replays that trace ([`replay`]) against the real host, phase
//! by phase, `n` times per request. Measured at `n = 1` it is what the suite's calls cost in the
//! suite's order and mix, once per request, as in the suite; compared with the sum of the
//! per-call slopes it says whether calls measured in a loop of one kind price them right.

use crate::count::CallPhase;
use mesh_kit::host::{CasError, Host, MetricKind, MetricName, Property};
use mesh_kit::reply::Rendered;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// One host call with its arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    Now,
    Random(usize),
    Property(Property),
    RequestHeaders,
    SetRequestHeader(String, Option<String>),
    AddRequestHeader(String, String),
    ResponseHeader(String),
    SetResponseHeader(String, Option<String>),
    ResponseTrailer(String),
    SetResponseTrailer(String, Option<String>),
    IncrementMetric(u32, i64),
    RecordMetric(u32, u64),
    SharedGet(String),
    /// A write; `true` when it carried a CAS token (replayed with the token just read).
    SharedSet(String, Vec<u8>, bool),
}

/// `inner`, writing every call down while armed.
pub struct Recording<H: Host> {
    inner: H,
    phase: Cell<CallPhase>,
    armed: Cell<bool>,
    trace: RefCell<Vec<(CallPhase, Call)>>,
}

impl<H: Host> Recording<H> {
    pub fn new(inner: H) -> Self {
        Recording {
            inner,
            phase: Cell::new(CallPhase::Configure),
            armed: Cell::new(false),
            trace: RefCell::new(Vec::new()),
        }
    }

    pub fn set_phase(&self, phase: CallPhase) {
        self.phase.set(phase);
    }

    /// Starts a new trace and writes down from now on.
    pub fn arm(&self) {
        self.trace.borrow_mut().clear();
        self.armed.set(true);
    }

    /// Writes down again (the recorded request's next hook).
    pub fn resume(&self) {
        self.armed.set(true);
    }

    /// Stops writing down until [`Recording::resume`] (another request's hook runs next).
    pub fn pause(&self) {
        self.armed.set(false);
    }

    /// Stops writing down and hands the trace over.
    pub fn take(&self) -> Vec<(CallPhase, Call)> {
        self.armed.set(false);
        std::mem::take(&mut *self.trace.borrow_mut())
    }

    fn note(&self, call: impl FnOnce() -> Call) {
        if self.armed.get() {
            self.trace.borrow_mut().push((self.phase.get(), call()));
        }
    }
}

fn owned(v: Option<&str>) -> Option<String> {
    v.map(str::to_owned)
}

impl<H: Host> Host for Recording<H> {
    fn now(&self) -> SystemTime {
        self.note(|| Call::Now);
        self.inner.now()
    }
    fn random(&self, out: &mut [u8]) {
        self.note(|| Call::Random(out.len()));
        self.inner.random(out);
    }
    fn route_config(&self, key: &str) -> Result<Option<serde_json::Value>, String> {
        self.inner.route_config(key)
    }
    fn property(&self, p: Property) -> Option<Vec<u8>> {
        self.note(|| Call::Property(p));
        self.inner.property(p)
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.note(|| Call::RequestHeaders);
        self.inner.request_headers()
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.note(|| Call::SetRequestHeader(name.to_owned(), owned(value)));
        self.inner.set_request_header(name, value);
    }
    fn add_request_header(&self, name: &str, value: &str) {
        self.note(|| Call::AddRequestHeader(name.to_owned(), value.to_owned()));
        self.inner.add_request_header(name, value);
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.note(|| Call::ResponseHeader(name.to_owned()));
        self.inner.response_header(name)
    }
    fn set_response_header(&self, name: &str, value: Option<&str>) {
        self.note(|| Call::SetResponseHeader(name.to_owned(), owned(value)));
        self.inner.set_response_header(name, value);
    }
    fn response_trailer(&self, name: &str) -> Option<String> {
        self.note(|| Call::ResponseTrailer(name.to_owned()));
        self.inner.response_trailer(name)
    }
    fn set_response_trailer(&self, name: &str, value: Option<&str>) {
        self.note(|| Call::SetResponseTrailer(name.to_owned(), owned(value)));
        self.inner.set_response_trailer(name, value);
    }
    fn send_reply(&self, reply: &Rendered) {
        self.inner.send_reply(reply);
    }
    fn define_metric(&self, kind: MetricKind, name: &MetricName<'_>) -> Option<u32> {
        self.inner.define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, delta: i64) {
        self.note(|| Call::IncrementMetric(id, delta));
        self.inner.increment_metric(id, delta);
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.note(|| Call::RecordMetric(id, value));
        self.inner.record_metric(id, value);
    }
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<u32> {
        self.inner.http_call(cluster, headers, body, timeout)
    }
    fn http_call_status(&self) -> Option<u32> {
        self.inner.http_call_status()
    }
    fn set_tick_period(&self, period: Duration) {
        self.inner.set_tick_period(period);
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.note(|| Call::SharedGet(key.to_owned()));
        self.inner.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError> {
        self.note(|| Call::SharedSet(key.to_owned(), value.to_vec(), cas.is_some()));
        self.inner.shared_set(key, value, cas)
    }
}

/// Performs the trace's calls of `phase` against `host`, `n` times over. A CAS write uses the
/// token its key's last read returned, so it wins as it did in the suite.
pub fn replay(trace: &[(CallPhase, Call)], phase: CallPhase, n: u32, host: &dyn Host) {
    let mut tokens: BTreeMap<&str, Option<u32>> = BTreeMap::new();
    let mut id = [0u8; mesh_kit::host::RANDOM_POOL];
    for _ in 0..n {
        for (p, call) in trace {
            if *p != phase {
                continue;
            }
            match call {
                Call::Now => {
                    let _ = host.now();
                }
                Call::Random(len) => {
                    if let Some(out) = id.get_mut(..*len) {
                        host.random(out);
                    }
                }
                Call::Property(p) => {
                    let _ = host.property(*p);
                }
                Call::RequestHeaders => {
                    let _ = host.request_headers();
                }
                Call::SetRequestHeader(k, v) => host.set_request_header(k, v.as_deref()),
                Call::AddRequestHeader(k, v) => host.add_request_header(k, v),
                Call::ResponseHeader(k) => {
                    let _ = host.response_header(k);
                }
                Call::SetResponseHeader(k, v) => host.set_response_header(k, v.as_deref()),
                Call::ResponseTrailer(k) => {
                    let _ = host.response_trailer(k);
                }
                Call::SetResponseTrailer(k, v) => host.set_response_trailer(k, v.as_deref()),
                Call::IncrementMetric(m, d) => host.increment_metric(*m, *d),
                Call::RecordMetric(m, v) => host.record_metric(*m, *v),
                Call::SharedGet(k) => {
                    let (_, cas) = host.shared_get(k);
                    tokens.insert(k.as_str(), cas);
                }
                Call::SharedSet(k, v, with_cas) => {
                    let cas = if *with_cas {
                        tokens.get(k.as_str()).copied().flatten()
                    } else {
                        None
                    };
                    let _ = host.shared_set(k, v, cas);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::count::Counting;
    use crate::plan::Phase;
    use mesh_kit::testing::TestHost;

    #[test]
    fn a_recorded_request_replays_the_same_calls_in_each_phase() {
        let store = TestHost::default();
        store.shared_set("k", b"0", None).unwrap();
        let rec = Recording::new(store);
        rec.set_phase(CallPhase::Of(Phase::Request));
        rec.property(Property::RouteName);
        rec.arm();
        rec.request_headers();
        rec.set_request_header("x-a", Some("1"));
        let (_, cas) = rec.shared_get("k");
        rec.shared_set("k", b"1", cas).unwrap();
        rec.set_phase(CallPhase::Of(Phase::Log));
        rec.property(Property::ResponseCode);
        rec.pause();
        rec.now();
        rec.resume();
        rec.increment_metric(3, 1);
        let trace = rec.take();
        assert_eq!(
            trace.len(),
            6,
            "the calls before arming and while paused are not in the trace"
        );
        rec.now();
        assert_eq!(rec.take().len(), 0, "nothing is written down once taken");

        let counted = Counting::new(TestHost::default());
        counted.shared_set("k", b"0", None).unwrap();
        counted.reset();
        counted.set_phase(CallPhase::Of(Phase::Request));
        replay(&trace, CallPhase::Of(Phase::Request), 2, &counted);
        counted.set_phase(CallPhase::Of(Phase::Log));
        replay(&trace, CallPhase::Of(Phase::Log), 2, &counted);
        let r = counted.report();
        let calls = r["calls"].as_object().unwrap();
        assert_eq!(calls["request get_map request_headers"], 2);
        assert_eq!(calls["request set_map_value request_headers"], 2);
        assert_eq!(calls["request get_shared_data"], 2);
        assert_eq!(calls["request set_shared_data"], 2);
        assert_eq!(calls["log get_property response.code"], 2);
        assert_eq!(calls["log increment_metric"], 2);
        assert_eq!(calls.len(), 6);
    }

    #[test]
    fn a_replayed_cas_write_wins() {
        let store = TestHost::default();
        store.shared_set("k", b"0", None).unwrap();
        let trace = vec![
            (CallPhase::Of(Phase::Request), Call::SharedGet("k".into())),
            (
                CallPhase::Of(Phase::Request),
                Call::SharedSet("k".into(), b"new".to_vec(), true),
            ),
        ];
        let (_, before) = store.shared_get("k");
        replay(&trace, CallPhase::Of(Phase::Request), 3, &store);
        let (value, after) = store.shared_get("k");
        assert_eq!(value, Some(b"new".to_vec()));
        // Each write that wins moves the token by one.
        assert_eq!(after, before.map(|c| c + 3));
    }
}
