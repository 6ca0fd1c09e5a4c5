//! Rollouts and restarts under load: what a running Envoy with the suite loses when its
//! configuration changes. `integration/tests/rollout.rs` runs a short version in `make test`;
//! `make rollout` (the `rollout` binary) runs a longer one and prints the figures of
//! HARDENING.md.
//!
//! A steady load ([`Load`]: keep-alive HTTP/1.1 connections at a fixed rate, every request
//! numbered and timed) runs through the suite (circuit breaker, deadline, retry budget, trace
//! propagation with OTLP export) on an Envoy with two workers that reads its listeners and route
//! tables from files ([`crate::dynamic`]). While it runs, [`rollouts`] rolls, one after another:
//!
//! 1. **route metadata**: a new route table (RDS) with other deadline and breaker thresholds;
//!    the new thresholds must show on probe routes within [`TAKE_EFFECT_BOUND`];
//! 2. **plugin configuration**: the same module with another configuration (LDS, the listener's
//!    filter chain updated in place: the old chain drains);
//! 3. **module upgrade**: another `.wasm` file (the same code with one more custom section, so
//!    Envoy sees other bytes and starts a new VM) under the same `vm_id`;
//! 4. **bad configuration**: a plugin configuration the suite refuses; Envoy must reject the
//!    update and keep serving with the old one;
//! 5. **new listener**: a second listener added beside the loaded one;
//! 6. **new vm_id**: the same module and configuration in a VM of another id.
//!
//! For each it measures the requests that failed (no response) or were answered with anything
//! but 200, the p99 latency before and during the change, whether an open breaker stays open and
//! a drawn retry budget keeps its balance across it, whether the old configuration kept serving
//! (from the `service.name` of the spans, which differs per configuration) and how many spans of
//! the load reached the OTLP receiver. [`hot_restart`] does the same across a hot restart
//! (`--restart-epoch`), and [`failure_policy`] shows what a trapped VM does to requests under
//! each of Envoy's `failure_policy` values, with a test build of the suite that traps on demand.

// Test tooling: JSON values built here have the shape indexed.
#![allow(clippy::indexing_slicing)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::bootstrap::{self, route, with_metadata, Plugin};
use crate::client;
use crate::dynamic::{self, route_config, Update, Xds};
use crate::envoy::{self, Envoy, HotRestart, Options};
use crate::otlp_receiver::{self, ReceivedSpan, Receiver};
use crate::tempdir;
use crate::upstream::{self, Upstream};
use crate::Error;

/// The sampled trace context every load request carries (each hop makes a new span).
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// How soon after Envoy took a new route table its thresholds must be in force on every worker.
pub const TAKE_EFFECT_BOUND: Duration = Duration::from_secs(5);

/// Worker threads of the Envoy under test.
pub const WORKERS: u32 = 2;

// -------------------------------------------------------------------------------- the load

/// What the steady load sends.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Requests per second, all connections together.
    pub rate: u32,
    /// Keep-alive HTTP/1.1 connections.
    pub connections: usize,
    /// Request `n` goes to `{prefix}{n}`.
    pub prefix: String,
}

/// How one request of the load ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A whole response: its status, who rejected it (`x-mesh-rejected-by`), and whether it
    /// closed the connection (`connection: close`, a draining Envoy's way to move a client).
    Answered {
        status: u16,
        rejected_by: Option<String>,
        closed: bool,
    },
    /// The request was sent and no whole response came: a reset, a closed connection, a timeout.
    Failed(String),
}

/// One request of the load.
#[derive(Clone, Debug)]
pub struct Event {
    /// Its number (its path is `{prefix}{seq}`).
    pub seq: u64,
    /// When it was sent, since the load started.
    pub at: Duration,
    /// Time to the whole response (a new connection's set-up included).
    pub latency: Duration,
    pub outcome: Outcome,
    /// Which of the load's connections sent it (0-based).
    pub conn: usize,
}

impl Event {
    /// Answered 200.
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Answered { status: 200, .. })
    }

    fn describe(&self, origin: Duration) -> String {
        let t = self.at.as_secs_f64() * 1e3 - origin.as_secs_f64() * 1e3;
        match &self.outcome {
            Outcome::Answered {
                status,
                rejected_by,
                ..
            } => format!(
                "{t:+.0} ms: {status}{}",
                rejected_by
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            Outcome::Failed(e) => format!("{t:+.0} ms: no response ({e})"),
        }
    }
}

/// The steady load: `connections` keep-alive HTTP/1.1 connections, each sending at
/// `rate / connections` per second (a late request is not made up for). A connection that
/// Envoy closes is opened again for the next request; a request that hyper could not even
/// write on a connection found closed is sent again on a new one (what every HTTP client does,
/// since nothing was sent), and counted in [`Load::resent`].
pub struct Load {
    started: Instant,
    events: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    conns: Arc<Conns>,
}

/// What the load's connections share.
struct Conns {
    started: Instant,
    /// Connections opened, requests resent.
    opened: AtomicU64,
    resent: AtomicU64,
    /// When each connection was last (re)opened, on the load's clock.
    last_open: Mutex<Vec<Duration>>,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

impl Load {
    /// Starts the load on `addr`; it runs until [`Load::stop`].
    pub fn start(addr: SocketAddr, spec: &LoadSpec) -> Load {
        let connections = spec.connections.max(1);
        let period = Duration::from_secs_f64(connections as f64 / f64::from(spec.rate.max(1)));
        let started = Instant::now();
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(Conns {
            started,
            opened: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            last_open: Mutex::new(vec![Duration::ZERO; connections]),
        });
        let mut tasks = Vec::new();
        for i in 0..connections {
            let (events, stop, next, conns) = (
                Arc::clone(&events),
                Arc::clone(&stop),
                Arc::clone(&next),
                Arc::clone(&conns),
            );
            let prefix = spec.prefix.clone();
            // Connections start spread over one period, so requests are evenly spaced.
            let offset = period.mul_f64(i as f64 / connections as f64);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut conn: Option<Sender> = None;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let path = format!("{prefix}{seq}");
                    let at = started.elapsed();
                    let sent = Instant::now();
                    let outcome = one_request(&mut conn, addr, &path, &conns, i).await;
                    let event = Event {
                        seq,
                        at,
                        latency: sent.elapsed(),
                        outcome,
                        conn: i,
                    };
                    if let Ok(mut e) = events.lock() {
                        e.push(event);
                    }
                }
            }));
        }
        Load {
            started,
            events,
            stop,
            tasks,
            conns,
        }
    }

    /// Time since the load started (the clock of [`Event::at`]).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every request finished so far, in the order they finished.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Connections opened so far (one per connection at start, one per reconnection after).
    pub fn connections_opened(&self) -> u64 {
        self.conns.opened.load(Ordering::Relaxed)
    }

    /// Requests sent again because the connection was found closed before they were written.
    pub fn resent(&self) -> u64 {
        self.conns.resent.load(Ordering::Relaxed)
    }

    /// Whether every connection of the load was opened at or after `t` (on the load's clock):
    /// after a listener update taken at `t`, none is left on the old filter chain.
    pub fn all_opened_since(&self, t: Duration) -> bool {
        self.conns
            .last_open
            .lock()
            .map(|l| l.iter().all(|at| *at >= t))
            .unwrap_or(false)
    }

    /// Stops the load and waits for the requests in flight; every request.
    pub async fn stop(self) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut events = self.events.lock().map(|e| e.clone()).unwrap_or_default();
        events.sort_by_key(|e| e.seq);
        events
    }
}

async fn connect(addr: SocketAddr, conns: &Conns, i: usize) -> Result<Sender, Error> {
    let at = conns.started.elapsed();
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    conns.opened.fetch_add(1, Ordering::Relaxed);
    if let Some(slot) = conns
        .last_open
        .lock()
        .ok()
        .as_mut()
        .and_then(|l| l.get_mut(i))
    {
        *slot = at;
    }
    Ok(send)
}

/// One GET on the connection (a new one when there is none or it is closed), body read to the
/// end, within 30 s.
async fn one_request(
    conn: &mut Option<Sender>,
    addr: SocketAddr,
    path: &str,
    conns: &Conns,
    i: usize,
) -> Outcome {
    let work = async {
        let mut request = Request::get(path)
            .header("host", "rollout")
            .header("traceparent", TRACEPARENT)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        // At most one resend: a request hyper never wrote on a connection that had just closed.
        for attempt in 0..2 {
            if conn.as_ref().map_or(true, |c| c.is_closed()) {
                *conn = Some(connect(addr, conns, i).await.map_err(|e| e.to_string())?);
            }
            let Some(send) = conn.as_mut() else {
                return Err("no connection".to_owned());
            };
            if send.ready().await.is_err() {
                // Closed before anything was sent.
                *conn = None;
                continue;
            }
            match send.try_send_request(request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let header = |name: &str| {
                        response
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let rejected_by = header("x-mesh-rejected-by");
                    let closed =
                        header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
                    response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| format!("body: {e}"))?;
                    if closed {
                        *conn = None;
                    }
                    return Ok(Outcome::Answered {
                        status,
                        rejected_by,
                        closed,
                    });
                }
                Err(mut e) => {
                    *conn = None;
                    match e.take_message() {
                        Some(unsent) if attempt == 0 => {
                            conns.resent.fetch_add(1, Ordering::Relaxed);
                            request = unsent;
                        }
                        _ => return Err(e.into_error().to_string()),
                    }
                }
            }
        }
        Err("connection closed twice before the request could be written".to_owned())
    };
    match tokio::time::timeout(Duration::from_secs(30), work).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            *conn = None;
            Outcome::Failed(e)
        }
        Err(_) => {
            *conn = None;
            Outcome::Failed("no answer within 30 s".to_owned())
        }
    }
}

