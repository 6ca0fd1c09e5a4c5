//! `bench`: Envoy CPU time per request, throughput, latency, memory and start-up of every mesh
//! filter, the suite and Envoy's native analogues, against bare Envoy and a calibration filter.
//! Writes `BENCHMARKS.md` and `bench/chart.svg` at the workspace root. See
//! `mesh_integration::bench` for the set-up and the method; `make bench` builds what it needs
//! and runs it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use mesh_integration::bench::{
    self, Kind, Machine, Micro, Modules, Observed, Params, Protocol, Results, Run, Sample, Sizes,
    Stage, Variant,
};
use mesh_integration::bootstrap::TlsFiles;
use mesh_integration::certs::{self, Pki};
use mesh_integration::envoy::{self, Envoy, Options};

const USAGE: &str = "usage: bench

Measures Envoy CPU time per request (and requests/s, p50/p99 latency, RSS, start-up time) for
bare Envoy, a calibration filter, each mesh filter alone, the five as five filters, the suite
(mesh_filters.wasm, when built) and Envoy's native RBAC and route timeout, over HTTP/1.1 (wrk)
and HTTP/2 (h2load), on a direct_response route and a proxied one. Envoy runs on core 0, the
load on core 1. Writes BENCHMARKS.md and bench/chart.svg at the workspace root; progress goes
to stderr.

Environment:
  BENCH_SECONDS         measured window of each run, seconds (default 2)
  BENCH_ROUNDS          rounds over all configurations (default 3)
  BENCH_WARMUP          load before each window, seconds (default 0.5)
  BENCH_H1_CONNECTIONS  wrk connections (default 16)
  BENCH_H2_CONNECTIONS  h2load connections (default 4)
  BENCH_H2_STREAMS      h2load concurrent streams per connection (default 8)
  BENCH_ONLY            comma-separated configurations (bare and calibration always run):
                        bare, calibration, spiffe_identity, circuit_breaker, deadline,
                        retry_budget, trace_propagation, five_filters, suite, native_rbac,
                        native_route_timeout
  ENVOY_BIN             the Envoy binary (else .venv/bin/envoy, else PATH)

Needs the filters built (`make build`), the calibration filter
(`cargo build --release --target wasm32-wasip1 -p mesh-bench-calibration`), wrk and h2load
(`scripts/ensure-tools.sh wrk:wrk h2load:nghttp2-client`); `make bench` does all of it, runs the criterion
micro-benchmarks first (their results go into BENCHMARKS.md) and retry-amplification after.";

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if let Some(a) = args.first() {
        eprintln!("bench: unexpected argument {a:?}\n\n{USAGE}");
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
    params: Params,
    modules: Modules,
    server_tls: TlsFiles,
    client_tls: TlsFiles,
    upstream: std::net::SocketAddr,
    pinned: bool,
    ticks_per_second: f64,
    scratch: PathBuf,
}

