//! The suite end to end: `mesh_filters.wasm` (root_id `mesh`) in a real Envoy behind an mTLS
//! listener, every stage configured in one plugin configuration, per-route overrides in the same
//! route metadata the single filters read.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_integration::bootstrap::{cluster, filter, route, with_metadata};
use mesh_integration::certs::Leaf;
use mesh_integration::client;
use mesh_integration::fixture::{self, sa};
use mesh_integration::upstream::{self, Upstream};
use mesh_trace_propagation::formats;
use serde_json::{json, Value};

fn everything() -> Value {
    json!({
        "spiffe_identity": {"allow": [sa("learner")]},
        "circuit_breaker": {"consecutive_failures": 3, "open_duration": "60s"},
        "deadline": {"timeout": "2s"},
        "retry_budget": {"max_retries": 2, "retry_on": "5xx"},
        "trace_propagation": {"inject": ["w3c", "b3"], "response_headers": ["traceresponse"]}
    })
}

/// The suite behind the mTLS listener, every route to the service.
struct Mesh(fixture::Mesh);

impl Mesh {
    fn start(tag: &str, config: &Value, routes: Vec<Value>, svc: &Upstream) -> Mesh {
        let mesh = fixture::Mesh::builder(tag)
            .filter(filter("mesh", config))
            .routes(routes)
            .cluster(cluster("svc", svc.addr(), true))
            .start()
            .unwrap();
        Mesh(mesh)
    }

    async fn get(&self, who: &Leaf, path: &str) -> client::Response {
        self.0.get(Some(who), path, &[]).await.unwrap()
    }
}

impl std::ops::Deref for Mesh {
    type Target = fixture::Mesh;
    fn deref(&self) -> &fixture::Mesh {
        &self.0
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_stage_acts_in_one_filter_and_route_metadata_works_as_with_single_filters() {
    let svc = upstream::local("orders").await.unwrap();
    let routes = vec![
        with_metadata(
            route("orders", "/orders", "svc"),
            "mesh.deadline",
            json!({"timeout": "300ms"}),
        ),
        with_metadata(
            route("admin", "/admin", "svc"),
            "mesh.spiffe_identity",
            json!({"allow": [sa("admin")]}),
        ),
        route("flaky", "/", "svc"),
    ];
    let mesh = Mesh::start("suite-all", &everything(), routes, &svc);
    let learner = mesh.client(&[&sa("learner")]).unwrap();
    let admin = mesh.client(&[&sa("admin")]).unwrap();

    // Allowed: every stage wrote what it writes, in one pass.
    let r = mesh.get(&learner, "/orders/1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = &svc.requests()[0];
    assert_eq!(rec.header("x-spiffe-id"), Some(sa("learner").as_str()));
    let budget: u64 = rec
        .header("x-envoy-expected-rq-timeout-ms")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (250..=300).contains(&budget),
        "route metadata override: {budget}"
    );
    // (The router consumes the retry headers the budget stage wrote; the retries show below.)
    let w3c = formats::parse_traceparent(rec.header("traceparent").unwrap()).unwrap();
    let b3 = formats::parse_b3(rec.header("b3").unwrap())
        .unwrap()
        .context()
        .unwrap();
    assert_eq!((w3c.trace_id, w3c.span_id), (b3.trace_id, b3.span_id));
    assert_eq!(r.header("traceresponse"), rec.header("traceparent"));

    // Denied by identity: nothing reaches the service, the reply names the stage.
    svc.clear();
    let r = mesh.get(&admin, "/orders/1").await;
    assert_eq!(
        (r.status, r.header("x-mesh-rejected-by")),
        (403, Some("mesh.spiffe_identity"))
    );
    // Per-route identity rules from the same metadata key as the single filter.
    let r = mesh.get(&admin, "/admin/x").await;
    assert_eq!(r.status, 200);
    let r = mesh.get(&learner, "/admin/x").await;
    assert_eq!(r.status, 403);
    assert_eq!(svc.requests().len(), 1, "only the admin call went through");

    // Failures: the router retries (budget), the breaker counts the final outcome and opens.
    svc.clear();
    for _ in 0..3 {
        let r = mesh.get(&learner, "/flaky?status=500").await;
        assert_eq!(r.status, 500);
    }
    assert_eq!(svc.requests().len(), 9, "each request tried 1 + 2 retries");
    let r = mesh.get(&learner, "/flaky?status=500").await;
    assert_eq!(
        (r.status, r.header("x-mesh-rejected-by")),
        (503, Some("mesh.circuit_breaker"))
    );
    assert_eq!(svc.requests().len(), 9, "an open breaker answers alone");

    for (name, route, want) in [
        ("mesh_circuit_breaker_opened", "flaky", 1.0),
        ("mesh_retry_budget_retries", "flaky", 6.0),
        ("mesh_spiffe_identity_denied", "orders", 1.0),
    ] {
        mesh.envoy
            .wait_for_value(name, &[("route", route)], want)
            .await
            .unwrap();
    }
    // Traces started: /orders by learner, /admin by admin, the 3 failures. The two identity
    // denials and the breaker's rejection stopped the chain before the trace stage.
    mesh.envoy
        .wait_for_value("mesh_trace_propagation_started", &[], 5.0)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stage_without_a_section_is_off() {
    let svc = upstream::local("orders").await.unwrap();
    let config =
        json!({"spiffe_identity": {"allow": [sa("learner")]}, "deadline": {"timeout": "1s"}});
    let mesh = Mesh::start(
        "suite-some",
        &config,
        vec![route("orders", "/", "svc")],
        &svc,
    );
    let learner = mesh.client(&[&sa("learner")]).unwrap();
    let r = mesh.get(&learner, "/orders/1").await;
    assert_eq!(r.status, 200);
    let rec = &svc.requests()[0];
    assert!(rec.header("x-envoy-expected-rq-timeout-ms").is_some());
    assert_eq!(rec.header("x-spiffe-id"), Some(sa("learner").as_str()));
    assert_eq!(
        rec.header("x-envoy-max-retries"),
        None,
        "no retry_budget section"
    );
    assert_eq!(
        rec.header("traceparent"),
        None,
        "no trace_propagation section"
    );
}

#[test]
fn a_bad_section_is_refused_and_the_log_names_section_and_field() {
    for (config, field) in [
        (json!({"deadline": {"timeout": "soon"}}), "deadline.timeout"),
        (
            json!({"retry_budget": {"retry_ratio": 2}}),
            "retry_budget.retry_ratio",
        ),
        (
            json!({"spiffe_identity": {"allow": ["spiffe://Mesh/x"]}}),
            "spiffe_identity.allow",
        ),
        (json!({"deadlines": {}}), "deadlines"),
    ] {
        let line = fixture::refusal("mesh", &config).unwrap();
        assert!(line.contains(&format!("field `{field}`")), "{line}");
    }
}
