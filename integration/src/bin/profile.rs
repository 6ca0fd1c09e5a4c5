//! `profile`: what each kind of host call costs in the real Envoy and how the suite's overhead is
//! made of them (the "Where each microsecond goes" section of BENCHMARKS.md). `make bench` runs
//! the same profile and writes the section with the rest; this program runs it alone. See
//! `mesh_integration::profile` for the method.

use std::process::ExitCode;

use mesh_integration::bench::driver::{self, Driver};
use mesh_integration::bench::{self, Params as BenchParams};
use mesh_integration::certs::Pki;
use mesh_integration::envoy;
use mesh_integration::profile::{self, report, run, Params};

const USAGE: &str = "usage: profile [--write]

Measures, in one real Envoy (--concurrency 1 on core 0, the load on core 1, the bench's mTLS
set-up), what each kind of host call the suite makes costs (the probe filter at n = 0 and n = k:
the slope), the fixed cost of a wasm HttpContext, the suite's own code per request (suite_in_vm),
the suite's host calls per request by kind and stage, and the suite's overhead predicted from
those parts against the measured one. Prints the section as markdown; --write also replaces the
\"Where each microsecond goes\" section of BENCHMARKS.md (or appends it). Progress goes to stderr.

Environment:
  PROFILE_SECONDS   measured window of each run, seconds (default 1)
  PROFILE_ROUNDS    rounds (default 3)
  PROFILE_WARMUP    load before each window, seconds (default 0.3)
  PROFILE_VARIANTS  comma-separated: h1-direct, h2-direct, h1-proxied, h2-proxied
                    (default h1-direct,h2-direct,h1-proxied)
  PROFILE_ONLY      comma-separated probe ids (the references always run)
  BENCH_H1_CONNECTIONS, BENCH_H2_CONNECTIONS, BENCH_H2_STREAMS   the load, as for bench
  ENVOY_BIN         the Envoy binary (else .venv/bin/envoy, else PATH)

Needs mesh_filters.wasm (`make build`), the calibration filter and the probe
(`cargo build --release --target wasm32-wasip1 -p mesh-bench-calibration -p mesh-bench-probe`,
each with its own -p run so features stay apart), wrk and h2load.";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let write = args.iter().any(|a| a == "--write");
    if let Some(a) = args.iter().find(|a| *a != "--write") {
        eprintln!("profile: unexpected argument {a:?}\n\n{USAGE}");
        return ExitCode::from(2);
    }
    match main_run(write) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("profile: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main_run(write: bool) -> Result<(), Error> {
    let params = Params::from_env(|k| std::env::var(k).ok())?;
    let load = BenchParams::from_env(|k| std::env::var(k).ok())?;
    let modules = run::modules()?;
    for (tool, args) in [("wrk", ["-v"]), ("h2load", ["--version"])] {
        if driver::tool_version(tool, &args).is_none() {
            return Err(format!(
                "{tool} is missing: run scripts/ensure-tools.sh wrk:wrk h2load:nghttp2-client"
            )
            .into());
        }
    }
    let scratch = std::env::temp_dir().join(format!("mesh-profile-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    // Before any thread exists.
    let placement = driver::pin(&scratch)?;
    if let Some(note) = &placement.note {
        eprintln!("profile: {note}");
    }
    let pki = Pki::new("profile")?;
    let setup = run::Setup {
        driver: Driver {
            seconds: params.seconds,
            warmup: params.warmup,
            h1_connections: load.h1_connections,
            h2_connections: load.h2_connections,
            h2_streams: load.h2_streams,
            pinned: placement.pinned,
            ticks_per_second: driver::ticks_per_second(),
            scratch: scratch.clone(),
        },
        modules,
        server_tls: pki.envoy.clone(),
        client_tls: pki.client_files("bench-client", &[bench::CLIENT_ID])?,
        upstream: driver::start_upstream()?,
    };
    let result = run::run(&setup, &params, &|line| eprintln!("{line}"));
    let _ = std::fs::remove_dir_all(&scratch);
    let profile = result?;
    let command = format!(
        "{}cargo run --release -p mesh-integration --bin profile -- --write",
        params.env_prefix()
    );
    let section = report::render(&profile, &command);
    println!("{section}");
    if write {
        let path = envoy::workspace_root().join("BENCHMARKS.md");
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, profile::replace_section(&doc, &section))?;
        eprintln!("profile: wrote its section of {}", path.display());
    }
    Ok(())
}
