//! Exercises the OTLP/HTTP receiver directly, without Envoy: export requests encoded by
//! `mesh_trace_propagation::otlp` go in, the stored spans and the protocol answers come out.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mesh_integration::client::{self, Proto};
use mesh_integration::otlp_receiver::{self, Receiver, PROTOBUF, TRACES_PATH};
use mesh_kit::proto::google_rpc;
use mesh_trace_propagation::otlp::pb::collector::ExportTraceServiceResponse;
use mesh_trace_propagation::otlp::pb::trace::span::SpanKind;
use mesh_trace_propagation::otlp::pb::trace::status::StatusCode;
use mesh_trace_propagation::otlp::{encode_export_request, AttrValue, FinishedSpan};
use prost::Message;

const TRACE: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];

async fn start() -> Receiver {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    otlp_receiver::spawn(any).await.unwrap()
}

fn server_span() -> FinishedSpan {
    FinishedSpan {
        trace_id: TRACE,
        span_id: [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7],
        parent_span_id: Some([0x53, 0x99, 0x5c, 0x3f, 0x42, 0xcd, 0x8a, 0xd8]),
        trace_state: "rojo=00f067aa0ba902b7".to_owned(),
        name: "GET /users".to_owned(),
        kind_server: true,
        start_unix_nano: 1_700_000_000_000_000_000,
        end_unix_nano: 1_700_000_000_002_500_000,
        attributes: vec![
            (
                "http.request.method".to_owned(),
                AttrValue::Str("GET".to_owned()),
            ),
            ("http.response.status_code".to_owned(), AttrValue::Int(200)),
            ("mesh.sampled".to_owned(), AttrValue::Bool(true)),
        ],
        error: false,
    }
}

fn root_error_span() -> FinishedSpan {
    FinishedSpan {
        span_id: [1, 2, 3, 4, 5, 6, 7, 8],
        parent_span_id: None,
        trace_state: String::new(),
        name: "POST /orders".to_owned(),
        attributes: vec![("http.response.status_code".to_owned(), AttrValue::Int(503))],
        error: true,
        ..server_span()
    }
}

