//! What the end-to-end tests of `libmesh_filters.so` share: the module builds, certificates, an
//! HTTP/1.1 upstream, bootstraps built as JSON (Envoy reads JSON as YAML), an Envoy process
//! per test (every port chosen by the OS, killed by its PID), and two HTTP clients (`curl`,
//! and a keep-alive connection for tests that must pin requests to a worker).
//!
//! Envoy is `$ENVOY_BIN`, else `.venv/bin/envoy` at the workspace root (what `make envoy`
//! installs), else `envoy` on `PATH`. `curl` (with HTTP/2) and `openssl` must be on `PATH`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    // Test tooling waits for processes and sockets.
    clippy::disallowed_methods,
    dead_code
)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- paths and builds

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn envoy_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/envoy");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("envoy")
    }
}

fn cargo_build(target: Option<&Path>, features: &str) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args([
        "build",
        "--profile",
        "native",
        "-p",
        "mesh-suite",
        "--features",
        features,
    ]);
    if let Some(t) = target {
        cmd.env("CARGO_TARGET_DIR", t);
    }
    let status = cmd.status().expect("cargo runs");
    assert!(
        status.success(),
        "building libmesh_filters.so ({features}) failed"
    );
}

/// The folder of `libmesh_filters.so` as `make build` makes it (`target/native`), built once
/// per test run (a no-op after `make build`). The `native` profile has its own lock, so this
/// never waits on the `cargo test` running it.
pub fn module_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        cargo_build(None, "native");
        let dir = target_dir().join("native");
        assert!(dir.join("libmesh_filters.so").is_file());
        dir
    })
}

/// A test build of the module with feature `native-test-panic` (the deliberate panic), in its
/// own target directory so that it never replaces the real one.
pub fn panic_module_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = target_dir().join("native-test-panic");
        cargo_build(Some(&target), "native-test-panic");
        let dir = target.join("native");
        assert!(dir.join("libmesh_filters.so").is_file());
        dir
    })
}

/// `mesh_filters.wasm` as `make build` makes it, for comparisons with the wasm module.
pub fn wasm_module() -> PathBuf {
    let p = target_dir().join("wasm32-wasip1/release/mesh_filters.wasm");
    assert!(
        p.is_file(),
        "{} is missing: run `make build` first (make test-integration does)",
        p.display()
    );
    p
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("mesh-native-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- certificates

pub const TRUST_DOMAIN: &str = "mesh.test";

pub fn spiffe(sa: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/default/sa/{sa}")
}

/// A CA, a server certificate for `envoy.test`, and one client certificate per name in
/// `clients` (`<name>.pem`, `<name>.key`) whose URI SAN is `spiffe(name)`.
pub fn make_certs(dir: &Path, clients: &[&str]) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=mesh test CA",
    ]);
    let mut certs = vec![("server", "subjectAltName=DNS:envoy.test\n".to_string())];
    for c in clients {
        certs.push((
            c,
            format!(
                "subjectAltName=URI:{}\nextendedKeyUsage=clientAuth\n",
                spiffe(c)
            ),
        ));
    }
    for (name, ext) in certs {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
}

// ---------------------------------------------------------------- the upstream

/// An HTTP/1.1 upstream that answers every request with its request head as the body and
/// records each head. Paths: `/fail…` answer 503; `/flaky…` answer 503 to a first attempt
/// (`x-envoy-attempt-count: 1`) and 200 to later ones; anything else 200.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let log = Arc::clone(&log);
                std::thread::spawn(move || serve(conn, &log));
            }
        });
        Upstream { addr, seen }
    }

    /// Every request head received so far (lowercase).
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until a request head starts with `prefix` (e.g. `post /v1/traces`).
    pub fn wait_for(&self, prefix: &str, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(h) = self.seen().into_iter().find(|h| h.starts_with(prefix)) {
                return Some(h);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve(conn: TcpStream, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line.replace("\r\n", "\n"));
        }
        let head = head.to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap_or(0))
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock().unwrap().push(head.clone());
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let first_attempt = head.contains("x-envoy-attempt-count: 1\n");
        let status = if path.starts_with("/fail") || (path.starts_with("/flaky") && first_attempt) {
            "503 Service Unavailable"
        } else {
            "200 OK"
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{head}",
            head.len()
        );
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------- bootstraps

/// The filter name in `http_filters`: the key of `typed_per_filter_config`.
pub const FILTER: &str = "mesh";

