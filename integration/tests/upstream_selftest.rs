//! Exercises the demo upstream and the client helpers directly, without Envoy: one test per
//! control of the service (HTTP/1.1 and h2c, gRPC, abort, admin paths, shutdown, the binary).
//! Over 600 lines: each control's test is short, and they stay one file so that
//! `--test upstream_selftest` checks the whole service the end-to-end tests stand on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mesh_integration::client::grpc;
use mesh_integration::client::raw::{self, Read};
use mesh_integration::client::{self, Proto};
use mesh_integration::upstream::{self, Upstream};
use tonic::Code;

const ECHO: &str = "/mesh.demo.Demo/Echo";

async fn start(name: &str) -> Upstream {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    upstream::spawn(name, any).await.unwrap()
}

/// `elapsed` is within `min_ms` (inclusive) and `max_ms` (exclusive).
fn assert_took(elapsed: Duration, min_ms: u64, max_ms: u64) {
    let range = Duration::from_millis(min_ms)..Duration::from_millis(max_ms);
    assert!(
        range.contains(&elapsed),
        "took {elapsed:?}, expected {range:?}"
    );
}

#[tokio::test]
async fn http1_echo_and_records() {
    let up = start("alpha").await;
    assert_eq!(up.name(), "alpha");
    assert_ne!(up.addr().port(), 0);

    let resp = client::get(
        up.addr(),
        "/hello/world?x=1&y=two",
        &[
            ("X-Foo", "a"),
            ("x-foo", "b"),
            ("x-envoy-attempt-count", "2"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/json"));
    assert_eq!(resp.header("X-Demo-Service"), Some("alpha"));
    let body = resp.json();
    assert_eq!(body["service"], "alpha");
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/hello/world?x=1&y=two");
    assert_eq!(body["version"], "HTTP/1.1");
    assert_eq!(body["headers"]["x-foo"], "a,b");
    assert_eq!(body["headers"]["host"], up.addr().to_string());
    assert_eq!(body["attempt"], 2);

    let resp = client::get(up.addr(), "/other", &[]).await.unwrap();
    assert_eq!(resp.json()["attempt"], serde_json::Value::Null);

    let records = up.requests();
    assert_eq!(records.len(), 2);
    assert_eq!(up.count(), 2);
    assert_eq!(records[0].method, "GET");
    assert_eq!(records[0].path, "/hello/world?x=1&y=two");
    assert_eq!(records[0].attempt, Some(2));
    assert_eq!(records[0].header("X-FOO"), Some("a"));
    assert_eq!(
        records[0]
            .headers
            .iter()
            .filter(|(n, _)| n == "x-foo")
            .count(),
        2
    );
    assert!(records[0]
        .headers
        .iter()
        .all(|(n, _)| *n == n.to_lowercase()));
    assert!(records[0].received_at <= records[1].received_at);
    assert_eq!(records[1].attempt, None);
    assert_eq!(up.count_path_prefix("/hello"), 1);
    assert_eq!(up.count_path_prefix("/"), 2);
    assert_eq!(up.count_path_prefix("/nope"), 0);
    up.clear();
    assert_eq!(up.count(), 0);
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn h2c_echo_on_the_same_port() {
    let up = start("beta").await;
    let resp = client::request(
        up.addr(),
        Proto::H2c,
        "POST",
        "/submit?q=1",
        &[("x-bar", "1"), ("content-type", "text/plain")],
        Some(b"0123456789".to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    let body = resp.json();
    assert_eq!(body["version"], "HTTP/2.0");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/submit?q=1");
    assert_eq!(body["headers"]["x-bar"], "1");
    assert_eq!(body["body_len"], 10);

    // HTTP/1.1 on the same port still works, and a host header sets the authority.
    let resp = client::request(
        up.addr(),
        Proto::Http1,
        "PUT",
        "/x",
        &[("host", "learner.mesh")],
        Some(b"abc".to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(resp.json()["version"], "HTTP/1.1");
    assert_eq!(resp.json()["headers"]["host"], "learner.mesh");
    assert_eq!(resp.json()["body_len"], 3);
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn sleep_ms_delays_the_answer() {
    let up = start("sleepy").await;
    let resp = client::get(up.addr(), "/slow?sleep_ms=300", &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_took(resp.elapsed, 300, 2500);

    // The header wins over the query parameter.
    let resp = client::request(
        up.addr(),
        Proto::H2c,
        "GET",
        "/slow?sleep_ms=5000",
        &[("x-demo-sleep-ms", "150")],
        None,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_took(resp.elapsed, 150, 2500);

    // Without a control the answer is immediate.
    let resp = client::get(up.addr(), "/fast", &[]).await.unwrap();
    assert!(
        resp.elapsed < Duration::from_millis(1000),
        "{:?}",
        resp.elapsed
    );
}

#[tokio::test]
async fn status_control_and_bad_values() {
    let up = start("status").await;
    let resp = client::get(up.addr(), "/?status=418", &[]).await.unwrap();
    assert_eq!(resp.status, 418);
    assert_eq!(resp.json()["service"], "status");

    let resp = client::get(up.addr(), "/?status=200", &[("x-demo-status", "503")])
        .await
        .unwrap();
    assert_eq!(resp.status, 503);

    let resp = client::get(up.addr(), "/?status=204", &[]).await.unwrap();
    assert_eq!(resp.status, 204);
    assert!(resp.body.is_empty());

    for bad in [
        "/?status=abc",
        "/?status=99",
        "/?status=1000",
        "/?sleep_ms=-1",
        "/?fail_rate=2",
    ] {
        let resp = client::get(up.addr(), bad, &[]).await.unwrap();
        assert_eq!(resp.status, 400, "{bad}");
        assert!(resp.json()["error"].is_string(), "{bad}");
    }
    // Still serving.
    assert_eq!(client::get(up.addr(), "/", &[]).await.unwrap().status, 200);
}

#[tokio::test]
async fn fail_attempts_follows_the_attempt_count() {
    let up = start("flaky").await;
    let fail2 = ("x-demo-fail-attempts", "2");
    // No x-envoy-attempt-count counts as attempt 1.
    let resp = client::get(up.addr(), "/", &[fail2]).await.unwrap();
    assert_eq!(resp.status, 503);
    let resp = client::get(up.addr(), "/", &[fail2, ("x-envoy-attempt-count", "2")])
        .await
        .unwrap();
    assert_eq!(resp.status, 503);
    assert_eq!(resp.json()["attempt"], 2);
    let resp = client::get(up.addr(), "/", &[fail2, ("x-envoy-attempt-count", "3")])
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["attempt"], 3);

    // As a query parameter, and combined with a status for the successful attempt.
    let resp = client::get(
        up.addr(),
        "/?fail_attempts=1&status=201",
        &[("x-envoy-attempt-count", "2")],
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 201);

    let attempts: Vec<Option<u32>> = up.requests().iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, vec![None, Some(2), Some(3), Some(2)]);
}

#[tokio::test]
async fn fail_rate_extremes() {
    let up = start("random").await;
    for _ in 0..5 {
        let resp = client::get(up.addr(), "/?fail_rate=1", &[]).await.unwrap();
        assert_eq!(resp.status, 503);
        let resp = client::get(up.addr(), "/", &[("x-demo-fail-rate", "0")])
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
    }
    let mut failures = 0;
    for _ in 0..60 {
        let resp = client::get(up.addr(), "/?fail_rate=0.5", &[])
            .await
            .unwrap();
        if resp.status == 503 {
            failures += 1;
        }
    }
    assert!(
        (5..=55).contains(&failures),
        "{failures} failures of 60 at rate 0.5"
    );
}

#[tokio::test]
async fn grpc_echo_ok() {
    let up = start("grpc").await;
    let reply = grpc::unary(
        up.addr(),
        ECHO,
        &[("x-custom", "v"), ("trace-bin", "\u{1}raw")],
        Bytes::from_static(b"\x0a\x05hello"),
    )
    .await
    .unwrap();
    assert_eq!(&reply.message[..], b"\x0a\x05hello");
    assert_eq!(reply.header("x-demo-service"), Some("grpc"));
    assert_eq!(reply.header("grpc-status"), Some("0"));
    assert!(reply.elapsed < Duration::from_secs(5));

    // Empty message echoes as an empty message.
    let reply = grpc::unary(up.addr(), "/other.Service/Method", &[], Bytes::new())
        .await
        .unwrap();
    assert!(reply.message.is_empty());

    let records = up.requests();
    assert_eq!(records.len(), 2);
    assert!(records[0].is_grpc());
    assert_eq!(records[0].method, "POST");
    assert_eq!(records[0].path, ECHO);
    assert_eq!(records[0].header("x-custom"), Some("v"));
    assert!(records[0].header("trace-bin").is_some());
    assert_eq!(up.count_path_prefix("/mesh.demo."), 1);
}

#[tokio::test]
async fn grpc_status_in_trailers_and_trailers_only() {
    let up = start("grpc-status").await;
    let msg = Bytes::from_static(b"ping");

    let status = grpc::unary(up.addr(), ECHO, &[("x-demo-grpc-status", "7")], msg.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains('7'), "{}", status.message());

    let status = grpc::unary(
        up.addr(),
        ECHO,
        &[
            ("x-demo-grpc-status", "8"),
            ("x-demo-trailers-only", "1"),
            ("x-demo-grpc-message", "quota 100% used"),
        ],
        msg.clone(),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.message(), "quota 100% used");
    assert_eq!(
        status
            .metadata()
            .get("x-demo-service")
            .unwrap()
            .to_str()
            .unwrap(),
        "grpc-status"
    );

    // On the wire: status in trailers after headers vs. trailers-only.
    let framed = grpc::frame(b"ping").to_vec();
    let resp = client::grpc_h2(
        up.addr(),
        ECHO,
        &[("x-demo-grpc-status", "7")],
        framed.clone(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("grpc-status"), None);
    assert_eq!(resp.trailer("grpc-status"), Some("7"));
    assert!(resp.trailer("grpc-message").is_some());
    assert!(resp.body.is_empty());

    let resp = client::grpc_h2(
        up.addr(),
        ECHO,
        &[("x-demo-grpc-status", "7"), ("x-demo-trailers-only", "1")],
        framed.clone(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("application/grpc"));
    assert_eq!(resp.header("grpc-status"), Some("7"));
    assert!(resp.trailers.is_empty());
    assert!(resp.body.is_empty());

    // A successful call: one frame, then grpc-status 0 in trailers.
    let resp = client::grpc_h2(up.addr(), ECHO, &[], framed).await.unwrap();
    assert_eq!(resp.header("grpc-status"), None);
    assert_eq!(resp.trailer("grpc-status"), Some("0"));
    assert_eq!(grpc::unframe(&resp.body).as_deref(), Some(&b"ping"[..]));
}

#[tokio::test]
async fn grpc_timeout_headers_are_echoed() {
    let up = start("grpc-seen").await;
    let reply = grpc::unary(
        up.addr(),
        ECHO,
        &[
            ("grpc-timeout", "1500m"),
            ("x-envoy-expected-rq-timeout-ms", "1500"),
        ],
        Bytes::from_static(b"x"),
    )
    .await
    .unwrap();
    assert_eq!(reply.header("x-demo-seen-grpc-timeout"), Some("1500m"));
    assert_eq!(
        reply.header("x-demo-seen-x-envoy-expected-rq-timeout-ms"),
        Some("1500")
    );
    assert_eq!(up.requests()[0].header("grpc-timeout"), Some("1500m"));

    // Absent when not sent.
    let reply = grpc::unary(up.addr(), ECHO, &[], Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(reply.header("x-demo-seen-grpc-timeout"), None);

    // Also readable from the status of a failed call, trailers or trailers-only.
    for trailers_only in ["0", "1"] {
        let status = grpc::unary(
            up.addr(),
            ECHO,
            &[
                ("grpc-timeout", "250m"),
                ("x-demo-grpc-status", "4"),
                ("x-demo-trailers-only", trailers_only),
            ],
            Bytes::from_static(b"x"),
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(
            status
                .metadata()
                .get("x-demo-seen-grpc-timeout")
                .unwrap()
                .to_str()
                .unwrap(),
            "250m"
        );
    }
}

#[tokio::test]
async fn grpc_fail_attempts_and_sleep() {
    let up = start("grpc-flaky").await;
    let status = grpc::unary(
        up.addr(),
        ECHO,
        &[("x-demo-fail-attempts", "1")],
        Bytes::from_static(b"a"),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    let reply = grpc::unary(
        up.addr(),
        ECHO,
        &[
            ("x-demo-fail-attempts", "1"),
            ("x-envoy-attempt-count", "2"),
        ],
        Bytes::from_static(b"a"),
    )
    .await
    .unwrap();
    assert_eq!(&reply.message[..], b"a");

    // Injected failures are trailers-only unless asked otherwise.
    let resp = client::grpc_h2(
        up.addr(),
        ECHO,
        &[("x-demo-fail-attempts", "1")],
        grpc::frame(b"a").to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(resp.header("grpc-status"), Some("14"));
    let resp = client::grpc_h2(
        up.addr(),
        ECHO,
        &[("x-demo-fail-attempts", "1"), ("x-demo-trailers-only", "0")],
        grpc::frame(b"a").to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(resp.header("grpc-status"), None);
    assert_eq!(resp.trailer("grpc-status"), Some("14"));

    let (result, elapsed) = grpc::unary_timed(
        up.addr(),
        ECHO,
        &[("x-demo-sleep-ms", "200")],
        Bytes::from_static(b"s"),
    )
    .await;
    assert_eq!(&result.unwrap().message[..], b"s");
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");

    let status = grpc::unary(
        up.addr(),
        ECHO,
        &[("x-demo-sleep-ms", "soon")],
        Bytes::new(),
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn malformed_grpc_bodies_get_a_status() {
    let up = start("grpc-bad").await;
    for (body, code) in [
        (Vec::new(), "13"),
        (vec![0, 0, 0], "13"),
        (vec![0, 0, 0, 0, 9, b'x'], "13"),
        (vec![1, 0, 0, 0, 1, b'x'], "12"),
    ] {
        let resp = client::grpc_h2(up.addr(), ECHO, &[], body).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("grpc-status"), Some(code));
    }
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn admin_paths() {
    let up = start("admin").await;
    client::get(up.addr(), "/a?x=1", &[("x-envoy-attempt-count", "1")])
        .await
        .unwrap();
    client::request(up.addr(), Proto::H2c, "DELETE", "/b", &[], None)
        .await
        .unwrap();

    let resp = client::get(up.addr(), "/__demo/count", &[]).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json(), serde_json::json!(2));

    let resp = client::get(up.addr(), "/__demo/requests", &[])
        .await
        .unwrap();
    let list = resp.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["method"], "GET");
    assert_eq!(list[0]["path"], "/a?x=1");
    assert_eq!(list[0]["attempt"], 1);
    assert!(list[0]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|pair| pair[0] == "x-envoy-attempt-count" && pair[1] == "1"));
    assert!(list[0]["received_ms"].is_number());
    assert_eq!(list[1]["method"], "DELETE");
    assert_eq!(list[1]["attempt"], serde_json::Value::Null);

    // Wrong method and unknown admin paths are errors and never recorded.
    let resp = client::get(up.addr(), "/__demo/reset", &[]).await.unwrap();
    assert_eq!(resp.status, 405);
    let resp = client::get(up.addr(), "/__demo/nothing", &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(up.count(), 2);

    let resp = client::request(up.addr(), Proto::Http1, "POST", "/__demo/reset", &[], None)
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["cleared"], 2);
    assert_eq!(up.count(), 0);
    let resp = client::get(up.addr(), "/__demo/count", &[]).await.unwrap();
    assert_eq!(resp.json(), serde_json::json!(0));
    assert_eq!(up.count(), 0);
}

#[tokio::test]
async fn garbage_does_not_stop_the_service() {
    let up = start("sturdy").await;
    for garbage in [
        &b"\x00\x01\x02 not http at all\r\n\r\n"[..],
        &b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff"[..],
    ] {
        let sent = raw::exchange(up.addr(), None, garbage, Read::ToClose);
        let _ = tokio::time::timeout(Duration::from_secs(2), sent).await;
    }
    // A client that goes away while its request sleeps.
    let pending = tokio::spawn({
        let addr = up.addr();
        async move { client::get(addr, "/?sleep_ms=10000", &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    pending.abort();

    let resp = client::get(up.addr(), "/still-here", &[]).await.unwrap();
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn shutdown_does_not_wait_for_sleeping_handlers() {
    let up = start("stopper").await;
    let addr = up.addr();
    let h1 = tokio::spawn(async move { client::get(addr, "/?sleep_ms=30000", &[]).await });
    let h2 = tokio::spawn(async move {
        client::request(addr, Proto::H2c, "GET", "/?sleep_ms=30000", &[], None).await
    });
    assert!(up.wait_for_count(2, Duration::from_secs(5)).await);

    let started = Instant::now();
    up.shutdown().await;
    let (r1, r2) = tokio::join!(h1, h2);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Either the connection was cut or the handler answered 503 at shutdown.
    for resp in [r1.unwrap(), r2.unwrap()].into_iter().flatten() {
        assert_eq!(resp.status, 503);
    }
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    // Dropping works too.
    let up = start("dropped").await;
    let addr = up.addr();
    drop(up);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn mesh_demo_binary_serves_until_sigterm() {
    use std::process::Stdio;
    use tokio::io::AsyncBufReadExt;

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-demo"))
        .args([
            "--listen",
            "auth=127.0.0.1:0",
            "--listen",
            "learner=127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addrs = Vec::new();
    for expected in ["auth", "learner"] {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let prefix = format!("mesh-demo: {expected} listening on ");
        let addr: SocketAddr = line.strip_prefix(&prefix).unwrap().parse().unwrap();
        addrs.push(addr);
    }
    let resp = client::get(addrs[1], "/x", &[]).await.unwrap();
    assert_eq!(resp.json()["service"], "learner");
    let reply = grpc::unary(addrs[0], ECHO, &[], Bytes::from_static(b"hi"))
        .await
        .unwrap();
    assert_eq!(reply.header("x-demo-service"), Some("auth"));
    let resp = client::get(addrs[0], "/__demo/count", &[]).await.unwrap();
    assert_eq!(resp.json(), serde_json::json!(1));

    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    // Bad arguments: a clear message and exit code 2.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-demo"))
        .args(["--listen", "auth"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expected NAME=ADDR"), "{stderr}");
}

/// Sends one raw HTTP/1.1 request and reads until the service closes the connection.
async fn raw_http1(addr: SocketAddr, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: demo\r\n\r\n");
    let read = raw::exchange(addr, None, request.as_bytes(), Read::ToClose);
    let raw = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("the connection was not closed")
        .unwrap();
    String::from_utf8_lossy(&raw).into_owned()
}

#[tokio::test]
async fn abort_cuts_requests_short_before_or_after_the_headers() {
    let up = start("dying").await;
    // Before the headers: the connection closes without a byte of answer.
    assert_eq!(raw_http1(up.addr(), "/x?abort=before-headers").await, "");
    // After the headers: a 200 and the start of a chunked body, never its last chunk.
    let text = raw_http1(up.addr(), "/x?abort=after-headers").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("the first part of a body"), "{text}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the body must not end: {text}"
    );

    // Over h2c and HTTP/1.1 both, the client sees an error rather than a response; sleep_ms
    // comes first.
    for proto in [Proto::Http1, Proto::H2c] {
        for how in ["before-headers", "after-headers"] {
            let started = Instant::now();
            let headers = [("x-demo-abort", how), ("x-demo-sleep-ms", "100")];
            let r = client::request(up.addr(), proto, "GET", "/y", &headers, None).await;
            assert!(r.is_err(), "{proto:?} {how}: {r:?}");
            assert!(started.elapsed() >= Duration::from_millis(100));
        }
    }
    assert_eq!(up.count(), 6, "aborted requests are recorded");
    // The service still answers afterwards, and a bad value is a 400.
    assert_eq!(client::get(up.addr(), "/z", &[]).await.unwrap().status, 200);
    let r = client::get(up.addr(), "/z?abort=sometimes", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
}
