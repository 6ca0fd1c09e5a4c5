//! `libmesh_filters.so` in the real Envoy 1.40: the suite's stages acting, per-route
//! configuration from `typed_per_filter_config`, labelled metrics, shared state across two
//! workers, local replies over HTTP and gRPC, background work on the main thread, and refusals
//! at load. Each test starts its own Envoy (`--concurrency 2`, every port chosen by the OS) and
//! upstream, and kills that Envoy by its PID; the Envoy log is printed when a test fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::*;

fn echo_routes() -> Vec<Value> {
    vec![
        json!({"name": "direct", "match": {"prefix": "/direct"},
               "direct_response": {"status": 200, "body": {"inline_string": "direct\n"}}}),
        route("echo", "/", "upstream"),
    ]
}

/// One plain listener `main` with the suite configured as `config` in front of `routes`.
fn one_listener(config: &Value, routes: Vec<Value>, upstream: &Upstream) -> Value {
    bootstrap(
        vec![listener("main", routes, native_filter(config))],
        vec![cluster("upstream", upstream.addr)],
    )
}

// ---------------------------------------------------------------- loading

/// The line a refused configuration logs, from its `mesh: invalid configuration` on.
fn refusal_line(log: &str) -> String {
    let lines = lines_with(log, "mesh: invalid configuration");
    assert_eq!(lines.len(), 1, "one refusal line expected:\n{log}");
    lines[0].clone()
}

#[test]
fn a_bad_plugin_configuration_is_refused_at_load_with_the_wasm_modules_line() {
    let upstream = Upstream::start();
    for bad in [
        json!({"deadline": {"timeout": "soon"}}),
        json!({"retry_budget": {"retry_ratio": 2}}),
        json!({"deadlines": {}}),
        json!({"circuit_breaker": {"consecutive_failures": 3, "surprise": true}}),
    ] {
        let native = Envoy::refuse(&one_listener(&bad, echo_routes(), &upstream), module_dir());
        assert!(!native.status.success());
        assert!(
            native
                .log
                .contains("Failed to create filter config: Failed to initialize dynamic module"),
            "{}",
            native.log
        );
        let wasm_bootstrap = bootstrap(
            vec![listener("main", echo_routes(), wasm_filter(&bad))],
            vec![cluster("upstream", upstream.addr)],
        );
        let wasm = Envoy::refuse(&wasm_bootstrap, module_dir());
        let line = refusal_line(&native.log);
        assert!(
            line.starts_with("mesh: invalid configuration: field `"),
            "{line}"
        );
        assert_eq!(line, refusal_line(&wasm.log), "for {bad}");
    }
}

#[test]
fn a_per_route_configuration_that_is_not_sections_of_known_stages_is_refused_at_load() {
    let upstream = Upstream::start();
    for (config, expect) in [
        (
            r#"{"mesh.deadlin": {"timeout": "2s"}}"#,
            "mesh: invalid per-route configuration \"route\": field `mesh.deadlin`: unknown stage; the stages are mesh.spiffe_identity, mesh.rate_limit, mesh.circuit_breaker, mesh.deadline, mesh.retry_budget, mesh.trace_propagation",
        ),
        (
            r#"{"mesh.deadline": "2s"}"#,
            "mesh: invalid per-route configuration \"route\": field `mesh.deadline`, value \"2s\": a stage's section must be an object",
        ),
        (
            r#"{"timeout": "2s""#,
            "mesh: invalid per-route configuration \"route\": the document",
        ),
    ] {
        let routes = vec![with_per_route(
            route("r", "/", "upstream"),
            per_route_raw(config),
        )];
        let refused = Envoy::refuse(
            &one_listener(&json!({"deadline": {}}), routes, &upstream),
            module_dir(),
        );
        let lines = lines_with(&refused.log, "mesh: invalid per-route configuration");
        assert_eq!(lines.len(), 1, "{}", refused.log);
        assert!(lines[0].starts_with(expect), "{}", lines[0]);
    }
}

// ---------------------------------------------------------------- the stages

