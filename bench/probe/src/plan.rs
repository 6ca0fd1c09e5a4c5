//! What a probe does on every request, from its plugin configuration (JSON):
//!
//! ```json
//! {"op": "get_property", "path": "xds.route_name", "n": 32}
//! {"op": "set_map_value", "n": 32, "phase": "response"}
//! {"op": "suite_in_vm", "n": 4, "suite": {"deadline": {"timeout": "15s"}}}
//! ```
//!
//! | field | meaning | default |
//! |---|---|---|
//! | `op` | the operation (see [`Op`]) | required |
//! | `n` | how many times per request (`0..=1024`; `send_local_response`: 0 or 1) | 0 |
//! | `phase` | `request`, `response` or `log`: the hook that performs it | where the suite performs it |
//! | `path` | `get_property`: the property, dotted (`connection.uri_san_peer_certificate`) | – |
//! | `header` | `get_map_value`: the header read | – |
//! | `suite` | `suite_in_vm`, `call_mix`: the suite's configuration (one section per stage) | – |
//! | `suites` | `suite_counted`: the suite configurations a request picks from by `x-probe-stages` | – |
//!
//! Header maps follow the phase: request headers in `request`, response headers in `response`
//! and `log`.

use serde::Deserialize;
use serde_json::Value;

/// The hook an operation runs in.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `on_http_request_headers`.
    Request,
    /// `on_http_response_headers`.
    Response,
    /// `on_log`.
    Log,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Request => "request",
            Phase::Response => "response",
            Phase::Log => "log",
        }
    }
}

/// One kind of host call, or a whole request path of the suite.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Nothing: the fixed cost of a wasm HttpContext.
    None,
    /// `proxy_get_property` of this path.
    GetProperty(Vec<String>),
    /// `proxy_get_header_map_pairs` of the phase's header map (the whole map).
    GetMap,
    /// `proxy_get_header_map_value` of one header.
    GetMapValue(String),
    /// `proxy_replace_header_map_value` of a header that is not there yet (a different name
    /// each time, as the suite mostly writes new headers).
    SetMapValue,
    /// `proxy_add_header_map_value`, a different name each time.
    AddMapValue,
    /// `proxy_set_header_map_pairs` of the request headers: the map read once per request plus
    /// [`SET_MAP_WRITES`] headers, written whole `n` times.
    SetMap,
    /// `proxy_get_shared_data` of a seeded key holding [`SHARED_VALUE_LEN`] bytes.
    GetSharedData,
    /// `proxy_set_shared_data` of that key. Unconditional (`cas` 0): a successful CAS write
    /// takes the same path in the host, whose only extra work is one integer comparison.
    SetSharedData,
    /// `get_shared_data` then `set_shared_data` with the CAS token just read: one round of
    /// `mesh_kit::shared::update` that wins.
    SharedUpdate,
    /// `proxy_increment_metric` of a counter defined in `on_configure`.
    IncrementMetric,
    /// `proxy_record_metric` of a gauge defined in `on_configure`.
    RecordMetric,
    /// `proxy_get_current_time_nanoseconds`.
    GetCurrentTime,
    /// WASI `random_get` of `mesh_kit::host::RANDOM_POOL` bytes (what refilling the pool of random
    /// bytes the span ids are drawn from costs).
    RandomGet,
    /// `proxy_send_local_response` (at most once per request).
    SendLocalResponse,
    /// The suite's request path, `n` times per request, against the in-memory host.
    SuiteInVm(Value),
    /// The suite's request path once per request against the real host, counting its host
    /// calls; the request picks a configuration by `x-probe-stages`.
    SuiteCounted(Vec<Value>),
    /// The suite's host calls without the suite: one steady-state request of the suite is
    /// recorded, then its calls are replayed against the real host `n` times per request.
    CallMix(Value),
}

