//! The retry budget end to end: a real Envoy with two workers loading `mesh_retry_budget.wasm`,
//! its router doing the retries, real upstreams that fail on purpose, a real gRPC client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use mesh_integration::bootstrap::{
    bootstrap, cluster, filter, listener, route, to_yaml, with_metadata, with_route_action,
};
use mesh_integration::client;
use mesh_integration::client::grpc;
use mesh_integration::envoy::{Envoy, Options};
use mesh_integration::fixture;
use mesh_integration::load::steady_load;
use mesh_integration::upstream;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

const FILTER: &str = "mesh.retry_budget";

fn start(http_filters: Vec<Value>, routes: Vec<Value>, svc: SocketAddr) -> Envoy {
    let b = fixture::one_service(http_filters, routes, svc);
    Envoy::start_with(&b, &Options::workers(2)).unwrap()
}

/// Waits until the route's counter has the value `want` (the router's retries are counted
/// when the stream ends, just after the client has the response).
async fn assert_counter(envoy: &Envoy, name: &str, route: &str, want: f64) {
    envoy
        .wait_for_value(name, &[("route", route)], want)
        .await
        .unwrap();
}

/// The route's counter after [`mesh_integration::envoy::SETTLE`], for what must not move.
async fn settled(envoy: &Envoy, name: &str, route: &str) -> f64 {
    envoy
        .settled_value(name, &[("route", route)])
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_failure_on_every_first_attempt_still_gives_full_success() {
    let svc = upstream::local("auth").await.unwrap();
    let envoy = start(
        vec![filter(FILTER, &json!({}))],
        vec![route("auth", "/", "svc")],
        svc.addr(),
    );
    let addr = envoy.listener("main");
    for i in 0..50 {
        let r = client::get(addr, "/auth/x?fail_attempts=1", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.json()["attempt"], 2);
    }
    assert_eq!(svc.count(), 100, "one failed and one good attempt each");
    assert_counter(&envoy, "mesh_retry_budget_retries", "auth", 50.0).await;
    assert_eq!(
        settled(&envoy, "mesh_retry_budget_budget_exhausted", "auth").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sustained_failure_is_bounded_by_the_budget_and_unbounded_without_it() {
    let (rate, secs) = (200u32, 5u64);
    // With the filter: ratio 0.2, floor 1/s, ttl = the test's duration.
    let svc = upstream::local("events").await.unwrap();
    let config = json!({"retry_ratio": 0.2, "min_retries_per_second": 1, "ttl": format!("{secs}s"), "max_retries": 3});
    let envoy = start(
        vec![filter(FILTER, &config)],
        vec![route("events", "/", "svc")],
        svc.addr(),
    );
    let statuses = steady_load(
        envoy.listener("main"),
        "/events/x?status=503",
        rate,
        Duration::from_secs(secs),
    )
    .await
    .unwrap();
    let requests = statuses.len() as f64;
    let attempts = svc.count() as f64;
    let bound = requests * 1.2 + secs as f64;
    eprintln!("with the budget: {requests} requests, {attempts} upstream attempts (bound {bound:.0}), amplification {:.2}", attempts / requests);
    assert!(
        attempts <= bound * 1.05,
        "{attempts} attempts > bound {bound} + 5%"
    );
    assert!(
        attempts >= requests * 1.15,
        "retries were made up to the budget: {attempts}"
    );
    envoy
        .wait_for("budget_exhausted > half the requests", |m| {
            m.get("mesh_retry_budget_budget_exhausted", &[("route", "events")])
                .filter(|n| *n > requests * 0.5)
        })
        .await
        .unwrap();
    drop(envoy);

    // Without the filter, a route retry policy of 3: about 4×.
    let plain = upstream::local("events").await.unwrap();
    let r = with_route_action(
        route("events", "/", "svc"),
        "retry_policy",
        json!({"retry_on": "5xx", "num_retries": 3}),
    );
    let envoy = start(vec![], vec![r], plain.addr());
    let statuses = steady_load(
        envoy.listener("main"),
        "/events/x?status=503",
        rate,
        Duration::from_secs(secs),
    )
    .await
    .unwrap();
    let amplification = plain.count() as f64 / statuses.len() as f64;
    eprintln!(
        "without: {} requests, {} upstream attempts, amplification {amplification:.2}",
        statuses.len(),
        plain.count()
    );
    assert!(amplification > 3.8, "{amplification}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_budget_refills_within_ttl() {
    let svc = upstream::local("learner").await.unwrap();
    let config =
        json!({"retry_ratio": 0.0, "min_retries_per_second": 1, "ttl": "2s", "max_retries": 1});
    let envoy = start(
        vec![filter(FILTER, &config)],
        vec![route("learner", "/", "svc")],
        svc.addr(),
    );
    let addr = envoy.listener("main");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            client::get(addr, "/learner/x?fail_attempts=1", &[])
                .await
                .unwrap()
                .status,
        );
    }
    assert_eq!(
        statuses,
        vec![200, 200, 503, 503],
        "the floor is 1/s × 2 s = 2 retries"
    );
    assert_counter(&envoy, "mesh_retry_budget_budget_exhausted", "learner", 2.0).await;
    assert_counter(
        &envoy,
        "mesh_retry_budget_retries_available",
        "learner",
        0.0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(
        client::get(addr, "/learner/x?fail_attempts=1", &[])
            .await
            .unwrap()
            .status,
        200,
        "refilled after ttl"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_unavailable_is_retried_while_the_budget_lasts_then_pushback_tells_clients_to_stop() {
    let svc = upstream::local("auth").await.unwrap();
    let config =
        json!({"retry_ratio": 0.0, "min_retries_per_second": 1, "ttl": "20s", "max_retries": 1});
    let envoy = start(
        vec![filter(FILTER, &config)],
        vec![route("auth-grpc", "/", "svc")],
        svc.addr(),
    );
    let addr = envoy.listener("main");
    let transient = [("x-demo-fail-attempts", "1")];
    for _ in 0..20 {
        // floor: 1/s × 20 s = 20 retries
        grpc::unary(
            addr,
            "/mesh.demo.Auth/Check",
            &transient,
            Bytes::from_static(b"m"),
        )
        .await
        .unwrap();
    }
    // Budget empty: the trailers-only UNAVAILABLE comes back with pushback -1.
    let status = grpc::unary(addr, "/mesh.demo.Auth/Check", &transient, Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "-1"
    );
    // A failure in trailers (after response headers) gets it in the trailers.
    let in_trailers = [("x-demo-grpc-status", "14"), ("x-demo-trailers-only", "0")];
    let status = grpc::unary(addr, "/mesh.demo.Auth/Check", &in_trailers, Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "-1"
    );
    // A success is left alone.
    let ok = grpc::unary(addr, "/mesh.demo.Auth/Check", &[], Bytes::new())
        .await
        .unwrap();
    assert!(ok.metadata.get("grpc-retry-pushback-ms").is_none());
    assert_counter(&envoy, "mesh_retry_budget_retries", "auth-grpc", 20.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn client_sent_retry_headers_cannot_buy_retries() {
    let svc = upstream::local("auth").await.unwrap();
    let config = json!({"retry_ratio": 0.0, "min_retries_per_second": 0, "max_retries": 3});
    let envoy = start(
        vec![filter(FILTER, &config)],
        vec![route("auth", "/", "svc")],
        svc.addr(),
    );
    let addr = envoy.listener("main");
    let forged = [
        ("x-envoy-max-retries", "50"),
        ("x-envoy-retry-on", "5xx,gateway-error"),
        ("x-envoy-retry-grpc-on", "unavailable"),
    ];
    let r = client::get(addr, "/auth/x?status=503", &forged)
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(
        svc.count(),
        1,
        "an empty budget means one attempt, whatever the client asks"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_route_metadata_fails_open_to_no_retries_and_is_counted() {
    let svc = upstream::local("auth").await.unwrap();
    let routes = vec![with_metadata(
        route("broken", "/", "svc"),
        FILTER,
        json!({"max_retries": "three"}),
    )];
    let envoy = start(vec![filter(FILTER, &json!({}))], routes, svc.addr());
    let addr = envoy.listener("main");
    let r = client::get(addr, "/x?fail_attempts=1", &[]).await.unwrap();
    assert_eq!(
        r.status, 503,
        "no retries on a route whose budget config is broken"
    );
    assert_eq!(svc.count(), 1);
    assert_counter(&envoy, "mesh_retry_budget_config_error", "broken", 1.0).await;
}

/// Envoy's YAML loader turns a float inside route metadata into a string (envoy#24410): the
/// route's `retry_ratio: 0.5` reaches the filter as `"0.5"` and must still be a valid ratio.
#[tokio::test(flavor = "multi_thread")]
async fn a_fractional_ratio_in_route_metadata_is_accepted_as_envoy_passes_it() {
    let svc = upstream::local("auth").await.unwrap();
    // Written as YAML (block style, `retry_ratio: 0.5` a plain scalar), as an operator would.
    let routes = vec![with_metadata(
        route("fractional", "/", "svc"),
        FILTER,
        json!({"retry_ratio": 0.5, "max_retries": 1}),
    )];
    let bootstrap_yaml = to_yaml(&bootstrap(
        vec![listener("main", routes, vec![filter(FILTER, &json!({}))])],
        vec![cluster("svc", svc.addr(), true)],
    ))
    .unwrap();
    assert!(
        bootstrap_yaml.contains("retry_ratio: 0.5"),
        "{bootstrap_yaml}"
    );
    let envoy = Envoy::start_text(&bootstrap_yaml, &Options::default()).unwrap();
    let r = client::get(envoy.listener("main"), "/x?fail_attempts=1", &[])
        .await
        .unwrap();
    assert_eq!(
        r.status, 200,
        "the first attempt failed, the retry succeeded"
    );
    assert_eq!(svc.count(), 2);
    assert_counter(&envoy, "mesh_retry_budget_retries", "fractional", 1.0).await;
    assert_eq!(
        settled(&envoy, "mesh_retry_budget_config_error", "fractional").await,
        0.0
    );
}

#[test]
fn invalid_budget_configs_are_refused_and_the_log_names_the_field() {
    for (config, field) in [
        (json!({"retry_on": "5xx,sometimes"}), "retry_on"),
        (json!({"retry_ratio": 1.5}), "retry_ratio"),
        (json!({"ttl": "10"}), "ttl"),
    ] {
        let line = fixture::refusal(FILTER, &config).unwrap();
        assert!(line.contains(&format!("field `{field}`")), "{line}");
    }
}
