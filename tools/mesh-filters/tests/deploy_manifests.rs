//! The Kubernetes and Istio material under `deploy/`. No cluster runs here, so the manifests are
//! checked for shape (every YAML document parses; the fields each kind needs are there and fit
//! together), every plugin configuration and every route's `mesh.*` metadata is run through the
//! filters' own configuration code, and the Envoy bootstrap of the Kubernetes sidecar is
//! validated by the real Envoy (`envoy --mode validate`, `$ENVOY_BIN`), module loaded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_kit::config::ConfigError;
use mesh_kit::testing::TestHost;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The suite's sections, in stage order.
fn suite_sections() -> Vec<&'static str> {
    mesh_filters::STAGES.iter().map(|e| e.section()).collect()
}

const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const ENVOY_IMAGE: &str = "envoyproxy/envoy:v1.40-latest";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// One YAML document of a file under deploy/.
struct Doc {
    file: String,
    index: usize,
    text: String,
    value: Value,
}

impl Doc {
    fn at(&self, path: &[&str]) -> Option<&Value> {
        at(&self.value, path)
    }
    fn str_at(&self, path: &[&str]) -> &str {
        self.at(path)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{self}: `{}` must be a string", path.join(".")))
    }
    fn kind(&self) -> &str {
        self.str_at(&["kind"])
    }
    fn name(&self) -> &str {
        self.str_at(&["metadata", "name"])
    }
}

impl std::fmt::Display for Doc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = at(&self.value, &["kind"]).and_then(Value::as_str);
        let name = at(&self.value, &["metadata", "name"]).and_then(Value::as_str);
        write!(
            f,
            "{} (document {}: {} {})",
            self.file,
            self.index + 1,
            what.unwrap_or("?"),
            name.unwrap_or("?")
        )
    }
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Every YAML document under deploy/ (multi-document files split on `---` lines).
fn documents() -> Vec<Doc> {
    let root = root();
    let mut files = Vec::new();
    yaml_files(&root.join("deploy"), &mut files);
    assert!(!files.is_empty(), "no YAML files under deploy/");
    let mut docs = Vec::new();
    for path in files {
        let file = path
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut chunks = vec![String::new()];
        for line in text.lines() {
            if line.trim_end() == "---" {
                chunks.push(String::new());
            } else {
                let chunk = chunks.last_mut().unwrap();
                chunk.push_str(line);
                chunk.push('\n');
            }
        }
        let mut index = 0;
        for chunk in chunks {
            let value: Value = serde_yaml::from_str(&chunk)
                .unwrap_or_else(|e| panic!("{file}, document {}: not YAML: {e}", index + 1));
            if value.is_null() {
                continue; // only comments
            }
            docs.push(Doc {
                file: file.clone(),
                index,
                text: chunk,
                value,
            });
            index += 1;
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [Doc], kind: &str) -> Vec<&'a Doc> {
    docs.iter().filter(|d| d.kind() == kind).collect()
}

/// What Istio does to a `pluginConfig` on its way to the filter: a `google.protobuf.Struct`
/// (every number a double), written as JSON into a `StringValue`. Integral doubles are written
/// without a fraction, so they stay integers.
fn through_struct(v: &Value) -> Value {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().unwrap();
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                Value::from(f as i64)
            } else {
                Value::from(f)
            }
        }
        Value::Array(a) => Value::Array(a.iter().map(through_struct).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), through_struct(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Validates one filter's configuration with that filter's own code (the checker's).
fn check_section(section: &str, config: &Value) -> Result<(), ConfigError> {
    mesh_filters_cli::check::validate(&format!("mesh.{section}"), config)
}

/// The section of a single filter's root_id (`mesh.deadline` → `deadline`); `None` for the
/// suite (`mesh`).
fn section_of(plugin_name: &str) -> Option<&'static str> {
    if plugin_name == "mesh" {
        return None;
    }
    let section = plugin_name
        .strip_prefix("mesh.")
        .unwrap_or_else(|| panic!("pluginName {plugin_name:?} is not a mesh filter's root_id"));
    Some(
        suite_sections()
            .into_iter()
            .find(|s| *s == section)
            .unwrap_or_else(|| panic!("pluginName {plugin_name:?}: no such filter")),
    )
}

/// The image name a module is pushed as (deploy/README.md): `deadline`, ..., `suite`.
fn image_name(plugin_name: &str) -> String {
    section_of(plugin_name).map_or_else(|| "suite".to_string(), |s| s.replace('_', "-"))
}

/// "open" or "closed", from the first words of the filter README's "Failure policy" section.
fn failure_policy(section: &str) -> &'static str {
    let path = root()
        .join("filters")
        .join(section.replace('_', "-"))
        .join("README.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (a filter's README, for its failure policy)",
            path.display()
        )
    });
    let policy = text
        .split("\n## Failure policy")
        .nth(1)
        .unwrap_or_else(|| panic!("{}: no `## Failure policy` section", path.display()))
        .trim_start()
        .to_lowercase();
    if policy.starts_with("fail open") || policy.starts_with("fails open") {
        "open"
    } else if policy.starts_with("fail closed") || policy.starts_with("fails closed") {
        "closed"
    } else {
        panic!(
            "{}: the failure policy does not start with `Fail(s) open` or `Fail(s) closed`",
            path.display()
        )
    }
}

