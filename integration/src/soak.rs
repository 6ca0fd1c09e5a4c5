//! Soak: a steady load through the suite (every stage) for a long time, over more route
//! names than the filters' per-route cache holds, with failures injected on some routes, while
//! the measured Envoy's memory is sampled. `make soak` runs it for 10 minutes (the `soak`
//! binary); `integration/tests/soak.rs` runs a short one in `make test`.
//! Over 600 lines: the soak's topology, its load loops, sampling and verdict are one procedure
//! read top to bottom; the general pieces (clients, certificates, bootstrap) are the harness's.
//!
//! Topology, as in a mesh (and as in `make bench`):
//!
//! ```text
//! load (keep-alive HTTP/1.1) → client Envoy ──mTLS, client SVID──▶ measured Envoy (suite) → demo upstream
//!                                                                       └─ OTLP spans → receiver
//! ```
//!
//! The measured Envoy has `routes` routes `r0 … r{n-1}` (prefix `/r/<i>/`), each with its own
//! `mesh.*` metadata (deadline, breaker, budget, allowed identities), and the load walks them
//! with a stride, so every route name comes back while the cache (1,024 routes) keeps being
//! refilled. Every `faulty_every`-th route asks the upstream to fail half of its requests, so
//! breakers open, probe and close and retry budgets drain and refill all along; the other routes
//! must answer 200, every time.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bench;
use crate::bootstrap::{self, TlsFiles};
use crate::client::Connection;
use crate::metrics;
use crate::Error;

/// The trace context every request carries (the trace stage makes a new span per hop).
pub const TRACEPARENT: &str = bench::TRACEPARENT;

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Whole run, seconds (`SOAK_SECONDS`, default 600).
    pub seconds: f64,
    /// Warm-up, seconds: memory after it is compared with memory at its end (`SOAK_WARMUP`,
    /// default 60).
    pub warmup: f64,
    /// Sampling period, seconds (`SOAK_SAMPLE`, default 10).
    pub sample: f64,
    /// Routes on the measured Envoy (`SOAK_ROUTES`, default 2,000: more than the per-route
    /// cache's 1,024).
    pub routes: usize,
    /// Requests per second, all connections together (`SOAK_RATE`, default 500).
    pub rate: u32,
    /// Keep-alive connections of the load (`SOAK_CONNECTIONS`, default 8).
    pub connections: usize,
    /// Worker threads of the measured Envoy (`SOAK_CONCURRENCY`, default 2).
    pub concurrency: u32,
    /// Every n-th route fails half of its requests at the upstream (`SOAK_FAULTY_EVERY`,
    /// default 10).
    pub faulty_every: usize,
    /// Largest RSS growth allowed after warm-up, as a fraction (`SOAK_RSS_TOLERANCE`,
    /// default 0.05).
    pub rss_tolerance: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            seconds: 600.0,
            warmup: 60.0,
            sample: 10.0,
            routes: 2000,
            rate: 500,
            connections: 8,
            concurrency: 2,
            faulty_every: 10,
            rss_tolerance: 0.05,
        }
    }
}