#[test]
fn spiffe_identity_on_an_mtls_listener_reads_the_envoy_built_xfcc() {
    let upstream = Upstream::start();
    let certs = TempDir::new("certs");
    make_certs(&certs.0, &["learner", "admin"]);
    let config = json!({"spiffe_identity": {"trust_domains": [TRUST_DOMAIN]}});
    let routes = vec![with_per_route(
        route("auth", "/auth", "upstream"),
        per_route(&json!({"mesh.spiffe_identity": {"allow": [spiffe("learner")]}})),
    )];
    let envoy = Envoy::start(&bootstrap(
        vec![with_mtls(
            listener("mtls", routes, native_filter(&config)),
            &certs,
        )],
        vec![cluster("upstream", upstream.addr)],
    ));
    let port = envoy.listener("mtls").port();
    let resolve = format!("envoy.test:{port}:127.0.0.1");
    let url = format!("https://envoy.test:{port}/auth/x");
    let call = |client: &str, extra: &[&str]| {
        let (cert, key, ca) = (
            certs.path(&format!("{client}.pem")),
            certs.path(&format!("{client}.key")),
            certs.path("ca.pem"),
        );
        let mut args: Vec<&str> = vec![
            "--cacert",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--resolve",
            &resolve,
            &url,
        ];
        for h in extra {
            args.extend(["-H", h]);
        }
        curl(&args)
    };

    // Allowed: the verified ID goes upstream, whatever a client claimed in the headers.
    let ok = call(
        "learner",
        &[
            "x-spiffe-id: spiffe://mesh.test/ns/default/sa/root",
            "x-forwarded-client-cert: By=spiffe://mesh.test/x;URI=spiffe://mesh.test/ns/default/sa/root",
        ],
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        ok.upstream_header("x-spiffe-id"),
        Some(spiffe("learner").as_str())
    );
    let xfcc = ok.upstream_header("x-forwarded-client-cert").unwrap();
    assert!(
        xfcc.contains(&spiffe("learner")) && !xfcc.contains("sa/root"),
        "{xfcc}"
    );

    // A valid identity the route does not allow.
    let denied = call("admin", &[]);
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.header("x-mesh-rejected-by"),
        Some("mesh.spiffe_identity")
    );
    assert!(denied.body.contains("permission_denied"), "{}", denied.body);
    envoy.wait_prometheus("envoy_mesh_spiffe_identity_allowed{route=\"auth\"}", 1.0);
    envoy.wait_prometheus("envoy_mesh_spiffe_identity_denied{route=\"auth\"}", 1.0);
}

#[test]
fn the_breaker_opens_after_failures_and_answers_503_then_grpc_unavailable() {
    let upstream = Upstream::start();
    let config = json!({"circuit_breaker": {"consecutive_failures": 3, "open_duration": "60s"}});
    let envoy = Envoy::start(&one_listener(&config, echo_routes(), &upstream));
    let url = envoy.url("main", "/fail/x");
    for _ in 0..3 {
        let r = get(&url, &[]);
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-mesh-rejected-by"), None, "from the upstream");
    }
    let open = get(&url, &[]);
    assert_eq!(open.status, 503);
    assert_eq!(
        open.header("x-mesh-rejected-by"),
        Some("mesh.circuit_breaker")
    );
    assert_eq!(open.header("retry-after"), Some("60"));
    assert_eq!(open.header("content-type"), Some("application/json"));
    assert!(
        open.body.contains("\"filter\":\"mesh.circuit_breaker\""),
        "{}",
        open.body
    );
    assert_eq!(
        upstream.seen().len(),
        3,
        "the open breaker kept the request from the upstream"
    );

    // gRPC: a trailers-only 200 with the status in the headers, and the details in base64.
    let g = grpc(&url, &[]);
    assert_eq!(g.status, 200, "{:?}", g.headers);
    assert_eq!(g.header("content-type"), Some("application/grpc"));
    assert_eq!(g.header("grpc-status"), Some("14"));
    assert!(g.header("grpc-message").is_some_and(|m| !m.is_empty()));
    assert_eq!(g.header("x-mesh-rejected-by"), Some("mesh.circuit_breaker"));
    let details = g.header("grpc-status-details-bin").unwrap();
    let decoded = base64_decode(details);
    let text = String::from_utf8_lossy(&decoded);
    assert!(
        text.contains("type.googleapis.com/google.rpc.RetryInfo")
            && text.contains("type.googleapis.com/google.rpc.ErrorInfo"),
        "{text}"
    );
    assert_eq!(g.body, "");

    envoy.wait_prometheus("envoy_mesh_circuit_breaker_opened{route=\"echo\"}", 1.0);
    envoy.wait_prometheus(
        "envoy_mesh_circuit_breaker_rq_rejected{route=\"echo\"}",
        2.0,
    );
    // Phase::Open.
    assert!(envoy
        .prometheus("envoy_mesh_circuit_breaker_state{route=\"echo\"}")
        .is_some_and(|v| v > 0.0));
}

