//! The trace-propagation filter's configuration (plugin JSON, and per route in
//! `mesh.trace_propagation` route metadata). Defaults as documented in README.md.

use crate::formats::Format;
use mesh_kit::config::{ConfigError, Validate};
use mesh_kit::values::{Dur, Ratio};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::time::Duration;

/// The trace-propagation filter's configuration.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "TracePropagationConfig"))]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Formats read from the request, in this order; the first valid one wins.
    #[serde(default = "default_extract", deserialize_with = "formats")]
    pub extract: Vec<Format>,
    /// Formats written upstream.
    #[serde(default = "default_inject", deserialize_with = "formats")]
    pub inject: Vec<Format>,
    /// Sampling ratio for traces that start here.
    #[serde(default = "all")]
    pub sampling_ratio: Ratio,
    /// Headers returned to the caller: `traceresponse` and/or `server-timing`.
    #[serde(default)]
    pub response_headers: Vec<ResponseHeader>,
    /// OTLP/HTTP export of one SERVER span per sampled request. Default: none.
    #[serde(default)]
    pub export: Option<Export>,
}

/// A header returned to the caller.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
pub enum ResponseHeader {
    #[serde(rename = "traceresponse")]
    TraceResponse,
    #[serde(rename = "server-timing")]
    ServerTiming,
}

/// OTLP/HTTP export of one SERVER span per sampled request.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "TraceExport"))]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// The Envoy cluster of the collector (static, in the bootstrap).
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub cluster: String,
    /// `:authority` of the export requests; default: the cluster name.
    #[serde(default)]
    pub authority: Option<String>,
    /// Path of the export requests; starts with `/`.
    #[serde(default = "default_path")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = "^/")))]
    pub path: String,
    /// Resource attribute `service.name` of the spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Spans per export request.
    #[serde(default = "default_max_batch")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 10_000)))]
    pub max_batch: u32,
    /// How often each VM sends a batch; at least 10ms.
    #[serde(default = "one_second")]
    pub flush_interval: Dur,
    /// Spans queued per VM before the oldest are dropped; at least `max_batch`.
    #[serde(default = "default_max_queue")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1_000_000)))]
    pub max_queue: u32,
}

fn default_extract() -> Vec<Format> {
    vec![
        Format::W3c,
        Format::B3,
        Format::Jaeger,
        Format::GrpcTraceBin,
    ]
}
fn default_inject() -> Vec<Format> {
    vec![Format::W3c]
}
fn all() -> Ratio {
    Ratio::new(1.0).unwrap_or_default()
}
fn default_path() -> String {
    "/v1/traces".into()
}
fn default_service_name() -> String {
    "envoy".into()
}
fn default_max_batch() -> u32 {
    512
}
fn default_max_queue() -> u32 {
    8192
}
fn one_second() -> Dur {
    Dur(Duration::from_secs(1))
}

fn formats<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Format>, D::Error> {
    let names = Vec::<String>::deserialize(de)?;
    let mut out = Vec::new();
    for n in &names {
        let f = Format::parse(n).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{n:?} is not a format (w3c, b3, b3-multi, jaeger, grpc-trace-bin)"
            ))
        })?;
        if !out.contains(&f) {
            out.push(f);
        }
    }
    Ok(out)
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(e) = &self.export {
            let s = |v: &str| Value::String(v.to_string());
            if e.cluster.is_empty() {
                return Err(ConfigError::new(
                    "export.cluster",
                    Some(&s(&e.cluster)),
                    "names the collector's cluster",
                ));
            }
            if !e.path.starts_with('/') {
                return Err(ConfigError::new(
                    "export.path",
                    Some(&s(&e.path)),
                    "must start with /",
                ));
            }
            if e.max_batch == 0 || e.max_batch > 10_000 {
                return Err(ConfigError::new(
                    "export.max_batch",
                    Some(&Value::from(e.max_batch)),
                    "must be 1 to 10000",
                ));
            }
            if e.max_queue < e.max_batch || e.max_queue > 1_000_000 {
                return Err(ConfigError::new(
                    "export.max_queue",
                    Some(&Value::from(e.max_queue)),
                    "must be at least max_batch and at most 1000000",
                ));
            }
            if e.flush_interval.get() < Duration::from_millis(10) {
                return Err(ConfigError::new(
                    "export.flush_interval",
                    Some(&s(&e.flush_interval.to_string())),
                    "must be at least 10ms",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_kit::config::{from_value, parse_json};

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        from_value(&parse_json(s.as_bytes())?)
    }

    #[test]
    fn an_empty_config_extracts_everything_and_injects_w3c() {
        let c = parse("{}").unwrap();
        assert_eq!(
            c.extract,
            vec![
                Format::W3c,
                Format::B3,
                Format::Jaeger,
                Format::GrpcTraceBin
            ]
        );
        assert_eq!(c.inject, vec![Format::W3c]);
        assert!((c.sampling_ratio.get() - 1.0).abs() < f64::EPSILON);
        assert!(c.response_headers.is_empty() && c.export.is_none());
    }

    #[test]
    fn export_defaults_are_the_documented_ones() {
        let c = parse(r#"{"export": {"cluster": "otlp"}}"#).unwrap();
        let e = c.export.unwrap();
        assert_eq!(
            (
                e.path.as_str(),
                e.service_name.as_str(),
                e.max_batch,
                e.max_queue
            ),
            ("/v1/traces", "envoy", 512, 8192)
        );
        assert_eq!(e.flush_interval.get(), Duration::from_secs(1));
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (json, field) in [
            (r#"{"inject": ["w3c", "zipkin"]}"#, "inject"),
            (r#"{"extract": "w3c"}"#, "extract"),
            (r#"{"sampling_ratio": 1.5}"#, "sampling_ratio"),
            (
                r#"{"response_headers": ["traceparent"]}"#,
                "response_headers[0]",
            ),
            (r#"{"export": {}}"#, "export"),
            (
                r#"{"export": {"cluster": "otlp", "path": "v1/traces"}}"#,
                "export.path",
            ),
            (
                r#"{"export": {"cluster": "otlp", "max_batch": 0}}"#,
                "export.max_batch",
            ),
            (
                r#"{"export": {"cluster": "otlp", "flush_interval": "1"}}"#,
                "export.flush_interval",
            ),
            (
                r#"{"export": {"cluster": "otlp", "colector": "x"}}"#,
                "export.colector",
            ),
        ] {
            let e = parse(json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
        }
    }
}