/// Every Wasm HTTP filter's `config` in an Envoy bootstrap (or part of one).
fn wasm_configs<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(o) => {
            if o.get("@type").and_then(Value::as_str) == Some(WASM_TYPE) {
                if let Some(config) = o.get("config") {
                    out.push(config);
                }
            }
            o.values().for_each(|v| wasm_configs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| wasm_configs(v, out)),
        _ => {}
    }
}

/// The plugin configuration (parsed JSON) of the wasm filter with this root_id.
fn plugin_config(bootstrap_part: &Value, root_id: &str) -> Value {
    let mut configs = Vec::new();
    wasm_configs(bootstrap_part, &mut configs);
    let config = configs
        .into_iter()
        .find(|c| c.get("root_id").and_then(Value::as_str) == Some(root_id))
        .unwrap_or_else(|| panic!("no wasm filter with root_id {root_id}"));
    let text = at(config, &["configuration", "value"])
        .and_then(Value::as_str)
        .unwrap();
    serde_json::from_str(text).unwrap()
}

/// Every named route (an object with `name`, `match` and an action) → its `mesh.*` metadata.
fn routes(v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(o) => {
            let is_route = o.contains_key("match")
                && ["route", "direct_response", "redirect"]
                    .iter()
                    .any(|k| o.contains_key(*k));
            if let (true, Some(Value::String(name))) = (is_route, o.get("name")) {
                let md = at(v, &["metadata", "filter_metadata"])
                    .cloned()
                    .unwrap_or(Value::Object(Map::new()));
                out.insert(name.clone(), md);
            }
            o.values().for_each(|v| routes(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| routes(v, out)),
        _ => {}
    }
}

fn yaml_file(path: &Path) -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The demo's mTLS listener (envoy/demo.yaml, `mesh-mtls`): the source of the examples.
fn demo_mtls_listener() -> Value {
    let demo = yaml_file(&root().join("envoy/demo.yaml"));
    at(&demo, &["static_resources", "listeners"])
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .find(|l| l.get("name").and_then(Value::as_str) == Some("mesh-mtls"))
        .expect("envoy/demo.yaml has no listener mesh-mtls")
        .clone()
}

fn demo_suite_config() -> Value {
    plugin_config(&demo_mtls_listener(), "mesh")
}

fn demo_routes() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    routes(&demo_mtls_listener(), &mut out);
    out
}

fn wasm_plugins(docs: &[Doc]) -> BTreeMap<String, &Doc> {
    let mut plugins = BTreeMap::new();
    for doc in of_kind(docs, "WasmPlugin") {
        let name = doc.str_at(&["spec", "pluginName"]).to_string();
        assert!(
            plugins.insert(name.clone(), doc).is_none(),
            "two WasmPlugins with pluginName {name}"
        );
    }
    plugins
}

fn plugin_config_of(doc: &Doc) -> Value {
    let config = doc
        .at(&["spec", "pluginConfig"])
        .unwrap_or_else(|| panic!("{doc}: no spec.pluginConfig"));
    assert!(config.is_object(), "{doc}: pluginConfig must be a mapping");
    through_struct(config)
}

/// The sections a plugin runs: its own, or the suite's configured ones.
fn plugin_sections(plugin_name: &str, config: &Value) -> Vec<String> {
    match section_of(plugin_name) {
        Some(s) => vec![s.to_string()],
        None => config.as_object().unwrap().keys().cloned().collect(),
    }
}

