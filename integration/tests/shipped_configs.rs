//! The configurations we ship under `envoy/` work as written: Envoy validates each one (which
//! loads the wasm and runs its plugin configuration), and the demo config, started with its
//! ports moved to free ones, behaves as the README says.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_integration::client;
use mesh_integration::client::tls::Tls;
use mesh_integration::envoy::{envoy_binary, wasm, workspace_root, Envoy, Options};
use mesh_integration::fixture;
use mesh_integration::upstream;
use std::process::Command;
use std::time::Duration;

fn shipped() -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(workspace_root().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

#[test]
fn every_shipped_envoy_config_validates_with_the_real_envoy() {
    wasm("mesh_deadline").unwrap();
    wasm("mesh_circuit_breaker").unwrap();
    wasm("mesh_retry_budget").unwrap();
    wasm("mesh_spiffe_identity").unwrap();
    wasm("mesh_trace_propagation").unwrap();
    wasm("mesh_filters").unwrap();
    fixture::demo_certs().unwrap();
    for file in shipped() {
        let out = Command::new(envoy_binary())
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&file)
            .current_dir(workspace_root())
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && log.contains("OK"),
            "{} does not validate:\n{log}",
            file.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_config_behaves_as_the_readme_says() {
    let auth = upstream::local("auth").await.unwrap();
    let learner = upstream::local("learner").await.unwrap();
    let events = upstream::local("events").await.unwrap();
    let text = fixture::demo_config(auth.addr(), learner.addr(), events.addr()).unwrap();
    let envoy = Envoy::start_text(&text, &Options::workers(2)).unwrap();
    let addr = envoy.listener("mesh");

    let r = client::get(addr, "/auth/hello", &[]).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["service"], "auth");
    let budget: u64 = r.json()["headers"]["x-envoy-expected-rq-timeout-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((4900..=5000).contains(&budget), "{budget}");
    // One trace in W3C and B3 upstream; this hop's traceparent comes back to the caller.
    let upstream_tp = r.json()["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(r.header("traceresponse"), Some(upstream_tp.as_str()));
    assert!(r.json()["headers"]["b3"]
        .as_str()
        .unwrap()
        .starts_with(&upstream_tp[3..35]));

    let r = client::get(addr, "/events/x?sleep_ms=3000", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 504);
    assert!(
        r.elapsed >= Duration::from_millis(1700) && r.elapsed <= Duration::from_millis(2300),
        "{:?}",
        r.elapsed
    );

    let r = client::get(addr, "/learner/x", &[("grpc-timeout", "300m")])
        .await
        .unwrap();
    let budget: u64 = r.json()["headers"]["x-envoy-expected-rq-timeout-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((250..=300).contains(&budget), "{budget}");

    let r = client::get(addr, "/health", &[("x-envoy-expected-rq-timeout-ms", "0")])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("x-mesh-rejected-by")),
        (200, None),
        "health is exempt"
    );

    envoy
        .wait_for_value("mesh_deadline_rq_timeout", &[("route", "events")], 1.0)
        .await
        .unwrap();

    // A forged identity on the plaintext listener never reaches a service.
    let r = client::get(
        addr,
        "/auth/hello",
        &[("x-spiffe-id", "spiffe://mesh.local/ns/default/sa/admin")],
    )
    .await
    .unwrap();
    assert_eq!(r.json()["headers"]["x-spiffe-id"], serde_json::Value::Null);

    // The mTLS listener: learner may call auth and its verified ID is forwarded; admin may not.
    let mtls = envoy.listener("mesh-mtls");
    let ca = std::fs::read_to_string(fixture::demo_certs().unwrap().join("ca.crt")).unwrap();
    let svid = |name: &str| fixture::demo_leaf(name).unwrap();
    let learner_svid = svid("learner");
    let r = Tls::new("localhost", &ca)
        .presenting(Some(&learner_svid))
        .get(
            mtls,
            "/auth/hello",
            &[("x-spiffe-id", "spiffe://mesh.local/ns/default/sa/admin")],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["headers"]["x-spiffe-id"],
        "spiffe://mesh.local/ns/default/sa/learner"
    );
    let admin_svid = svid("admin");
    let r = Tls::new("localhost", &ca)
        .presenting(Some(&admin_svid))
        .get(mtls, "/auth/hello", &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.header("x-mesh-rejected-by")),
        (403, Some("mesh.spiffe_identity"))
    );
    let r = Tls::new("localhost", &ca)
        .presenting(Some(&learner_svid))
        .get(mtls, "/learner/x", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 403, "learner may not call itself: only auth may");
    assert!(
        Tls::new("localhost", &ca)
            .get(mtls, "/auth/hello", &[])
            .await
            .is_err(),
        "no client certificate, no connection"
    );
    metrics_are_documented_and_valid(&envoy.prometheus().unwrap());
}

/// Every `mesh_*` metric the demo exports is in the README's metrics table with its type, and
/// `promtool check metrics` (Debian's `prometheus` package; `make test` installs it) accepts the
/// whole `/stats/prometheus` page.
fn metrics_are_documented_and_valid(page: &str) {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let mut seen = 0;
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("# TYPE mesh_") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (name, kind) = (words.next().unwrap(), words.next().unwrap());
        let row = format!("| `mesh_{name}` | {kind} |");
        assert!(readme.contains(&row), "README's metrics table lacks {row}");
        seen += 1;
    }
    assert!(seen >= 20, "only {seen} mesh metrics on the page");

    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{promtool}: {e} (scripts/ensure-tools.sh promtool:prometheus)")
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool exits 3 for lint findings only (naming advice such as counters without _total,
    // which are Envoy's names); 1 means the page does not parse.
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(3),
        "promtool: {text}"
    );
    let mesh_findings: Vec<&str> = text.lines().filter(|l| l.contains("mesh_")).collect();
    eprintln!(
        "promtool on the demo's /stats/prometheus: exit {:?}, {} findings on mesh_ metrics, e.g. {:?}",
        out.status.code(),
        mesh_findings.len(),
        mesh_findings.iter().take(3).collect::<Vec<_>>()
    );
}
