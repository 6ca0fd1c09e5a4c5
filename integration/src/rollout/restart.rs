//! A hot restart under the load.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bootstrap::{self, Plugin};
use crate::client;
use crate::envoy::{self, Envoy, HotRestart, Options};
use crate::otlp_receiver;
use crate::upstream;
use crate::Error;

use super::*;

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
