//! The bindings against the real Envoy 1.40: the proof module (`examples/proof.rs`, built here
//! with `--profile native`) loaded by `proof/bootstrap.yaml`, in front of a direct_response route
//! and of an echo upstream started by the test, on a plain and on an mTLS listener.
//!
//! Each test starts its own Envoy (every port chosen by the OS, the admin address read from
//! `--admin-address-path`), and kills exactly that process by its PID when it ends, printing the
//! Envoy log when the test fails. Requests go through `curl` (HTTP/1.1, h2c, client certificates);
//! certificates are made with `openssl`.
//!
//! Envoy is `$ENVOY_BIN`, else `.venv/bin/envoy` at the workspace root (what `make envoy`
//! installs), else `envoy` on `PATH`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    // Test tooling waits for processes and sockets.
    clippy::disallowed_methods
)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- tooling

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn workspace_root() -> PathBuf {
    crate_dir().join("../..")
}

fn envoy_binary() -> PathBuf {
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

/// Builds `libmesh_native_proof.so` once per test run (its own target directory, so that the
/// build never waits on the lock of the `cargo test` that runs this file) and returns its folder.
fn module_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"))
            .join("native-proof");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace_root())
            .args([
                "build",
                "-p",
                "mesh-native",
                "--example",
                "mesh_native_proof",
                "--profile",
                "native",
            ])
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the proof module failed");
        let dir = target.join("native/examples");
        assert!(dir.join("libmesh_native_proof.so").is_file());
        dir
    })
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("mesh-native-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, a server certificate for `proof.test` and a client certificate with two URI SANs.
fn make_certs(dir: &Path) {
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
    std::fs::write(dir.join("server.ext"), "subjectAltName=DNS:proof.test\n").unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "subjectAltName=URI:spiffe://mesh.test/ns/a/sa/first,URI:spiffe://mesh.test/ns/a/sa/second\n\
         extendedKeyUsage=clientAuth\n",
    )
    .unwrap();
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
        "/CN=proof CA",
    ]);
    for (name, cn) in [("server", "/CN=proof.test"), ("client", "/CN=client")] {
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        run(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", cn,
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

/// An HTTP/1.1 upstream that answers every request with its own request head as the body
/// (status 503 for paths under `/retry`), keeping connections alive.
fn start_echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve_echo(conn));
        }
    });
    addr
}

