//! The rate limit end to end: `mesh_rate_limit.wasm` alone and the suite (`mesh_filters.wasm`)
//! in a real Envoy, real upstreams, real mTLS identities, real gRPC.
//! Over 600 lines: six scenarios, each its own Envoy set-up (saturation with two workers, key
//! churn, the demo); most of the length is their exact assertions.
//!
//! - A client gets its burst, then 429 with `retry-after` and the RateLimit fields (gRPC:
//!   RESOURCE_EXHAUSTED with `RetryInfo`); per-route metadata overrides, disables, or (invalid)
//!   fails open; audit mode only counts.
//! - Identities are isolated from each other, and a forged `x-spiffe-id` picks no one's bucket:
//!   alone, the key is the mTLS peer certificate's SPIFFE ID; in the suite, the identity stage's
//!   verdict, with pattern overrides.
//! - At saturation with two workers (wrk and h2load at once, one client each), each client is
//!   allowed `burst + rate × time` within 2 %: one bucket per client for the whole process.
//! - Key churn far beyond `max_keys` evicts within the table, and a drained client is not given
//!   a new burst by it.
//! - The demo config limits `events` per identity as the README shows.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use mesh_integration::bootstrap::{
    bootstrap, cluster, filter, listener, route, with_metadata, with_mtls,
};
use mesh_integration::certs::{Leaf, Pki, SERVER_NAME};
use mesh_integration::client::{self, Proto, Response};
use mesh_integration::client::{grpc, tls::Tls};
use mesh_integration::envoy::{workspace_root, Envoy, Options};
use mesh_integration::fixture::{demo_certs, demo_config, demo_leaf, sa};
use mesh_integration::upstream::{self, Upstream};
use mesh_kit::proto::google_rpc::{RetryInfo, Status};
use prost::Message;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const FILTER: &str = "mesh.rate_limit";
const WORKERS: u32 = 2;
/// Load connections per load generator: many more than workers, so both are busy.
const CONNECTIONS: u32 = 32;