#[test]
fn every_manifest_parses_and_has_the_basics_of_its_kind() {
    let docs = documents();
    let expected: BTreeMap<&str, &str> = [
        ("WasmPlugin", "extensions.istio.io/v1alpha1"),
        ("EnvoyFilter", "networking.istio.io/v1alpha3"),
        ("Deployment", "apps/v1"),
        ("Service", "v1"),
        ("ConfigMap", "v1"),
        ("ServiceAccount", "v1"),
    ]
    .into_iter()
    .collect();
    let mut seen = BTreeSet::new();
    for doc in &docs {
        let kind = doc.kind();
        let api = expected
            .get(kind)
            .unwrap_or_else(|| panic!("{doc}: kind {kind} is not one this test checks"));
        assert_eq!(doc.str_at(&["apiVersion"]), *api, "{doc}: apiVersion");
        let name = doc.name();
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-')
                && !name.ends_with('-'),
            "{doc}: metadata.name {name:?} is not a DNS label"
        );
        assert!(
            seen.insert((kind.to_string(), name.to_string())),
            "{doc}: a second {kind} named {name}"
        );
        assert!(
            doc.at(&["spec"]).is_some() || doc.at(&["data"]).is_some() || kind == "ServiceAccount",
            "{doc}: no spec"
        );
    }
    for (kind, at_least) in [
        ("WasmPlugin", 6),
        ("EnvoyFilter", 1),
        ("Deployment", 1),
        ("Service", 1),
        ("ConfigMap", 1),
    ] {
        let n = of_kind(&docs, kind).len();
        assert!(
            n >= at_least,
            "{n} {kind}(s) under deploy/, expected at least {at_least}"
        );
    }
}

#[test]
fn a_wasm_plugin_per_filter_and_one_for_the_suite_pulled_from_oci_images() {
    let docs = documents();
    let plugins = wasm_plugins(&docs);
    let mut wanted: BTreeSet<String> = suite_sections()
        .iter()
        .map(|s| format!("mesh.{s}"))
        .collect();
    wanted.insert("mesh".to_string());
    assert_eq!(
        plugins.keys().cloned().collect::<BTreeSet<_>>(),
        wanted,
        "one WasmPlugin per filter (pluginName = its root_id) and one for the suite (mesh)"
    );
    for (plugin_name, doc) in &plugins {
        let url = doc.str_at(&["spec", "url"]);
        let reference = url
            .strip_prefix("oci://")
            .unwrap_or_else(|| panic!("{doc}: url {url:?} is not oci://"));
        let (repository, version) = reference
            .rsplit_once('@')
            .or_else(|| reference.rsplit_once(':').filter(|(r, _)| r.contains('/')))
            .unwrap_or_else(|| panic!("{doc}: url {url:?} has neither a tag nor a digest"));
        assert!(
            !version.is_empty() && !version.contains('/'),
            "{doc}: url {url:?}"
        );
        assert_ne!(version, "latest", "{doc}: a moving tag");
        let image = repository.rsplit('/').next().unwrap();
        assert_eq!(
            image,
            image_name(plugin_name),
            "{doc}: the image of {plugin_name} (deploy/README.md names them)"
        );
        assert!(
            matches!(
                doc.str_at(&["spec", "imagePullPolicy"]),
                "IfNotPresent" | "Always"
            ),
            "{doc}: imagePullPolicy"
        );
        assert!(
            matches!(
                doc.str_at(&["spec", "phase"]),
                "AUTHN" | "AUTHZ" | "STATS" | "UNSPECIFIED_PHASE"
            ),
            "{doc}: phase"
        );
        assert!(
            doc.at(&["spec", "priority"]).is_some_and(Value::is_i64),
            "{doc}: priority must be an integer"
        );
        let labels = doc
            .at(&["spec", "selector", "matchLabels"])
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{doc}: no spec.selector.matchLabels"));
        assert!(
            !labels.is_empty() && labels.values().all(Value::is_string),
            "{doc}: matchLabels"
        );
        let modes = doc
            .at(&["spec", "match"])
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{doc}: no spec.match list"));
        assert!(!modes.is_empty(), "{doc}: empty spec.match");
        for m in modes {
            let mode = m.get("mode").and_then(Value::as_str).unwrap_or("");
            assert!(
                matches!(mode, "CLIENT" | "SERVER" | "CLIENT_AND_SERVER"),
                "{doc}: match mode {mode:?}"
            );
        }
        let config = plugin_config_of(doc);
        if plugin_sections(plugin_name, &config)
            .iter()
            .any(|s| s == "spiffe_identity")
        {
            // The caller's identity is the inbound listener's mTLS peer; on outbound traffic
            // the identity stage would refuse every request.
            assert!(
                modes
                    .iter()
                    .all(|m| m.get("mode").and_then(Value::as_str) == Some("SERVER")),
                "{doc}: identity checks belong on inbound traffic only (mode: SERVER)"
            );
        }
    }
}

