//! The trace-propagation stage: the adapter-facing table of contents of the filter.
//!
//! Request headers: extract the first valid context among the configured formats (an invalid
//! one is counted and the next format tried); with none, start a trace (random 128-bit trace id,
//! sampled by `sampling_ratio`, W3C random flag set). Give this hop a new span id, remove the
//! propagation headers of every format in play and write the context in every injected format
//! (the incoming span becomes the parent). Every field line of a repeated header is seen (the
//! adapter's [`mesh_kit::stage::Exchange`] holds them all, in order): a repeated `traceparent`,
//! `b3`, `uber-trace-id` or `grpc-trace-bin` is invalid, the `X-B3-*` headers take their first
//! line, and the `tracestate` and `baggage` lines are each one list, written back as one line.
//! tracestate passes through (valid members only, at most 32) next to a kept traceparent;
//! baggage is limited. Response headers: `traceresponse` / `server-timing`.
//! End of stream: with `export`, a SERVER span per sampled request goes into a per-VM queue that
//! `on_tick` sends to the collector as OTLP/HTTP — never on a request's path.

use crate::config::{Config, Export, ResponseHeader};
use crate::formats::{
    self, single_line, Format, Invalid, Sampling, SpanContext, SpanId, TraceId, TraceState,
    B3 as B3Value,
};
use crate::otlp::{encode_export_request, AttrValue, FinishedSpan};
use mesh_kit::host::{unix_nanos, Host, MetricKind, MetricName, Property};
use mesh_kit::stage::{Cx, Flow, OnInvalid, Stage};
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

mesh_kit::stats! {
    /// The trace stage's stats per route (its other metrics are per VM: [`Metrics`]).
    pub enum Stat {
        ConfigError = counter("config_error"),
    }
}

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";
const BAGGAGE: &str = "baggage";
const B3: &str = "b3";
const B3_MULTI: [&str; 5] = [
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];
const JAEGER: &str = "uber-trace-id";
const GRPC_TRACE_BIN: &str = "grpc-trace-bin";

/// Root-level metrics, defined once per root context.
struct Metrics {
    extracted: Vec<(Format, Option<u32>)>,
    started: Option<u32>,
    invalid: Option<u32>,
    tracestate_dropped: Option<u32>,
    baggage_dropped: Option<u32>,
    spans_exported: Option<u32>,
    spans_dropped: Option<u32>,
    export_failed: Option<u32>,
}

impl Metrics {
    fn define(host: &dyn Host) -> Metrics {
        let metric = |stat: &str, label: Option<(&str, &str)>| {
            let name = MetricName {
                stage: TracePropagation::NAME,
                stat,
                label,
            };
            host.define_metric(MetricKind::Counter, &name)
        };
        let c = |stat: &str| metric(stat, None);
        let formats = [
            Format::W3c,
            Format::B3,
            Format::B3Multi,
            Format::Jaeger,
            Format::GrpcTraceBin,
        ];
        Metrics {
            extracted: formats
                .iter()
                .map(|f| (*f, metric("extracted", Some(("format", f.name())))))
                .collect(),
            started: c("started"),
            invalid: c("invalid"),
            tracestate_dropped: c("tracestate_dropped"),
            baggage_dropped: c("baggage_dropped"),
            spans_exported: c("spans_exported"),
            spans_dropped: c("spans_dropped"),
            export_failed: c("export_failed"),
        }
    }

    fn add(host: &dyn Host, id: Option<u32>, n: u64) {
        if let (Some(id), true) = (id, n > 0) {
            host.increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}

/// The spans waiting for the collector, and the export call in flight: per VM in the wasm
/// module, one for the process in the native module (whose workers share the stage).
struct Exporter {
    config: Export,
    queue: Mutex<VecDeque<FinishedSpan>>,
    in_flight: Mutex<Option<(u32, u64)>>,
}

/// A lock that a panic elsewhere cannot make unusable: the data is a queue of finished spans,
/// valid whatever step a panicking holder was at.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub struct TracePropagation {
    metrics: Metrics,
    exporter: Option<Exporter>,
}

/// This hop, as the request carries it.
#[derive(Default)]
pub struct State {
    hop: Option<Hop>,
}

struct Hop {
    context: SpanContext,
    parent: Option<SpanId>,
    trace_state: String,
    start_unix_nano: u64,
    method: String,
    path: String,
}

impl TracePropagation {
    /// Applies the W3C Baggage limits to every `baggage` line as one list. The header is left
    /// alone (no hostcall) when it is one line and nothing is dropped; otherwise it is written
    /// back as one line, or removed when nothing is kept.
    fn limit_baggage(&self, cx: &mut Cx<'_, Self>) {
        let lines = cx.ex.header_values(BAGGAGE).count();
        if lines == 0 {
            return;
        }
        let (kept, dropped) = formats::limit_baggage_lines(cx.ex.header_values(BAGGAGE));
        Metrics::add(
            cx.ex.host(),
            self.metrics.baggage_dropped,
            u64::from(dropped),
        );
        if dropped == 0 && lines == 1 {
            return;
        }
        if kept.is_empty() {
            cx.ex.remove_header(BAGGAGE);
        } else {
            cx.ex.set_header(BAGGAGE, &kept);
        }
    }
}

impl Stage for TracePropagation {
    const NAME: &'static str = "mesh.trace_propagation";
    type Stat = Stat;

