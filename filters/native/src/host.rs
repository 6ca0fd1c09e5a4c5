//! The kit's [`Host`] over the dynamic-module ABI, three times:
//!
//! - [`StreamHost`], per stream, on the stream's worker: headers, attributes, the route's
//!   per-route configuration, local replies and metrics through the filter pointer;
//! - [`MainHost`], on Envoy's main thread, for the stages' background work (ticks) and the
//!   answers of their HTTP calls: metrics and callouts through the config pointer;
//! - [`ConfigHost`], while `on_http_filter_config_new` runs: the only time metrics can be
//!   defined, so its `define_metric` defines them.
//!
//! Shared data is the process's ([`crate::store`]) for all three. This module is the native
//! module's only reader of the clock and of the OS entropy source (`filters/clippy.toml`).

use crate::abi::{AttributeId, HttpHeaderType};
use crate::ffi::{ConfigPtr, Stream};
use crate::metrics::{self, MetricTable, ThreadHandles};
use crate::module::Shared;
use mesh_kit::host::{
    fallback_random, unix_nanos, CasError, Host, MetricKind, MetricName, Property,
};
use mesh_kit::reply::{Rendered, REJECTED_BY};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

// The host is the one place allowed to read the clock (filters/clippy.toml): Envoy's dynamic
// modules have no clock callback, and `request.time` is not implemented (ABI.md §5).
#[allow(clippy::disallowed_methods)]
fn now() -> SystemTime {
    SystemTime::now()
}

// The host is the one place allowed to reach the entropy source (filters/clippy.toml).
#[allow(clippy::disallowed_methods)]
fn random(out: &mut [u8]) {
    if getrandom::fill(out).is_err() {
        fallback_random(now(), out);
    }
}

static METRIC_FAILED: AtomicBool = AtomicBool::new(false);
static LABELS_MISMATCH: AtomicBool = AtomicBool::new(false);
static NO_STREAM_CALLS: AtomicBool = AtomicBool::new(false);

/// Resolves a handle and makes the update with `apply` (a stream's or the config's updater).
/// A run-time `define_metric`; a handle new on this thread gets its series made at 0 at once
/// ([`metrics::zero`]), as the wasm module's metrics appear when defined.
fn define(
    table: &MetricTable,
    handles: &RefCell<ThreadHandles>,
    kind: MetricKind,
    name: &MetricName<'_>,
    apply: impl FnOnce(crate::ffi::MetricOp, usize, Option<&str>, u64) -> crate::abi::MetricsResult,
) -> Option<u32> {
    let (id, new) = {
        let mut h = handles.borrow_mut();
        let before = h.len();
        let id = h.define(table, kind, name)?;
        (id, h.len() > before)
    };
    if new {
        update(
            table,
            handles,
            id,
            |kind| Some((metrics::zero(kind), 0)),
            apply,
        );
    }
    Some(id)
}

fn update(
    table: &MetricTable,
    handles: &RefCell<ThreadHandles>,
    id: u32,
    op: impl FnOnce(MetricKind) -> Option<(crate::ffi::MetricOp, u64)>,
    apply: impl FnOnce(crate::ffi::MetricOp, usize, Option<&str>, u64) -> crate::abi::MetricsResult,
) {
    let handles = handles.borrow();
    let Some((family, label)) = handles.resolve(table, id) else {
        return;
    };
    if !metrics::labels_match(family, label) {
        metrics::once(&LABELS_MISMATCH, || {
            format!(
                "mesh: metric {:?} updated with the wrong number of labels; not counted",
                family.name
            )
        });
        return;
    }
    let Some((op, value)) = op(family.kind) else {
        return;
    };
    let r = apply(op, family.envoy_id, label, value);
    if r != crate::abi::MetricsResult::SUCCESS {
        metrics::once(&METRIC_FAILED, || {
            format!(
                "mesh: Envoy refused an update of metric {:?} (result {}); later refusals are not logged",
                family.name, r.0
            )
        });
    }
}

// ---------------------------------------------------------------- per stream

