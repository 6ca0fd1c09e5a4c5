//! The mesh on Docker Compose, end to end: these tests talk to the stack `make up` runs
//! (docker-compose.yml) and need it running; `make test-compose` runs them one at a time. Built
//! only with the `compose` feature, so plain `cargo test` never runs them.
//!
//! What they show that one Envoy on loopback cannot: SPIFFE identities checked by each sidecar
//! on its own container address, services calling each other through two sidecars, a deadline
//! held across three hops, a stopped container opening its sidecar's breaker and draining its
//! retry budget, spans of every hop under one trace id, and Prometheus scraping every Envoy.
//!
//! Addresses (environment, with defaults): `MESH_EDGE` 127.0.0.1:10000, `MESH_EDGE_ADMIN`
//! 127.0.0.1:9901, `MESH_PROMETHEUS` 127.0.0.1:9090, `MESH_TRACES` 127.0.0.1:16686 (the
//! query API of the OTLP receiver or Jaeger), `MESH_COMPOSE_CERTS` .run/compose/certs,
//! `COMPOSE_PROJECT_NAME` mesh-filters (to find the containers with `docker`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod stack;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use mesh_integration::client::tls::Tls;
use mesh_integration::client::{self, grpc, Response};
use mesh_integration::fixture::sa;
use serde_json::Value;
use stack::*;

// ---------------------------------------------------------------------------------------
// The local demo's assertions, through the mesh

#[tokio::test]
async fn every_route_reaches_its_service_through_its_sidecar() {
    for (service, timeout_ms) in [("auth", 5000), ("learner", 10000), ("events", 2000)] {
        let resp = get(&format!("/{service}/hello"), &[]).await;
        assert_eq!(resp.status, 200, "{service}: {}", resp.text());
        let echo = resp.json();
        assert_eq!(echo["service"], service);
        // The sidecar calls its service over h2c, with the edge's verified identity.
        assert_eq!(echo["version"], "HTTP/2.0");
        assert_eq!(echo["headers"]["x-spiffe-id"], sa("edge").as_str());
        let budget = seen_ms(&echo, "x-envoy-expected-rq-timeout-ms");
        assert!(
            budget <= timeout_ms && budget > timeout_ms - 1000,
            "{service}: budget {budget} ms for a {timeout_ms} ms route"
        );
    }
}

