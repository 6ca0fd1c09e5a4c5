//! Trace propagation end to end: a real Envoy loading `mesh_trace_propagation.wasm`, an upstream
//! that echoes what it received, a second Envoy behind the first, and a real OTLP/HTTP receiver
//! decoding `ExportTraceServiceRequest` with prost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_integration::bootstrap::{bootstrap, cluster, filter, listener, route, with_metadata};
use mesh_integration::client;
use mesh_integration::envoy::Envoy;
use mesh_integration::fixture;
use mesh_integration::otlp_receiver;
use mesh_integration::upstream::{self, Record};
use mesh_trace_propagation::formats::{self, Sampling, SpanContext};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const FILTER: &str = "mesh.trace_propagation";
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";

fn start(config: Value, svc: SocketAddr, extra_clusters: Vec<Value>) -> Envoy {
    let mut clusters = vec![cluster("svc", svc, true)];
    clusters.extend(extra_clusters);
    Envoy::start(&bootstrap(
        vec![listener(
            "main",
            vec![route("orders", "/", "svc")],
            vec![filter(FILTER, &config)],
        )],
        clusters,
    ))
    .unwrap()
}

/// Every format the upstream received, parsed back.
struct Seen {
    w3c: SpanContext,
    b3: SpanContext,
    b3_multi: SpanContext,
    jaeger: SpanContext,
    grpc: SpanContext,
}

fn seen(r: &Record) -> Seen {
    let h = |n: &str| {
        r.header(n)
            .unwrap_or_else(|| panic!("upstream did not see {n}: {:?}", r.headers))
    };
    Seen {
        w3c: formats::parse_traceparent(h("traceparent")).unwrap(),
        b3: formats::parse_b3(h("b3")).unwrap().context().unwrap(),
        b3_multi: formats::parse_b3_multi(|n| r.header(n))
            .unwrap()
            .context()
            .unwrap(),
        jaeger: formats::parse_uber_trace_id(h("uber-trace-id")).unwrap(),
        grpc: formats::parse_grpc_trace_bin(h("grpc-trace-bin")).unwrap(),
    }
}

fn all_formats() -> Value {
    json!({"inject": ["w3c", "b3", "b3-multi", "jaeger", "grpc-trace-bin"], "extract": ["w3c", "b3", "b3-multi", "jaeger", "grpc-trace-bin"]})
}