/// The suite as a native filter with this plugin configuration.
pub fn native_filter(config: &Value) -> Value {
    json!({
        "name": FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "mesh_filters", "metrics_namespace": "mesh"},
            "filter_name": "suite",
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": config.to_string()
            }
        }
    })
}

/// The suite as the wasm filter with this plugin configuration.
pub fn wasm_filter(config: &Value) -> Value {
    json!({
        "name": FILTER,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": FILTER,
                "root_id": "mesh",
                "vm_config": {
                    "vm_id": "mesh",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm_module().display().to_string()}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": config.to_string()
                }
            }
        }
    })
}

/// The native per-route configuration of a route: sections keyed like route metadata.
pub fn per_route(sections: &Value) -> Value {
    per_route_raw(&sections.to_string())
}

pub fn per_route_raw(config: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute",
        "dynamic_module_config": {"name": "mesh_filters"},
        "filter_name": "route",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config}
    })
}

/// Envoy's own switch: the whole filter off on a route.
pub fn filter_disabled() -> Value {
    json!({"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true})
}

/// A route by prefix to a cluster, the route's own timeout off (what is measured is ours).
pub fn route(name: &str, prefix: &str, cluster: &str) -> Value {
    json!({"name": name, "match": {"prefix": prefix}, "route": {"cluster": cluster, "timeout": "0s"}})
}

pub fn with_per_route(mut route: Value, config: Value) -> Value {
    route["typed_per_filter_config"][FILTER] = config;
    route
}

/// A plaintext listener (HTTP/1.1 and h2c), peers on loopback trusted as a sidecar's are,
/// connections spread evenly over the workers.
pub fn listener(name: &str, routes: Vec<Value>, filter: Value) -> Value {
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "connection_balance_config": {"exact_balance": {}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "codec_type": "AUTO",
                "use_remote_address": true,
                "skip_xff_append": true,
                "internal_address_config": {"cidr_ranges": [{"address_prefix": "127.0.0.0", "prefix_len": 8}]},
                "route_config": {"name": name, "virtual_hosts": [{
                    "name": name, "domains": ["*"], "routes": routes,
                    "include_request_attempt_count": true
                }]},
                "http_filters": [filter, {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                }]
            }
        }]}]
    })
}

/// Turns a [`listener`] into an mTLS one (client certificate required, `certs` from
/// [`make_certs`]) whose connection manager builds `x-forwarded-client-cert` with every URI SAN
/// and replaces any a client sent.
pub fn with_mtls(mut listener: Value, certs: &TempDir) -> Value {
    let chain = &mut listener["filter_chains"][0];
    chain["transport_socket"] = json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": true,
            "common_tls_context": {
                "alpn_protocols": ["h2", "http/1.1"],
                "tls_certificates": [{
                    "certificate_chain": {"filename": certs.path("server.pem")},
                    "private_key": {"filename": certs.path("server.key")}
                }],
                "validation_context": {"trusted_ca": {"filename": certs.path("ca.pem")}}
            }
        }
    });
    let hcm = &mut chain["filters"][0]["typed_config"];
    hcm["forward_client_cert_details"] = json!("SANITIZE_SET");
    hcm["set_current_client_cert_details"] = json!({"uri": true});
    listener
}

pub fn cluster(name: &str, addr: SocketAddr) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "socket_address": {"address": addr.ip().to_string(), "port_value": addr.port()}
        }}}]}]}
    })
}

pub fn bootstrap(listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"listeners": listeners, "clusters": clusters}
    })
}

// ---------------------------------------------------------------- Envoy

pub struct Envoy {
    child: Child,
    pub dir: TempDir,
    pub admin: SocketAddr,
    exited: Option<ExitStatus>,
}

/// An Envoy that refused its bootstrap: exit status and log.
pub struct Refused {
    pub status: ExitStatus,
    pub log: String,
}

impl Envoy {
    fn spawn(bootstrap: &Value, modules: &Path) -> (Child, TempDir) {
        let dir = TempDir::new("envoy");
        std::fs::write(
            dir.0.join("bootstrap.json"),
            serde_json::to_string_pretty(bootstrap).unwrap(),
        )
        .unwrap();
        let out = std::fs::File::create(dir.0.join("envoy.out")).unwrap();
        let child = Command::new(envoy_binary())
            .current_dir(&dir.0)
            .args(["-c", "bootstrap.json", "--concurrency", "2"])
            .args(["--admin-address-path", "admin.addr"])
            // The log goes to stderr (unbuffered), not to --log-path (flushed every few seconds).
            .args(["-l", "info", "--disable-hot-restart"])
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", modules)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("envoy starts");
        (child, dir)
    }

