//! What only the native module `libmesh_filters.so` has, in the real Envoy: its refusals at
//! load (of a plugin configuration, the same line as the wasm module's; of a per-route
//! configuration, which the wasm module does not have), its metrics by their own names with
//! Envoy's labels, and a panic on a stream caught, counted and answered by the failure policy.
//! Every behaviour both runtimes share is tested once, by the shared tests, under
//! `MESH_RUNTIME=native` too ([`mesh_integration::runtime`]).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;

use mesh_integration::bootstrap::{
    bootstrap, cluster, filter, listener, native_filter, native_stage_filter, route, with_mtls,
};
use mesh_integration::certs::Pki;
use mesh_integration::client;
use mesh_integration::envoy::{Envoy, Options};
use mesh_integration::fixture::{one_service, sa};
use mesh_integration::native::{
    native_filter_from, raw_metrics, test_panic_module, wait_for_raw, with_native_route_config_text,
};
use mesh_integration::runtime::Runtime;
use mesh_integration::upstream;
use serde_json::{json, Value};

/// The filter's name in `http_filters`: the key of its per-route configuration.
const FILTER: &str = "mesh";

/// A cluster address nobody listens on, for bootstraps Envoy must refuse.
fn nobody() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9))
}

/// A `direct_response` route `direct` (no cluster), and `echo` to the cluster `svc`.
fn echo_routes() -> Vec<Value> {
    vec![
        json!({"name": "direct", "match": {"prefix": "/direct"},
               "direct_response": {"status": 200, "body": {"inline_string": "direct\n"}}}),
        route("echo", "/", "svc"),
    ]
}

/// The lines of a log that contain `needle`, each from `needle` on.
fn lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.find(needle).map(|i| l[i..].to_owned()))
        .collect()
}

/// Envoy refusing one listener with `filter` (named after `root_id`): the one refusal line,
/// from `<root_id>: invalid configuration` on, and the log.
fn refusal(root_id: &str, filter: Value) -> (String, String) {
    let refused = Envoy::refuse(&one_service(
        vec![filter],
        vec![route("r", "/", "svc")],
        nobody(),
    ))
    .unwrap();
    assert!(!refused.status.success(), "{}", refused.log);
    let lines = lines_with(&refused.log, &format!("{root_id}: invalid configuration"));
    assert_eq!(
        lines.len(),
        1,
        "one refusal line expected:\n{}",
        refused.log
    );
    (lines[0].clone(), refused.log)
}

#[test]
fn a_bad_plugin_configuration_is_refused_at_load_with_the_wasm_modules_line() {
    if !Runtime::only(
        Runtime::Wasm,
        "compares the wasm module's refusal with the native one's",
    ) {
        return;
    }
    // The suite (root_id `mesh`, native `filter_name: suite`), then one stage alone.
    for (root_id, bad) in [
        ("mesh", json!({"deadline": {"timeout": "soon"}})),
        ("mesh", json!({"retry_budget": {"retry_ratio": 2}})),
        ("mesh", json!({"deadlines": {}})),
        (
            "mesh",
            json!({"circuit_breaker": {"consecutive_failures": 3, "surprise": true}}),
        ),
        ("mesh.deadline", json!({"timeout": "soon"})),
        ("mesh.deadline", json!({"timeout": "2s", "surprise": true})),
    ] {
        let text = bad.to_string();
        let native = match root_id {
            "mesh" => native_filter(root_id, &text),
            stage => native_stage_filter(stage, stage, &text),
        };
        let (line, log) = refusal(root_id, native);
        assert!(
            log.contains("Failed to create filter config: Failed to initialize dynamic module"),
            "{log}"
        );
        assert!(
            line.starts_with(&format!("{root_id}: invalid configuration: field `")),
            "{line}"
        );
        let (wasm, _) = refusal(root_id, filter(root_id, &bad));
        assert_eq!(line, wasm, "for {root_id} {bad}");
    }
}

