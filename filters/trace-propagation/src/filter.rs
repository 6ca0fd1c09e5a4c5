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
use mesh_kit::host::{le_u64, Host, MetricKind};
use mesh_kit::stage::{Cx, Flow, OnInvalid, Stage};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::{Duration, UNIX_EPOCH};

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
        let c = |name: &str| {
            host.define_metric(
                MetricKind::Counter,
                &format!("mesh.trace_propagation.{name}"),
            )
        };
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
                .map(|f| (*f, c(&format!("extracted.format={}", f.name()))))
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

/// The spans of this VM waiting for the collector, and the export call in flight.
struct Exporter {
    config: Export,
    queue: RefCell<VecDeque<FinishedSpan>>,
    in_flight: Cell<Option<(u32, u64)>>,
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
            queue: RefCell::new(VecDeque::new()),
            in_flight: Cell::new(None),
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
            .property(&["request", "time"])
            .as_deref()
            .and_then(le_u64)
            .unwrap_or_else(|| now_nanos(cx.ex.host()));
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
        let code = cx
            .ex
            .property(&["response", "code"])
            .as_deref()
            .and_then(le_u64)
            .unwrap_or(0);
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
            if let Some(g) = cx
                .ex
                .property(&["response", "grpc_status"])
                .as_deref()
                .and_then(le_u64)
            {
                attributes.push((
                    "rpc.grpc.status_code".to_string(),
                    AttrValue::Int(i64::try_from(g).unwrap_or(0)),
                ));
            }
        }
        if let Some(cluster) = cx
            .ex
            .property(&["xds", "cluster_name"])
            .and_then(|b| String::from_utf8(b).ok())
        {
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
            end_unix_nano: now_nanos(host).max(hop.start_unix_nano),
            attributes,
            error: code >= 500,
        };
        let mut queue = exporter.queue.borrow_mut();
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
        if exporter.in_flight.get().is_some() {
            return;
        }
        let batch: Vec<FinishedSpan> = {
            let mut queue = exporter.queue.borrow_mut();
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
            Some(token) => exporter.in_flight.set(Some((token, n))),
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
        let Some((mine, n)) = exporter.in_flight.get() else {
            return false;
        };
        if mine != token {
            return false;
        }
        exporter.in_flight.set(None);
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

fn now_nanos(host: &dyn Host) -> u64 {
    host.now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