/// Headers [`Op::SetMap`] adds to the map it writes back.
pub const SET_MAP_WRITES: usize = 4;
/// Bytes of the shared-data value: a circuit-breaker record's size.
pub const SHARED_VALUE_LEN: usize = 234;
/// The shared-data key the probe seeds in `on_configure`.
pub const SHARED_KEY: &str = "bench.probe.shared";
/// Most repetitions a probe accepts per request.
pub const MAX_N: u32 = 1024;

/// A probe's configuration, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub op: Op,
    pub n: u32,
    pub phase: Phase,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    op: String,
    #[serde(default)]
    n: u32,
    phase: Option<Phase>,
    path: Option<String>,
    header: Option<String>,
    suite: Option<Value>,
    suites: Option<Vec<Value>>,
}

/// The operations [`Plan::parse`] knows, by their configuration name.
pub const OPS: [&str; 18] = [
    "none",
    "get_property",
    "get_map",
    "get_map_value",
    "set_map_value",
    "add_map_value",
    "set_map",
    "get_shared_data",
    "set_shared_data",
    "shared_update",
    "increment_metric",
    "record_metric",
    "get_current_time",
    "random_get",
    "send_local_response",
    "suite_in_vm",
    "suite_counted",
    "call_mix",
];

impl Plan {
    /// Parses and checks a plugin configuration; the error names the field.
    pub fn parse(bytes: &[u8]) -> Result<Plan, String> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("configuration: {e}"))?;
        if raw.n > MAX_N {
            return Err(format!("n: {} is more than {MAX_N}", raw.n));
        }
        let needs = |field: &str, v: Option<String>| {
            v.filter(|s| !s.is_empty())
                .ok_or_else(|| format!("{field}: required by op {:?}", raw.op))
        };
        let op = match raw.op.as_str() {
            "none" => Op::None,
            "get_property" => Op::GetProperty(
                needs("path", raw.path.clone())?
                    .split('.')
                    .map(str::to_owned)
                    .collect(),
            ),
            "get_map" => Op::GetMap,
            "get_map_value" => Op::GetMapValue(needs("header", raw.header.clone())?),
            "set_map_value" => Op::SetMapValue,
            "add_map_value" => Op::AddMapValue,
            "set_map" => Op::SetMap,
            "get_shared_data" => Op::GetSharedData,
            "set_shared_data" => Op::SetSharedData,
            "shared_update" => Op::SharedUpdate,
            "increment_metric" => Op::IncrementMetric,
            "record_metric" => Op::RecordMetric,
            "get_current_time" => Op::GetCurrentTime,
            "random_get" => Op::RandomGet,
            "send_local_response" => Op::SendLocalResponse,
            "suite_in_vm" | "call_mix" => match raw.suite {
                Some(s @ Value::Object(_)) if raw.op == "call_mix" => Op::CallMix(s),
                Some(s @ Value::Object(_)) => Op::SuiteInVm(s),
                _ => return Err(format!("suite: required by op {:?}, an object", raw.op)),
            },
            "suite_counted" => match raw.suites {
                Some(list) if !list.is_empty() && list.iter().all(Value::is_object) => {
                    Op::SuiteCounted(list)
                }
                _ => {
                    return Err(
                        "suites: required by op \"suite_counted\", a non-empty list of objects"
                            .to_owned(),
                    )
                }
            },
            other => {
                return Err(format!(
                    "op: unknown operation {other:?}; known: {}",
                    OPS.join(", ")
                ))
            }
        };
        let phase = raw.phase.unwrap_or_else(|| default_phase(&op));
        match (&op, phase) {
            (Op::SetMap | Op::SendLocalResponse, p) if p != Phase::Request => {
                return Err(format!(
                    "phase: {:?} runs in the request phase only",
                    raw.op
                ))
            }
            (Op::SendLocalResponse, _) if raw.n > 1 => {
                return Err("n: send_local_response answers at most once (0 or 1)".to_owned())
            }
            (Op::SetMapValue | Op::AddMapValue | Op::GetMap, Phase::Log) => {
                return Err(format!(
                    "phase: {:?} writes or reads the whole map only in request or response",
                    raw.op
                ))
            }
            _ => {}
        }
        Ok(Plan {
            op,
            n: raw.n,
            phase,
        })
    }
}