#[test]
fn plugin_configs_are_the_demos_and_the_filters_accept_them() {
    let docs = documents();
    let plugins = wasm_plugins(&docs);
    let demo = demo_suite_config();
    for (plugin_name, doc) in &plugins {
        let config = plugin_config_of(doc);
        match section_of(plugin_name) {
            None => {
                let sections = config.as_object().unwrap();
                for (key, value) in sections {
                    assert!(
                        suite_sections().contains(&key.as_str()),
                        "{doc}: the suite's top-level keys are its stages ({}), not {key:?}",
                        suite_sections().join(", ")
                    );
                    assert!(value.is_object(), "{doc}: section {key} must be a mapping");
                }
                let slots = mesh_filters::factory(&config, &TestHost::default())
                    .unwrap_or_else(|e| panic!("{doc}: {}", e.line("mesh")));
                assert_eq!(slots.len(), sections.len(), "{doc}: stages built");
                assert_eq!(config, demo, "{doc}: not the demo's suite configuration");
            }
            Some(section) => {
                let keys = config.as_object().unwrap();
                assert!(
                    keys.keys().all(|k| !suite_sections().contains(&k.as_str())),
                    "{doc}: a single filter takes its own configuration, not suite sections"
                );
                check_section(section, &config)
                    .unwrap_or_else(|e| panic!("{doc}: {}", e.line(plugin_name)));
                assert_eq!(
                    Some(&config),
                    demo.get(section),
                    "{doc}: not the demo's `{section}` configuration"
                );
            }
        }
    }
}

#[test]
fn single_plugins_run_in_the_suites_stage_order() {
    let docs = documents();
    let plugins = wasm_plugins(&docs);
    let phase_rank = |p: &str| match p {
        "AUTHN" => 0,
        "AUTHZ" => 1,
        "STATS" => 2,
        _ => 3,
    };
    let mut order: Vec<(i64, i64, &str)> = plugins
        .iter()
        .filter_map(|(name, doc)| {
            let section = section_of(name)?;
            Some((
                phase_rank(doc.str_at(&["spec", "phase"])),
                -doc.at(&["spec", "priority"])
                    .and_then(Value::as_i64)
                    .unwrap(),
                section,
            ))
        })
        .collect();
    order.sort_unstable();
    for pair in order.windows(2) {
        assert!(
            (pair[0].0, pair[0].1) != (pair[1].0, pair[1].1),
            "{} and {} share phase and priority: Istio would order them by name",
            pair[0].2,
            pair[1].2
        );
    }
    let sections: Vec<&str> = order.iter().map(|(_, _, s)| *s).collect();
    assert_eq!(
        sections,
        suite_sections(),
        "phase, then priority (higher first)"
    );
}

#[test]
fn the_suite_and_the_single_filters_never_select_the_same_workload() {
    let docs = documents();
    let plugins = wasm_plugins(&docs);
    let labels = |doc: &Doc| {
        doc.at(&["spec", "selector", "matchLabels"])
            .and_then(Value::as_object)
            .unwrap()
            .clone()
    };
    let suite = labels(plugins["mesh"]);
    for (name, doc) in &plugins {
        if name == "mesh" {
            continue;
        }
        let single = labels(doc);
        let exclusive = single
            .iter()
            .any(|(k, v)| suite.get(k).is_some_and(|s| s != v));
        assert!(
            exclusive,
            "{doc}: its selector {single:?} and the suite's {suite:?} can match the same pod"
        );
    }
}

#[test]
fn fail_strategies_follow_each_filters_failure_policy() {
    let docs = documents();
    for (plugin_name, doc) in wasm_plugins(&docs) {
        let config = plugin_config_of(doc);
        let closed = plugin_sections(&plugin_name, &config)
            .iter()
            .any(|s| failure_policy(s) == "closed");
        let expected = if closed { "FAIL_CLOSE" } else { "FAIL_OPEN" };
        assert_eq!(
            doc.str_at(&["spec", "failStrategy"]),
            expected,
            "{doc}: the filter README's failure policy"
        );
        let lines: Vec<&str> = doc.text.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.trim_start().starts_with("failStrategy:"))
            .unwrap();
        assert!(
            i > 0 && lines[i - 1].trim_start().starts_with('#'),
            "{doc}: say why, in a comment above failStrategy"
        );
    }
}