fn run() -> Result<(), Error> {
    let params = Params::from_env(|k| std::env::var(k).ok())?;
    let root = envoy::workspace_root();

    // Modules: the calibration filter and the five filters are required, the suite optional.
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
    let sizes: Sizes = modules
        .iter()
        .filter_map(|(name, path)| Some((name.clone(), std::fs::metadata(path).ok()?.len())))
        .collect();
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| *k != Kind::Suite || modules.contains_key(bench::SUITE_MODULE))
        .filter(|k| match &params.only {
            Some(only) => {
                matches!(k, Kind::Bare | Kind::Calibration) || only.iter().any(|id| id == k.id())
            }
            None => true,
        })
        .collect();

    let wrk = tool_version("wrk", &["-v"])
        .ok_or("wrk is missing: run scripts/ensure-tools.sh wrk:wrk h2load:nghttp2-client (make bench does)")?;
    let h2load = tool_version("h2load", &["--version"])
        .ok_or("h2load is missing: run scripts/ensure-tools.sh wrk:wrk h2load:nghttp2-client (make bench does)")?;

    // Pinning, before any thread exists: this process (the upstream, the load generators' parent)
    // on core 1, every Envoy started through a wrapper on core 0.
    let real_envoy = envoy::envoy_binary();
    let scratch = std::env::temp_dir().join(format!("mesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cores >= 2 && command_ok("taskset", &["-c", "0", "true"]);
    if pinned {
        if !command_ok(
            "taskset",
            &["-p", "-c", "1", &std::process::id().to_string()],
        ) {
            return Err("taskset could not pin this process to core 1".into());
        }
        let wrapper = scratch.join("envoy-core0");
        write_wrapper(&wrapper, &real_envoy)?;
        std::env::set_var("ENVOY_BIN", &wrapper);
    } else {
        let note =
            "Not pinned: fewer than 2 cores or no taskset; Envoy and the load share the CPUs.";
        eprintln!("bench: {note}");
        notes.push(note.to_owned());
    }

    let machine = Machine {
        cpu_model: cpu_model(),
        cores: format!("{cores} (available to this process)"),
        kernel: command_output("uname", &["-srm"]).unwrap_or_else(|| "?".to_owned()),
        envoy: command_output(&real_envoy.display().to_string(), &["--version"])
            .map(|v| bench::envoy_version(&v))
            .unwrap_or_else(|| "?".to_owned()),
        wrk,
        h2load,
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        pinned,
    };

    // Certificates: Envoy's server certificate and the client SVID.
    let pki = Pki::new("bench")?;
    let leaf = pki.client(&[bench::CLIENT_ID])?;
    let (cert, key) = certs::write_pem_files(&pki.dir, "bench-client", &leaf)?;
    let client_tls = TlsFiles {
        ca: pki.envoy.ca.clone(),
        cert,
        key,
    };

    let upstream = start_upstream()?;
    let ticks_per_second = command_output("getconf", &["CLK_TCK"])
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0);
    let ctx = Context {
        params: params.clone(),
        modules,
        server_tls: pki.envoy.clone(),
        client_tls,
        upstream,
        pinned,
        ticks_per_second,
        scratch: scratch.clone(),
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

    let micro = read_micro(&root);
    let command = reproduce(&params);
    let md = bench::render_markdown(
        &params, &machine, &results, &sizes, &micro, &notes, &command,
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
    let measured = Envoy::start_with(&bootstrap, &Options::default()).map_err(short_error)?;
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
    .map_err(|e| format!("client Envoy: {}", short_error(e)))?;
    if ctx.pinned
        && !command_ok(
            "taskset",
            &["-a", "-p", "-c", "1", &client.pid().to_string()],
        )
    {
        return Err("taskset could not move the client Envoy to core 1".to_owned());
    }
    let entry = client.listener("client");

    // The functional check: every filter visibly does its work.
    let echo = bench::get(entry, "/proxied/echo", &bench::LOAD_HEADERS)?;
    let direct = bench::get(entry, "/direct", &bench::LOAD_HEADERS)?;
    if echo.status != 200 || direct.status != 200 {
        return Err(format!(
            "check failed: /proxied answered {}, /direct {} ({})",
            echo.status,
            direct.status,
            direct.body.trim()
        ));
    }
    let seen = Observed {
        upstream: bench::header_lines(&echo.body),
        direct,
        prometheus: measured.prometheus().map_err(|e| e.to_string())?,
        stats: measured
            .admin_get("/stats")
            .map(|(_, body)| body)
            .map_err(|e| e.to_string())?,
    };
    bench::verify(kind, &seen)?;

    let mut samples = std::collections::BTreeMap::new();
    for v in Variant::ALL {
        let sample = measure(ctx, &measured, entry, v);
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

/// Counters of the measured listener: (completed, HTTP/1.1, HTTP/2).
fn counters(measured: &Envoy) -> Result<(u64, u64, u64), String> {
    let (_, text) = measured
        .admin_get("/stats?filter=http.bench.downstream_rq_")
        .map_err(|e| e.to_string())?;
    let get = |name: &str| bench::admin_stat(&text, &format!("http.bench.{name}")).unwrap_or(0);
    Ok((
        get("downstream_rq_completed"),
        get("downstream_rq_http1_total"),
        get("downstream_rq_http2_total"),
    ))
}

fn cpu_ticks(pid: u32) -> Result<u64, String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| bench::cpu_ticks(&s))
        .ok_or_else(|| format!("cannot read /proc/{pid}/stat"))
}

/// One variant: load through the client Envoy, CPU and requests of the measured Envoy sampled
/// around the window.
fn measure(
    ctx: &Context,
    measured: &Envoy,
    entry: std::net::SocketAddr,
    v: Variant,
) -> Result<Sample, String> {
    let p = &ctx.params;
    let url = format!("http://{entry}{}", v.path());
    let log = ctx.scratch.join("h2load.log");
    let mut cmd = if ctx.pinned {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]);
        c
    } else {
        Command::new("env")
    };
    match v.protocol {
        Protocol::Http1 => {
            // wrk takes whole seconds; it is stopped with SIGINT right after the window.
            let seconds = (p.warmup + p.seconds).ceil() + 30.0;
            cmd.arg("wrk")
                .arg("-t1")
                .arg(format!("-c{}", p.h1_connections))
                .arg(format!("-d{seconds:.0}s"))
                .arg("--latency");
        }
        Protocol::Http2 | Protocol::Grpc => {
            let _ = std::fs::remove_file(&log);
            cmd.arg("h2load")
                .arg("-t1")
                .arg(format!("-c{}", p.h2_connections))
                .arg(format!("-m{}", p.h2_streams))
                .arg(format!("--warm-up-time={:.0}ms", p.warmup * 1e3))
                // The window is closed by then; the rest keeps the load on until it is.
                .arg(format!("--duration={:.0}ms", p.seconds * 1e3 + 500.0))
                .arg(format!("--log-file={}", log.display()));
            if v.protocol == Protocol::Grpc {
                // Unary calls: POST of one framed empty message, as a gRPC client sends it.
                let message = ctx.scratch.join("grpc-message.bin");
                std::fs::write(&message, bench::GRPC_EMPTY_MESSAGE).map_err(|e| e.to_string())?;
                cmd.arg("-d").arg(&message).args([
                    "-H",
                    "content-type: application/grpc",
                    "-H",
                    "te: trailers",
                ]);
            }
        }
    }
    for (name, value) in bench::LOAD_HEADERS {
        cmd.arg("-H").arg(format!("{name}: {value}"));
    }
    cmd.arg(&url).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the load: {e}"))?;
    let mut load = Load(Some(child));

    std::thread::sleep(Duration::from_secs_f64(p.warmup + 0.1));
    let (n0, h1_0, h2_0) = counters(measured)?;
    let c0 = cpu_ticks(measured.pid())?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(p.seconds));
    let c1 = cpu_ticks(measured.pid())?;
    let window_s = t0.elapsed().as_secs_f64();
    let (n1, h1_1, h2_1) = counters(measured)?;

    if v.protocol == Protocol::Http1 {
        if let Some(child) = &load.0 {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
        }
    }
    let output = load
        .0
        .take()
        .ok_or("the load generator is gone")?
        .wait_with_output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let report = match v.protocol {
        Protocol::Http1 => bench::parse_wrk(&text),
        Protocol::Http2 | Protocol::Grpc => {
            bench::parse_h2load(&text, &std::fs::read_to_string(&log).unwrap_or_default())
        }
    }
    .map_err(|e| {
        format!(
            "{e}: {}{}",
            text.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })?;

    let requests = n1.saturating_sub(n0);
    if requests == 0 {
        return Err("no request completed in the window".to_owned());
    }
    // The measured Envoy must have seen the protocol under test.
    let (h1, h2) = (h1_1.saturating_sub(h1_0), h2_1.saturating_sub(h2_0));
    let (expected, other) = if v.protocol.is_http2() {
        (h2, h1)
    } else {
        (h1, h2)
    };
    if other > expected {
        return Err(format!(
            "the measured Envoy saw {h1} HTTP/1.1 and {h2} HTTP/2 requests in an {} run",
            v.label()
        ));
    }
    Ok(Sample {
        requests,
        window_s,
        cpu_us: c1.saturating_sub(c0) as f64 * 1e6 / ctx.ticks_per_second,
        p50_ms: report.p50_ms,
        p99_ms: report.p99_ms,
        errors: report.errors,
    })
}

