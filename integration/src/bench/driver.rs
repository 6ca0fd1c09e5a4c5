//! The machinery the `bench` and `profile` programs share: pinning, the upstream, the client
//! Envoy's placement, and one measured run (closed-loop load through the client Envoy, the
//! measured Envoy's CPU time and completed requests sampled around the window).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::{self, Protocol, Sample};
use crate::envoy::{self, Envoy};
use crate::{client, metrics};

pub use crate::Error;

/// How one run loads the measured Envoy and how its CPU time is read.
#[derive(Clone, Debug)]
pub struct Driver {
    /// Measured window, seconds.
    pub seconds: f64,
    /// Load before the window, seconds.
    pub warmup: f64,
    pub h1_connections: u32,
    pub h2_connections: u32,
    pub h2_streams: u32,
    /// The load generators run on core 1 (and the measured Envoy on core 0).
    pub pinned: bool,
    /// `CLK_TCK`.
    pub ticks_per_second: f64,
    /// Where h2load's log and the gRPC message go.
    pub scratch: PathBuf,
}

/// Where the processes run.
pub struct Placement {
    pub pinned: bool,
    /// Why not, when not.
    pub note: Option<String>,
    /// The Envoy binary itself (`ENVOY_BIN` points at the pinning wrapper when pinned).
    pub real_envoy: PathBuf,
    pub cores: usize,
}

/// Pins this process (the upstream, the load generators' parent) to core 1 and makes every Envoy
/// started from now on run on core 0, through a wrapper in `scratch` that `ENVOY_BIN` points at.
/// Call it before any thread exists.
pub fn pin(scratch: &Path) -> Result<Placement, Error> {
    let real_envoy = envoy::envoy_binary();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cores >= 2 && command_ok("taskset", &["-c", "0", "true"]);
    if !pinned {
        return Ok(Placement {
            pinned,
            note: Some(
                "Not pinned: fewer than 2 cores or no taskset; Envoy and the load share the CPUs."
                    .to_owned(),
            ),
            real_envoy,
            cores,
        });
    }
    if !command_ok(
        "taskset",
        &["-p", "-c", "1", &std::process::id().to_string()],
    ) {
        return Err("taskset could not pin this process to core 1".into());
    }
    let wrapper = scratch.join("envoy-core0");
    write_wrapper(&wrapper, &real_envoy)?;
    std::env::set_var("ENVOY_BIN", &wrapper);
    Ok(Placement {
        pinned,
        note: None,
        real_envoy,
        cores,
    })
}

/// Moves a process started on core 0 (a client Envoy) to the load core, every thread of it.
pub fn to_load_core(pinned: bool, pid: u32) -> Result<(), String> {
    if pinned && !command_ok("taskset", &["-a", "-p", "-c", "1", &pid.to_string()]) {
        return Err("taskset could not move the client Envoy to core 1".to_owned());
    }
    Ok(())
}

/// `CLK_TCK`, 100 when unknown.
pub fn ticks_per_second() -> f64 {
    command_output("getconf", &["CLK_TCK"])
        .and_then(|t| t.parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Counters of one connection manager (`http.<stat_prefix>.`): (completed, HTTP/1.1, HTTP/2).
pub fn counters(measured: &Envoy, stat_prefix: &str) -> Result<(u64, u64, u64), String> {
    let filter = format!("^http\\.{stat_prefix}\\.downstream_rq_");
    let metrics = client::blocking(metrics::scrape(measured.admin, Some(&filter)))
        .map_err(|e| e.to_string())?;
    let get = |name: &str| {
        metrics
            .value(name, &[("envoy_http_conn_manager_prefix", stat_prefix)])
            .map(|v| v as u64)
            .map_err(|e| e.to_string())
    };
    Ok((
        get("envoy_http_downstream_rq_completed")?,
        get("envoy_http_downstream_rq_http1_total")?,
        get("envoy_http_downstream_rq_http2_total")?,
    ))
}

pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| bench::cpu_ticks(&s))
        .ok_or_else(|| format!("cannot read /proc/{pid}/stat"))
}