async fn export(
    addr: SocketAddr,
    proto: Proto,
    content_type: &str,
    body: Vec<u8>,
) -> client::Response {
    client::request(
        addr,
        proto,
        "POST",
        TRACES_PATH,
        &[("content-type", content_type)],
        Some(body),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn stores_every_exported_span_with_its_service() {
    let receiver = start().await;
    assert_ne!(receiver.addr().port(), 0);
    let body = encode_export_request("checkout", "0.1.0", &[server_span(), root_error_span()]);

    let resp = export(receiver.addr(), Proto::Http1, PROTOBUF, body).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/x-protobuf"));
    let answer = ExportTraceServiceResponse::decode(resp.body.clone()).unwrap();
    assert_eq!(answer.partial_success, None, "everything accepted");
    assert_eq!(receiver.requests(), 1);
    assert_eq!(receiver.bad_requests(), 0);

    let spans = receiver.spans();
    assert_eq!(spans.len(), 2);
    let span = &spans[0];
    assert_eq!(span.service_name, "checkout");
    assert_eq!(span.scope_name, "mesh.trace_propagation");
    assert_eq!(span.scope_version, "0.1.0");
    assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span.span_id, "00f067aa0ba902b7");
    assert_eq!(span.parent_span_id.as_deref(), Some("53995c3f42cd8ad8"));
    assert_eq!(span.trace_state, "rojo=00f067aa0ba902b7");
    assert_eq!(span.flags & 0xff, 0x01, "sampled");
    assert_eq!(span.name, "GET /users");
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(span.span_kind(), SpanKind::Server);
    assert_eq!(span.start_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(span.end_unix_nano, 1_700_000_000_002_500_000);
    assert_eq!(span.duration(), Duration::from_micros(2500));
    assert_eq!(
        span.attributes,
        [
            ("http.request.method".to_owned(), "GET".to_owned()),
            ("http.response.status_code".to_owned(), "200".to_owned()),
            ("mesh.sampled".to_owned(), "true".to_owned()),
        ]
    );
    assert_eq!(span.attribute("http.request.method"), Some("GET"));
    assert_eq!(span.attribute("missing"), None);
    assert_eq!(span.status_code, 0, "STATUS_CODE_UNSET");
    assert_eq!(span.status(), StatusCode::Unset);
    assert_eq!(span.status_message, "");

    let root = &spans[1];
    assert_eq!(root.service_name, "checkout");
    assert_eq!(root.trace_id, span.trace_id);
    assert_eq!(root.span_id, "0102030405060708");
    assert_eq!(root.parent_span_id, None);
    assert_eq!(root.name, "POST /orders");
    assert_eq!(root.status_code, 2, "STATUS_CODE_ERROR");
    assert_eq!(root.status(), StatusCode::Error);
    assert_eq!(root.attribute("http.response.status_code"), Some("503"));

    receiver.clear();
    assert!(receiver.spans().is_empty());
    assert_eq!(receiver.requests(), 0);
}

#[tokio::test]
async fn h2c_exports_are_received_and_counted_per_call() {
    let receiver = start().await;
    for (i, service) in ["alpha", "beta"].into_iter().enumerate() {
        let span = FinishedSpan {
            span_id: [u8::try_from(i).unwrap() + 1; 8],
            ..server_span()
        };
        let body = encode_export_request(service, "1", &[span]);
        let resp = export(receiver.addr(), Proto::H2c, PROTOBUF, body).await;
        assert_eq!(resp.status, 200);
    }
    assert!(receiver.wait_for_spans(2, Duration::from_secs(5)).await);
    assert_eq!(receiver.requests(), 2);
    let services: Vec<String> = receiver
        .spans()
        .into_iter()
        .map(|s| format!("{} {}", s.service_name, s.span_id))
        .collect();
    assert_eq!(
        services,
        ["alpha 0101010101010101", "beta 0202020202020202"]
    );

    // An export without spans is a call all the same.
    let resp = export(
        receiver.addr(),
        Proto::Http1,
        "application/x-protobuf",
        encode_export_request("alpha", "1", &[]),
    )
    .await;
    assert_eq!(resp.status, 200);
    assert_eq!(receiver.requests(), 3);
    assert_eq!(receiver.spans().len(), 2);
}

#[tokio::test]
async fn a_garbage_body_is_answered_400_and_counted() {
    let receiver = start().await;
    // A length-delimited field 1 whose length runs past the end of the body.
    let garbage = vec![0x0a, 0x7f, 0x01, 0x02];
    let resp = export(receiver.addr(), Proto::Http1, PROTOBUF, garbage).await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.header("content-type"), Some("application/x-protobuf"));
    let status = google_rpc::Status::decode(resp.body.clone()).unwrap();
    assert_eq!(status.code, 3, "INVALID_ARGUMENT");
    assert!(
        status.message.contains("ExportTraceServiceRequest"),
        "{}",
        status.message
    );
    assert_eq!(receiver.requests(), 1);
    assert_eq!(receiver.bad_requests(), 1);
    assert!(receiver.spans().is_empty());

    // A good export afterwards is still accepted.
    let body = encode_export_request("svc", "1", &[server_span()]);
    let resp = export(receiver.addr(), Proto::H2c, PROTOBUF, body).await;
    assert_eq!(resp.status, 200);
    assert_eq!(receiver.requests(), 2);
    assert_eq!(receiver.bad_requests(), 1);
    assert_eq!(receiver.spans().len(), 1);
}

#[tokio::test]
async fn other_content_types_methods_and_paths_are_refused() {
    let receiver = start().await;
    let body = encode_export_request("svc", "1", &[server_span()]);

    let json = export(
        receiver.addr(),
        Proto::Http1,
        "application/json",
        body.clone(),
    )
    .await;
    assert_eq!(json.status, 415);
    let gzip = client::request(
        receiver.addr(),
        Proto::Http1,
        "POST",
        TRACES_PATH,
        &[("content-type", PROTOBUF), ("content-encoding", "gzip")],
        Some(body.clone()),
    )
    .await
    .unwrap();
    assert_eq!(gzip.status, 415);
    let get = client::get(receiver.addr(), TRACES_PATH, &[])
        .await
        .unwrap();
    assert_eq!(get.status, 405);
    assert_eq!(receiver.requests(), 3);
    assert_eq!(receiver.bad_requests(), 3);

    let elsewhere = client::request(
        receiver.addr(),
        Proto::Http1,
        "POST",
        "/v1/metrics",
        &[("content-type", PROTOBUF)],
        Some(body),
    )
    .await
    .unwrap();
    assert_eq!(elsewhere.status, 404);
    assert_eq!(receiver.requests(), 3, "other paths are not export calls");
    assert!(receiver.spans().is_empty());
}

#[tokio::test]
async fn set_delay_answers_late_but_stores_at_once() {
    let receiver = start().await;
    let delay = Duration::from_millis(400);
    receiver.set_delay(delay);

    let addr = receiver.addr();
    let body = encode_export_request("slow", "1", &[server_span()]);
    let started = Instant::now();
    let call = tokio::spawn(export(addr, Proto::Http1, PROTOBUF, body));

    // The span is there while the answer is still pending.
    assert!(receiver.wait_for_spans(1, Duration::from_secs(5)).await);
    assert!(!call.is_finished(), "answered before the delay");
    let resp = call.await.unwrap();
    assert_eq!(resp.status, 200);
    assert!(
        resp.elapsed >= delay,
        "answered after {:?}, delay {delay:?}",
        resp.elapsed
    );
    assert!(started.elapsed() >= delay);

    receiver.set_delay(Duration::ZERO);
    let body = encode_export_request("fast", "1", &[server_span()]);
    let resp = export(addr, Proto::Http1, PROTOBUF, body).await;
    assert_eq!(resp.status, 200);
    assert!(resp.elapsed < delay, "still delayed: {:?}", resp.elapsed);
    assert_eq!(receiver.requests(), 2);
}

#[tokio::test]
async fn dropping_the_receiver_closes_its_port() {
    let receiver = start().await;
    let addr = receiver.addr();
    receiver.set_delay(Duration::from_secs(30));
    let body = encode_export_request("svc", "1", &[server_span()]);
    let pending = tokio::spawn(async move {
        let headers = [("content-type", PROTOBUF)];
        client::request(
            addr,
            Proto::Http1,
            "POST",
            TRACES_PATH,
            &headers,
            Some(body),
        )
        .await
    });
    assert!(receiver.wait_for_requests(1, Duration::from_secs(5)).await);

    drop(receiver);
    // The hanging call ends promptly (connection closed or 503), not after 30 s.
    let ended = tokio::time::timeout(Duration::from_secs(5), pending).await;
    match ended {
        Ok(Ok(Ok(resp))) => assert_eq!(resp.status, 503),
        Ok(Ok(Err(_closed))) => {}
        Ok(Err(join)) => panic!("export task failed: {join}"),
        Err(_) => panic!("the pending export outlived the receiver"),
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
