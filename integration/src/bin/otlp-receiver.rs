//! `otlp-receiver [--listen ADDR] [--query ADDR]`
//!
//! The project's OTLP/HTTP trace receiver (`mesh_integration::otlp_receiver`) as a server, for
//! the compose stack where Jaeger's image cannot be had. It receives spans on `--listen`
//! (default `0.0.0.0:4318`, `POST /v1/traces`, protobuf) and answers a small part of Jaeger's
//! query API on `--query` (default `0.0.0.0:16686`, Jaeger's port), so a client of that API
//! works against either:
//!
//! | request | answer |
//! |---|---|
//! | `GET /api/traces/<trace id>` | `{"data": [trace]}` in Jaeger's JSON (spans with `traceID`, `spanID`, `operationName`, `references`, `startTime` and `duration` in µs, `tags`, `processID`; `processes` with `serviceName`), `404` when no span has that id |
//! | `GET /api/services` | `{"data": [service names]}` |
//! | `GET /api/spans` | every span received, as a JSON list (this receiver only) |
//! | `GET /` | `ok` |
//!
//! Trace ids are compared as hexadecimal numbers (Jaeger drops leading zeros). Spans are kept
//! in memory until the process ends. Runs until SIGINT or SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use mesh_integration::otlp_receiver::{self, ReceivedSpan, Receiver};
use mesh_integration::server::{self, Server};
use serde_json::{json, Value};

const USAGE: &str = "usage: otlp-receiver [--listen ADDR] [--query ADDR]

Receives OTLP/HTTP spans (POST /v1/traces, protobuf) on --listen (default 0.0.0.0:4318) and
answers part of Jaeger's query API on --query (default 0.0.0.0:16686):
  GET /api/traces/<trace id>   the trace, in Jaeger's JSON
  GET /api/services            service names
  GET /api/spans               every span received";

#[derive(Debug, PartialEq)]
struct Args {
    listen: SocketAddr,
    query: SocketAddr,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("otlp-receiver: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    server::main("otlp-receiver", run(args))
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: SocketAddr::from(([0, 0, 0, 0], 4318)),
        query: SocketAddr::from(([0, 0, 0, 0], 16686)),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let slot = match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => &mut parsed.listen,
            "--query" => &mut parsed.query,
            other => return Err(format!("unexpected argument {other:?}")),
        };
        let value = match inline {
            Some(value) => value,
            None => args
                .next()
                .ok_or_else(|| format!("{flag} needs a value IP:PORT"))?,
        };
        *slot = value
            .parse()
            .map_err(|e| format!("{flag} {value:?} is not IP:PORT: {e}"))?;
    }
    Ok(Some(parsed))
}

