//! `mesh-filters check` as an operator runs it: on every config we ship (clean), on the corpus
//! of broken ones (exit 1, the error names the field), and on a real Envoy's `/config_dump`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_integration::envoy::{workspace_root, Envoy, Options};
use mesh_integration::upstream;
use mesh_integration::{broken, fixture};
use std::path::Path;
use std::process::Command;

fn check(file: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-filters"))
        .arg("check")
        .arg(file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn every_shipped_config_checks_clean() {
    let mut checked = 0;
    for entry in std::fs::read_dir(workspace_root().join("envoy")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (code, out) = check(&path);
            assert_eq!(code, 0, "{}:\n{out}", path.display());
            assert!(out.contains(" 0 error(s), 0 warning(s)"), "{out}");
            checked += 1;
        }
    }
    assert!(checked >= 2);
}

#[test]
fn the_demo_table_shows_each_routes_effective_settings() {
    let (code, out) = check(&workspace_root().join("envoy/demo.yaml"));
    assert_eq!(code, 0, "{out}");
    let row = |listener: &str, route: &str| {
        out.lines()
            .find(|l| {
                let mut w = l.split_whitespace();
                w.next() == Some(listener) && w.next() == Some(route)
            })
            .unwrap_or_else(|| panic!("no row {listener} {route}:\n{out}"))
            .to_string()
    };
    // Route metadata over the plugin configuration: events has a 2 s deadline.
    assert!(
        row("mesh", "events").contains(" 2s "),
        "{}",
        row("mesh", "events")
    );
    assert!(row("mesh", "learner").contains(" 10s "));
    // health: every stage off; the plaintext listener runs no identity stage and no rate limit.
    assert_eq!(
        row("mesh", "health")
            .split_whitespace()
            .skip(2)
            .collect::<Vec<_>>(),
        ["off", "off", "off", "-", "off", "-"]
    );
    // The rate limit: events per verified identity on the mTLS listener, off elsewhere.
    assert!(
        row("mesh_mtls", "events").contains(" 5/s burst 10 per identity "),
        "{}",
        row("mesh_mtls", "events")
    );
    assert!(row("mesh_mtls", "learner").contains(" off "));
    assert!(row("mesh_mtls", "learner").ends_with("spiffe://mesh.local/ns/*/sa/auth"));
    assert!(row("mesh", "auth").contains("2 within 20%+10/s"));
    assert!(row("mesh", "auth").contains("5 fails, open 60s"));
}

/// The native module's demo (route settings in `typed_per_filter_config`) has the wasm demo's
/// effective settings, route by route; a per-route key that is no stage is an error.
#[test]
fn the_native_demo_has_the_wasm_demos_table() {
    let table = |file: &str| {
        let (code, out) = check(&workspace_root().join(file));
        assert_eq!(code, 0, "{out}");
        out.lines()
            .filter(|l| l.starts_with("mesh ") || l.starts_with("mesh_mtls "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let wasm = table("envoy/demo.yaml");
    assert_eq!(wasm.len(), 13);
    assert_eq!(table("envoy/demo-native.yaml"), wasm);

    let text = std::fs::read_to_string(workspace_root().join("envoy/demo-native.yaml"))
        .unwrap()
        .replacen(
            r#"'{"mesh.deadline": {"timeout": "5s"}}'"#,
            r#"'{"mesh.deadlin": {}}'"#,
            1,
        );
    let report = mesh_filters_cli::check::check_text(&text);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(
        report.errors[0]
            .contains("route \"auth\": typed_per_filter_config mesh: key `mesh.deadlin`"),
        "{:?}",
        report.errors
    );
}

#[test]
fn every_broken_config_is_an_error_that_names_the_field() {
    let cases = broken::corpus().unwrap();
    assert!(cases.len() >= 30, "the corpus has {} cases", cases.len());
    let dir = std::env::temp_dir().join(format!("mesh-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let file = dir.join(format!("{}.json", case.name));
        let bootstrap = broken::bootstrap_for(case, Path::new("/nonexistent"));
        std::fs::write(&file, serde_json::to_string_pretty(&bootstrap).unwrap()).unwrap();
        let (code, out) = check(&file);
        let error = out.lines().find(|l| l.starts_with("error: ")).unwrap_or("");
        let names_route = case.route.is_none() || error.contains("route \"r\"");
        if code != 1 || !error.contains(&case.expect) || !names_route {
            failures.push(format!(
                "{}: exit {code}, expected {:?}\n{out}",
                case.name, case.expect
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unreadable_input_and_bad_usage_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-filters"))
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let (code, out) = check(Path::new("/nonexistent/envoy.yaml"));
    assert_eq!(code, 2, "{out}");
    let dir = std::env::temp_dir().join(format!("mesh-check-yaml-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.yaml");
    std::fs::write(&file, "static_resources: [unclosed").unwrap();
    let (code, out) = check(&file);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not valid YAML or JSON"), "{out}");
}

/// The admin `/config_dump` of a running Envoy (the demo, on free ports) checks clean and shows
/// the same routes as the file.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_config_dump_checks_like_the_file() {
    let svc = upstream::local("auth").await.unwrap();
    fixture::demo_certs().unwrap();
    let text = fixture::demo_config(svc.addr(), svc.addr(), svc.addr()).unwrap();
    let envoy = Envoy::start_text(&text, &Options::default()).unwrap();
    let (status, dump) = envoy.admin_get("/config_dump").unwrap();
    assert_eq!(status, 200);
    let report = mesh_filters_cli::check::check_text(&dump);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.filters.len(), 2, "{:?}", report.filters);
    assert_eq!(report.routes.len(), 13);
}
