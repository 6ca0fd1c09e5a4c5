//! `mesh-filters check`: finds the mesh filters (single filters and the suite) in an Envoy
//! bootstrap or an admin `config_dump`, validates every plugin configuration and every route's
//! `mesh.*` metadata with the filters' own configuration code, and summarises the effective
//! configuration per route.
//!
//! Routes are matched to the filters of the HTTP connection manager that holds them (inline
//! `route_config`); routes that arrive another way (RDS in a `config_dump`) are checked against
//! every mesh filter of the file.
//!
//! The suite as the native dynamic module (`libmesh_filters.so`, `DynamicModuleFilter`) is
//! found too: its plugin configuration is the same JSON, and a route's settings are the JSON of
//! its `typed_per_filter_config.<filter name>` (`DynamicModuleFilterPerRoute`), keyed like route
//! metadata (`filters/native/README.md`).

use mesh_filters::STAGES;
use mesh_kit::config::{parse_json, ConfigError};
use mesh_kit::registry::find;
use mesh_kit::route::merge;
use mesh_kit::testing::TestHost;
use serde_json::Value;
use std::fmt::Write as _;

const WASM: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const NATIVE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
const NATIVE_PER_ROUTE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute";
const FILTER_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";
/// `dynamic_module_config.name` of the native suite (`libmesh_filters.so`).
const NATIVE_MODULE: &str = "mesh_filters";
const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// One mesh filter found in the file: which stages it runs, with their plugin configuration.
#[derive(Debug, Clone)]
pub struct Filter {
    pub name: String,
    pub root_id: String,
    /// The native module: its routes' settings are in `typed_per_filter_config.<name>`.
    pub native: bool,
    /// (metadata key, plugin configuration of that stage)
    pub stages: Vec<(&'static str, Value)>,
}

#[derive(Debug, Default)]
pub struct Report {
    pub filters: Vec<Filter>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub routes: Vec<RouteRow>,
}

/// A route's effective settings: one cell per stage in [`STAGES`] order; `-` when no filter of
/// its listener runs the stage, `off` when the route disables it.
#[derive(Debug)]
pub struct RouteRow {
    /// The connection manager's `stat_prefix`, or `rds` for routes found outside one.
    pub listener: String,
    pub route: String,
    pub cells: [String; STAGES.len()],
}

/// Checks one document (YAML or JSON).
pub fn check_text(text: &str) -> Report {
    let mut report = Report::default();
    let doc: Value = match serde_yaml::from_str::<serde_yaml::Value>(text)
        .map_err(|e| e.to_string())
        .and_then(|y| serde_json::to_value(y).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            report.errors.push(format!("not valid YAML or JSON: {e}"));
            return report;
        }
    };
    // An admin /config_dump repeats the bootstrap next to the listeners and routes it built:
    // read the built ones only.
    let doc = match doc {
        Value::Object(mut map) if map.get("configs").is_some_and(Value::is_array) => {
            if let Some(Value::Array(configs)) = map.get_mut("configs") {
                configs.retain(|c| {
                    c.get("@type").and_then(Value::as_str)
                        != Some("type.googleapis.com/envoy.admin.v3.BootstrapConfigDump")
                });
            }
            Value::Object(map)
        }
        other => other,
    };
    let mut managers = Vec::new();
    collect_managers(&doc, &mut managers);
    // Routes already checked with their connection manager (a config_dump lists inline route
    // configurations again under static_route_configs).
    let mut seen_routes = std::collections::HashSet::new();
    for hcm in &managers {
        let filters = mesh_filters(hcm.get("http_filters"), &mut report);
        report.filters.extend(filters.iter().cloned());
        let listener = hcm.get("stat_prefix").and_then(Value::as_str).unwrap_or("");
        if let Some(rc) = hcm.get("route_config") {
            let mut routes = Vec::new();
            collect_routes(rc, &mut routes);
            for r in routes {
                seen_routes.insert(r.to_string());
                check_route(listener, r, &filters, &mut report);
            }
        }
    }
    // Routes outside an inline route_config (RDS in a config_dump).
    let mut routes = Vec::new();
    collect_routes(&doc, &mut routes);
    let all = report.filters.clone();
    for r in routes {
        if !seen_routes.contains(&r.to_string()) {
            check_route("rds", r, &all, &mut report);
        }
    }
    if report.filters.is_empty() {
        report
            .warnings
            .push("no mesh filter found (root_id mesh or mesh.<filter>)".to_string());
    }
    report
}

fn collect_managers<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            if map.get("@type").and_then(Value::as_str) == Some(HCM) {
                out.push(v);
            }
            for child in map.values() {
                collect_managers(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_managers(i, out)),
        _ => {}
    }
}