/// A load generator that is killed (by its PID) if the run ends early.
struct Load(Option<Child>);

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts the upstream on its own thread (which inherits this process's core) and returns its
/// address.
fn start_upstream() -> Result<std::net::SocketAddr, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("upstream".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => bench::serve_upstream(l).await,
                    Err(e) => eprintln!("bench: the upstream cannot listen: {e}"),
                }
            });
        })?;
    Ok(addr)
}

/// `exec taskset -c 0 <envoy> "$@"`: the PID stays Envoy's.
fn write_wrapper(path: &Path, envoy: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let quoted = envoy.display().to_string().replace('\'', r"'\''");
    std::fs::write(
        path,
        format!("#!/bin/sh\nexec taskset -c 0 '{quoted}' \"$@\"\n"),
    )?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
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

fn short_error(e: envoy::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("").to_owned();
    let cause = text
        .lines()
        .rev()
        .find(|l| l.contains("[critical]") || l.contains("[error]"))
        .map(|l| l.chars().take(300).collect::<String>());
    match cause {
        Some(c) => format!("{first} {c}"),
        None => first,
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

fn tool_version(tool: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(tool).args(args).output().ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())?
        .trim()
        .to_owned();
    // "wrk 4.1.0 [epoll] Copyright (C) 2012 Will Glozer" → "wrk 4.1.0"
    Some(
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn command_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}
