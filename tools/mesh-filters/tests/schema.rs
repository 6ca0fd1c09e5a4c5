//! The JSON Schemas under `envoy/schema`: generated (never edited), and they agree with the
//! filters. Every shipped example configuration validates; the broken corpus is refused; the
//! hand-written schemas of single values (durations, SPIFFE patterns, failure classes, formats,
//! retry conditions) accept exactly what the filters' parsers accept; and the rules JSON Schema
//! does not state are listed, with a configuration the schema accepts but the filter refuses.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_filters_cli::check::{collect_routes, validate};
use mesh_filters_cli::schema;
use mesh_kit::config::{from_value, parse_json};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const WASM: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const REGENERATE: &str = "cargo run -p mesh-filters-cli -- schema";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema_dir() -> PathBuf {
    root().join(schema::DEFAULT_DIR)
}

fn load(name: &str) -> Value {
    let path = schema_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `{REGENERATE}`", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Validators of the shipped files, by file name.
struct Schemas(BTreeMap<String, jsonschema::Validator>);

impl Schemas {
    fn load() -> Self {
        let mut map = BTreeMap::new();
        for (name, _) in schema::files() {
            let v = load(&name);
            let validator = jsonschema::draft202012::new(&v)
                .unwrap_or_else(|e| panic!("{name} is not a usable schema: {e}"));
            map.insert(name, validator);
        }
        Schemas(map)
    }

    /// The plugin schema for a root_id (`mesh` is the suite), or `None` for other filters.
    fn plugin(&self, root_id: &str) -> Option<(&str, &jsonschema::Validator)> {
        let name = if root_id == "mesh" {
            "mesh.schema.json".to_string()
        } else {
            format!("{root_id}.schema.json")
        };
        self.0.get_key_value(&name).map(|(k, v)| (k.as_str(), v))
    }

    fn route(&self, key: &str) -> Option<(&str, &jsonschema::Validator)> {
        self.0
            .get_key_value(&format!("{key}.route.schema.json"))
            .map(|(k, v)| (k.as_str(), v))
    }
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("at `{}`: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_committed_schemas_are_the_generated_ones() {
    let mut stale = Vec::new();
    let generated = schema::files();
    for (name, text) in &generated {
        match std::fs::read_to_string(schema_dir().join(name)) {
            Ok(committed) if committed == *text => {}
            Ok(_) => stale.push(format!("{name} differs")),
            Err(e) => stale.push(format!("{name}: {e}")),
        }
    }
    for entry in std::fs::read_dir(schema_dir()).into_iter().flatten() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !generated.iter().any(|(n, _)| *n == name) {
            stale.push(format!("{name} is not generated any more (delete it)"));
        }
    }
    assert!(
        stale.is_empty(),
        "envoy/schema is out of date with the configuration types; regenerate it with `{REGENERATE}` \
         (from the workspace root) and commit the result:\n  {}",
        stale.join("\n  ")
    );
}

#[test]
fn every_schema_is_a_valid_draft_2020_12_schema() {
    for (name, _) in schema::files() {
        let v = load(&name);
        assert_eq!(v["$schema"], schema::DIALECT, "{name}");
        if let Err(e) = jsonschema::draft202012::meta::validate(&v) {
            panic!("{name}: {e}");
        }
    }
}

/// Every YAML file under `envoy/` (bootstraps of the demo, the examples, the compose stack).
fn shipped_configs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("envoy"), &mut out);
    out.sort();
    out
}

fn yaml_to_json(text: &str) -> Value {
    serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(text).unwrap()).unwrap()
}

/// Wasm filters: (name, root_id, plugin configuration text).
fn wasm_filters(v: &Value, out: &mut Vec<(String, String, String)>) {
    match v {
        Value::Object(map) => {
            if map.get("@type").and_then(Value::as_str) == Some(WASM) {
                let config = &map["config"];
                let root_id = config["root_id"].as_str().unwrap_or("").to_string();
                let name = config["name"].as_str().unwrap_or(&root_id).to_string();
                let value = config
                    .pointer("/configuration/value")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                out.push((name, root_id, value));
            }
            map.values().for_each(|c| wasm_filters(c, out));
        }
        Value::Array(items) => items.iter().for_each(|i| wasm_filters(i, out)),
        _ => {}
    }
}

