//! The trace-propagation stage: the adapter-facing table of contents of the filter.
//!
//! Request headers: extract the first valid context among the configured formats (an invalid
//! one is counted and the next format tried); with none, start a trace (random 128-bit trace id,
//! sampled by `sampling_ratio`, W3C random flag set). Give this hop a new span id, remove the
//! propagation headers of every format in play and write the context in every injected format
//! (the incoming span becomes the parent). tracestate passes through, limited, next to a kept
//! traceparent; baggage is limited. Response headers: `traceresponse` / `server-timing`.
//! End of stream: with `export`, a SERVER span per sampled request goes into a per-VM queue that
//! `on_tick` sends to the collector as OTLP/HTTP — never on a request's path.

use crate::config::{Config, Export, ResponseHeader};
use crate::formats::{self, Format, Sampling, SpanContext, SpanId, TraceId};
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
        let (found, invalid, hint) = extract(cx);
        Metrics::add(host, self.metrics.invalid, invalid);
        let (mut context, parent, trace_state) = match found {
            Some((format, context, trace_state)) => {
                let id = self
                    .metrics
                    .extracted
                    .iter()
                    .find(|(f, _)| *f == format)
                    .and_then(|(_, id)| *id);
                Metrics::add(host, id, 1);
                (context, Some(context.span_id), trace_state)
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
                (context, None, String::new())
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
        if let Some(b) = cx.ex.header(BAGGAGE).map(str::to_string) {
            let (kept, dropped) = formats::limit_baggage(&b);
            Metrics::add(
                cx.ex.host(),
                self.metrics.baggage_dropped,
                u64::from(dropped),
            );
            if dropped > 0 {
                if kept.is_empty() {
                    cx.ex.remove_header(BAGGAGE);
                } else {
                    cx.ex.set_header(BAGGAGE, &kept);
                }
            }
        }
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

type Found = (Format, SpanContext, String);

/// The first valid context among the formats to extract, the number of invalid ones seen
/// before it, and a sampling decision carried without a context (`b3: 0`).
fn extract(cx: &Cx<'_, TracePropagation>) -> (Option<Found>, u64, Option<bool>) {
    let ex = &cx.ex;
    let mut invalid = 0;
    let mut hint = None;
    for format in &cx.config.extract {
        let parsed = match format {
            Format::W3c => ex.header(TRACEPARENT).map(|v| {
                formats::parse_traceparent(v).map(|c| {
                    let ts = ex
                        .header(TRACESTATE)
                        .and_then(|t| formats::TraceState::parse(t).ok())
                        .map(|t| t.limited().0)
                        .unwrap_or_default();
                    (c, ts)
                })
            }),
            Format::B3 => ex.header(B3).map(|v| match formats::parse_b3(v) {
                Ok(b3) => match b3.context() {
                    Some(c) => Ok((c, String::new())),
                    None => {
                        hint = b3.sampled();
                        Err(formats::Invalid("sampling only"))
                    }
                },
                Err(e) => Err(e),
            }),
            Format::B3Multi => ex.header(B3_MULTI[0]).map(|_| {
                formats::parse_b3_multi(|n| ex.header(n)).and_then(|b3| {
                    b3.context()
                        .map(|c| (c, String::new()))
                        .ok_or(formats::Invalid("no trace id"))
                })
            }),
            Format::Jaeger => ex
                .header(JAEGER)
                .map(|v| formats::parse_uber_trace_id(v).map(|c| (c, String::new()))),
            Format::GrpcTraceBin => ex
                .header(GRPC_TRACE_BIN)
                .map(|v| formats::parse_grpc_trace_bin(v).map(|c| (c, String::new()))),
        };
        match parsed {
            Some(Ok((context, trace_state))) => {
                return (Some((*format, context, trace_state)), invalid, hint)
            }
            Some(Err(formats::Invalid("sampling only"))) => {}
            Some(Err(_)) => invalid += 1,
            None => {}
        }
    }
    (None, invalid, hint)
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
    host.random(&mut b);
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
