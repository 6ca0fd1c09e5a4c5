//! What a trapped VM does to requests under each of Envoy's `failure_policy` values.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bootstrap::{self, Plugin};
use crate::client;
use crate::envoy::{self, Envoy, Options};
use crate::upstream::{self, Upstream};
use crate::Error;

use super::*;

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