#[tokio::test(flavor = "multi_thread")]
async fn every_format_in_becomes_the_same_trace_in_every_format_out_with_a_new_span() {
    let svc = upstream::local("orders").await.unwrap();
    let envoy = start(all_formats(), svc.addr(), vec![]);
    let addr = envoy.listener("main");
    let trace64 = "a3ce929d0e0e4736";
    let grpc_bin = formats::format_grpc_trace_bin(
        &formats::parse_traceparent(&format!("00-{TRACE}-{SPAN}-01")).unwrap(),
    );
    // (what, headers sent, trace id expected, sampled, debug)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, String, bool, bool);
    let cases: Vec<Case> = vec![
        (
            "w3c",
            vec![("traceparent", format!("00-{TRACE}-{SPAN}-01"))],
            TRACE.into(),
            true,
            false,
        ),
        (
            "w3c not sampled",
            vec![("traceparent", format!("00-{TRACE}-{SPAN}-00"))],
            TRACE.into(),
            false,
            false,
        ),
        (
            "b3 single",
            vec![("b3", format!("{TRACE}-{SPAN}-1"))],
            TRACE.into(),
            true,
            false,
        ),
        (
            "b3 single 64-bit",
            vec![("b3", format!("{trace64}-{SPAN}-0"))],
            format!("0000000000000000{trace64}"),
            false,
            false,
        ),
        (
            "b3 debug",
            vec![("b3", format!("{TRACE}-{SPAN}-d"))],
            TRACE.into(),
            true,
            true,
        ),
        (
            "b3 multi",
            vec![
                ("x-b3-traceid", TRACE.into()),
                ("x-b3-spanid", SPAN.into()),
                ("x-b3-sampled", "1".into()),
            ],
            TRACE.into(),
            true,
            false,
        ),
        (
            "b3 multi flags",
            vec![
                ("x-b3-traceid", trace64.into()),
                ("x-b3-spanid", SPAN.into()),
                ("x-b3-flags", "1".into()),
            ],
            format!("0000000000000000{trace64}"),
            true,
            true,
        ),
        (
            "jaeger",
            vec![("uber-trace-id", format!("{trace64}:{SPAN}:0:1"))],
            format!("0000000000000000{trace64}"),
            true,
            false,
        ),
        (
            "jaeger debug",
            vec![("uber-trace-id", format!("{TRACE}:{SPAN}:0:3"))],
            TRACE.into(),
            true,
            true,
        ),
        (
            "grpc-trace-bin",
            vec![("grpc-trace-bin", grpc_bin)],
            TRACE.into(),
            true,
            false,
        ),
    ];
    for (what, headers, trace, sampled, debug) in cases {
        svc.clear();
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            client::get(addr, "/orders/1", &h).await.unwrap().status,
            200
        );
        let s = seen(&svc.requests()[0]);
        for (format, c) in [
            ("w3c", &s.w3c),
            ("b3", &s.b3),
            ("b3-multi", &s.b3_multi),
            ("jaeger", &s.jaeger),
            ("grpc", &s.grpc),
        ] {
            assert_eq!(c.trace_id.to_hex(), trace, "{what} → {format}: same trace");
            assert_eq!(
                c.span_id.to_hex(),
                s.w3c.span_id.to_hex(),
                "{what} → {format}: one span id for this hop"
            );
            assert_ne!(c.span_id.to_hex(), SPAN, "{what} → {format}: a new span id");
            let out_sampled = matches!(c.sampling, Sampling::Sampled) || c.debug;
            assert_eq!(out_sampled, sampled, "{what} → {format}: sampling");
        }
        assert_eq!(s.b3.debug, debug, "{what}: b3 carries debug");
        assert_eq!(s.jaeger.debug, debug, "{what}: jaeger carries debug");
        // The incoming span is the parent in the formats that carry one.
        let parent = svc.requests()[0]
            .header("x-b3-parentspanid")
            .map(str::to_string);
        assert_eq!(parent.as_deref(), Some(SPAN), "{what}: parent span");
    }
    let extracted = "mesh_trace_propagation_extracted";
    envoy
        .wait_for_value(extracted, &[("format", "b3")], 3.0)
        .await
        .unwrap();
    envoy
        .wait_for_value(extracted, &[("format", "jaeger")], 2.0)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_traceparents_start_a_new_trace_and_tracestate_goes_with_them() {
    let svc = upstream::local("orders").await.unwrap();
    let envoy = start(
        json!({"extract": ["w3c"], "sampling_ratio": 1.0}),
        svc.addr(),
        vec![],
    );
    let addr = envoy.listener("main");
    let invalid = [
        (
            "uppercase hex",
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
        ),
        ("version ff", format!("ff-{TRACE}-{SPAN}-01")),
        (
            "all-zero trace id",
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
        ),
        (
            "all-zero span id",
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
        ),
        ("short trace id", format!("00-{}-{SPAN}-01", &TRACE[1..])),
        ("long span id", format!("00-{TRACE}-{SPAN}0-01")),
        ("bad flags", format!("00-{TRACE}-{SPAN}-0x")),
        (
            "extra data on version 00",
            format!("00-{TRACE}-{SPAN}-01-extra"),
        ),
        ("missing dash", format!("00{TRACE}-{SPAN}-01")),
    ];
    for (what, tp) in &invalid {
        svc.clear();
        let r = client::get(
            addr,
            "/orders/1",
            &[("traceparent", tp.as_str()), ("tracestate", "vendor=abc")],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200);
        let rec = &svc.requests()[0];
        let c = formats::parse_traceparent(rec.header("traceparent").unwrap()).unwrap();
        assert_ne!(
            c.trace_id.to_hex(),
            TRACE.to_lowercase(),
            "{what}: a new trace"
        );
        assert!(
            c.random,
            "{what}: W3C random flag set on a trace started here"
        );
        assert_eq!(
            rec.header("tracestate"),
            None,
            "{what}: tracestate is dropped with its traceparent"
        );
    }
    let n = invalid.len() as f64;
    envoy
        .wait_for_value("mesh_trace_propagation_invalid", &[], n)
        .await
        .unwrap();
    envoy
        .wait_for_value("mesh_trace_propagation_started", &[], n)
        .await
        .unwrap();

    // A valid one keeps its tracestate whole at the W3C limit of 32 members (a 129-character
    // member is valid), and drops a list of 33 whole.
    for (n, kept_members) in [(32, Some(32)), (33, None)] {
        svc.clear();
        let mut members: Vec<String> = (0..n - 1).map(|i| format!("k{i}=v{i}")).collect();
        members.insert(5, format!("long={}", "x".repeat(124)));
        let ts = members.join(",");
        client::get(
            addr,
            "/orders/1",
            &[
                ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
                ("tracestate", &ts),
            ],
        )
        .await
        .unwrap();
        let kept = svc.requests()[0].header("tracestate").map(str::to_string);
        assert_eq!(
            kept.as_deref().map(|k| k.split(',').count()),
            kept_members,
            "{n} members: {kept:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn baggage_is_limited_and_b3_zero_is_not_sampled() {
    let svc = upstream::local("orders").await.unwrap();
    let envoy = start(all_formats(), svc.addr(), vec![]);
    let addr = envoy.listener("main");
    let baggage: Vec<String> = (0..70).map(|i| format!("k{i}=v{i}")).collect();
    client::get(addr, "/orders/1", &[("baggage", &baggage.join(","))])
        .await
        .unwrap();
    assert_eq!(
        svc.requests()[0]
            .header("baggage")
            .unwrap()
            .split(',')
            .count(),
        64
    );
    envoy
        .wait_for_value("mesh_trace_propagation_baggage_dropped", &[], 6.0)
        .await
        .unwrap();

    svc.clear();
    client::get(addr, "/orders/1", &[("b3", "0")])
        .await
        .unwrap();
    let s = seen(&svc.requests()[0]);
    assert_eq!(s.w3c.sampling, Sampling::NotSampled, "b3: 0 is honoured");
    assert_eq!(s.b3.sampling, Sampling::NotSampled);
}

#[tokio::test(flavor = "multi_thread")]
async fn response_headers_name_this_hop_and_broken_route_metadata_fails_open() {
    let svc = upstream::local("orders").await.unwrap();
    let routes = vec![
        with_metadata(
            route("orders", "/orders", "svc"),
            FILTER,
            json!({"response_headers": ["traceresponse", "server-timing"]}),
        ),
        with_metadata(
            route("broken", "/broken", "svc"),
            FILTER,
            json!({"inject": ["zipkin"]}),
        ),
        route("plain", "/", "svc"),
    ];
    let b = bootstrap(
        vec![listener("main", routes, vec![filter(FILTER, &json!({}))])],
        vec![cluster("svc", svc.addr(), true)],
    );
    let envoy = Envoy::start(&b).unwrap();
    let addr = envoy.listener("main");
    let incoming = format!("00-{TRACE}-{SPAN}-01");

    let r = client::get(addr, "/orders/1", &[("traceparent", &incoming)])
        .await
        .unwrap();
    let upstream = svc.requests()[0].header("traceparent").unwrap().to_string();
    assert_eq!(
        r.header("traceresponse"),
        Some(upstream.as_str()),
        "traceresponse names this hop's span"
    );
    assert_eq!(
        r.header("server-timing"),
        Some(format!("trace;desc=\"{upstream}\"").as_str())
    );

    // Not asked for on the plain route.
    let r = client::get(addr, "/plain", &[("traceparent", &incoming)])
        .await
        .unwrap();
    assert_eq!(r.header("traceresponse"), None);

    // Invalid metadata: headers pass untouched (the forged span id is not replaced), counted.
    svc.clear();
    let r = client::get(
        addr,
        "/broken",
        &[("traceparent", &incoming), ("b3", "garbage")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let rec = &svc.requests()[0];
    assert_eq!(rec.header("traceparent"), Some(incoming.as_str()));
    assert_eq!(rec.header("b3"), Some("garbage"));
    envoy
        .wait_for_value(
            "mesh_trace_propagation_config_error",
            &[("route", "broken")],
            1.0,
        )
        .await
        .unwrap();
    assert!(
        envoy
            .log()
            .contains("invalid route metadata on route \"broken\""),
        "the log names the route"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_envoys_keep_one_trace_and_export_chained_spans_with_their_attributes() {
    let receiver = otlp_receiver::local().await.unwrap();
    let svc = upstream::local("orders").await.unwrap();
    let export = |service: &str| json!({"export": {"cluster": "otlp", "service_name": service, "flush_interval": "100ms"}});
    let back = start(
        export("back"),
        svc.addr(),
        vec![cluster("otlp", receiver.addr(), false)],
    );
    let front = Envoy::start(&bootstrap(
        vec![listener(
            "main",
            vec![route("checkout", "/", "back")],
            vec![filter(FILTER, &export("front"))],
        )],
        vec![
            cluster("back", back.listener("main"), true),
            cluster("otlp", receiver.addr(), false),
        ],
    ))
    .unwrap();
    let r = client::get(
        front.listener("main"),
        "/orders/7?x=1",
        &[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let upstream_ctx =
        formats::parse_traceparent(svc.requests()[0].header("traceparent").unwrap()).unwrap();
    assert_eq!(
        upstream_ctx.trace_id.to_hex(),
        TRACE,
        "one trace end to end"
    );

    assert!(
        receiver.wait_for_spans(2, Duration::from_secs(10)).await,
        "spans: {:?}",
        receiver.spans()
    );
    let spans = receiver.spans();
    let front_span = spans.iter().find(|s| s.service_name == "front").unwrap();
    let back_span = spans.iter().find(|s| s.service_name == "back").unwrap();
    assert_eq!(
        (front_span.trace_id.as_str(), back_span.trace_id.as_str()),
        (TRACE, TRACE)
    );
    assert_eq!(
        front_span.parent_span_id.as_deref(),
        Some(SPAN),
        "the caller's span is the front's parent"
    );
    assert_eq!(
        back_span.parent_span_id.as_deref(),
        Some(front_span.span_id.as_str()),
        "front → back"
    );
    assert_eq!(
        upstream_ctx.span_id.to_hex(),
        back_span.span_id,
        "back → upstream"
    );
    assert_eq!(front_span.name, "checkout");
    assert_eq!(back_span.name, "orders");
    let attr = |s: &otlp_receiver::ReceivedSpan, k: &str| {
        s.attributes
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        attr(back_span, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(attr(back_span, "url.path").as_deref(), Some("/orders/7"));
    assert_eq!(
        attr(back_span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(back_span, "upstream_cluster").as_deref(), Some("svc"));
    assert!(back_span.end_unix_nano >= back_span.start_unix_nano && back_span.start_unix_nano > 0);
    back.wait_for_value("mesh_trace_propagation_spans_exported", &[], 1.0)
        .await
        .unwrap();

    // A 5xx is an error span; a not-sampled request exports nothing.
    client::get(back.listener("main"), "/orders/8?status=503", &[])
        .await
        .unwrap();
    client::get(
        back.listener("main"),
        "/orders/9",
        &[("traceparent", &format!("00-{TRACE}-{SPAN}-00"))],
    )
    .await
    .unwrap();
    assert!(receiver.wait_for_spans(3, Duration::from_secs(10)).await);
    // Settle time for what must not come: five flush intervals (100 ms) for a span of the
    // not-sampled request.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spans = receiver.spans();
    assert_eq!(spans.len(), 3, "the not-sampled request exported no span");
    let failed = spans
        .iter()
        .find(|s| attr(s, "url.path").as_deref() == Some("/orders/8"))
        .unwrap();
    assert_eq!(failed.status_code, 2, "STATUS_CODE_ERROR");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absent_collector_never_slows_requests_and_failed_exports_are_counted() {
    let svc = upstream::local("orders").await.unwrap();
    // A cluster pointing at a port nobody listens on.
    let dead = fixture::closed_port().unwrap();
    let config = json!({"export": {"cluster": "otlp", "flush_interval": "50ms"}});
    let envoy = start(config, svc.addr(), vec![cluster("otlp", dead, false)]);
    let addr = envoy.listener("main");
    let mut slowest = Duration::ZERO;
    let start = Instant::now();
    for _ in 0..100 {
        let r = client::get(addr, "/orders/1", &[]).await.unwrap();
        assert_eq!(r.status, 200);
        slowest = slowest.max(r.elapsed);
    }
    eprintln!(
        "100 requests with the collector down: {:?} in all, slowest {:?}",
        start.elapsed(),
        slowest
    );
    assert!(
        slowest < Duration::from_millis(200),
        "a request waited on the collector: {slowest:?}"
    );
    envoy
        .wait_for("a failed export", |m| {
            m.get("mesh_trace_propagation_export_failed", &[])
                .filter(|n| *n >= 1.0)
        })
        .await
        .unwrap();
    let exported = envoy
        .settled_value("mesh_trace_propagation_spans_exported", &[])
        .await
        .unwrap();
    assert_eq!(exported, 0.0, "nothing reached an absent collector");
}

#[test]
fn invalid_trace_configs_are_refused_and_the_log_names_the_field() {
    for (config, field) in [
        (json!({"inject": ["w3c", "zipkin"]}), "inject"),
        (json!({"sampling_ratio": 2}), "sampling_ratio"),
        (
            json!({"export": {"cluster": "otlp", "max_batch": 0}}),
            "export.max_batch",
        ),
    ] {
        let line = fixture::refusal(FILTER, &config).unwrap();
        assert!(line.contains(&format!("field `{field}`")), "{line}");
    }
}
