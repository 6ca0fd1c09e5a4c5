//! Which runtime of our filters the end-to-end tests run: the wasm modules (`MESH_RUNTIME=wasm`,
//! the default) or the native dynamic module `libmesh_filters.so` (`MESH_RUNTIME=native`).
//!
//! Tests are written once, against the wasm bootstrap ([`crate::bootstrap::wasm_filter`] and
//! route metadata). Under the native runtime every bootstrap Envoy starts with passes through
//! [`adapt`] first, which makes of it what a user switching modules writes:
//!
//! * each of our wasm filters becomes the native module's filter of the same name and the same
//!   plugin configuration: the suite (`root_id: mesh`) is `filter_name: suite`
//!   ([`crate::bootstrap::native_filter`]), a single-stage module (`root_id: mesh.deadline`)
//!   is `filter_name: mesh.deadline` ([`crate::bootstrap::native_stage_filter`]);
//! * a route's `metadata.filter_metadata.mesh.*` sections become its per-route configuration
//!   for each native filter of its listener
//!   ([`crate::bootstrap::with_native_route_config`]), unless the route switches that filter
//!   off with Envoy's `FilterConfig`;
//! * the metrics read back through [`crate::envoy::Envoy`] have the native names
//!   (`envoy_mesh_<stage>_<stat>`) mapped back to the wasm ones (`mesh_<stage>_<stat>`), so one
//!   assertion reads both.
//!
//! What only one runtime has (a `vm_id`, a `.wasm` file's size, the log line of a wasm VM) is
//! tested under that runtime only; such a test says so with [`Runtime::only`] at its top, and
//! `make test-integration` runs the native pass with the test files whose behaviour both
//! runtimes share.

use crate::bootstrap::{native_filter, native_stage_filter, with_native_route_config};
use serde_json::{Map, Value};

const WASM_FILTER: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const CONNECTION_MANAGER: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const FILTER_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

/// The runtime of our filters in this test process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    Wasm,
    Native,
}

impl Runtime {
    /// `MESH_RUNTIME` (`wasm` when unset or not understood, which it says).
    pub fn current() -> Runtime {
        match std::env::var("MESH_RUNTIME").as_deref() {
            Err(_) | Ok("") | Ok("wasm") => Runtime::Wasm,
            Ok("native") => Runtime::Native,
            Ok(other) => {
                eprintln!("MESH_RUNTIME={other:?} is neither wasm nor native: running wasm");
                Runtime::Wasm
            }
        }
    }

    /// For a test of what only `runtime` has: true when this process runs it. A test that
    /// returns on false says why in `reason`, printed, so that a native run lists what it left
    /// to the wasm run.
    pub fn only(runtime: Runtime, reason: &str) -> bool {
        let now = Runtime::current();
        if now != runtime {
            eprintln!("{runtime:?} only, not run under {now:?}: {reason}");
        }
        now == runtime
    }
}

/// `bootstrap` for the current runtime: itself under wasm; see the module's description for
/// native.
pub fn adapt(bootstrap: &Value) -> Value {
    let mut out = bootstrap.clone();
    if Runtime::current() == Runtime::Native {
        to_native(&mut out);
    }
    out
}

/// Rewrites every connection manager in `v` (listeners, static or not) for the native module.
pub fn to_native(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("@type").and_then(Value::as_str) == Some(CONNECTION_MANAGER) {
                connection_manager(map);
            }
            map.values_mut().for_each(to_native);
        }
        Value::Array(items) => items.iter_mut().for_each(to_native),
        _ => {}
    }
}

fn connection_manager(hcm: &mut Map<String, Value>) {
    let mut natives = Vec::new();
    if let Some(Value::Array(filters)) = hcm.get_mut("http_filters") {
        for f in filters.iter_mut() {
            if let Some((name, native)) = native_of(f) {
                natives.push(name);
                *f = native;
            }
        }
    }
    if natives.is_empty() {
        return;
    }
    let Some(Value::Array(hosts)) = hcm
        .get_mut("route_config")
        .and_then(|r| r.get_mut("virtual_hosts"))
    else {
        return;
    };
    for host in hosts {
        let Some(Value::Array(routes)) = host.get_mut("routes") else {
            continue;
        };
        for route in routes.iter_mut() {
            let sections = mesh_sections(route);
            if sections.is_empty() {
                continue;
            }
            for name in &natives {
                let disabled = route
                    .pointer(&format!("/typed_per_filter_config/{name}/@type"))
                    .and_then(Value::as_str)
                    == Some(FILTER_CONFIG);
                if !disabled {
                    *route = with_native_route_config(
                        route.take(),
                        name,
                        &Value::Object(sections.clone()),
                    );
                }
            }
        }
    }
}

