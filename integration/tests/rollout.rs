//! Rollouts and restarts under load lose nothing (the short version; `make rollout` runs the
//! long one and prints the figures of HARDENING.md).
//!
//! A steady load through the suite on an Envoy with two workers that reads its listeners and
//! route tables from watched files, while a new route table, a new plugin configuration, a new
//! module, a bad configuration, a new listener and a new `vm_id` are rolled in; then a hot
//! restart under the same load; then what a trapped VM does under each `failure_policy`, with
//! the test build of the suite (feature `test-abort`). Each scenario's report lists what broke
//! the bounds ([`mesh_integration::rollout`] holds them), and must list nothing.

#![allow(clippy::expect_used, clippy::panic)]

use mesh_integration::fixture;
use mesh_integration::rollout::{self, Params, PolicyReport};
use serde_json::json;

/// The scenarios measure latency and count losses: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_plugin_module_and_listener_rollouts_under_load_lose_nothing_and_keep_state() {
    let _one = SERIAL.lock().await;
    let p = Params::short();
    let report = rollout::rollouts(&p, &|line| eprintln!("{line}"))
        .await
        .expect("the rollouts ran");
    eprintln!("{}", report.render());
    let failures = report.failures();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_restart_under_load_loses_nothing_and_starts_with_closed_breakers_and_full_budgets() {
    let _one = SERIAL.lock().await;
    let p = Params::short();
    let report = rollout::hot_restart(&p, &|line| eprintln!("{line}"))
        .await
        .expect("the hot restart ran");
    eprintln!("{}", report.render());
    let failures = report.failures();
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapped_vm_fails_closed_open_or_reloads_as_the_failure_policy_says() {
    let _one = SERIAL.lock().await;
    let module = rollout::abort_module().expect("the test build of the suite");
    let reports = futures_join(rollout::POLICIES.map(|p| {
        let module = module.clone();
        tokio::spawn(async move { rollout::failure_policy(&module, p).await })
    }))
    .await;
    let mut table = PolicyReport::HEADER.to_owned();
    let mut failures = Vec::new();
    for r in &reports {
        table.push_str(&r.row());
        failures.extend(r.failures());
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Every task's report, in order.
async fn futures_join<const N: usize>(
    tasks: [tokio::task::JoinHandle<Result<PolicyReport, mesh_integration::Error>>; N],
) -> Vec<PolicyReport> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("the task ran").expect("the policy ran"));
    }
    out
}

#[test]
fn the_default_build_has_no_test_abort_section() {
    let line = fixture::refusal("mesh", &json!({"test_abort": {}})).expect("refused");
    assert!(
        line.contains("`test_abort`") && line.contains("unknown section"),
        "{line}"
    );
}
