//! Faults against the suite (`mesh_filters.wasm`, all five stages) in a real Envoy with two
//! workers behind an mTLS listener: upstream resets before and after the response headers, an
//! upstream service killed mid-request (its listener and every connection closed at once),
//! connection refused, slow responses, an expired caller, an OTLP collector that hangs and then
//! disappears, and invalid `mesh.*` metadata on single routes. For each: what the client gets,
//! what the upstream saw, and what the counters say, against each stage's documented failure
//! policy; after each, a normal request still works, and at the end the Envoy log shows no panic
//! and no wasm failure.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_integration::bootstrap::{cluster, filter, route, with_metadata};
use mesh_integration::certs::Leaf;
use mesh_integration::client::Response;
use mesh_integration::envoy::SETTLE;
use mesh_integration::fixture;
use mesh_integration::metrics::Metrics;
use mesh_integration::otlp_receiver;
use mesh_integration::upstream;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const CLIENT: &str = "spiffe://mesh.local/ns/default/sa/client";
/// Slower than this, a request waited on something it should not have (the collector).
const FAST: Duration = Duration::from_millis(500);

fn config() -> Value {
    json!({
        "spiffe_identity": {"allow": [CLIENT]},
        "circuit_breaker": {"consecutive_failures": 3, "open_duration": "60s"},
        "deadline": {"timeout": "2s"},
        "retry_budget": {"max_retries": 2, "retry_ratio": 0.2, "min_retries_per_second": 10, "ttl": "10s"},
        "trace_propagation": {"inject": ["w3c"], "export": {"cluster": "otlp", "flush_interval": "100ms"}}
    })
}

/// Every per-route counter of the five stages.
const ROUTE_METRICS: [&str; 13] = [
    "mesh_circuit_breaker_failures",
    "mesh_circuit_breaker_opened",
    "mesh_circuit_breaker_rq_rejected",
    "mesh_circuit_breaker_config_error",
    "mesh_retry_budget_rq_total",
    "mesh_retry_budget_retries",
    "mesh_retry_budget_budget_exhausted",
    "mesh_retry_budget_config_error",
    "mesh_deadline_rq_timeout",
    "mesh_deadline_rq_expired",
    "mesh_deadline_config_error",
    "mesh_spiffe_identity_config_error",
    "mesh_trace_propagation_config_error",
];

/// The suite behind the mTLS listener, and the client every request is sent as.
struct Mesh {
    mesh: fixture::Mesh,
    client: Leaf,
}

impl std::ops::Deref for Mesh {
    type Target = fixture::Mesh;
    fn deref(&self) -> &fixture::Mesh {
        &self.mesh
    }
}

impl Mesh {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        self.mesh
            .get(Some(&self.client), path, headers)
            .await
            .map_err(|e| e.to_string())
    }

    /// The per-route counters that are not zero.
    fn counters(&self, route: &str) -> BTreeMap<&'static str, u64> {
        route_counters(&self.envoy.metrics().unwrap(), route)
    }

    /// The route's counters once they equal `expected`: a stream's end (`on_log`) may be
    /// recorded just after the client saw it. Fails with every counter's last value.
    async fn counters_when(
        &self,
        route: &str,
        expected: &BTreeMap<&'static str, u64>,
    ) -> BTreeMap<&'static str, u64> {
        let what = format!("counters of route {route} = {expected:?}");
        self.envoy
            .wait_for_within(Duration::from_secs(3), &what, |m| {
                let c = route_counters(m, route);
                (&c == expected).then_some(c)
            })
            .await
            .unwrap()
    }

    fn global(&self, name: &str) -> u64 {
        self.envoy.metric(name, &[]).unwrap() as u64
    }

    /// A normal request still works: 200 from the upstream, traced, quickly.
    async fn assert_healthy(&self, after: &str) -> Duration {
        let r = self.get("/ok/healthy", &[]).await.unwrap();
        assert_eq!(r.status, 200, "after {after}: {}", r.text());
        assert_eq!(r.header("x-demo-service"), Some("svc"), "after {after}");
        assert!(
            r.json()["headers"]["traceparent"].is_string(),
            "after {after}: traced"
        );
        assert!(r.elapsed < FAST, "after {after}: {:?}", r.elapsed);
        r.elapsed
    }
}

/// One row of the summary: fault, client, upstream attempts, counters.
fn row(
    rows: &mut Vec<String>,
    fault: &str,
    client: &str,
    attempts: usize,
    counters: &BTreeMap<&str, u64>,
) {
    let counters: Vec<String> = counters
        .iter()
        .map(|(k, v)| format!("{}={v}", k.trim_start_matches("mesh_")))
        .collect();
    rows.push(format!(
        "| {fault} | {client} | {attempts} | {} |",
        counters.join(", ")
    ));
}