fn serve_echo(conn: TcpStream) {
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
            head.push_str(&line);
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let status = if head
            .split(' ')
            .nth(1)
            .is_some_and(|p| p.starts_with("/retry"))
        {
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

struct Envoy {
    child: Child,
    dir: TempDir,
    admin: SocketAddr,
    exited: Option<ExitStatus>,
}

impl Envoy {
    /// Starts Envoy on the proof bootstrap with the main filter's config `main_config`; `Err`
    /// carries the exit status and log of an Envoy that exited during start-up.
    fn start(main_config: &str) -> Result<Envoy, (ExitStatus, String)> {
        let dir = TempDir::new("envoy");
        make_certs(&dir.0);
        let upstream = start_echo_upstream();
        let bootstrap = std::fs::read_to_string(crate_dir().join("proof/bootstrap.yaml"))
            .unwrap()
            .replace("@CERTS@", dir.0.to_str().unwrap())
            .replace("@UPSTREAM_PORT@", &upstream.port().to_string())
            .replace("@MAIN_CONFIG@", main_config);
        std::fs::write(dir.0.join("bootstrap.yaml"), bootstrap).unwrap();
        let out = std::fs::File::create(dir.0.join("envoy.out")).unwrap();
        let mut child = Command::new(envoy_binary())
            .current_dir(&dir.0)
            .args([
                "-c",
                "bootstrap.yaml",
                "--concurrency",
                "2",
                "--admin-address-path",
                "admin.addr",
            ])
            // The log goes to stderr (unbuffered), not to --log-path (flushed every few seconds).
            .args(["-l", "info", "--disable-hot-restart"])
            .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module_dir())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("envoy starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        let admin = loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err((status, read_log(&dir.0)));
            }
            if let Some(a) = std::fs::read_to_string(dir.0.join("admin.addr"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break a;
            }
            assert!(
                Instant::now() < deadline,
                "no admin address:\n{}",
                read_log(&dir.0)
            );
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
                return Err((status, envoy.log()));
            }
            assert!(Instant::now() < deadline, "not ready:\n{}", envoy.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(envoy)
    }

    fn admin_get(&self, path: &str) -> Option<String> {
        let r = curl(&[&format!("http://{}{path}", self.admin)]);
        (r.status == 200).then_some(r.body)
    }

    fn listener(&self, name: &str) -> SocketAddr {
        let listeners = self.admin_get("/listeners").unwrap();
        listeners
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}::")))
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no listener {name} in {listeners}"))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listener("plain"))
    }

    fn log(&self) -> String {
        read_log(&self.dir.0)
    }

    /// The module's `mesh.proof …` lines, from the Envoy log.
    fn proof_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.find("mesh.proof ").map(|i| l[i..].to_string()))
            .collect()
    }

    /// Waits until a module line contains every part.
    fn wait_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self
                .proof_lines()
                .into_iter()
                .find(|l| parts.iter().all(|p| l.contains(p)))
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no line with {parts:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.exited = Some(s);
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "envoy still running:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// `curl -sS -i` with extra arguments; the last response head of the output is parsed.
fn curl(args: &[&str]) -> Reply {
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

fn get(envoy: &Envoy, path: &str, headers: &[&str]) -> Reply {
    let url = envoy.url(path);
    let mut args: Vec<&str> = vec![&url];
    for h in headers {
        args.extend(["-H", h]);
    }
    curl(&args)
}

/// The value of a Prometheus sample line `name{labels} value`.
fn prometheus(envoy: &Envoy, series: &str) -> Option<f64> {
    envoy
        .admin_get("/stats/prometheus")?
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

// ---------------------------------------------------------------- the proofs

#[test]
fn envoy_loads_the_module_and_hands_it_each_config_type() {
    let envoy = Envoy::start("tick").unwrap();
    assert!(envoy
        .log()
        .contains("Dynamic module ABI version v0.2.0 matched."));
    envoy
        .wait_line(&["config_new name=main config=tick thread=envoy concurrency=2 validate=false"]);
    let r = get(&envoy, "/direct", &[]);
    assert_eq!(r.status, 200);
    // StringValue: the string; BytesValue: the raw bytes; Struct: JSON.
    assert_eq!(r.header("x-proof-config"), Some("tick"));
    assert_eq!(r.header("x-proof-config-echo-bytes"), Some("raw bytes"));
    let json: &str = r.header("x-proof-config-echo-struct").unwrap();
    assert!(
        json.contains("\"deadline\":\"250ms\"") && json.contains("\"retries\":2"),
        "{json}"
    );
}

#[test]
fn a_config_the_module_rejects_makes_envoy_refuse_the_bootstrap() {
    let Err((status, log)) = Envoy::start("reject") else {
        panic!("envoy accepted a config the module rejected");
    };
    assert!(!status.success());
    assert!(
        log.contains("mesh.proof rejecting filter_config \"reject\""),
        "{log}"
    );
    assert!(
        log.contains("Failed to create filter config: Failed to initialize dynamic module"),
        "{log}"
    );
}

#[test]
fn headers_route_name_route_metadata_per_route_config_and_cluster() {
    let envoy = Envoy::start("tick").unwrap();

    let direct = get(
        &envoy,
        "/direct",
        &["x-proof-in: hello", "x-multi: 1", "x-multi: 2"],
    );
    assert_eq!(direct.status, 200);
    assert_eq!(direct.header("x-proof-in"), Some("hello"));
    assert_eq!(direct.header("x-proof-multi-in"), Some("1,2"));
    assert_eq!(direct.header("x-proof-route"), Some("s:direct"));
    assert_eq!(
        direct.header("x-proof-meta"),
        Some("mode=s:direct limit=n:7 flag=b:true keys=3")
    );
    assert_eq!(
        direct.header("x-proof-per-route"),
        Some("direct-override=per-route-direct")
    );
    assert_eq!(direct.header("x-proof-cluster"), Some("none"));
    assert_eq!(direct.header("x-proof-response-code"), Some("i:200"));
    // The whole metadata as an attribute is not implemented: read it key by key instead.
    assert_eq!(direct.header("x-proof-route-metadata-attr"), Some("none"));

    let proxied = get(
        &envoy,
        "/echo",
        &[
            "x-proof-in: hi",
            "x-proof-remove: bye",
            "x-multi: a,b",
            "x-multi: c",
        ],
    );
    assert_eq!(proxied.status, 200);
    assert_eq!(proxied.header("x-proof-route"), Some("s:proxied"));
    assert_eq!(proxied.header("x-proof-cluster"), Some("upstream"));
    assert_eq!(proxied.header("x-proof-per-route"), Some("none"));
    assert_eq!(proxied.header("x-proof-multi-in"), Some("a,b,c"));
    assert_eq!(proxied.header("x-proof-metrics"), Some("0,0,0,0"));
    // What the upstream saw: set, added twice (appended), removed.
    let seen = proxied.body.to_ascii_lowercase();
    assert!(seen.contains("x-proof-added: yes"), "{seen}");
    assert!(
        seen.contains("x-proof-multi: a\nx-proof-multi: b"),
        "{seen}"
    );
    assert!(!seen.contains("x-proof-remove"), "{seen}");

    // typed_per_filter_config keyed by the filter's name: FilterConfig{disabled} switches the
    // main filter off on that route, the other two still run.
    let disabled = get(&envoy, "/disabled", &[]);
    assert_eq!(disabled.status, 200);
    assert_eq!(disabled.header("x-proof-route"), None);
    assert_eq!(
        disabled.header("x-proof-config-echo-bytes"),
        Some("raw bytes")
    );
}

#[test]
fn mtls_attributes_on_a_tls_listener() {
    let envoy = Envoy::start("tick").unwrap();
    let port = envoy.listener("mtls").port();
    let dir = envoy.dir.0.to_str().unwrap().to_string();
    let resolve = format!("proof.test:{port}:127.0.0.1");
    let url = format!("https://proof.test:{port}/direct");
    let (ca, cert, key) = (
        format!("{dir}/ca.pem"),
        format!("{dir}/client.pem"),
        format!("{dir}/client.key"),
    );
    let r = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--resolve",
        &resolve,
        &url,
    ]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-proof-mtls"), Some("b:true"));
    // Only the first URI SAN.
    assert_eq!(
        r.header("x-proof-uri-san"),
        Some("s:spiffe://mesh.test/ns/a/sa/first")
    );
    let digest = r.header("x-proof-digest").unwrap();
    assert_eq!(digest.len(), 2 + 64, "{digest}");

    let plain = get(&envoy, "/direct", &[]);
    assert_eq!(plain.header("x-proof-mtls"), Some("none"));
}

#[test]
fn local_replies_for_http_and_grpc() {
    let envoy = Envoy::start("tick").unwrap();
    let r = get(&envoy, "/local", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-mesh-rejected-by"), Some("mesh.proof"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, "{\"error\":\"denied\"}");
    envoy.wait_line(&["local_reply code=403 details=mesh_proof_denied"]);

    let url = envoy.url("/grpc-explicit");
    let g = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "content-type: application/grpc",
        &url,
    ]);
    assert_eq!(g.status, 200);
    assert_eq!(g.header("grpc-status"), Some("8"));
    assert_eq!(g.header("grpc-message"), Some("budget exhausted"));
    assert_eq!(g.header("x-mesh-rejected-by"), Some("mesh.proof"));
    assert_eq!(g.body, "");

    // A non-200 status on a gRPC request becomes a gRPC reply, but with grpc-status 0 (OK): the
    // status must be given explicitly, as above.
    let url = envoy.url("/grpc");
    let g = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "content-type: application/grpc",
        &url,
    ]);
    assert_eq!(g.status, 200);
    assert_eq!(g.header("grpc-status"), Some("0"));
    assert_eq!(g.header("grpc-message"), Some("unavailable, try later"));
}