/// Every route under `v`: an object with `match` and one of the route actions (`route`,
/// `direct_response`, `redirect`, `filter_action`), in document order.
pub fn collect_routes<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            let action = ["route", "direct_response", "redirect", "filter_action"]
                .iter()
                .any(|k| map.contains_key(*k));
            if map.contains_key("match") && action {
                out.push(v);
                return;
            }
            for child in map.values() {
                collect_routes(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_routes(i, out)),
        _ => {}
    }
}

/// The mesh filters of an `http_filters` list, each plugin configuration validated.
fn mesh_filters(list: Option<&Value>, report: &mut Report) -> Vec<Filter> {
    let mut found = Vec::new();
    for f in list.and_then(Value::as_array).into_iter().flatten() {
        let tc = &f["typed_config"];
        let (root_id, value, native) = match tc.get("@type").and_then(Value::as_str) {
            Some(WASM) => {
                let config = &tc["config"];
                (
                    config.get("root_id").and_then(Value::as_str).unwrap_or(""),
                    config["configuration"].get("value"),
                    false,
                )
            }
            Some(NATIVE)
                if tc
                    .pointer("/dynamic_module_config/name")
                    .and_then(Value::as_str)
                    == Some(NATIVE_MODULE) =>
            {
                ("mesh", tc["filter_config"].get("value"), true)
            }
            _ => continue,
        };
        let name = f
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(root_id)
            .to_string();
        let single = find(&STAGES, root_id);
        if root_id != "mesh" && single.is_none() {
            continue;
        }
        let value = value.and_then(Value::as_str).unwrap_or("");
        let json = match parse_json(value.as_bytes()) {
            Ok(j) => j,
            Err(e) => {
                report
                    .errors
                    .push(format!("filter {name:?}: {}", e.line(root_id)));
                continue;
            }
        };
        let stages = match single {
            Some(stage) => {
                if let Err(e) = (stage.check)(&json) {
                    report
                        .errors
                        .push(format!("filter {name:?}: {}", e.line(root_id)));
                    continue;
                }
                vec![(stage.name, json)]
            }
            None => {
                if let Err(e) = mesh_filters::factory(&json, &TestHost::default()) {
                    report
                        .errors
                        .push(format!("filter {name:?}: {}", e.line(root_id)));
                    continue;
                }
                STAGES
                    .iter()
                    .filter_map(|e| json.get(e.section()).map(|c| (e.name, c.clone())))
                    .collect()
            }
        };
        found.push(Filter {
            name,
            root_id: root_id.to_string(),
            native,
            stages,
        });
    }
    found
}

/// Validates one stage's configuration (plugin configuration or merged route settings) with
/// the filter's own code; `key` names the stage (`mesh.deadline`), and a key that is no stage
/// is an error.
pub fn validate(key: &str, json: &Value) -> Result<(), ConfigError> {
    match find(&STAGES, key) {
        Some(stage) => (stage.check)(json),
        None => Err(ConfigError::new(key, None, "not a mesh filter")),
    }
}

fn check_route(listener: &str, route: &Value, filters: &[Filter], report: &mut Report) {
    let name = route
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)")
        .to_string();
    let metadata = route
        .pointer("/metadata/filter_metadata")
        .and_then(Value::as_object);
    let mut cells: [String; STAGES.len()] = Default::default();
    let mut any = false;
    if let Some(md) = metadata {
        for key in md.keys().filter(|k| k.starts_with("mesh.")) {
            if find(&STAGES, key).is_none() {
                let known: Vec<&str> = STAGES.iter().map(|e| e.name).collect();
                report.errors.push(format!(
                    "route {name:?}: metadata key `{key}` is not a mesh filter; use one of {}",
                    known.join(", ")
                ));
            } else if !filters
                .iter()
                .any(|f| f.stages.iter().any(|(k, _)| k == key))
            {
                report.warnings.push(format!(
                    "route {name:?}: `{key}` metadata, but no filter of this listener runs that stage"
                ));
            }
        }
    }
    let native: Vec<Option<NativeRoute>> = filters
        .iter()
        .map(|f| {
            f.native
                .then(|| native_route(&name, route, &f.name, report))
                .flatten()
        })
        .collect();
    for (i, stage) in STAGES.iter().enumerate() {
        let key = stage.name;
        let mut cell = "-".to_string();
        for (f, per_route) in filters.iter().zip(&native) {
            let Some((_, base)) = f.stages.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            let section = match (f.native, per_route) {
                (false, _) => metadata.and_then(|m| m.get(key)).cloned(),
                (true, Some(NativeRoute::Disabled)) => Some(serde_json::json!({"disabled": true})),
                (true, Some(NativeRoute::Sections(s))) => s.get(key).cloned(),
                (true, None) => None,
            };
            let effective = match section.as_ref() {
                None => Some(base.clone()),
                Some(s) => match merge(base, s).and_then(|m| match m {
                    Some(m) => validate(key, &m).map(|()| Some(m)),
                    None => Ok(None),
                }) {
                    Ok(m) => m,
                    Err(e) => {
                        report
                            .errors
                            .push(format!("route {name:?}: metadata {key}: {e}"));
                        continue;
                    }
                },
            };
            any = true;
            cell = match effective {
                None => "off".to_string(),
                Some(c) => (stage.describe)(&c).unwrap_or_default(),
            };
        }
        if let Some(c) = cells.get_mut(i) {
            *c = cell;
        }
    }
    if any {
        report.routes.push(RouteRow {
            listener: listener.to_string(),
            route: name,
            cells,
        });
    }
}