    type Config = Config;
    type Request = State;

    fn describe(c: &Config) -> String {
        let inject: Vec<&str> = c.inject.iter().map(|f| f.name()).collect();
        let mut s = inject.join(",");
        if c.sampling_ratio.get() < 1.0 {
            s.push_str(&format!(" {}%", c.sampling_ratio.get() * 100.0));
        }
        if let Some(e) = &c.export {
            s.push_str(&format!(" ->{}", e.cluster));
        }
        s
    }

    fn new(config: &Config, host: &dyn Host) -> Self {
        let exporter = config.export.clone().map(|config| Exporter {
            config,
            queue: Mutex::new(VecDeque::new()),
            in_flight: Mutex::new(None),
        });
        TracePropagation {
            metrics: Metrics::define(host),
            exporter,
        }
    }

    /// Fail open: a route whose metadata is broken passes its trace headers untouched (the
    /// adapter has counted `config_error` and logged the route and the error).
    fn on_invalid_route_config(&self) -> OnInvalid {
        OnInvalid::Skip
    }

    fn on_request_headers(&self, cx: &mut Cx<'_, Self>) -> Flow {
        let host = cx.ex.host();
        let Extracted {
            found,
            trace_state,
            invalid,
            hint,
        } = extract(cx);
        Metrics::add(host, self.metrics.invalid, invalid);
        Metrics::add(
            host,
            self.metrics.tracestate_dropped,
            u64::from(trace_state.dropped()),
        );
        let trace_state = trace_state.to_string();
        let (mut context, parent) = match found {
            Some((format, context)) => {
                let id = self
                    .metrics
                    .extracted
                    .iter()
                    .find(|(f, _)| *f == format)
                    .and_then(|(_, id)| *id);
                Metrics::add(host, id, 1);
                (context, Some(context.span_id))
            }
            None => {
                Metrics::add(host, self.metrics.started, 1);
                let sampled = match hint {
                    Some(s) => s,
                    None => random_ratio(host) < cx.config.sampling_ratio.get(),
                };
                let context = SpanContext {
                    trace_id: TraceId(nonzero(random_bytes(host))),
                    span_id: SpanId([0; 8]),
                    sampling: if sampled {
                        Sampling::Sampled
                    } else {
                        Sampling::NotSampled
                    },
                    debug: false,
                    random: true,
                };
                (context, None)
            }
        };
        if context.sampling == Sampling::Deferred {
            context.sampling = if random_ratio(cx.ex.host()) < cx.config.sampling_ratio.get() {
                Sampling::Sampled
            } else {
                Sampling::NotSampled
            };
        }
        context.span_id = SpanId(nonzero(random_bytes(cx.ex.host())));

        let out = injected(&cx.config.inject, &context, parent, &trace_state);
        remove_headers(cx, &out);
        for (name, value) in &out {
            cx.ex.set_header(name, value);
        }
        self.limit_baggage(cx);
        let start_unix_nano = cx
            .ex
            .int(Property::RequestTime)
            .unwrap_or_else(|| unix_nanos(cx.ex.now()));
        let method = cx.ex.header(":method").unwrap_or_default().to_string();
        let path = cx.ex.header(":path").unwrap_or_default();
        let path = path
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_string();
        cx.state.hop = Some(Hop {
            context,
            parent,
            trace_state,
            start_unix_nano,
            method,
            path,
        });
        Flow::Continue
    }

    fn on_response_headers(&self, cx: &mut Cx<'_, Self>) {
        let Some(hop) = &cx.state.hop else { return };
        let traceparent = formats::format_traceparent(&hop.context);
        for h in &cx.config.response_headers {
            match h {
                ResponseHeader::TraceResponse => {
                    cx.ex.set_response_header("traceresponse", &traceparent)
                }
                ResponseHeader::ServerTiming => {
                    let entry = format!("trace;desc=\"{traceparent}\"");
                    let value = match cx.ex.response_header("server-timing") {
                        Some(existing) if !existing.is_empty() => format!("{existing}, {entry}"),
                        _ => entry,
                    };
                    cx.ex.set_response_header("server-timing", &value);
                }
            }
        }
    }

    fn on_log(&self, cx: &mut Cx<'_, Self>) {
        let (Some(exporter), Some(hop)) = (&self.exporter, cx.state.hop.take()) else {
            return;
        };
        let sampled = hop.context.sampling == Sampling::Sampled || hop.context.debug;
        if !sampled {
            return;
        }
        let name = cx.ex.route().to_string();
        let host = cx.ex.host();
        let code = cx.ex.int(Property::ResponseCode).unwrap_or(0);
        let mut attributes = vec![
            (
                "http.request.method".to_string(),
                AttrValue::Str(hop.method),
            ),
            ("url.path".to_string(), AttrValue::Str(hop.path)),
            (
                "http.response.status_code".to_string(),
                AttrValue::Int(i64::try_from(code).unwrap_or(0)),
            ),
        ];
        if cx.ex.is_grpc() {
            if let Some(g) = cx.ex.int(Property::ResponseGrpcStatus) {
                attributes.push((
                    "rpc.grpc.status_code".to_string(),
                    AttrValue::Int(i64::try_from(g).unwrap_or(0)),
                ));
            }
        }
        if let Some(cluster) = cx.ex.text(Property::ClusterName) {
            attributes.push(("upstream_cluster".to_string(), AttrValue::Str(cluster)));
        }
        let span = FinishedSpan {
            trace_id: hop.context.trace_id.0,
            span_id: hop.context.span_id.0,
            parent_span_id: hop.parent.map(|p| p.0),
            trace_state: hop.trace_state,
            name,
            kind_server: true,
            start_unix_nano: hop.start_unix_nano,
            end_unix_nano: unix_nanos(cx.ex.now()).max(hop.start_unix_nano),
            attributes,
            error: code >= 500,
        };
        let mut queue = lock(&exporter.queue);
        if queue.len() >= exporter.config.max_queue as usize {
            queue.pop_front();
            Metrics::add(host, self.metrics.spans_dropped, 1);
        }
        queue.push_back(span);
    }

