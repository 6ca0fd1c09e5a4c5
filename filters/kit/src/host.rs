//! The narrow host trait: everything the stages ask of Envoy, so the same stage code runs in the
//! proxy-wasm module ([`crate::wasm::Proxy`]), in the native dynamic module (`mesh-native`) and
//! over an in-memory host in native tests ([`crate::testing::TestHost`]).
//!
//! The trait speaks in the stages' terms, not in one ABI's: properties are a closed list
//! ([`Property`]), metrics are named by stage, stat and label ([`MetricName`]) rather than by a
//! string with the label folded in, and a route's per-route configuration comes as the JSON of
//! one stage's section ([`Host::route_config`]), however the runtime carries it (route metadata
//! for wasm, the ABI's per-route config for the native module).

use crate::reply::Rendered;
use serde_json::Value;
use std::time::{Duration, SystemTime};

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

/// What the stages read about a request, its connection and its route, besides headers. Values
/// come as Envoy's attributes do: strings as UTF-8, integers as 8 bytes little-endian, booleans
/// as one byte (read them with [`crate::stage::Exchange`]'s typed accessors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Property {
    /// `xds.route_name`: the route's `name` (empty when it has none).
    RouteName,
    /// `xds.cluster_name`: the upstream cluster the router picked.
    ClusterName,
    /// `connection.id`: the downstream connection, unique in the process.
    ConnectionId,
    /// `request.time`: when Envoy received the request, nanoseconds since the Unix epoch.
    RequestTime,
    /// `connection.mtls`: the client presented a certificate Envoy verified.
    Mtls,
    /// `connection.uri_san_peer_certificate`: the peer certificate's first URI SAN.
    PeerUriSan,
    /// `connection.sha256_peer_certificate_digest`, hex.
    PeerDigest,
    /// `response.code`.
    ResponseCode,
    /// `response.flags`: Envoy's response-flag bitmask.
    ResponseFlags,
    /// `response.code_details`: `via_upstream`, or who answered.
    ResponseCodeDetails,
    /// `response.grpc_status` (derived from HTTP for non-gRPC requests).
    ResponseGrpcStatus,
    /// `upstream.request_attempt_count`: 1 + the router's retries.
    AttemptCount,
}

impl Property {
    /// Every property, in index order.
    pub const ALL: [Property; 12] = [
        Property::RouteName,
        Property::ClusterName,
        Property::ConnectionId,
        Property::RequestTime,
        Property::Mtls,
        Property::PeerUriSan,
        Property::PeerDigest,
        Property::ResponseCode,
        Property::ResponseFlags,
        Property::ResponseCodeDetails,
        Property::ResponseGrpcStatus,
        Property::AttemptCount,
    ];

    /// Index into [`Property::ALL`] (for per-phase caches).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The attribute path Envoy knows it by.
    pub fn path(self) -> &'static [&'static str] {
        match self {
            Property::RouteName => &["xds", "route_name"],
            Property::ClusterName => &["xds", "cluster_name"],
            Property::ConnectionId => &["connection", "id"],
            Property::RequestTime => &["request", "time"],
            Property::Mtls => &["connection", "mtls"],
            Property::PeerUriSan => &["connection", "uri_san_peer_certificate"],
            Property::PeerDigest => &["connection", "sha256_peer_certificate_digest"],
            Property::ResponseCode => &["response", "code"],
            Property::ResponseFlags => &["response", "flags"],
            Property::ResponseCodeDetails => &["response", "code_details"],
            Property::ResponseGrpcStatus => &["response", "grpc_status"],
            Property::AttemptCount => &["upstream", "request_attempt_count"],
        }
    }
}

/// A metric as a stage names it: `mesh.deadline` + `rq_total`, with an optional label such as
/// `route="auth"`. Label values come from configuration (route and cluster names) or from a
/// closed set (trace formats), never from requests; [`crate::metrics::label_value`] has made
/// them safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricName<'a> {
    /// The stage's name, `mesh.<stage>`.
    pub stage: &'a str,
    pub stat: &'a str,
    /// `(label name, value)`.
    pub label: Option<(&'a str, &'a str)>,
}

impl MetricName<'_> {
    /// The proxy-wasm form, with the label folded into the name for Envoy's `stats_tags`:
    /// `mesh.deadline.rq_total.route=auth`.
    pub fn flat(&self) -> String {
        match self.label {
            Some((k, v)) => format!("{}.{}.{k}={v}", self.stage, self.stat),
            None => format!("{}.{}", self.stage, self.stat),
        }
    }
}

pub trait Host {
    fn now(&self) -> SystemTime;
    /// Fills `out` with random bytes (trace and span ids, sampling decisions).
    fn random(&self, out: &mut [u8]);
    fn property(&self, property: Property) -> Option<Vec<u8>>;
    /// The current route's per-route configuration for the stage `key` (`mesh.deadline`): the
    /// JSON object of its section, `None` when the route has none, an error when what the route
    /// carries cannot be read.
    fn route_config(&self, key: &str) -> Result<Option<Value>, String>;