/// A route's settings for a native filter.
enum NativeRoute {
    /// `FilterConfig{disabled: true}`: the whole filter off.
    Disabled,
    Sections(serde_json::Map<String, Value>),
}

/// The route's `typed_per_filter_config.<filter>` for the native suite: `None` when it has none
/// (or it is invalid, which is reported as the module would refuse it).
fn native_route(
    name: &str,
    route: &Value,
    filter: &str,
    report: &mut Report,
) -> Option<NativeRoute> {
    let per_route = route.get("typed_per_filter_config")?.get(filter)?;
    match per_route.get("@type").and_then(Value::as_str) {
        Some(FILTER_CONFIG) => per_route
            .get("disabled")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .then_some(NativeRoute::Disabled),
        Some(NATIVE_PER_ROUTE) => {
            let text = per_route
                .pointer("/filter_config/value")
                .and_then(Value::as_str)
                .unwrap_or("");
            let sections = match parse_json(text.as_bytes()) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    report.errors.push(format!(
                        "route {name:?}: typed_per_filter_config {filter}: must be a JSON object with one section per stage"
                    ));
                    return None;
                }
                Err(e) => {
                    report.errors.push(format!(
                        "route {name:?}: typed_per_filter_config {filter}: {e}"
                    ));
                    return None;
                }
            };
            for (key, value) in &sections {
                if find(&STAGES, key).is_none() {
                    let known: Vec<&str> = STAGES.iter().map(|e| e.name).collect();
                    report.errors.push(format!(
                        "route {name:?}: typed_per_filter_config {filter}: key `{key}` is not a mesh filter; use one of {}",
                        known.join(", ")
                    ));
                    return None;
                }
                if !value.is_object() {
                    report.errors.push(format!(
                        "route {name:?}: typed_per_filter_config {filter}: `{key}` must be an object"
                    ));
                    return None;
                }
            }
            Some(NativeRoute::Sections(sections))
        }
        _ => None,
    }
}

/// The report as the CLI prints it: the filters found, a table of routes, warnings, errors.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.filters {
        let stages: Vec<&str> = f.stages.iter().map(|(k, _)| *k).collect();
        let kind = if f.native {
            format!("native {NATIVE_MODULE}")
        } else {
            format!("root_id {}", f.root_id)
        };
        let _ = writeln!(out, "filter {:?} ({kind}): {}", f.name, stages.join(", "));
    }
    if !report.routes.is_empty() {
        // Stage cells (STAGES order: identity, rate limit, breaker, deadline, retries,
        // tracing) in reading order, the widest (identities) last.
        const ORDER: [usize; STAGES.len()] = [3, 4, 2, 1, 5, 0];
        let header = [
            "listener",
            "route",
            "deadline",
            "retries",
            "breaker",
            "limit",
            "tracing",
            "identities",
        ];
        let rows: Vec<Vec<&str>> = report
            .routes
            .iter()
            .map(|r| {
                let mut row = vec![r.listener.as_str(), r.route.as_str()];
                row.extend(
                    ORDER
                        .iter()
                        .filter_map(|i| r.cells.get(*i))
                        .map(String::as_str),
                );
                row
            })
            .collect();
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .chain(header.get(i).map(|h| h.len()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[&str]| {
            let mut l = String::new();
            for (c, w) in cells.iter().zip(&widths) {
                let _ = write!(l, "{c:<w$}  ");
            }
            l.trim_end().to_string()
        };
        let _ = writeln!(out, "\n{}", line(&header));
        for r in &rows {
            let _ = writeln!(out, "{}", line(r));
        }
        let _ = writeln!(out);
    }
    for w in &report.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    for e in &report.errors {
        let _ = writeln!(out, "error: {e}");
    }
    let _ = writeln!(
        out,
        "{} filter(s), {} route(s), {} error(s), {} warning(s)",
        report.filters.len(),
        report.routes.len(),
        report.errors.len(),
        report.warnings.len()
    );
    out
}