/// The native filter (and its name) for one of our wasm filters; `None` for any other filter.
fn native_of(filter: &Value) -> Option<(String, Value)> {
    let config = filter.pointer("/typed_config")?;
    if config.get("@type")?.as_str()? != WASM_FILTER {
        return None;
    }
    let root_id = config.pointer("/config/root_id")?.as_str()?;
    let text = config
        .pointer("/config/configuration/value")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = filter.get("name")?.as_str()?;
    let native = match root_id {
        "mesh" => native_filter(name, text),
        stage => native_stage_filter(name, stage, text),
    };
    Some((name.to_owned(), native))
}

/// The `mesh.*` sections of a route's metadata.
fn mesh_sections(route: &Value) -> Map<String, Value> {
    route
        .pointer("/metadata/filter_metadata")
        .and_then(Value::as_object)
        .map(|md| {
            md.iter()
                .filter(|(k, _)| k.starts_with("mesh."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Prometheus text from the native module with its names as the wasm module's:
/// `envoy_mesh_deadline_rq_total` → `mesh_deadline_rq_total` (samples and `# TYPE`/`# HELP`).
pub fn wasm_metric_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = if let Some(rest) = line.strip_prefix("envoy_mesh_") {
            format!("mesh_{rest}")
        } else if let Some(rest) = line.strip_prefix("# TYPE envoy_mesh_") {
            format!("# TYPE mesh_{rest}")
        } else if let Some(rest) = line.strip_prefix("# HELP envoy_mesh_") {
            format!("# HELP mesh_{rest}")
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::bootstrap::{
        bootstrap, cluster, filter, listener, route, with_filter_disabled, with_metadata,
    };
    use serde_json::json;

    fn sample() -> Value {
        let routes = vec![
            with_metadata(
                route("a", "/a", "svc"),
                "mesh.deadline",
                json!({"timeout": "1s"}),
            ),
            with_filter_disabled(
                with_metadata(
                    route("b", "/b", "svc"),
                    "mesh.deadline",
                    json!({"timeout": "2s"}),
                ),
                "mesh.deadline",
            ),
            route("c", "/", "svc"),
        ];
        bootstrap(
            vec![listener(
                "main",
                routes,
                vec![filter("mesh.deadline", &json!({"timeout": "5s"}))],
            )],
            vec![cluster("svc", "127.0.0.1:1".parse().unwrap(), false)],
        )
    }

    #[test]
    fn a_single_stage_module_becomes_the_native_module_running_that_stage() {
        let mut b = sample();
        to_native(&mut b);
        let text = b.to_string();
        assert!(!text.contains(WASM_FILTER), "{text}");
        let f = &b.pointer("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters/0")
            .unwrap();
        assert_eq!(f["name"], "mesh.deadline");
        assert_eq!(f["typed_config"]["filter_name"], "mesh.deadline");
        let config: Value = serde_json::from_str(
            f["typed_config"]["filter_config"]["value"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(config, json!({"timeout": "5s"}));
    }

    #[test]
    fn route_metadata_becomes_per_route_config_unless_the_route_switches_the_filter_off() {
        let mut b = sample();
        to_native(&mut b);
        let routes = b
            .pointer("/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes")
            .unwrap()
            .clone();
        let per_route = &routes[0]["typed_per_filter_config"]["mesh.deadline"];
        let sections: Value =
            serde_json::from_str(per_route["filter_config"]["value"].as_str().unwrap()).unwrap();
        assert_eq!(sections, json!({"mesh.deadline": {"timeout": "1s"}}));
        assert_eq!(
            routes[1]["typed_per_filter_config"]["mesh.deadline"]["@type"],
            FILTER_CONFIG
        );
        assert!(routes[2].get("typed_per_filter_config").is_none());
    }

    #[test]
    fn native_metric_names_read_as_the_wasm_ones() {
        let text = "# TYPE envoy_mesh_deadline_rq_total counter\nenvoy_mesh_deadline_rq_total{route=\"a\"} 3\nenvoy_http_downstream_rq_total 9\n";
        let out = wasm_metric_names(text);
        assert!(out.contains("# TYPE mesh_deadline_rq_total counter\n"));
        assert!(out.contains("mesh_deadline_rq_total{route=\"a\"} 3\n"));
        assert!(out.contains("envoy_http_downstream_rq_total 9\n"));
    }
}
