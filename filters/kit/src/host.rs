//! The narrow host trait: the only proxy-wasm calls the stages make, so the stage code can be
//! driven by a fake host in native tests, and by [`Proxy`] (the real hostcalls) in Envoy.

use crate::reply::Rendered;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, MetricType, Status};
use std::time::SystemTime;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
}

/// Result of a compare-and-swap write to shared data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasError {
    /// Another writer changed the value since it was read.
    Mismatch,
    /// The host refused the call for another reason.
    Failed,
}

pub trait Host {
    fn now(&self) -> SystemTime;
    /// Fills `out` with random bytes (trace and span ids, sampling decisions).
    fn random(&self, out: &mut [u8]);
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;

    /// All request headers, read once per request.
    fn request_headers(&self) -> Vec<(String, String)>;
    /// Replaces (or with `None` removes) every value of a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    fn response_header(&self, name: &str) -> Option<String>;
    fn set_response_header(&self, name: &str, value: Option<&str>);
    fn response_trailer(&self, name: &str) -> Option<String>;
    fn set_response_trailer(&self, name: &str, value: Option<&str>);
    fn send_reply(&self, reply: &Rendered);

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32>;
    fn increment_metric(&self, id: u32, delta: i64);
    fn record_metric(&self, id: u32, value: u64);

    /// An HTTP call to a cluster (`headers` must include `:method`, `:path`, `:authority`);
    /// the token the response will carry, or `None` when the host refused the call.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: std::time::Duration,
    ) -> Option<u32>;
    /// `:status` of the HTTP call response being delivered (inside `on_http_call_response`).
    fn http_call_status(&self) -> Option<u32>;
    fn set_tick_period(&self, period: std::time::Duration);

    /// Shared data visible to every VM of this plugin: value and its CAS token.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `value` when the stored CAS token still equals `cas` (`None`: unconditionally).
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError>;
}

/// The real host: proxy-wasm hostcalls. Errors from the host are treated as "absent".
#[derive(Clone, Copy, Debug, Default)]
pub struct Proxy;

impl Host for Proxy {
    fn now(&self) -> SystemTime {
        hostcalls::get_current_time().unwrap_or(SystemTime::UNIX_EPOCH)
    }

    // The host adapter is the one place allowed to reach the entropy source (filters/clippy.toml).
    #[allow(clippy::disallowed_methods)]
    fn random(&self, out: &mut [u8]) {
        // WASI `random_get`, which Envoy serves from its own random source.
        if getrandom::fill(out).is_err() {
            fallback_random(self.now(), out);
        }
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn response_trailer(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpResponseTrailers, name)
            .ok()
            .flatten()
    }

    fn set_response_trailer(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseTrailers, name, value);
    }

    fn send_reply(&self, reply: &Rendered) {
        match reply {
            Rendered::Http {
                status,
                headers,
                body,
            } => {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let _ = hostcalls::send_http_response(*status, headers, Some(body));
            }
            Rendered::Grpc {
                status,
                message,
                headers,
            } => {
                let metadata: Vec<(&str, &[u8])> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_bytes()))
                    .collect();
                let _ = hostcalls::send_grpc_response(grpc_code(*status), Some(message), metadata);
            }
        }
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let t = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        hostcalls::define_metric(t, name).ok()
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let _ = hostcalls::increment_metric(id, delta);
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: std::time::Duration,
    ) -> Option<u32> {
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), Some(body), Vec::new(), timeout)
            .ok()
    }

    fn http_call_status(&self) -> Option<u32> {
        hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
    }

    fn set_tick_period(&self, period: std::time::Duration) {
        let _ = hostcalls::set_tick_period(period);
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(CasError::Mismatch),
            Err(_) => Err(CasError::Failed),
        }
    }
}