    /// Starts Envoy (`--concurrency 2`) with the modules in `modules`; `Err` is an Envoy that
    /// exited during start-up.
    pub fn start_with(bootstrap: &Value, modules: &Path) -> Result<Envoy, Refused> {
        let (mut child, dir) = Envoy::spawn(bootstrap, modules);
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin = loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(Refused {
                    status,
                    log: read_log(&dir.0),
                });
            }
            if let Some(a) = std::fs::read_to_string(dir.0.join("admin.addr"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break a;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("no admin address:\n{}", read_log(&dir.0));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut envoy = Envoy {
            child,
            dir,
            admin,
            exited: None,
        };
        while envoy
            .admin_get("/ready")
            .map(|b| b.trim() != "LIVE")
            .unwrap_or(true)
        {
            if let Some(status) = envoy.child.try_wait().unwrap() {
                envoy.exited = Some(status);
                return Err(Refused {
                    status,
                    log: envoy.log(),
                });
            }
            assert!(Instant::now() < deadline, "not ready:\n{}", envoy.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(envoy)
    }

    /// Starts Envoy on `libmesh_filters.so`.
    pub fn start(bootstrap: &Value) -> Envoy {
        match Envoy::start_with(bootstrap, module_dir()) {
            Ok(e) => e,
            Err(r) => panic!("envoy exited ({}):\n{}", r.status, r.log),
        }
    }

    /// Runs Envoy on a bootstrap it must refuse.
    pub fn refuse(bootstrap: &Value, modules: &Path) -> Refused {
        match Envoy::start_with(bootstrap, modules) {
            Ok(e) => panic!("envoy accepted the bootstrap:\n{}", e.log()),
            Err(r) => r,
        }
    }

    pub fn admin_get(&self, path: &str) -> Option<String> {
        let r = curl(&[&format!("http://{}{path}", self.admin)]);
        (r.status == 200).then_some(r.body)
    }

    pub fn listener(&self, name: &str) -> SocketAddr {
        let listeners = self.admin_get("/listeners").unwrap();
        listeners
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}::")))
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no listener {name} in {listeners}"))
    }

    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{path}", self.listener(listener))
    }

    pub fn log(&self) -> String {
        read_log(&self.dir.0)
    }

    /// The value of a Prometheus sample `name{labels}` (labels as Envoy prints them).
    pub fn prometheus(&self, series: &str) -> Option<f64> {
        self.admin_get("/stats/prometheus")?.lines().find_map(|l| {
            l.strip_prefix(series)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// Waits until a Prometheus sample has `value`.
    pub fn wait_prometheus(&self, series: &str, value: f64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.prometheus(series);
            if v == Some(value) {
                return;
            }
            assert!(Instant::now() < deadline, "{series} is {v:?}, not {value}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A counter or gauge of `/stats` (`name: value`).
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.admin_get(&format!("/stats?filter=^{name}$"))?
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if self.exited.is_none() {
            // By PID: exactly the process this test started.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- envoy log ----\n{}", self.log());
        }
    }
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("envoy.out")).unwrap_or_default()
}

/// The lines of a log that contain `needle`, from `needle` on.
pub fn lines_with(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.find(needle).map(|i| l[i..].to_string()))
        .collect()
}

// ---------------------------------------------------------------- clients

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// What the upstream received (the echo body), lowercase, with `name: value` lines.
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
    }
}

/// `curl -sS -i` with extra arguments; the last response head of the output is parsed.
pub fn curl(args: &[&str]) -> Reply {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A GET through `curl` with extra headers.
pub fn get(url: &str, headers: &[&str]) -> Reply {
    let mut args: Vec<&str> = vec![url];
    for h in headers {
        args.extend(["-H", h]);
    }
    curl(&args)
}

/// A gRPC-looking request (h2c, `content-type: application/grpc`), for local replies.
pub fn grpc(url: &str, headers: &[&str]) -> Reply {
    let mut args: Vec<&str> = vec![
        "--http2-prior-knowledge",
        "-X",
        "POST",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        url,
    ];
    for h in headers {
        args.extend(["-H", h]);
    }
    curl(&args)
}

/// One HTTP/1.1 keep-alive connection: every request on it is served by one worker.
pub struct Connection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Connection {
    pub fn open(addr: SocketAddr) -> Connection {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Connection {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    pub fn get(&mut self, path: &str) -> Reply {
        write!(self.writer, "GET {path} HTTP/1.1\r\nhost: mesh\r\n\r\n").unwrap();
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let length: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}
