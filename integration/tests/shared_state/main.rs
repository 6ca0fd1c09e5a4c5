//! Shared state under load: a real Envoy with two workers (`--concurrency 2`) saturated by
//! `h2load` and `wrk` over many connections, so both workers update the breaker's and the
//! budget's shared-data records at once, with compare-and-swap.
//!
//! "No lost update" is checked where it is observable, with assertions a lost update would
//! break:
//!
//! - **Breaker counts.** A route's threshold is set a few calls above the load it gets; after the
//!   load, failures are sent one at a time and the breaker must open at exactly the call the
//!   load's upstream-observed count predicts. Every lost increment of the consecutive-failure
//!   count (or of the sliding window's calls) would push the opening one call later; a
//!   double-counted one would open it during the load.
//! - **Breaker transitions.** Under a storm of failures the breaker opens exactly once, after
//!   exactly `consecutive_failures` recorded failures (the log line names the count), having
//!   admitted at most the threshold plus what was in flight; half-open admits exactly
//!   `half_open_requests` probes however many requests race for the slots, and closes or
//!   re-opens exactly once.
//! - **Budget ledger.** Every request deposits and reserves, every request's end settles; the
//!   budget left at the end must equal `floor(ratio × requests + floor) − retries`, computed from
//!   Envoy's own counters and the upstream's count of attempts. A lost deposit, reservation,
//!   release or withdrawal moves it. Retries never exceed what the budget allows.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_integration::bootstrap::{filter, route, with_metadata};
use mesh_integration::client;
use mesh_integration::envoy::{Envoy, Options};
use mesh_integration::fixture;
use mesh_integration::metrics::Sample;
use mesh_integration::upstream::{self, Upstream};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod load;

use load::{h2load, wrk};

const WORKERS: u32 = 2;
/// Load connections: many more than workers, so both are busy.
pub(crate) const CONNECTIONS: u32 = 32;

/// The scenarios saturate the machine: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn start(filter: Value, routes: Vec<Value>, svc: SocketAddr) -> Envoy {
    let b = fixture::one_service(vec![filter], routes, svc);
    Envoy::start_with(&b, &Options::workers(WORKERS)).unwrap()
}

fn metric(envoy: &Envoy, name: &str, route: &str) -> u64 {
    envoy.metric(name, &[("route", route)]).unwrap() as u64
}

fn assert_both_workers_served(envoy: &Envoy) -> Vec<u64> {
    let per_worker = envoy.connections_per_worker(WORKERS).unwrap();
    assert!(
        per_worker.iter().all(|n| *n > 0),
        "a worker took no connection: {per_worker:?}"
    );
    per_worker
}

/// Waits until the upstream's count and Envoy's counters stop moving (every `on_log` ran).
async fn settle(envoy: &Envoy, svc: &Upstream) {
    let snapshot = || {
        let metrics = envoy.metrics().unwrap();
        let mesh: Vec<Sample> = metrics
            .all()
            .iter()
            .filter(|s| s.name.starts_with("mesh_"))
            .cloned()
            .collect();
        (svc.count(), mesh)
    };
    let mut last = snapshot();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = snapshot();
        if now == last {
            return;
        }
        last = now;
    }
}

fn count(svc: &Upstream, f: impl Fn(&upstream::Record) -> bool) -> u64 {
    svc.requests().iter().filter(|r| f(r)).count() as u64
}

// ---------------------------------------------------------------------------------------
// The retry budget

/// One budget's plan and what the run showed.
struct BudgetRoute {
    name: &'static str,
    ratio: f64,
    min_per_second: u32,
    ttl_s: u32,
    max_retries: u32,
}

