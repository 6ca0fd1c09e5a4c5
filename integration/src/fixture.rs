//! What the end-to-end tests set up again and again, once: workload identities ([`sa`]), the
//! one-listener Envoy in front of one service ([`one_service`]), the mTLS mesh of a PKI, an
//! Envoy and its listener ([`Mesh`]), the refusal of an invalid plugin configuration
//! ([`refusal`]), the demo configuration on free ports ([`demo_config`], [`demo_certs`]) and a
//! port nobody listens on ([`closed_port`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::bootstrap::{bootstrap, cluster, filter, listener, route, with_access_log, with_mtls};
use crate::certs::{Leaf, Pki};
use crate::client::tls::Tls;
use crate::client::{Response, Result};
use crate::envoy::{workspace_root, Envoy, Options};
use crate::Error;

/// The SPIFFE ID prefix of the test workloads: `sa/<name>` in tables.
pub const SA_PREFIX: &str = "spiffe://mesh.local/ns/default/sa/";

/// The SPIFFE ID of the workload `name` (`spiffe://mesh.local/ns/default/sa/<name>`).
pub fn sa(name: &str) -> String {
    format!("{SA_PREFIX}{name}")
}

/// A bootstrap with one plaintext listener `main` (`http_filters`, `routes`) and the cluster
/// `svc` (h2c) at `svc`, where the routes go.
pub fn one_service(http_filters: Vec<Value>, routes: Vec<Value>, svc: SocketAddr) -> Value {
    bootstrap(
        vec![listener("main", routes, http_filters)],
        vec![cluster("svc", svc, true)],
    )
}

/// An Envoy with an mTLS listener `mtls` (client certificate optional, `SANITIZE_SET`, so the
/// filters see callers without one and every URI SAN Envoy verified), made by
/// [`MeshBuilder`].
pub struct Mesh {
    pub envoy: Envoy,
    pub pki: Pki,
}

/// What [`Mesh::builder`] puts in the Envoy.
pub struct MeshBuilder {
    tag: String,
    filters: Vec<Value>,
    routes: Vec<Value>,
    clusters: Vec<Value>,
    plaintext: bool,
    access_log: Option<String>,
    options: Options,
}

impl Mesh {
    /// A mesh whose PKI lives in a temporary directory named after `tag`.
    pub fn builder(tag: &str) -> MeshBuilder {
        MeshBuilder {
            tag: tag.to_owned(),
            filters: Vec::new(),
            routes: Vec::new(),
            clusters: Vec::new(),
            plaintext: false,
            access_log: None,
            options: Options::default(),
        }
    }

    /// The address of the mTLS listener.
    pub fn addr(&self) -> SocketAddr {
        self.envoy.listener("mtls")
    }

    /// A client certificate of the mesh's CA with these URI SANs.
    pub fn client(&self, uris: &[&str]) -> Result<Leaf> {
        self.pki.client(uris)
    }

    /// A TLS client of the mesh presenting `who` (none: no client certificate).
    pub fn tls(&self, who: Option<&Leaf>) -> Tls {
        self.pki.tls().presenting(who)
    }

    /// `GET path` on the mTLS listener as `who`.
    pub async fn get(
        &self,
        who: Option<&Leaf>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response> {
        self.tls(who).get(self.addr(), path, headers).await
    }
}

impl MeshBuilder {
    /// The HTTP filters of the listeners (the router is appended).
    pub fn filter(mut self, filter: Value) -> Self {
        self.filters.push(filter);
        self
    }

    pub fn routes(mut self, routes: Vec<Value>) -> Self {
        self.routes = routes;
        self
    }

    pub fn cluster(mut self, cluster: Value) -> Self {
        self.clusters.push(cluster);
        self
    }

    /// Also a plaintext listener `plain` with the same filters and routes.
    pub fn with_plaintext(mut self) -> Self {
        self.plaintext = true;
        self
    }