    fn tick_period(&self) -> Option<Duration> {
        self.exporter
            .as_ref()
            .map(|e| e.config.flush_interval.get())
    }

    /// Sends one batch when none is in flight: a slow collector only makes the queue grow (and
    /// drop its oldest spans), never a request wait.
    fn on_tick(&self, host: &dyn Host) {
        let Some(exporter) = &self.exporter else {
            return;
        };
        if lock(&exporter.in_flight).is_some() {
            return;
        }
        let batch: Vec<FinishedSpan> = {
            let mut queue = lock(&exporter.queue);
            let n = queue.len().min(exporter.config.max_batch as usize);
            queue.drain(..n).collect()
        };
        if batch.is_empty() {
            return;
        }
        let e = &exporter.config;
        let body = encode_export_request(&e.service_name, env!("CARGO_PKG_VERSION"), &batch);
        let authority = e.authority.clone().unwrap_or_else(|| e.cluster.clone());
        let headers = [
            (":method", "POST"),
            (":path", e.path.as_str()),
            (":authority", authority.as_str()),
            ("content-type", "application/x-protobuf"),
        ];
        let n = batch.len() as u64;
        match host.http_call(&e.cluster, &headers, &body, Duration::from_secs(5)) {
            // Not held across the call: a host may answer before it returns.
            Some(token) => *lock(&exporter.in_flight) = Some((token, n)),
            None => {
                Metrics::add(host, self.metrics.export_failed, 1);
                Metrics::add(host, self.metrics.spans_dropped, n);
            }
        }
    }

    fn on_http_call_response(&self, host: &dyn Host, token: u32) -> bool {
        let Some(exporter) = &self.exporter else {
            return false;
        };
        let mut in_flight = lock(&exporter.in_flight);
        let Some((mine, n)) = *in_flight else {
            return false;
        };
        if mine != token {
            return false;
        }
        *in_flight = None;
        drop(in_flight);

        match host.http_call_status() {
            Some(200..=299) => Metrics::add(host, self.metrics.spans_exported, n),
            status => {
                Metrics::add(host, self.metrics.export_failed, 1);
                Metrics::add(host, self.metrics.spans_dropped, n);
                log::warn!(
                    "{}: OTLP export of {n} spans failed (status {status:?})",
                    Self::NAME
                );
            }
        }
        true
    }
}

/// What the request carried.
#[derive(Default)]
struct Extracted {
    /// The first valid context among the formats to extract, and the format it was read in.
    found: Option<(Format, SpanContext)>,
    /// The `tracestate` that goes with a W3C context (empty otherwise).
    trace_state: TraceState,
    /// Invalid contexts seen before the one found.
    invalid: u64,
    /// A sampling decision carried without a context (`b3: 0`, `X-B3-Sampled: 0` alone).
    hint: Option<bool>,
}

/// Not a context, but a sampling decision alone: neither found nor invalid.
const SAMPLING_ONLY: Invalid = Invalid("sampling only");

/// Reads the formats to extract in order; the first valid context wins. `b3` is the single
/// header when the request has one ("The single-header variant takes precedence over the
/// multiple header one when extracting fields"), the `X-B3-*` headers otherwise; `b3-multi` is
/// the `X-B3-*` headers only (read once however both are listed).
fn extract(cx: &Cx<'_, TracePropagation>) -> Extracted {
    let ex = &*cx.ex;
    let mut out = Extracted::default();
    let mut multi_read = false;
    for format in &cx.config.extract {
        let parsed = match format {
            Format::W3c => single_line(ex.header_values(TRACEPARENT))
                .map(|v| (Format::W3c, v.and_then(formats::parse_traceparent))),
            Format::B3 if ex.has_header(B3) => single_line(ex.header_values(B3)).map(|v| {
                let parsed = v.and_then(formats::parse_b3);
                (Format::B3, b3_context(parsed, &mut out.hint))
            }),
            Format::B3 | Format::B3Multi => {
                if multi_read || !B3_MULTI.iter().any(|h| ex.has_header(h)) {
                    None
                } else {
                    multi_read = true;
                    // The first line of each header ("the first value wins").
                    let parsed = formats::parse_b3_multi(|n| ex.header(n));
                    Some((Format::B3Multi, b3_context(parsed, &mut out.hint)))
                }
            }
            Format::Jaeger => single_line(ex.header_values(JAEGER))
                .map(|v| (Format::Jaeger, v.and_then(formats::parse_uber_trace_id))),
            Format::GrpcTraceBin => single_line(ex.header_values(GRPC_TRACE_BIN)).map(|v| {
                (
                    Format::GrpcTraceBin,
                    v.and_then(formats::parse_grpc_trace_bin),
                )
            }),
        };
        match parsed {
            Some((read, Ok(context))) => {
                // Only next to a valid traceparent: "If the vendor failed to parse traceparent,
                // it MUST NOT attempt to parse tracestate".
                if read == Format::W3c {
                    out.trace_state = TraceState::parse_lines(ex.header_values(TRACESTATE));
                }
                out.found = Some((read, context));
                return out;
            }
            Some((_, Err(SAMPLING_ONLY))) | None => {}
            Some((_, Err(_))) => out.invalid += 1,
        }
    }
    out
}

/// The context of a B3 value; a sampling decision alone becomes the hint for a new trace.
fn b3_context(
    parsed: Result<B3Value, Invalid>,
    hint: &mut Option<bool>,
) -> Result<SpanContext, Invalid> {
    let b3 = parsed?;
    match b3.context() {
        Some(c) => Ok(c),
        None => {
            if hint.is_none() {
                *hint = b3.sampled();
            }
            Err(SAMPLING_ONLY)
        }
    }
}

/// Removes the propagation headers of every format extracted or injected, so the upstream never
/// sees a stale parent in a format this hop did not rewrite; headers about to be written are left
/// for the write to replace (one hostcall instead of two).
fn remove_headers(cx: &mut Cx<'_, TracePropagation>, out: &[(&'static str, String)]) {
    let formats: Vec<Format> = cx
        .config
        .extract
        .iter()
        .chain(cx.config.inject.iter())
        .copied()
        .collect();
    let mut remove = |name: &str| {
        if !out.iter().any(|(n, _)| *n == name) {
            cx.ex.remove_header(name);
        }
    };
    for f in formats {
        match f {
            Format::W3c => {
                remove(TRACEPARENT);
                remove(TRACESTATE);
            }
            Format::B3 | Format::B3Multi => {
                remove(B3);
                for h in B3_MULTI {
                    remove(h);
                }
            }
            Format::Jaeger => remove(JAEGER),
            Format::GrpcTraceBin => remove(GRPC_TRACE_BIN),
        }
    }
}