#[test]
fn every_shipped_plugin_configuration_and_route_metadata_validates() {
    let schemas = Schemas::load();
    let (mut plugins, mut sections, mut failures) = (0, 0, Vec::new());
    let files = shipped_configs();
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        let shown = file
            .strip_prefix(root())
            .unwrap_or(&file)
            .display()
            .to_string();
        let doc = yaml_to_json(&std::fs::read_to_string(&file).unwrap());
        let mut filters = Vec::new();
        wasm_filters(&doc, &mut filters);
        for (name, root_id, text) in filters {
            let Some((schema_name, validator)) = schemas.plugin(&root_id) else {
                continue;
            };
            let config = parse_json(text.as_bytes())
                .unwrap_or_else(|e| panic!("{shown}: filter {name:?}: {e}"));
            for e in errors(validator, &config) {
                failures.push(format!("{shown}: filter {name:?} ({schema_name}) {e}"));
            }
            plugins += 1;
        }
        let mut found = Vec::new();
        collect_routes(&doc, &mut found);
        for route in found {
            let route_name = route["name"].as_str().unwrap_or("(unnamed)");
            let Some(md) = route
                .pointer("/metadata/filter_metadata")
                .and_then(Value::as_object)
            else {
                continue;
            };
            for (key, section) in md.iter().filter(|(k, _)| k.starts_with("mesh.")) {
                let Some((schema_name, validator)) = schemas.route(key) else {
                    failures.push(format!(
                        "{shown}: route {route_name:?}: `{key}` is not a mesh filter"
                    ));
                    continue;
                };
                for e in errors(validator, section) {
                    failures.push(format!(
                        "{shown}: route {route_name:?} {key} ({schema_name}) {e}"
                    ));
                }
                sections += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // demo.yaml and single-filters.yaml alone hold 11 plugin configurations and dozens of
    // route sections: a walk that finds fewer is broken.
    assert!(plugins >= 11, "only {plugins} plugin configurations found");
    assert!(
        sections >= 20,
        "only {sections} route metadata sections found"
    );
}

/// Cases of the broken corpus that JSON Schema has nothing to say about.
const NOT_A_SCHEMA_MATTER: [(&str, &str); 2] = [
    (
        "plugin-not-json",
        "the configuration is not JSON at all, so there is nothing to validate",
    ),
    (
        "route-unknown-filter-key",
        "`mesh.deadlines` is a metadata key no filter reads: there is no schema to look up",
    ),
];

#[test]
fn every_broken_configuration_is_refused_by_the_schema() {
    let schemas = Schemas::load();
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/broken.yaml"))
            .unwrap();
    let cases: Vec<Value> = serde_yaml::from_str(&text).unwrap();
    assert!(cases.len() >= 40, "{}", cases.len());
    let mut accepted = Vec::new();
    let mut skipped = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let filter = case["filter"].as_str().unwrap();
        if let Some((_, why)) = NOT_A_SCHEMA_MATTER.iter().find(|(n, _)| *n == name) {
            skipped.push(name);
            // Still true of the case?
            match case.get("route") {
                None => assert!(
                    serde_json::from_str::<Value>(case["plugin"].as_str().unwrap()).is_err(),
                    "{name}: {why}"
                ),
                Some(_) => assert!(
                    schemas.route(case["key"].as_str().unwrap()).is_none(),
                    "{name}: {why}"
                ),
            }
            continue;
        }
        let (schema_name, validator, instance) = match case.get("route") {
            Some(route) => {
                let key = case.get("key").and_then(Value::as_str).unwrap_or(filter);
                let (n, v) = schemas.route(key).unwrap();
                (n, v, route.clone())
            }
            None => {
                let (n, v) = schemas.plugin(filter).unwrap();
                let plugin: Value = serde_json::from_str(case["plugin"].as_str().unwrap())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                (n, v, plugin)
            }
        };
        if validator.is_valid(&instance) {
            accepted.push(format!("{name}: {instance} passes {schema_name}"));
        }
    }
    assert_eq!(skipped.len(), NOT_A_SCHEMA_MATTER.len(), "{skipped:?}");
    assert!(
        accepted.is_empty(),
        "the schema accepts broken configurations:\n{}",
        accepted.join("\n")
    );
}

/// Valid for the schema, refused by the filter: the rules JSON Schema does not state here.
#[test]
fn what_the_schema_does_not_state_is_still_refused_by_the_filters() {
    /// `None` when the schema accepts `config` and the filter refuses it.
    fn refused(schemas: &Schemas, key: &str, config: &Value) -> Option<String> {
        let (name, validator) = schemas.plugin(key).unwrap();
        if !validator.is_valid(config) {
            return Some(format!(
                "{key}: {config} is refused by {name} after all: {:?}",
                errors(validator, config)
            ));
        }
        validate(key, config)
            .is_ok()
            .then(|| format!("{key}: {config} is accepted by the filter"))
    }
    let s = Schemas::load();
    let cases = [
        // Duration bounds: durations are strings, their values cannot be compared.
        (
            "mesh.deadline",
            json!({"timeout": "5s", "min_budget": "0ms"}),
        ),
        (
            "mesh.deadline",
            json!({"timeout": "1ms", "min_budget": "10ms"}),
        ),
        (
            "mesh.deadline",
            json!({"timeout": "5s", "per_try_timeout": "0s"}),
        ),
        ("mesh.deadline", json!({"timeout": "8761h"})),
        ("mesh.circuit_breaker", json!({"window": "1ms"})),
        ("mesh.circuit_breaker", json!({"open_duration": "0ms"})),
        (
            "mesh.circuit_breaker",
            json!({"open_duration": "2s", "max_open_duration": "1s"}),
        ),
        ("mesh.circuit_breaker", json!({"slow_call_duration": "0ms"})),
        ("mesh.retry_budget", json!({"ttl": "50ms"})),
        ("mesh.retry_budget", json!({"ttl": "2h"})),
        ("mesh.retry_budget", json!({"per_try_timeout": "0ms"})),
        (
            "mesh.trace_propagation",
            json!({"export": {"cluster": "otlp", "flush_interval": "1ms"}}),
        ),
        // One field bounded by another.
        (
            "mesh.trace_propagation",
            json!({"export": {"cluster": "otlp", "max_batch": 100, "max_queue": 10}}),
        ),
        // JSON Schema's integer includes 3.0; serde's u32 does not.
        ("mesh.retry_budget", json!({"max_retries": 3.0})),
    ];
    let problems: Vec<String> = cases
        .iter()
        .filter_map(|(key, config)| refused(&s, key, config))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A validator for one definition of a shipped file.
fn definition(file: &str, def: &str) -> jsonschema::Validator {
    let doc = load(file);
    assert!(doc["$defs"].get(def).is_some(), "{file} has no $defs/{def}");
    let wrapper = json!({"$defs": doc["$defs"], "$ref": format!("#/$defs/{def}")});
    jsonschema::draft202012::new(&wrapper).unwrap()
}

/// The schema of one property of a plugin schema.
fn property(file: &str, prop: &str) -> jsonschema::Validator {
    let doc = load(file);
    let wrapper = json!({"$defs": doc["$defs"], "$ref": format!("#/properties/{prop}"), "properties": doc["properties"]});
    jsonschema::draft202012::new(&wrapper).unwrap()
}

fn disagreements<'a>(
    validator: &jsonschema::Validator,
    candidates: impl IntoIterator<Item = &'a str>,
    instance: impl Fn(&str) -> Value,
    parser_accepts: impl Fn(&str) -> bool,
) -> Vec<String> {
    candidates
        .into_iter()
        .filter_map(|c| {
            let schema = validator.is_valid(&instance(c));
            let parser = parser_accepts(c);
            (schema != parser).then(|| format!("{c:?}: schema {schema}, parser {parser}"))
        })
        .collect()
}

#[test]
fn the_duration_schema_accepts_what_parse_duration_accepts() {
    use mesh_kit::values::parse_duration;
    let numbers = [
        "0",
        "5",
        "250",
        "007",
        "1.5",
        "0.25",
        "1.123456789",
        "1.1234567890",
        ".5",
        "1.",
        "1.2.3",
        "-5",
        "+5",
        "123456789012",
        "1234567890123",
        " 5",
        "5 ",
        "1e3",
        "",
    ];
    let units = [
        "", "ns", "us", "µs", "ms", "s", "m", "h", "d", "sec", "S", "MS", " s", "s ", "ms5",
    ];
    let mut candidates = Vec::new();
    for n in numbers {
        for u in units {
            candidates.push(format!("{n}{u}"));
        }
    }
    let validator = definition("mesh.deadline.schema.json", "Duration");
    let wrong = disagreements(
        &validator,
        candidates.iter().map(String::as_str),
        |c| json!(c),
        // The 365-day ceiling is the one rule of the grammar the pattern does not state.
        |c| parse_duration(c).is_ok() || parse_duration(c).is_err_and(|e| e.contains("365 days")),
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(!validator.is_valid(&json!(5)), "a number is not a duration");
}

/// Patterns and IDs from the filter's own tests, valid and not.
const SPIFFE_CANDIDATES: [&str; 44] = [
    "spiffe://td/ns/prod/sa/api",
    "spiffe://td/ns/*/sa/api-*",
    "spiffe://td/*-api-*.v*",
    "spiffe://td/ns/prod/**",
    "spiffe://td/ns/*/sa/**",
    "spiffe://td/**",
    "spiffe://td/*/**",
    "spiffe://mesh.local/ns/default/sa/learner",
    "spiffe://a_b-c.d/x/.../..a/.b/a.",
    "spiffe://td/*",
    "spiffe://td/.*",
    "spiffe://td/..*",
    "spiffe://td/x/*a*a*",
    "",
    "td/a",
    "https://td/a",
    "SPIFFE://td/a",
    "spiffe://td/**/a",
    "spiffe://td/a**",
    "spiffe://td/***",
    "spiffe://td/a/**b/c",
    "spiffe://*/a",
    "spiffe://td*/a",
    "spiffe://*.td/**",
    "spiffe://**",
    "spiffe://TD/a",
    "spiffe://td:8443/a",
    "spiffe://u@td/a",
    "spiffe://td",
    "spiffe://td/",
    "spiffe://td/a/",
    "spiffe://td/**/",
    "spiffe://td//a",
    "spiffe://td/a/../b",
    "spiffe://td/./*",
    "spiffe://td/..",
    "spiffe://td/a%2Fb",
    "spiffe://td/a?b",
    "spiffe://td/a#b",
    "spiffe://td/a b",
    "spiffe://td/a/[ab]",
    "spiffe://td/a/?",
    "spiffe:///a",
    "spiffe://td/é",
];

fn long_candidates() -> Vec<String> {
    let td255 = "t".repeat(255);
    vec![
        format!("spiffe://td/{}", "a".repeat(2036)),
        format!("spiffe://td/{}", "a".repeat(2037)),
        format!("spiffe://td/{}", "*".repeat(2036)),
        format!("spiffe://td/{}", "*".repeat(2040)),
        format!("spiffe://{td255}/a"),
        format!("spiffe://{td255}t/a"),
    ]
}

#[test]
fn the_spiffe_pattern_schema_accepts_what_pattern_parse_accepts() {
    use mesh_spiffe_identity::pattern::Pattern;
    let long = long_candidates();
    let candidates = SPIFFE_CANDIDATES
        .iter()
        .copied()
        .chain(long.iter().map(String::as_str));
    let validator = definition("mesh.spiffe_identity.schema.json", "SpiffePattern");
    let wrong = disagreements(
        &validator,
        candidates,
        |c| json!(c),
        |c| Pattern::parse(c).is_ok(),
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_spiffe_id_and_trust_domain_schemas_accept_what_the_filter_accepts() {
    use mesh_spiffe_identity::config::Config;
    let file = "mesh.spiffe_identity.schema.json";
    let long = long_candidates();
    let ids = SPIFFE_CANDIDATES
        .iter()
        .copied()
        .chain(long.iter().map(String::as_str));
    let wrong = disagreements(
        &property(file, "xfcc_trusted_by"),
        ids,
        |c| json!([c]),
        |c| from_value::<Config>(&json!({"xfcc_trusted_by": [c]})).is_ok(),
    );
    assert!(wrong.is_empty(), "xfcc_trusted_by:\n{}", wrong.join("\n"));
    let td255 = "t".repeat(255);
    let td256 = "t".repeat(256);
    // Not among the candidates: "td/x". The filter checks a trust domain by parsing
    // `spiffe://<td>/x`, so it lets "td/x" through (a trust domain that can never match); the
    // schema states the rule as meant, 1 to 255 of [a-z0-9._-].
    let domains = [
        "mesh.local",
        "a",
        "a-b_c.d",
        "Mesh.local",
        "",
        "td:1",
        "u@td",
        "td*",
        "t d",
        "td?",
        td255.as_str(),
        td256.as_str(),
    ];
    let wrong = disagreements(
        &property(file, "trust_domains"),
        domains,
        |c| json!([c]),
        |c| from_value::<Config>(&json!({"trust_domains": [c]})).is_ok(),
    );
    assert!(wrong.is_empty(), "trust_domains:\n{}", wrong.join("\n"));
    let headers = [
        "x-spiffe-id",
        "x_id",
        "a",
        "X-Spiffe-Id",
        "",
        "x id",
        "x.id",
        "x-forwarded-client-cert",
    ];
    let wrong = disagreements(
        &property(file, "forward_header"),
        headers,
        |c| json!(c),
        |c| from_value::<Config>(&json!({"forward_header": c})).is_ok(),
    );
    assert!(wrong.is_empty(), "forward_header:\n{}", wrong.join("\n"));
}

#[test]
fn the_failure_class_schemas_accept_what_classify_accepts() {
    use mesh_circuit_breaker::classify::{FailureOn, GrpcFailureOn};
    let file = "mesh.circuit_breaker.schema.json";
    let http = [
        "5xx",
        "4xx",
        "gateway-error",
        "reset",
        "connect-failure",
        "timeout",
        "100",
        "429",
        "503",
        "599",
        "600",
        "099",
        "42",
        "4290",
        "+42",
        "+429",
        "5XX",
        "Reset",
        "",
        "oops",
        "3xx",
    ];
    let wrong = disagreements(
        &definition(file, "FailureOn"),
        http,
        |c| json!([c]),
        |c| FailureOn::parse(&[c.to_string()]).is_ok(),
    );
    assert!(wrong.is_empty(), "failure_on:\n{}", wrong.join("\n"));
    let numbers: Vec<String> = (0..=20).map(|n| n.to_string()).collect();
    let grpc = [
        "ok",
        "cancelled",
        "unknown",
        "invalid-argument",
        "deadline-exceeded",
        "not-found",
        "already-exists",
        "permission-denied",
        "resource-exhausted",
        "failed-precondition",
        "aborted",
        "out-of-range",
        "unimplemented",
        "internal",
        "unavailable",
        "data-loss",
        "unauthenticated",
        "UNAVAILABLE",
        "Unavailable",
        "deadline_exceeded",
        "014",
        "00",
        "+1",
        "-1",
        "1.0",
        "",
        "nope",
    ];
    let wrong = disagreements(
        &definition(file, "GrpcFailureOn"),
        grpc.into_iter().chain(numbers.iter().map(String::as_str)),
        |c| json!([c]),
        |c| GrpcFailureOn::parse(&[c.to_string()]).is_ok(),
    );
    assert!(wrong.is_empty(), "grpc_failure_on:\n{}", wrong.join("\n"));
}

#[test]
fn the_format_and_retry_condition_schemas_accept_what_the_filters_accept() {
    use mesh_retry_budget::config::Config as Budget;
    use mesh_trace_propagation::config::Config as Trace;
    let formats = [
        "w3c",
        "b3",
        "b3-multi",
        "jaeger",
        "grpc-trace-bin",
        "W3C",
        "b3multi",
        "zipkin",
        "",
    ];
    let wrong = disagreements(
        &definition("mesh.trace_propagation.schema.json", "TraceFormat"),
        formats,
        |c| json!(c),
        |c| from_value::<Trace>(&json!({"inject": [c]})).is_ok(),
    );
    assert!(wrong.is_empty(), "formats:\n{}", wrong.join("\n"));
    let headers = [
        "traceresponse",
        "server-timing",
        "traceparent",
        "Server-Timing",
    ];
    let wrong = disagreements(
        &property("mesh.trace_propagation.schema.json", "response_headers"),
        headers,
        |c| json!([c]),
        |c| from_value::<Trace>(&json!({"response_headers": [c]})).is_ok(),
    );
    assert!(wrong.is_empty(), "response_headers:\n{}", wrong.join("\n"));

    let file = "mesh.retry_budget.schema.json";
    let retry_on = [
        "5xx",
        "5xx,reset,connect-failure,refused-stream",
        " 5xx , reset ,",
        "",
        ",",
        "gateway-error,reset-before-request,envoy-ratelimited,retriable-4xx",
        "retriable-status-codes,retriable-headers,http3-post-connect-failure",
        "5xx,sometimes",
        "5XX",
        "reset-before",
        "5xx;reset",
        "unavailable",
    ];
    let wrong = disagreements(
        &property(file, "retry_on"),
        retry_on,
        |c| json!(c),
        |c| from_value::<Budget>(&json!({"retry_on": c})).is_ok(),
    );
    assert!(wrong.is_empty(), "retry_on:\n{}", wrong.join("\n"));
    let retry_grpc_on = [
        "unavailable",
        "cancelled,deadline-exceeded,internal,resource-exhausted,unavailable",
        " unavailable , internal",
        "",
        "UNAVAILABLE",
        "5xx",
        "unavailable,nope",
    ];
    let wrong = disagreements(
        &property(file, "retry_grpc_on"),
        retry_grpc_on,
        |c| json!(c),
        |c| from_value::<Budget>(&json!({"retry_grpc_on": c})).is_ok(),
    );
    assert!(wrong.is_empty(), "retry_grpc_on:\n{}", wrong.join("\n"));
}

#[test]
fn defaults_in_the_schemas_are_the_filters_defaults() {
    // An empty configuration is the defaults; writing the schema's defaults out gives the same
    // configuration.
    fn defaults(file: &str) -> Value {
        let doc = load(file);
        let props = doc["properties"].as_object().unwrap();
        Value::Object(
            props
                .iter()
                .filter_map(|(k, p)| p.get("default").map(|d| (k.clone(), d.clone())))
                .collect(),
        )
    }
    /// The schema's defaults written out over `base` parse to the same configuration as `base`.
    fn same(file: &str, base: Value, parse: fn(&Value) -> String) {
        let mut written = defaults(file);
        if let (Value::Object(w), Value::Object(b)) = (&mut written, &base) {
            w.extend(b.clone());
        }
        assert_eq!(parse(&written), parse(&base), "{file}: {written}");
    }
    same("mesh.deadline.schema.json", json!({"timeout": "5s"}), |v| {
        format!("{:?}", from_value::<mesh_deadline::config::Config>(v))
    });
    same("mesh.circuit_breaker.schema.json", json!({}), |v| {
        format!(
            "{:?}",
            from_value::<mesh_circuit_breaker::config::Config>(v)
        )
    });
    same("mesh.retry_budget.schema.json", json!({}), |v| {
        format!("{:?}", from_value::<mesh_retry_budget::config::Config>(v))
    });
    same("mesh.trace_propagation.schema.json", json!({}), |v| {
        format!(
            "{:?}",
            from_value::<mesh_trace_propagation::config::Config>(v)
        )
    });
    // The spiffe Config is not PartialEq: compare what the table shows.
    let written = defaults("mesh.spiffe_identity.schema.json");
    assert_eq!(
        written,
        json!({"allow": [], "deny": [], "trust_domains": [], "source": "peer_certificate",
               "xfcc_trusted_by": [], "forward_header": "x-spiffe-id", "mode": "enforce"})
    );
    assert!(from_value::<mesh_spiffe_identity::config::Config>(&written).is_ok());
}

#[test]
fn route_metadata_may_disable_a_filter_and_override_single_fields() {
    let s = Schemas::load();
    let (_, deadline) = s.route("mesh.deadline").unwrap();
    for ok in [
        json!({"disabled": true}),
        json!({"disabled": true, "timeout": 5, "whatever": 1}),
        json!({"disabled": false, "timeout": "2s"}),
        json!({"per_try_timeout": "1s"}),
        json!({}),
    ] {
        assert!(deadline.is_valid(&ok), "{ok}: {:?}", errors(deadline, &ok));
    }
    for bad in [
        json!({"disabled": "yes"}),
        json!({"disabled": false, "timeout": 5}),
        json!({"timeout": "2s", "timout": "1s"}),
        json!("2s"),
    ] {
        assert!(!deadline.is_valid(&bad), "{bad}");
    }
    // A rule across fields holds for the merged configuration, not for the route's part of it.
    let (_, spiffe) = s.route("mesh.spiffe_identity").unwrap();
    assert!(spiffe.is_valid(&json!({"source": "xfcc"})));
    let (_, plugin) = s.plugin("mesh.spiffe_identity").unwrap();
    assert!(!plugin.is_valid(&json!({"source": "xfcc"})));
    assert!(!plugin.is_valid(&json!({"source": "xfcc", "xfcc_trusted_by": []})));
    assert!(plugin.is_valid(
        &json!({"source": "xfcc", "xfcc_trusted_by": ["spiffe://mesh.local/ns/edge/sa/gw"]})
    ));
}