/// The scenarios that saturate the machine run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn demo(name: &str) -> Upstream {
    upstream::spawn(name, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn rate_limit(config: Value) -> Value {
    filter(FILTER, &config)
}

fn suite(config: Value) -> Value {
    filter("mesh", &config)
}

fn start(filter: Value, routes: Vec<Value>, svc: &Upstream, concurrency: u32) -> Envoy {
    let b = bootstrap(
        vec![listener("main", routes, vec![filter])],
        vec![cluster("svc", svc.addr(), true)],
    );
    Envoy::start_with(
        &b,
        &Options {
            concurrency,
            ..Options::default()
        },
    )
    .unwrap()
}

fn limited(r: &Response) -> bool {
    r.status == 429 && r.header("x-mesh-rejected-by") == Some(FILTER)
}

fn metric(envoy: &Envoy, stat: &str, route: &str) -> u64 {
    envoy
        .metric(&format!("mesh_rate_limit_{stat}"), &[("route", route)])
        .unwrap() as u64
}

/// Statuses of `n` requests, one after another.
async fn statuses(envoy: &Envoy, path: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = client::get(envoy.listener("main"), path, headers)
            .await
            .unwrap();
        if r.status == 429 {
            assert!(limited(&r), "{:?}", r.headers);
        }
        out.push(r.status);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_gets_its_burst_then_429_with_retry_after_and_the_ratelimit_fields() {
    let svc = demo("events").await;
    let routes = vec![
        with_metadata(
            route("events", "/events/", "svc"),
            FILTER,
            json!({"rate": 0.5, "burst": 3}),
        ),
        with_metadata(
            route("grpc", "/mesh.demo.Events/", "svc"),
            FILTER,
            json!({"rate": 0.1, "burst": 1, "key": "route"}),
        ),
        with_metadata(
            route("audit", "/audit/", "svc"),
            FILTER,
            json!({"rate": 0.01, "burst": 1, "mode": "audit"}),
        ),
        with_metadata(
            route("open", "/open/", "svc"),
            FILTER,
            json!({"disabled": true}),
        ),
        with_metadata(
            route("bad", "/bad/", "svc"),
            FILTER,
            json!({"rate": "fast"}),
        ),
    ];
    let envoy = start(
        rate_limit(json!({"rate": 1000, "key": {"header": "x-client"}})),
        routes,
        &svc,
        WORKERS,
    );
    let addr = envoy.listener("main");
    let a = [("x-client", "a")];

    // The burst of 3, then a 429 that says when to come back and what the policy is.
    assert_eq!(statuses(&envoy, "/events/x", &a, 3).await, [200; 3]);
    let r = client::get(addr, "/events/x", &a).await.unwrap();
    assert!(limited(&r), "{} {:?}", r.status, r.headers);
    // 0.5/s: the next token within 2 s (the three requests took a few ms of it).
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.header("ratelimit-policy"), Some(r#""default";q=3;w=6"#));
    assert_eq!(r.header("ratelimit"), Some(r#""default";r=0;t=2"#));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(
        (body["error"].as_str(), body["filter"].as_str()),
        (Some("rate_limited"), Some(FILTER))
    );
    assert_eq!(
        svc.count_path_prefix("/events/"),
        3,
        "the limited request never reached it"
    );
    // Another client, and requests without the header (one shared bucket), are counted apart.
    assert_eq!(
        statuses(&envoy, "/events/x", &[("x-client", "b")], 4).await,
        [200, 200, 200, 429]
    );
    assert_eq!(
        statuses(&envoy, "/events/x", &[], 4).await,
        [200, 200, 200, 429]
    );
    assert_eq!(metric(&envoy, "unkeyed", "events"), 4);
    assert_eq!(metric(&envoy, "allowed", "events"), 9);
    assert_eq!(metric(&envoy, "limited", "events"), 3);

    // gRPC: RESOURCE_EXHAUSTED, trailers-only, with RetryInfo.
    let ok = grpc::unary(addr, "/mesh.demo.Events/Publish", &[], Bytes::new()).await;
    assert!(ok.is_ok(), "{ok:?}");
    let status = grpc::unary(addr, "/mesh.demo.Events/Publish", &[], Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.metadata().get("x-mesh-rejected-by").unwrap(), FILTER);
    let details = Status::decode(status.details()).unwrap();
    assert_eq!(details.code, 8);
    let retry = details
        .details
        .iter()
        .find(|d| d.type_url == "type.googleapis.com/google.rpc.RetryInfo")
        .unwrap();
    let delay = RetryInfo::decode(retry.value.as_slice())
        .unwrap()
        .retry_delay
        .unwrap();
    assert!((9..=10).contains(&delay.seconds), "{delay:?}");

    // Audit mode counts what it would limit and lets everything through.
    assert_eq!(statuses(&envoy, "/audit/x", &a, 5).await, [200; 5]);
    assert_eq!(
        (
            metric(&envoy, "allowed", "audit"),
            metric(&envoy, "audit_limited", "audit")
        ),
        (1, 4)
    );
    // Switched off on a route; invalid route metadata fails open (and is counted).
    assert_eq!(statuses(&envoy, "/open/x", &a, 5).await, [200; 5]);
    assert_eq!(statuses(&envoy, "/bad/x", &a, 5).await, [200; 5]);
    assert_eq!(metric(&envoy, "config_error", "bad"), 5);
    assert_eq!(metric(&envoy, "allowed", "bad"), 0);
    assert!(envoy
        .log()
        .contains("mesh.rate_limit: invalid route metadata on route \"bad\""));
    assert_eq!(metric(&envoy, "state_error", "events"), 0);
}

/// An mTLS listener: a client certificate is optional, so clients without one reach the filter.
struct Mtls {
    envoy: Envoy,
    pki: Pki,
}

impl Mtls {
    fn start(tag: &str, filter: Value, routes: Vec<Value>, svc: &Upstream) -> Mtls {
        let pki = Pki::new(tag).unwrap();
        let l = with_mtls(
            listener("mtls", routes, vec![filter]),
            &pki.envoy,
            false,
            "SANITIZE_SET",
        );
        let envoy = Envoy::start_with(
            &bootstrap(vec![l], vec![cluster("svc", svc.addr(), true)]),
            &Options {
                concurrency: WORKERS,
                ..Options::default()
            },
        )
        .unwrap();
        Mtls { envoy, pki }
    }

    async fn get(&self, who: Option<&Leaf>, path: &str, headers: &[(&str, &str)]) -> Response {
        Tls::new(SERVER_NAME, &self.pki.ca.cert_pem())
            .presenting(who)
            .request(
                self.envoy.listener("mtls"),
                Proto::Http1,
                "GET",
                path,
                headers,
                None,
            )
            .await
            .unwrap()
    }

    async fn statuses(
        &self,
        who: Option<&Leaf>,
        path: &str,
        headers: &[(&str, &str)],
        n: usize,
    ) -> Vec<u16> {
        let mut out = Vec::new();
        for _ in 0..n {
            let r = self.get(who, path, headers).await;
            if r.status == 429 {
                assert!(limited(&r));
            }
            out.push(r.status);
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn identities_are_isolated_and_a_forged_identity_header_picks_no_ones_bucket() {
    let svc = demo("events").await;
    let mesh = Mtls::start(
        "ratelimit-alone",
        rate_limit(json!({"rate": 0.01, "burst": 3})),
        vec![route("events", "/", "svc")],
        &svc,
    );
    let (a, b, c) = (sa("a"), sa("b"), sa("c"));
    let cert_a = mesh.pki.client(&[&a]).unwrap();
    let cert_b = mesh.pki.client(&[&b]).unwrap();
    let cert_c = mesh.pki.client(&[&c]).unwrap();
    let not_spiffe = mesh.pki.client(&["https://mesh.local/a"]).unwrap();
    let forged = [("x-spiffe-id", a.as_str())];

    assert_eq!(mesh.statuses(Some(&cert_a), "/x", &[], 2).await, [200, 200]);
    // B claims to be A: B's own bucket.
    assert_eq!(
        mesh.statuses(Some(&cert_b), "/x", &forged, 4).await,
        [200, 200, 200, 429]
    );
    // No certificate, claiming A: the shared bucket of callers without an identity.
    assert_eq!(
        mesh.statuses(None, "/x", &forged, 4).await,
        [200, 200, 200, 429]
    );
    // A certificate whose URI SAN is not a SPIFFE ID names no one: the same shared bucket.
    assert_eq!(
        mesh.statuses(Some(&not_spiffe), "/x", &forged, 1).await,
        [429]
    );
    // A's bucket still holds the one token A left; C's was never touched.
    assert_eq!(mesh.statuses(Some(&cert_a), "/x", &[], 2).await, [200, 429]);
    assert_eq!(
        mesh.statuses(Some(&cert_c), "/x", &[], 4).await,
        [200, 200, 200, 429]
    );
    let e = &mesh.envoy;
    assert_eq!(metric(e, "unkeyed", "events"), 5);
    assert_eq!(metric(e, "allowed", "events"), 3 + 3 + 3 + 3);
    assert_eq!(metric(e, "limited", "events"), 1 + 1 + 1 + 1 + 1);
    assert_eq!(svc.count(), 12);
}

#[tokio::test(flavor = "multi_thread")]
async fn in_the_suite_the_identity_stages_verdict_is_the_key_and_overrides_apply() {
    let svc = demo("events").await;
    let config = json!({
        "spiffe_identity": {"allow": ["spiffe://mesh.local/**"], "deny": [sa("admin")]},
        "rate_limit": {
            "rate": 0.01, "burst": 2,
            "overrides": [{"identity": "spiffe://mesh.local/ns/batch/**", "rate": 0.01, "burst": 4}]
        },
        "circuit_breaker": {"consecutive_failures": 2, "failure_on": ["4xx", "5xx"]}
    });
    let routes = vec![
        with_metadata(route("once", "/once/", "svc"), FILTER, json!({"burst": 1})),
        route("events", "/", "svc"),
    ];
    let mesh = Mtls::start("ratelimit-suite", suite(config), routes, &svc);
    let learner = mesh.pki.client(&[&sa("learner")]).unwrap();
    let batch = mesh
        .pki
        .client(&["spiffe://mesh.local/ns/batch/sa/job"])
        .unwrap();
    let admin = mesh.pki.client(&[&sa("admin")]).unwrap();

    // The identity stage verified learner: its bucket of 2; the forged header changes nothing,
    // and the breaker (after the rate limit) never sees the 429s.
    let forged = [("x-spiffe-id", "spiffe://mesh.local/ns/batch/sa/job")];
    assert_eq!(
        mesh.statuses(Some(&learner), "/x", &forged, 5).await,
        [200, 200, 429, 429, 429]
    );
    assert_eq!(metric(&mesh.envoy, "allowed", "events"), 2);
    let e = &mesh.envoy;
    let breaker = |stat: &str| {
        e.metric(
            &format!("mesh_circuit_breaker_{stat}"),
            &[("route", "events")],
        )
        .unwrap()
    };
    assert_eq!((breaker("failures"), breaker("state")), (0.0, 0.0));
    // The batch override: 4, then the override's policy in the fields.
    assert_eq!(mesh.statuses(Some(&batch), "/x", &[], 4).await, [200; 4]);
    let r = mesh.get(Some(&batch), "/x", &[]).await;
    assert!(limited(&r));
    assert_eq!(
        r.header("ratelimit-policy"),
        Some(r#""override-1";q=4;w=400"#)
    );
    // Refused by the identity stage (before the rate limit): no bucket is touched.
    assert_eq!(mesh.statuses(Some(&admin), "/x", &[], 3).await, [403; 3]);
    assert_eq!(mesh.statuses(None, "/x", &[], 1).await, [403]);
    assert_eq!(metric(e, "allowed", "events"), 2 + 4);
    assert_eq!(metric(e, "limited", "events"), 3 + 1);
    assert_eq!(metric(e, "unkeyed", "events"), 0);
    // Route metadata over the suite's section, as with the single filter.
    assert_eq!(
        mesh.statuses(Some(&learner), "/once/x", &[], 2).await,
        [200, 429]
    );
    // Every request the upstream saw carried the verified ID, never the forged one.
    for rec in svc.requests() {
        let id = rec.header("x-spiffe-id").unwrap();
        assert!(
            id == sa("learner") || id == "spiffe://mesh.local/ns/batch/sa/job",
            "{id}"
        );
    }
    assert_eq!(svc.count(), 2 + 4 + 1);
}

// ---------------------------------------------------------------------------------------
// At saturation

/// `wrk` and `h2load`, installed by `scripts/ensure-tools.sh` when missing.
fn tools() -> &'static (PathBuf, PathBuf) {
    static TOOLS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let out = Command::new(workspace_root().join("scripts/ensure-tools.sh"))
            .args(["wrk:wrk", "h2load:nghttp2-client"])
            .output()
            .expect("scripts/ensure-tools.sh");
        assert!(
            out.status.success(),
            "wrk and h2load are needed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines().map(PathBuf::from);
        (lines.next().unwrap(), lines.next().unwrap())
    })
}

/// `wrk -t2 -c32 -d<secs>s` over HTTP/1.1 keep-alive with one header: requests completed.
async fn wrk(url: String, header: String, secs: u32) -> u64 {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&tools().0)
            .args(["-t", "2", "-c", &CONNECTIONS.to_string()])
            .args([
                "-d",
                &format!("{secs}s"),
                "--timeout",
                "10s",
                "-H",
                &header,
                &url,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "wrk: {text}");
        text.lines()
            .find_map(|l| {
                let (n, rest) = l.trim().split_once(' ')?;
                rest.starts_with("requests in").then(|| n.parse().ok())?
            })
            .unwrap_or_else(|| panic!("wrk printed no request count: {text}"))
    })
    .await
    .unwrap()
}

/// `h2load -c32 -m1 -D<secs>` over h2c with one header: requests completed.
async fn h2load(url: String, header: String, secs: u32) -> u64 {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&tools().1)
            .args(["-c", &CONNECTIONS.to_string(), "-m", "1", "-t", "1"])
            .args(["-D", &secs.to_string(), "-H", &header, &url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "h2load: {text}");
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix("requests:"))
            .and_then(|rest| {
                rest.split(',').find_map(|part| {
                    let mut w = part.split_whitespace();
                    let n = w.next()?.parse().ok()?;
                    (w.next()? == "done").then_some(n)
                })
            })
            .unwrap_or_else(|| panic!("h2load printed no request count: {text}"))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn at_saturation_two_workers_allow_each_client_burst_plus_rate_times_time() {
    let _one_at_a_time = SERIAL.lock().await;
    const RATE: f64 = 200.0;
    const BURST: f64 = 100.0;
    const SECS: u32 = 5;
    let svc = demo("events").await;
    let envoy = start(
        rate_limit(json!({"rate": RATE, "burst": BURST as u32, "key": {"header": "x-client"}})),
        vec![route("events", "/", "svc")],
        &svc,
        WORKERS,
    );
    let addr = envoy.listener("main");
    // Create both buckets before the load (the first write of a slot cannot be CAS), then let
    // them refill completely (100 tokens at 200/s: 0.5 s).
    for client in ["wrk", "h2load"] {
        let r = client::get(addr, "/warm", &[("x-client", client)])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    svc.clear();
    let started = Instant::now();
    let (by_wrk, by_h2load) = tokio::join!(
        wrk(format!("http://{addr}/x"), "x-client: wrk".into(), SECS),
        h2load(format!("http://{addr}/x"), "x-client: h2load".into(), SECS),
    );
    let wall = started.elapsed();
    let per_worker = envoy.connections_per_worker(WORKERS).unwrap();
    assert!(
        per_worker.iter().all(|n| *n > 0),
        "a worker took no connection: {per_worker:?}"
    );

    let mut summary = Vec::new();
    for (client, sent) in [("wrk", by_wrk), ("h2load", by_h2load)] {
        let mut times: Vec<Instant> = svc
            .requests()
            .iter()
            .filter(|r| r.header("x-client") == Some(client))
            .map(|r| r.received_at)
            .collect();
        times.sort();
        let allowed = times.len() as f64;
        // The bucket was full at the first request and the client never stopped asking: every
        // token that arrived between the first and the last allowed request was taken.
        let span = times.last().unwrap().duration_since(times[0]).as_secs_f64();
        let expected = BURST + RATE * span;
        let error = (allowed - expected) / expected;
        summary.push(format!(
            "  {client}: {sent} requests answered ({:.0}/s), {allowed} allowed over {span:.3} s; \
             burst + rate × time = {expected:.1}; error {:+.2} %",
            sent as f64 / wall.as_secs_f64(),
            error * 100.0
        ));
        assert!(
            error.abs() <= 0.02,
            "{client}: {allowed} allowed, expected {expected:.1} ({:+.2} %)\n{}",
            error * 100.0,
            summary.join("\n")
        );
        // Saturation: the client asked at least twice as fast as tokens arrived, all along (a
        // client that paused would have wasted tokens and failed the bound above).
        assert!(
            sent as f64 > 2.0 * allowed,
            "{client}: not saturated: {sent} sent"
        );
    }
    // What the filter counted: every request the tools saw answered (plus those in flight when
    // they stopped, at most one per connection), allowed ones as the upstream saw them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let allowed = metric(&envoy, "allowed", "events");
    let limited_n = metric(&envoy, "limited", "events");
    assert_eq!(
        allowed,
        svc.count() as u64 + 2,
        "the metric and the upstream agree (+2 warm-up)"
    );
    let sent = by_wrk + by_h2load + 2;
    assert!(
        (sent..=sent + 2 * u64::from(CONNECTIONS)).contains(&(allowed + limited_n)),
        "{allowed} allowed + {limited_n} limited, {sent} answered"
    );
    assert_eq!(metric(&envoy, "state_error", "events"), 0);
    eprintln!(
        "rate limit at saturation ({WORKERS} workers, 2 × {CONNECTIONS} connections, connections per \
         worker {per_worker:?}, rate {RATE}/s, burst {BURST}, {SECS} s):\n{}",
        summary.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn key_churn_evicts_within_max_keys_and_never_gives_a_drained_client_a_new_burst() {
    let _one_at_a_time = SERIAL.lock().await;
    const MAX_KEYS: u64 = 16;
    const CHURN: u64 = 300;
    let svc = demo("events").await;
    let envoy = start(
        rate_limit(json!({
            "rate": 0.01, "burst": 2, "key": {"header": "x-client"}, "max_keys": MAX_KEYS
        })),
        vec![route("events", "/", "svc")],
        &svc,
        WORKERS,
    );
    let drained = [("x-client", "drained")];
    assert_eq!(statuses(&envoy, "/x", &drained, 3).await, [200, 200, 429]);
    // Many more clients than slots, 20 at a time: each is new, each gets a new bucket.
    let addr = envoy.listener("main");
    for batch in 0..CHURN / 20 {
        let calls = (0..20).map(|i| {
            let name = format!("churn-{}", batch * 20 + i);
            async move {
                client::get(addr, "/x", &[("x-client", &name)])
                    .await
                    .unwrap()
                    .status
            }
        });
        let got = futures_join_all(calls).await;
        assert!(got.iter().all(|s| *s == 200), "{got:?}");
    }
    // Every new bucket but those that took a slot never written before evicts one; two workers
    // creating the same slot at once (not CAS) can each count a free slot.
    let evicted = metric(&envoy, "evicted", "events");
    assert!(
        (CHURN + 1 - 2 * MAX_KEYS..=CHURN).contains(&evicted),
        "{evicted} evictions for {CHURN} new clients in {MAX_KEYS} slots"
    );
    // The drained client's bucket lacked more than any churned one: never the one evicted, so
    // churn gave it nothing.
    assert_eq!(statuses(&envoy, "/x", &drained, 1).await, [429]);
    // A churned client that was evicted comes back to a new bucket: at most one burst.
    let back = statuses(&envoy, "/x", &[("x-client", "churn-0")], 3).await;
    assert!(back[0] == 200 && back[2] == 429, "{back:?}");
    // The census: every slot holds a bucket that has not refilled, and no more.
    let mut keys = 0;
    for _ in 0..30 {
        keys = metric(&envoy, "keys", "events");
        if keys == MAX_KEYS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(keys, MAX_KEYS);
    eprintln!(
        "key churn: {CHURN} clients through {MAX_KEYS} slots: {evicted} evictions, keys gauge {keys}, \
         the drained client still limited"
    );
}

async fn futures_join_all<F: std::future::Future<Output = u16> + Send + 'static>(
    calls: impl Iterator<Item = F>,
) -> Vec<u16> {
    let handles: Vec<_> = calls.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

// ---------------------------------------------------------------------------------------
// The demo

/// `envoy/demo.yaml` as `make run` starts it, its ports moved to free ones and its certificates
/// made by the demo's script in a directory of this test's own.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_limits_events_per_identity_as_the_readme_shows() {
    let (auth, learner, events) = (
        demo("auth").await,
        demo("learner").await,
        demo("events").await,
    );
    let text = demo_config(auth.addr(), learner.addr(), events.addr()).unwrap();
    let envoy = Envoy::start_text(
        &text,
        &Options {
            concurrency: WORKERS,
            ..Options::default()
        },
    )
    .unwrap();
    let mtls = envoy.listener("mesh-mtls");
    let ca = std::fs::read_to_string(demo_certs().unwrap().join("ca.crt")).unwrap();
    let svid = |name: &str| demo_leaf(name).unwrap();
    let get = |who: Leaf, path: &'static str| {
        let ca = ca.clone();
        tokio::spawn(async move {
            Tls::new("localhost", &ca)
                .presenting(Some(&who))
                .get(mtls, path, &[])
                .await
                .unwrap()
        })
    };
    // 15 requests at once from learner: its burst of 10, then 429 (5/s: a token every 200 ms,
    // at most one more while the 15 handshakes run).
    let calls: Vec<_> = (0..15).map(|_| get(svid("learner"), "/events/x")).collect();
    let mut codes = Vec::new();
    for c in calls {
        let r = c.await.unwrap();
        if r.status == 429 {
            assert!(limited(&r));
            assert_eq!(r.header("ratelimit-policy"), Some(r#""default";q=10;w=2"#));
            assert_eq!(r.header("retry-after"), Some("1"));
        }
        codes.push(r.status);
    }
    let ok = codes.iter().filter(|c| **c == 200).count();
    assert!((10..=11).contains(&ok), "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 15 - ok);
    // auth has a bucket of its own; learner's other routes are not limited.
    assert_eq!(get(svid("auth"), "/events/x").await.unwrap().status, 200);
    for _ in 0..12 {
        assert_eq!(get(svid("auth"), "/learner/x").await.unwrap().status, 200);
    }
    assert_eq!(
        envoy
            .metric("mesh_rate_limit_limited", &[("route", "events")])
            .unwrap() as usize,
        15 - ok
    );
}