/// The headers this hop writes upstream, in every format to inject.
fn injected(
    inject: &[Format],
    context: &SpanContext,
    parent: Option<SpanId>,
    trace_state: &str,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for f in inject {
        match f {
            Format::W3c => {
                out.push((TRACEPARENT, formats::format_traceparent(context)));
                if !trace_state.is_empty() {
                    out.push((TRACESTATE, trace_state.to_string()));
                }
            }
            Format::B3 => out.push((B3, formats::format_b3(context, parent))),
            Format::B3Multi => out.extend(formats::format_b3_multi(context, parent)),
            Format::Jaeger => out.push((JAEGER, formats::format_uber_trace_id(context, parent))),
            Format::GrpcTraceBin => {
                out.push((GRPC_TRACE_BIN, formats::format_grpc_trace_bin(context)))
            }
        }
    }
    out
}

fn random_bytes<const N: usize>(host: &dyn Host) -> [u8; N] {
    let mut b = [0u8; N];
    mesh_kit::host::random_pooled(host, &mut b);
    b
}

/// A span or trace id is never all zero (it would be invalid in every format).
fn nonzero<const N: usize>(mut b: [u8; N]) -> [u8; N] {
    if b.iter().all(|x| *x == 0) {
        if let Some(last) = b.last_mut() {
            *last = 1;
        }
    }
    b
}

/// Uniform in [0, 1).
fn random_ratio(host: &dyn Host) -> f64 {
    let r = u64::from_le_bytes(random_bytes(host));
    (r >> 11) as f64 / (1u64 << 53) as f64
}

