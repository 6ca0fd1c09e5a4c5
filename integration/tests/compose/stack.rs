//! The compose stack these tests talk to: its addresses (environment, with defaults), its
//! containers (through `docker`), its Envoys' metrics, its certificates, and the helpers the
//! tests share.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use mesh_integration::certs::Leaf;
use mesh_integration::client::{self, http_get, Response};
use mesh_integration::envoy::workspace_root;
use mesh_integration::metrics::Metrics;
use mesh_integration::wait;
use serde_json::Value;

pub fn env_addr(name: &str, default: &str) -> SocketAddr {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .parse()
        .unwrap_or_else(|e| panic!("{name}: not IP:PORT: {e}"))
}

pub fn edge() -> SocketAddr {
    env_addr("MESH_EDGE", "127.0.0.1:10000")
}

pub fn edge_admin() -> SocketAddr {
    env_addr("MESH_EDGE_ADMIN", "127.0.0.1:9901")
}

pub fn prometheus() -> SocketAddr {
    env_addr("MESH_PROMETHEUS", "127.0.0.1:9090")
}

pub fn traces() -> SocketAddr {
    env_addr("MESH_TRACES", "127.0.0.1:16686")
}

pub fn certs_dir() -> PathBuf {
    std::env::var_os("MESH_COMPOSE_CERTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".run/compose/certs"))
}

pub fn project() -> String {
    std::env::var("COMPOSE_PROJECT_NAME").unwrap_or_else(|_| "mesh-filters".to_owned())
}

pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("running docker");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The container of a compose service, running or stopped.
pub fn container(service: &str) -> String {
    let id = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={}", project()),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ]);
    assert!(
        !id.is_empty() && !id.contains('\n'),
        "no single container for service {service} in project {} (is `make up` running?): {id:?}",
        project()
    );
    id
}

/// The address of a service's container on the compose network.
pub fn container_ip(service: &str) -> IpAddr {
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        &container(service),
    ]);
    ip.split_whitespace()
        .next()
        .unwrap_or_default()
        .parse()
        .unwrap_or_else(|e| panic!("{service}: container address {ip:?}: {e}"))
}

/// The admin address of an Envoy: the edge's published port, a sidecar's container address.
pub fn admin(envoy: &str) -> SocketAddr {
    if envoy == "edge" {
        edge_admin()
    } else {
        SocketAddr::new(container_ip(envoy), 9901)
    }
}

/// A sample of an Envoy's `/stats/prometheus`; absent is a failure naming what is there (every
/// test reads a route's metrics after a request on it, which defines them).
pub fn metric(envoy: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, text) = http_get(admin(envoy), "/stats/prometheus").unwrap();
    assert_eq!(status, 200, "{envoy} /stats/prometheus");
    Metrics::parse(&text)
        .value(name, labels)
        .unwrap_or_else(|e| panic!("{envoy}: {e}"))
}

pub fn leaf(name: &str) -> Leaf {
    let dir = certs_dir().join(name);
    Leaf::read(&dir.join("svid.crt"), &dir.join("svid.key"))
        .unwrap_or_else(|e| panic!("{e} (make up makes them)"))
}

pub fn ca_pem() -> String {
    std::fs::read_to_string(certs_dir().join("ca.crt")).unwrap()
}

pub async fn get(path: &str, headers: &[(&str, &str)]) -> Response {
    client::get(edge(), path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path} via the edge: {e}"))
}

/// The service's echo of the request it received.
pub fn seen(response: &Response, header: &str) -> Option<String> {
    response.json()["headers"][header]
        .as_str()
        .map(str::to_owned)
}

pub fn seen_ms(echo: &Value, header: &str) -> u64 {
    echo["headers"][header]
        .as_str()
        .unwrap_or_else(|| panic!("{header} not seen: {echo}"))
        .parse()
        .unwrap()
}

/// Runs `check` until it succeeds, at most for `timeout`; its value (fails the test after).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    wait::eventually(what, timeout, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A random W3C trace id.
pub fn new_trace_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{:032x}",
        nanos ^ (u128::from(std::process::id()) << 96) | (1 << 127)
    )
}