/// The host of one stream.
pub struct StreamHost {
    stream: Stream,
    /// When the module first saw the stream: `request.time` (the ABI has no such attribute).
    started: SystemTime,
    shared: Arc<Shared>,
    handles: Rc<RefCell<ThreadHandles>>,
    /// A local reply a stage asked for, sent once the suite has returned, so that nothing Envoy
    /// runs inside `send_response` meets a request still borrowed by the suite (as the wasm
    /// host defers `send_local_response`).
    reply: RefCell<Option<Rendered>>,
}

impl StreamHost {
    pub fn new(stream: Stream, shared: Arc<Shared>, handles: Rc<RefCell<ThreadHandles>>) -> Self {
        StreamHost {
            stream,
            started: now(),
            shared,
            handles,
            reply: RefCell::new(None),
        }
    }

    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// The local reply a stage asked for, if any.
    pub fn take_reply(&self) -> Option<Rendered> {
        self.reply.borrow_mut().take()
    }

    fn string(&self, id: AttributeId) -> Option<Vec<u8>> {
        self.stream.attribute_bytes(id)
    }

    fn int(&self, id: AttributeId) -> Option<Vec<u8>> {
        self.stream
            .attribute_int(id)
            .map(|n| n.to_le_bytes().to_vec())
    }
}

