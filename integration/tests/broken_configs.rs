//! The corpus of invalid configurations against the real Envoy: every invalid plugin
//! configuration is refused at load with one log line naming the filter and the field; every
//! invalid route metadata is logged naming the route, counted in the filter's `config_error`,
//! and the request gets the answer of the filter's failure policy, never a crash.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_integration::broken::{self, Case};
use mesh_integration::client;
use mesh_integration::envoy::{wasm, Envoy};

fn wasm_dir() -> std::path::PathBuf {
    wasm("mesh_filters")
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn every_invalid_plugin_configuration_is_refused_at_load_naming_the_field() {
    let cases: Vec<Case> = broken::corpus()
        .unwrap()
        .into_iter()
        .filter(|c| c.route.is_none())
        .collect();
    assert!(cases.len() >= 30, "{} plugin cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let refused = Envoy::refuse(&broken::bootstrap_for(case, &wasm_dir())).unwrap();
        let prefix = format!("{}: invalid configuration", case.filter);
        match refused.log.lines().find(|l| l.contains(&prefix)) {
            Some(line) if line.contains(&case.expect) => {}
            Some(line) => failures.push(format!("{}: {line}", case.name)),
            None => failures.push(format!("{}: no line {prefix:?}", case.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_invalid_route_metadata_is_counted_and_the_request_still_answered() {
    let cases: Vec<Case> = broken::corpus()
        .unwrap()
        .into_iter()
        // A key that names no stage is not any filter's configuration: only the checker sees it.
        .filter(|c| c.route.is_some() && mesh_filters::STAGES.iter().any(|e| e.name == c.key))
        .collect();
    assert!(cases.len() >= 5);
    for case in &cases {
        let envoy = Envoy::start(&broken::bootstrap_for(case, &wasm_dir())).unwrap();
        let r = client::get(envoy.listener("main"), "/x", &[])
            .await
            .unwrap();
        // The failure policy: the identity stage fails closed, every other stage fails open
        // (and the request goes on, to a service nobody listens for: Envoy's 503).
        let answer = (
            r.status,
            r.header("x-mesh-rejected-by"),
            r.json()["error"].clone(),
        );
        if case.key == "mesh.spiffe_identity" {
            assert_eq!(
                answer,
                (
                    403,
                    Some("mesh.spiffe_identity"),
                    "identity_unverifiable".into()
                ),
                "{}: fails closed",
                case.name
            );
        } else {
            assert_eq!(
                (answer.0, answer.1),
                (503, None),
                "{}: fails open",
                case.name
            );
        }
        let metric = format!("{}_config_error", case.key.replace('.', "_"));
        envoy
            .wait_for_value(&metric, &[("route", "r")], 1.0)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let log = envoy.log();
        let line = log
            .lines()
            .find(|l| l.contains("invalid route metadata on route \"r\""))
            .unwrap_or_else(|| panic!("{}: no log line naming the route:\n{log}", case.name));
        assert!(line.contains(&case.expect), "{}: {line}", case.name);
    }
}
