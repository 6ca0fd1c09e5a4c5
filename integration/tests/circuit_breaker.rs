//! The circuit breaker end to end: a real Envoy with two workers loading
//! `mesh_circuit_breaker.wasm`, real upstreams, a real gRPC client. Every request opens a new
//! connection, so requests land on both workers: exact counts prove one breaker per process.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use mesh_integration::bootstrap::{
    bootstrap, cluster, filter, listener, route, with_metadata, Plugin,
};
use mesh_integration::client;
use mesh_integration::client::grpc;
use mesh_integration::envoy::{Envoy, Options};
use mesh_integration::fixture;
use mesh_integration::upstream;
use mesh_kit::proto::google_rpc::{RetryInfo, Status};
use prost::Message;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;

const FILTER: &str = "mesh.circuit_breaker";

fn start(config: Value, routes: Vec<Value>, svc: SocketAddr) -> Envoy {
    let b = fixture::one_service(vec![filter(FILTER, &config)], routes, svc);
    Envoy::start_with(&b, &Options::workers(2)).unwrap()
}

async fn status_of(addr: SocketAddr, path: &str) -> client::Response {
    client::get(addr, path, &[]).await.unwrap()
}

fn rejected(r: &client::Response) -> bool {
    r.header("x-mesh-rejected-by") == Some(FILTER)
}