fn status(r: &Result<Response, String>) -> String {
    match r {
        Ok(r) => format!(
            "{} {}",
            r.status,
            r.header("x-mesh-rejected-by").unwrap_or("")
        )
        .trim()
        .to_string(),
        Err(e) => format!("error: {}", e.chars().take(80).collect::<String>()),
    }
}

/// The per-route counters of the five stages that are not zero on `route` (absent on the route
/// counts as zero: a stage that never ran there defined none). Every name must be on the page
/// for some route, so a misspelled one fails instead of reading as zero.
fn route_counters(m: &Metrics, route: &str) -> BTreeMap<&'static str, u64> {
    ROUTE_METRICS
        .iter()
        .filter_map(|name| {
            assert!(m.has(name), "{}", m.absent(name, &[]));
            let v = m.get(name, &[("route", route)]).unwrap_or(0.0) as u64;
            (v > 0).then_some((*name, v))
        })
        .collect()
}

fn counters_of(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
    pairs.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_stage_follows_its_failure_policy_under_faults_and_nothing_else_breaks() {
    let started = Instant::now();
    let svc = upstream::local("svc").await.unwrap();
    let victim = upstream::local("victim").await.unwrap();
    let victim_addr = victim.addr();
    // Connection refused: a loopback port that was bound once and is free again.
    let refused = fixture::closed_port().unwrap();
    // The collector accepts, reads the export, and never answers.
    let collector = otlp_receiver::local().await.unwrap();
    collector.set_delay(Duration::from_secs(3600));

    let invalid_open = [
        ("mesh.circuit_breaker", json!({"consecutive_failures": 0})),
        ("mesh.deadline", json!({"timeout": 5})),
        ("mesh.retry_budget", json!({"max_retries": "three"})),
        ("mesh.trace_propagation", json!({"inject": ["zipkin"]})),
    ];
    let mut bad_open = route("bad-open", "/bad-open/", "svc");
    for (key, value) in invalid_open {
        bad_open = with_metadata(bad_open, key, value);
    }
    let routes = vec![
        route("ok", "/ok/", "svc"),
        route("reset-before", "/reset-before/", "svc"),
        route("reset-after", "/reset-after/", "svc_h1"),
        route("reset-after-h2", "/reset-after-h2/", "svc"),
        route("killed", "/killed/", "victim"),
        route("refused", "/refused/", "refused"),
        with_metadata(
            route("slow", "/slow/", "svc"),
            "mesh.deadline",
            json!({"timeout": "300ms"}),
        ),
        with_metadata(
            route("bad-identity", "/bad-identity/", "svc"),
            "mesh.spiffe_identity",
            json!({"allow": "everyone"}),
        ),
        bad_open,
    ];
    let mut mesh = fixture::Mesh::builder("faults")
        .filter(filter("mesh", &config()))
        .routes(routes)
        // Envoy's view of each request in its log (flushed every few seconds): response flags,
        // attempts and details per fault.
        .access_log(
            "ACCESS %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %RESPONSE_CODE_DETAILS%\n",
        )
        .workers(2);
    for c in [
        cluster("svc", svc.addr(), true),
        cluster("svc_h1", svc.addr(), false),
        cluster("victim", victim_addr, true),
        cluster("refused", refused, true),
        cluster("otlp", collector.addr(), false),
    ] {
        mesh = mesh.cluster(c);
    }
    let mesh = mesh.start().unwrap();
    let client = mesh.client(&[CLIENT]).unwrap();
    let mesh = Mesh { mesh, client };
    let seen = |prefix: &str| svc.count_path_prefix(prefix);
    let mut rows = Vec::new();
    let mut healthy = Vec::new();
    healthy.push(mesh.assert_healthy("start-up").await);

    // 1. The upstream resets the stream before any header (HTTP/2 RST_STREAM). Retriable
    // (`reset`): the router tries 1 + 2 times; the breaker counts the request's one failure.
    let r = mesh.get("/reset-before/x?abort=before-headers", &[]).await;
    let got = r.as_ref().unwrap();
    assert_eq!(got.status, 503, "{}", got.text());
    assert!(got.text().contains("reset"), "{}", got.text());
    assert_eq!(seen("/reset-before/"), 3, "1 attempt + 2 retries");
    let expected = counters_of(&[
        ("mesh_circuit_breaker_failures", 1),
        ("mesh_retry_budget_rq_total", 1),
        ("mesh_retry_budget_retries", 2),
    ]);
    let c = mesh.counters_when("reset-before", &expected).await;
    assert_eq!(c, expected,);
    row(
        &mut rows,
        "upstream resets the stream before headers (h2 RST_STREAM)",
        &status(&r),
        seen("/reset-before/"),
        &c,
    );
    healthy.push(mesh.assert_healthy("reset before headers").await);

    // 2. The upstream dies after the response headers, mid-body (HTTP/1.1: connection closed;
    // HTTP/2: RST_STREAM). The client already has the headers: it sees its stream cut; the
    // router cannot retry; the breaker counts a `reset` failure.
    for (route_name, prefix, what) in [
        (
            "reset-after",
            "/reset-after/",
            "upstream closes the connection mid-body (HTTP/1.1)",
        ),
        (
            "reset-after-h2",
            "/reset-after-h2/",
            "upstream resets the stream mid-body (h2)",
        ),
    ] {
        let r = mesh
            .get(&format!("{prefix}x?abort=after-headers"), &[])
            .await;
        assert!(r.is_err(), "{what}: the client must see the cut: {r:?}");
        assert_eq!(seen(prefix), 1, "{what}: no retry once headers went out");
        let expected = counters_of(&[
            ("mesh_circuit_breaker_failures", 1),
            ("mesh_retry_budget_rq_total", 1),
        ]);
        let c = mesh.counters_when(route_name, &expected).await;
        assert_eq!(c, expected, "{what}");
        row(&mut rows, what, &status(&r), seen(prefix), &c);
        healthy.push(mesh.assert_healthy(what).await);
    }

    // 3. The upstream service is killed while it handles a request (its listener and every
    // connection closed at once): the first attempt is cut (or answered 503 by the dying
    // service), the retries find nobody listening.
    let killed = tokio::spawn({
        let mesh_addr = mesh.addr();
        let tls = mesh.tls(Some(&mesh.client));
        async move {
            tls.get(mesh_addr, "/killed/x?sleep_ms=5000", &[])
                .await
                .map_err(|e| e.to_string())
        }
    });
    assert!(victim.wait_for_count(1, Duration::from_secs(5)).await);
    let t = Instant::now();
    victim.shutdown().await;
    let r = killed.await.unwrap();
    let got = r.as_ref().unwrap();
    assert_eq!(got.status, 503, "{}", got.text());
    assert!(t.elapsed() < FAST, "answered once the upstream died");
    let expected = counters_of(&[
        ("mesh_circuit_breaker_failures", 1),
        ("mesh_retry_budget_rq_total", 1),
        ("mesh_retry_budget_retries", 2),
    ]);
    let c = mesh.counters_when("killed", &expected).await;
    assert_eq!(c, expected,);
    row(
        &mut rows,
        "upstream service killed mid-request, then gone",
        &status(&r),
        1,
        &c,
    );
    healthy.push(mesh.assert_healthy("upstream killed").await);

    // 4. Connection refused: retried (`connect-failure`), counted by the breaker; three such
    // requests open it, and then it answers alone (no more connection attempts).
    let r = mesh.get("/refused/x", &[]).await;
    let got = r.as_ref().unwrap();
    assert_eq!(got.status, 503, "{}", got.text());
    assert!(
        got.text().contains("connection failure") || got.text().contains("connect"),
        "{}",
        got.text()
    );
    let expected = counters_of(&[
        ("mesh_circuit_breaker_failures", 1),
        ("mesh_retry_budget_rq_total", 1),
        ("mesh_retry_budget_retries", 2),
    ]);
    let c = mesh.counters_when("refused", &expected).await;
    assert_eq!(c, expected,);
    row(&mut rows, "connection refused", &status(&r), 0, &c);
    for _ in 0..2 {
        assert_eq!(mesh.get("/refused/x", &[]).await.unwrap().status, 503);
    }
    let r = mesh.get("/refused/x", &[]).await;
    let got = r.as_ref().unwrap();
    assert_eq!(
        (got.status, got.header("x-mesh-rejected-by")),
        (503, Some("mesh.circuit_breaker"))
    );
    assert!(got.header("retry-after").is_some());
    let expected = counters_of(&[
        ("mesh_circuit_breaker_failures", 3),
        ("mesh_circuit_breaker_opened", 1),
        ("mesh_circuit_breaker_rq_rejected", 1),
        ("mesh_retry_budget_rq_total", 3),
        ("mesh_retry_budget_retries", 6),
    ]);
    let c = mesh.counters_when("refused", &expected).await;
    assert_eq!(
        c, expected,
        "the rejected request never reached the retry stage"
    );
    row(
        &mut rows,
        "connection refused ×3, then a 4th request",
        &status(&r),
        0,
        &c,
    );
    healthy.push(mesh.assert_healthy("connection refused").await);

    // 5. A slow upstream: the route's 300 ms deadline answers 504 on time; the breaker counts
    // a `timeout`; the router does not retry a request whose whole budget is spent.
    let r = mesh.get("/slow/x?sleep_ms=3000", &[]).await;
    let got = r.as_ref().unwrap();
    assert_eq!(got.status, 504, "{}", got.text());
    assert!(
        got.elapsed >= Duration::from_millis(290) && got.elapsed < Duration::from_millis(800),
        "the deadline answered after {:?}",
        got.elapsed
    );
    let expected = counters_of(&[
        ("mesh_circuit_breaker_failures", 1),
        ("mesh_retry_budget_rq_total", 1),
        ("mesh_deadline_rq_timeout", 1),
    ]);
    let c = mesh.counters_when("slow", &expected).await;
    assert_eq!(c, expected,);
    row(
        &mut rows,
        &format!(
            "slow upstream (3 s) on a 300 ms route: answered in {:?}",
            got.elapsed
        ),
        &status(&r),
        seen("/slow/"),
        &c,
    );
    assert_eq!(seen("/slow/"), 1);
    healthy.push(mesh.assert_healthy("slow upstream").await);

    // 6. A caller whose deadline already passed: answered by the deadline stage at once; not
    // an upstream outcome, so the breaker does not count it; a 404 from the upstream is not a
    // failure either.
    let before_ok = seen("/ok/");
    let r = mesh
        .get("/ok/x", &[("x-envoy-expected-rq-timeout-ms", "0")])
        .await;
    let got = r.as_ref().unwrap();
    assert_eq!(
        (got.status, got.header("x-mesh-rejected-by")),
        (504, Some("mesh.deadline"))
    );
    let r404 = mesh.get("/ok/x?status=404", &[]).await.unwrap();
    assert_eq!(r404.status, 404);
    assert_eq!(seen("/ok/"), before_ok + 1, "only the 404 reached it");
    mesh.envoy
        .wait_for_value("mesh_deadline_rq_expired", &[("route", "ok")], 1.0)
        .await
        .unwrap();
    // Neither the local 504 nor the 404 may count as a failure: given the settle time.
    tokio::time::sleep(SETTLE).await;
    let c = mesh.counters("ok");
    assert_eq!(c.get("mesh_deadline_rq_expired"), Some(&1));
    assert_eq!(c.get("mesh_circuit_breaker_failures"), None);
    row(
        &mut rows,
        "caller's deadline already spent (+ an upstream 404)",
        &status(&r),
        1,
        &c,
    );
    healthy.push(mesh.assert_healthy("expired caller").await);

    // 7. Invalid identity metadata on one route: the identity stage fails closed.
    let r = mesh.get("/bad-identity/x", &[]).await;
    let got = r.as_ref().unwrap();
    assert_eq!(
        (got.status, got.header("x-mesh-rejected-by")),
        (403, Some("mesh.spiffe_identity"))
    );
    assert_eq!(got.json()["error"], "identity_unverifiable");
    assert_eq!(seen("/bad-identity/"), 0);
    let expected = counters_of(&[("mesh_spiffe_identity_config_error", 1)]);
    let c = mesh.counters_when("bad-identity", &expected).await;
    assert_eq!(c, expected);
    row(
        &mut rows,
        "invalid `mesh.spiffe_identity` route metadata",
        &status(&r),
        0,
        &c,
    );

    // 8. Invalid breaker, deadline, budget and trace metadata on one route: each fails open.
    // The breaker and the deadline run with the plugin's settings, the budget allows no
    // retries, the trace stage leaves the request alone.
    let r = mesh.get("/bad-open/x?fail_attempts=1", &[]).await;
    let got = r.as_ref().unwrap();
    assert_eq!(got.status, 503, "no retry: {}", got.text());
    assert_eq!(got.header("x-mesh-rejected-by"), None);
    assert_eq!(seen("/bad-open/"), 1, "one attempt");
    let ok = mesh.get("/bad-open/y", &[]).await.unwrap();
    assert_eq!(ok.status, 200);
    let echoed = &ok.json()["headers"];
    assert!(
        echoed.get("traceparent").is_none(),
        "trace stage skipped: {echoed}"
    );
    let budget: u64 = echoed["x-envoy-expected-rq-timeout-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1500..=2000).contains(&budget),
        "the plugin's 2 s deadline: {budget}"
    );
    assert_eq!(echoed["x-spiffe-id"], CLIENT, "identity still verified");
    let expected = counters_of(&[
        ("mesh_circuit_breaker_config_error", 2),
        ("mesh_circuit_breaker_failures", 1),
        ("mesh_retry_budget_config_error", 2),
        ("mesh_deadline_config_error", 2),
        ("mesh_trace_propagation_config_error", 2),
    ]);
    let c = mesh.counters_when("bad-open", &expected).await;
    assert_eq!(
        c, expected,
        "no budget decision (rq_total) on a route whose budget config is broken"
    );
    row(
        &mut rows,
        "invalid `mesh.circuit_breaker`, `mesh.deadline`, `mesh.retry_budget`, `mesh.trace_propagation` route metadata (one failing, one good request)",
        &format!("{}, then {}", status(&r), ok.status),
        2,
        &c,
    );
    // The valid route next to them keeps retrying and tracing.
    let r = mesh.get("/ok/retry?fail_attempts=1", &[]).await.unwrap();
    assert_eq!((r.status, r.json()["attempt"].as_u64()), (200, Some(2)));
    assert!(r.json()["headers"]["traceparent"].is_string());
    healthy.push(mesh.assert_healthy("invalid metadata").await);

    // 9. The collector hangs: each worker's export call times out after 5 s and is counted;
    // requests never wait for it.
    let hang_start = Instant::now();
    let export_failed = loop {
        let n = mesh.global("mesh_trace_propagation_export_failed");
        if n >= 1 || hang_start.elapsed() > Duration::from_secs(12) {
            break n;
        }
        healthy.push(mesh.assert_healthy("collector hanging").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        export_failed >= 1,
        "the hanging export was never counted as failed"
    );
    assert!(collector.requests() >= 1, "the collector got the export");
    assert_eq!(mesh.global("mesh_trace_propagation_spans_exported"), 0);
    let hanging = format!(
        "export_failed={export_failed}, spans_dropped={}, spans_exported=0, collector received {} export calls",
        mesh.global("mesh_trace_propagation_spans_dropped"),
        collector.requests()
    );
    rows.push(format!(
        "| OTLP collector accepts and never answers ({:?} into the test) | 200s, slowest {:?} | - | {hanging} |",
        started.elapsed(),
        healthy.iter().max().unwrap()
    ));

    // 10. The collector goes away: the calls it left hanging fail at once, later exports find
    // nobody listening (connection refused); all counted, requests still fast.
    collector.shutdown().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_hang = mesh.global("mesh_trace_propagation_export_failed");
    let gone_start = Instant::now();
    let mut slowest_gone = Duration::ZERO;
    let failed_now = loop {
        slowest_gone = slowest_gone.max(mesh.assert_healthy("collector gone").await);
        let n = mesh.global("mesh_trace_propagation_export_failed");
        if n > after_hang || gone_start.elapsed() > Duration::from_secs(5) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert!(
        failed_now > after_hang,
        "failed exports to an absent collector are counted: {after_hang} → {failed_now}"
    );
    assert_eq!(mesh.global("mesh_trace_propagation_spans_exported"), 0);
    rows.push(format!(
        "| OTLP collector gone (connection refused) | 200s, slowest {slowest_gone:?} | - | export_failed {export_failed} → {after_hang} (hanging calls cut) → {failed_now} (refused) within {:?} |",
        gone_start.elapsed()
    ));

    // Nothing else broke: the healthy route never counted a failure, nothing panicked, no
    // wasm VM failed.
    let c = mesh.counters("ok");
    assert_eq!(c.get("mesh_circuit_breaker_failures"), None, "{c:?}");
    assert_eq!(
        mesh.envoy
            .metric("mesh_circuit_breaker_state", &[("route", "ok")])
            .unwrap(),
        0.0
    );
    let log = mesh.envoy.log();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| {
            let lower = l.to_ascii_lowercase();
            lower.contains("panicked")
                || lower.contains("runtimeerror")
                || lower.contains("uncaught")
                || lower.contains("wasm trap")
                || lower.contains("vm failed")
                || lower.contains("][critical][")
                || (lower.contains("][error][") && lower.contains("wasm"))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "panics or wasm failures in the log:\n{}",
        bad.join("\n")
    );
    let slowest = healthy.iter().max().copied().unwrap_or_default();
    eprintln!(
        "faults: {} healthy requests between faults, slowest {slowest:?}; whole run {:?}\n\
         | fault | client got | upstream attempts | counters on the route |\n|---|---|---|---|\n{}",
        healthy.len(),
        started.elapsed(),
        rows.join("\n")
    );
}