// -------------------------------------------------------------------------------- windows

/// The load's requests sent within a time window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    pub requests: usize,
    /// Answered 200.
    pub ok: usize,
    /// Answered with another status.
    pub non_2xx: usize,
    /// Sent and never answered.
    pub failed: usize,
    /// Answers that closed their connection (a draining Envoy moving its clients).
    pub closed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Window {
    /// Requests lost: failed or not answered 200.
    pub fn lost(&self) -> usize {
        self.failed + self.non_2xx
    }
}

/// The `q` quantile (0..=1) of sorted values, nearest rank; 0 when there are none.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted.get(rank - 1).copied().unwrap_or(0.0)
}

/// The requests of `events` sent in `[from, to)`.
pub fn window(events: &[Event], from: Duration, to: Duration) -> Window {
    let inside: Vec<&Event> = events
        .iter()
        .filter(|e| e.at >= from && e.at < to)
        .collect();
    let mut latencies: Vec<f64> = inside
        .iter()
        .map(|e| e.latency.as_secs_f64() * 1e3)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let mut w = Window {
        requests: inside.len(),
        p50_ms: quantile(&latencies, 0.5),
        p99_ms: quantile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        ..Window::default()
    };
    for e in inside {
        match &e.outcome {
            Outcome::Answered { status, closed, .. } => {
                if *status == 200 {
                    w.ok += 1;
                } else {
                    w.non_2xx += 1;
                }
                if *closed {
                    w.closed += 1;
                }
            }
            Outcome::Failed(_) => w.failed += 1,
        }
    }
    w
}

// -------------------------------------------------------------------------------- the bed

/// What a run does: load, timings.
#[derive(Clone, Debug)]
pub struct Params {
    /// Requests per second of the load.
    pub rate: u32,
    /// Keep-alive connections of the load.
    pub connections: usize,
    /// Steady load measured before each change.
    pub before: Duration,
    /// Load measured after each change at least (until the old chain has drained, if longer).
    pub during: Duration,
    /// `--drain-time-s` of the Envoy whose listeners are rolled: the old filter chain's
    /// connections are closed that long after Envoy began processing an update, the new
    /// module's compilation included, so it must exceed that (see [`Report::failures`]).
    pub drain_time_s: u32,
    /// `--drain-time-s` and `--parent-shutdown-time-s` of the hot restart.
    pub restart_drain_time_s: u32,
    pub parent_shutdown_time_s: u32,
    /// Every rollout kind this many times (the route table and plugin configuration alternate
    /// between versions).
    pub rounds: u32,
    /// The kinds rolled, in this order ([`Kind::NewVmId`] only in the last round: it resets the
    /// state the others check).
    pub kinds: Vec<Kind>,
}

impl Params {
    /// The short version (`make test`).
    pub fn short() -> Params {
        Params {
            rate: 200,
            connections: 8,
            before: Duration::from_millis(1500),
            during: Duration::from_millis(1500),
            drain_time_s: 10,
            restart_drain_time_s: 2,
            parent_shutdown_time_s: 4,
            rounds: 1,
            kinds: Kind::ALL.to_vec(),
        }
    }

    /// The long version (`make rollout`).
    pub fn long() -> Params {
        Params {
            rate: 500,
            connections: 16,
            before: Duration::from_secs(5),
            during: Duration::from_secs(5),
            drain_time_s: 20,
            restart_drain_time_s: 5,
            parent_shutdown_time_s: 10,
            rounds: 3,
            kinds: Kind::ALL.to_vec(),
        }
    }

    /// [`Params::long`] with the `ROLLOUT_*` variables read through `get` (the environment,
    /// in the binary): `ROLLOUT_RATE`, `ROLLOUT_CONNECTIONS`, `ROLLOUT_ROUNDS`,
    /// `ROLLOUT_DRAIN_TIME` (seconds).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Params, String> {
        let mut p = Params::long();
        let num = |name: &str, min: f64, max: f64| crate::bench::env_number(&get, name, min, max);
        let whole = |n: f64| n.round() as u32;
        if let Some(r) = num("ROLLOUT_RATE", 10.0, 20_000.0)? {
            p.rate = whole(r);
        }
        if let Some(c) = num("ROLLOUT_CONNECTIONS", 1.0, 1_000.0)? {
            p.connections = whole(c) as usize;
        }
        if let Some(r) = num("ROLLOUT_ROUNDS", 1.0, 100.0)? {
            p.rounds = whole(r);
        }
        if let Some(d) = num("ROLLOUT_DRAIN_TIME", 1.0, 600.0)? {
            p.drain_time_s = whole(d);
        }
        Ok(p)
    }

    fn load(&self) -> LoadSpec {
        LoadSpec {
            rate: self.rate,
            connections: self.connections,
            prefix: "/load/".to_owned(),
        }
    }
}

/// The suite's plugin configuration, version `v`: the versions differ in their deadline and in
/// the `service.name` of their spans (`rollout-v<v>`), which tells which one served a request.
pub fn plugin_config(v: u32) -> Value {
    json!({
        "circuit_breaker": {"consecutive_failures": 1000, "open_duration": "30s"},
        "deadline": {"timeout": format!("{}s", 5 + v % 2)},
        "retry_budget": {"max_retries": 1},
        "trace_propagation": {"export": {
            "cluster": "otlp", "flush_interval": "200ms", "service_name": format!("rollout-v{v}")
        }}
    })
}

/// A plugin configuration the suite refuses (`deadline.timeout`).
pub fn bad_plugin_config() -> Value {
    let mut c = plugin_config(0);
    c["deadline"]["timeout"] = json!("soon");
    c
}

/// The refusal line of [`bad_plugin_config`].
pub const REFUSAL: &str = "mesh: invalid configuration: field `deadline.timeout`";

/// The routes of the route table `main`, version `v` (1 and 2 differ in their thresholds):
///
/// * `load`: the steady load; its thresholds change but never bite;
/// * `probe-deadline`: deadline 2 s (v1) or 250 ms (v2), probed with 400 ms requests;
/// * `probe-breaker`: the breaker opens after 20 (v1) or 3 (v2) consecutive failures, for 1 s;
/// * `breaker`: a breaker that opens after 3 failures and stays open for an hour, whose state
///   is checked across changes;
/// * `budget`: a retry budget over an hour (a floor of 1/s, 1% of requests, so nothing it
///   counts ages out during a run), drawn on and checked across changes.
pub fn routes(v: u32) -> Vec<Value> {
    let v2 = v % 2 == 0;
    let mut load = route("load", "/load/", "svc");
    load = with_metadata(
        load,
        "mesh.deadline",
        json!({"timeout": if v2 { "4s" } else { "3s" }}),
    );
    load = with_metadata(
        load,
        "mesh.circuit_breaker",
        json!({"consecutive_failures": if v2 { 900 } else { 1000 }}),
    );
    let deadline = with_metadata(
        route("probe-deadline", "/probe-deadline/", "svc"),
        "mesh.deadline",
        json!({"timeout": if v2 { "250ms" } else { "2s" }}),
    );
    let breaker_probe = with_metadata(
        route("probe-breaker", "/probe-breaker/", "svc"),
        "mesh.circuit_breaker",
        json!({
            "consecutive_failures": if v2 { 3 } else { 20 },
            "open_duration": "1s", "half_open_requests": 1
        }),
    );
    let breaker = with_metadata(
        route("breaker", "/breaker/", "svc"),
        "mesh.circuit_breaker",
        json!({"consecutive_failures": 3, "open_duration": "1h"}),
    );
    let budget = with_metadata(
        route("budget", "/budget/", "svc"),
        "mesh.retry_budget",
        json!({"retry_ratio": 0.01, "min_retries_per_second": 1, "ttl": "1h", "max_retries": 1}),
    );
    vec![load, deadline, breaker_probe, breaker, budget]
}

/// The budget route's floor: `min_retries_per_second × ttl`.
pub const BUDGET_FLOOR: u64 = 3600;

/// A copy of the module `src` in `dir` with one more custom section (`mesh.rollout` = `tag`):
/// the same code, other bytes, so Envoy starts a new VM for it, as for a new build.
pub fn upgraded_module(src: &Path, dir: &Path, tag: &str) -> Result<PathBuf, Error> {
    let mut bytes = std::fs::read(src)?;
    let name = b"mesh.rollout";
    let mut payload = leb128(name.len() as u64);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    bytes.push(0); // custom section
    bytes.extend(leb128(payload.len() as u64));
    bytes.extend(payload);
    let out = dir.join(format!("mesh_filters-{tag}.wasm"));
    std::fs::write(&out, bytes)?;
    Ok(out)
}