/// Where the suite performs an operation: the response's properties in `on_log`, the rest on
/// request headers.
pub fn default_phase(op: &Op) -> Phase {
    match op {
        Op::GetProperty(path)
            if path
                .first()
                .is_some_and(|p| p == "response" || p == "upstream") =>
        {
            Phase::Log
        }
        _ => Phase::Request,
    }
}

/// The header names [`Op::SetMapValue`] and [`Op::AddMapValue`] write: `x-probe-000` …, one per
/// repetition, so every write inserts a new header.
pub fn header_names(n: u32) -> Vec<String> {
    (0..n).map(|i| format!("x-probe-{i:03}")).collect()
}

/// The value written to headers (16 bytes, like a timeout or a short id).
pub const HEADER_VALUE: &str = "0123456789abcdef";

/// The shared-data value: [`SHARED_VALUE_LEN`] bytes.
pub fn shared_value() -> Vec<u8> {
    (0..SHARED_VALUE_LEN)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(json: &str) -> Result<Plan, String> {
        Plan::parse(json.as_bytes())
    }

    #[test]
    fn properties_split_their_path_and_default_to_the_suites_phase() {
        let p = plan(r#"{"op":"get_property","path":"xds.route_name","n":32}"#).unwrap();
        assert_eq!(
            p.op,
            Op::GetProperty(vec!["xds".to_owned(), "route_name".to_owned()])
        );
        assert_eq!((p.n, p.phase), (32, Phase::Request));
        let p = plan(r#"{"op":"get_property","path":"upstream.request_attempt_count"}"#).unwrap();
        assert_eq!((p.n, p.phase), (0, Phase::Log));
        let p =
            plan(r#"{"op":"get_property","path":"response.flags","phase":"response"}"#).unwrap();
        assert_eq!(p.phase, Phase::Response);
    }

    #[test]
    fn each_error_names_its_field() {
        let e = |json: &str| plan(json).unwrap_err();
        assert!(e(r#"{"op":"get_property"}"#).starts_with("path:"));
        assert!(e(r#"{"op":"get_map_value","n":1}"#).starts_with("header:"));
        assert!(e(r#"{"op":"nope"}"#).starts_with("op: unknown"));
        assert!(e(r#"{"op":"none","n":5000}"#).starts_with("n:"));
        assert!(e(r#"{"op":"send_local_response","n":2}"#).starts_with("n:"));
        assert!(e(r#"{"op":"set_map","phase":"response"}"#).starts_with("phase:"));
        assert!(e(r#"{"op":"set_map_value","phase":"log"}"#).starts_with("phase:"));
        assert!(e(r#"{"op":"suite_in_vm","n":1}"#).starts_with("suite:"));
        assert!(e(r#"{"op":"suite_counted","suites":[]}"#).starts_with("suites:"));
        assert!(e(r#"{"op":"none","extra":1}"#).starts_with("configuration:"));
    }

    #[test]
    fn every_known_operation_parses() {
        for op in OPS {
            let json = match op {
                "get_property" => r#"{"op":"get_property","path":"request.time"}"#.to_owned(),
                "get_map_value" => r#"{"op":"get_map_value","header":"te"}"#.to_owned(),
                "suite_in_vm" | "call_mix" => format!(r#"{{"op":"{op}","suite":{{}}}}"#),
                "suite_counted" => r#"{"op":"suite_counted","suites":[{}]}"#.to_owned(),
                _ => format!(r#"{{"op":"{op}","n":1}}"#),
            };
            assert!(plan(&json).is_ok(), "{op}: {:?}", plan(&json));
        }
    }

    #[test]
    fn written_names_are_distinct_and_the_shared_value_has_the_breakers_size() {
        let names = header_names(40);
        assert_eq!(names.first().map(String::as_str), Some("x-probe-000"));
        let mut sorted = names.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 40);
        assert_eq!(shared_value().len(), 234);
    }
}