impl Driver {
    /// One run: load on `url` (through the client Envoy) with `protocol`, the measured Envoy's
    /// CPU time and the requests completed by its connection manager `stat_prefix`, sampled
    /// around the window.
    pub fn measure(
        &self,
        measured: &Envoy,
        stat_prefix: &str,
        url: &str,
        protocol: Protocol,
        headers: &[(&str, &str)],
    ) -> Result<Sample, String> {
        let log = self.scratch.join("h2load.log");
        let mut cmd = if self.pinned {
            let mut c = Command::new("taskset");
            c.args(["-c", "1"]);
            c
        } else {
            Command::new("env")
        };
        match protocol {
            Protocol::Http1 => {
                // wrk takes whole seconds; it is stopped with SIGINT right after the window.
                let seconds = (self.warmup + self.seconds).ceil() + 30.0;
                cmd.arg("wrk")
                    .arg("-t1")
                    .arg(format!("-c{}", self.h1_connections))
                    .arg(format!("-d{seconds:.0}s"))
                    .arg("--latency");
            }
            Protocol::Http2 | Protocol::Grpc => {
                let _ = std::fs::remove_file(&log);
                cmd.arg("h2load")
                    .arg("-t1")
                    .arg(format!("-c{}", self.h2_connections))
                    .arg(format!("-m{}", self.h2_streams))
                    .arg(format!("--warm-up-time={:.0}ms", self.warmup * 1e3))
                    // The window is closed by then; the rest keeps the load on until it is.
                    .arg(format!("--duration={:.0}ms", self.seconds * 1e3 + 500.0))
                    .arg(format!("--log-file={}", log.display()));
                if protocol == Protocol::Grpc {
                    // Unary calls: POST of one framed empty message, as a gRPC client sends it.
                    let message = self.scratch.join("grpc-message.bin");
                    std::fs::write(&message, bench::GRPC_EMPTY_MESSAGE)
                        .map_err(|e| e.to_string())?;
                    cmd.arg("-d").arg(&message).args([
                        "-H",
                        "content-type: application/grpc",
                        "-H",
                        "te: trailers",
                    ]);
                }
            }
        }
        for (name, value) in headers {
            cmd.arg("-H").arg(format!("{name}: {value}"));
        }
        cmd.arg(url).stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the load: {e}"))?;
        let mut load = Load(Some(child));

        std::thread::sleep(Duration::from_secs_f64(self.warmup + 0.1));
        let (n0, h1_0, h2_0) = counters(measured, stat_prefix)?;
        let c0 = cpu_ticks(measured.pid())?;
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(self.seconds));
        let c1 = cpu_ticks(measured.pid())?;
        let window_s = t0.elapsed().as_secs_f64();
        let (n1, h1_1, h2_1) = counters(measured, stat_prefix)?;

        if protocol == Protocol::Http1 {
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
        let report = match protocol {
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
        let (expected, other) = if protocol.is_http2() {
            (h2, h1)
        } else {
            (h1, h2)
        };
        if other > expected {
            return Err(format!(
                "the measured Envoy saw {h1} HTTP/1.1 and {h2} HTTP/2 requests in a {protocol:?} run"
            ));
        }
        Ok(Sample {
            requests,
            window_s,
            cpu_us: c1.saturating_sub(c0) as f64 * 1e6 / self.ticks_per_second,
            p50_ms: report.p50_ms,
            p99_ms: report.p99_ms,
            errors: report.errors,
        })
    }
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

/// Starts the upstream ([`bench::serve_upstream`]) on its own thread (which inherits this
/// process's core) and returns its address; it serves until the process ends.
pub fn start_upstream() -> Result<SocketAddr, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (bound, address) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("upstream".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                match bench::serve_upstream(SocketAddr::from(([127, 0, 0, 1], 0))).await {
                    Ok(server) => {
                        let _ = bound.send(Ok(server.addr()));
                        std::future::pending::<()>().await;
                    }
                    Err(e) => {
                        let _ = bound.send(Err(format!("the upstream cannot listen: {e}")));
                    }
                }
            });
        })?;
    Ok(address.recv()??)
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

/// The first line of an Envoy start error and its first critical or error log line.
pub fn short_error(e: Error) -> String {
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

pub fn cpu_model() -> String {
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

/// `wrk 4.1.0 [epoll] Copyright …` → `wrk 4.1.0`; `None` when the tool is missing.
pub fn tool_version(tool: &str, args: &[&str]) -> Option<String> {
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
    Some(
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

pub fn command_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}