/// The stage driven through the kit's adapter (`Root` → `Request`, as Envoy drives it) over the
/// kit's in-memory host (`mesh_kit::testing::TestHost`: it serves the request headers, records
/// the header writes, response headers, metrics and export calls, and draws deterministic random
/// bytes).
#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    use super::*;
    use crate::otlp::pb::collector::ExportTraceServiceRequest;
    use mesh_kit::stage::{single, Request, Root};
    use mesh_kit::testing::TestHost;
    use prost::Message;
    use std::rc::Rc;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute, so these tests also run
    // compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";
    const OTHER_TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const THIRD_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

    fn tp(flags: &str) -> String {
        format!("00-{TRACE}-{SPAN}-{flags}")
    }

    fn new_host(headers: &[(&str, &str)], seed: u64) -> Rc<TestHost> {
        let host = TestHost::with_headers(headers);
        host.random_state.set(seed);
        Rc::new(host)
    }

    /// What these tests read back from the host.
    trait Seen {
        /// The value of `mesh.trace_propagation.<name>` (panics when never defined).
        fn stat(&self, name: &str) -> i64;
        fn writes(&self) -> Vec<(String, Option<String>)>;
        fn out(&self, name: &str) -> Vec<String>;
        fn out_one(&self, name: &str) -> String;
        fn traceparent(&self) -> SpanContext;
    }

    impl Seen for TestHost {
        fn stat(&self, name: &str) -> i64 {
            let full = format!("mesh.trace_propagation.{name}");
            self.metric(&full)
                .unwrap_or_else(|| panic!("{full} is not defined"))
        }

        fn writes(&self) -> Vec<(String, Option<String>)> {
            self.header_writes.borrow().clone()
        }

        fn out(&self, name: &str) -> Vec<String> {
            self.outgoing()
                .into_iter()
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v)
                .collect()
        }

        fn out_one(&self, name: &str) -> String {
            match self.out(name).as_slice() {
                [one] => one.clone(),
                other => panic!("{name}: expected one line, got {other:?}"),
            }
        }

        fn traceparent(&self) -> SpanContext {
            formats::parse_traceparent(&self.out_one(TRACEPARENT)).unwrap()
        }
    }

    fn root(config: &str, host: &Rc<TestHost>) -> Root {
        let host: Rc<dyn Host> = host.clone();
        let mut root = Root::new(TracePropagation::NAME, single::<TracePropagation>, host);
        root.configure(config.as_bytes()).unwrap();
        root
    }

    /// One request with these headers through a stage configured with `config`.
    fn hop(config: &str, headers: &[(&str, &str)]) -> Rc<TestHost> {
        hop_seeded(config, headers, 0)
    }

    fn hop_seeded(config: &str, headers: &[(&str, &str)], seed: u64) -> Rc<TestHost> {
        let host = new_host(headers, seed);
        let root = root(config, &host);
        let mut r: Request = root.new_request();
        assert!(r.request_headers(), "the stage never rejects");
        r.response_headers();
        r.log();
        host
    }

    fn pairs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
        headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    const ALL: &str = r#"{"extract": ["w3c", "b3", "b3-multi", "jaeger", "grpc-trace-bin"],
        "inject": ["w3c", "b3", "b3-multi", "jaeger", "grpc-trace-bin"]}"#;

    #[test]
    fn the_configured_order_decides_which_valid_context_wins() {
        let b3 = format!("{OTHER_TRACE}-{SPAN}-1");
        let jaeger = format!("{THIRD_TRACE}:{SPAN}:0:1");
        let headers = [
            ("traceparent", tp("01")),
            ("b3", b3),
            ("uber-trace-id", jaeger),
        ];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for (extract, want, format) in [
            (r#"["w3c", "b3", "jaeger"]"#, TRACE, "w3c"),
            (r#"["b3", "w3c", "jaeger"]"#, OTHER_TRACE, "b3"),
            (r#"["jaeger", "b3", "w3c"]"#, THIRD_TRACE, "jaeger"),
        ] {
            let host = hop(&format!(r#"{{"extract": {extract}}}"#), &headers);
            assert_eq!(host.traceparent().trace_id.to_hex(), want, "{extract}");
            assert_eq!(host.stat(&format!("extracted.format={format}")), 1);
            assert_eq!((host.stat("invalid"), host.stat("started")), (0, 0));
        }
    }

    #[test]
    fn an_invalid_context_is_counted_and_the_next_format_is_tried() {
        let b3 = format!("{OTHER_TRACE}-{SPAN}-1");
        let bad = format!("00-{}-{SPAN}-01", TRACE.to_uppercase());
        let host = hop("{}", &[("traceparent", &bad), ("b3", &b3)]);
        assert_eq!(host.traceparent().trace_id.to_hex(), OTHER_TRACE);
        assert_eq!(host.stat("invalid"), 1);
        assert_eq!(host.stat("extracted.format=b3"), 1);
        // All invalid: a new trace, every one counted.
        let host = hop(
            "{}",
            &[
                ("traceparent", &bad),
                ("b3", "nope"),
                ("uber-trace-id", "0:1:0:1"),
            ],
        );
        assert_ne!(host.traceparent().trace_id.to_hex(), TRACE);
        assert_eq!((host.stat("invalid"), host.stat("started")), (3, 1));
    }

    #[test]
    fn b3_reads_the_single_header_first_and_the_x_b3_headers_without_it() {
        let single = format!("{OTHER_TRACE}-{SPAN}-1");
        let multi = [
            ("x-b3-traceid", THIRD_TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "1"),
        ];
        // Default extraction (no "b3-multi" listed): the X-B3-* headers are read by "b3".
        let host = hop("{}", &multi);
        assert_eq!(host.traceparent().trace_id.to_hex(), THIRD_TRACE);
        assert_eq!(host.stat("extracted.format=b3-multi"), 1);
        // "The single-header variant takes precedence over the multiple header one".
        let mut both = multi.to_vec();
        both.push(("b3", &single));
        let host = hop("{}", &both);
        assert_eq!(host.traceparent().trace_id.to_hex(), OTHER_TRACE);
        // "b3-multi" alone ignores the single header.
        let host = hop(r#"{"extract": ["b3-multi"]}"#, &both);
        assert_eq!(host.traceparent().trace_id.to_hex(), THIRD_TRACE);
    }

    #[test]
    fn without_a_valid_context_a_new_random_trace_starts_sampled_by_the_ratio() {
        for (ratio, sampled) in [("1.0", true), ("0.0", false)] {
            let host = hop(&format!(r#"{{"sampling_ratio": {ratio}}}"#), &[]);
            let c = host.traceparent();
            assert!(
                c.random,
                "the W3C random flag is set on a trace started here"
            );
            assert_eq!(c.is_sampled(), sampled, "ratio {ratio}");
            assert_eq!(host.stat("started"), 1);
            assert!(c.trace_id.is_valid() && c.span_id.is_valid());
        }
        // No parent in the formats that carry one: this hop is the root.
        let host = hop(r#"{"inject": ["b3", "b3-multi", "jaeger"]}"#, &[]);
        assert!(host.out("x-b3-parentspanid").is_empty());
        assert!(!host.out_one("b3").contains("-1-"), "{:?}", host.out("b3"));
        assert!(host.out_one("uber-trace-id").contains(":0:"));
        // Different requests, different traces.
        let a = hop_seeded("{}", &[], 1).traceparent();
        let b = hop_seeded("{}", &[], 2).traceparent();
        assert_ne!(a.trace_id, b.trace_id);
    }

    #[test]
    fn a_lone_b3_sampling_decision_is_honoured_for_the_new_trace() {
        for headers in [
            vec![("b3", "0")],
            vec![("x-b3-sampled", "0")],
            vec![("x-b3-sampled", "false")],
        ] {
            let host = hop(r#"{"sampling_ratio": 1.0}"#, &headers);
            assert!(!host.traceparent().is_sampled(), "{headers:?}");
            assert_eq!((host.stat("started"), host.stat("invalid")), (1, 0));
        }
        let host = hop(r#"{"sampling_ratio": 0.0}"#, &[("b3", "d")]);
        assert!(host.traceparent().is_sampled());
    }

    #[test]
    fn every_hop_gets_a_new_span_id_and_the_incoming_span_becomes_its_parent() {
        let config = r#"{"inject": ["w3c", "b3-multi"]}"#;
        let first = hop_seeded(config, &[("traceparent", &tp("01"))], 1);
        let one = first.traceparent();
        assert_eq!(one.trace_id.to_hex(), TRACE);
        assert_ne!(one.span_id.to_hex(), SPAN);
        assert_eq!(first.out_one("x-b3-parentspanid"), SPAN);
        // The next hop reads what this one wrote.
        let next = first.outgoing();
        let second = hop_seeded(config, &pairs(&next), 2);
        let two = second.traceparent();
        assert_eq!(two.trace_id, one.trace_id);
        assert_ne!(two.span_id, one.span_id);
        assert_eq!(second.out_one("x-b3-parentspanid"), one.span_id.to_hex());
        // Several requests on one root (one VM): a span id each.
        let host = new_host(&[("traceparent", &tp("01"))], 7);
        let root = root("{}", &host);
        let mut spans = Vec::new();
        for _ in 0..3 {
            let mut r = root.new_request();
            assert!(r.request_headers());
            spans.push(r.ex.header(TRACEPARENT).unwrap().to_string());
        }
        spans.dedup();
        assert_eq!(spans.len(), 3, "{spans:?}");
    }

    #[test]
    fn every_format_is_written_with_the_same_trace_span_and_decision() {
        for (incoming, sampled, debug) in [
            (("traceparent", tp("01")), true, false),
            (("traceparent", tp("00")), false, false),
            (("b3", format!("{TRACE}-{SPAN}-d")), true, true),
            (("uber-trace-id", format!("{TRACE}:{SPAN}:0:3")), true, true),
        ] {
            let host = hop(ALL, &[(incoming.0, &incoming.1)]);
            let w3c = host.traceparent();
            let b3 = formats::parse_b3(&host.out_one("b3"))
                .unwrap()
                .context()
                .unwrap();
            let multi = {
                let out = host.outgoing();
                formats::parse_b3_multi(|n| {
                    out.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str())
                })
                .unwrap()
                .context()
                .unwrap()
            };
            let jaeger = formats::parse_uber_trace_id(&host.out_one("uber-trace-id")).unwrap();
            let grpc = formats::parse_grpc_trace_bin(&host.out_one("grpc-trace-bin")).unwrap();
            for (name, c) in [
                ("b3", b3),
                ("b3-multi", multi),
                ("jaeger", jaeger),
                ("grpc", grpc),
            ] {
                assert_eq!(
                    (c.trace_id, c.span_id),
                    (w3c.trace_id, w3c.span_id),
                    "{name}"
                );
                assert_eq!(c.is_sampled(), sampled, "{incoming:?} → {name}");
            }
            assert_eq!((b3.debug, multi.debug, jaeger.debug), (debug, debug, debug));
            assert_eq!(w3c.trace_id.to_hex(), TRACE);
            assert_ne!(w3c.span_id.to_hex(), SPAN);
            // The caller's span is the parent where a format carries one.
            assert_eq!(host.out_one("x-b3-parentspanid"), SPAN);
            assert!(host.out_one("uber-trace-id").contains(&format!(":{SPAN}:")));
        }
    }

    #[test]
    fn a_higher_traceparent_version_is_written_back_as_version_00() {
        let host = hop(
            "{}",
            &[("traceparent", &format!("cc-{TRACE}-{SPAN}-01-future"))],
        );
        let out = host.out_one(TRACEPARENT);
        assert!(out.starts_with(&format!("00-{TRACE}-")), "{out}");
        assert!(out.ends_with("-01"));
        // Flags other than sampled and random are written as zero.
        let host = hop("{}", &[("traceparent", &tp("ff"))]);
        assert!(host.out_one(TRACEPARENT).ends_with("-03"));
    }

    #[test]
    fn stale_headers_of_every_format_in_play_are_removed_and_others_left_alone() {
        let headers = [
            ("traceparent", tp("01")),
            ("b3", format!("{OTHER_TRACE}-{SPAN}-1")),
            ("x-b3-traceid", OTHER_TRACE.to_string()),
            ("x-b3-spanid", SPAN.to_string()),
            ("x-b3-parentspanid", SPAN.to_string()),
            ("x-b3-sampled", "1".to_string()),
            ("x-b3-flags", "1".to_string()),
            ("uber-trace-id", format!("{THIRD_TRACE}:{SPAN}:0:1")),
            ("grpc-trace-bin", "AAA=".to_string()),
            ("x-other", "kept".to_string()),
        ];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // Default: extract w3c, b3, jaeger, grpc-trace-bin; inject w3c.
        let host = hop("{}", &headers);
        let names: Vec<String> = host.outgoing().into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["x-other", "traceparent"], "{:?}", host.outgoing());
        // Only W3C in play: the other formats' headers pass untouched.
        let host = hop(r#"{"extract": ["w3c"], "inject": ["w3c"]}"#, &headers);
        let untouched: Vec<&str> = headers
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| *k != "traceparent")
            .collect();
        for name in untouched {
            assert_eq!(host.out(name).len(), 1, "{name}");
        }
        assert_eq!(host.writes().len(), 1, "one write: {:?}", host.writes());
    }

    #[test]
    fn a_repeated_non_list_header_is_invalid_and_starts_a_new_trace() {
        let jaeger = format!("{TRACE}:{SPAN}:0:1");
        let b3 = format!("{TRACE}-{SPAN}-1");
        let grpc = formats::format_grpc_trace_bin(&formats::parse_traceparent(&tp("01")).unwrap());
        let other = format!("00-{OTHER_TRACE}-{SPAN}-01");
        for (name, first, second) in [
            ("traceparent", tp("01"), other.clone()),
            ("traceparent", tp("01"), tp("01")),
            ("b3", b3.clone(), b3.clone()),
            ("uber-trace-id", jaeger.clone(), jaeger.clone()),
            ("grpc-trace-bin", grpc.clone(), grpc.clone()),
        ] {
            let headers = [
                (name, first.as_str()),
                (name, second.as_str()),
                ("tracestate", "foo=1"),
            ];
            let host = hop(ALL, &headers);
            let c = host.traceparent();
            assert_ne!(c.trace_id.to_hex(), TRACE, "{name} twice");
            assert_ne!(c.trace_id.to_hex(), OTHER_TRACE, "{name} twice");
            assert_eq!(
                (host.stat("invalid"), host.stat("started")),
                (1, 1),
                "{name}"
            );
            assert!(
                host.out("tracestate").is_empty(),
                "{name}: tracestate goes with it"
            );
            // Written anew (every format is injected): one line replaces both.
            assert_eq!(host.out(name).len(), 1, "{name}");
        }
    }

    #[test]
    fn repeated_x_b3_headers_take_their_first_line() {
        let host = hop(
            "{}",
            &[
                ("x-b3-traceid", TRACE),
                ("x-b3-traceid", OTHER_TRACE),
                ("x-b3-spanid", SPAN),
                ("x-b3-sampled", "0"),
                ("x-b3-sampled", "1"),
            ],
        );
        let c = host.traceparent();
        assert_eq!(c.trace_id.to_hex(), TRACE);
        assert!(!c.is_sampled());
    }

    #[test]
    fn tracestate_lines_become_one_line_next_to_the_kept_traceparent() {
        let parent = tp("00");
        let host = hop(
            "{}",
            &[
                ("traceparent", &parent),
                ("tracestate", "foo=1,bar=2"),
                ("tracestate", "rojo=1,congo=2"),
                ("tracestate", ""),
                ("tracestate", "baz=3"),
            ],
        );
        assert_eq!(
            host.out_one("tracestate"),
            "foo=1,bar=2,rojo=1,congo=2,baz=3"
        );
        assert_eq!(host.stat("tracestate_dropped"), 0);
        // Bad members and repeated keys go, counted; the others stay in order.
        let host = hop(
            "{}",
            &[
                ("traceparent", &parent),
                ("tracestate", "foo=1,FOO=2,foo@=3"),
                ("tracestate", "foo=4,@bar=5,baz=6"),
            ],
        );
        assert_eq!(host.out_one("tracestate"), "foo=1,foo@=3,baz=6");
        assert_eq!(host.stat("tracestate_dropped"), 3);
        // 32 members pass whole over several lines; 33 are dropped whole.
        let members: Vec<String> = (1..=33).map(|i| format!("bar{i:02}={i:02}")).collect();
        let lines = |n: usize| -> Vec<(&str, String)> {
            let mut h = vec![("traceparent", parent.clone())];
            h.extend(members[..n].chunks(10).map(|c| ("tracestate", c.join(","))));
            h
        };
        let h32 = lines(32);
        let host = hop(
            "{}",
            &h32.iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        );
        assert_eq!(host.out_one("tracestate"), members[..32].join(","));
        let h33 = lines(33);
        let host = hop(
            "{}",
            &h33.iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        );
        assert!(host.out("tracestate").is_empty());
        assert_eq!(host.stat("tracestate_dropped"), 33);
        // Empty: not sent.
        let host = hop("{}", &[("traceparent", &parent), ("tracestate", " , ")]);
        assert!(host.out("tracestate").is_empty());
    }

    #[test]
    fn tracestate_without_its_traceparent_is_not_propagated() {
        for headers in [
            vec![("tracestate", "foo=1")],
            vec![("traceparent", "00-bad"), ("tracestate", "foo=1")],
            vec![
                ("b3", &*format!("{TRACE}-{SPAN}-1")),
                ("tracestate", "foo=1"),
            ],
        ] {
            let host = hop("{}", &headers);
            assert!(host.out("tracestate").is_empty(), "{headers:?}");
            assert_eq!(
                host.stat("tracestate_dropped"),
                0,
                "never parsed: {headers:?}"
            );
        }
    }

    #[test]
    fn baggage_lines_are_one_list_within_the_limits() {
        // One line, nothing over the limits: untouched, no write.
        let host = hop(
            r#"{"extract": [], "inject": []}"#,
            &[("baggage", "a=1, b=2")],
        );
        assert!(host.writes().is_empty(), "{:?}", host.writes());
        // Several lines: written back as one, in order.
        let host = hop(
            r#"{"extract": [], "inject": []}"#,
            &[
                ("baggage", "a=1"),
                ("baggage", ""),
                ("baggage", "b=2;p,c=3"),
            ],
        );
        assert_eq!(host.out_one("baggage"), "a=1,b=2;p,c=3");
        assert_eq!(host.stat("baggage_dropped"), 0);
        // The limits hold for the lines combined: 40 + 40 members, 64 kept.
        let members: Vec<String> = (0..80).map(|i| format!("k{i}=v{i}")).collect();
        let (l1, l2) = (members[..40].join(","), members[40..].join(","));
        let host = hop("{}", &[("baggage", &l1), ("baggage", &l2)]);
        assert_eq!(host.out_one("baggage"), members[..64].join(","));
        assert_eq!(host.stat("baggage_dropped"), 16);
        // Nothing valid: removed.
        let host = hop("{}", &[("baggage", "no value"), ("baggage", ";")]);
        assert!(host.out("baggage").is_empty());
    }

    #[test]
    fn a_request_with_one_valid_context_costs_one_header_write() {
        let host = hop("{}", &[("traceparent", &tp("01")), ("baggage", "a=1")]);
        assert_eq!(host.writes().len(), 1, "{:?}", host.writes());
        let host = hop(
            "{}",
            &[
                ("traceparent", &tp("01")),
                ("tracestate", "a=1"),
                ("tracestate", "b=2"),
            ],
        );
        assert_eq!(host.writes().len(), 2, "{:?}", host.writes());
    }

    #[test]
    fn response_headers_name_this_hop() {
        let host = hop(
            r#"{"response_headers": ["traceresponse", "server-timing"]}"#,
            &[("traceparent", &tp("01"))],
        );
        let upstream = host.out_one(TRACEPARENT);
        let written = host.response_headers.borrow().clone();
        assert_eq!(
            written,
            [
                ("traceresponse".to_string(), upstream.clone()),
                (
                    "server-timing".to_string(),
                    format!("trace;desc=\"{upstream}\"")
                ),
            ]
        );
    }

    #[test]
    fn exported_spans_chain_each_hop_to_the_span_of_its_caller() {
        let config = r#"{"export": {"cluster": "otlp", "service_name": "edge"}}"#;
        let host = new_host(&[("traceparent", &tp("01"))], 3);
        let root = root(config, &host);
        let mut r = root.new_request();
        assert!(r.request_headers());
        r.log();
        // Not sampled: no span.
        let quiet = new_host(&[("traceparent", &tp("00"))], 4);
        let quiet_root = self::root(config, &quiet);
        let mut q = quiet_root.new_request();
        assert!(q.request_headers());
        q.log();
        quiet_root.on_tick();
        assert!(quiet.http_calls.borrow().is_empty());

        root.on_tick();
        let (cluster, _, body) = host.http_calls.borrow()[0].clone();
        assert_eq!(cluster, "otlp");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let spans: Vec<_> = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .collect();
        assert_eq!(spans.len(), 1);
        let upstream = host.traceparent();
        assert_eq!(spans[0].trace_id, upstream.trace_id.0.to_vec());
        assert_eq!(
            spans[0].span_id,
            upstream.span_id.0.to_vec(),
            "the span the upstream sees"
        );
        assert_eq!(
            spans[0].parent_span_id,
            SpanId::from_hex(SPAN).unwrap().0.to_vec(),
            "the caller's span is the parent"
        );
        // The collector answers: counted exported; a failure is counted too.
        host.call_status.set(Some(200));
        root.on_http_call_response(1);
        assert_eq!(host.stat("spans_exported"), 1);
        let mut r = root.new_request();
        assert!(r.request_headers());
        r.log();
        root.on_tick();
        host.call_status.set(Some(503));
        root.on_http_call_response(2);
        assert_eq!(
            (host.stat("export_failed"), host.stat("spans_dropped")),
            (1, 1)
        );
    }
}