impl Params {
    /// Reads the `SOAK_*` variables through `get` (the environment, in the binary).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Params, String> {
        let mut p = Params::default();
        let num = |name: &str, min: f64, max: f64| bench::env_number(&get, name, min, max);
        let whole = |n: f64| n.round() as u64;
        if let Some(s) = num("SOAK_SECONDS", 5.0, 86_400.0)? {
            p.seconds = s;
        }
        if let Some(w) = num("SOAK_WARMUP", 1.0, 86_400.0)? {
            p.warmup = w;
        }
        if let Some(s) = num("SOAK_SAMPLE", 0.5, 3_600.0)? {
            p.sample = s;
        }
        if let Some(r) = num("SOAK_ROUTES", 1.0, 20_000.0)? {
            p.routes = whole(r) as usize;
        }
        if let Some(r) = num("SOAK_RATE", 1.0, 100_000.0)? {
            p.rate = whole(r) as u32;
        }
        if let Some(c) = num("SOAK_CONNECTIONS", 1.0, 1_000.0)? {
            p.connections = whole(c) as usize;
        }
        if let Some(c) = num("SOAK_CONCURRENCY", 1.0, 64.0)? {
            p.concurrency = whole(c) as u32;
        }
        if let Some(f) = num("SOAK_FAULTY_EVERY", 1.0, 1_000_000.0)? {
            p.faulty_every = whole(f) as usize;
        }
        if let Some(t) = num("SOAK_RSS_TOLERANCE", 0.0, 10.0)? {
            p.rss_tolerance = t;
        }
        if p.warmup >= p.seconds {
            return Err(format!(
                "SOAK_WARMUP ({}) must be shorter than SOAK_SECONDS ({})",
                p.warmup, p.seconds
            ));
        }
        Ok(p)
    }

    /// Whether route `i` has failures injected.
    pub fn faulty(&self, i: usize) -> bool {
        i % self.faulty_every.max(1) == 0
    }

    /// The path of a request to route `i` (faulty routes ask the upstream for 50% 503s).
    pub fn path(&self, i: usize) -> String {
        if self.faulty(i) {
            format!("/r/{i}/x?fail_rate=0.5")
        } else {
            format!("/r/{i}/x")
        }
    }

    /// The route of the `n`-th request: a stride walk that visits every route once per
    /// `routes` requests, far apart in time from its last visit (so the cache keeps churning).
    pub fn route_of(&self, n: u64) -> usize {
        let routes = self.routes.max(1) as u64;
        let stride = stride(routes);
        ((n.wrapping_mul(stride)) % routes) as usize
    }
}

/// A stride coprime with `routes` near its golden-ratio fraction.
fn stride(routes: u64) -> u64 {
    let mut s = ((routes as f64) * 0.618).round().max(1.0) as u64;
    while gcd(s, routes) != 1 {
        s += 1;
    }
    s
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The suite's plugin configuration: every stage on (as `make bench` measures it), spans exported
/// to the cluster `otlp`.
pub fn suite_config() -> Value {
    let mut config = bench::suite_config();
    if let Some(trace) = config.get_mut("trace_propagation") {
        trace["export"] =
            json!({"cluster": "otlp", "flush_interval": "1s", "service_name": "soak"});
    }
    config
}

/// Route `i` of the measured Envoy, with its own per-route settings for four stages.
pub fn route(i: usize) -> Value {
    let name = format!("r{i}");
    let mut r = bootstrap::route(&name, &format!("/r/{i}/"), "upstream");
    r = bootstrap::with_metadata(
        r,
        "mesh.deadline",
        json!({"timeout": format!("{}s", 3 + i % 5)}),
    );
    r = bootstrap::with_metadata(
        r,
        "mesh.circuit_breaker",
        json!({"consecutive_failures": 3 + i % 3, "open_duration": "1s", "half_open_requests": 1}),
    );
    r = bootstrap::with_metadata(
        r,
        "mesh.retry_budget",
        json!({"retry_ratio": 0.1 + 0.1 * (i % 3) as f64, "max_retries": 1 + i % 2}),
    );
    r = bootstrap::with_metadata(
        r,
        "mesh.spiffe_identity",
        json!({"allow": [bench::CLIENT_ID, format!("spiffe://mesh.local/ns/soak/sa/r{i}")]}),
    );
    r
}

/// The measured Envoy: mTLS listener `soak` with the suite and every route.
pub fn measured_bootstrap(
    p: &Params,
    suite: &Path,
    tls: &TlsFiles,
    upstream: SocketAddr,
    otlp: SocketAddr,
) -> Value {
    let routes = (0..p.routes).map(route).collect();
    let filter = bootstrap::wasm_filter("mesh", suite, &suite_config());
    let listener = bootstrap::with_mtls(
        bootstrap::listener("soak", routes, vec![filter]),
        tls,
        true,
        "SANITIZE_SET",
    );
    bootstrap::bootstrap(
        vec![listener],
        vec![
            bootstrap::cluster("upstream", upstream, false),
            bootstrap::cluster("otlp", otlp, false),
        ],
    )
}

/// Counters of the load, shared by its connections.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests answered.
    pub answered: AtomicU64,
    /// Healthy routes answered 200.
    pub healthy_ok: AtomicU64,
    /// Healthy routes answered anything else (an error: nothing was injected there).
    pub healthy_bad: AtomicU64,
    /// Faulty routes answered 200 (the upstream succeeded, or a retry did).
    pub faulty_ok: AtomicU64,
    /// Faulty routes answered 503 (the injected failure, or the breaker failing fast).
    pub faulty_503: AtomicU64,
    /// Faulty routes answered anything else (an error).
    pub faulty_bad: AtomicU64,
    /// Connection or protocol failures of the load (errors).
    pub transport: AtomicU64,
    /// The first few unexpected outcomes, for the report.
    pub examples: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    /// Errors: outcomes nothing injected.
    pub fn errors(&self) -> u64 {
        self.healthy_bad.load(Ordering::Relaxed)
            + self.faulty_bad.load(Ordering::Relaxed)
            + self.transport.load(Ordering::Relaxed)
    }

    fn example(&self, what: String) {
        if let Ok(mut e) = self.examples.lock() {
            if e.len() < 10 {
                e.push(what);
            }
        }
    }
}