impl BudgetRoute {
    fn floor(&self) -> f64 {
        f64::from(self.min_per_second) * f64::from(self.ttl_s)
    }
    /// Whole retries the budget allows after `requests` deposits (as the filter computes it).
    fn allowed(&self, requests: u64) -> u64 {
        (requests as f64 * self.ratio + self.floor()).floor() as u64
    }
    fn metadata(&self) -> Value {
        json!({
            "retry_ratio": self.ratio,
            "min_retries_per_second": self.min_per_second,
            "ttl": format!("{}s", self.ttl_s),
            "max_retries": self.max_retries,
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_retry_budget_ledger_stays_exact_at_saturation_and_retries_stay_within_it() {
    let _one_at_a_time = SERIAL.lock().await;
    let svc = upstream::local("budget").await.unwrap();
    // Two budgets under the same load. `ratio` (the README's ratio) runs out: it shows the bound.
    // `ledger` never runs out (its floor covers every retry asked for), so the budget left at the
    // end is far from zero and every lost withdrawal, reservation or release moves it (and a lost
    // deposit, worth half a retry, half of the time). The ttl is far longer than the run:
    // nothing ages out of the window.
    let routes = [
        BudgetRoute {
            name: "ratio",
            ratio: 0.2,
            min_per_second: 5,
            ttl_s: 20,
            max_retries: 3,
        },
        BudgetRoute {
            name: "ledger",
            ratio: 0.5,
            min_per_second: 300,
            ttl_s: 20,
            max_retries: 2,
        },
    ];
    let envoy = start(
        filter("mesh.retry_budget", &json!({"retry_on": "5xx"})),
        routes
            .iter()
            .map(|r| {
                with_metadata(
                    route(r.name, &format!("/{}/", r.name), "svc"),
                    "mesh.retry_budget",
                    r.metadata(),
                )
            })
            .collect(),
        svc.addr(),
    );
    let addr = envoy.listener("main");
    // Create both budget records before the load (the first write of a key cannot be CAS).
    for r in &routes {
        assert_eq!(
            client::get(addr, &format!("/{}/warm", r.name), &[])
                .await
                .unwrap()
                .status,
            200
        );
    }

    // Saturation: every attempt fails, so every request wants all its retries. Each connection
    // cycles through the URIs: a quarter of the requests on `ratio`, three quarters on `ledger`
    // (the more writers on one record, the more chances to lose an update).
    let uris = ["ratio", "ledger", "ledger", "ledger"]
        .iter()
        .map(|name| format!("http://{addr}/{name}/x?status=503"))
        .collect();
    let load = h2load(4000, uris).await;
    settle(&envoy, &svc).await;
    let per_worker = assert_both_workers_served(&envoy);
    assert_eq!(load.done, 4000, "{load:?}");

    let mut summary = Vec::new();
    for r in &routes {
        let prefix = format!("/{}/x", r.name);
        let on_route = |rec: &upstream::Record| rec.path.starts_with(&prefix);
        let first_attempts = count(&svc, |rec| on_route(rec) && rec.attempt == Some(1));
        let second_attempts = count(&svc, |rec| on_route(rec) && rec.attempt == Some(2));
        let retries_seen = count(&svc, |rec| on_route(rec) && rec.attempt.unwrap_or(1) > 1);
        let rq_total = metric(&envoy, "mesh_retry_budget_rq_total", r.name);
        let retries = metric(&envoy, "mesh_retry_budget_retries", r.name);
        let exhausted = metric(&envoy, "mesh_retry_budget_budget_exhausted", r.name);
        let state_errors = metric(&envoy, "mesh_retry_budget_state_error", r.name);
        assert_eq!(state_errors, 0, "{}: no update gave up", r.name);

        // Envoy's counters and the upstream agree exactly (the warm-up request is the +1).
        assert_eq!(rq_total, first_attempts + 1, "{}: requests", r.name);
        assert_eq!(retries, retries_seen, "{}: retries", r.name);
        assert_eq!(
            exhausted,
            first_attempts - second_attempts,
            "{}: requests sent without retries",
            r.name
        );

        // Within the budget: reservations are taken under CAS, so no overrun at all.
        let allowed = r.allowed(rq_total);
        let overrun = retries as i64 - allowed as i64;
        assert!(
            overrun <= 0,
            "{}: {retries} retries > {allowed} allowed (bound {} × {WORKERS} workers)",
            r.name,
            r.max_retries
        );
        if r.name == "ratio" {
            assert!(
                retries as f64 >= allowed as f64 * 0.9,
                "{}: the budget was used: {retries} of {allowed}",
                r.name
            );
        } else {
            assert_eq!(exhausted, 0, "{}: never ran out", r.name);
            assert_eq!(
                retries,
                u64::from(r.max_retries) * first_attempts,
                "{}: every request made all its retries",
                r.name
            );
        }

        // The ledger: one more request (a success) settles, and the budget left must be
        // exactly what every deposit and withdrawal adds up to.
        let ok = client::get(addr, &format!("/{}/last", r.name), &[])
            .await
            .unwrap();
        assert_eq!(ok.status, 200);
        let expected = r.allowed(rq_total + 1).saturating_sub(retries);
        // The success settles when its stream ends, just after the client has it.
        let available = [("route", r.name)];
        let left = envoy
            .wait_for("the ledger after the last request", |m| {
                m.get("mesh_retry_budget_retries_available", &available)
                    .filter(|v| *v as u64 == expected)
            })
            .await
            .map(|v| v as u64)
            .unwrap_or_else(|e| panic!("{}: {e}", r.name));
        assert_eq!(
            left,
            expected,
            "{}: budget left after {} requests and {retries} retries: floor({} × {} + {}) − {retries}",
            r.name,
            rq_total + 1,
            r.ratio,
            rq_total + 1,
            r.floor()
        );
        summary.push(format!(
            "  {}: ratio {} floor {} max_retries {}: {rq_total} requests, {retries} retries \
             (upstream saw {retries_seen}), allowed {allowed}, overrun {overrun} \
             (issue's bound {}), {exhausted} sent without retries, ledger left {left} = expected {expected}",
            r.name,
            r.ratio,
            r.floor(),
            r.max_retries,
            r.max_retries * WORKERS
        ));
    }
    eprintln!(
        "retry budget at saturation: h2load {} requests in {:.2?} ({:.0}/s, {} connections), \
         connections per worker {per_worker:?}\n{}",
        load.done,
        load.elapsed,
        load.done as f64 / load.elapsed.as_secs_f64(),
        CONNECTIONS,
        summary.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// The circuit breaker

fn rejected(r: &client::Response) -> bool {
    r.header("x-mesh-rejected-by") == Some("mesh.circuit_breaker")
}

/// Sends `path` one call at a time until the breaker answers; how many reached the upstream.
async fn calls_until_open(addr: SocketAddr, path: &str, limit: u32) -> u32 {
    for n in 0..limit {
        let r = client::get(addr, path, &[]).await.unwrap();
        if rejected(&r) {
            return n;
        }
        // Let this call's end be recorded before the next one is admitted.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    limit
}

#[tokio::test(flavor = "multi_thread")]
async fn breaker_counts_and_transitions_stay_exact_at_saturation() {
    let _one_at_a_time = SERIAL.lock().await;
    let svc = upstream::local("breaker").await.unwrap();
    const LOAD: u32 = 2000;
    const MARGIN: u32 = 5;
    const STORM_THRESHOLD: u32 = 100;
    const PROBES: u32 = 3;
    // Thresholds: the load's requests, plus the warm-up call, plus MARGIN serial calls.
    let threshold = LOAD + 1 + MARGIN;
    let probing = json!({"consecutive_failures": 5, "open_duration": "2s", "max_open_duration": "60s", "half_open_requests": PROBES});
    let routes = vec![
        with_metadata(
            route("consec", "/consec/", "svc"),
            "mesh.circuit_breaker",
            json!({"consecutive_failures": threshold}),
        ),
        with_metadata(
            route("rate", "/rate/", "svc"),
            "mesh.circuit_breaker",
            json!({"consecutive_failures": 1_000_000, "failure_rate": 0.5, "minimum_requests": threshold, "window": "60s"}),
        ),
        with_metadata(
            route("storm", "/storm/", "svc"),
            "mesh.circuit_breaker",
            json!({"consecutive_failures": STORM_THRESHOLD}),
        ),
        with_metadata(
            route("probe", "/probe/", "svc"),
            "mesh.circuit_breaker",
            probing.clone(),
        ),
        with_metadata(
            route("heal", "/heal/", "svc"),
            "mesh.circuit_breaker",
            probing,
        ),
    ];
    let envoy = start(
        filter("mesh.circuit_breaker", &json!({"open_duration": "60s"})),
        routes,
        svc.addr(),
    );
    let addr = envoy.listener("main");
    let base = format!("http://{addr}");
    let m = |name: &str, route: &str| metric(&envoy, name, route);

    // 1. Consecutive failures: LOAD failures under load, then exactly MARGIN more open it.
    // The warm-up failure creates the record (the first write of a key cannot be CAS).
    client::get(addr, "/consec/warm?status=503", &[])
        .await
        .unwrap();
    let load = h2load(LOAD, vec![format!("{base}/consec/x?status=503")]).await;
    settle(&envoy, &svc).await;
    let consec_seen = count(&svc, |r| r.path.starts_with("/consec/"));
    assert_eq!(
        (load.done, load.s5xx),
        (u64::from(LOAD), u64::from(LOAD)),
        "every call reached the upstream and failed: {load:?}"
    );
    assert_eq!(m("mesh_circuit_breaker_opened", "consec"), 0);
    assert_eq!(m("mesh_circuit_breaker_failures", "consec"), consec_seen);
    let expected = u64::from(threshold) - consec_seen;
    let serial = calls_until_open(addr, "/consec/y?status=503", 50).await;
    let lost_consecutive = i64::from(serial) - expected as i64;
    assert_eq!(
        u64::from(serial),
        expected,
        "opened after {serial} more failures, not {expected}: {lost_consecutive} consecutive-failure \
         updates lost under load"
    );
    assert_eq!(m("mesh_circuit_breaker_opened", "consec"), 1);
    let consec_rate = load.done as f64 / load.elapsed.as_secs_f64();

    // 2. Failure rate: the window's call and failure counts, under load, half failing.
    client::get(addr, "/rate/warm", &[]).await.unwrap();
    let load = h2load(
        LOAD,
        vec![
            format!("{base}/rate/x?status=503"),
            format!("{base}/rate/x"),
        ],
    )
    .await;
    settle(&envoy, &svc).await;
    assert_eq!(load.done, u64::from(LOAD), "{load:?}");
    let calls = count(&svc, |r| r.path.starts_with("/rate/"));
    let failures = count(&svc, |r| r.path.starts_with("/rate/x?status=503"));
    assert_eq!(m("mesh_circuit_breaker_opened", "rate"), 0);
    assert_eq!(m("mesh_circuit_breaker_failures", "rate"), failures);
    // The window opens the breaker on the first failure s with calls + s ≥ minimum_requests
    // and (failures + s) / (calls + s) ≥ 0.5.
    let expected = (1..100u64)
        .find(|s| {
            calls + s >= u64::from(threshold) && (failures + s) as f64 / (calls + s) as f64 >= 0.5
        })
        .unwrap();
    let serial = calls_until_open(addr, "/rate/y?status=503", 50).await;
    assert_eq!(
        u64::from(serial),
        expected,
        "opened after {serial} more failures, not {expected}: the window lost {} calls under load \
         ({calls} calls, {failures} failures before)",
        i64::from(serial) - expected as i64
    );
    assert_eq!(m("mesh_circuit_breaker_opened", "rate"), 1);

    // 3. A storm of failures over HTTP/1.1: opened exactly once, after exactly the threshold,
    // having admitted at most the threshold plus what the connections had in flight.
    let before = count(&svc, |_| true);
    let sent = wrk(format!("{base}/storm/x?status=503"), 2).await;
    settle(&envoy, &svc).await;
    let admitted = count(&svc, |r| r.path.starts_with("/storm/"));
    assert_eq!(count(&svc, |_| true) - before, admitted);
    let rejected_storm = m("mesh_circuit_breaker_rq_rejected", "storm");
    assert_eq!(m("mesh_circuit_breaker_opened", "storm"), 1, "one episode");
    assert_eq!(m("mesh_circuit_breaker_failures", "storm"), admitted);
    // Each connection holds one request in flight, and one more may have been answered without
    // its end recorded yet.
    let in_flight_bound = u64::from(STORM_THRESHOLD + 2 * CONNECTIONS);
    assert!(
        (u64::from(STORM_THRESHOLD)..=in_flight_bound).contains(&admitted),
        "{admitted} calls reached the upstream before the breaker opened (threshold {STORM_THRESHOLD}, bound {in_flight_bound})"
    );
    assert!(
        rejected_storm + admitted >= sent,
        "{rejected_storm} rejected + {admitted} admitted < {sent} answered"
    );
    let log = envoy.log();
    let line =
        format!("route \"storm\" opened for 60s after {STORM_THRESHOLD} consecutive failures");
    assert_eq!(log.matches(&line).count(), 1, "{log}");
    assert_eq!(m("mesh_circuit_breaker_state", "storm"), 1);

    // 4. Half-open under a burst: exactly PROBES probes reach the upstream, then one
    // re-open (failing probes) or one close (healthy probes).
    for _ in 0..5 {
        client::get(addr, "/probe/open?status=503", &[])
            .await
            .unwrap();
        client::get(addr, "/heal/open?status=503", &[])
            .await
            .unwrap();
    }
    assert_eq!(m("mesh_circuit_breaker_state", "probe"), 1);
    assert_eq!(m("mesh_circuit_breaker_state", "heal"), 1);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (probe_load, heal_load) = tokio::join!(
        h2load(400, vec![format!("{base}/probe/x?status=503&sleep_ms=500")]),
        h2load(200, vec![format!("{base}/heal/x?sleep_ms=300")]),
    );
    let burst = probe_load.elapsed;
    settle(&envoy, &svc).await;
    assert!(
        burst < Duration::from_millis(500 + 4000),
        "the failing probes' re-open (4 s) must outlast their burst: {burst:?}"
    );
    let probes = count(&svc, |r| r.path.starts_with("/probe/x"));
    assert_eq!(
        probes,
        u64::from(PROBES),
        "half-open admitted {probes} probes: {probe_load:?}"
    );
    assert_eq!(
        m("mesh_circuit_breaker_opened", "probe"),
        2,
        "open, re-open"
    );
    assert_eq!(m("mesh_circuit_breaker_state", "probe"), 1);
    assert_eq!(
        log_count(&envoy, "route \"probe\" re-opened for 4s: a probe failed"),
        1
    );

    let mut heal: Vec<Instant> = svc
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/heal/x"))
        .map(|r| r.received_at)
        .collect();
    heal.sort();
    // The breaker closes only once its probes have answered, each at least 300 ms after it
    // arrived: whatever reached the upstream within 300 ms of the first call was a probe.
    let first = heal[0];
    let during_probes = heal
        .iter()
        .filter(|t| t.duration_since(first) < Duration::from_millis(300))
        .count();
    assert!(
        (1..=PROBES as usize).contains(&during_probes),
        "{during_probes} calls admitted while probing (at most {PROBES}): {heal_load:?}"
    );
    assert_eq!(m("mesh_circuit_breaker_closed", "heal"), 1, "closed once");
    assert_eq!(m("mesh_circuit_breaker_opened", "heal"), 1);
    assert_eq!(m("mesh_circuit_breaker_state", "heal"), 0);
    assert_eq!(
        m("mesh_circuit_breaker_rq_rejected", "heal") + heal.len() as u64,
        heal_load.done,
        "every burst call was either rejected or reached the upstream"
    );
    assert_eq!(
        client::get(addr, "/heal/after", &[]).await.unwrap().status,
        200
    );

    for r in ["consec", "rate", "storm", "probe", "heal"] {
        assert_eq!(m("mesh_circuit_breaker_state_error", r), 0, "{r}");
    }
    let per_worker = assert_both_workers_served(&envoy);
    eprintln!(
        "breaker at saturation ({WORKERS} workers, {CONNECTIONS} connections, connections per worker {per_worker:?}):\n\
         \x20 consecutive: {consec_seen} failures under load ({consec_rate:.0}/s), opened after {} more, \
         lost updates {lost_consecutive}\n\
         \x20 failure rate: {calls} calls / {failures} failures under load, opened after exactly {expected} more\n\
         \x20 storm: wrk answered {sent}, {admitted} reached the upstream before open \
         (threshold {STORM_THRESHOLD}, bound {in_flight_bound}), {rejected_storm} rejected, opened 1×\n\
         \x20 half-open bursts of 400 and 200 calls: failing probes (burst {burst:?}) admitted {probes} (of {PROBES}), re-opened 1×; \
         healthy probes admitted {during_probes} while probing, closed 1×, {} calls after close",
        u64::from(threshold) - consec_seen,
        heal.len() - during_probes
    );
}

fn log_count(envoy: &Envoy, needle: &str) -> usize {
    envoy.log().matches(needle).count()
}