fn grpc_code(status: u32) -> proxy_wasm::types::GrpcStatusCode {
    use proxy_wasm::types::GrpcStatusCode as G;
    match status {
        0 => G::Ok,
        1 => G::Cancelled,
        3 => G::InvalidArgument,
        4 => G::DeadlineExceeded,
        5 => G::NotFound,
        6 => G::AlreadyExists,
        7 => G::PermissionDenied,
        8 => G::ResourceExhausted,
        9 => G::FailedPrecondition,
        10 => G::Aborted,
        11 => G::OutOfRange,
        12 => G::Unimplemented,
        13 => G::Internal,
        14 => G::Unavailable,
        15 => G::DataLoss,
        16 => G::Unauthenticated,
        _ => G::Unknown,
    }
}

/// Bytes from the clock when the host has no entropy source: unique enough per process for ids,
/// never for secrets.
pub fn fallback_random(now: SystemTime, out: &mut [u8]) {
    let t = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(1);
    for (i, byte) in out.iter_mut().enumerate() {
        #[allow(clippy::cast_possible_truncation)]
        let from_clock = (t >> ((i % 16) * 8)) as u8;
        *byte = from_clock ^ (i as u8).wrapping_mul(151);
    }
}

/// The host's clock in microseconds since the Unix epoch (1 µs resolution in Envoy).
pub fn now_us(host: &dyn Host) -> u64 {
    host.now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Reads an integer property as Envoy serializes it: 8 bytes, little-endian.
pub fn le_u64(bytes: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(arr))
}

/// A request's view of the host that reads the clock and each property at most once per phase
/// (request headers, response headers, trailers, end of stream): several stages asking for
/// `request.time` or `response.code` cost one hostcall. Everything else goes straight through;
/// shared data is never cached. The adapter starts a new phase before each hook.
pub struct PhaseHost {
    inner: std::rc::Rc<dyn Host>,
    now: std::cell::Cell<Option<SystemTime>>,
    properties: std::cell::RefCell<Vec<(String, Option<Vec<u8>>)>>,
}

impl PhaseHost {
    pub fn new(inner: std::rc::Rc<dyn Host>) -> Self {
        PhaseHost {
            inner,
            now: std::cell::Cell::new(None),
            properties: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Forgets what was read: properties such as `response.code` change between phases.
    pub fn new_phase(&self) {
        self.now.set(None);
        self.properties.borrow_mut().clear();
    }
}

impl Host for PhaseHost {
    fn now(&self) -> SystemTime {
        if let Some(t) = self.now.get() {
            return t;
        }
        let t = self.inner.now();
        self.now.set(Some(t));
        t
    }
    fn random(&self, out: &mut [u8]) {
        self.inner.random(out);
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let key = path.join("\0");
        if let Some((_, v)) = self.properties.borrow().iter().find(|(k, _)| *k == key) {
            return v.clone();
        }
        let v = self.inner.property(path);
        self.properties.borrow_mut().push((key, v.clone()));
        v
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        self.inner.request_headers()
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.inner.set_request_header(name, value);
    }
    fn response_header(&self, name: &str) -> Option<String> {
        self.inner.response_header(name)
    }
    fn set_response_header(&self, name: &str, value: Option<&str>) {
        self.inner.set_response_header(name, value);
    }
    fn response_trailer(&self, name: &str) -> Option<String> {
        self.inner.response_trailer(name)
    }
    fn set_response_trailer(&self, name: &str, value: Option<&str>) {
        self.inner.set_response_trailer(name, value);
    }
    fn send_reply(&self, reply: &Rendered) {
        self.inner.send_reply(reply);
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        self.inner.define_metric(kind, name)
    }
    fn increment_metric(&self, id: u32, delta: i64) {
        self.inner.increment_metric(id, delta);
    }
    fn record_metric(&self, id: u32, value: u64) {
        self.inner.record_metric(id, value);
    }
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: std::time::Duration,
    ) -> Option<u32> {
        self.inner.http_call(cluster, headers, body, timeout)
    }
    fn http_call_status(&self) -> Option<u32> {
        self.inner.http_call_status()
    }
    fn set_tick_period(&self, period: std::time::Duration) {
        self.inner.set_tick_period(period);
    }
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.inner.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError> {
        self.inner.shared_set(key, value, cas)
    }
}