#[test]
fn envoy_filters_patch_the_demos_route_metadata_and_the_filters_accept_it() {
    let docs = documents();
    let plugins = wasm_plugins(&docs);
    let suite = plugin_config_of(plugins["mesh"]);
    let demo = demo_routes();
    // Where the plugins run, as EnvoyFilter contexts.
    let mut contexts = BTreeSet::new();
    for doc in plugins.values() {
        for m in doc
            .at(&["spec", "match"])
            .and_then(Value::as_array)
            .unwrap()
        {
            match m.get("mode").and_then(Value::as_str).unwrap() {
                "SERVER" => {
                    contexts.insert("SIDECAR_INBOUND");
                }
                "CLIENT" => {
                    contexts.extend(["SIDECAR_OUTBOUND", "GATEWAY"]);
                }
                _ => {
                    contexts.extend(["SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"]);
                }
            }
        }
    }
    let mut patched_routes = BTreeSet::new();
    let filters = of_kind(&docs, "EnvoyFilter");
    assert!(!filters.is_empty());
    for doc in filters {
        let patches = doc
            .at(&["spec", "configPatches"])
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{doc}: no spec.configPatches"));
        assert!(!patches.is_empty(), "{doc}: empty configPatches");
        let app = doc
            .at(&["spec", "workloadSelector", "labels", "app"])
            .and_then(Value::as_str);
        for (i, patch) in patches.iter().enumerate() {
            let here = format!("{doc}, configPatches[{i}]");
            let apply_to = at(patch, &["applyTo"])
                .and_then(Value::as_str)
                .unwrap_or("");
            assert!(
                matches!(
                    apply_to,
                    "LISTENER"
                        | "FILTER_CHAIN"
                        | "NETWORK_FILTER"
                        | "HTTP_FILTER"
                        | "ROUTE_CONFIGURATION"
                        | "VIRTUAL_HOST"
                        | "HTTP_ROUTE"
                        | "CLUSTER"
                ),
                "{here}: applyTo {apply_to:?}"
            );
            let context = at(patch, &["match", "context"])
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{here}: no match.context"));
            assert!(
                matches!(
                    context,
                    "ANY" | "SIDECAR_INBOUND" | "SIDECAR_OUTBOUND" | "GATEWAY"
                ),
                "{here}: context {context:?}"
            );
            let operation = at(patch, &["patch", "operation"])
                .and_then(Value::as_str)
                .unwrap_or("");
            assert!(
                matches!(
                    operation,
                    "MERGE"
                        | "ADD"
                        | "REMOVE"
                        | "INSERT_BEFORE"
                        | "INSERT_AFTER"
                        | "INSERT_FIRST"
                        | "REPLACE"
                ),
                "{here}: patch.operation {operation:?}"
            );
            let value = at(patch, &["patch", "value"])
                .filter(|v| v.is_object())
                .unwrap_or_else(|| panic!("{here}: no patch.value mapping"));
            if apply_to != "HTTP_ROUTE" {
                continue;
            }
            assert!(
                contexts.contains(context),
                "{here}: the plugins do not run in {context} (their match modes)"
            );
            let anchor = at(
                patch,
                &["match", "routeConfiguration", "vhost", "route", "name"],
            )
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{here}: match a route by name"));
            let route_name = match operation {
                "MERGE" => {
                    // Istio's inbound route is `default`: the workload's own service.
                    app.filter(|_| anchor == "default")
                        .unwrap_or(anchor)
                        .to_string()
                }
                "INSERT_BEFORE" | "INSERT_AFTER" | "INSERT_FIRST" => {
                    for key in ["name", "match", "route"] {
                        assert!(
                            value.get(key).is_some(),
                            "{here}: the new route has no {key}"
                        );
                    }
                    value["name"].as_str().unwrap().to_string()
                }
                other => panic!("{here}: {other} on a route"),
            };
            let md = at(value, &["metadata", "filter_metadata"])
                .and_then(Value::as_object)
                .unwrap_or_else(|| panic!("{here}: no metadata.filter_metadata"));
            let mut mesh_keys = 0;
            for (key, section_md) in md {
                let Some(section) = key.strip_prefix("mesh.") else {
                    continue; // someone else's metadata
                };
                assert!(
                    suite_sections().contains(&section),
                    "{here}: `{key}` is not a mesh filter's key"
                );
                mesh_keys += 1;
                let base = suite
                    .get(section)
                    .cloned()
                    .unwrap_or(Value::Object(Map::new()));
                let section_md = through_struct(section_md);
                let merged = mesh_kit::route::merge(&base, &section_md)
                    .unwrap_or_else(|e| panic!("{here}: {}", e.line(key)));
                if let Some(merged) = merged {
                    check_section(section, &merged)
                        .unwrap_or_else(|e| panic!("{here}: {}", e.line(key)));
                }
            }
            assert!(mesh_keys > 0, "{here}: no mesh.* metadata");
            let from_demo = demo
                .get(&route_name)
                .unwrap_or_else(|| panic!("{here}: the demo has no route {route_name:?}"));
            assert_eq!(
                &Value::Object(md.clone()),
                from_demo,
                "{here}: not the demo's metadata of route {route_name}"
            );
            patched_routes.insert(route_name);
        }
    }
    for service in ["auth", "learner", "events"] {
        assert!(
            patched_routes.contains(service),
            "no route metadata for the demo's {service} service"
        );
    }
}