    /// All request headers, read once per request.
    fn request_headers(&self) -> Vec<(String, String)>;
    /// Replaces (or with `None` removes) every value of a request header.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    /// Adds a value to a request header. The kit calls it only for a header the request does
    /// not carry, where it does what `set_request_header` does for less: Envoy's `setCopy`
    /// first scans the whole map for values to remove, `addCopy` only appends.
    fn add_request_header(&self, name: &str, value: &str) {
        self.set_request_header(name, Some(value));
    }
    fn response_header(&self, name: &str) -> Option<String>;
    fn set_response_header(&self, name: &str, value: Option<&str>);
    fn response_trailer(&self, name: &str) -> Option<String>;
    fn set_response_trailer(&self, name: &str, value: Option<&str>);
    fn send_reply(&self, reply: &Rendered);

    fn define_metric(&self, kind: MetricKind, name: &MetricName<'_>) -> Option<u32>;
    fn increment_metric(&self, id: u32, delta: i64);
    fn record_metric(&self, id: u32, value: u64);

    /// An HTTP call to a cluster (`headers` must include `:method`, `:path`, `:authority`);
    /// the token the response will carry, or `None` when the host refused the call.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<u32>;
    /// `:status` of the HTTP call response being delivered (inside `on_http_call_response`).
    fn http_call_status(&self) -> Option<u32>;
    fn set_tick_period(&self, period: Duration);

    /// Shared data visible to every worker of this process: value and its CAS token.
    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes `value` when the stored CAS token still equals `cas` (`None`: unconditionally).
    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError>;
}

/// How many random bytes one host call fetches for [`random_pooled`].
pub const RANDOM_POOL: usize = 256;

thread_local! {
    /// This thread's unused random bytes: `(bytes, how many are used)`. One per wasm VM, one
    /// per Envoy worker thread natively.
    static POOL: std::cell::RefCell<([u8; RANDOM_POOL], usize)> =
        const { std::cell::RefCell::new(([0; RANDOM_POOL], RANDOM_POOL)) };
}

/// Fills `out` with random bytes from this thread's pool, refilled with one `host.random` of
/// [`RANDOM_POOL`] bytes when it runs out: a span id (8 bytes) costs a 32nd of a host call
/// (a WASI `random_get` in wasm, a `getrandom` system call natively) instead of one. Every
/// byte is handed out once. Larger requests go to the host directly.
pub fn random_pooled(host: &dyn Host, out: &mut [u8]) {
    if out.len() > RANDOM_POOL {
        host.random(out);
        return;
    }
    POOL.with(|pool| {
        let Ok(mut pool) = pool.try_borrow_mut() else {
            host.random(out);
            return;
        };
        let (bytes, used) = &mut *pool;
        if RANDOM_POOL - *used < out.len() {
            host.random(bytes);
            *used = 0;
        }
        let end = *used + out.len();
        if let Some(fresh) = bytes.get_mut(*used..end) {
            out.copy_from_slice(fresh);
            // Handed out: never again, even if the pool's memory were read.
            fresh.fill(0);
            *used = end;
        } else {
            host.random(out);
        }
    });
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

/// Microseconds since the Unix epoch (Envoy's clock has 1 µs resolution).
pub fn unix_us(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Nanoseconds since the Unix epoch.
pub fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Reads an integer property as Envoy serializes it: 8 bytes, little-endian.
pub fn le_u64(bytes: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(arr))
}

/// The section of stage `key` in serialized `envoy.config.core.v3.Metadata` (what
/// `xds.route_metadata` holds), as JSON. For hosts that carry per-route configuration in route
/// metadata.
pub fn metadata_section(metadata: Option<&[u8]>, key: &str) -> Result<Option<Value>, String> {
    match metadata {
        None => Ok(None),
        Some(bytes) => crate::route::route_section(bytes, key),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestHost;

    #[test]
    fn pooled_random_bytes_are_the_hosts_in_order_one_call_per_pool() {
        let pooled = TestHost::default();
        let direct = TestHost::default();
        let mut expected = [0u8; 2 * RANDOM_POOL];
        direct.random(&mut expected[..RANDOM_POOL]);
        direct.random(&mut expected[RANDOM_POOL..]);
        let mut got = Vec::new();
        // 8-byte draws: a pool serves 32 of them; the 33rd refills it.
        for _ in 0..(RANDOM_POOL / 8 + 1) {
            let mut id = [0u8; 8];
            random_pooled(&pooled, &mut id);
            got.extend_from_slice(&id);
        }
        assert_eq!(pooled.take_calls().get("random"), Some(&2));
        // The first pool, whole; then the second's first bytes. (The pool is per thread: this
        // test starts from an empty one since each test runs on a thread of its own.)
        assert_eq!(got.len(), RANDOM_POOL + 8);
        assert_eq!(got[..], expected[..RANDOM_POOL + 8]);
    }

    #[test]
    fn a_draw_the_pool_cannot_finish_takes_a_fresh_pool_and_a_big_one_goes_direct() {
        let host = TestHost::default();
        let mut a = [0u8; RANDOM_POOL - 4];
        random_pooled(&host, &mut a);
        let mut b = [0u8; 8];
        random_pooled(&host, &mut b);
        assert_eq!(host.take_calls().get("random"), Some(&2));
        let mut big = [0u8; RANDOM_POOL + 1];
        random_pooled(&host, &mut big);
        assert_eq!(host.take_calls().get("random"), Some(&1));
        assert!(big.iter().any(|&x| x != 0));
    }
}