#[test]
fn metrics_are_prometheus_series_with_labels() {
    let envoy = Envoy::start("tick").unwrap();
    for _ in 0..3 {
        get(&envoy, "/direct", &[]);
    }
    get(&envoy, "/echo", &[]);
    envoy.wait_line(&["late_define result=3"]);
    // metrics_namespace "mesh": envoy_mesh_<name>, real labels, no _total suffix.
    assert_eq!(
        prometheus(&envoy, "envoy_mesh_requests{route=\"direct\"}"),
        Some(3.0)
    );
    assert_eq!(
        prometheus(&envoy, "envoy_mesh_requests{route=\"proxied\"}"),
        Some(1.0)
    );
    assert_eq!(
        prometheus(&envoy, "envoy_mesh_completed{code=\"200\"}"),
        Some(4.0)
    );
    assert_eq!(prometheus(&envoy, "envoy_mesh_inflight{}"), Some(0.0));
    assert!(prometheus(&envoy, "envoy_mesh_ticks{}").unwrap() >= 2.0);
    // The default namespace; two listeners, so two echo configs of each kind.
    assert_eq!(
        prometheus(&envoy, "envoy_dynamicmodulescustom_echo_configs{}"),
        Some(4.0)
    );
    let text = envoy.admin_get("/stats/prometheus").unwrap();
    assert!(
        text.contains("# TYPE envoy_mesh_latency_ms histogram"),
        "{text}"
    );
    // In /stats, labels become dotted name segments.
    let stats = envoy.admin_get("/stats?filter=%5Emesh%5C.").unwrap();
    assert!(stats.contains("mesh.requests.route.direct: 3"), "{stats}");
}