/// The Kubernetes example's objects, and the bootstrap of its sidecar.
struct Pod<'a> {
    deployment: &'a Doc,
    spec: &'a Value,
    bootstrap: Value,
    /// Volume name → mount path in the envoy container.
    envoy_mounts: BTreeMap<String, String>,
}

fn containers(spec: &Value, key: &str) -> Vec<Value> {
    spec.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn kubernetes_pod(docs: &[Doc]) -> Pod<'_> {
    let deployments: Vec<&Doc> = of_kind(docs, "Deployment")
        .into_iter()
        .filter(|d| d.file.starts_with("deploy/kubernetes/"))
        .collect();
    assert_eq!(deployments.len(), 1, "one Deployment in deploy/kubernetes");
    let deployment = deployments[0];
    let spec = deployment
        .at(&["spec", "template", "spec"])
        .unwrap_or_else(|| panic!("{deployment}: no spec.template.spec"));
    let envoy = containers(spec, "containers")
        .into_iter()
        .find(|c| c.get("image").and_then(Value::as_str) == Some(ENVOY_IMAGE))
        .unwrap_or_else(|| panic!("{deployment}: no container of image {ENVOY_IMAGE}"));
    let envoy_mounts: BTreeMap<String, String> = envoy
        .get("volumeMounts")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["mountPath"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The bootstrap: the file after `-c`, from the ConfigMap volume mounted there.
    let args: Vec<&str> = envoy
        .get("args")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args
        .iter()
        .position(|a| *a == "-c" || *a == "--config-path")
        .and_then(|i| args.get(i + 1))
        .unwrap_or_else(|| panic!("{deployment}: envoy has no -c <bootstrap>"));
    let volumes = spec.get("volumes").and_then(Value::as_array).unwrap();
    let (config_map, key) = volumes
        .iter()
        .filter_map(|v| {
            let mount = envoy_mounts.get(v["name"].as_str()?)?;
            let cm = v.get("configMap")?;
            let items = cm.get("items").and_then(Value::as_array)?;
            items.iter().find_map(|item| {
                (format!("{mount}/{}", item["path"].as_str()?) == *config_path)
                    .then(|| (cm["name"].as_str().unwrap(), item["key"].as_str().unwrap()))
            })
        })
        .next()
        .unwrap_or_else(|| {
            panic!("{deployment}: {config_path} is no ConfigMap item mounted in envoy")
        });
    let cm = of_kind(docs, "ConfigMap")
        .into_iter()
        .find(|d| d.name() == config_map)
        .unwrap_or_else(|| panic!("{deployment}: ConfigMap {config_map} is not under deploy/"));
    let text = cm
        .at(&["data", key])
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{cm}: no data key {key}"));
    let bootstrap: Value =
        serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{cm}: {key} is not YAML: {e}"));
    Pod {
        deployment,
        spec,
        bootstrap,
        envoy_mounts,
    }
}

/// Every `filename` in a bootstrap, rewritten by `f`.
fn rewrite_filenames(v: &mut Value, f: &mut dyn FnMut(&str) -> String) {
    match v {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                match v {
                    Value::String(s) if k == "filename" => *s = f(s),
                    _ => rewrite_filenames(v, f),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|v| rewrite_filenames(v, f)),
        _ => {}
    }
}

fn listener_ports(bootstrap: &Value) -> BTreeSet<i64> {
    at(bootstrap, &["static_resources", "listeners"])
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .filter_map(|l| at(l, &["address", "socket_address", "port_value"])?.as_i64())
        .collect()
}

#[test]
fn the_kubernetes_objects_fit_together() {
    let docs = documents();
    let pod = kubernetes_pod(&docs);
    let d = pod.deployment;
    let pod_labels = d
        .at(&["spec", "template", "metadata", "labels"])
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{d}: no pod labels"));
    let selector = d
        .at(&["spec", "selector", "matchLabels"])
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{d}: no spec.selector.matchLabels"));
    assert!(
        !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
        "{d}: the selector must match the pod's labels"
    );
    let volumes: BTreeMap<String, Value> = pod.spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap().to_string(), v.clone()))
        .collect();
    let all = [
        containers(pod.spec, "initContainers"),
        containers(pod.spec, "containers"),
    ]
    .concat();
    let mut ports = BTreeMap::new();
    for c in &all {
        let name = c["name"].as_str().unwrap();
        assert!(c["image"].is_string(), "{d}: container {name} has no image");
        for m in c
            .get("volumeMounts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let v = m["name"].as_str().unwrap();
            assert!(
                volumes.contains_key(v),
                "{d}: {name} mounts unknown volume {v}"
            );
        }
        for p in c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            ports.insert(
                p["name"].as_str().unwrap_or("").to_string(),
                p["containerPort"].as_i64().unwrap(),
            );
        }
    }
    // The Secret with the certificates is made by hand (deploy/README.md says how).
    let readme = std::fs::read_to_string(root().join("deploy/README.md")).unwrap();
    for v in volumes.values() {
        if let Some(secret) = v.get("secret") {
            let name = secret["secretName"].as_str().unwrap();
            assert!(
                readme.contains(&format!("kubectl create secret generic {name} ")),
                "{d}: deploy/README.md does not say how to make the Secret {name}"
            );
        }
    }
    // Every file the bootstrap names is in a volume mounted into the envoy container; the
    // module's volume is filled by an init container copying it to exactly that path.
    let mut files = Vec::new();
    let mut copy = pod.bootstrap.clone();
    rewrite_filenames(&mut copy, &mut |f| {
        files.push(f.to_string());
        f.to_string()
    });
    let mut configs = Vec::new();
    wasm_configs(&pod.bootstrap, &mut configs);
    assert!(!configs.is_empty(), "{d}: the sidecar runs no wasm filter");
    for config in configs {
        let module = at(config, &["vm_config", "code", "local", "filename"])
            .and_then(Value::as_str)
            .unwrap();
        let (volume, _) = pod
            .envoy_mounts
            .iter()
            .find(|(_, path)| module.starts_with(&format!("{path}/")))
            .unwrap_or_else(|| panic!("{d}: {module} is in no volume of the envoy container"));
        let copier = containers(pod.spec, "initContainers")
            .into_iter()
            .find(|c| {
                c.get("volumeMounts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|m| m["name"] == volume.as_str())
            })
            .unwrap_or_else(|| panic!("{d}: no init container fills volume {volume}"));
        let args = copier["args"].as_array().unwrap();
        assert_eq!(
            args.last().and_then(Value::as_str),
            Some(module),
            "{d}: the init container copies the module elsewhere than the bootstrap loads it"
        );
    }
    for f in &files {
        assert!(
            pod.envoy_mounts
                .values()
                .any(|path| f.starts_with(&format!("{path}/"))),
            "{d}: the bootstrap reads {f}, which is in no volume of the envoy container"
        );
    }
    // The Service selects these pods and targets a port the sidecar listens on.
    let listening = listener_ports(&pod.bootstrap);
    let services = of_kind(&docs, "Service");
    assert!(!services.is_empty());
    for s in services {
        let sel = s
            .at(&["spec", "selector"])
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("{s}: no spec.selector"));
        assert!(
            !sel.is_empty() && sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
            "{s}: its selector does not match the pods of {d}"
        );
        let service_ports = s
            .at(&["spec", "ports"])
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{s}: no spec.ports"));
        assert!(!service_ports.is_empty());
        for p in service_ports {
            assert!(p["port"].is_i64(), "{s}: port");
            let target = match &p["targetPort"] {
                Value::String(name) => *ports
                    .get(name)
                    .unwrap_or_else(|| panic!("{s}: targetPort {name} is no container port")),
                Value::Number(n) => n.as_i64().unwrap(),
                _ => p["port"].as_i64().unwrap(),
            };
            assert!(
                listening.contains(&target),
                "{s}: the sidecar has no listener on port {target}"
            );
        }
    }
    // The readiness probe reaches a listener of the sidecar.
    let envoy = containers(pod.spec, "containers")
        .into_iter()
        .find(|c| c["image"] == ENVOY_IMAGE)
        .unwrap();
    let probe_port = &envoy["readinessProbe"]["httpGet"]["port"];
    let probe_port = match probe_port {
        Value::String(name) => ports[name.as_str()],
        other => other
            .as_i64()
            .unwrap_or_else(|| panic!("{d}: envoy readinessProbe")),
    };
    assert!(listening.contains(&probe_port), "{d}: readiness probe port");
}

