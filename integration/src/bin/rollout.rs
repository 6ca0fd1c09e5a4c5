//! `rollout`: configuration rollouts and a hot restart under a steady load through the suite,
//! and what a trapped VM does under each `failure_policy`. Prints the Markdown tables of
//! HARDENING.md ("Rollouts and restarts") and exits non-zero when a request or a span was lost
//! beyond the documented bounds, state did not survive where it must, or a policy behaved
//! otherwise than measured. See `mesh_integration::rollout`.

use std::process::ExitCode;

use mesh_integration::rollout::{self, Kind, Params, PolicyReport};

const USAGE: &str = "usage: rollout

Environment (defaults in brackets):
  ROLLOUT_RATE         requests per second of the load [500]
  ROLLOUT_CONNECTIONS  keep-alive connections of the load [16]
  ROLLOUT_ROUNDS       every rollout kind this many times [3]
  ROLLOUT_DRAIN_TIME   --drain-time-s of the rolled Envoy, seconds [10]
  ENVOY_BIN            the Envoy binary (else .venv/bin/envoy, else PATH)

Needs mesh_filters.wasm (`make build`) and builds the test variant of the suite (feature
test-abort) into target/test-abort; `make rollout` does both and runs this.";

fn main() -> ExitCode {
    mesh_integration::program::main(
        "rollout",
        USAGE,
        || Params::from_env(|k| std::env::var(k).ok()),
        |params| async move { run(&params).await },
    )
}

async fn run(params: &Params) -> Result<Vec<String>, mesh_integration::Error> {
    let progress = |line: &str| eprintln!("{line}");
    let mut failures = Vec::new();

    let report = rollout::rollouts(params, &progress).await?;
    println!("### Rollouts\n\n{}", report.render());
    failures.extend(report.failures());

    // The same module upgrade with a drain time shorter than the new module's compilation:
    // what is lost then, within its bound.
    let short = Params {
        drain_time_s: 2,
        rounds: 1,
        kinds: vec![Kind::ModuleUpgrade],
        ..params.clone()
    };
    let report = rollout::rollouts(&short, &progress).await?;
    println!(
        "### A module upgrade with `--drain-time-s 2`\n\n{}",
        report.render()
    );
    failures.extend(report.failures());

    let restart = rollout::hot_restart(params, &progress).await?;
    println!("### Hot restart\n\n{}", restart.render());
    failures.extend(
        restart
            .failures()
            .into_iter()
            .map(|f| format!("hot restart: {f}")),
    );

    let module = rollout::abort_module()?;
    let mut table = PolicyReport::HEADER.to_owned();
    for policy in rollout::POLICIES {
        let r = rollout::failure_policy(&module, policy).await?;
        progress(&format!("failure policy {policy:?}: done"));
        table.push_str(&r.row());
        failures.extend(r.failures());
    }
    println!("### A trapped VM under each failure_policy\n\n{table}");
    Ok(failures)
}