#[test]
fn a_per_route_configuration_that_is_not_sections_of_known_stages_is_refused_at_load() {
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
        let routes = vec![with_native_route_config_text(
            route("route", "/", "svc"),
            FILTER,
            config,
        )];
        let refused = Envoy::refuse(&one_service(
            vec![native_filter(FILTER, r#"{"deadline": {}}"#)],
            routes,
            nobody(),
        ))
        .unwrap();
        assert!(!refused.status.success(), "{}", refused.log);
        let lines = lines_with(&refused.log, "mesh: invalid per-route configuration");
        assert_eq!(lines.len(), 1, "{}", refused.log);
        assert!(lines[0].starts_with(expect), "{}", lines[0]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_prometheus_series_with_route_and_cluster_labels() {
    let svc = upstream::local("svc").await.unwrap();
    let config = json!({
        "circuit_breaker": {"scope": "cluster"},
        "deadline": {"timeout": "5s"},
        "retry_budget": {},
        "trace_propagation": {}
    });
    let envoy = Envoy::start(&one_service(
        vec![native_filter(FILTER, &config.to_string())],
        echo_routes(),
        svc.addr(),
    ))
    .unwrap();
    let main = envoy.listener("main");
    for _ in 0..2 {
        assert_eq!(client::get(main, "/x", &[]).await.unwrap().status, 200);
    }
    let failed = client::get(main, "/x", &[("x-demo-status", "503")])
        .await
        .unwrap();
    assert_eq!(failed.status, 503);
    assert_eq!(client::get(main, "/direct", &[]).await.unwrap().status, 200);

    let admin = envoy.admin;
    let echo = [("route", "echo")];
    wait_for_raw(admin, "envoy_mesh_deadline_rq_total", &echo, 3.0)
        .await
        .unwrap();
    wait_for_raw(
        admin,
        "envoy_mesh_deadline_rq_total",
        &[("route", "direct")],
        1.0,
    )
    .await
    .unwrap();
    wait_for_raw(admin, "envoy_mesh_retry_budget_rq_total", &echo, 3.0)
        .await
        .unwrap();
    // A breaker scoped by cluster labels its series with the cluster.
    wait_for_raw(
        admin,
        "envoy_mesh_circuit_breaker_failures",
        &[("cluster", "svc")],
        1.0,
    )
    .await
    .unwrap();
    assert_eq!(
        raw_metrics(admin)
            .await
            .unwrap()
            .value("envoy_mesh_native_panics", &[])
            .unwrap(),
        0.0
    );

    // The page as it is: the series carry exactly these labels, the families their types.
    let (status, text) = envoy.admin_get("/stats/prometheus").unwrap();
    assert_eq!(status, 200);
    for line in [
        "envoy_mesh_deadline_rq_total{route=\"echo\"} 3",
        "envoy_mesh_deadline_rq_total{route=\"direct\"} 1",
        "envoy_mesh_retry_budget_rq_total{route=\"echo\"} 3",
        "envoy_mesh_circuit_breaker_failures{cluster=\"svc\"} 1",
        "envoy_mesh_native_panics{} 0",
        "# TYPE envoy_mesh_deadline_rq_total counter",
        "# TYPE envoy_mesh_retry_budget_retries_available gauge",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
    // In /stats the labels are dotted name segments under the namespace.
    let (_, stats) = envoy
        .admin_get("/stats?filter=%5Emesh%5C.deadline")
        .unwrap();
    assert!(
        stats.contains("mesh.deadline.rq_total.route.echo: 3"),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_on_a_stream_is_caught_counted_and_gets_the_failure_policy() {
    let so = test_panic_module().unwrap();
    let svc = upstream::local("svc").await.unwrap();
    let pki = Pki::new("native-panic").unwrap();
    let learner = pki.client(&[&sa("learner")]).unwrap();
    let open = json!({"deadline": {"timeout": "5s"}, "test_panic": "request_headers"});
    let closed = json!({
        "spiffe_identity": {"trust_domains": ["mesh.local"], "allow": [sa("learner")]},
        "deadline": {"timeout": "5s"},
        "test_panic": "request_headers"
    });
    let late = json!({"deadline": {"timeout": "5s"}, "test_panic": "response_headers"});
    let suite = |config: &Value| vec![native_filter_from(&so, FILTER, &config.to_string())];
    let envoy = Envoy::start_with(
        &bootstrap(
            vec![
                listener("open", echo_routes(), suite(&open)),
                with_mtls(
                    listener("closed", echo_routes(), suite(&closed)),
                    &pki.envoy,
                    true,
                    "SANITIZE_SET",
                ),
                listener("late", echo_routes(), suite(&late)),
            ],
            vec![cluster("svc", svc.addr(), true)],
        ),
        &Options::workers(2),
    )
    .unwrap();
    let panic = [("x-mesh-test-panic", "1")];
    let deadline_seen =
        |r: &client::Response| r.json()["headers"]["x-envoy-expected-rq-timeout-ms"].is_string();

    // Fail open: the request passes untouched (the suite did not run: no deadline header).
    let open = envoy.listener("open");
    let r = client::get(open, "/x", &[]).await.unwrap();
    assert!(deadline_seen(&r), "{}", r.text());
    let r = client::get(open, "/x", &panic).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!deadline_seen(&r), "{}", r.text());

    // Fail closed: with the identity stage configured, its "cannot decide" refusal.
    let tls = pki.tls().presenting(Some(&learner));
    let closed = envoy.listener("closed");
    let r = tls.get(closed, "/x", &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let refused = tls.get(closed, "/x", &panic).await.unwrap();
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(
        refused.header("x-mesh-rejected-by"),
        Some("mesh.spiffe_identity")
    );
    assert_eq!(refused.json()["error"], "identity_unverifiable");

    // After the upstream answered: the response goes out as it came.
    let r = client::get(envoy.listener("late"), "/x", &panic)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(deadline_seen(&r), "{}", r.text());

    wait_for_raw(envoy.admin, "envoy_mesh_native_panics", &[], 3.0)
        .await
        .unwrap();
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
    assert_eq!(
        envoy.admin_get("/ready").unwrap(),
        (200, "LIVE\n".to_owned())
    );
    assert_eq!(
        client::get(open, "/x", &[]).await.unwrap().status,
        200,
        "still serving"
    );
}