#[test]
fn response_attributes_at_stream_end() {
    let envoy = Envoy::start("tick").unwrap();
    let r = get(&envoy, "/retry", &[]);
    assert_eq!(r.status, 503);
    let line = envoy.wait_line(&["attrs phase=complete route=retried"]);
    for want in [
        "response_code=i:503",
        "attempts=i:3",
        "response_flags=i:32768", // URX
        "response_code_details=s:via_upstream",
        "response_grpc_status=i:14",
        "cluster_name=s:upstream",
        "request_time=none",
        "request_duration=none",
    ] {
        assert!(line.contains(want), "{want} not in {line}");
    }
    let request = envoy.wait_line(&["attrs phase=request route=retried"]);
    assert!(
        request.contains("attempts=i:0") && request.contains("response_code=none"),
        "{request}"
    );
}

#[test]
fn scheduled_events_and_http_callouts() {
    let envoy = Envoy::start("tick").unwrap();
    // A module thread commits to the stream's scheduler; the event runs on the stream's worker.
    let r = get(&envoy, "/delay", &[]);
    assert_eq!(r.status, 200);
    let from = r.header("x-proof-delay-from").unwrap().to_string();
    assert!(from.starts_with("wrk:worker_"), "{from}");
    assert_eq!(
        r.headers_named("x-proof-scheduled"),
        vec![format!("event=7 thread={from}").as_str()]
    );
    // The request header set in the scheduled event reached the upstream.
    assert!(r.body.contains("x-proof-scheduled: yes"), "{}", r.body);
    // A callout from the filter, answered on the same worker.
    let c = get(&envoy, "/callout", &[]);
    assert_eq!(c.status, 200);
    let callout = c.header("x-proof-callout").unwrap();
    assert!(
        callout.starts_with("id=1 result=0 status=200 body_len="),
        "{callout}"
    );
    assert!(
        c.body.contains("x-proof-callout: id=1 result=0 status=200"),
        "{}",
        c.body
    );
    // The config scheduler's events and the config-level callout run on the main thread.
    envoy.wait_line(&["config_scheduled event=1 thread=envoy"]);
    envoy.wait_line(&[
        "config_callout_done id=1 result=0 status=200",
        "thread=envoy",
    ]);
}

#[test]
fn config_on_the_main_thread_filters_on_workers_sharing_one_config() {
    let envoy = Envoy::start("tick").unwrap();
    // Four connections open at once: exact_balance hands them to the least loaded worker, so
    // both workers get some. One request on each.
    let addr = envoy.listener("plain");
    let mut conns: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut threads_seen = BTreeSet::new();
    for c in &mut conns {
        c.write_all(b"GET /direct HTTP/1.1\r\nhost: proof\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        let thread = reply
            .lines()
            .find_map(|l| l.strip_prefix("x-proof-thread: "))
            .map(|t| t.trim().to_string());
        threads_seen.insert(thread.unwrap_or_default());
    }
    assert_eq!(threads_seen.len(), 2, "{threads_seen:?}");
    let lines = envoy.proof_lines();
    assert!(lines
        .iter()
        .any(|l| l.starts_with("mesh.proof program_init thread=envoy")));
    assert!(lines
        .iter()
        .any(|l| l.contains("per_route_config_new") && l.ends_with("thread=envoy")));
    let news: Vec<(String, String)> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("mesh.proof filter_new config_ptr="))
        .filter_map(|l| l.split_once(" thread="))
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    let threads: BTreeSet<&str> = news.iter().map(|(_, t)| t.as_str()).collect();
    let pointers: BTreeSet<&str> = news.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        threads,
        BTreeSet::from(["wrk:worker_0", "wrk:worker_1"]),
        "{news:?}"
    );
    assert_eq!(
        pointers.len(),
        1,
        "one config pointer for both workers: {news:?}"
    );
}

#[test]
fn a_panic_in_a_hook_is_caught_and_an_abort_kills_envoy() {
    let mut envoy = Envoy::start("tick").unwrap();
    let r = get(&envoy, "/panic", &[]);
    assert_eq!(r.status, 500);
    assert_eq!(r.header("x-proof-panic"), Some("caught"));
    envoy.wait_line(&["panic caught in request_headers: deliberate panic in request_headers"]);
    assert_eq!(
        get(&envoy, "/direct", &[]).status,
        200,
        "still serving after the panic"
    );

    let r = get(&envoy, "/abort", &[]);
    assert_eq!(r.status, 0, "no answer");
    let status = envoy.wait_exit();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal().or(status.code().map(|c| c - 128)),
        Some(6),
        "{status:?}"
    );
    assert!(envoy.log().contains("Caught Aborted"), "{}", envoy.log());
}
