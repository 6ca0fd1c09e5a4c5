//! The deadline filter end to end: a real Envoy loading `mesh_deadline.wasm`, real upstreams
//! (HTTP/1.1, h2c, gRPC), real clients.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use mesh_integration::bootstrap::{
    bootstrap, cluster, filter, listener, route, with_filter_disabled, with_metadata,
};
use mesh_integration::client::grpc;
use mesh_integration::client::{self, Proto};
use mesh_integration::envoy::Envoy;
use mesh_integration::fixture;
use mesh_integration::upstream::{self, Upstream};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

const FILTER: &str = "mesh.deadline";

/// One listener `main` with the deadline filter and these routes, all to cluster `svc`.
fn one_service(config: Value, routes: Vec<Value>, svc: SocketAddr) -> Value {
    fixture::one_service(vec![filter(FILTER, &config)], routes, svc)
}

/// The demo service `service` behind the deadline filter (plugin configuration `plugin`) on
/// one route `route` (prefix `/`) with this route metadata.
async fn one_route(
    service: &str,
    route_name: &str,
    metadata: Value,
    plugin: Value,
) -> (Upstream, Envoy) {
    let svc = upstream::local(service).await.unwrap();
    let routes = vec![with_metadata(
        route(route_name, "/", "svc"),
        FILTER,
        metadata,
    )];
    let envoy = Envoy::start(&one_service(plugin, routes, svc.addr())).unwrap();
    (svc, envoy)
}

/// A gRPC call over raw h2c, for calls whose `grpc-timeout` a gRPC library would also enforce on
/// its own side (tonic does): what is measured here is Envoy's answer. Returns the grpc-status
/// (from headers, trailers-only, or trailers) and the response.
async fn grpc_h2(
    addr: SocketAddr,
    path: &str,
    metadata: &[(&str, &str)],
) -> (u32, client::Response) {
    let r = client::grpc_h2(addr, path, metadata, grpc::frame(b"x").to_vec())
        .await
        .unwrap();
    assert_eq!(r.status, 200, "gRPC rides on HTTP 200: {r:?}");
    let status = r
        .grpc_status()
        .unwrap_or_else(|| panic!("no grpc-status: {r:?}"));
    (status, r)
}

fn ms_header(r: &upstream::Record, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("upstream did not see {name}: {:?}", r.headers))
        .parse()
        .unwrap()
}