#[test]
fn the_sidecar_bootstrap_is_the_demos_and_passes_envoy_validate() {
    let envoy_bin = std::env::var("ENVOY_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| {
            panic!(
            "ENVOY_BIN is not set: this test validates the Kubernetes sidecar's bootstrap with the \
             real Envoy. Run `make test`, or ENVOY_BIN=\"$(scripts/ensure-envoy.sh)\" cargo test \
             -p mesh-filters-cli --test deploy_manifests"
        )
        });
    let root = root();
    let docs = documents();
    let pod = kubernetes_pod(&docs);

    // Adapted from the demo: the same suite configuration and the same route metadata.
    assert_eq!(
        plugin_config(&pod.bootstrap, "mesh"),
        demo_suite_config(),
        "the sidecar's suite configuration is not the demo's mTLS listener's"
    );
    let demo = demo_routes();
    let mut sidecar_routes = BTreeMap::new();
    routes(&pod.bootstrap, &mut sidecar_routes);
    let mut compared = 0;
    for (name, md) in &sidecar_routes {
        if let Some(from_demo) = demo.get(name) {
            assert_eq!(md, from_demo, "route {name}: not the demo's metadata");
            compared += 1;
        }
    }
    assert!(compared >= 2, "the sidecar has none of the demo's routes");

    // The pod's paths, pointed at the built module and at test certificates.
    let wasm_dir = root.join("target/wasm32-wasip1/release");
    let tmp = std::env::temp_dir().join(format!(
        "mesh-deploy-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&tmp).unwrap();
    let certs = tmp.join("certs");
    let made = Command::new(root.join("scripts/demo-certs.sh"))
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "scripts/demo-certs.sh failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    // The Secret's keys, from the demo certificates as deploy/README.md makes them.
    let secret_files: BTreeMap<&str, &str> = [
        ("svid.crt", "envoy.crt"),
        ("svid.key", "envoy.key"),
        ("ca.crt", "ca.crt"),
    ]
    .into_iter()
    .collect();
    let volumes = pod.spec["volumes"].as_array().unwrap();
    let mut rewrite = |f: &str| -> String {
        for v in volumes {
            let Some(mount) = pod.envoy_mounts.get(v["name"].as_str().unwrap()) else {
                continue;
            };
            let Some(file) = f.strip_prefix(&format!("{mount}/")) else {
                continue;
            };
            if v.get("emptyDir").is_some() {
                let module = wasm_dir.join(file);
                assert!(
                    module.is_file(),
                    "{} is missing: run `make build`",
                    module.display()
                );
                return module.to_string_lossy().into_owned();
            }
            if let Some(secret) = v.get("secret") {
                let key = secret["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|i| i["path"] == file)
                    .map(|i| i["key"].as_str().unwrap())
                    .unwrap_or(file);
                let demo_file = secret_files
                    .get(key)
                    .unwrap_or_else(|| panic!("Secret key {key}: no test certificate for it"));
                return certs.join(demo_file).to_string_lossy().into_owned();
            }
            panic!(
                "{f}: volume {} is neither the module nor the certificates",
                v["name"]
            );
        }
        panic!("{f}: in no volume of the envoy container")
    };
    let mut bootstrap = pod.bootstrap.clone();
    rewrite_filenames(&mut bootstrap, &mut rewrite);

    let validate = |config: &Value, name: &str| {
        let file = tmp.join(name);
        std::fs::write(&file, serde_json::to_string_pretty(config).unwrap()).unwrap();
        let out = Command::new(&envoy_bin)
            .args(["--mode", "validate", "-c"])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {envoy_bin}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text, file)
    };
    let (ok, text, file) = validate(&bootstrap, "envoy.json");
    assert!(
        ok,
        "envoy --mode validate refused the sidecar's bootstrap:\n{text}"
    );
    assert!(text.contains("OK"), "{text}");

    // The same file through `mesh-filters check`: every route's metadata included.
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-filters"))
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mesh-filters check:\n{report}");
    assert!(report.contains(" 0 error(s), 0 warning(s)"), "{report}");

    // A control: the validation loads the module and runs its configuration code, so a bad
    // value in the suite's configuration is refused.
    let mut broken = bootstrap.clone();
    let mut configs = Vec::new();
    wasm_configs(&broken, &mut configs);
    assert_eq!(configs.len(), 1);
    let mut suite = plugin_config(&broken, "mesh");
    suite["deadline"]["timeout"] = Value::from("15");
    let set = |v: &mut Value, suite: &Value| {
        fn walk(v: &mut Value, text: &str) {
            match v {
                Value::Object(o) => {
                    if o.get("@type").and_then(Value::as_str) == Some(WASM_TYPE) {
                        o["config"]["configuration"]["value"] = Value::from(text);
                    }
                    o.values_mut().for_each(|v| walk(v, text));
                }
                Value::Array(a) => a.iter_mut().for_each(|v| walk(v, text)),
                _ => {}
            }
        }
        walk(v, &suite.to_string());
    };
    set(&mut broken, &suite);
    let (ok, text, _) = validate(&broken, "broken.json");
    assert!(!ok, "envoy accepted a deadline without a unit:\n{text}");
    assert!(
        text.contains("invalid configuration: field `deadline.timeout`"),
        "the suite's own error is missing:\n{text}"
    );

    std::fs::remove_dir_all(&tmp).ok();
}