#[tokio::test]
async fn the_edge_drops_what_clients_must_not_set() {
    let forged = sa("admin");
    let resp = get(
        "/auth/x",
        &[
            ("x-spiffe-id", forged.as_str()),
            ("x-envoy-expected-rq-timeout-ms", "0"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(seen(&resp, "x-spiffe-id"), Some(sa("edge")));
    // A client's x-envoy-expected-rq-timeout-ms is not a deadline at the edge: the route's is.
    let budget = seen_ms(&resp.json(), "x-envoy-expected-rq-timeout-ms");
    assert!(budget > 4000, "budget {budget}");
}

#[tokio::test]
async fn a_callers_grpc_timeout_reaches_the_service() {
    let resp = get("/learner/x", &[("grpc-timeout", "300m")]).await;
    assert_eq!(resp.status, 200);
    let budget = seen_ms(&resp.json(), "x-envoy-expected-rq-timeout-ms");
    assert!(budget <= 300 && budget > 150, "budget {budget}");

    let resp = get("/auth/x", &[("grpc-timeout", "1n")]).await;
    assert_eq!(resp.status, 504);
    assert_eq!(resp.header("x-mesh-rejected-by"), Some("mesh.deadline"));
    assert!(
        resp.elapsed < Duration::from_millis(500),
        "{:?}",
        resp.elapsed
    );
}

#[tokio::test]
async fn the_events_deadline_answers_504_after_two_seconds() {
    let resp = get("/events/x?sleep_ms=3000", &[]).await;
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(
        resp.elapsed >= Duration::from_millis(1900) && resp.elapsed < Duration::from_millis(2900),
        "{:?}",
        resp.elapsed
    );
}

#[tokio::test]
async fn a_failed_attempt_is_retried_by_the_services_sidecar() {
    let resp = get("/auth/x?fail_attempts=1", &[]).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["attempt"], 2);
}

#[tokio::test]
async fn grpc_calls_cross_the_mesh() {
    let reply = grpc::unary(
        edge(),
        "/mesh.demo.Auth/Check",
        &[],
        Bytes::from_static(b"ping"),
    )
    .await
    .unwrap();
    assert_eq!(&reply.message[..], b"ping");
    let budget: u64 = reply
        .header("x-demo-seen-x-envoy-expected-rq-timeout-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(budget <= 5000 && budget > 4000, "budget {budget}");
}

// ---------------------------------------------------------------------------------------
// SPIFFE identities between sidecars

#[tokio::test]
async fn each_sidecar_checks_the_callers_spiffe_id_on_its_container_address() {
    let ca = ca_pem();
    let call = |sidecar: &'static str, who: Option<&'static str>, path: &'static str| {
        let ca = ca.clone();
        async move {
            let addr = SocketAddr::new(container_ip(&format!("{sidecar}-sidecar")), 15443);
            let cert = who.map(leaf);
            Tls::new(&format!("{sidecar}-sidecar"), &ca)
                .presenting(cert.as_ref())
                .get(addr, path, &[])
                .await
        }
    };

    // learner admits auth; events and admin are refused by its rules.
    let resp = call("learner", Some("auth"), "/learner/x").await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(seen(&resp, "x-spiffe-id"), Some(sa("auth")));
    for who in ["events", "admin"] {
        let resp = call("learner", Some(who), "/learner/x").await.unwrap();
        assert_eq!(resp.status, 403, "{who}: {}", resp.text());
        assert_eq!(
            resp.header("x-mesh-rejected-by"),
            Some("mesh.spiffe_identity")
        );
        assert_eq!(resp.json()["error"], "permission_denied");
    }
    // events admits the whole trust domain but its deny list.
    let resp = call("events", Some("learner"), "/events/x").await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = call("events", Some("admin"), "/events/x").await.unwrap();
    assert_eq!(resp.status, 403, "{}", resp.text());
    // No client certificate: no connection.
    assert!(call("auth", None, "/auth/x").await.is_err());
}

#[tokio::test]
async fn services_call_each_other_through_both_sidecars_with_their_own_identity() {
    // auth → its sidecar (127.0.0.1:15001) → learner's sidecar, over mTLS as auth.
    let resp = get(
        "/auth/x",
        &[("x-demo-call", "http://127.0.0.1:15001/learner/x")],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let call = &resp.json()["call"];
    assert_eq!(call["status"], 200, "{call}");
    assert_eq!(call["body"]["service"], "learner");
    assert_eq!(call["body"]["headers"]["x-spiffe-id"], sa("auth").as_str());
    let xfcc = call["body"]["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap();
    assert!(
        xfcc.starts_with(&format!("By={};", sa("learner"))),
        "{xfcc}"
    );

    // events may not call learner: learner's sidecar refuses events' identity.
    let denied_before = metric(
        "learner-sidecar",
        "mesh_spiffe_identity_denied",
        &[("route", "learner")],
    );
    let resp = get(
        "/events/x",
        &[("x-demo-call", "http://127.0.0.1:15001/learner/x")],
    )
    .await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    let call = &resp.json()["call"];
    assert_eq!(
        call["headers"]["x-mesh-rejected-by"], "mesh.spiffe_identity",
        "{call}"
    );
    assert_eq!(call["body"]["error"], "permission_denied");
    let denied_after = metric(
        "learner-sidecar",
        "mesh_spiffe_identity_denied",
        &[("route", "learner")],
    );
    assert_eq!(denied_after, denied_before + 1.0);
}

// ---------------------------------------------------------------------------------------
// A deadline across three hops: edge → auth's sidecar → auth → auth's sidecar → learner's sidecar

#[tokio::test]
async fn a_deadline_holds_across_three_hops() {
    // The caller's 3 s budget reaches learner, less what each hop spent (auth sleeps 300 ms).
    let resp = get(
        "/auth/x?sleep_ms=300",
        &[
            ("grpc-timeout", "3000m"),
            ("x-demo-call", "http://127.0.0.1:15001/learner/x"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echo = resp.json();
    let at_auth = seen_ms(&echo, "x-envoy-expected-rq-timeout-ms");
    let at_learner = seen_ms(&echo["call"]["body"], "x-envoy-expected-rq-timeout-ms");
    assert!(at_auth <= 3000 && at_auth > 2500, "auth saw {at_auth} ms");
    assert!(
        at_learner <= at_auth - 300 && at_learner > at_auth - 300 - 500,
        "auth saw {at_auth} ms, learner {at_learner} ms"
    );

    // learner would take 5 s (its route allows 10 s): the caller's 1 s ends the whole chain.
    let resp = get(
        "/auth/x",
        &[
            ("grpc-timeout", "1000m"),
            (
                "x-demo-call",
                "http://127.0.0.1:15001/learner/x?sleep_ms=5000",
            ),
        ],
    )
    .await;
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(
        resp.elapsed >= Duration::from_millis(900) && resp.elapsed < Duration::from_millis(2000),
        "{:?}",
        resp.elapsed
    );
}

// ---------------------------------------------------------------------------------------
// The breaker and the retry budget of a service whose container stops

const EVENTS: &[(&str, &str)] = &[("route", "events")];

fn events_metric(name: &str) -> f64 {
    metric("events-sidecar", name, EVENTS)
}

/// Waits until the events breaker is closed again (requests drive half-open probes).
async fn events_breaker_closed() {
    eventually(
        "the events breaker closes",
        Duration::from_secs(30),
        || async {
            let resp = get("/events/x", &[]).await;
            let state = events_metric("mesh_circuit_breaker_state");
            if resp.status == 200 && state == 0.0 {
                Ok(())
            } else {
                Err(format!("status {}, breaker state {state}", resp.status))
            }
        },
    )
    .await;
}

/// Sends requests to /events/ until the breaker rejects one; returns the statuses before it and
/// the rejection.
async fn until_rejected(path: &str) -> (Vec<u16>, Response) {
    let mut before = Vec::new();
    for _ in 0..30 {
        let resp = get(path, &[]).await;
        if resp.header("x-mesh-rejected-by") == Some("mesh.circuit_breaker") {
            return (before, resp);
        }
        before.push(resp.status);
    }
    panic!("the events breaker did not open; statuses {before:?}");
}

/// Starts a stopped container again when the test ends, however it ends.
struct StartAgain(String);

impl Drop for StartAgain {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["start", &self.0]).output();
    }
}

#[tokio::test]
async fn a_service_answering_503_opens_its_breaker() {
    events_breaker_closed().await;
    let opened = events_metric("mesh_circuit_breaker_opened");
    let (before, rejected) = until_rejected("/events/x?status=503").await;
    // Five failures in a row open it (the sidecar's retries of each are one failed call).
    assert_eq!(before, vec![503; 5]);
    assert_eq!(rejected.status, 503);
    let retry_after: u64 = rejected.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry_after), "retry-after {retry_after}");
    assert_eq!(events_metric("mesh_circuit_breaker_state"), 1.0);
    assert_eq!(events_metric("mesh_circuit_breaker_opened"), opened + 1.0);
    events_breaker_closed().await;
}

#[tokio::test]
async fn a_stopped_service_opens_its_breaker_and_exhausts_its_retry_budget_then_recovers() {
    events_breaker_closed().await;
    // The events budget counts the last 5 s: let earlier traffic age out of it.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let retries = events_metric("mesh_retry_budget_retries");
    let exhausted = events_metric("mesh_retry_budget_budget_exhausted");
    let opened = events_metric("mesh_circuit_breaker_opened");
    let closed = events_metric("mesh_circuit_breaker_closed");

    let events = container("events");
    let guard = StartAgain(events.clone());
    docker(&["stop", "--time", "2", &events]);

    // Every call fails at the sidecar (connection refused), which retries while the budget
    // lasts, then sends without retries, until the breaker opens and answers by itself.
    let (before, rejected) = until_rejected("/events/x").await;
    assert_eq!(before, vec![503; 5], "statuses before the breaker opened");
    assert_eq!(rejected.status, 503);
    assert!(rejected.header("retry-after").is_some());
    assert_eq!(events_metric("mesh_circuit_breaker_state"), 1.0);
    assert_eq!(events_metric("mesh_circuit_breaker_opened"), opened + 1.0);
    let retried = events_metric("mesh_retry_budget_retries") - retries;
    let exhausted_now = events_metric("mesh_retry_budget_budget_exhausted") - exhausted;
    eprintln!("events stopped: {retried} retries, budget exhausted {exhausted_now} times");
    assert!(retried >= 1.0, "retries {retried}");
    // 1 retry/s over 5 s (+20% of the requests) is less than 2 retries for each of 5 calls.
    assert!(retried <= 7.0, "retries {retried}");
    assert!(
        exhausted_now >= 1.0,
        "budget exhausted {exhausted_now} times"
    );

    // Back: after the open time, probes find it well and the breaker closes.
    docker(&["start", &events]);
    drop(guard);
    events_breaker_closed().await;
    assert_eq!(events_metric("mesh_circuit_breaker_closed"), closed + 1.0);
    let resp = get("/events/x", &[]).await;
    assert_eq!(resp.status, 200);
}

// ---------------------------------------------------------------------------------------
// Spans of every hop

fn normalize_id(id: &str) -> String {
    format!("{:0>32}", id.to_ascii_lowercase())
}

#[tokio::test]
async fn spans_from_every_hop_reach_the_receiver_under_one_trace_id() {
    let trace_id = new_trace_id();
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{client_span}-01");
    let resp = get(
        "/auth/x",
        &[
            ("traceparent", traceparent.as_str()),
            ("x-demo-call", "http://127.0.0.1:15001/learner/x"),
        ],
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let traceresponse = resp.header("traceresponse").unwrap().to_owned();
    assert!(traceresponse.starts_with(&format!("00-{trace_id}-")));

    // (service, span name, span id, parent id) of each span, once all four arrived.
    let path = format!("/api/traces/{trace_id}");
    let spans = eventually("four spans of the trace", Duration::from_secs(20), || {
        let path = path.clone();
        let trace_id = trace_id.clone();
        async move {
            let resp = client::get(traces(), &path, &[])
                .await
                .map_err(|e| e.to_string())?;
            if resp.status != 200 {
                return Err(format!("{path}: {}", resp.status));
            }
            let body = resp.json();
            let trace = &body["data"][0];
            let list = trace["spans"].as_array().cloned().unwrap_or_default();
            let found: Vec<(String, String, String, String)> = list
                .iter()
                .map(|s| {
                    assert_eq!(
                        normalize_id(s["traceID"].as_str().unwrap()),
                        trace_id,
                        "{s}"
                    );
                    let process = s["processID"].as_str().unwrap();
                    let parent = s["references"]
                        .as_array()
                        .and_then(|r| r.first())
                        .map(|r| r["spanID"].as_str().unwrap().to_owned())
                        .unwrap_or_default();
                    (
                        trace["processes"][process]["serviceName"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                        s["operationName"].as_str().unwrap().to_owned(),
                        s["spanID"].as_str().unwrap().to_owned(),
                        parent,
                    )
                })
                .collect();
            if found.len() >= 4 {
                Ok(found)
            } else {
                Err(format!("{} spans: {found:?}", found.len()))
            }
        }
    })
    .await;
    assert_eq!(spans.len(), 4, "{spans:?}");

    let find = |service: &str, name: &str| {
        spans
            .iter()
            .find(|(s, n, _, _)| s == service && n == name)
            .unwrap_or_else(|| panic!("no span {name} from {service}: {spans:?}"))
            .clone()
    };
    let edge = find("edge", "auth");
    let auth_in = find("auth-sidecar", "auth");
    let auth_out = find("auth-sidecar", "out-learner");
    let learner = find("learner-sidecar", "learner");
    // Each hop's span is the child of the one before it, the first of the client's.
    assert_eq!(edge.3, client_span);
    assert_eq!(auth_in.3, edge.2);
    assert_eq!(auth_out.3, auth_in.2);
    assert_eq!(learner.3, auth_out.2);
    assert!(traceresponse.contains(&edge.2), "{traceresponse} {edge:?}");
}

// ---------------------------------------------------------------------------------------
// Prometheus

/// The series of a PromQL query: (labels, value).
async fn query(promql: &str) -> Result<Vec<(Value, f64)>, String> {
    let path = format!("/api/v1/query?query={}", client::percent_encode(promql));
    let resp = client::get(prometheus(), &path, &[])
        .await
        .map_err(|e| e.to_string())?;
    let body = resp.try_json().map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(format!("{promql}: {body}"));
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|series| {
            let value = series["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            (series["metric"].clone(), value)
        })
        .collect())
}

#[tokio::test]
async fn prometheus_shows_the_filters_metrics_with_route_labels() {
    for path in ["/auth/x", "/learner/x", "/events/x"] {
        assert_eq!(get(path, &[]).await.status, 200);
    }
    let resp = get(
        "/auth/x",
        &[("x-demo-call", "http://127.0.0.1:15001/learner/x")],
    )
    .await;
    assert_eq!(resp.status, 200);

    // Each (metric with route label, Envoy) that must be scraped.
    let expected = [
        ("mesh_deadline_rq_total{route=\"auth\"}", "edge"),
        ("mesh_deadline_rq_total{route=\"auth\"}", "auth-sidecar"),
        (
            "mesh_spiffe_identity_allowed{route=\"learner\"}",
            "learner-sidecar",
        ),
        ("mesh_circuit_breaker_state{route=\"events\"}", "edge"),
        (
            "mesh_circuit_breaker_state{route=\"events\"}",
            "events-sidecar",
        ),
        (
            "mesh_retry_budget_rq_total{route=\"out-learner\"}",
            "auth-sidecar",
        ),
        ("mesh_retry_budget_rq_total{route=\"auth\"}", "auth-sidecar"),
    ];
    for (promql, envoy) in expected {
        eventually(
            &format!("{promql} from {envoy} in Prometheus"),
            Duration::from_secs(30),
            || async move {
                let series = query(promql).await?;
                if series
                    .iter()
                    .any(|(labels, value)| labels["envoy"] == envoy && value.is_finite())
                {
                    Ok(())
                } else {
                    Err(format!("{series:?}"))
                }
            },
        )
        .await;
    }
    // Spans were exported from every Envoy.
    eventually(
        "spans exported by every Envoy",
        Duration::from_secs(30),
        || async {
            let series = query("mesh_trace_propagation_spans_exported > 0").await?;
            let mut envoys: Vec<String> = series
                .iter()
                .filter_map(|(labels, _)| labels["envoy"].as_str().map(str::to_owned))
                .collect();
            envoys.sort();
            envoys.dedup();
            if envoys.len() == 4 {
                Ok(())
            } else {
                Err(format!("{envoys:?}"))
            }
        },
    )
    .await;
}