fn assert_about(elapsed: Duration, expected_ms: u64, tolerance_ms: u64) {
    let got = elapsed.as_millis() as u64;
    assert!(
        got + tolerance_ms >= expected_ms && got <= expected_ms + tolerance_ms,
        "took {got} ms, expected {expected_ms} ± {tolerance_ms} ms"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_two_second_route_cuts_a_three_second_upstream_over_http_and_grpc() {
    let (_svc, envoy) = one_route(
        "events",
        "events",
        json!({"timeout": "2s"}),
        json!({"timeout": "15s"}),
    )
    .await;
    let addr = envoy.listener("main");

    let (http1, h2) = tokio::join!(
        client::request(
            addr,
            Proto::Http1,
            "GET",
            "/events/slow?sleep_ms=3000",
            &[],
            None
        ),
        client::request(
            addr,
            Proto::H2c,
            "GET",
            "/events/slow?sleep_ms=3000",
            &[],
            None
        ),
    );
    for r in [http1.unwrap(), h2.unwrap()] {
        assert_eq!(r.status, 504, "{}", r.text());
        assert_about(r.elapsed, 2000, 300);
    }

    let (res, elapsed) = grpc::unary_timed(
        addr,
        "/mesh.demo.Events/Get",
        &[("x-demo-sleep-ms", "3000")],
        Bytes::from_static(b"hi"),
    )
    .await;
    let status = res.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert_about(elapsed, 2000, 300);

    let events = [("route", "events")];
    envoy
        .wait_for_value("mesh_deadline_rq_timeout", &events, 3.0)
        .await
        .unwrap();
    envoy
        .wait_for_value("mesh_deadline_rq_total", &events, 3.0)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_grpc_timeout_shrinks_the_budget_and_is_propagated() {
    let (svc, envoy) = one_route(
        "auth",
        "auth",
        json!({"timeout": "5s"}),
        json!({"timeout": "15s"}),
    )
    .await;
    let addr = envoy.listener("main");

    let reply = grpc::unary(
        addr,
        "/mesh.demo.Auth/Check",
        &[("grpc-timeout", "300m")],
        Bytes::from_static(b"x"),
    )
    .await
    .unwrap();
    assert_eq!(reply.message, Bytes::from_static(b"x"));
    let seen = &svc.requests()[0];
    let upstream_grpc_timeout =
        mesh_deadline::grpc_timeout::parse(seen.header("grpc-timeout").unwrap()).unwrap();
    assert!(
        upstream_grpc_timeout <= Duration::from_millis(300),
        "{upstream_grpc_timeout:?}"
    );
    assert!(
        upstream_grpc_timeout >= Duration::from_millis(250),
        "{upstream_grpc_timeout:?}"
    );
    let expected = ms_header(seen, "x-envoy-expected-rq-timeout-ms");
    assert!((250..=300).contains(&expected), "{expected}");

    let (status, r) = grpc_h2(
        addr,
        "/mesh.demo.Auth/Check",
        &[("grpc-timeout", "300m"), ("x-demo-sleep-ms", "3000")],
    )
    .await;
    assert_eq!(status, 4, "DEADLINE_EXCEEDED: {r:?}");
    assert_about(r.elapsed, 300, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_back_envoys_budget_is_the_front_envoys_remainder() {
    let svc = upstream::local("learner").await.unwrap();
    let back_routes = vec![with_metadata(
        route("learner", "/", "svc"),
        FILTER,
        json!({"timeout": "10s"}),
    )];
    let back = Envoy::start(&one_service(
        json!({"timeout": "10s"}),
        back_routes,
        svc.addr(),
    ))
    .unwrap();
    let front_routes = vec![with_metadata(
        route("learner", "/", "back"),
        FILTER,
        json!({"timeout": "10s"}),
    )];
    let front = Envoy::start(&bootstrap(
        vec![listener(
            "main",
            front_routes,
            vec![filter(FILTER, &json!({"timeout": "10s"}))],
        )],
        vec![cluster("back", back.listener("main"), true)],
    ))
    .unwrap();
    let addr = front.listener("main");

    // gRPC caller with 800 ms: front and back both shrink to it; the upstream sees ≤ 800 ms.
    grpc::unary(
        addr,
        "/mesh.demo.Learner/Next",
        &[("grpc-timeout", "800m")],
        Bytes::new(),
    )
    .await
    .unwrap();
    let seen = &svc.requests()[0];
    let g = mesh_deadline::grpc_timeout::parse(seen.header("grpc-timeout").unwrap()).unwrap();
    assert!(
        g <= Duration::from_millis(800) && g >= Duration::from_millis(700),
        "{g:?}"
    );
    assert!((700..=800).contains(&ms_header(seen, "x-envoy-expected-rq-timeout-ms")));

    // HTTP caller with 1200 ms through x-envoy-expected-rq-timeout-ms: the front writes its
    // remainder, the back honours it although its own route allows 10 s.
    svc.clear();
    let r = client::get(
        addr,
        "/learner/x",
        &[("x-envoy-expected-rq-timeout-ms", "1200")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let seen = &svc.requests()[0];
    assert!(
        (1100..=1200).contains(&ms_header(seen, "x-envoy-expected-rq-timeout-ms")),
        "{:?}",
        seen.headers
    );

    // And a slow upstream is cut by the back Envoy near the front's remainder.
    let r = client::get(
        addr,
        "/learner/x?sleep_ms=3000",
        &[("x-envoy-expected-rq-timeout-ms", "600")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 504);
    assert_about(r.elapsed, 600, 250);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_deadline_is_rejected_on_arrival_and_never_reaches_the_upstream() {
    let (svc, envoy) = one_route(
        "auth",
        "auth",
        json!({"timeout": "5s"}),
        json!({"timeout": "15s"}),
    )
    .await;
    let addr = envoy.listener("main");
    let auth = [("route", "auth")];

    let r = client::get(addr, "/auth/x", &[("x-envoy-expected-rq-timeout-ms", "0")])
        .await
        .unwrap();
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.header("x-mesh-rejected-by"), Some(FILTER));
    let body = r.json();
    assert_eq!(
        (body["error"].as_str(), body["filter"].as_str()),
        (Some("deadline_exceeded"), Some(FILTER)),
        "{body}"
    );
    envoy
        .wait_for_value("mesh_deadline_rq_expired", &auth, 1.0)
        .await
        .unwrap();

    let (status, r) = grpc_h2(addr, "/mesh.demo.Auth/Check", &[("grpc-timeout", "1n")]).await;
    assert_eq!(status, 4, "DEADLINE_EXCEEDED: {r:?}");
    assert_eq!(r.header("grpc-status"), Some("4"), "trailers-only");
    assert_eq!(r.header("x-mesh-rejected-by"), Some(FILTER));
    assert!(r.elapsed < Duration::from_millis(200), "{:?}", r.elapsed);
    envoy
        .wait_for_value("mesh_deadline_rq_expired", &auth, 2.0)
        .await
        .unwrap();

    assert_eq!(svc.count(), 0, "the upstream saw {:?}", svc.requests());
}

#[tokio::test(flavor = "multi_thread")]
async fn each_route_gets_its_own_timeout_and_disabled_routes_are_left_alone() {
    let svc = upstream::local("mesh").await.unwrap();
    let routes = vec![
        with_metadata(
            route("fast", "/fast/", "svc"),
            FILTER,
            json!({"timeout": "300ms"}),
        ),
        with_metadata(
            route("slow", "/slow/", "svc"),
            FILTER,
            json!({"timeout": "1s", "propagate": false}),
        ),
        with_metadata(
            route("off", "/off/", "svc"),
            FILTER,
            json!({"disabled": true}),
        ),
        with_filter_disabled(route("off-native", "/off-native/", "svc"), FILTER),
        route("plugin", "/plugin/", "svc"),
    ];
    let envoy = Envoy::start(&one_service(json!({"timeout": "4s"}), routes, svc.addr())).unwrap();
    let addr = envoy.listener("main");

    let svc = &svc;
    let expected = |path: &'static str| async move {
        svc.clear();
        let r = client::get(addr, path, &[]).await.unwrap();
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        svc.requests()[0]
            .header("x-envoy-expected-rq-timeout-ms")
            .map(|v| v.parse::<u64>().unwrap())
    };
    let fast = expected("/fast/a").await.unwrap();
    assert!((250..=300).contains(&fast), "{fast}");
    // propagate: false still tells the router; the router itself sets the expected header.
    let slow = expected("/slow/a").await.unwrap();
    assert!((900..=1000).contains(&slow), "{slow}");
    assert_eq!(expected("/off/a").await, None);
    assert_eq!(expected("/off-native/a").await, None);
    let plugin = expected("/plugin/a").await.unwrap();
    assert!((3900..=4000).contains(&plugin), "{plugin}");

    let r = client::get(addr, "/fast/a?sleep_ms=2000", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 504);
    assert_about(r.elapsed, 300, 200);
    let r = client::get(addr, "/off/a?sleep_ms=1200", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "a disabled route must not be cut");

    // The disabled route never counts: its sample is absent or 0, on the same page where the
    // same name counts the route that has the filter (so the name is right).
    let off = envoy
        .wait_for("rq_total of route fast ≥ 2", |m| {
            let fast = m.get("mesh_deadline_rq_total", &[("route", "fast")])?;
            (fast >= 2.0).then(|| m.get("mesh_deadline_rq_total", &[("route", "off")]))
        })
        .await
        .unwrap();
    assert_eq!(off.unwrap_or(0.0), 0.0, "the disabled route was counted");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_deadline_headers_are_ignored_and_counted() {
    let (svc, envoy) = one_route(
        "auth",
        "auth",
        json!({"timeout": "5s"}),
        json!({"timeout": "15s"}),
    )
    .await;
    let addr = envoy.listener("main");

    for bad in ["abc", "123456789S", "-5S", "5", ""] {
        svc.clear();
        let r = client::get(addr, "/auth/x", &[("grpc-timeout", bad)])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "grpc-timeout {bad:?}: {}", r.text());
        let expected = ms_header(&svc.requests()[0], "x-envoy-expected-rq-timeout-ms");
        assert!(
            (4900..=5000).contains(&expected),
            "grpc-timeout {bad:?} changed the budget: {expected}"
        );
    }
    svc.clear();
    let r = client::get(
        addr,
        "/auth/x",
        &[("x-envoy-expected-rq-timeout-ms", "1.5")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    // Envoy may drop an empty header value before the filter sees it; count what arrived.
    let invalid = envoy
        .wait_for("invalid_header ≥ 5", |m| {
            m.get("mesh_deadline_invalid_header", &[("route", "auth")])
                .filter(|v| *v >= 5.0)
        })
        .await
        .unwrap();
    assert!((5.0..=6.0).contains(&invalid), "invalid_header = {invalid}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_sent_router_timeouts_cannot_extend_the_budget() {
    let (svc, envoy) = one_route(
        "auth",
        "auth",
        json!({"timeout": "300ms", "per_try_timeout": "10s"}),
        json!({"timeout": "15s"}),
    )
    .await;
    let addr = envoy.listener("main");
    let headers = [
        ("x-envoy-upstream-rq-timeout-ms", "60000"),
        ("x-envoy-upstream-rq-per-try-timeout-ms", "60000"),
        ("x-envoy-expected-rq-timeout-ms", "60000"),
        ("grpc-timeout", "60S"),
    ];
    let r = client::get(addr, "/auth/x?sleep_ms=2000", &headers)
        .await
        .unwrap();
    assert_eq!(r.status, 504);
    assert_about(r.elapsed, 300, 200);
    svc.clear();
    client::get(addr, "/auth/x", &headers).await.unwrap();
    let seen = &svc.requests()[0];
    assert!(ms_header(seen, "x-envoy-expected-rq-timeout-ms") <= 300);
    assert_eq!(
        seen.header("x-envoy-upstream-rq-timeout-ms"),
        None,
        "the router consumes it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_route_metadata_fails_open_with_the_plugin_config_and_is_counted() {
    let (svc, envoy) = one_route(
        "auth",
        "broken",
        json!({"timeout": "5"}),
        json!({"timeout": "700ms"}),
    )
    .await;
    let addr = envoy.listener("main");
    for _ in 0..3 {
        let r = client::get(addr, "/x", &[]).await.unwrap();
        assert_eq!(r.status, 200);
    }
    let expected = ms_header(&svc.requests()[0], "x-envoy-expected-rq-timeout-ms");
    assert!((600..=700).contains(&expected), "{expected}");
    envoy
        .wait_for_value("mesh_deadline_config_error", &[("route", "broken")], 3.0)
        .await
        .unwrap();
    let log = envoy.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("mesh.deadline: invalid route metadata on route \"broken\""))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "logged once per route, not per request:\n{log}"
    );
    assert!(lines[0].contains("field `timeout`"), "{}", lines[0]);
}

#[test]
fn invalid_plugin_configs_are_refused_and_the_log_names_the_field() {
    for (config, field) in [
        (json!({"timeout": "5s", "timeuot": "1s"}), "timeuot"),
        (json!({"timeout": "5"}), "timeout"),
        (json!({"timeout": "-5s"}), "timeout"),
        (json!({"timeout": "5s", "min_budget": "0ms"}), "min_budget"),
    ] {
        let line = fixture::refusal(FILTER, &config).unwrap();
        assert!(line.contains(&format!("field `{field}`")), "{line}");
    }
}