fn leb128(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// The module, configuration and VM of the loaded listener.
#[derive(Clone, Debug)]
struct Loaded {
    module: PathBuf,
    config: Value,
    vm_id: String,
}

impl Loaded {
    fn filter(&self) -> Value {
        bootstrap::wasm_filter(
            "mesh",
            &self.module,
            Plugin::json(&self.config).in_vm(&self.vm_id),
        )
    }
}

/// The upstream, the receiver, the resource files and the Envoy of [`rollouts`].
struct Bed {
    upstream: Upstream,
    receiver: Receiver,
    xds: Xds,
    envoy: Envoy,
    loaded: Loaded,
    port: SocketAddr,
    modules: tempdir::Dir,
}

impl Bed {
    async fn start(p: &Params) -> Result<Bed, Error> {
        let upstream = upstream::local("svc").await?;
        let receiver = otlp_receiver::local().await?;
        let mut xds = Xds::new("rollout")?;
        let loaded = Loaded {
            module: envoy::wasm("mesh_filters")?,
            config: plugin_config(1),
            vm_id: "mesh".to_owned(),
        };
        xds.write_routes(&[route_config("main", routes(1))])?;
        xds.write_listeners(&[xds.listener("main", "main", vec![loaded.filter()])])?;
        let bootstrap = xds.bootstrap(vec![
            bootstrap::cluster("svc", upstream.addr(), true),
            bootstrap::cluster("otlp", receiver.addr(), false),
        ]);
        let opts = Options {
            drain_time_s: Some(p.drain_time_s),
            ..Options::workers(WORKERS)
        };
        let envoy = tokio::task::block_in_place(|| Envoy::start_with(&bootstrap, &opts))?;
        let port = envoy.listener("main");
        Ok(Bed {
            upstream,
            receiver,
            xds,
            envoy,
            loaded,
            port,
            modules: tempdir::Dir::new("rollout-modules")?,
        })
    }

    fn listeners(&self, loaded: &Loaded, second: bool) -> Vec<Value> {
        let mut out = vec![self.xds.listener("main", "main", vec![loaded.filter()])];
        if second {
            out.push(self.xds.listener("second", "main", vec![loaded.filter()]));
        }
        out
    }

    /// The main listener's address now; an error when an update moved it.
    fn check_port(&self) -> Result<(), Error> {
        let now = tokio::task::block_in_place(|| self.envoy.current_listeners())?;
        match now.iter().find(|(n, _)| n == "main") {
            Some((_, a)) if *a == self.port => Ok(()),
            other => Err(format!("the main listener moved: {other:?}, was {}", self.port).into()),
        }
    }

    async fn get(&self, path: &str) -> Result<client::Response, Error> {
        client::get(self.port, path, &[("host", "rollout")]).await
    }

    /// Opens the `breaker` route's breaker (failures until it rejects) unless it is open.
    async fn open_breaker(&self) -> Result<(), Error> {
        for _ in 0..20 {
            let r = self.get("/breaker/x?status=503").await?;
            if rejected_by_breaker(&r) {
                return Ok(());
            }
        }
        Err("the breaker route did not open after 20 failures".into())
    }

    /// Whether the `breaker` route's breaker answers a healthy request itself (open).
    async fn breaker_open(&self) -> Result<bool, Error> {
        Ok(rejected_by_breaker(&self.get("/breaker/x").await?))
    }

    /// Draws `n` retries from the budget route (each request's first attempt fails, its retry
    /// succeeds).
    async fn draw_budget(&self, n: u32) -> Result<(), Error> {
        for _ in 0..n {
            let r = self.get("/budget/x?fail_attempts=1").await?;
            if r.status != 200 {
                return Err(format!("a budget draw was answered {}", r.status).into());
            }
        }
        Ok(())
    }

    /// The budget route's balance as its gauge shows it after one healthy request.
    async fn budget_balance(&self) -> Result<u64, Error> {
        let r = self.get("/budget/x").await?;
        if r.status != 200 {
            return Err(format!("a budget request was answered {}", r.status).into());
        }
        Ok(self
            .envoy
            .settled_value(
                "mesh_retry_budget_retries_available",
                &[("route", "budget")],
            )
            .await? as u64)
    }
}

fn rejected_by_breaker(r: &client::Response) -> bool {
    r.status == 503 && r.header("x-mesh-rejected-by") == Some("mesh.circuit_breaker")
}

// -------------------------------------------------------------------------------- rollouts

/// The kinds of change [`rollouts`] rolls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    RouteMetadata,
    PluginConfig,
    ModuleUpgrade,
    BadConfig,
    NewListener,
    NewVmId,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::RouteMetadata,
        Kind::PluginConfig,
        Kind::ModuleUpgrade,
        Kind::BadConfig,
        Kind::NewListener,
        Kind::NewVmId,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Kind::RouteMetadata => "route metadata (RDS: deadline and breaker thresholds)",
            Kind::PluginConfig => "plugin configuration (LDS, same module and vm_id)",
            Kind::ModuleUpgrade => "module upgrade (LDS, new .wasm file, same vm_id)",
            Kind::BadConfig => "bad plugin configuration (LDS, refused)",
            Kind::NewListener => "new listener (LDS, beside the loaded one)",
            Kind::NewVmId => "new vm_id (LDS, same module and configuration)",
        }
    }
}

/// What one change did.
#[derive(Clone, Debug)]
pub struct Step {
    pub kind: Kind,
    /// Envoy's verdict and how long after the rename it came.
    pub update: Update,
    /// When the new file was renamed into place, on the load's clock.
    pub at: Duration,
    /// The end of the step (of `during`), on the same clock.
    pub during_end: Duration,
    /// The load before the change (`Params::before`) and from the rename to the end of the step.
    pub before: Window,
    pub during: Window,
    /// The failed and non-200 requests of `during`, with their time from the rename.
    pub lost: Vec<String>,
    /// Route metadata: from Envoy taking the route table to the new deadline showing on every
    /// probe (`None`: not within [`TAKE_EFFECT_BOUND`]).
    pub took_effect: Option<Duration>,
    /// Route metadata: whether the new table tightened the thresholds (the breaker probe runs
    /// then), and the failures the breaker probe route took to open after the change (the new
    /// threshold is 3, the old 20).
    pub tightened: bool,
    pub breaker_opened_after: Option<u32>,
    /// Whether the open `breaker` route was still open after the change.
    pub breaker_open_after: Option<bool>,
    /// The budget route's balance before and after the change.
    pub budget: Option<(u64, u64)>,
    /// Refusal lines the change logged (a bad configuration).
    pub refusals: Vec<String>,
    /// `service.name` versions of the old and new configuration (plugin changes).
    pub versions: Option<(u32, u32)>,
    /// Filled in at the end from the spans: load requests of `during` served by the old
    /// configuration, and the last one's time from the rename.
    pub old_served: usize,
    pub old_served_until: Option<Duration>,
    /// Load requests of `during` answered 200, and how many of their spans the receiver got.
    pub spans: (usize, usize),
    /// Listener changes: from the rename until every connection of the load had been opened
    /// again after Envoy took the update (none left on the old filter chain).
    pub moved_after: Option<Duration>,
    /// The first requests of `during` whose span never arrived: time from the rename.
    pub spans_missing: Vec<Duration>,
    /// The configuration versions that served the requests of `during` (from their spans),
    /// with their counts.
    pub versions_seen: Vec<(u32, usize)>,
}