/// Sends a rendered reply on a stream: HTTP as rendered; gRPC as a trailers-only 200 whose
/// headers carry `grpc-status` and `grpc-message` (a non-200 would become `grpc-status: 0`,
/// `ABI.md` §4).
pub fn send(stream: Stream, reply: &Rendered) {
    match reply {
        Rendered::Http {
            status,
            headers,
            body,
        } => {
            let pairs: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            stream.send_response(*status, &pairs, body, details(headers));
        }
        Rendered::Grpc {
            status,
            message,
            headers,
        } => {
            let status = status.to_string();
            let message = grpc_message(message);
            let mut pairs: Vec<(&str, &str)> = vec![
                ("content-type", "application/grpc"),
                ("grpc-status", &status),
                ("grpc-message", &message),
            ];
            pairs.extend(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            stream.send_response(200, &pairs, &[], details(headers));
        }
    }
}

/// `response.code_details` of a reply: the filter that made it (`mesh.deadline`).
fn details(headers: &[(String, String)]) -> &str {
    headers
        .iter()
        .find(|(k, _)| k == REJECTED_BY)
        .map_or("mesh", |(_, v)| v.as_str())
}

/// `grpc-message` as gRPC carries it: percent-encoded outside printable ASCII, and `%` itself.
pub fn grpc_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Host for StreamHost {
    fn now(&self) -> SystemTime {
        now()
    }

    fn random(&self, out: &mut [u8]) {
        random(out);
    }

    fn property(&self, property: Property) -> Option<Vec<u8>> {
        match property {
            Property::RouteName => self.string(AttributeId::XDS_ROUTE_NAME),
            Property::ClusterName => self.string(AttributeId::XDS_CLUSTER_NAME),
            Property::ConnectionId => self.int(AttributeId::CONNECTION_ID),
            Property::RequestTime => Some(unix_nanos(self.started).to_le_bytes().to_vec()),
            Property::Mtls => self
                .stream
                .attribute_bool(AttributeId::CONNECTION_MTLS)
                .map(|b| vec![u8::from(b)]),
            Property::PeerUriSan => self.string(AttributeId::CONNECTION_URI_SAN_PEER_CERTIFICATE),
            Property::PeerDigest => {
                self.string(AttributeId::CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST)
            }
            Property::ResponseCode => self.int(AttributeId::RESPONSE_CODE),
            Property::ResponseFlags => self.int(AttributeId::RESPONSE_FLAGS),
            Property::ResponseCodeDetails => self.string(AttributeId::RESPONSE_CODE_DETAILS),
            Property::ResponseGrpcStatus => self.int(AttributeId::RESPONSE_GRPC_STATUS),
            Property::AttemptCount => self.int(AttributeId::UPSTREAM_REQUEST_ATTEMPT_COUNT),
        }
    }

    /// The stage's section of the route's `DynamicModuleFilterPerRoute` ([`crate::per_route`]).
    fn route_config(&self, key: &str) -> Result<Option<Value>, String> {
        match self.stream.with_route_config(|p| p.section(key).cloned()) {
            Ok(section) => Ok(section.flatten()),
            Err(_) => Err(
                "the route's per-route config under this filter's name was made by another dynamic module".into(),
            ),
        }
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        self.stream.headers(HttpHeaderType::REQUEST_HEADER)
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        self.stream
            .set_header(HttpHeaderType::REQUEST_HEADER, name, value);
    }

    fn add_request_header(&self, name: &str, value: &str) {
        self.stream
            .add_header(HttpHeaderType::REQUEST_HEADER, name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.stream.header(HttpHeaderType::RESPONSE_HEADER, name)
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) {
        self.stream
            .set_header(HttpHeaderType::RESPONSE_HEADER, name, value);
    }

    fn response_trailer(&self, name: &str) -> Option<String> {
        self.stream.header(HttpHeaderType::RESPONSE_TRAILER, name)
    }

    fn set_response_trailer(&self, name: &str, value: Option<&str>) {
        self.stream
            .set_header(HttpHeaderType::RESPONSE_TRAILER, name, value);
    }

    /// Kept until the suite returns ([`StreamHost::take_reply`]); the first reply wins.
    fn send_reply(&self, reply: &Rendered) {
        let mut pending = self.reply.borrow_mut();
        if pending.is_none() {
            *pending = Some(reply.clone());
        }
    }

    fn define_metric(&self, kind: MetricKind, name: &MetricName<'_>) -> Option<u32> {
        let stream = self.stream;
        define(
            &self.shared.metrics,
            &self.handles,
            kind,
            name,
            |op, envoy_id, label, v| stream.metric(op, envoy_id, label, v),
        )
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let stream = self.stream;
        update(
            &self.shared.metrics,
            &self.handles,
            id,
            |kind| metrics::increment(kind, delta),
            |op, envoy_id, label, v| stream.metric(op, envoy_id, label, v),
        );
    }

    fn record_metric(&self, id: u32, value: u64) {
        let stream = self.stream;
        update(
            &self.shared.metrics,
            &self.handles,
            id,
            |kind| metrics::record(kind).map(|op| (op, value)),
            |op, envoy_id, label, v| stream.metric(op, envoy_id, label, v),
        );
    }

    /// Not on a stream: the stages call out from their background work only ([`MainHost`]).
    fn http_call(&self, _: &str, _: &[(&str, &str)], _: &[u8], _: Duration) -> Option<u32> {
        metrics::once(&NO_STREAM_CALLS, || {
            "mesh: an HTTP call from a request's path is not supported by the native module; refused".into()
        });
        None
    }

    fn http_call_status(&self) -> Option<u32> {
        None
    }

    /// The native module ticks from its config ([`crate::module`]).
    fn set_tick_period(&self, _: Duration) {}

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        crate::store::get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError> {
        crate::store::set(key, value, cas)
    }
}

// ---------------------------------------------------------------- main thread

/// The host of the stages' background work, on Envoy's main thread.
pub struct MainHost {
    shared: Arc<Shared>,
    handles: Rc<RefCell<ThreadHandles>>,
    /// The `:status` of the callout answer being delivered.
    callout_status: Cell<Option<u32>>,
}

impl MainHost {
    pub fn new(shared: Arc<Shared>, handles: Rc<RefCell<ThreadHandles>>) -> Self {
        MainHost {
            shared,
            handles,
            callout_status: Cell::new(None),
        }
    }

    pub fn set_callout_status(&self, status: Option<u32>) {
        self.callout_status.set(status);
    }

    fn config(&self) -> ConfigPtr {
        self.shared.envoy
    }
}

impl Host for MainHost {
    fn now(&self) -> SystemTime {
        now()
    }

    fn random(&self, out: &mut [u8]) {
        random(out);
    }

    fn property(&self, _: Property) -> Option<Vec<u8>> {
        None
    }

    fn route_config(&self, _: &str) -> Result<Option<Value>, String> {
        Ok(None)
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn set_request_header(&self, _: &str, _: Option<&str>) {}

    fn response_header(&self, _: &str) -> Option<String> {
        None
    }

    fn set_response_header(&self, _: &str, _: Option<&str>) {}

    fn response_trailer(&self, _: &str) -> Option<String> {
        None
    }

    fn set_response_trailer(&self, _: &str, _: Option<&str>) {}

    fn send_reply(&self, _: &Rendered) {}

    fn define_metric(&self, kind: MetricKind, name: &MetricName<'_>) -> Option<u32> {
        let config = self.config();
        define(
            &self.shared.metrics,
            &self.handles,
            kind,
            name,
            |op, envoy_id, label, v| config.metric(op, envoy_id, label, v),
        )
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let config = self.config();
        update(
            &self.shared.metrics,
            &self.handles,
            id,
            |kind| metrics::increment(kind, delta),
            |op, envoy_id, label, v| config.metric(op, envoy_id, label, v),
        );
    }

    fn record_metric(&self, id: u32, value: u64) {
        let config = self.config();
        update(
            &self.shared.metrics,
            &self.handles,
            id,
            |kind| metrics::record(kind).map(|op| (op, value)),
            |op, envoy_id, label, v| config.metric(op, envoy_id, label, v),
        );
    }

    /// A config-level callout; its answer comes back through
    /// [`crate::module::Config::on_callout_done`] with the same token.
    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<u32> {
        // The ABI's callout takes `host`, proxy-wasm's `:authority`.
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|&(k, v)| {
                if k == ":authority" {
                    ("host", v)
                } else {
                    (k, v)
                }
            })
            .collect();
        match self.config().http_callout(cluster, &headers, body, timeout) {
            Ok(id) => u32::try_from(id).ok(),
            Err(r) => {
                log::warn!(
                    "mesh: HTTP call to cluster {cluster:?} not started (Envoy's result {})",
                    r.0
                );
                None
            }
        }
    }

    fn http_call_status(&self) -> Option<u32> {
        self.callout_status.get()
    }

    fn set_tick_period(&self, _: Duration) {}

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        crate::store::get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError> {
        crate::store::set(key, value, cas)
    }
}

// ---------------------------------------------------------------- config time

/// The host the stages are built over, inside `on_http_filter_config_new`.
pub struct ConfigHost {
    config: ConfigPtr,
    table: RefCell<MetricTable>,
}

impl ConfigHost {
    pub fn new(config: ConfigPtr) -> Self {
        ConfigHost {
            config,
            table: RefCell::new(MetricTable::default()),
        }
    }

    /// Defines a family outside the stages' own definitions (their per-route stats).
    pub fn define_family(&self, kind: MetricKind, stage: &str, stat: &str, label: &str) {
        let name = metrics::family_name(stage, stat);
        self.table
            .borrow_mut()
            .define_family(self.config, kind, &name, Some(label));
    }

    pub fn into_table(self) -> MetricTable {
        self.table.into_inner()
    }
}

impl Host for ConfigHost {
    fn now(&self) -> SystemTime {
        now()
    }

    fn random(&self, out: &mut [u8]) {
        random(out);
    }

    fn property(&self, _: Property) -> Option<Vec<u8>> {
        None
    }

    fn route_config(&self, _: &str) -> Result<Option<Value>, String> {
        Ok(None)
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    fn set_request_header(&self, _: &str, _: Option<&str>) {}

    fn response_header(&self, _: &str) -> Option<String> {
        None
    }

    fn set_response_header(&self, _: &str, _: Option<&str>) {}

    fn response_trailer(&self, _: &str) -> Option<String> {
        None
    }

    fn set_response_trailer(&self, _: &str, _: Option<&str>) {}

    fn send_reply(&self, _: &Rendered) {}

    /// Defines the family and returns a handle every thread may use.
    fn define_metric(&self, kind: MetricKind, name: &MetricName<'_>) -> Option<u32> {
        self.table
            .borrow_mut()
            .define_static(self.config, kind, name)
    }

    /// Metrics cannot be updated before the config exists; nothing counts at config time.
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
        crate::store::get(key)
    }

    fn shared_set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), CasError> {
        crate::store::set(key, value, cas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_encoded_as_grpc_says() {
        assert_eq!(grpc_message("circuit open"), "circuit open");
        assert_eq!(grpc_message("50% off"), "50%25 off");
        assert_eq!(grpc_message("a\nb"), "a%0Ab");
        assert_eq!(grpc_message("é"), "%C3%A9");
    }

    #[test]
    fn reply_details_name_the_filter() {
        let h = vec![(REJECTED_BY.to_string(), "mesh.deadline".to_string())];
        assert_eq!(details(&h), "mesh.deadline");
        assert_eq!(details(&[]), "mesh");
    }
}
