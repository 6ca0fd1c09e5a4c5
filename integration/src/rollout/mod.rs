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
//!
//! A module per concern, everything public re-exported here: [`load`](mod@load) (the load and its
//! events), [`window`](mod@window) (counts and quantiles of a time window), [`bed`](mod@bed) (the
//! configurations, routes and Envoy the changes are made to, and the state checks), [`steps`]
//! (each kind of change), [`restart`](mod@restart), [`policy`](mod@policy), and [`report`]
//! (the bounds each run is held to, and its Markdown).

// Test tooling: JSON values built here have the shape indexed.
#![allow(clippy::indexing_slicing)]

pub mod bed;
pub mod load;
pub mod policy;
pub mod report;
pub mod restart;
pub mod steps;
pub mod window;

pub use bed::*;
pub use load::*;
pub use policy::*;
pub use report::*;
pub use restart::*;
pub use steps::*;
pub use window::*;

use std::time::Duration;

/// The sampled trace context every load request carries (each hop makes a new span).
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// How soon after Envoy took a new route table its thresholds must be in force on every worker.
pub const TAKE_EFFECT_BOUND: Duration = Duration::from_secs(5);

/// Worker threads of the Envoy under test.
pub const WORKERS: u32 = 2;

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
