//! Per-route configuration from route metadata (mesh_kit::route): arbitrary bytes as a
//! serialized `envoy.config.core.v3.Metadata` through every filter's route cache: decoding,
//! `google.protobuf.Struct` to JSON, the merge over the plugin configuration and the filter's
//! validation never panic, an invalid route is reported once, and the second lookup of a route
//! comes from the cache with the same outcome.
//!
//! Input: protobuf bytes; or `0xff` (never the first byte of a valid message: field 31, wire
//! type 7) then JSON, which is encoded as a Struct under every filter's key, so that mutations
//! reach the configuration fields too.
#![no_main]

#[path = "common/configs.rs"]
mod configs;

use configs::*;
use libfuzzer_sys::fuzz_target;
use mesh_kit::proto::envoy_core::Metadata;
use mesh_kit::route::route_section;
use prost::Message;
use prost_types::value::Kind;
use serde_json::Value;

fn to_proto(v: &Value) -> prost_types::Value {
    let kind = match v {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(to_proto).collect(),
        }),
        Value::Object(o) => Kind::StructValue(to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

fn to_struct(o: &serde_json::Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: o.iter().map(|(k, v)| (k.clone(), to_proto(v))).collect(),
    }
}

fuzz_target!(|data: &[u8]| {
    let bytes = match data.split_first() {
        Some((0xff, json)) => {
            let Ok(Value::Object(section)) = serde_json::from_slice::<Value>(json) else {
                return;
            };
            let section = to_struct(&section);
            Metadata {
                filter_metadata: keys()
                    .map(|k| (k.to_string(), section.clone()))
                    .collect(),
            }
            .encode_to_vec()
        }
        _ => data.to_vec(),
    };
    for key in keys() {
        let _ = route_section(&bytes, key);
    }
    resolve::<SpiffeIdentity>("mesh.spiffe_identity", &bytes);
    resolve::<RateLimit>("mesh.rate_limit", &bytes);
    resolve::<CircuitBreaker>("mesh.circuit_breaker", &bytes);
    resolve::<Deadline>("mesh.deadline", &bytes);
    resolve::<RetryBudget>("mesh.retry_budget", &bytes);
    resolve::<TracePropagation>("mesh.trace_propagation", &bytes);
});
