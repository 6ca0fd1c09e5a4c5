//! `soak`: a steady load through the suite for 10 minutes (by default) over more route names than
//! the per-route cache holds, failures injected on some routes, Envoy's memory sampled. Prints a
//! Markdown report and exits non-zero when errors beyond the injected ones appear, memory grows
//! past the tolerance after warm-up, or a wasm VM fails. See `mesh_integration::soak`.

use std::process::ExitCode;

use mesh_integration::soak::{self, Params};

const USAGE: &str = "usage: soak

Environment (defaults in brackets):
  SOAK_SECONDS        whole run, seconds [600]
  SOAK_WARMUP         warm-up, seconds; memory is compared with its end [60]
  SOAK_SAMPLE         sampling period, seconds [10]
  SOAK_ROUTES         routes on the measured Envoy [2000]
  SOAK_RATE           requests per second [500]
  SOAK_CONNECTIONS    keep-alive connections of the load [8]
  SOAK_CONCURRENCY    worker threads of the measured Envoy [2]
  SOAK_FAULTY_EVERY   every n-th route fails half its requests [10]
  SOAK_RSS_TOLERANCE  largest RSS growth after warm-up, fraction [0.05]
  ENVOY_BIN           the Envoy binary (else .venv/bin/envoy, else PATH)

Needs mesh_filters.wasm (`make build`); `make soak` builds it and runs this.";

fn main() -> ExitCode {
    mesh_integration::program::main(
        "soak",
        USAGE,
        || Params::from_env(|k| std::env::var(k).ok()),
        |params| async move {
            let report = soak::soak(&params, &|line| eprintln!("{line}")).await?;
            println!("{}", report.render());
            Ok(report.failures())
        },
    )
}