/// One kept-alive connection on each worker. The kernel spreads new connections over the
/// workers' sockets by hash (SO_REUSEPORT), so connections are opened, and the extras dropped,
/// until each worker holds one: calls alternating between them provably cross workers.
async fn one_connection_per_worker(envoy: &Envoy, addr: SocketAddr) -> [client::Connection; 2] {
    let mut held: [Option<client::Connection>; 2] = [None, None];
    for _ in 0..64 {
        let before = envoy.connections_per_worker(2).unwrap();
        let conn = client::Connection::open(addr).await.unwrap();
        let mut worker = None;
        for _ in 0..200 {
            let after = envoy.connections_per_worker(2).unwrap();
            if let Some(w) = (0..2).find(|&w| after[w] > before[w]) {
                worker = Some(w);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let w = worker.expect("a worker accepted the connection");
        if held[w].is_none() {
            held[w] = Some(conn);
        }
        if let [Some(_), Some(_)] = &held {
            let [a, b] = held;
            return [a.unwrap(), b.unwrap()];
        }
    }
    panic!(
        "64 connections never reached both workers: {:?}",
        envoy.connections_per_worker(2).unwrap()
    );
}

/// Waits until the route's breaker is in `state` (0 closed, 1 open, 2 half-open): transitions
/// on a response are recorded when the stream ends, just after the client has the response.
async fn assert_state(envoy: &Envoy, route: &str, state: f64) {
    envoy
        .wait_for_value("mesh_circuit_breaker_state", &[("route", route)], state)
        .await
        .unwrap();
}

/// Waits until a counter of the route has the value `want`.
async fn assert_counter(envoy: &Envoy, name: &str, route: &str, want: f64) {
    envoy
        .wait_for_value(name, &[("route", route)], want)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn five_consecutive_503s_open_the_breaker_and_the_sixth_call_never_reaches_the_upstream() {
    let svc = upstream::local("auth").await.unwrap();
    let envoy = start(
        json!({"open_duration": "30s"}),
        vec![route("auth", "/", "svc")],
        svc.addr(),
    );
    let addr = envoy.listener("main");
    // Calls alternate between the two workers: the five failures are counted across both, and
    // the sixth call is refused by the worker that saw only two or three of them.
    let mut conns = one_connection_per_worker(&envoy, addr).await;
    for i in 0..5 {
        let r = conns[i % 2].get("/auth/x?status=503", &[]).await.unwrap();
        assert_eq!(
            (r.status, rejected(&r)),
            (503, false),
            "call {i} should reach the upstream"
        );
    }
    let r = conns[1].get("/auth/x?status=503", &[]).await.unwrap();
    assert_eq!(r.status, 503);
    assert!(rejected(&r), "{r:?}");
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(r.json()["error"], "circuit_open");
    assert_eq!(svc.count(), 5, "the upstream saw exactly the five failures");
    assert_state(&envoy, "auth", 1.0).await;
    assert_counter(&envoy, "mesh_circuit_breaker_opened", "auth", 1.0).await;
    assert_counter(&envoy, "mesh_circuit_breaker_failures", "auth", 5.0).await;
    assert_counter(&envoy, "mesh_circuit_breaker_rq_rejected", "auth", 1.0).await;
    let log = envoy.log();
    assert_eq!(
        log.matches(
            "mesh.circuit_breaker: route \"auth\" opened for 30s after 5 consecutive failures"
        )
        .count(),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_close_a_healed_breaker_and_a_failed_probe_doubles_the_open_time() {
    let svc = upstream::local("learner").await.unwrap();
    let config = json!({"open_duration": "1s", "max_open_duration": "8s", "half_open_requests": 1});
    let envoy = start(config, vec![route("learner", "/", "svc")], svc.addr());
    let addr = envoy.listener("main");
    // Closed to begin with (the route's stats exist once a request went through).
    assert_eq!(status_of(addr, "/learner/x").await.status, 200);
    assert_state(&envoy, "learner", 0.0).await;
    for _ in 0..5 {
        status_of(addr, "/learner/x?status=503").await;
    }
    assert_state(&envoy, "learner", 1.0).await;
    assert!(rejected(&status_of(addr, "/learner/x").await));

    // After 1 s a probe passes; it fails, so the breaker re-opens for 2 s.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let probe = status_of(addr, "/learner/x?status=503").await;
    assert!(!rejected(&probe), "the probe reaches the upstream");
    let r = status_of(addr, "/learner/x").await;
    assert!(rejected(&r));
    assert_eq!(r.header("retry-after"), Some("2"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        rejected(&status_of(addr, "/learner/x").await),
        "still open: the second period is 2 s"
    );

    // Then a slow healthy probe: half-open while it is out, closed when it succeeds.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let slow_probe = tokio::spawn(client::get(addr, "/learner/x?sleep_ms=800", &[]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Half-open while the probe is out.
    assert_state(&envoy, "learner", 2.0).await;
    assert!(
        rejected(&status_of(addr, "/learner/x").await),
        "one probe at a time"
    );
    assert_eq!(slow_probe.await.unwrap().unwrap().status, 200);
    assert_state(&envoy, "learner", 0.0).await;
    for _ in 0..5 {
        assert_eq!(status_of(addr, "/learner/x").await.status, 200);
    }
    assert_counter(&envoy, "mesh_circuit_breaker_opened", "learner", 2.0).await;
    assert_counter(&envoy, "mesh_circuit_breaker_closed", "learner", 1.0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn half_failures_over_minimum_requests_open_it_and_a_tenth_does_not() {
    let svc = upstream::local("events").await.unwrap();
    let config = json!({"consecutive_failures": 1000, "failure_rate": 0.5, "minimum_requests": 20, "window": "30s"});
    let routes = vec![
        route("half", "/half/", "svc"),
        route("tenth", "/tenth/", "svc"),
    ];
    let envoy = start(config, routes, svc.addr());
    let addr = envoy.listener("main");
    for i in 0..19 {
        let path = if i % 2 == 0 {
            "/half/x?status=503"
        } else {
            "/half/x"
        };
        assert!(
            !rejected(&status_of(addr, path).await),
            "call {i}: below minimum_requests"
        );
    }
    status_of(addr, "/half/x").await; // the 20th call: 10 of 20 failed
    assert!(rejected(&status_of(addr, "/half/x").await));

    for i in 0..60 {
        let path = if i % 10 == 0 {
            "/tenth/x?status=503"
        } else {
            "/tenth/x"
        };
        assert!(
            !rejected(&status_of(addr, path).await),
            "call {i}: 10% must not open it"
        );
    }
    let tenth = envoy
        .settled_value("mesh_circuit_breaker_state", &[("route", "tenth")])
        .await
        .unwrap();
    assert_eq!(tenth, 0.0, "10% failures left the breaker closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_calls_open_the_breaker() {
    let svc = upstream::local("events").await.unwrap();
    let config = json!({"consecutive_failures": 1000, "slow_call_duration": "150ms", "slow_call_rate": 0.5, "minimum_requests": 4});
    let envoy = start(config, vec![route("events", "/", "svc")], svc.addr());
    let addr = envoy.listener("main");
    for _ in 0..4 {
        assert_eq!(status_of(addr, "/events/x?sleep_ms=300").await.status, 200);
    }
    let r = status_of(addr, "/events/x").await;
    assert!(rejected(&r), "{r:?}");
    assert_counter(&envoy, "mesh_circuit_breaker_slow_calls", "events", 4.0).await;
    assert!(envoy.log().contains("after slow-call rate 100%"));
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_unavailable_in_trailers_counts_and_the_rejection_carries_retry_info() {
    let svc = upstream::local("auth").await.unwrap();
    let envoy = start(
        json!({"open_duration": "20s"}),
        vec![route("auth-grpc", "/", "svc")],
        svc.addr(),
    );
    let addr = envoy.listener("main");
    let failing = [("x-demo-grpc-status", "14"), ("x-demo-trailers-only", "0")];
    for _ in 0..5 {
        let status = grpc::unary(addr, "/mesh.demo.Auth/Check", &failing, Bytes::new())
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status.metadata().get("x-mesh-rejected-by").is_none(),
            "from the upstream"
        );
    }
    let status = grpc::unary(addr, "/mesh.demo.Auth/Check", &[], Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.metadata().get("x-mesh-rejected-by").unwrap(), FILTER);
    let details = Status::decode(status.details()).unwrap();
    assert_eq!(details.code, 14);
    let retry = details
        .details
        .iter()
        .find(|a| a.type_url == "type.googleapis.com/google.rpc.RetryInfo")
        .unwrap();
    let delay = RetryInfo::decode(retry.value.as_slice())
        .unwrap()
        .retry_delay
        .unwrap();
    assert!((19..=20).contains(&delay.seconds), "{delay:?}");
    assert_eq!(svc.count(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_have_independent_breakers_and_cluster_scope_shares_one() {
    let a = upstream::local("a").await.unwrap();
    let b = upstream::local("b").await.unwrap();
    let cluster_scope = json!({"scope": "cluster"});
    let routes = vec![
        route("one", "/one/", "svc_a"),
        route("two", "/two/", "svc_a"),
        with_metadata(
            route("three", "/three/", "svc_b"),
            FILTER,
            cluster_scope.clone(),
        ),
        with_metadata(route("four", "/four/", "svc_b"), FILTER, cluster_scope),
    ];
    let b_cfg = bootstrap(
        vec![listener(
            "main",
            routes,
            vec![filter(FILTER, &json!({"open_duration": "30s"}))],
        )],
        vec![
            cluster("svc_a", a.addr(), true),
            cluster("svc_b", b.addr(), true),
        ],
    );
    let envoy = Envoy::start_with(&b_cfg, &Options::workers(2)).unwrap();
    let addr = envoy.listener("main");

    for _ in 0..5 {
        status_of(addr, "/one/x?status=503").await;
    }
    assert!(rejected(&status_of(addr, "/one/x").await));
    assert_eq!(
        status_of(addr, "/two/x").await.status,
        200,
        "same cluster, other route: its own breaker"
    );

    for i in 0..5 {
        let path = if i % 2 == 0 {
            "/three/x?status=503"
        } else {
            "/four/x?status=503"
        };
        status_of(addr, path).await;
    }
    assert!(
        rejected(&status_of(addr, "/three/x").await),
        "five failures across two routes of one cluster"
    );
    assert!(rejected(&status_of(addr, "/four/x").await));
    envoy
        .wait_for_value("mesh_circuit_breaker_state", &[("cluster", "svc_b")], 1.0)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn replies_made_by_our_own_filters_are_not_counted_as_upstream_failures() {
    let svc = upstream::local("auth").await.unwrap();
    // Breaker first, then the deadline filter, which rejects expired requests locally.
    let deadline = filter(
        "mesh.deadline",
        Plugin::json(&json!({"timeout": "5s"})).in_vm("mesh-deadline"),
    );
    let b = bootstrap(
        vec![listener(
            "main",
            vec![route("auth", "/", "svc")],
            vec![filter(FILTER, &json!({})), deadline],
        )],
        vec![cluster("svc", svc.addr(), true)],
    );
    let envoy = Envoy::start_with(&b, &Options::workers(2)).unwrap();
    let addr = envoy.listener("main");
    for _ in 0..10 {
        let r = client::get(addr, "/auth/x", &[("x-envoy-expected-rq-timeout-ms", "0")])
            .await
            .unwrap();
        assert_eq!(
            (r.status, r.header("x-mesh-rejected-by")),
            (504, Some("mesh.deadline"))
        );
    }
    assert_eq!(
        status_of(addr, "/auth/x").await.status,
        200,
        "ten local 504s did not open the breaker"
    );
    let failures = envoy
        .settled_value("mesh_circuit_breaker_failures", &[("route", "auth")])
        .await
        .unwrap();
    assert_eq!(failures, 0.0, "our own 504s are not upstream failures");
    assert_eq!(svc.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_cannot_hide_its_failures_behind_our_rejection_header() {
    let svc = upstream::local("auth").await.unwrap();
    let envoy = start(json!({}), vec![route("auth", "/", "svc")], svc.addr());
    let addr = envoy.listener("main");
    for _ in 0..5 {
        let r = client::get(
            addr,
            "/auth/x?status=503",
            &[("x-demo-rejected-by", FILTER)],
        )
        .await
        .unwrap();
        assert_eq!(
            r.header("x-mesh-rejected-by"),
            Some(FILTER),
            "the upstream sent it"
        );
    }
    assert_counter(&envoy, "mesh_circuit_breaker_failures", "auth", 5.0).await;
    let r = status_of(addr, "/auth/x").await;
    assert!(
        rejected(&r) && r.header("retry-after").is_some(),
        "five upstream 503s opened it: {r:?}"
    );
}

#[test]
fn invalid_breaker_configs_are_refused_and_the_log_names_the_field() {
    for (config, field) in [
        (json!({"consecutive_failures": 0}), "consecutive_failures"),
        (json!({"failure_rate": 2}), "failure_rate"),
        (json!({"failure_on": ["5xx", "teapot"]}), "failure_on"),
        (json!({"open_duration": "60"}), "open_duration"),
    ] {
        let line = fixture::refusal(FILTER, &config).unwrap();
        assert!(line.contains(&format!("field `{field}`")), "{line}");
    }
}
