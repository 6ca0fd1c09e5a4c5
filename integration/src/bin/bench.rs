//! `bench`: Envoy CPU time per request, throughput, latency, memory and start-up of every mesh
//! filter and the suite (wasm and the native module) and Envoy's native analogues, against bare
//! Envoy and a calibration filter.
//! Writes `BENCHMARKS.md` and `bench/chart.svg` at the workspace root. See
//! `mesh_integration::bench` for the set-up and the method; `make bench` builds what it needs
//! and runs it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use mesh_integration::bench::driver::{self, Driver};
use mesh_integration::bench::{
    self, Kind, Machine, Micro, Modules, Observed, Params, Results, Run, Sizes, Stage, Variant,
};
use mesh_integration::bootstrap::TlsFiles;
use mesh_integration::certs::{self, Pki};
use mesh_integration::client;
use mesh_integration::envoy::{self, Envoy, Options};
use mesh_integration::profile;

const USAGE: &str = "usage: bench

Measures Envoy CPU time per request (and requests/s, p50/p99 latency, RSS, start-up time) for
bare Envoy, a calibration filter, each mesh filter alone, the six chained as six filters, the
suite (mesh_filters.wasm, when built), the native module libmesh_filters.so (when built) with
the suite's configuration and with each stage alone, and Envoy's native RBAC, route timeout and
local rate limit, over HTTP/1.1 (wrk), HTTP/2 and unary gRPC (h2load), on a direct_response
route and a proxied one. Envoy runs on core 0, the load on core 1. Writes BENCHMARKS.md and
bench/chart.svg at the workspace root; progress goes to stderr.

