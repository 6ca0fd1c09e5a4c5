//! The Grafana dashboard (`dashboards/mesh-filters.json`) cannot drift from the metrics: every
//! PromQL expression parses (`promtool check rules` on a rule file made of them) and names only
//! metrics of the README's metrics table, which `shipped_configs` checks against a live Envoy.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_integration::envoy::workspace_root;
use serde_json::Value;
use std::process::Command;

fn expressions() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(workspace_root().join("dashboards/mesh-filters.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap().to_string();
        assert_eq!(
            panel["datasource"]["uid"], "prometheus",
            "{title}: the provisioned datasource"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            out.push((title.clone(), t["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

#[test]
fn every_dashboard_query_names_documented_metrics() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let exprs = expressions();
    assert!(exprs.len() >= 10);
    let mut named = 0;
    for (title, expr) in &exprs {
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("mesh_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            assert!(
                readme.contains(&format!("| `{name}` |")),
                "{title}: {name} is not in the README's metrics table"
            );
            named += 1;
            rest = &tail[end..];
        }
    }
    assert!(named >= exprs.len());
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let rules: Vec<String> = expressions()
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            format!(
                "      - record: mesh:dashboard_{i}\n        expr: {}",
                serde_json::to_string(expr).unwrap()
            )
        })
        .collect();
    let file =
        std::env::temp_dir().join(format!("mesh-dashboard-rules-{}.yaml", std::process::id()));
    std::fs::write(
        &file,
        format!(
            "groups:\n  - name: dashboard\n    rules:\n{}\n",
            rules.join("\n")
        ),
    )
    .unwrap();
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("{promtool}: {e} (scripts/ensure-tools.sh promtool:prometheus)")
        });
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The compose stack's Grafana loads this dashboard over its Prometheus: the mounts point at
/// files that exist and the provisioned datasource is the `prometheus` service by the uid the
/// panels use.
#[test]
fn the_compose_stack_provisions_the_dashboard_over_its_prometheus() {
    let root = workspace_root();
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("docker-compose.yml")).unwrap())
            .unwrap();
    let services = &compose["services"];
    assert!(services.get("prometheus").is_some());
    let grafana = &services["grafana"];
    for volume in grafana["volumes"].as_sequence().unwrap() {
        let host = volume.as_str().unwrap().split(':').next().unwrap();
        assert!(
            root.join(host).exists(),
            "grafana mounts {host}, which does not exist"
        );
    }
    let ds: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("dashboards/provisioning/datasources/prometheus.yaml"))
            .unwrap(),
    )
    .unwrap();
    let ds = &ds["datasources"][0];
    assert_eq!(ds["uid"].as_str(), Some("prometheus"));
    assert_eq!(ds["url"].as_str(), Some("http://prometheus:9090"));
}