/// Runs the load until `stop`: `connections` keep-alive HTTP/1.1 connections to `entry`, each
/// sending at `rate / connections` requests per second (a late request is not made up for).
pub async fn run_load(p: Params, entry: SocketAddr, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let next = Arc::new(AtomicU64::new(0));
    let connections = p.connections.max(1);
    let period = Duration::from_secs_f64(connections as f64 / f64::from(p.rate.max(1)));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (p, tally, stop, next) = (
            p.clone(),
            Arc::clone(&tally),
            Arc::clone(&stop),
            Arc::clone(&next),
        );
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut conn: Option<Connection> = None;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let i = p.route_of(next.fetch_add(1, Ordering::Relaxed));
                let path = p.path(i);
                match one_request(&mut conn, entry, &path).await {
                    Ok(status) => record(&p, &tally, i, &path, status),
                    Err(e) => {
                        conn = None;
                        tally.transport.fetch_add(1, Ordering::Relaxed);
                        tally.example(format!("{path}: {e}"));
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn record(p: &Params, tally: &Tally, i: usize, path: &str, status: u16) {
    tally.answered.fetch_add(1, Ordering::Relaxed);
    let counter = match (p.faulty(i), status) {
        (false, 200) => &tally.healthy_ok,
        (false, _) => {
            tally.example(format!("{path}: {status}"));
            &tally.healthy_bad
        }
        (true, 200) => &tally.faulty_ok,
        (true, 503) => &tally.faulty_503,
        (true, _) => {
            tally.example(format!("{path}: {status}"));
            &tally.faulty_bad
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One GET on the kept-alive connection (a new one first when there is none, or the server
/// closed it), the body read to the end; at most 30 s.
async fn one_request(
    conn: &mut Option<Connection>,
    entry: SocketAddr,
    path: &str,
) -> Result<u16, Error> {
    let work = async {
        let open = match conn.take() {
            Some(c) if !c.is_closed() => c,
            _ => Connection::open(entry).await?,
        };
        let send = conn.insert(open);
        let response = send
            .get(path, &[("host", "soak"), ("traceparent", TRACEPARENT)])
            .await?;
        Ok::<u16, Error>(response.status)
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .map_err(|_| "no answer within 30 s")?
}

/// One memory sample of the measured Envoy.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Seconds since the load started.
    pub at_s: f64,
    /// Requests answered so far.
    pub answered: u64,
    /// Errors so far.
    pub errors: u64,
    /// `VmRSS`, KiB.
    pub rss_kib: u64,
    /// Envoy's `server.memory_allocated` (bytes held by its allocator, wasm VMs included).
    pub allocated: u64,
}

/// What the samples say about memory after warm-up.
#[derive(Clone, Debug, PartialEq)]
pub struct Memory {
    /// RSS at the first sample at or after warm-up, KiB.
    pub rss_after_warmup_kib: u64,
    /// Largest RSS after that, KiB.
    pub rss_max_kib: u64,
    /// RSS at the last sample, KiB.
    pub rss_last_kib: u64,
    /// `rss_max / rss_after_warmup − 1`.
    pub growth: f64,
    pub allocated_after_warmup: u64,
    pub allocated_last: u64,
}

/// Memory after warm-up (`None` when no sample falls after it).
pub fn memory(samples: &[Sample], warmup_s: f64) -> Option<Memory> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at_s >= warmup_s).collect();
    let first = after.first()?;
    let last = after.last()?;
    let max = after.iter().map(|s| s.rss_kib).max()?;
    Some(Memory {
        rss_after_warmup_kib: first.rss_kib,
        rss_max_kib: max,
        rss_last_kib: last.rss_kib,
        growth: if first.rss_kib == 0 {
            f64::INFINITY
        } else {
            max as f64 / first.rss_kib as f64 - 1.0
        },
        allocated_after_warmup: first.allocated,
        allocated_last: last.allocated,
    })
}

/// The samples as a Markdown table.
pub fn render_samples(samples: &[Sample]) -> String {
    let mut out = String::from(
        "| t (s) | answered | req/s since last | errors | RSS MiB | allocated MiB |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut prev: Option<&Sample> = None;
    for s in samples {
        let rate = prev.map_or(0.0, |p| {
            (s.answered - p.answered) as f64 / (s.at_s - p.at_s).max(1e-9)
        });
        out.push_str(&format!(
            "| {:.0} | {} | {:.0} | {} | {:.1} | {:.1} |\n",
            s.at_s,
            s.answered,
            rate,
            s.errors,
            s.rss_kib as f64 / 1024.0,
            s.allocated as f64 / 1_048_576.0
        ));
        prev = Some(s);
    }
    out
}

/// What a soak run found.
#[derive(Debug)]
pub struct Report {
    pub params: Params,
    pub samples: Vec<Sample>,
    /// Memory after warm-up (`None` if no sample fell after it).
    pub memory: Option<Memory>,
    pub answered: u64,
    pub healthy_ok: u64,
    pub faulty_ok: u64,
    pub faulty_503: u64,
    /// Outcomes nothing injected (healthy routes not 200, other statuses, transport failures).
    pub errors: u64,
    pub error_examples: Vec<String>,
    /// Sums over every route of the filters' own counters at the end.
    pub metrics: Vec<(&'static str, f64)>,
    /// Requests the upstream received that carried the client's verified ID and a traceparent
    /// of the original trace with a new parent span, out of those it received (last interval).
    pub upstream_checked: (usize, usize),
    /// Spans the OTLP receiver got.
    pub spans_received: usize,
    /// Wasm VM failures or panics in the Envoy log.
    pub vm_failures: Vec<String>,
}

/// The counters summed over routes in the report.
pub const REPORTED_METRICS: [&str; 20] = [
    "mesh_deadline_config_error",
    "mesh_circuit_breaker_config_error",
    "mesh_retry_budget_config_error",
    "mesh_spiffe_identity_config_error",
    "mesh_rate_limit_config_error",
    "mesh_rate_limit_allowed",
    "mesh_rate_limit_limited",
    "mesh_rate_limit_state_error",
    "mesh_spiffe_identity_allowed",
    "mesh_spiffe_identity_unauthenticated",
    "mesh_circuit_breaker_opened",
    "mesh_circuit_breaker_closed",
    "mesh_circuit_breaker_rq_rejected",
    "mesh_circuit_breaker_state_error",
    "mesh_retry_budget_retries",
    "mesh_retry_budget_budget_exhausted",
    "mesh_retry_budget_state_error",
    "mesh_deadline_rq_timeout",
    "mesh_trace_propagation_spans_exported",
    "mesh_trace_propagation_spans_dropped",
];

impl Report {
    pub fn metric(&self, name: &str) -> f64 {
        self.metrics
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0.0, |(_, v)| *v)
    }

    /// Why the run failed, if it did: errors beyond those injected, memory growth past the
    /// tolerance after warm-up, a VM failure, the filters not doing their work.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.errors > 0 {
            out.push(format!(
                "{} outcomes nothing injected, e.g. {:?}",
                self.errors, self.error_examples
            ));
        }
        match &self.memory {
            None => out.push("no memory sample after warm-up".to_owned()),
            Some(m) if m.growth > self.params.rss_tolerance => out.push(format!(
                "RSS grew {:.1}% after warm-up ({:.1} → max {:.1} MiB), over {:.0}%",
                m.growth * 100.0,
                m.rss_after_warmup_kib as f64 / 1024.0,
                m.rss_max_kib as f64 / 1024.0,
                self.params.rss_tolerance * 100.0
            )),
            Some(_) => {}
        }
        if !self.vm_failures.is_empty() {
            out.push(format!("Envoy log: {:?}", self.vm_failures));
        }
        let expected = self.params.rate as f64 * self.params.seconds * 0.5;
        if (self.answered as f64) < expected {
            out.push(format!(
                "only {} requests answered, under half the {:.0} planned",
                self.answered,
                self.params.rate as f64 * self.params.seconds
            ));
        }
        if self.upstream_checked.1 == 0 || self.upstream_checked.0 != self.upstream_checked.1 {
            out.push(format!(
                "{} of {} upstream requests carried the verified identity and the trace",
                self.upstream_checked.0, self.upstream_checked.1
            ));
        }
        for (name, want) in [
            ("mesh_circuit_breaker_state_error", 0.0),
            ("mesh_retry_budget_state_error", 0.0),
            ("mesh_spiffe_identity_unauthenticated", 0.0),
            ("mesh_deadline_config_error", 0.0),
            ("mesh_circuit_breaker_config_error", 0.0),
            ("mesh_retry_budget_config_error", 0.0),
            ("mesh_spiffe_identity_config_error", 0.0),
            ("mesh_rate_limit_config_error", 0.0),
            ("mesh_rate_limit_state_error", 0.0),
            // The bench's limit, which never triggers.
            ("mesh_rate_limit_limited", 0.0),
        ] {
            if self.metric(name) != want {
                out.push(format!("{name} = {}", self.metric(name)));
            }
        }
        let exported = self.metric("mesh_trace_propagation_spans_exported");
        if self.spans_received as f64 != exported {
            out.push(format!(
                "the receiver got {} spans, the filter counted {exported} exported",
                self.spans_received
            ));
        }
        for name in [
            "mesh_circuit_breaker_opened",
            "mesh_retry_budget_retries",
            "mesh_trace_propagation_spans_exported",
            "mesh_rate_limit_allowed",
        ] {
            if self.metric(name) <= 0.0 {
                out.push(format!(
                    "{name} = 0: the load and the injected failures did not exercise it"
                ));
            }
        }
        out
    }

    /// The report as Markdown.
    pub fn render(&self) -> String {
        let p = &self.params;
        let mut out = format!(
            "Soak: {:.0} s at {} req/s over {} keep-alive connections, {} routes (every {}th \
             failing half its requests), Envoy --concurrency {}, warm-up {:.0} s.\n\n",
            p.seconds, p.rate, p.connections, p.routes, p.faulty_every, p.concurrency, p.warmup
        );
        out.push_str(&render_samples(&self.samples));
        out.push('\n');
        if let Some(m) = &self.memory {
            out.push_str(&format!(
                "RSS after warm-up {:.1} MiB, max {:.1} MiB (+{:.1}%), last {:.1} MiB; allocated \
                 {:.1} → {:.1} MiB.\n",
                m.rss_after_warmup_kib as f64 / 1024.0,
                m.rss_max_kib as f64 / 1024.0,
                m.growth * 100.0,
                m.rss_last_kib as f64 / 1024.0,
                m.allocated_after_warmup as f64 / 1_048_576.0,
                m.allocated_last as f64 / 1_048_576.0
            ));
        }
        out.push_str(&format!(
            "Requests answered {}: healthy routes 200 {}, faulty routes 200 {} / 503 {}; errors {}.\n",
            self.answered, self.healthy_ok, self.faulty_ok, self.faulty_503, self.errors
        ));
        out.push_str(&format!(
            "Upstream (last interval): {} of {} requests carried the verified identity and a new \
             span of the client's trace. Spans at the receiver: {}.\n\n| counter (sum over routes) | value |\n|---|---:|\n",
            self.upstream_checked.0, self.upstream_checked.1, self.spans_received
        ));
        for (name, v) in &self.metrics {
            out.push_str(&format!("| `{name}` | {v:.0} |\n"));
        }
        out
    }
}

/// Runs a soak: starts the upstream, the OTLP receiver, the measured and the client Envoy, puts
/// the load on for `p.seconds`, samples memory every `p.sample` seconds, and reports. `progress`
/// gets one line per sample. Must run on a multi-threaded tokio runtime.
pub async fn soak(p: &Params, progress: &(dyn Fn(&str) + Sync)) -> Result<Report, Error> {
    use crate::certs::{self, Pki};
    use crate::envoy::{self, Envoy, Options};

    let suite = envoy::wasm(bench::SUITE_MODULE)?;
    let pki = Pki::new("soak")?;
    let client_tls = pki.client_files("soak-client", &[bench::CLIENT_ID])?;
    let upstream = crate::upstream::spawn("soak", "127.0.0.1:0".parse()?).await?;
    let receiver = crate::otlp_receiver::spawn("127.0.0.1:0".parse()?).await?;

    let bootstrap = measured_bootstrap(p, &suite, &pki.envoy, upstream.addr(), receiver.addr());
    let opts = Options {
        concurrency: p.concurrency,
        startup_timeout: Duration::from_secs(120),
        ..Options::default()
    };
    let measured = tokio::task::block_in_place(|| Envoy::start_with(&bootstrap, &opts))?;
    let client_bootstrap =
        bench::client_bootstrap(measured.listener("soak"), &client_tls, certs::SERVER_NAME);
    let client = tokio::task::block_in_place(|| {
        Envoy::start_with(
            &client_bootstrap,
            &Options {
                concurrency: 1,
                ..Options::default()
            },
        )
    })?;

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(
        p.clone(),
        client.listener("client"),
        Arc::clone(&tally),
        Arc::clone(&stop),
    ));
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut upstream_checked: (usize, usize);
    let mut spans_received = 0;
    let mut next = p.sample;
    loop {
        let until = started + Duration::from_secs_f64(next.min(p.seconds));
        tokio::time::sleep_until(until.into()).await;
        let at_s = started.elapsed().as_secs_f64();
        let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", measured.pid()))
            .ok()
            .and_then(|s| bench::vm_rss_kib(&s))
            .ok_or("cannot read the measured Envoy's VmRSS")?;
        let allocated = metrics::scrape(measured.admin, Some("^server\\.memory_allocated$"))
            .await?
            .value("envoy_server_memory_allocated", &[])?;
        let sample = Sample {
            at_s,
            answered: tally.answered.load(Ordering::Relaxed),
            errors: tally.errors(),
            rss_kib,
            allocated: allocated as u64,
        };
        progress(&format!(
            "soak: {:>5.0} s  answered {:>8}  errors {:>4}  RSS {:>6.1} MiB  allocated {:>6.1} MiB",
            sample.at_s,
            sample.answered,
            sample.errors,
            sample.rss_kib as f64 / 1024.0,
            sample.allocated as f64 / 1_048_576.0
        ));
        samples.push(sample);
        // The upstream and the receiver keep what they received: check it, then forget it.
        let seen = upstream.requests();
        upstream_checked = (
            seen.iter()
                .filter(|r| {
                    r.header("x-spiffe-id") == Some(bench::CLIENT_ID)
                        && r.header("traceparent").is_some_and(|t| {
                            t.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-")
                                && t != TRACEPARENT
                        })
                })
                .count(),
            seen.len(),
        );
        upstream.clear();
        spans_received += receiver.take_spans().len();
        if at_s >= p.seconds {
            break;
        }
        next += p.sample;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    // Let the last spans go out: until the receiver has every span the filter counted as
    // exported (at most 5 s; a difference left is reported).
    let mut last = metrics::Metrics::default();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        spans_received += receiver.take_spans().len();
        last = metrics::scrape(measured.admin, None).await?;
        let exported = last
            .sum("mesh_trace_propagation_spans_exported")
            .unwrap_or(0.0);
        if spans_received as f64 == exported {
            break;
        }
    }
    // Counters summed over routes; a counter no route has defined reads as 0.
    let metrics = REPORTED_METRICS
        .iter()
        .map(|&n| (n, last.sum(n).unwrap_or(0.0)))
        .collect();
    let log = measured.log();
    let vm_failures = log
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("panicked") || l.contains("wasm vm failed") || l.contains("vm has failed")
        })
        .take(5)
        .map(str::to_owned)
        .collect();
    let error_examples = tally.examples.lock().map(|e| e.clone()).unwrap_or_default();
    drop(client);
    drop(measured);
    Ok(Report {
        params: p.clone(),
        memory: memory(&samples, p.warmup),
        samples,
        answered: tally.answered.load(Ordering::Relaxed),
        healthy_ok: tally.healthy_ok.load(Ordering::Relaxed),
        faulty_ok: tally.faulty_ok.load(Ordering::Relaxed),
        faulty_503: tally.faulty_503.load(Ordering::Relaxed),
        errors: tally.errors(),
        error_examples,
        metrics,
        upstream_checked,
        spans_received,
        vm_failures,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_visits_every_route_once_per_round() {
        for routes in [1usize, 2, 7, 10, 1000, 2000, 2048] {
            let p = Params {
                routes,
                ..Params::default()
            };
            let mut seen = vec![0u32; routes];
            for n in 0..routes as u64 {
                seen[p.route_of(n)] += 1;
            }
            assert!(seen.iter().all(|&c| c == 1), "routes={routes}");
        }
    }

    #[test]
    fn consecutive_requests_go_to_distant_routes() {
        let p = Params::default();
        let d = p.route_of(1).abs_diff(p.route_of(0));
        assert!(d > 100, "stride {d}");
    }

    #[test]
    fn faulty_routes_ask_the_upstream_to_fail() {
        let p = Params::default();
        assert_eq!(p.path(20), "/r/20/x?fail_rate=0.5");
        assert_eq!(p.path(21), "/r/21/x");
    }

    #[test]
    fn params_from_env_check_ranges() {
        let env = crate::bench::fake_env;
        let p = Params::from_env(env(&[("SOAK_SECONDS", "30"), ("SOAK_WARMUP", "10")])).unwrap();
        assert_eq!((p.seconds, p.warmup), (30.0, 10.0));
        assert!(Params::from_env(env(&[("SOAK_SECONDS", "30"), ("SOAK_WARMUP", "40")])).is_err());
        assert!(Params::from_env(env(&[("SOAK_RATE", "fast")]))
            .unwrap_err()
            .contains("SOAK_RATE"));
    }

    #[test]
    fn memory_compares_with_the_first_sample_after_warm_up() {
        let s = |at_s: f64, rss_kib: u64| Sample {
            at_s,
            answered: 0,
            errors: 0,
            rss_kib,
            allocated: 0,
        };
        let m = memory(
            &[s(5.0, 50), s(10.0, 100), s(20.0, 104), s(30.0, 102)],
            10.0,
        )
        .unwrap();
        assert_eq!(
            (m.rss_after_warmup_kib, m.rss_max_kib, m.rss_last_kib),
            (100, 104, 102)
        );
        assert!((m.growth - 0.04).abs() < 1e-9);
        assert!(memory(&[s(5.0, 50)], 10.0).is_none());
    }
}