Environment:
  BENCH_SECONDS         measured window of each run, seconds (default 2)
  BENCH_ROUNDS          rounds over all configurations (default 3)
  BENCH_WARMUP          load before each window, seconds (default 0.5)
  BENCH_H1_CONNECTIONS  wrk connections (default 16)
  BENCH_H2_CONNECTIONS  h2load connections (default 4)
  BENCH_H2_STREAMS      h2load concurrent streams per connection (default 8)
  BENCH_ONLY            comma-separated configurations (bare and calibration always run):
{ids}
  BENCH_PROFILE         0: skip the profile (\"Where each microsecond goes\"); it runs after
                        the configurations, with the PROFILE_* variables of `profile --help`
  ENVOY_BIN             the Envoy binary (else .venv/bin/envoy, else PATH)
  ENVOY_DYNAMIC_MODULES_SEARCH_PATH
                        the directory of libmesh_filters.so (default target/native, where
                        `make build` puts it); set for every Envoy started

Needs the filters built (`make build`: the .wasm files and, on x86_64 Linux, the .so), the
calibration filter and the profile's probe
(`cargo build --release --target wasm32-wasip1 -p mesh-bench-calibration`, the same with
`-p mesh-bench-probe`), wrk and h2load
(`scripts/ensure-tools.sh wrk:wrk h2load:nghttp2-client`); `make bench` does all of it, runs the criterion
micro-benchmarks first (their results go into BENCHMARKS.md) and retry-amplification after.";

type Error = Box<dyn std::error::Error + Send + Sync>;

/// [`USAGE`] with the configurations' ids, wrapped under their variable.
fn usage() -> String {
    let mut lines = vec![String::new()];
    for (i, kind) in Kind::ALL.iter().enumerate() {
        let sep = if i + 1 == Kind::ALL.len() { "" } else { "," };
        let word = format!("{}{sep}", kind.id());
        match lines.last_mut() {
            Some(line) if line.len() + word.len() < 70 => {
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(&word);
            }
            _ => lines.push(word),
        }
    }
    let ids: Vec<String> = lines
        .iter()
        .map(|l| format!("                        {l}"))
        .collect();
    USAGE.replace("{ids}", &ids.join("\n"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", usage());
        return ExitCode::SUCCESS;
    }
    if let Some(a) = args.first() {
        eprintln!("bench: unexpected argument {a:?}\n\n{}", usage());
        return ExitCode::from(2);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What every configuration's run needs.
struct Context {
    modules: Modules,
    server_tls: TlsFiles,
    client_tls: TlsFiles,
    upstream: std::net::SocketAddr,
    driver: Driver,
}

fn run() -> Result<(), Error> {
    let params = Params::from_env(|k| std::env::var(k).ok())?;
    let root = envoy::workspace_root();

    // Modules: the calibration filter and the six filters are required, the suite and the
    // native module optional.
    let mut modules = Modules::new();
    let calibration = envoy::wasm(bench::CALIBRATION_MODULE).map_err(|_| {
        format!(
            "{}.wasm is missing: run `cargo build --release --target wasm32-wasip1 -p \
             mesh-bench-calibration` (make bench does)",
            bench::CALIBRATION_MODULE
        )
    })?;
    modules.insert(bench::CALIBRATION_MODULE.to_owned(), calibration);
    for stage in Stage::ALL {
        modules.insert(stage.module(), envoy::wasm(&stage.module())?);
    }
    let mut notes = Vec::new();
    match envoy::wasm(bench::SUITE_MODULE) {
        Ok(path) => {
            modules.insert(bench::SUITE_MODULE.to_owned(), path);
        }
        Err(_) => {
            let note = format!(
                "{}.wasm was not found (build it with `make build`): the suite was not measured.",
                bench::SUITE_MODULE
            );
            eprintln!("bench: {note}");
            notes.push(note);
        }
    }
    // The native module: Envoy finds it in ENVOY_DYNAMIC_MODULES_SEARCH_PATH, set here (before
    // any thread exists) for every Envoy this program starts.
    let native = bench::native_module_path();
    if native.is_file() {
        if let Some(dir) = native.parent() {
            std::env::set_var(bench::NATIVE_SEARCH_PATH, dir);
        }
        modules.insert(bench::NATIVE_MODULE.to_owned(), native);
    } else {
        let note = format!(
            "{} was not found (build it with `make build`, on x86_64 Linux): the native module \
             was not measured.",
            native.display()
        );
        eprintln!("bench: {note}");
        notes.push(note);
    }
    let sizes: Sizes = modules
        .iter()
        .filter_map(|(name, path)| Some((name.clone(), std::fs::metadata(path).ok()?.len())))
        .collect();
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| *k != Kind::Suite || modules.contains_key(bench::SUITE_MODULE))
        .filter(|k| !k.is_native_module() || modules.contains_key(bench::NATIVE_MODULE))
        .filter(|k| match &params.only {
            Some(only) => {
                matches!(k, Kind::Bare | Kind::Calibration) || only.iter().any(|id| id == k.id())
            }
            None => true,
        })
        .collect();

    let wrk = driver::tool_version("wrk", &["-v"])
        .ok_or("wrk is missing: run scripts/ensure-tools.sh wrk:wrk h2load:nghttp2-client (make bench does)")?;
    let h2load = driver::tool_version("h2load", &["--version"])
        .ok_or("h2load is missing: run scripts/ensure-tools.sh wrk:wrk h2load:nghttp2-client (make bench does)")?;

    // Pinning, before any thread exists: this process (the upstream, the load generators' parent)
    // on core 1, every Envoy started through a wrapper on core 0.
    let scratch = std::env::temp_dir().join(format!("mesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let placement = driver::pin(&scratch)?;
    if let Some(note) = &placement.note {
        eprintln!("bench: {note}");
        notes.push(note.clone());
    }
    let (pinned, cores, real_envoy) = (placement.pinned, placement.cores, placement.real_envoy);

    let machine = Machine {
        cpu_model: driver::cpu_model(),
        cores: format!("{cores} (available to this process)"),
        kernel: driver::command_output("uname", &["-srm"]).unwrap_or_else(|| "?".to_owned()),
        envoy: driver::command_output(&real_envoy.display().to_string(), &["--version"])
            .map(|v| bench::envoy_version(&v))
            .unwrap_or_else(|| "?".to_owned()),
        wrk,
        h2load,
        date: driver::command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        pinned,
    };

    // Certificates: Envoy's server certificate and the client SVID.
    let pki = Pki::new("bench")?;
    let client_tls = pki.client_files("bench-client", &[bench::CLIENT_ID])?;

    let upstream = driver::start_upstream()?;
    let ctx = Context {
        modules,
        server_tls: pki.envoy.clone(),
        client_tls,
        upstream,
        driver: Driver {
            seconds: params.seconds,
            warmup: params.warmup,
            h1_connections: params.h1_connections,
            h2_connections: params.h2_connections,
            h2_streams: params.h2_streams,
            pinned,
            ticks_per_second: driver::ticks_per_second(),
            scratch: scratch.clone(),
        },
    };

    let started = Instant::now();
    let mut results = Results {
        kinds: kinds.clone(),
        rounds: Vec::new(),
    };
    for round in 1..=params.rounds {
        let mut runs = std::collections::BTreeMap::new();
        for &kind in &kinds {
            eprintln!(
                "bench: round {round}/{} {} ({:.0} s elapsed)",
                params.rounds,
                kind.label(),
                started.elapsed().as_secs_f64()
            );
            let run = run_configuration(&ctx, kind);
            if let Err(e) = &run {
                eprintln!("bench:   failed: {e}");
            }
            runs.insert(kind, run);
        }
        results.rounds.push(runs);
    }

    let section = run_profile(&ctx);
    let micro = read_micro(&root);
    let command = reproduce(&params);
    let md = bench::render_markdown(
        &params, &machine, &results, &sizes, &micro, &notes, &command, &section,
    );
    let svg = bench::render_svg(&results);
    std::fs::create_dir_all(root.join("bench"))?;
    std::fs::write(root.join("bench/chart.svg"), svg)?;
    std::fs::write(root.join("BENCHMARKS.md"), &md)?;
    let _ = std::fs::remove_dir_all(&scratch);

    for c in bench::checks(&results, &sizes, &micro) {
        println!("{} {}: {}", c.word(), c.target, c.measured);
    }
    println!(
        "bench: wrote {} and {} ({:.0} s)",
        root.join("BENCHMARKS.md").display(),
        root.join("bench/chart.svg").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One configuration in one round: fresh Envoys, the functional check, the five variants.
fn run_configuration(ctx: &Context, kind: Kind) -> Result<Run, String> {
    let bootstrap = bench::measured_bootstrap(kind, &ctx.modules, &ctx.server_tls, ctx.upstream)?;
    let t0 = Instant::now();
    let measured =
        Envoy::start_with(&bootstrap, &Options::default()).map_err(driver::short_error)?;
    let startup_ms = t0.elapsed().as_secs_f64() * 1e3;
    let pid = measured.pid();
    let client = Envoy::start_with(
        &bench::client_bootstrap(
            measured.listener(bench::STAT_PREFIX),
            &ctx.client_tls,
            certs::SERVER_NAME,
        ),
        &Options::default(),
    )
    .map_err(|e| format!("client Envoy: {}", driver::short_error(e)))?;
    driver::to_load_core(ctx.driver.pinned, client.pid())?;
    let entry = client.listener("client");

    // The functional check: every filter visibly does its work.
    let get = |path: &str| {
        client::blocking(client::get(entry, path, &bench::LOAD_HEADERS))
            .map_err(|e| format!("GET {path}: {e}"))
    };
    let fail = get("/proxied/fail")?;
    let echo = get("/proxied/echo")?;
    let direct = get("/direct")?;
    if fail.status != 503 || echo.status != 200 || direct.status != 200 {
        return Err(format!(
            "check failed: /proxied/fail answered {} (not the upstream's 503), /proxied/echo {}, \
             /direct {} ({})",
            fail.status,
            echo.status,
            direct.status,
            direct.text().trim()
        ));
    }
    let seen = Observed {
        upstream: bench::echoed_headers(&echo)?,
        direct,
        metrics: measured.metrics().map_err(|e| e.to_string())?,
    };
    bench::verify(kind, &seen)?;

    let mut samples = std::collections::BTreeMap::new();
    for v in Variant::ALL {
        let url = format!("http://{entry}{}", v.path());
        let sample = ctx.driver.measure(
            &measured,
            bench::STAT_PREFIX,
            &url,
            v.protocol,
            &bench::LOAD_HEADERS,
        );
        match &sample {
            Ok(s) => eprintln!(
                "bench:   {:<26} {:>8.0} req/s  {:>6.1} µs/req  Envoy {:>3.0} %  p50 {:.2} ms  p99 {:.2} ms{}",
                v.label(),
                s.rps(),
                s.cpu_per_request().unwrap_or(f64::NAN),
                s.utilisation() * 100.0,
                s.p50_ms,
                s.p99_ms,
                if s.errors > 0 {
                    format!("  {} errors", s.errors)
                } else {
                    String::new()
                }
            ),
            Err(e) => eprintln!("bench:   {:<26} failed: {e}", v.label()),
        }
        samples.insert(v, sample);
    }
    let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| bench::vm_rss_kib(&s))
        .unwrap_or(0);
    drop(client);
    drop(measured);
    Ok(Run {
        startup_ms,
        rss_kib,
        samples,
    })
}

/// The profile ("Where each microsecond goes"), unless `BENCH_PROFILE=0`: its section of
/// BENCHMARKS.md, or a line saying why there is none.
fn run_profile(ctx: &Context) -> String {
    let heading = "## Where each microsecond goes\n\n";
    if std::env::var("BENCH_PROFILE").is_ok_and(|v| v.trim() == "0") {
        return format!(
            "{heading}Not measured in this run (`BENCH_PROFILE=0`); `cargo run --release -p \
             mesh-integration --bin profile -- --write` measures it alone.\n"
        );
    }
    let outcome = profile::Params::from_env(|k| std::env::var(k).ok()).and_then(|params| {
        let mut modules = profile::run::modules()?;
        modules.extend(ctx.modules.clone());
        let setup = profile::run::Setup {
            driver: ctx.driver.clone(),
            modules,
            server_tls: ctx.server_tls.clone(),
            client_tls: ctx.client_tls.clone(),
            upstream: ctx.upstream,
        };
        let p = profile::run::run(&setup, &params, &|line| eprintln!("bench: {line}"))?;
        let command = format!(
            "{}cargo run --release -p mesh-integration --bin profile -- --write",
            params.env_prefix()
        );
        Ok(profile::report::render(&p, &command))
    });
    match outcome {
        Ok(section) => section,
        Err(e) => {
            eprintln!("bench: the profile failed: {e}");
            format!("{heading}The profile failed in this run: {e}\n")
        }
    }
}

/// The criterion results of `bench/micro` that exist.
fn read_micro(root: &Path) -> Micro {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    bench::MICRO_BENCHMARKS
        .iter()
        .filter_map(|(id, _)| {
            let json = std::fs::read_to_string(
                target.join("criterion").join(id).join("new/estimates.json"),
            )
            .ok()?;
            let (ns, _, _) = bench::criterion_estimate(&json)?;
            Some(((*id).to_owned(), ns))
        })
        .collect()
}

fn reproduce(p: &Params) -> String {
    let d = Params::default();
    let mut env = Vec::new();
    if p.seconds != d.seconds {
        env.push(format!("BENCH_SECONDS={}", p.seconds));
    }
    if p.rounds != d.rounds {
        env.push(format!("BENCH_ROUNDS={}", p.rounds));
    }
    if p.warmup != d.warmup {
        env.push(format!("BENCH_WARMUP={}", p.warmup));
    }
    if p.h1_connections != d.h1_connections {
        env.push(format!("BENCH_H1_CONNECTIONS={}", p.h1_connections));
    }
    if p.h2_connections != d.h2_connections {
        env.push(format!("BENCH_H2_CONNECTIONS={}", p.h2_connections));
    }
    if p.h2_streams != d.h2_streams {
        env.push(format!("BENCH_H2_STREAMS={}", p.h2_streams));
    }
    if let Some(only) = &p.only {
        env.push(format!("BENCH_ONLY={}", only.join(",")));
    }
    env.push("make bench".to_owned());
    format!(
        "{}    # defaults: BENCH_SECONDS={} BENCH_ROUNDS={}",
        env.join(" "),
        d.seconds,
        d.rounds
    )
}