fn base64_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = alphabet.iter().position(|a| *a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

#[test]
fn deadlines_reach_the_upstream_and_routes_override_them() {
    let upstream = Upstream::start();
    let config = json!({"deadline": {"timeout": "5s"}});
    let routes = vec![
        with_per_route(
            route("short", "/short", "upstream"),
            per_route(&json!({"mesh.deadline": {"timeout": "2s"}})),
        ),
        with_per_route(route("off", "/off", "upstream"), filter_disabled()),
        with_per_route(
            route("deadline-off", "/deadline-off", "upstream"),
            per_route(&json!({"mesh.deadline": {"disabled": true}})),
        ),
        with_per_route(
            route("expired", "/expired", "upstream"),
            per_route(&json!({"mesh.deadline": {"timeout": "1ms"}})),
        ),
        route("echo", "/", "upstream"),
    ];
    let envoy = Envoy::start(&one_listener(&config, routes, &upstream));
    let timeout = |path: &str| {
        let r = get(&envoy.url("main", path), &[]);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        r.upstream_header("x-envoy-expected-rq-timeout-ms")
            .map(|v| v.parse::<u64>().unwrap())
    };
    let plugin = timeout("/x").unwrap();
    assert!((4900..=5000).contains(&plugin), "{plugin}");
    let route = timeout("/short/x").unwrap();
    assert!((1900..=2000).contains(&route), "{route}");
    // FilterConfig{disabled} switches the whole module off; a stage's `disabled` only it.
    assert_eq!(timeout("/off/x"), None);
    assert_eq!(timeout("/deadline-off/x"), None);

    // A deadline spent before the upstream is asked: 504 over HTTP, DEADLINE_EXCEEDED over gRPC.
    let url = envoy.url("main", "/expired/x");
    let r = get(&url, &[]);
    assert_eq!(r.status, 504);
    assert_eq!(r.header("x-mesh-rejected-by"), Some("mesh.deadline"));
    let g = grpc(&url, &[]);
    assert_eq!((g.status, g.header("grpc-status")), (200, Some("4")));
    assert_eq!(g.header("x-mesh-rejected-by"), Some("mesh.deadline"));

    envoy.wait_prometheus("envoy_mesh_deadline_rq_total{route=\"short\"}", 1.0);
    envoy.wait_prometheus("envoy_mesh_deadline_rq_expired{route=\"expired\"}", 2.0);
}

#[test]
fn an_invalid_section_on_a_route_is_logged_counted_and_the_request_answered() {
    let upstream = Upstream::start();
    let config = json!({"deadline": {"timeout": "5s"}});
    let routes = vec![with_per_route(
        route("bad", "/", "upstream"),
        per_route(&json!({"mesh.deadline": {"timeout": "soon"}})),
    )];
    let envoy = Envoy::start(&one_listener(&config, routes, &upstream));
    let r = get(&envoy.url("main", "/x"), &[]);
    assert_eq!(r.status, 200);
    envoy.wait_prometheus("envoy_mesh_deadline_config_error{route=\"bad\"}", 1.0);
    let lines = lines_with(
        &envoy.log(),
        "mesh.deadline: invalid route metadata on route \"bad\"",
    );
    assert_eq!(lines.len(), 1, "{}", envoy.log());
    assert!(lines[0].contains("`timeout`"), "{}", lines[0]);
}

#[test]
fn the_retry_budget_lets_the_router_retry() {
    let upstream = Upstream::start();
    let config = json!({"retry_budget": {"max_retries": 2, "retry_ratio": 0.5, "min_retries_per_second": 10}});
    let envoy = Envoy::start(&one_listener(&config, echo_routes(), &upstream));
    let r = get(&envoy.url("main", "/flaky/x"), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-envoy-attempt-count"), Some("2"));
    // The router consumed the budget's headers; the upstream never sees them.
    assert_eq!(r.upstream_header("x-envoy-max-retries"), None);
    envoy.wait_prometheus("envoy_mesh_retry_budget_retries{route=\"echo\"}", 1.0);
    envoy.wait_prometheus("envoy_mesh_retry_budget_rq_total{route=\"echo\"}", 1.0);
}

#[test]
fn trace_headers_are_injected_and_continue_an_incoming_trace() {
    let upstream = Upstream::start();
    let config = json!({"trace_propagation": {"inject": ["w3c", "b3"], "response_headers": ["traceresponse"]}});
    let envoy = Envoy::start(&one_listener(&config, echo_routes(), &upstream));
    let url = envoy.url("main", "/x");

    let fresh = get(&url, &[]);
    let tp = fresh.upstream_header("traceparent").unwrap();
    assert_eq!(tp.len(), 55, "{tp}");
    let trace_id = &tp[3..35];
    let b3 = fresh.upstream_header("b3").unwrap();
    assert!(b3.starts_with(trace_id), "{b3} vs {tp}");
    assert_eq!(
        fresh.header("traceresponse").map(|t| &t[3..35]),
        Some(trace_id)
    );

    let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let cont = get(&url, &[&format!("traceparent: {incoming}")]);
    let tp = cont.upstream_header("traceparent").unwrap();
    assert!(
        tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{tp}"
    );
    assert!(
        !tp.contains("b7ad6b7169203331"),
        "a new span id per hop: {tp}"
    );
    envoy.wait_prometheus(
        "envoy_mesh_trace_propagation_extracted{format=\"w3c\"}",
        1.0,
    );
    envoy.wait_prometheus("envoy_mesh_trace_propagation_started{}", 1.0);
}

#[test]
fn spans_are_exported_by_the_main_threads_ticks() {
    let upstream = Upstream::start();
    let config =
        json!({"trace_propagation": {"export": {"cluster": "otlp", "flush_interval": "100ms"}}});
    let envoy = Envoy::start(&bootstrap(
        vec![listener("main", echo_routes(), native_filter(&config))],
        vec![
            cluster("upstream", upstream.addr),
            cluster("otlp", upstream.addr),
        ],
    ));
    for _ in 0..3 {
        assert_eq!(get(&envoy.url("main", "/x"), &[]).status, 200);
    }
    let export = upstream
        .wait_for("post /v1/traces", Duration::from_secs(10))
        .expect("an OTLP export request");
    assert!(
        export.contains("content-type: application/x-protobuf"),
        "{export}"
    );
    assert!(export.contains("host: otlp"), "{export}");
    // The answer's :status reached the stage (a 200 counts the spans as exported).
    envoy.wait_prometheus("envoy_mesh_trace_propagation_spans_exported{}", 3.0);
    assert_eq!(
        envoy.prometheus("envoy_mesh_trace_propagation_export_failed{}"),
        Some(0.0)
    );
}

// ---------------------------------------------------------------- across workers

/// The open connections of each worker, from the listener's per-worker gauges (named after
/// the configured address, port 0: the test bootstraps have one such listener).
fn active_per_worker(envoy: &Envoy) -> [u64; 2] {
    [0, 1].map(|w| {
        envoy
            .stat(&format!(
                "listener.127.0.0.1_0.worker_{w}.downstream_cx_active"
            ))
            .unwrap_or(0)
    })
}

#[test]
fn one_breaker_for_both_workers_through_shared_state() {
    let upstream = Upstream::start();
    let config = json!({"circuit_breaker": {"consecutive_failures": 4, "open_duration": "60s"}});
    let envoy = Envoy::start(&one_listener(&config, echo_routes(), &upstream));
    let addr = envoy.listener("main");
    // exact_balance gives each new connection to the least loaded worker: one each.
    let mut a = Connection::open(addr);
    assert_eq!(a.get("/direct").status, 200);
    let mut b = Connection::open(addr);
    assert_eq!(b.get("/direct").status, 200);
    assert_eq!(active_per_worker(&envoy), [1, 1]);

    // Two failures on each worker: the breaker opens only if both count into one state.
    let mut conns = [a, b];
    for i in [0, 1, 0, 1] {
        let r = conns[i].get("/fail/x");
        assert_eq!((r.status, r.header("x-mesh-rejected-by")), (503, None));
    }
    for conn in &mut conns {
        let r = conn.get("/fail/x");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-mesh-rejected-by"), Some("mesh.circuit_breaker"));
    }
    assert_eq!(upstream.seen().len(), 4);
    // Metric ids are per worker, the series one.
    envoy.wait_prometheus("envoy_mesh_circuit_breaker_failures{route=\"echo\"}", 4.0);
    envoy.wait_prometheus(
        "envoy_mesh_circuit_breaker_rq_rejected{route=\"echo\"}",
        2.0,
    );
}

// ---------------------------------------------------------------- metrics

#[test]
fn metrics_are_prometheus_series_with_route_and_cluster_labels() {
    let upstream = Upstream::start();
    let config = json!({
        "circuit_breaker": {"scope": "cluster"},
        "deadline": {"timeout": "5s"},
        "retry_budget": {},
        "trace_propagation": {}
    });
    let envoy = Envoy::start(&one_listener(&config, echo_routes(), &upstream));
    for _ in 0..2 {
        assert_eq!(get(&envoy.url("main", "/x"), &[]).status, 200);
    }
    assert_eq!(get(&envoy.url("main", "/fail"), &[]).status, 503);
    assert_eq!(get(&envoy.url("main", "/direct"), &[]).status, 200);
    envoy.wait_prometheus("envoy_mesh_deadline_rq_total{route=\"echo\"}", 3.0);
    envoy.wait_prometheus("envoy_mesh_deadline_rq_total{route=\"direct\"}", 1.0);
    envoy.wait_prometheus("envoy_mesh_retry_budget_rq_total{route=\"echo\"}", 3.0);
    // A breaker scoped by cluster labels its series with the cluster.
    envoy.wait_prometheus(
        "envoy_mesh_circuit_breaker_failures{cluster=\"upstream\"}",
        1.0,
    );
    assert_eq!(envoy.prometheus("envoy_mesh_native_panics{}"), Some(0.0));
    let text = envoy.admin_get("/stats/prometheus").unwrap();
    assert!(
        text.contains("# TYPE envoy_mesh_deadline_rq_total counter"),
        "{text}"
    );
    assert!(text.contains("# TYPE envoy_mesh_retry_budget_retries_available gauge"));
    // In /stats the labels are dotted name segments under the namespace.
    let stats = envoy
        .admin_get("/stats?filter=%5Emesh%5C.deadline")
        .unwrap();
    assert!(
        stats.contains("mesh.deadline.rq_total.route.echo: 3"),
        "{stats}"
    );
}

// ---------------------------------------------------------------- panics

#[test]
fn a_panic_on_a_stream_is_caught_counted_and_gets_the_failure_policy() {
    let upstream = Upstream::start();
    let certs = TempDir::new("certs");
    make_certs(&certs.0, &["learner"]);
    let open = json!({"deadline": {"timeout": "5s"}, "test_panic": "request_headers"});
    let closed = json!({
        "spiffe_identity": {"trust_domains": [TRUST_DOMAIN], "allow": [spiffe("learner")]},
        "deadline": {"timeout": "5s"},
        "test_panic": "request_headers"
    });
    let late = json!({"deadline": {"timeout": "5s"}, "test_panic": "response_headers"});
    let mut envoy = match Envoy::start_with(
        &bootstrap(
            vec![
                listener("open", echo_routes(), native_filter(&open)),
                with_mtls(
                    listener("closed", echo_routes(), native_filter(&closed)),
                    &certs,
                ),
                listener("late", echo_routes(), native_filter(&late)),
            ],
            vec![cluster("upstream", upstream.addr)],
        ),
        panic_module_dir(),
    ) {
        Ok(e) => e,
        Err(r) => panic!("{}", r.log),
    };
    let panic_header = "x-mesh-test-panic: 1";

    // Fail open: the request passes untouched (the suite did not run: no deadline header).
    let url = envoy.url("open", "/x");
    assert!(get(&url, &[])
        .upstream_header("x-envoy-expected-rq-timeout-ms")
        .is_some());
    let r = get(&url, &[panic_header]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("x-envoy-expected-rq-timeout-ms"), None);

    // Fail closed: with the identity stage configured, its "cannot decide" refusal.
    let port = envoy.listener("closed").port();
    let resolve = format!("envoy.test:{port}:127.0.0.1");
    let mtls_url = format!("https://envoy.test:{port}/x");
    let (cert, key, ca) = (
        certs.path("learner.pem"),
        certs.path("learner.key"),
        certs.path("ca.pem"),
    );
    let tls = [
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--resolve",
        &resolve,
    ];
    let mut ok_args = tls.to_vec();
    ok_args.push(&mtls_url);
    assert_eq!(curl(&ok_args).status, 200);
    let mut panic_args = ok_args.clone();
    panic_args.extend(["-H", panic_header]);
    let refused = curl(&panic_args);
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.header("x-mesh-rejected-by"),
        Some("mesh.spiffe_identity")
    );

    // After the upstream answered: the response goes out as it came.
    let r = get(&envoy.url("late", "/x"), &[panic_header]);
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("x-envoy-expected-rq-timeout-ms"),
        "{}",
        r.body
    );

    envoy.wait_prometheus("envoy_mesh_native_panics{}", 3.0);
    let log = envoy.log();
    let lines = lines_with(&log, "mesh: panic in ");
    assert!(
        !lines.is_empty() && lines.len() <= 2,
        "at most one per worker:\n{log}"
    );
    assert!(
        lines[0].contains("deliberate test panic in"),
        "{}",
        lines[0]
    );
    assert!(envoy.alive());
    assert_eq!(get(&url, &[]).status, 200, "still serving");
}