    /// Every request of the mTLS listener in Envoy's log (see
    /// [`crate::bootstrap::with_access_log`]).
    pub fn access_log(mut self, format: &str) -> Self {
        self.access_log = Some(format.to_owned());
        self
    }

    /// `--concurrency workers`.
    pub fn workers(mut self, workers: u32) -> Self {
        self.options = Options::workers(workers);
        self
    }

    pub fn start(self) -> std::result::Result<Mesh, Error> {
        let pki = Pki::new(&self.tag)?;
        let mut mtls = with_mtls(
            listener("mtls", self.routes.clone(), self.filters.clone()),
            &pki.envoy,
            false,
            "SANITIZE_SET",
        );
        if let Some(format) = &self.access_log {
            mtls = with_access_log(mtls, format);
        }
        let mut listeners = vec![mtls];
        if self.plaintext {
            listeners.push(listener("plain", self.routes, self.filters));
        }
        let envoy = Envoy::start_with(&bootstrap(listeners, self.clusters), &self.options)?;
        Ok(Mesh { envoy, pki })
    }
}

/// Starts Envoy with `root_id`'s filter configured by `config`, on one listener, and expects
/// it to refuse: the log line `<root_id>: invalid configuration…`. Fails when Envoy starts,
/// exits with success, or logs no such line.
pub fn refusal(root_id: &str, config: &Value) -> std::result::Result<String, Error> {
    let nobody = SocketAddr::from(([127, 0, 0, 1], 9));
    let bootstrap = one_service(
        vec![filter(root_id, config)],
        vec![route("r", "/", "svc")],
        nobody,
    );
    let refused = Envoy::refuse(&bootstrap)?;
    if refused.status.success() {
        return Err(format!("envoy exited with success on {config}:\n{}", refused.log).into());
    }
    let prefix = format!("{root_id}: invalid configuration");
    refused
        .log
        .lines()
        .find(|l| l.contains(&prefix))
        .map(str::to_owned)
        .ok_or_else(|| format!("no line {prefix:?} for {config}:\n{}", refused.log).into())
}

/// The demo's certificates (`scripts/demo-certs.sh`, what `make run` uses) in `.run/certs`,
/// made once per test process (tests in parallel must not remake them under a running Envoy).
pub fn demo_certs() -> std::result::Result<PathBuf, Error> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = workspace_root().join(".run/certs");
        let out = Command::new("bash")
            .arg(workspace_root().join("scripts/demo-certs.sh"))
            .arg(&dir)
            .output()
            .map_err(|e| format!("demo-certs.sh: {e}"))?;
        if out.status.success() {
            Ok(dir)
        } else {
            Err(format!(
                "demo-certs.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .clone()
    .map_err(Error::from)
}

/// A demo certificate and key (`<name>.crt`, `<name>.key` of [`demo_certs`]).
pub fn demo_leaf(name: &str) -> std::result::Result<Leaf, Error> {
    let dir = demo_certs()?;
    Leaf::read(
        &dir.join(format!("{name}.crt")),
        &dir.join(format!("{name}.key")),
    )
}

/// `envoy/demo.yaml` as shipped, its listeners and admin on free ports and its three services
/// (`auth`, `learner`, `events`) at these addresses' ports. The config names the demo's
/// certificates by path (`.run/certs`, as `make run` makes them), so they are made first: on a
/// clean clone nothing else has.
pub fn demo_config(auth: SocketAddr, learner: SocketAddr, events: SocketAddr) -> Result<String> {
    demo_certs()?;
    let mut text = std::fs::read_to_string(workspace_root().join("envoy/demo.yaml"))?;
    for (port, to) in [
        ("10000", 0),
        ("10443", 0),
        ("9901", 0),
        ("9001", auth.port()),
        ("9002", learner.port()),
        ("9003", events.port()),
    ] {
        text = text.replace(&format!("port_value: {port}"), &format!("port_value: {to}"));
    }
    Ok(text)
}

/// A loopback address that was bound once and is free again: connections are refused.
pub fn closed_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}
