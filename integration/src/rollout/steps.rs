//! The rollouts themselves: each kind of change under the load, and the spans matched to it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::client;
use crate::dynamic::{self, route_config, Update};
use crate::envoy;
use crate::otlp_receiver::{ReceivedSpan, Receiver};
use crate::Error;

use super::*;

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
pub(super) async fn settle_spans(
    receiver: &Receiver,
    events: &[Event],
    spans: &mut HashMap<u64, u32>,
) {
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