/// What [`rollouts`] found.
#[derive(Clone, Debug)]
pub struct Report {
    pub params: Params,
    pub steps: Vec<Step>,
    /// Every request of the load.
    pub requests: usize,
    pub lost: usize,
    /// Load requests answered 200 and their spans at the receiver.
    pub spans: (usize, usize),
    pub connections_opened: u64,
    pub resent: u64,
    /// Both workers took connections of the load.
    pub per_worker: Vec<u64>,
    /// Wasm failures or panics in the Envoy log, but for the refusals of the bad configuration.
    pub vm_failures: Vec<String>,
    /// The trace stage's own counters at the end: spans exported, dropped, failed exports.
    pub trace_counters: Vec<(&'static str, f64)>,
}

/// The trace stage's counters in [`Report::trace_counters`].
pub const TRACE_COUNTERS: [&str; 3] = [
    "mesh_trace_propagation_spans_exported",
    "mesh_trace_propagation_spans_dropped",
    "mesh_trace_propagation_export_failed",
];

/// Runs every rollout kind `p.rounds` times under the steady load and reports.
pub async fn rollouts(p: &Params, progress: &(dyn Fn(&str) + Sync)) -> Result<Report, Error> {
    let mut bed = Bed::start(p).await?;
    // Every key the checks use exists before the load (a key is created by its first write).
    bed.open_breaker().await?;
    bed.draw_budget(1).await?;
    let load = Load::start(bed.port, &p.load());
    tokio::time::sleep(p.before).await;
    let mut steps = Vec::new();
    let mut version = 1;
    let mut route_version = 1;
    let mut spans = HashMap::new();
    for round in 0..p.rounds {
        for &kind in &p.kinds {
            if kind == Kind::NewVmId && round + 1 < p.rounds {
                // It resets the state the other kinds check: once, at the very end.
                continue;
            }
            let step = match kind {
                Kind::RouteMetadata => {
                    route_version += 1;
                    route_step(&mut bed, &load, p, route_version).await?
                }
                _ => listener_step(&mut bed, &load, p, kind, &mut version).await?,
            };
            progress(&step_line(&step));
            steps.push(step);
            // What the upstream and the receiver hold would grow with the run.
            bed.upstream.clear();
            absorb(&bed.receiver, &mut spans);
        }
    }
    let per_worker = tokio::task::block_in_place(|| bed.envoy.connections_per_worker(WORKERS))?;
    let connections_opened = load.connections_opened();
    let resent = load.resent();
    let events = load.stop().await;
    settle_spans(&bed.receiver, &events, &mut spans).await;
    for step in &mut steps {
        attribute_spans(step, &events, &spans);
    }
    let answered = events.iter().filter(|e| e.ok()).count();
    let received = events
        .iter()
        .filter(|e| e.ok() && spans.contains_key(&e.seq))
        .count();
    let log = bed.envoy.log();
    let metrics = tokio::task::block_in_place(|| bed.envoy.metrics())?;
    let trace_counters = TRACE_COUNTERS
        .iter()
        .map(|&n| (n, metrics.sum(n).unwrap_or(0.0)))
        .collect();
    Ok(Report {
        params: p.clone(),
        requests: events.len(),
        lost: events.iter().filter(|e| !e.ok()).count(),
        spans: (answered, received),
        steps,
        connections_opened,
        resent,
        per_worker,
        vm_failures: vm_failures(&log)
            .into_iter()
            .filter(|l| !l.contains("Failed to configure base Wasm plugin"))
            .collect(),
        trace_counters,
    })
}

/// Lines of an Envoy log that tell of a failed VM or a panic.
pub fn vm_failures(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("panicked") || l.contains("wasm vm failed") || l.contains("vm has failed")
        })
        .take(5)
        .map(str::to_owned)
        .collect()
}

fn step_line(s: &Step) -> String {
    format!(
        "rollout: {:<60} {:?}; before p99 {:.1} ms, during p99 {:.1} ms; lost {} of {}",
        s.kind.describe(),
        s.update,
        s.before.p99_ms,
        s.during.p99_ms,
        s.during.lost(),
        s.during.requests
    )
}

fn new_step(kind: Kind, update: Update, at: Duration) -> Step {
    Step {
        kind,
        update,
        at,
        during_end: at,
        before: Window::default(),
        during: Window::default(),
        lost: Vec::new(),
        took_effect: None,
        tightened: false,
        breaker_opened_after: None,
        breaker_open_after: None,
        budget: None,
        refusals: Vec::new(),
        versions: None,
        old_served: 0,
        old_served_until: None,
        spans: (0, 0),
        moved_after: None,
        spans_missing: Vec::new(),
        versions_seen: Vec::new(),
    }
}

/// Fills in the load's windows of a step that began at `at` and ends now.
fn close_step(step: &mut Step, load: &Load, p: &Params) {
    let end = load.elapsed();
    step.during_end = end;
    let events = load.events();
    step.before = window(&events, step.at.saturating_sub(p.before), step.at);
    step.during = window(&events, step.at, end);
    step.lost = events
        .iter()
        .filter(|e| e.at >= step.at && e.at < end && !e.ok())
        .map(|e| e.describe(step.at))
        .collect();
}

