//! Per-route configuration from Envoy's per-route filter config.
//!
//! Route metadata cannot be read whole through the dynamic-module ABI (only one scalar key at a
//! time, no nested objects: `ABI.md` §3), so the native module takes a route's configuration
//! from `typed_per_filter_config.<filter name>`, a `DynamicModuleFilterPerRoute` whose
//! `filter_config` is a JSON object keyed exactly like route metadata is for the wasm module:
//!
//! ```yaml
//! typed_per_filter_config:
//!   mesh:
//!     "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute
//!     dynamic_module_config: {name: mesh_filters}
//!     filter_name: auth
//!     filter_config:
//!       "@type": type.googleapis.com/google.protobuf.StringValue
//!       value: '{"mesh.deadline": {"timeout": "2s"}, "mesh.spiffe_identity": {"disabled": true}}'
//! ```
//!
//! Envoy parses it once, on the main thread, when it loads the route table
//! ([`PerRoute::parse`]); a value that is not an object of objects keyed by known stage names is
//! refused there, with one log line, and Envoy refuses the route configuration. What a section
//! holds is checked when a request first meets the route, by the kit, exactly as for route
//! metadata (logged, counted in the stage's `config_error`, the stage's failure policy).

use mesh_kit::config::{parse_json, ConfigError};
use mesh_kit::registry::Entry;
use serde_json::{Map, Value};

/// One route's per-route configuration: a section per stage.
#[derive(Debug)]
pub struct PerRoute {
    sections: Map<String, Value>,
}

impl PerRoute {
    /// Parses a `filter_config`; the error is the line to log.
    pub fn parse(
        module: &str,
        stages: &[Entry],
        name: &str,
        bytes: &[u8],
    ) -> Result<PerRoute, String> {
        sections(stages, bytes)
            .map(|sections| PerRoute { sections })
            .map_err(|e| format!("{module}: invalid per-route configuration {name:?}: {e}"))
    }

    /// The section of stage `key` (`mesh.deadline`).
    pub fn section(&self, key: &str) -> Option<&Value> {
        self.sections.get(key)
    }
}

fn sections(stages: &[Entry], bytes: &[u8]) -> Result<Map<String, Value>, ConfigError> {
    let Value::Object(map) = parse_json(bytes)? else {
        return Err(ConfigError::new(
            "",
            None,
            "a per-route configuration must be a JSON object with one section per stage, keyed by its name (\"mesh.deadline\")",
        ));
    };
    for (key, value) in &map {
        if !stages.iter().any(|e| e.name == key) {
            let names: Vec<&str> = stages.iter().map(|e| e.name).collect();
            return Err(ConfigError::new(
                key.as_str(),
                None,
                format!("unknown stage; the stages are {}", names.join(", ")),
            ));
        }
        if !value.is_object() {
            return Err(ConfigError::new(
                key.as_str(),
                Some(value),
                "a stage's section must be an object",
            ));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAGES: [Entry; 1] = [mesh_deadline::STAGE];

    fn parse(json: &str) -> Result<PerRoute, String> {
        PerRoute::parse("mesh", &STAGES, "r", json.as_bytes())
    }

    #[test]
    fn sections_are_keyed_by_stage_name() {
        let p = parse(r#"{"mesh.deadline": {"disabled": true}}"#).unwrap();
        assert_eq!(p.section("mesh.deadline").unwrap()["disabled"], true);
        assert!(p.section("mesh.other").is_none());
        assert!(parse("{}").unwrap().section("mesh.deadline").is_none());
    }

    #[test]
    fn anything_else_is_refused_with_one_line_naming_the_key() {
        let e = parse(r#"{"mesh.deadlin": {}}"#).unwrap_err();
        assert!(
            e.starts_with("mesh: invalid per-route configuration \"r\": field `mesh.deadlin`"),
            "{e}"
        );
        assert!(
            e.contains("unknown stage; the stages are mesh.deadline"),
            "{e}"
        );
        let e = parse(r#"{"mesh.deadline": true}"#).unwrap_err();
        assert!(e.contains("`mesh.deadline`, value true"), "{e}");
        assert!(parse("[1]").unwrap_err().contains("JSON object"));
        assert!(parse("{").is_err());
        assert!(!parse("{\"a\n\": 1}").unwrap_err().contains('\n'));
    }
}
