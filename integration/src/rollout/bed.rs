//! What the rollouts run on: the suite's configurations and routes, the module upgrade, and
//! the upstream, receiver, resource files and Envoy with the state checks around a change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::bootstrap::{self, route, with_metadata, Plugin};
use crate::client;
use crate::dynamic::{route_config, Xds};
use crate::envoy::{self, Envoy, Options};
use crate::otlp_receiver::{self, Receiver};
use crate::tempdir;
use crate::upstream::{self, Upstream};
use crate::Error;

use super::*;

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
pub(super) struct Loaded {
    pub(super) module: PathBuf,
    pub(super) config: Value,
    pub(super) vm_id: String,
}

impl Loaded {
    pub(super) fn filter(&self) -> Value {
        bootstrap::wasm_filter(
            "mesh",
            &self.module,
            Plugin::json(&self.config).in_vm(&self.vm_id),
        )
    }
}

/// The upstream, the receiver, the resource files and the Envoy of [`rollouts`].
pub(super) struct Bed {
    pub(super) upstream: Upstream,
    pub(super) receiver: Receiver,
    pub(super) xds: Xds,
    pub(super) envoy: Envoy,
    pub(super) loaded: Loaded,
    pub(super) port: SocketAddr,
    pub(super) modules: tempdir::Dir,
}

impl Bed {
    pub(super) async fn start(p: &Params) -> Result<Bed, Error> {
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

    pub(super) fn listeners(&self, loaded: &Loaded, second: bool) -> Vec<Value> {
        let mut out = vec![self.xds.listener("main", "main", vec![loaded.filter()])];
        if second {
            out.push(self.xds.listener("second", "main", vec![loaded.filter()]));
        }
        out
    }

    /// The main listener's address now; an error when an update moved it.
    pub(super) fn check_port(&self) -> Result<(), Error> {
        let now = tokio::task::block_in_place(|| self.envoy.current_listeners())?;
        match now.iter().find(|(n, _)| n == "main") {
            Some((_, a)) if *a == self.port => Ok(()),
            other => Err(format!("the main listener moved: {other:?}, was {}", self.port).into()),
        }
    }

    pub(super) async fn get(&self, path: &str) -> Result<client::Response, Error> {
        client::get(self.port, path, &[("host", "rollout")]).await
    }

    /// Opens the `breaker` route's breaker (failures until it rejects) unless it is open.
    pub(super) async fn open_breaker(&self) -> Result<(), Error> {
        for _ in 0..20 {
            let r = self.get("/breaker/x?status=503").await?;
            if rejected_by_breaker(&r) {
                return Ok(());
            }
        }
        Err("the breaker route did not open after 20 failures".into())
    }

    /// Whether the `breaker` route's breaker answers a healthy request itself (open).
    pub(super) async fn breaker_open(&self) -> Result<bool, Error> {
        Ok(rejected_by_breaker(&self.get("/breaker/x").await?))
    }

    /// Draws `n` retries from the budget route (each request's first attempt fails, its retry
    /// succeeds).
    pub(super) async fn draw_budget(&self, n: u32) -> Result<(), Error> {
        for _ in 0..n {
            let r = self.get("/budget/x?fail_attempts=1").await?;
            if r.status != 200 {
                return Err(format!("a budget draw was answered {}", r.status).into());
            }
        }
        Ok(())
    }

    /// The budget route's balance as its gauge shows it after one healthy request.
    pub(super) async fn budget_balance(&self) -> Result<u64, Error> {
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

pub(super) fn rejected_by_breaker(r: &client::Response) -> bool {
    r.status == 503 && r.header("x-mesh-rejected-by") == Some("mesh.circuit_breaker")
}