/// A new route table with the other thresholds, then the probes.
async fn route_step(bed: &mut Bed, load: &Load, p: &Params, v: u32) -> Result<Step, Error> {
    // Both probe routes served with the old table first, on several connections, so that every
    // worker holds their old configuration in its per-route cache, and the breaker probe route
    // closed (it may still be open from an earlier round).
    let warmed = Instant::now();
    let mut closed_streak = 0;
    while closed_streak < 8 {
        let deadline = bed.get("/probe-deadline/x").await?;
        let breaker = bed.get("/probe-breaker/x").await?;
        if deadline.status != 200 {
            return Err(format!(
                "probe-deadline answered {} before the change",
                deadline.status
            )
            .into());
        }
        closed_streak = if breaker.status == 200 {
            closed_streak + 1
        } else {
            0
        };
        if closed_streak == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if warmed.elapsed() > Duration::from_secs(10) {
            return Err("the breaker probe route did not close within 10 s".into());
        }
    }
    // Both kept warm up to the change, so that every cached entry is fresh when it comes: the
    // time to take effect is then the cache's whole refresh bound, not what is left of it.
    while warmed.elapsed() < p.before {
        bed.get("/probe-deadline/x").await?;
        bed.get("/probe-breaker/x").await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = load.elapsed();
    let update = bed
        .xds
        .roll_routes(&bed.envoy, &[route_config("main", routes(v))])
        .await?;
    let applied = Instant::now();
    let mut step = new_step(Kind::RouteMetadata, update, at);
    let tightened = v % 2 == 0;
    step.tightened = tightened;
    // The deadline: 400 ms requests answered 504 in ~250 ms (v2) or 200 (v1), on eight new
    // connections in a row (both workers, whatever the kernel's choice).
    let mut streak = 0;
    let mut streak_start = None;
    while applied.elapsed() < TAKE_EFFECT_BOUND {
        let probe_at = applied.elapsed();
        let r = bed.get("/probe-deadline/x?sleep_ms=400").await?;
        let new = if tightened {
            r.status == 504 && r.elapsed < Duration::from_millis(380)
        } else {
            r.status == 200
        };
        if new {
            streak_start.get_or_insert(probe_at);
            streak += 1;
            if streak == 8 {
                step.took_effect = streak_start;
                break;
            }
        } else {
            streak = 0;
            streak_start = None;
        }
    }
    if tightened {
        // The breaker: failures, one at a time, until it answers itself.
        for n in 0..=25u32 {
            let r = bed.get("/probe-breaker/x?status=503").await?;
            if rejected_by_breaker(&r) {
                step.breaker_opened_after = Some(n);
                break;
            }
        }
    }
    let remaining = p.during.saturating_sub(load.elapsed().saturating_sub(at));
    tokio::time::sleep(remaining).await;
    close_step(&mut step, load, p);
    Ok(step)
}

/// A listener change of `kind`, the state checks around it.
async fn listener_step(
    bed: &mut Bed,
    load: &Load,
    p: &Params,
    kind: Kind,
    version: &mut u32,
) -> Result<Step, Error> {
    // The state the change must keep: an open breaker, a drawn budget.
    if !bed.breaker_open().await? {
        bed.open_breaker().await?;
    }
    bed.draw_budget(5).await?;
    let balance = bed.budget_balance().await?;
    tokio::time::sleep(p.before).await;

    let old = *version;
    let mut next = bed.loaded.clone();
    match kind {
        Kind::PluginConfig => {
            *version += 1;
            next.config = plugin_config(*version);
        }
        Kind::ModuleUpgrade => {
            *version += 1;
            next.config = plugin_config(*version);
            let tag = format!("v{version}");
            next.module = upgraded_module(&envoy::wasm("mesh_filters")?, bed.modules.path(), &tag)?;
        }
        Kind::BadConfig => next.config = bad_plugin_config(),
        Kind::NewListener => {}
        Kind::NewVmId => {
            *version += 1;
            next.config = plugin_config(*version);
            next.vm_id = format!("mesh-v{version}");
        }
        Kind::RouteMetadata => return Err("not a listener change".into()),
    }
    let log_before = bed.envoy.log().len();
    let at = load.elapsed();
    let listeners = bed.listeners(&next, kind == Kind::NewListener);
    let update = bed.xds.roll_listeners(&bed.envoy, &listeners).await?;
    let mut step = new_step(kind, update, at);
    if update.applied() {
        if kind != Kind::BadConfig {
            bed.loaded = next;
        }
        if kind == Kind::NewListener {
            let second = tokio::task::block_in_place(|| bed.envoy.current_listeners())?
                .into_iter()
                .find(|(n, _)| n == "second")
                .map(|(_, a)| a)
                .ok_or("no listener `second` after the update")?;
            let r = client::get(second, "/load/second", &[("host", "rollout")]).await?;
            if r.status != 200 {
                step.lost
                    .push(format!("the new listener answered {}", r.status));
            }
            // Back to one listener for the next steps.
            let one = bed.listeners(&bed.loaded, false);
            bed.xds.roll_listeners(&bed.envoy, &one).await?;
        }
    }
    step.versions = Some((old, *version));
    // A refused update and a new listener leave the loaded chain as it is: nothing drains.
    if update.applied() && kind != Kind::NewListener {
        step.moved_after = wait_moved(bed, load, p, at + update.after())
            .await?
            .map(|t| t.saturating_sub(at));
    }
    let remaining = p.during.saturating_sub(load.elapsed().saturating_sub(at));
    tokio::time::sleep(remaining.max(Duration::from_millis(500))).await;
    bed.check_port()?;
    step.refusals = bed
        .envoy
        .log()
        .get(log_before..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("invalid configuration") || l.contains("rejected"))
        .map(str::to_owned)
        .collect();
    step.breaker_open_after = Some(bed.breaker_open().await?);
    step.budget = Some((balance, bed.budget_balance().await?));
    close_step(&mut step, load, p);
    Ok(step)
}

/// The old filter chain drains (`drain_time_s`), then Envoy closes what is left on it: waits
/// until no connection of the load is left there (each was opened again after `taken`, when
/// Envoy had the update), or until no chain drains any more. When every connection moved: the
/// time it was seen, on the load's clock.
async fn wait_moved(
    bed: &Bed,
    load: &Load,
    p: &Params,
    taken: Duration,
) -> Result<Option<Duration>, Error> {
    let limit = Duration::from_secs(u64::from(p.drain_time_s)) + dynamic::UPDATE_TIMEOUT;
    let waiting = Instant::now();
    loop {
        if load.all_opened_since(taken) {
            return Ok(Some(load.elapsed()));
        }
        let draining = tokio::task::block_in_place(|| {
            bed.envoy
                .stat("listener_manager.total_filter_chains_draining")
        })?;
        if draining == Some(0) {
            return Ok(None);
        }
        if waiting.elapsed() > limit {
            return Err(format!("the old filter chain still drains after {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Moves the spans the receiver holds into `into` (request number → configuration version).
fn absorb(receiver: &Receiver, into: &mut HashMap<u64, u32>) -> usize {
    let taken = receiver.take_spans();
    into.extend(spans_by_seq(&taken));
    taken.len()
}

/// Waits until the receiver's spans stop arriving (at most 5 s after the load), moving them
/// into `spans`: the load's spans by request number, with the version of the configuration
/// that served it.
async fn settle_spans(receiver: &Receiver, events: &[Event], spans: &mut HashMap<u64, u32>) {
    let answered = events.iter().filter(|e| e.ok()).count();
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let arrived = absorb(receiver, spans);
        if arrived == 0 && spans.len() >= answered {
            break;
        }
    }
}

/// `seq → configuration version` of the load's spans (`url.path` `/load/<seq>`, service
/// `rollout-v<version>`).
pub fn spans_by_seq(spans: &[ReceivedSpan]) -> HashMap<u64, u32> {
    spans
        .iter()
        .filter_map(|s| {
            let seq = s
                .attribute("url.path")?
                .strip_prefix("/load/")?
                .parse()
                .ok()?;
            let v = s.service_name.strip_prefix("rollout-v")?.parse().ok()?;
            Some((seq, v))
        })
        .collect()
}

fn attribute_spans(step: &mut Step, events: &[Event], spans: &HashMap<u64, u32>) {
    let end = step.during_end;
    let inside: Vec<&Event> = events
        .iter()
        .filter(|e| e.at >= step.at && e.at < end && e.ok())
        .collect();
    step.spans = (
        inside.len(),
        inside.iter().filter(|e| spans.contains_key(&e.seq)).count(),
    );
    step.spans_missing = inside
        .iter()
        .filter(|e| !spans.contains_key(&e.seq))
        .map(|e| e.at.saturating_sub(step.at))
        .take(20)
        .collect();
    let mut seen: std::collections::BTreeMap<u32, usize> = std::collections::BTreeMap::new();
    for e in &inside {
        if let Some(v) = spans.get(&e.seq) {
            *seen.entry(*v).or_default() += 1;
        }
    }
    step.versions_seen = seen.into_iter().collect();
    if let Some((old, _)) = step.versions {
        let served: Vec<&&Event> = inside
            .iter()
            .filter(|e| spans.get(&e.seq) == Some(&old))
            .collect();
        step.old_served = served.len();
        step.old_served_until = served.iter().map(|e| e.at.saturating_sub(step.at)).max();
    }
}

// -------------------------------------------------------------------------------- hot restart

/// What a hot restart under load did.
#[derive(Clone, Debug)]
pub struct RestartReport {
    pub params: Params,
    /// The load before the restart and from the new process's start to one second after the
    /// old one exited.
    pub before: Window,
    pub during: Window,
    /// Failed and non-200 requests of `during`, with their time from the new process's start.
    pub lost: Vec<String>,
    /// From the new process's start to its readiness, and to the old process's exit.
    pub ready_after: Duration,
    pub parent_exited_after: Option<Duration>,
    /// The `breaker` route: open in the old process; open in the new one?
    pub breaker_open_before: bool,
    pub breaker_open_after: bool,
    /// The `breaker` route's `state` gauge in the new process before any request reached its
    /// breaker (1 = open: what the old process last wrote), and after one.
    pub state_gauge_after: (Option<f64>, Option<f64>),
    /// `opened` counter of the `breaker` route in the old process and then in the new one.
    pub opened_counter: (Option<f64>, Option<f64>),
    /// The budget route's balance in the old process and in the new one.
    pub budget: (u64, u64),
    /// Load requests answered 200 and how many of their spans the receiver got; the first few
    /// without a span (time from the new process's start).
    pub spans: (usize, usize),
    pub spans_missing: Vec<Duration>,
    /// Wasm failures or panics in either process's log.
    pub vm_failures: Vec<String>,
}

/// A port that is free now, for a listener a hot restart must find again by its address.
fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Hot restart under load: an Envoy (hot restart on, a listener on a fixed port) with the
/// suite, the load on it, then the next epoch started on the same bootstrap (`--restart-epoch
/// 1`, same base id); the old process drains for `drain_time_s` and exits after
/// `parent_shutdown_time_s`.
pub async fn hot_restart(
    p: &Params,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RestartReport, Error> {
    let upstream = upstream::local("svc").await?;
    let receiver = otlp_receiver::local().await?;
    let module = envoy::wasm("mesh_filters")?;
    let filter = bootstrap::wasm_filter("mesh", &module, Plugin::json(&plugin_config(1)));
    let mut listener = bootstrap::listener("main", routes(1), vec![filter]);
    listener["address"]["socket_address"]["port_value"] = json!(free_port()?);
    let b = bootstrap::bootstrap(
        vec![listener],
        vec![
            bootstrap::cluster("svc", upstream.addr(), true),
            bootstrap::cluster("otlp", receiver.addr(), false),
        ],
    );
    let opts = Options {
        drain_time_s: Some(p.restart_drain_time_s),
        parent_shutdown_time_s: Some(p.parent_shutdown_time_s),
        hot_restart: Some(HotRestart::First),
        ..Options::workers(WORKERS)
    };
    let mut parent = tokio::task::block_in_place(|| Envoy::start_with(&b, &opts))?;
    let addr = parent.listener("main");
    let get = |path: &'static str| client::get(addr, path, &[("host", "rollout")]);

    // State in the old process: an open breaker, a drawn budget.
    let mut breaker_open_before = false;
    for _ in 0..20 {
        if rejected_by_breaker(&get("/breaker/x?status=503").await?) {
            breaker_open_before = true;
            break;
        }
    }
    for _ in 0..5 {
        get("/budget/x?fail_attempts=1").await?;
    }
    get("/budget/x").await?;
    let balance_before = parent
        .settled_value(
            "mesh_retry_budget_retries_available",
            &[("route", "budget")],
        )
        .await? as u64;
    let opened_before = parent
        .metrics()?
        .get("mesh_circuit_breaker_opened", &[("route", "breaker")]);

    let load = Load::start(addr, &p.load());
    tokio::time::sleep(p.before).await;
    let at = load.elapsed();
    let started = Instant::now();
    let child = tokio::task::block_in_place(|| parent.hot_restart())?;
    let ready_after = started.elapsed();
    progress(&format!("hot restart: epoch 1 ready after {ready_after:?}"));
    let mut parent_exited_after = None;
    let limit = Duration::from_secs(u64::from(p.parent_shutdown_time_s) + 30);
    while started.elapsed() < limit {
        if parent.exited()?.is_some() {
            parent_exited_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    progress(&format!(
        "hot restart: epoch 0 exited after {parent_exited_after:?}"
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = load.elapsed();

    let gauge = |envoy: &Envoy| -> Result<Option<f64>, Error> {
        Ok(envoy
            .metrics()?
            .get("mesh_circuit_breaker_state", &[("route", "breaker")]))
    };
    let gauge_first = tokio::task::block_in_place(|| gauge(&child))?;
    let breaker_open_after = rejected_by_breaker(&get("/breaker/x").await?);
    let gauge_then = {
        tokio::time::sleep(envoy::SETTLE).await;
        tokio::task::block_in_place(|| gauge(&child))?
    };
    let opened_after = child
        .metrics()?
        .get("mesh_circuit_breaker_opened", &[("route", "breaker")]);
    get("/budget/x").await?;
    let balance_after = child
        .settled_value(
            "mesh_retry_budget_retries_available",
            &[("route", "budget")],
        )
        .await? as u64;

    let events = load.stop().await;
    let mut spans = HashMap::new();
    settle_spans(&receiver, &events, &mut spans).await;
    let during = window(&events, at, end);
    let inside: Vec<&Event> = events
        .iter()
        .filter(|e| e.at >= at && e.at < end && e.ok())
        .collect();
    let mut vm = vm_failures(&parent.log());
    vm.extend(vm_failures(&child.log()));
    Ok(RestartReport {
        params: p.clone(),
        before: window(&events, at.saturating_sub(p.before), at),
        during,
        lost: events
            .iter()
            .filter(|e| e.at >= at && e.at < end && !e.ok())
            .map(|e| e.describe(at))
            .collect(),
        ready_after,
        parent_exited_after,
        breaker_open_before,
        breaker_open_after,
        state_gauge_after: (gauge_first, gauge_then),
        opened_counter: (opened_before, opened_after),
        budget: (balance_before, balance_after),
        spans: (
            inside.len(),
            inside.iter().filter(|e| spans.contains_key(&e.seq)).count(),
        ),
        spans_missing: inside
            .iter()
            .filter(|e| !spans.contains_key(&e.seq))
            .map(|e| e.at.saturating_sub(at))
            .take(20)
            .collect(),
        vm_failures: vm,
    })
}

// -------------------------------------------------------------------------------- failure policy

/// The `failure_policy` values tried, `None` being the field left unset.
pub const POLICIES: [Option<&str>; 5] = [
    None,
    Some("FAIL_CLOSED"),
    Some("FAIL_OPEN"),
    Some("FAIL_RELOAD"),
    Some("FAIL_IGNORE"),
];

/// The header that makes the test build trap (its `test_abort` section).
pub const ABORT_HEADER: &str = "x-mesh-test-abort";

/// What one request of [`failure_policy`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Answered through the suite (the upstream saw a new span of the client's trace).
    Filtered(u16),
    /// Answered by the upstream with the suite skipped (the client's own traceparent).
    Unfiltered(u16),
    /// Answered without reaching the upstream: status and Envoy's response details.
    Local(u16, String),
    /// No response.
    Failed(String),
}

/// What a trapped VM did under one `failure_policy`.
#[derive(Clone, Debug)]
pub struct PolicyReport {
    /// The value tried (`None`: unset).
    pub policy: Option<String>,
    /// Envoy's refusal, when it does not know the value.
    pub refused: Option<String>,
    /// The request that trapped the VM.
    pub trap: Option<Seen>,
    /// The requests after it, in order, with their time from the trap.
    pub after: Vec<(Duration, Seen)>,
    /// A second trap after the first requests (reload policies: is a reloaded VM trapped
    /// again?) and the requests after it.
    pub second_trap: Option<Seen>,
    pub after_second: Vec<(Duration, Seen)>,
    /// Envoy's wasm stats at the end (`wasm.*`), non-zero ones.
    pub stats: Vec<(String, u64)>,
    /// The first log lines about the failed VM.
    pub log: Vec<String>,
    /// The distinct `status details` of the answers Envoy made itself (its access log).
    pub local_details: Vec<String>,
    /// For a VM that serves again after the traps: whether the breaker opened before them is
    /// still open (shared data kept across the reload).
    pub breaker_survived: Option<bool>,
}

impl PolicyReport {
    /// How the requests after the first trap were served, counted: filtered, unfiltered, local
    /// replies, failures.
    pub fn tally(after: &[(Duration, Seen)]) -> (usize, usize, usize, usize) {
        let mut t = (0, 0, 0, 0);
        for (_, s) in after {
            match s {
                Seen::Filtered(_) => t.0 += 1,
                Seen::Unfiltered(_) => t.1 += 1,
                Seen::Local(..) => t.2 += 1,
                Seen::Failed(_) => t.3 += 1,
            }
        }
        t
    }
}

/// The test build of the suite with the `test_abort` stage, in its own target directory
/// (`target/test-abort`) so that it never replaces `mesh_filters.wasm`; built when missing or
/// stale (cargo decides; `make test-integration` builds it before the tests).
pub fn abort_module() -> Result<PathBuf, Error> {
    let root = envoy::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("test-abort");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "-p",
            "mesh-suite",
            "--features",
            "test-abort",
        ])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "building the test-abort suite failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(target.join("wasm32-wasip1/release/mesh_filters.wasm"))
}

/// One request through the suite: what it saw.
async fn seen(addr: SocketAddr, upstream: &Upstream, trap: bool) -> Seen {
    let mut headers = vec![("host", "rollout"), ("traceparent", TRACEPARENT)];
    if trap {
        headers.push((ABORT_HEADER, "1"));
    }
    let before = upstream.count();
    match tokio::time::timeout(
        Duration::from_secs(10),
        client::get(addr, "/load/policy", &headers),
    )
    .await
    {
        Err(_) => Seen::Failed("no answer within 10 s".to_owned()),
        Ok(Err(e)) => Seen::Failed(e.to_string()),
        Ok(Ok(r)) => {
            if upstream.count() == before {
                let details = r.text().chars().take(80).collect();
                return Seen::Local(r.status, details);
            }
            let forwarded = upstream
                .requests()
                .last()
                .and_then(|rec| rec.header("traceparent").map(str::to_owned));
            if forwarded.as_deref() == Some(TRACEPARENT) {
                Seen::Unfiltered(r.status)
            } else {
                Seen::Filtered(r.status)
            }
        }
    }
}

/// Requests every 100 ms for `n` requests, after a trap at `trap_at`.
async fn series(
    addr: SocketAddr,
    upstream: &Upstream,
    n: usize,
    trap_at: Instant,
) -> Vec<(Duration, Seen)> {
    let mut out = Vec::new();
    for _ in 0..n {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = trap_at.elapsed();
        out.push((t, seen(addr, upstream, false).await));
    }
    out
}

/// What a VM trap does under `policy`: an Envoy with one worker (one VM serves every request)
/// running the test build, three normal requests, a request that traps the VM, 20 requests
/// over the next 2 s, a second trap, 20 more.
pub async fn failure_policy(module: &Path, policy: Option<&str>) -> Result<PolicyReport, Error> {
    let upstream = upstream::local("svc").await?;
    // The suite as the load runs it, without the span export (there is no receiver here).
    let mut config = plugin_config(1);
    config["test_abort"] = json!({"header": ABORT_HEADER});
    config["trace_propagation"] = json!({});
    let mut plugin = Plugin::json(&config);
    if let Some(p) = policy {
        plugin = plugin.failure_policy(p);
    }
    let filter = bootstrap::wasm_filter("mesh", module, plugin);
    let listener = bootstrap::with_access_log(
        bootstrap::listener("main", routes(1), vec![filter]),
        &format!("{ACCESS_LOG}%RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n"),
    );
    let b = bootstrap::bootstrap(
        vec![listener],
        vec![bootstrap::cluster("svc", upstream.addr(), true)],
    );
    let mut report = PolicyReport {
        policy: policy.map(str::to_owned),
        refused: None,
        trap: None,
        after: Vec::new(),
        second_trap: None,
        after_second: Vec::new(),
        stats: Vec::new(),
        log: Vec::new(),
        local_details: Vec::new(),
        breaker_survived: None,
    };
    // The access log (Envoy's response details) flushed within a request's time.
    let opts = Options {
        file_flush_interval_ms: Some(50),
        ..Options::workers(1)
    };
    let envoy = match tokio::task::block_in_place(|| Envoy::start_with(&b, &opts)) {
        Ok(e) => e,
        Err(e) => {
            let text = e.to_string();
            report.refused = Some(
                text.lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("refused")
                    .chars()
                    .take(300)
                    .collect(),
            );
            return Ok(report);
        }
    };
    let addr = envoy.listener("main");
    for _ in 0..3 {
        let s = seen(addr, &upstream, false).await;
        if s != Seen::Filtered(200) {
            return Err(format!("before the trap a request saw {s:?}").into());
        }
    }
    // State in shared data before the trap: the `breaker` route open.
    let mut opened = false;
    for _ in 0..10 {
        let r = client::get(addr, "/breaker/x?status=503", &[("host", "rollout")]).await?;
        if rejected_by_breaker(&r) {
            opened = true;
            break;
        }
    }
    if !opened {
        return Err("the breaker route did not open before the trap".into());
    }
    let trap_at = Instant::now();
    report.trap = Some(seen(addr, &upstream, true).await);
    report.after = series(addr, &upstream, 20, trap_at).await;
    let second = Instant::now();
    report.second_trap = Some(seen(addr, &upstream, true).await);
    report.after_second = series(addr, &upstream, 20, second).await;
    if matches!(report.after_second.last(), Some((_, Seen::Filtered(_)))) {
        let r = client::get(addr, "/breaker/x", &[("host", "rollout")]).await?;
        report.breaker_survived = Some(rejected_by_breaker(&r));
    }
    report.stats = tokio::task::block_in_place(|| envoy.stats("^wasm\\."))?
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .collect();
    report.log = envoy
        .log()
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("[wasm]")
                && (l.contains("fail")
                    || l.contains("panicked")
                    || l.contains("trap")
                    || l.contains("reload"))
        })
        .take(8)
        .map(str::to_owned)
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = envoy.log();
    let mut details: Vec<String> = log
        .lines()
        .filter_map(|l| l.strip_prefix(ACCESS_LOG))
        // Envoy's own answers: not the upstream's, not our filters' (no details).
        .filter(|l| !l.ends_with("via_upstream") && !l.trim_end().ends_with(char::is_numeric))
        .map(str::to_owned)
        .collect();
    details.sort();
    details.dedup();
    report.local_details = details;
    Ok(report)
}

/// The prefix of the access-log lines of [`failure_policy`].
const ACCESS_LOG: &str = "access: ";

// -------------------------------------------------------------------------------- verdicts

/// Slack for the new filter chain's start-up: clients are asked to move about a second after
/// the new chain is warm, and need a moment to do so.
pub const MOVE_SLACK: Duration = Duration::from_secs(2);

impl Step {
    /// Whether the old filter chain had the time to move its connections before Envoy closed
    /// them: Envoy counts `--drain-time-s` from when it began processing the update, and a new
    /// module's compilation on the main thread eats into it (measured here by how long the
    /// update took).
    pub fn drain_sufficed(&self, drain_time_s: u32) -> bool {
        self.update.after() + MOVE_SLACK < Duration::from_secs(u64::from(drain_time_s))
    }
}

impl Report {
    /// What went wrong: everything the bounds forbid.
    pub fn failures(&self) -> Vec<String> {
        let p = &self.params;
        let mut out = Vec::new();
        if self.per_worker.len() != WORKERS as usize || self.per_worker.contains(&0) {
            out.push(format!(
                "a worker took no connection: {:?}",
                self.per_worker
            ));
        }
        if !self.vm_failures.is_empty() {
            out.push(format!(
                "VM failures in the Envoy log: {:?}",
                self.vm_failures
            ));
        }
        for s in &self.steps {
            let name = s.kind.describe();
            let want_applied = s.kind != Kind::BadConfig;
            if s.update.applied() != want_applied {
                out.push(format!("{name}: Envoy's verdict {:?}", s.update));
                continue;
            }
            let lost_spans = s.spans.0 - s.spans.1;
            if s.drain_sufficed(p.drain_time_s) {
                if s.during.lost() > 0 {
                    out.push(format!(
                        "{name}: {} requests lost: {:?}",
                        s.during.lost(),
                        s.lost
                    ));
                }
                if lost_spans > 0 {
                    out.push(format!(
                        "{name}: {lost_spans} spans lost at {:?}",
                        s.spans_missing
                    ));
                }
            } else {
                // The documented bound: what was in flight on the old chain when Envoy closed it
                // (one request per connection), and the spans of its last flush interval.
                if s.during.lost() > p.connections {
                    out.push(format!(
                        "{name}: {} requests lost, over the bound of {} (the drain time was eaten                          by a {:?} update)",
                        s.during.lost(),
                        p.connections,
                        s.update.after()
                    ));
                }
                if lost_spans > p.rate as usize {
                    out.push(format!(
                        "{name}: {lost_spans} spans lost, over one second of load"
                    ));
                }
            }
            // A bound for a stall, not for noise: the machine is shared.
            if s.during.p99_ms > 5000.0 {
                out.push(format!(
                    "{name}: p99 {:.0} ms during the change",
                    s.during.p99_ms
                ));
            }
            match s.kind {
                Kind::RouteMetadata => {
                    if s.took_effect.is_none() {
                        out.push(format!(
                            "{name}: the new deadline was not in force on every probe within {:?}",
                            TAKE_EFFECT_BOUND
                        ));
                    }
                    if s.tightened && s.breaker_opened_after != Some(3) {
                        out.push(format!(
                            "{name}: the breaker probe route opened after {:?} failures, not 3",
                            s.breaker_opened_after
                        ));
                    }
                }
                Kind::NewVmId => {
                    if s.breaker_open_after != Some(false) {
                        out.push(format!("{name}: the new VM's breaker is not closed"));
                    }
                    if s.budget.map(|b| b.1) != Some(BUDGET_FLOOR) {
                        out.push(format!(
                            "{name}: the new VM's budget {:?} is not full",
                            s.budget
                        ));
                    }
                }
                _ => {
                    if s.breaker_open_after != Some(true) {
                        out.push(format!("{name}: the open breaker did not stay open"));
                    }
                    if let Some((a, b)) = s.budget {
                        if a != b {
                            out.push(format!("{name}: the budget balance went {a} → {b}"));
                        }
                    }
                }
            }
            if let Some((old, new)) = s.versions {
                let seen: Vec<u32> = s.versions_seen.iter().map(|(v, _)| *v).collect();
                let expected: Vec<u32> = if old == new {
                    vec![old]
                } else {
                    vec![old, new]
                };
                let moved = seen.last() == Some(&new) && seen.iter().all(|v| expected.contains(v));
                if !moved {
                    out.push(format!(
                        "{name}: configurations serving {:?}, expected {expected:?}",
                        s.versions_seen
                    ));
                }
            }
            if s.kind == Kind::BadConfig {
                let lines: Vec<&String> =
                    s.refusals.iter().filter(|l| l.contains(REFUSAL)).collect();
                if lines.len() != 1 {
                    out.push(format!(
                        "{name}: {} refusal lines: {:?}",
                        lines.len(),
                        s.refusals
                    ));
                }
            }
        }
        if self.lost > 0 && out.is_empty() {
            // Losses outside every step's window (there should be none).
            let in_steps: usize = self.steps.iter().map(|s| s.during.lost()).sum();
            if self.lost > in_steps {
                out.push(format!(
                    "{} requests lost outside the changes",
                    self.lost - in_steps
                ));
            }
        }
        out
    }
}

impl RestartReport {
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.during.lost() > 0 {
            out.push(format!(
                "{} requests lost: {:?}",
                self.during.lost(),
                self.lost
            ));
        }
        if self.parent_exited_after.is_none() {
            out.push("the old process did not exit".to_owned());
        }
        if !self.breaker_open_before {
            out.push("the breaker did not open in the old process".to_owned());
        }
        if self.breaker_open_after {
            out.push(
                "the new process's breaker is open: shared data crossed processes?".to_owned(),
            );
        }
        if self.budget.1 != BUDGET_FLOOR {
            out.push(format!(
                "the new process's budget is {}, not full",
                self.budget.1
            ));
        }
        if self.spans.0 != self.spans.1 {
            out.push(format!(
                "{} spans lost at {:?}",
                self.spans.0 - self.spans.1,
                self.spans_missing
            ));
        }
        if !self.vm_failures.is_empty() {
            out.push(format!("VM failures: {:?}", self.vm_failures));
        }
        out
    }
}

impl PolicyReport {
    /// What this Envoy must do under each policy (as measured on 1.40: the unset default fails
    /// closed, `FAIL_IGNORE` is not a value of 1.40).
    pub fn failures(&self) -> Vec<String> {
        let policy = self.policy.as_deref();
        let mut out = Vec::new();
        if policy == Some("FAIL_IGNORE") {
            if self.refused.is_none() {
                out.push("FAIL_IGNORE was accepted".to_owned());
            }
            return out;
        }
        if let Some(why) = &self.refused {
            return vec![format!("{policy:?} refused: {why}")];
        }
        let all =
            |list: &[(Duration, Seen)], f: &dyn Fn(&Seen) -> bool| list.iter().all(|(_, s)| f(s));
        let local = |s: &Seen| matches!(s, Seen::Local(503, _));
        if !self.trap.as_ref().is_some_and(local) {
            out.push(format!(
                "{policy:?}: the trapping request saw {:?}",
                self.trap
            ));
        }
        let ok = match policy {
            None | Some("FAIL_CLOSED") => {
                all(&self.after, &local) && all(&self.after_second, &local)
            }
            Some("FAIL_OPEN") => {
                let skipped = |s: &Seen| *s == Seen::Unfiltered(200);
                all(&self.after, &skipped) && all(&self.after_second, &skipped)
            }
            Some("FAIL_RELOAD") => {
                let back = |list: &[(Duration, Seen)]| {
                    let first = list.iter().position(|(_, s)| *s == Seen::Filtered(200));
                    first.is_some_and(|i| {
                        list.get(..i).is_some_and(|l| all(l, &local))
                            && list
                                .get(i..)
                                .is_some_and(|l| all(l, &|s| *s == Seen::Filtered(200)))
                    })
                };
                back(&self.after) && back(&self.after_second) && self.breaker_survived == Some(true)
            }
            Some(_) => true,
        };
        if !ok {
            out.push(format!(
                "{policy:?}: after the trap {}; after the second {}; shared data {:?}",
                runs(&self.after),
                runs(&self.after_second),
                self.breaker_survived
            ));
        }
        out
    }
}

// -------------------------------------------------------------------------------- rendering

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

impl Report {
    /// The steps as the Markdown table of HARDENING.md, and the notes under it.
    pub fn render(&self) -> String {
        let p = &self.params;
        let mut out = format!(
            "Load: {} req/s over {} keep-alive HTTP/1.1 connections through the suite, Envoy \
             `--concurrency {WORKERS} --drain-time-s {}`; {} s before and at least {} s after each \
             change measured.\n\n",
            p.rate,
            p.connections,
            p.drain_time_s,
            p.before.as_secs_f64(),
            p.during.as_secs_f64()
        );
        out.push_str(
            "| change | Envoy | requests | lost | p99 before → during (ms) | max (ms) | clients \
             moved (ms) | old config until (ms) | open breaker | budget | spans |\n\
             |---|---|---:|---:|---|---:|---:|---:|---|---|---|\n",
        );
        for s in &self.steps {
            let verdict = match s.update {
                Update::Applied(d) => format!("taken in {} ms", ms(d)),
                Update::Rejected(d) => format!("refused in {} ms", ms(d)),
            };
            let breaker = match s.breaker_open_after {
                Some(true) => "stays open",
                Some(false) => "closed (new state)",
                None => "–",
            };
            let budget = s
                .budget
                .map(|(a, b)| {
                    if a == b {
                        format!("{a} kept")
                    } else {
                        format!("{a} → {b}")
                    }
                })
                .unwrap_or_else(|| "–".to_owned());
            let old = s
                .old_served_until
                .filter(|_| s.versions.is_some_and(|(a, b)| a != b))
                .map(ms)
                .unwrap_or_else(|| "–".to_owned());
            let moved = s.moved_after.map(ms).unwrap_or_else(|| "–".to_owned());
            out.push_str(&format!(
                "| {} | {verdict} | {} | {} | {:.1} → {:.1} | {:.1} | {moved} | {old} | {breaker} | {budget} | {}/{} |\n",
                s.kind.describe(),
                s.during.requests,
                s.during.lost(),
                s.before.p99_ms,
                s.during.p99_ms,
                s.during.max_ms,
                s.spans.1,
                s.spans.0,
            ));
        }
        out.push('\n');
        for s in &self.steps {
            if s.kind == Kind::RouteMetadata {
                let effect = s
                    .took_effect
                    .map(|d| format!("{} ms after Envoy took the table", ms(d)))
                    .unwrap_or_else(|| {
                        format!(
                            "not within {} s of Envoy taking the table",
                            TAKE_EFFECT_BOUND.as_secs()
                        )
                    });
                if s.tightened {
                    out.push_str(&format!(
                        "- Route metadata, tightened (deadline 2 s → 250 ms, breaker 20 → 3 \
                         failures): the new deadline was in force on every probe {effect}; the \
                         breaker probe route opened after {} failures.\n",
                        s.breaker_opened_after
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "more than 25".to_owned()),
                    ));
                } else {
                    out.push_str(&format!(
                        "- Route metadata, relaxed (deadline 250 ms → 2 s): the new deadline was \
                         in force on every probe {effect}.\n"
                    ));
                }
            }
            if !s.lost.is_empty() {
                out.push_str(&format!(
                    "- {}: lost {:?}\n",
                    s.kind.describe(),
                    s.lost.iter().take(5).collect::<Vec<_>>()
                ));
            }
            if !s.spans_missing.is_empty() {
                out.push_str(&format!(
                    "- {}: {} spans missing, of requests sent at {} ms after the change\n",
                    s.kind.describe(),
                    s.spans.0 - s.spans.1,
                    s.spans_missing
                        .iter()
                        .take(6)
                        .map(|d| ms(*d))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if s.kind == Kind::BadConfig {
                if let Some(line) = s.refusals.iter().find(|l| l.contains(REFUSAL)) {
                    let text = line.split("wasm log mesh mesh: ").nth(1).unwrap_or(line);
                    out.push_str(&format!("- Bad configuration, the refusal: `{text}`\n"));
                }
            }
        }
        out.push_str(&format!(
            "- Whole run: {} requests, {} lost; {} of {} spans received; {} connections opened, \
             {} requests resent (never written: the connection had just closed); connections \
             per worker {:?}; trace counters {:?}.\n",
            self.requests,
            self.lost,
            self.spans.1,
            self.spans.0,
            self.connections_opened,
            self.resent,
            self.per_worker,
            self.trace_counters
        ));
        out
    }
}

impl RestartReport {
    pub fn render(&self) -> String {
        let p = &self.params;
        format!(
            "Hot restart: {} req/s over {} connections; epoch 1 started with `--restart-epoch 1` \
             on the same base id, `--drain-time-s {} --parent-shutdown-time-s {}`.\n\n\
             | | value |\n|---|---|\n\
             | requests from the restart to 1 s after the old process exited | {} |\n\
             | lost (failed or not 200) | {} |\n\
             | p99 before → during (ms) | {:.1} → {:.1} (max {:.1}) |\n\
             | connections moved (`connection: close`) | {} |\n\
             | new process ready after | {} ms |\n\
             | old process exited after | {} |\n\
             | open breaker | {} in the old process, {} in the new one |\n\
             | breaker `state` gauge in the new process | {} before any request, {} after one |\n\
             | breaker `opened` counter | {} in the old process, {} in the new one |\n\
             | budget balance | {} in the old process, {} in the new one (floor {BUDGET_FLOOR}) |\n\
             | spans received / answered | {}/{} |\n",
            p.rate,
            p.connections,
            p.restart_drain_time_s,
            p.parent_shutdown_time_s,
            self.during.requests,
            self.during.lost(),
            self.before.p99_ms,
            self.during.p99_ms,
            self.during.max_ms,
            self.during.closed,
            ms(self.ready_after),
            self.parent_exited_after
                .map(|d| format!("{} ms", ms(d)))
                .unwrap_or_else(|| "not within the wait".to_owned()),
            if self.breaker_open_before {
                "open"
            } else {
                "closed"
            },
            if self.breaker_open_after {
                "open"
            } else {
                "closed"
            },
            gauge(self.state_gauge_after.0),
            gauge(self.state_gauge_after.1),
            gauge(self.opened_counter.0),
            gauge(self.opened_counter.1),
            self.budget.0,
            self.budget.1,
            self.spans.1,
            self.spans.0,
        )
    }
}

fn gauge(v: Option<f64>) -> String {
    v.map(|v| format!("{v}"))
        .unwrap_or_else(|| "absent".to_owned())
}

/// Runs of equal outcomes: `13 × local 503, then 7 × 200 through the suite`.
pub fn runs(after: &[(Duration, Seen)]) -> String {
    let name = |s: &Seen| match s {
        Seen::Filtered(c) => format!("{c} through the suite"),
        Seen::Unfiltered(c) => format!("{c} with the suite skipped"),
        Seen::Local(c, _) => format!("{c} from Envoy"),
        Seen::Failed(e) => format!("no response ({e})"),
    };
    let mut parts: Vec<(String, usize, Duration)> = Vec::new();
    for (t, s) in after {
        let n = name(s);
        match parts.last_mut() {
            Some((last, count, _)) if *last == n => *count += 1,
            _ => parts.push((n, 1, *t)),
        }
    }
    parts
        .iter()
        .map(|(n, c, t)| format!("{c} × {n} (from {} ms)", ms(*t)))
        .collect::<Vec<_>>()
        .join(", then ")
}

impl PolicyReport {
    /// One row of the failure-policy table.
    pub fn row(&self) -> String {
        let policy = self.policy.as_deref().unwrap_or("(unset)");
        if let Some(why) = &self.refused {
            return format!("| `{policy}` | refused by Envoy: {why} | | | | |\n");
        }
        let trap = self
            .trap
            .as_ref()
            .map(|s| runs(&[(Duration::ZERO, s.clone())]))
            .unwrap_or_default();
        let survived = match self.breaker_survived {
            Some(true) => "kept (open breaker still open)",
            Some(false) => "lost (breaker closed)",
            None => "–",
        };
        let stats: Vec<String> = self
            .stats
            .iter()
            .filter(|(n, _)| n.contains("reload"))
            .map(|(n, v)| format!("`{n}` {v}"))
            .collect();
        let details = if self.local_details.is_empty() {
            String::new()
        } else {
            format!(" (`{}`)", self.local_details.join("`, `"))
        };
        format!(
            "| `{policy}` | {}{details} | {} | {} | {survived} | {} |\n",
            trap.split(" (from").next().unwrap_or(&trap),
            runs(&self.after),
            runs(&self.after_second),
            if stats.is_empty() {
                "–".to_owned()
            } else {
                stats.join(", ")
            }
        )
    }

    /// The table header of [`PolicyReport::row`].
    pub const HEADER: &'static str = "| `failure_policy` | the trapping request | the 20 requests of the next 2 s | after a second trap | shared data | reload stats |\n|---|---|---|---|---|---|\n";
}