async fn run(args: Args) -> ExitCode {
    let receiver = match otlp_receiver::spawn(args.listen).await {
        Ok(receiver) => Arc::new(receiver),
        Err(err) => {
            eprintln!("otlp-receiver: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let state = |_stop| Arc::clone(&receiver);
    let query = Server::http(args.query, state, |receiver, request| async move {
        server::ok(answer(&receiver, &request))
    })
    .await;
    let query = match query {
        Ok((query, _)) => query,
        Err(err) => {
            eprintln!("otlp-receiver: cannot listen on {}: {err}", args.query);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "otlp-receiver: OTLP/HTTP on {}{}, query API on {}",
        receiver.addr(),
        otlp_receiver::TRACES_PATH,
        query.addr()
    );
    let outcome = match server::wait_for_signal().await {
        Ok(signal) => {
            eprintln!("otlp-receiver: {signal} received, shutting down");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("otlp-receiver: cannot wait for signals: {err}");
            ExitCode::FAILURE
        }
    };
    query.shutdown().await;
    outcome
}

fn answer(receiver: &Receiver, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return json_response(StatusCode::METHOD_NOT_ALLOWED, &error(405, "use GET"));
    }
    let path = request.uri().path();
    match path {
        "/" => text_response(StatusCode::OK, "ok\n"),
        "/api/spans" => {
            let spans: Vec<Value> = receiver.spans().iter().map(span_json).collect();
            json_response(StatusCode::OK, &Value::Array(spans))
        }
        "/api/services" => {
            let mut names: Vec<String> = receiver
                .spans()
                .into_iter()
                .map(|span| span.service_name)
                .collect();
            names.sort();
            names.dedup();
            let total = names.len();
            json_response(
                StatusCode::OK,
                &json!({"data": names, "total": total, "limit": 0, "offset": 0, "errors": null}),
            )
        }
        _ => match path.strip_prefix("/api/traces/") {
            Some(id) if !id.is_empty() && !id.contains('/') => {
                let wanted = normalize_id(id);
                let spans: Vec<ReceivedSpan> = receiver
                    .spans()
                    .into_iter()
                    .filter(|span| normalize_id(&span.trace_id) == wanted)
                    .collect();
                if spans.is_empty() {
                    json_response(StatusCode::NOT_FOUND, &error(404, "trace not found"))
                } else {
                    json_response(
                        StatusCode::OK,
                        &json!({"data": [jaeger_trace(&spans)], "total": 0, "limit": 0, "offset": 0, "errors": null}),
                    )
                }
            }
            _ => json_response(StatusCode::NOT_FOUND, &error(404, "unknown path")),
        },
    }
}

/// A trace id as Jaeger prints it: lowercase hex without leading zeros.
fn normalize_id(id: &str) -> String {
    let lower = id.to_ascii_lowercase();
    let trimmed = lower.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn error(code: u16, message: &str) -> Value {
    json!({"data": null, "total": 0, "limit": 0, "offset": 0, "errors": [{"code": code, "msg": message}]})
}

/// A received span as this receiver's own JSON (`/api/spans`).
fn span_json(span: &ReceivedSpan) -> Value {
    let attributes: serde_json::Map<String, Value> = span
        .attributes
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "service_name": span.service_name,
        "scope_name": span.scope_name,
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "trace_state": span.trace_state,
        "flags": span.flags,
        "name": span.name,
        "kind": span.kind,
        "start_unix_nano": span.start_unix_nano,
        "end_unix_nano": span.end_unix_nano,
        "attributes": attributes,
        "status_code": span.status_code,
        "status_message": span.status_message,
    })
}

/// Spans of one trace in the JSON of Jaeger's query API.
fn jaeger_trace(spans: &[ReceivedSpan]) -> Value {
    let mut processes: BTreeMap<String, String> = BTreeMap::new();
    let mut list = Vec::with_capacity(spans.len());
    for span in spans {
        let next = format!("p{}", processes.len() + 1);
        let process = processes
            .entry(span.service_name.clone())
            .or_insert(next)
            .clone();
        let references: Vec<Value> = span
            .parent_span_id
            .iter()
            .map(
                |parent| json!({"refType": "CHILD_OF", "traceID": span.trace_id, "spanID": parent}),
            )
            .collect();
        let mut tags: Vec<Value> = span
            .attributes
            .iter()
            .map(|(k, v)| json!({"key": k, "type": "string", "value": v}))
            .collect();
        if let Some(kind) = span_kind(span.kind) {
            tags.push(json!({"key": "span.kind", "type": "string", "value": kind}));
        }
        if span.status_code == 2 {
            tags.push(json!({"key": "otel.status_code", "type": "string", "value": "ERROR"}));
            tags.push(json!({"key": "error", "type": "bool", "value": true}));
        }
        list.push(json!({
            "traceID": span.trace_id,
            "spanID": span.span_id,
            "operationName": span.name,
            "references": references,
            "startTime": span.start_unix_nano / 1000,
            "duration": span.end_unix_nano.saturating_sub(span.start_unix_nano) / 1000,
            "tags": tags,
            "logs": [],
            "processID": process,
            "warnings": null,
        }));
    }
    let processes: serde_json::Map<String, Value> = processes
        .into_iter()
        .map(|(service, id)| (id, json!({"serviceName": service, "tags": []})))
        .collect();
    let trace_id = spans
        .first()
        .map(|s| s.trace_id.clone())
        .unwrap_or_default();
    json!({"traceID": trace_id, "spans": list, "processes": processes, "warnings": null})
}

fn span_kind(kind: i32) -> Option<&'static str> {
    match kind {
        1 => Some("internal"),
        2 => Some("server"),
        3 => Some("client"),
        4 => Some("producer"),
        5 => Some("consumer"),
        _ => None,
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text_response(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_addresses_with_defaults() {
        let parsed = parse_args(args(&["--query=127.0.0.1:1"])).unwrap().unwrap();
        assert_eq!(parsed.listen, "0.0.0.0:4318".parse().unwrap());
        assert_eq!(parsed.query, "127.0.0.1:1".parse().unwrap());
        let parsed = parse_args(args(&["--listen", "[::1]:2"])).unwrap().unwrap();
        assert_eq!(parsed.listen, "[::1]:2".parse().unwrap());
        assert_eq!(parse_args(args(&["--help"])), Ok(None));
        assert!(parse_args(args(&["--listen"])).is_err());
        assert!(parse_args(args(&["--listen", "localhost:1"])).is_err());
        assert!(parse_args(args(&["--port", "1"])).is_err());
    }

    #[test]
    fn trace_ids_compare_as_jaeger_prints_them() {
        assert_eq!(
            normalize_id("00000000000000000af7651916cd43dd"),
            "af7651916cd43dd"
        );
        assert_eq!(normalize_id("AF7651916CD43DD"), "af7651916cd43dd");
        assert_eq!(normalize_id("0000"), "0");
    }

    #[test]
    fn traces_have_jaegers_shape() {
        let span = |service: &str, id: &str, parent: Option<&str>| ReceivedSpan {
            service_name: service.to_owned(),
            scope_name: String::new(),
            scope_version: String::new(),
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_owned(),
            span_id: id.to_owned(),
            parent_span_id: parent.map(str::to_owned),
            trace_state: String::new(),
            flags: 1,
            name: "auth".to_owned(),
            kind: 2,
            start_unix_nano: 2_000_000,
            end_unix_nano: 5_000_000,
            attributes: vec![("url.path".to_owned(), "/auth/x".to_owned())],
            status_code: 2,
            status_message: String::new(),
            received_at: Instant::now(),
        };
        let trace = jaeger_trace(&[
            span("edge", "00f067aa0ba902b7", None),
            span("auth-sidecar", "10f067aa0ba902b7", Some("00f067aa0ba902b7")),
        ]);
        let spans = trace["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0]["references"], json!([]));
        assert_eq!(spans[1]["references"][0]["spanID"], "00f067aa0ba902b7");
        assert_eq!(spans[1]["startTime"], 2000);
        assert_eq!(spans[1]["duration"], 3000);
        let process = spans[1]["processID"].as_str().unwrap();
        assert_eq!(trace["processes"][process]["serviceName"], "auth-sidecar");
        assert!(spans[0]["tags"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "span.kind", "type": "string", "value": "server"})));
    }
}
