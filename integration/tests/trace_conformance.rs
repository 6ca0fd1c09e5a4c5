//! Conformance of the suite's trace stage, end to end, in the sidecar topology (over 600
//! lines: one case per rule of the W3C, B3 and Jaeger texts, in the specs' order, each named
//! after its rule; the README's conformance table is checked against these names):
//!
//! ```text
//! client ──> inbound Envoy ──> app ──(copies the propagation headers)──> outbound Envoy ──> next hop
//!            (mesh_filters.wasm)                                         (mesh_filters.wasm)
//! ```
//!
//! Every rule of the W3C Trace Context recommendation about parsing, mutating and limiting
//! `traceparent` and `tracestate` (with the Level 2 key grammar), of the B3 propagation README
//! and of Jaeger's `uber-trace-id` format is one case, named after the rule (the quoted text is
//! the specification's). A case sends raw HTTP/1.1 request lines (header names in any case,
//! repeated lines, empty lines, tabs: exactly the bytes given) to the inbound sidecar and checks
//! the headers as the next hop receives them: the app (raw lines and names, as the inbound
//! sidecar wrote them) and the service behind the outbound sidecar. The app copies every line of
//! every propagation header onto its calls, in order, as an application without a tracer does.
//!
//! Where a specification leaves a choice, the case checks the stage's choice (the README's
//! conformance table says which). Every case's rule is listed in that table
//! (`every_rule_is_listed_in_the_readme`).
//!
//! The last test checks the spans both sidecars export (OTLP, at a real receiver): each call of
//! the app carries a new span id (the outbound sidecar's span), and the parent ids chain the
//! caller → inbound sidecar → outbound sidecar.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_integration::bootstrap::{
    bootstrap, cluster, listener, route, wasm_filter, with_metadata,
};
use mesh_integration::client;
use mesh_integration::envoy::{wasm, workspace_root, Envoy};
use mesh_integration::otlp_receiver::{self, Receiver};
use mesh_integration::upstream::{self, Record, Upstream};
use mesh_trace_propagation::formats::{self, SpanContext};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The trace and span ids of the W3C test suite.
const TRACE: &str = "12345678901234567890123456789012";
const SPAN: &str = "1234567890123456";
const OTHER: &str = "12345678901234567890123456789011";

/// The headers the app copies from its request onto each of its calls, every line, in order.
const PROPAGATED: [&str; 11] = [
    "traceparent",
    "tracestate",
    "baggage",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "uber-trace-id",
    "grpc-trace-bin",
];

fn tp(flags: &str) -> String {
    format!("00-{TRACE}-{SPAN}-{flags}")
}

// ---------------------------------------------------------------------------------------------
// The app between the sidecars: a raw HTTP/1.1 server, so the header names and lines it records
// are exactly the bytes the inbound sidecar sent.

#[derive(Clone, Debug)]
struct AppRequest {
    path: String,
    /// Header lines as received: the name as sent, the value without surrounding OWS.
    lines: Vec<(String, String)>,
}

struct App {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<AppRequest>>>,
    task: JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl App {
    /// Listens on a free loopback port; each request makes `calls` (query, default 1) calls to
    /// `outbound` with the same path, copying the propagation headers.
    async fn spawn() -> (App, tokio::sync::oneshot::Sender<SocketAddr>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let Ok(outbound) = rx.await else { return };
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let record = Arc::clone(&record);
                tokio::spawn(serve_app(stream, outbound, record));
            }
        });
        (App { addr, seen, task }, tx)
    }

    fn request(&self, path: &str) -> Option<AppRequest> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.path == path)
            .cloned()
    }
}

async fn serve_app(
    mut stream: TcpStream,
    outbound: SocketAddr,
    record: Arc<Mutex<Vec<AppRequest>>>,
) {
    let Some(head) = read_head(&mut stream).await else {
        return;
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let path = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim_matches([' ', '\t']).to_string()))
        .collect();
    record.lock().unwrap().push(AppRequest {
        path: path.clone(),
        lines: headers.clone(),
    });
    let calls: usize = query(&path, "calls")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let copied: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(n, _)| PROPAGATED.contains(&n.to_ascii_lowercase().as_str()))
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let mut ok = true;
    for _ in 0..calls {
        match client::get(outbound, &path, &copied).await {
            Ok(r) if r.status == 200 => {}
            _ => ok = false,
        }
    }
    let (status, body) = if ok {
        ("200 OK", "ok")
    } else {
        ("502 Bad Gateway", "call failed")
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The request head (up to the empty line), as text.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    String::from_utf8(buf[..end].to_vec()).ok()
}

fn query<'a>(path: &'a str, key: &str) -> Option<&'a str> {
    path.split_once('?')?
        .1
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// One raw HTTP/1.1 request with exactly these header lines; the response status.
async fn raw_get(addr: SocketAddr, path: &str, lines: &[(String, String)]) -> Result<u16, String> {
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: conformance\r\n");
    for (name, value) in lines {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("connection: close\r\n\r\n");
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&response);
        text.split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status in {text:?}"))
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .map_err(|_| "no response within 20 s".to_string())?
}

// ---------------------------------------------------------------------------------------------
// The sidecar pair.

/// The route-metadata key of the trace stage (the suite reads the same keys as the filters).
const STAGE_KEY: &str = "mesh.trace_propagation";

/// The routes of both sidecars: one per configuration the cases need.
fn routes(cluster: &str) -> Vec<Value> {
    let with = |name: &str, prefix: &str, config: Value| {
        with_metadata(route(name, prefix, cluster), STAGE_KEY, config)
    };
    let b3 = ["b3", "b3-multi"];
    vec![
        with("w3c-not-sampled", "/w3c0/", json!({"sampling_ratio": 0.0})),
        route("w3c", "/w3c/", cluster),
        with(
            "b3-single",
            "/b3s/",
            json!({"extract": b3, "inject": ["b3"]}),
        ),
        with(
            "b3-multi",
            "/b3m/",
            json!({"extract": b3, "inject": ["b3-multi"]}),
        ),
        with(
            "jaeger",
            "/jaeger/",
            json!({"extract": ["jaeger"], "inject": ["jaeger"]}),
        ),
        with(
            "grpc",
            "/grpc/",
            json!({"extract": ["grpc-trace-bin"], "inject": ["grpc-trace-bin"]}),
        ),
    ]
}

fn sidecar(service: &str, upstream: (&str, SocketAddr, bool), otlp: SocketAddr) -> Envoy {
    // The plugin configuration: defaults (extract w3c, b3, jaeger, grpc-trace-bin; inject w3c;
    // sampling ratio 1), and span export.
    let config = json!({"trace_propagation": {"export": {
        "cluster": "otlp", "service_name": service, "flush_interval": "100ms"
    }}});
    let suite = wasm_filter("mesh", &wasm("mesh_filters").unwrap(), &config);
    Envoy::start(&bootstrap(
        vec![listener("main", routes(upstream.0), vec![suite])],
        vec![
            cluster(upstream.0, upstream.1, upstream.2),
            cluster("otlp", otlp, false),
        ],
    ))
    .unwrap()
}

struct Pair {
    inbound: Envoy,
    outbound: Envoy,
    app: App,
    next: Upstream,
    receiver: Receiver,
}

impl Pair {
    async fn start() -> Pair {
        let receiver = otlp_receiver::spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let next = upstream::spawn("next", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let outbound = sidecar("outbound", ("next", next.addr(), true), receiver.addr());
        let (app, outbound_addr) = App::spawn().await;
        outbound_addr.send(outbound.listener("main")).unwrap();
        let inbound = sidecar("inbound", ("app", app.addr, false), receiver.addr());
        Pair {
            inbound,
            outbound,
            app,
            next,
            receiver,
        }
    }

    /// Sends one request and collects what both hops received.
    async fn send(&self, path: &str, lines: &[(String, String)]) -> Result<Seen, String> {
        let status = raw_get(self.inbound.listener("main"), path, lines).await?;
        if status != 200 {
            return Err(format!("status {status}"));
        }
        let app = self.app.request(path).ok_or("the app got no request")?;
        let next: Vec<Record> = self
            .next
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect();
        if next.is_empty() {
            return Err("the next hop got no request".into());
        }
        Ok(Seen {
            sent: lines.to_vec(),
            app,
            next,
        })
    }

    /// Runs every case (each variant of it), and fails listing every rule that does not hold.
    async fn run(&self, group: &str, cases: Vec<Case>) {
        let mut failed = Vec::new();
        let total = cases.len();
        for (i, case) in cases.iter().enumerate() {
            let mut errors = Vec::new();
            for (v, lines) in case.variants.iter().enumerate() {
                let path = format!("{}{group}-{i}-{v}?calls={}", case.route, case.calls);
                let result = match self.send(&path, lines).await {
                    Ok(seen) => (case.check)(&seen),
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    errors.push(format!("    sent {lines:?}\n    {e}"));
                }
            }
            if errors.is_empty() {
                eprintln!("ok      {}", case.rule);
            } else {
                eprintln!("FAILED  {}\n{}", case.rule, errors.join("\n"));
                failed.push(format!("{}\n{}", case.rule, errors.join("\n")));
            }
        }
        assert!(
            failed.is_empty(),
            "{} of {total} {group} rules do not hold:\n{}\ninbound log:\n{}\noutbound log:\n{}",
            failed.len(),
            failed.join("\n"),
            tail(&self.inbound.log()),
            tail(&self.outbound.log()),
        );
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// What the hops received, and the checks.

struct Seen {
    /// The header lines the client sent.
    sent: Vec<(String, String)>,
    /// What the app received from the inbound sidecar.
    app: AppRequest,
    /// What the next hop received from the outbound sidecar, one per call of the app.
    next: Vec<Record>,
}

type Check = Box<dyn Fn(&Seen) -> Result<(), String>>;

struct Case {
    rule: &'static str,
    route: &'static str,
    calls: usize,
    /// Each variant is one request with these header lines; the check holds for every one.
    variants: Vec<Vec<(String, String)>>,
    check: Check,
}

fn case(
    rule: &'static str,
    route: &'static str,
    variants: Vec<Vec<(&str, String)>>,
    check: impl Fn(&Seen) -> Result<(), String> + 'static,
) -> Case {
    Case {
        rule,
        route,
        calls: 1,
        variants: variants
            .into_iter()
            .map(|v| v.into_iter().map(|(n, val)| (n.to_string(), val)).collect())
            .collect(),
        check: Box::new(check),
    }
}

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(why())
    }
}

impl Seen {
    /// The values of a header at the app, every line, in order (name in any case).
    fn at_app(&self, name: &str) -> Vec<&str> {
        self.app
            .lines
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The values of a header at the next hop, call `i`.
    fn at_next(&self, i: usize, name: &str) -> Vec<&str> {
        self.next
            .get(i)
            .map(|r| {
                r.headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `app` (hop 0), then `next hop, call N`.
    fn hop_name(&self, hop: usize) -> String {
        if hop == 0 {
            "app".into()
        } else {
            format!("next hop, call {hop}")
        }
    }

    fn values(&self, hop: usize, name: &str) -> Vec<&str> {
        if hop == 0 {
            self.at_app(name)
        } else {
            self.at_next(hop - 1, name)
        }
    }

    fn one(&self, hop: usize, name: &str) -> Result<&str, String> {
        match self.values(hop, name).as_slice() {
            [one] => Ok(one),
            other => Err(format!(
                "{}: {name}: expected one line, got {other:?}",
                self.hop_name(hop)
            )),
        }
    }

    fn none(&self, hop: usize, name: &str) -> Result<(), String> {
        let v = self.values(hop, name);
        ensure(v.is_empty(), || {
            format!("{}: {name}: expected none, got {v:?}", self.hop_name(hop))
        })
    }

    fn traceparent(&self, hop: usize) -> Result<SpanContext, String> {
        let v = self.one(hop, "traceparent")?;
        formats::parse_traceparent(v)
            .map_err(|e| format!("{}: traceparent {v:?}: {e}", self.hop_name(hop)))
    }

    /// The first value the client sent for this header (name in any case).
    fn sent_value(&self, name: &str) -> Result<String, String> {
        self.sent
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .ok_or(format!("{name} was not sent"))
    }

    fn hop_count(&self) -> usize {
        1 + self.next.len()
    }
}

/// Every hop has one valid traceparent of this trace, with a span id of its own (not the
/// caller's, not the previous hop's).
fn continues(s: &Seen, trace: &str) -> Result<(), String> {
    let mut previous = SPAN.to_string();
    for hop in 0..s.hop_count() {
        let c = s.traceparent(hop)?;
        ensure(c.trace_id.to_hex() == trace, || {
            format!(
                "{}: trace-id {} instead of {trace}",
                s.hop_name(hop),
                c.trace_id
            )
        })?;
        let span = c.span_id.to_hex();
        ensure(span != previous && (hop == 0 || span != SPAN), || {
            format!("{}: parent-id {span} was not updated", s.hop_name(hop))
        })?;
        if hop == 0 {
            previous = span;
        }
    }
    Ok(())
}

/// A new trace: not one of `not`, random flag set (started here), the same at every hop, and
/// no tracestate anywhere.
fn restarts(s: &Seen, not: &[&str]) -> Result<(), String> {
    let first = s.traceparent(0)?;
    let trace = first.trace_id.to_hex();
    ensure(!not.contains(&trace.as_str()), || {
        format!("trace {trace} was kept")
    })?;
    ensure(first.random, || {
        "a trace started here has the random flag".into()
    })?;
    continues(s, &trace)?;
    for hop in 0..s.hop_count() {
        s.none(hop, "tracestate")?;
    }
    Ok(())
}

/// `tracestate` at every hop: exactly one line with this value, or none.
fn tracestate(s: &Seen, want: Option<&str>) -> Result<(), String> {
    for hop in 0..s.hop_count() {
        match want {
            Some(w) => {
                let got = s.one(hop, "tracestate")?;
                ensure(got == w, || {
                    format!("{}: tracestate {got:?}, expected {w:?}", s.hop_name(hop))
                })?;
            }
            None => s.none(hop, "tracestate")?,
        }
    }
    Ok(())
}

fn flags_at(s: &Seen, hop: usize) -> Result<String, String> {
    let v = s.one(hop, "traceparent")?;
    Ok(v.rsplit('-').next().unwrap_or_default().to_string())
}

fn tps(values: &[String]) -> Vec<Vec<(&'static str, String)>> {
    values
        .iter()
        .map(|v| vec![("traceparent", v.clone())])
        .collect()
}

/// `tracestate` lines next to a valid (not sampled) traceparent.
fn with_ts(lines: &[&str]) -> Vec<(&'static str, String)> {
    let mut h = vec![("traceparent", tp("00"))];
    h.extend(lines.iter().map(|l| ("tracestate", l.to_string())));
    h
}

// ---------------------------------------------------------------------------------------------
// W3C Trace Context: traceparent.

fn traceparent_cases() -> Vec<Case> {
    let zeros32 = "0".repeat(32);
    let zeros16 = "0".repeat(16);
    vec![
        case(
            r#"traceparent: "Vendors MUST expect the header name in any case (upper, lower, mixed)""#,
            "/w3c/",
            ["TraceParent", "TrAcEpArEnT", "TRACEPARENT"]
                .iter()
                .map(|n| vec![(*n, tp("01"))])
                .collect(),
            |s| continues(s, TRACE),
        ),
        case(
            r#"traceparent: "SHOULD send the header name in lowercase""#,
            "/w3c/",
            vec![vec![("TRACEPARENT", tp("01"))]],
            |s| {
                let names: Vec<&str> = s
                    .app
                    .lines
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .filter(|n| n.eq_ignore_ascii_case("traceparent"))
                    .collect();
                ensure(names == ["traceparent"], || {
                    format!("names sent: {names:?}")
                })
            },
        ),
        case(
            r#"traceparent: "The header name is a single word without any delimiters""#,
            "/w3c/",
            vec![
                vec![("trace-parent", tp("01"))],
                vec![("trace.parent", tp("01"))],
            ],
            |s| restarts(s, &[TRACE]),
        ),
        case(
            r#"version: "Version ff is invalid""#,
            "/w3c/",
            tps(&[
                format!("ff-{TRACE}-{SPAN}-01"),
                format!("ff-{TRACE}-{SPAN}-01-what-the-future-will-be-like"),
            ]),
            |s| restarts(s, &[TRACE]),
        ),
        case(
            r#"Versioning of traceparent: "When the version prefix cannot be parsed (it's not 2 hex characters followed by a dash (-)), the implementation should restart the trace""#,
            "/w3c/",
            tps(&[
                format!(".0-{TRACE}-{SPAN}-01"),
                format!("0.-{TRACE}-{SPAN}-01"),
                format!("0-{TRACE}-{SPAN}-01"),
                format!("000-{TRACE}-{SPAN}-01"),
                format!("0000-{TRACE}-{SPAN}-01"),
                format!("0A-{TRACE}-{SPAN}-01"),
            ]),
            |s| restarts(s, &[TRACE]),
        ),
        case(
            r#"trace-id: "All bytes as zero (00000000000000000000000000000000) is considered an invalid value""#,
            "/w3c/",
            tps(&[format!("00-{zeros32}-{SPAN}-01")]),
            move |s| restarts(s, &["00000000000000000000000000000000"]),
        ),
        case(
            r#"trace-id: "If the trace-id value is invalid (for example if it contains non-allowed characters or all zeros), vendors MUST ignore the traceparent""#,
            "/w3c/",
            tps(&[
                format!("00-.{}-{SPAN}-01", &TRACE[1..]),
                format!("00-{}.-{SPAN}-01", &TRACE[..31]),
                format!("00-{}-{SPAN}-01", "ABCDEF0123456789ABCDEF0123456789"),
                format!("00-{TRACE}3-{SPAN}-01"),
                format!("00-{}-{SPAN}-01", &TRACE[..31]),
            ]),
            |s| restarts(s, &[TRACE, "abcdef0123456789abcdef0123456789"]),
        ),
        case(
            r#"parent-id: "All bytes as zero (0000000000000000) is considered an invalid value""#,
            "/w3c/",
            tps(&[format!("00-{TRACE}-{zeros16}-01")]),
            |s| restarts(s, &[TRACE]),
        ),
        case(
            r#"parent-id: "Vendors MUST ignore the traceparent when the parent-id is invalid (for example, if it contains non-lowercase hex characters)""#,
            "/w3c/",
            tps(&[
                format!("00-{TRACE}-.{}-01", &SPAN[1..]),
                format!("00-{TRACE}-{}.-01", &SPAN[..15]),
                format!("00-{TRACE}-ABCDEF0123456789-01"),
                format!("00-{TRACE}-{SPAN}7-01"),
                format!("00-{TRACE}-{}-01", &SPAN[..15]),
            ]),
            |s| restarts(s, &[TRACE]),
        ),
        case(
            r#"trace-flags: "trace-flags = 2HEXDIGLC""#,
            "/w3c/",
            tps(&[
                format!("00-{TRACE}-{SPAN}-.0"),
                format!("00-{TRACE}-{SPAN}-0."),
                format!("00-{TRACE}-{SPAN}-001"),
                format!("00-{TRACE}-{SPAN}-1"),
                format!("00-{TRACE}-{SPAN}-0F"),
            ]),
            |s| restarts(s, &[TRACE]),
        ),
        case(
            r#"trace-flags: "you cannot interpret flags by decoding the hex value and looking at the resulting number""#,
            "/w3c/",
            tps(&[tp("09")]),
            |s| {
                continues(s, TRACE)?;
                let f = flags_at(s, 0)?;
                ensure(f == "01", || {
                    format!("flags 09 are sampled (01 once masked), got {f}")
                })
            },
        ),
        case(
            r#"Other Flags: "The behavior of other flags, such as (00000100) is not defined and is reserved for future use. Vendors MUST set those to zero.""#,
            "/w3c/",
            tps(&[tp("ff"), tp("fd"), tp("04")]),
            |s| {
                continues(s, TRACE)?;
                for hop in 0..s.hop_count() {
                    let f = flags_at(s, hop)?;
                    let bits = u8::from_str_radix(&f, 16).map_err(|e| e.to_string())?;
                    ensure(bits & !0x03 == 0, || {
                        format!("hop {hop}: undefined flags kept: {f}")
                    })?;
                }
                Ok(())
            },
        ),
        case(
            r#"version-format: "version-format = trace-id "-" parent-id "-" trace-flags" (version 00 ends after the flags)"#,
            "/w3c/",
            tps(&[
                format!("{}.", tp("01")),
                format!("{}-what-the-future-will-be-like", tp("01")),
                format!("{}-", tp("01")),
            ]),
            |s| restarts(s, &[TRACE]),
        ),
        case(
            r#"Versioning of traceparent: "If a higher version is detected, the implementation SHOULD try to parse it""#,
            "/w3c/",
            tps(&[
                format!("cc-{TRACE}-{SPAN}-01"),
                format!("cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like"),
            ]),
            |s| continues(s, TRACE),
        ),
        case(
            r#"Versioning of traceparent: "Vendors MUST check that the 2 characters are either at the end of the string or followed by a dash (-)""#,
            "/w3c/",
            tps(&[format!("cc-{TRACE}-{SPAN}-01.what-the-future-will-be-like")]),
            |s| restarts(s, &[TRACE]),
        ),
        case(
            r#"Versioning of traceparent: "If the size of the header is shorter than 55 characters, the vendor should not parse the header and should restart the trace""#,
            "/w3c/",
            tps(&[format!("cc-{TRACE}-{SPAN}-1")]),
            |s| restarts(s, &[TRACE]),
        ),
        case(
            r#"Versioning of traceparent: "Vendors MUST use these fields to construct the new traceparent field according to the highest version of the specification known to the implementation""#,
            "/w3c/",
            tps(&[format!("cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like")]),
            |s| {
                continues(s, TRACE)?;
                let v = s.one(0, "traceparent")?;
                ensure(v.starts_with("00-") && v.len() == 55, || {
                    format!("not downgraded to 00: {v}")
                })
            },
        ),
        case(
            r#"RFC 9110 §5.5: leading and trailing whitespace is not part of the field value (W3C test suite: traceparent OWS handling)"#,
            "/w3c/",
            tps(&[
                format!(" {}", tp("01")),
                format!("\t{}", tp("01")),
                format!("{} ", tp("01")),
                format!("{}\t", tp("01")),
                format!("\t {} \t", tp("01")),
            ]),
            |s| continues(s, TRACE),
        ),
        case(
            r#"RFC 9110 §5.3: a field that is not a list is sent as one line (W3C test suite: traceparent duplicated: a new trace)"#,
            "/w3c/",
            vec![
                vec![
                    ("traceparent", format!("00-{OTHER}-{SPAN}-01")),
                    ("traceparent", tp("01")),
                ],
                vec![("traceparent", tp("01")), ("traceparent", tp("01"))],
                vec![
                    ("traceparent", tp("01")),
                    ("traceparent", tp("01")),
                    ("tracestate", "foo=1".into()),
                ],
            ],
            |s| restarts(s, &[TRACE, OTHER]),
        ),
        case(
            r#"Mutating the traceparent Field: "A vendor receiving a traceparent request header MUST send it to outgoing requests""#,
            "/w3c/",
            tps(&[tp("01")]),
            |s| continues(s, TRACE),
        ),
        case(
            r#"Mutating the traceparent Field: "Update parent-id: The value of the parent-id field can be set to the new value representing the ID of the current operation""#,
            "/w3c/",
            tps(&[tp("01"), tp("00")]),
            |s| {
                let one = s.traceparent(0)?.span_id;
                let two = s.traceparent(1)?.span_id;
                ensure(one.to_hex() != SPAN && two != one, || {
                    format!("spans {SPAN} -> {one} -> {two}")
                })
            },
        ),
        case(
            r#"Mutating the traceparent Field: "Vendors MUST NOT make any other mutations to the traceparent header""#,
            "/w3c/",
            tps(&[tp("00"), tp("01"), tp("02"), tp("03")]),
            |s| {
                continues(s, TRACE)?;
                let sent = &s.sent[0].1;
                for hop in 0..s.hop_count() {
                    let v = s.one(hop, "traceparent")?;
                    // Same version, trace-id and flags: only the parent-id changed.
                    ensure(v[..35] == sent[..35] && v[52..] == sent[52..], || {
                        format!("{}: {sent} became {v}", s.hop_name(hop))
                    })?;
                }
                Ok(())
            },
        ),
        case(
            r#"Restart trace: "All properties (trace-id, parent-id, trace-flags) are regenerated""#,
            "/w3c/",
            tps(&[format!("ff-{TRACE}-{SPAN}-00")]),
            |s| {
                restarts(s, &[TRACE])?;
                let c = s.traceparent(0)?;
                // This hop's decision (ratio 1): sampled, and random (a trace-id drawn here).
                ensure(
                    flags_at(s, 0)? == "03" && c.span_id.to_hex() != SPAN,
                    || {
                        format!(
                            "flags {} span {}",
                            flags_at(s, 0).unwrap_or_default(),
                            c.span_id
                        )
                    },
                )
            },
        ),
        case(
            r#"Restart trace: "Vendors SHOULD clean up tracestate collection on traceparent restart""#,
            "/w3c/",
            vec![vec![
                ("traceparent", format!("00-{zeros32}-{SPAN}-01")),
                ("tracestate", "foo=1,bar=2".into()),
            ]],
            |s| restarts(s, &[TRACE]),
        ),
        case(
            r#"Tracestate Header: "If the vendor failed to parse traceparent, it MUST NOT attempt to parse tracestate""#,
            "/w3c/",
            vec![
                vec![
                    ("traceparent", format!("00-{TRACE}-{SPAN}-0x")),
                    ("tracestate", "foo=1".into()),
                    ("tracestate", "bar=2".into()),
                ],
                // W3C test suite: tracestate included, traceparent missing.
                vec![("tracestate", "foo=1".into())],
                vec![("tracestate", "foo=1,bar=2".into())],
            ],
            |s| restarts(s, &[TRACE]),
        ),
        case(
            r#"Tracestate Header: "failure to parse tracestate MUST NOT affect the parsing of traceparent""#,
            "/w3c/",
            vec![with_ts(&["FOO=1,=2,nope"]), with_ts(&["foo@=1,bar", "=,,"])],
            |s| continues(s, TRACE),
        ),
        case(
            r#"Processing Model for starting or restarting a trace: "All properties - trace-id, parent-id, trace-flags are generated" (no traceparent received)"#,
            "/w3c/",
            vec![vec![]],
            |s| restarts(s, &[]),
        ),
        case(
            r#"trace-flags (Level 2): "Random Trace ID Flag" set on a trace-id this hop generates"#,
            "/w3c0/",
            vec![vec![], vec![("traceparent", "garbage".into())]],
            |s| {
                restarts(s, &[])?;
                ensure(flags_at(s, 0)? == "02", || {
                    format!("flags {}", flags_at(s, 0).unwrap_or_default())
                })
            },
        ),
        case(
            r#"Sampled flag: "If a component made definitive recording decision - this decision SHOULD be reflected in the sampled flag""#,
            "/w3c0/",
            vec![vec![]],
            |s| {
                let c = s.traceparent(0)?;
                ensure(!c.is_sampled(), || "sampling ratio 0: not sampled".into())?;
                let next = s.traceparent(1)?;
                ensure(!next.is_sampled(), || {
                    "the outbound sidecar keeps the decision".into()
                })
            },
        ),
        case(
            r#"Sampled flag: "If a component needs to make a recording decision - it SHOULD respect the sampled flag value""#,
            "/w3c0/",
            tps(&[tp("01")]),
            |s| {
                continues(s, TRACE)?;
                for hop in 0..s.hop_count() {
                    ensure(flags_at(s, hop)? == "01", || {
                        format!("hop {hop}: the caller's sampled flag was not kept")
                    })?;
                }
                Ok(())
            },
        ),
        Case {
            calls: 3,
            ..case(
                r#"W3C test suite, multiple requests with a valid traceparent: "expects the trace_id to be inherited by all the callbacks", each with its own parent-id"#,
                "/w3c/",
                tps(&[tp("01")]),
                |s| {
                    continues(s, TRACE)?;
                    let mut spans: Vec<String> = (1..s.hop_count())
                        .map(|h| s.traceparent(h).map(|c| c.span_id.to_hex()))
                        .collect::<Result<_, _>>()?;
                    spans.sort();
                    spans.dedup();
                    ensure(spans.len() == 3, || {
                        format!("3 calls, parent-ids {spans:?}")
                    })
                },
            )
        },
    ]
}

// ---------------------------------------------------------------------------------------------
// W3C Trace Context: tracestate.

fn tracestate_cases() -> Vec<Case> {
    let all_key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/";
    let all_value: String = (0x20u8..=0x7e)
        .filter(|c| *c != b',' && *c != b'=')
        .map(char::from)
        .collect();
    let members =
        |n: usize| -> Vec<String> { (1..=n).map(|i| format!("bar{i:02}={i:02}")).collect() };
    let four_lines = move |n: usize| -> Vec<(&'static str, String)> {
        let mut h = vec![("traceparent", tp("00"))];
        h.extend(members(n).chunks(10).map(|c| ("tracestate", c.join(","))));
        h
    };
    let v = all_value.clone();
    let k256 = "z".repeat(256);
    let k256b = k256.clone();
    vec![
        case(
            r#"tracestate: "Vendors MUST expect the header name in any case (upper, lower, mixed)""#,
            "/w3c/",
            ["TraceState", "TrAcEsTaTe", "TRACESTATE"]
                .iter()
                .map(|n| vec![("traceparent", tp("00")), (*n, "foo=1".to_string())])
                .collect(),
            |s| tracestate(s, Some("foo=1")),
        ),
        case(
            r#"tracestate: "SHOULD send the header name in lowercase""#,
            "/w3c/",
            vec![vec![
                ("traceparent", tp("00")),
                ("TRACESTATE", "foo=1".into()),
            ]],
            |s| {
                let names: Vec<&str> = s
                    .app
                    .lines
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .filter(|n| n.eq_ignore_ascii_case("tracestate"))
                    .collect();
                ensure(names == ["tracestate"], || format!("names sent: {names:?}"))
            },
        ),
        case(
            r#"tracestate: "The header name is a single word without any delimiters""#,
            "/w3c/",
            vec![
                vec![("traceparent", tp("00")), ("trace-state", "foo=1".into())],
                vec![("traceparent", tp("00")), ("trace.state", "foo=1".into())],
            ],
            |s| {
                continues(s, TRACE)?;
                tracestate(s, None)
            },
        ),
        case(
            r#"tracestate Header Field Values: "When receiving multiple tracestate header fields, they MUST be combined into a single header""#,
            "/w3c/",
            vec![with_ts(&["foo=1,bar=2", "rojo=1,congo=2", "baz=3"])],
            |s| tracestate(s, Some("foo=1,bar=2,rojo=1,congo=2,baz=3")),
        ),
        case(
            r#"tracestate Header Field Values: "The tracestate header SHOULD be sent as a single field when possible""#,
            "/w3c/",
            vec![with_ts(&["foo=1", "bar=2"]), with_ts(&["foo=1", "foo=1"])],
            |s| {
                for hop in 0..s.hop_count() {
                    s.one(hop, "tracestate")?;
                }
                Ok(())
            },
        ),
        case(
            r#"tracestate Header Field Values: "Spaces and horizontal tabs surrounding list-members are ignored""#,
            "/w3c/",
            vec![
                with_ts(&["foo=1 \t , \t bar=2, \t baz=3"]),
                with_ts(&["foo=1\t \t,\t \tbar=2,\t \tbaz=3"]),
                with_ts(&[" foo=1,bar=2", "\tbaz=3\t"]),
            ],
            |s| tracestate(s, Some("foo=1,bar=2,baz=3")),
        ),
        case(
            r#"tracestate Header Field Values: "Empty and whitespace-only list members are allowed""#,
            "/w3c/",
            vec![
                with_ts(&["foo=1,,bar=2, ,\t,baz=3"]),
                with_ts(&[",foo=1,bar=2,baz=3,"]),
            ],
            |s| tracestate(s, Some("foo=1,bar=2,baz=3")),
        ),
        case(
            r#"tracestate Header Field Values: "Vendors MUST accept empty tracestate headers but SHOULD avoid sending them""#,
            "/w3c/",
            vec![with_ts(&[""]), with_ts(&[" , "]), with_ts(&["", ""])],
            |s| {
                continues(s, TRACE)?;
                tracestate(s, None)
            },
        ),
        case(
            r#"W3C test suite, tracestate empty header: an empty tracestate line next to a valid one keeps the valid one"#,
            "/w3c/",
            vec![with_ts(&["foo=1", ""]), with_ts(&["", "foo=1"])],
            |s| tracestate(s, Some("foo=1")),
        ),
        case(
            r#"Key: "A key MUST begin with a lowercase letter or a digit and contain up to 256 characters including lowercase letters (a-z), digits (0-9), underscores (_), dashes (-), asterisks (*), forward slashes (/), and at signs (@)""#,
            "/w3c/",
            vec![
                with_ts(&[&format!("{all_key}={v}")]),
                with_ts(&[&format!("{all_key}@a-z0-9_-*/={v}")]),
            ],
            move |s| {
                let got = s.one(0, "tracestate")?.to_string();
                ensure(
                    got.ends_with(&format!("={all_value}")) && got.starts_with(all_key),
                    || format!("not kept whole: {got:?}"),
                )?;
                tracestate(s, Some(&got))
            },
        ),
        case(
            r#"Key: a key of 256 characters is valid, next to other members on another line (W3C test suite: tracestate key length limit)"#,
            "/w3c/",
            vec![with_ts(&["foo=1", &format!("{k256}=1")])],
            move |s| tracestate(s, Some(&format!("foo=1,{k256b}=1"))),
        ),
        case(
            r#"Key (Level 2): "key = ( lcalpha / DIGIT ) 0*255 ( keychar )" with "@" a keychar: tenant@system, foo@, foo@@bar, foo@bar@baz are keys (W3C test suite, Level 2 grammar)"#,
            "/w3c/",
            [
                "tenant@system".to_string(),
                "0tenant@system".into(),
                "foo@".into(),
                "foo@@bar".into(),
                "foo@bar@baz".into(),
                format!("{}@{}", "t".repeat(241), "v".repeat(14)),
                format!("{}@v", "t".repeat(242)),
                format!("t@{}", "v".repeat(15)),
            ]
            .iter()
            .map(|k| with_ts(&[&format!("{k}=1,bar=2")]))
            .collect(),
            |s| {
                let got = s.one(0, "tracestate")?.to_string();
                ensure(
                    got.ends_with("=1,bar=2") && got.matches('=').count() == 2,
                    || format!("both members are kept: {got:?}"),
                )?;
                tracestate(s, Some(&got))
            },
        ),
        case(
            r#"Key: a member whose key breaks the grammar (@foo, FOO, foo.bar, "foo ", 257 characters) is dropped and the valid members kept"#,
            "/w3c/",
            ["@foo", "FOO", "foo.bar", "foo ", "_foo", &"z".repeat(257)]
                .iter()
                .map(|k| with_ts(&[&format!("a=1,{k}=1"), "bar=2"]))
                .collect(),
            |s| tracestate(s, Some("a=1,bar=2")),
        ),
        case(
            r#"Value: "The value is an opaque string containing up to 256 printable ASCII [RFC0020] characters (i.e., the range 0x20 to 0x7E) except comma (,) and (=)""#,
            "/w3c/",
            vec![
                with_ts(&[
                    &format!("a={}", "v".repeat(256)),
                    &format!("b={}", "v".repeat(257)),
                ]),
                with_ts(&[&format!("a={}", "v".repeat(256)), "b=x=y"]),
                with_ts(&[&format!("a={}", "v".repeat(256)), "b=,"]),
            ],
            |s| tracestate(s, Some(&format!("a={}", "v".repeat(256)))),
        ),
        case(
            r#"Value: "all leading spaces MUST be preserved as part of the value""#,
            "/w3c/",
            vec![with_ts(&["foo=  1,bar=2"])],
            |s| tracestate(s, Some("foo=  1,bar=2")),
        ),
        case(
            r#"Value: "all trailing spaces are considered to be optional whitespace characters not part of the value""#,
            "/w3c/",
            vec![
                with_ts(&["foo=1   ,bar=2"]),
                with_ts(&["foo=1\t", "bar=2 "]),
            ],
            |s| tracestate(s, Some("foo=1,bar=2")),
        ),
        case(
            r#"Combined Header Value: "Only one entry per key is allowed because the entry represents that last position in the trace" (the left-most is kept)"#,
            "/w3c/",
            vec![
                with_ts(&["foo=1,foo=1"]),
                with_ts(&["foo=1,foo=2"]),
                with_ts(&["foo=1", "foo=1"]),
                with_ts(&["foo=1", "foo=2"]),
            ],
            |s| tracestate(s, Some("foo=1")),
        ),
        case(
            r#"list: "There can be a maximum of 32 list-members in a list" (32 on several lines pass whole)"#,
            "/w3c/",
            vec![four_lines(32)],
            move |s| tracestate(s, Some(&members(32).join(","))),
        ),
        case(
            r#"list: "list = list-member 0*31( OWS "," OWS list-member )" (33 members are not a list: dropped)"#,
            "/w3c/",
            vec![four_lines(33)],
            |s| {
                continues(s, TRACE)?;
                tracestate(s, None)
            },
        ),
        case(
            r#"tracestate Limits: "Vendors SHOULD propagate at least 512 characters of a combined header""#,
            "/w3c/",
            vec![
                with_ts(&[&(0..32)
                    .map(|i| format!("k{i:02}={}", "v".repeat(100)))
                    .collect::<Vec<_>>()
                    .join(",")]),
                with_ts(&[&(0..3)
                    .map(|i| format!("{}{i}={}", "k".repeat(255), "v".repeat(256)))
                    .collect::<Vec<_>>()
                    .join(",")]),
            ],
            |s| {
                let got = s.one(0, "tracestate")?.to_string();
                ensure(
                    got.len() > 512 && (got.len() == 3 * 513 + 2 || got.len() == 32 * 104 + 31),
                    || format!("{} characters propagated", got.len()),
                )?;
                tracestate(s, Some(&got))
            },
        ),
        case(
            r#"Processing model: "Invalid tracestate entries MAY also be discarded" (only the invalid ones)"#,
            "/w3c/",
            vec![
                with_ts(&["foo=1,FOO=2,bar=3"]),
                with_ts(&["foo=1", "=x", "bar=3"]),
            ],
            |s| tracestate(s, Some("foo=1,bar=3")),
        ),
        case(
            r#"Mutating the tracestate Field: "When mutating tracestate, the order of unmodified key/value pairs MUST be preserved""#,
            "/w3c/",
            vec![with_ts(&["c=3,a=1,INVALID=x,b=2", "z=0,a=9"])],
            |s| tracestate(s, Some("c=3,a=1,b=2,z=0")),
        ),
        case(
            r#"Mutating the tracestate Field: "Vendors receiving a tracestate request header MUST send it to outgoing requests""#,
            "/w3c/",
            vec![with_ts(&["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"])],
            |s| {
                continues(s, TRACE)?;
                tracestate(s, Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"))
            },
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// B3, Jaeger, grpc-trace-bin, baggage.

const B3_TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const B3_SPAN: &str = "e457b5a2e4d86bd1";
const B3_PARENT: &str = "05e3ac9a4f6e3b90";

fn b3_single(s: &Seen, hop: usize) -> Result<(SpanContext, Vec<String>), String> {
    let v = s.one(hop, "b3")?;
    let c = formats::parse_b3(v)
        .map_err(|e| format!("b3 {v:?}: {e}"))?
        .context()
        .ok_or(format!("b3 {v:?} has no context"))?;
    Ok((c, v.split('-').map(str::to_string).collect()))
}

fn b3_multi(s: &Seen, hop: usize) -> Result<SpanContext, String> {
    let get = |n: &str| s.values(hop, n).first().map(|v| v.to_string());
    let headers: Vec<(&'static str, Option<String>)> = [
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
    ]
    .iter()
    .map(|n| (*n, get(n)))
    .collect();
    formats::parse_b3_multi(|n| {
        headers
            .iter()
            .find(|(k, _)| *k == n)
            .and_then(|(_, v)| v.as_deref())
    })
    .map_err(|e| format!("x-b3-*: {e} ({headers:?})"))?
    .context()
    .ok_or("x-b3-* carry no context".into())
}

/// The trace goes on in `b3` at every hop, with a span id per hop.
fn b3_continues(s: &Seen, trace: &str) -> Result<(), String> {
    let mut previous = String::new();
    for hop in 0..s.hop_count() {
        let (c, _) = b3_single(s, hop)?;
        ensure(c.trace_id.to_hex() == trace, || {
            format!("hop {hop}: trace {}", c.trace_id)
        })?;
        ensure(c.span_id.to_hex() != previous, || {
            format!("hop {hop}: span id not new")
        })?;
        previous = c.span_id.to_hex();
    }
    Ok(())
}

fn b3_restarts(s: &Seen, not: &[&str]) -> Result<(), String> {
    let (c, _) = b3_single(s, 0)?;
    let trace = c.trace_id.to_hex();
    ensure(!not.contains(&trace.as_str()), || {
        format!("the trace {trace} was kept")
    })?;
    b3_continues(s, &c.trace_id.to_hex())
}

fn jaeger_fields(s: &Seen, hop: usize) -> Result<(SpanContext, Vec<String>), String> {
    let v = s.one(hop, "uber-trace-id")?;
    let c = formats::parse_uber_trace_id(v).map_err(|e| format!("uber-trace-id {v:?}: {e}"))?;
    Ok((c, v.split(':').map(str::to_string).collect()))
}

fn jaeger_continues(s: &Seen, trace: &str) -> Result<(), String> {
    let mut previous = String::new();
    for hop in 0..s.hop_count() {
        let (c, _) = jaeger_fields(s, hop)?;
        ensure(c.trace_id.to_hex() == trace, || {
            format!("hop {hop}: trace {}", c.trace_id)
        })?;
        ensure(c.span_id.to_hex() != previous, || {
            format!("hop {hop}: span id not new")
        })?;
        previous = c.span_id.to_hex();
    }
    Ok(())
}

fn jaeger_restarts(s: &Seen, not: &str) -> Result<(), String> {
    let (c, _) = jaeger_fields(s, 0)?;
    ensure(c.trace_id.to_hex() != not, || "the trace was kept".into())?;
    jaeger_continues(s, &c.trace_id.to_hex())
}

fn ut(value: String) -> Vec<Vec<(&'static str, String)>> {
    vec![vec![("uber-trace-id", value)]]
}

fn other_format_cases() -> Vec<Case> {
    let single = format!("{B3_TRACE}-{B3_SPAN}-1-{B3_PARENT}");
    let trace64 = "a3ce929d0e0e4736";
    let padded64 = format!("0000000000000000{trace64}");
    let padded64b = padded64.clone();
    let grpc = formats::format_grpc_trace_bin(&formats::parse_traceparent(&tp("01")).unwrap());
    let baggage: Vec<String> = (0..80).map(|i| format!("k{i}=v{i}")).collect();
    let first64 = baggage[..64].join(",");
    let big_a = format!("a={}", "x".repeat(4998));
    let big_b = format!("b={}", "y".repeat(4998));
    let big_a2 = big_a.clone();
    vec![
        // B3.
        case(
            r#"B3 Http Encodings: "The single-header variant takes precedence over the multiple header one when extracting fields""#,
            "/b3s/",
            vec![vec![
                ("X-B3-TraceId", TRACE.into()),
                ("X-B3-SpanId", SPAN.into()),
                ("X-B3-Sampled", "1".into()),
                ("b3", single.clone()),
            ]],
            |s| b3_continues(s, B3_TRACE),
        ),
        case(
            r#"B3 Multiple Headers: "When extracting state headers, the first value wins""#,
            "/b3m/",
            vec![vec![
                ("X-B3-TraceId", B3_TRACE.into()),
                ("X-B3-TraceId", TRACE.into()),
                ("X-B3-SpanId", B3_SPAN.into()),
                ("X-B3-SpanId", SPAN.into()),
                ("X-B3-Sampled", "0".into()),
                ("X-B3-Sampled", "1".into()),
            ]],
            |s| {
                let c = b3_multi(s, 0)?;
                ensure(c.trace_id.to_hex() == B3_TRACE && !c.is_sampled(), || {
                    format!("{c:?}")
                })?;
                let p = s.one(0, "x-b3-parentspanid")?;
                ensure(p == B3_SPAN, || format!("parent {p}"))
            },
        ),
        case(
            r#"B3 TraceId: "The X-B3-TraceId header is required and is encoded as 32 or 16 lower-hex characters""#,
            "/b3m/",
            vec![
                vec![
                    ("X-B3-TraceId", trace64.into()),
                    ("X-B3-SpanId", B3_SPAN.into()),
                ],
                vec![
                    ("X-B3-TraceId", padded64.clone()),
                    ("X-B3-SpanId", B3_SPAN.into()),
                ],
            ],
            move |s| {
                for hop in 0..s.hop_count() {
                    let c = b3_multi(s, hop)?;
                    ensure(c.trace_id.to_hex() == padded64b, || {
                        format!("hop {hop}: {}", c.trace_id)
                    })?;
                }
                Ok(())
            },
        ),
        case(
            r#"B3 TraceId: an X-B3-TraceId that is not 16 or 32 lower-hex characters is invalid: a new trace"#,
            "/b3m/",
            vec![
                vec![
                    ("X-B3-TraceId", B3_TRACE.to_uppercase()),
                    ("X-B3-SpanId", B3_SPAN.into()),
                ],
                vec![
                    ("X-B3-TraceId", B3_TRACE[1..].into()),
                    ("X-B3-SpanId", B3_SPAN.into()),
                ],
            ],
            |s| {
                let c = b3_multi(s, 0)?;
                ensure(!c.trace_id.to_hex().ends_with(&B3_TRACE[1..]), || {
                    "kept".into()
                })
            },
        ),
        case(
            r#"B3 SpanId: "The X-B3-SpanId header is required and is encoded as 16 lower-hex characters""#,
            "/b3m/",
            vec![
                vec![("X-B3-TraceId", B3_TRACE.into())],
                vec![
                    ("X-B3-TraceId", B3_TRACE.into()),
                    ("X-B3-SpanId", B3_SPAN[1..].into()),
                ],
            ],
            |s| {
                let c = b3_multi(s, 0)?;
                ensure(c.trace_id.to_hex() != B3_TRACE, || {
                    "kept without a valid span id".into()
                })
            },
        ),
        case(
            r#"B3 ParentSpanId: "The X-B3-ParentSpanId header may be present on a child span and must be absent on the root span""#,
            "/b3m/",
            vec![vec![], vec![("X-B3-Sampled", "1".into())]],
            |s| {
                s.none(0, "x-b3-parentspanid")?;
                let root = b3_multi(s, 0)?;
                let p = s.one(1, "x-b3-parentspanid")?;
                ensure(p == root.span_id.to_hex(), || {
                    format!("child's parent {p}, root {}", root.span_id)
                })
            },
        ),
        case(
            r#"B3 Sampling State: "An accept sampling decision is encoded as X-B3-Sampled: 1 and a deny as X-B3-Sampled: 0""#,
            "/b3m/",
            vec![
                vec![
                    ("X-B3-TraceId", B3_TRACE.into()),
                    ("X-B3-SpanId", B3_SPAN.into()),
                    ("X-B3-Sampled", "1".into()),
                ],
                vec![
                    ("X-B3-TraceId", B3_TRACE.into()),
                    ("X-B3-SpanId", B3_SPAN.into()),
                    ("X-B3-Sampled", "0".into()),
                ],
            ],
            |s| {
                let sent = s.sent_value("x-b3-sampled")?;
                for hop in 0..s.hop_count() {
                    let v = s.one(hop, "x-b3-sampled")?;
                    ensure(v == sent, || format!("hop {hop}: sent {sent}, got {v}"))?;
                }
                Ok(())
            },
        ),
        case(
            r#"B3 Sampling State: "Absent means defer the decision to the receiver of this header""#,
            "/b3m/",
            vec![vec![
                ("X-B3-TraceId", B3_TRACE.into()),
                ("X-B3-SpanId", B3_SPAN.into()),
            ]],
            |s| {
                // The inbound sidecar is the receiver: it decides (ratio 1) and says so.
                let c = b3_multi(s, 0)?;
                ensure(c.trace_id.to_hex() == B3_TRACE, || "trace kept".into())?;
                ensure(s.one(0, "x-b3-sampled")? == "1", || {
                    "decided: sampled".into()
                })
            },
        ),
        case(
            r#"B3 Sampling State: "some tracers propagated X-B3-Sampled as true or false ... a lenient implementation may accept them""#,
            "/b3m/",
            vec![
                vec![
                    ("X-B3-TraceId", B3_TRACE.into()),
                    ("X-B3-SpanId", B3_SPAN.into()),
                    ("X-B3-Sampled", "true".into()),
                ],
                vec![
                    ("X-B3-TraceId", B3_TRACE.into()),
                    ("X-B3-SpanId", B3_SPAN.into()),
                    ("X-B3-Sampled", "false".into()),
                ],
            ],
            |s| {
                let c = b3_multi(s, 0)?;
                ensure(c.trace_id.to_hex() == B3_TRACE, || "accepted".into())?;
                let want = if s.sent_value("x-b3-sampled")? == "true" {
                    "1"
                } else {
                    "0"
                };
                let v = s.one(0, "x-b3-sampled")?;
                ensure(v == want, || format!("written as {v}, expected {want}"))
            },
        ),
        case(
            r#"B3 Debug Flag: "Debug is encoded as X-B3-Flags: 1. Debug implies an accept decision, so don't also send the X-B3-Sampled header.""#,
            "/b3m/",
            vec![vec![
                ("X-B3-TraceId", B3_TRACE.into()),
                ("X-B3-SpanId", B3_SPAN.into()),
                ("X-B3-Flags", "1".into()),
            ]],
            |s| {
                for hop in 0..s.hop_count() {
                    ensure(s.one(hop, "x-b3-flags")? == "1", || {
                        format!("hop {hop}: debug lost")
                    })?;
                    s.none(hop, "x-b3-sampled")?;
                }
                Ok(())
            },
        ),
        case(
            r#"B3 Single Header: "b3={TraceId}-{SpanId}-{SamplingState}-{ParentSpanId}, where the last two fields are optional""#,
            "/b3s/",
            vec![
                vec![("b3", format!("{B3_TRACE}-{B3_SPAN}"))],
                vec![("b3", format!("{B3_TRACE}-{B3_SPAN}-1"))],
                vec![("b3", single.clone())],
            ],
            |s| b3_continues(s, B3_TRACE),
        ),
        case(
            r#"B3 Single Header: "A deny decision encodes as: b3: 0""#,
            "/b3s/",
            vec![vec![("b3", "0".into())]],
            |s| {
                for hop in 0..s.hop_count() {
                    let (c, _) = b3_single(s, hop)?;
                    ensure(!c.is_sampled(), || format!("hop {hop}: sampled"))?;
                }
                Ok(())
            },
        ),
        case(
            r#"B3 Single Header Sampling State: "Debug: d""#,
            "/b3s/",
            vec![vec![("b3", format!("{B3_TRACE}-{B3_SPAN}-d"))]],
            |s| {
                b3_continues(s, B3_TRACE)?;
                for hop in 0..s.hop_count() {
                    let (_, fields) = b3_single(s, hop)?;
                    ensure(fields.get(2).map(String::as_str) == Some("d"), || {
                        format!("hop {hop}: {fields:?}")
                    })?;
                }
                Ok(())
            },
        ),
        case(
            r#"B3 Single Header TraceId: "Unless propagating only the Sampling State, the TraceId is required""#,
            "/b3s/",
            vec![
                vec![("b3", format!("-{B3_SPAN}-1"))],
                vec![("b3", format!("{B3_SPAN}-1"))],
                vec![("b3", format!("{}-{B3_SPAN}-1", B3_TRACE.to_uppercase()))],
            ],
            |s| b3_restarts(s, &[B3_TRACE, &format!("{:0>32}", B3_SPAN)]),
        ),
        case(
            r#"B3 Identifiers: "Trace identifiers are 64 or 128-bit" (a 64-bit one is the same trace, written with 32 hex digits)"#,
            "/b3s/",
            vec![vec![("b3", format!("{trace64}-{B3_SPAN}-1"))]],
            move |s| b3_continues(s, &padded64),
        ),
        case(
            r#"B3 FAQ: "When a server reads headers like this, it is expected to provision a new span ID for itself, and use the one it extracted as its parent""#,
            "/b3s/",
            vec![vec![("b3", single.clone())]],
            |s| {
                b3_continues(s, B3_TRACE)?;
                let (one, f1) = b3_single(s, 0)?;
                ensure(f1.get(3).map(String::as_str) == Some(B3_SPAN), || {
                    format!("parent {f1:?}")
                })?;
                let (_, f2) = b3_single(s, 1)?;
                ensure(f2.get(3) == Some(&one.span_id.to_hex()), || {
                    format!("parent {f2:?}")
                })
            },
        ),
        case(
            r#"B3 Sampling State: "once the sampling decision is made, the same value should be consistently sent downstream""#,
            "/b3s/",
            vec![vec![("b3", format!("{B3_TRACE}-{B3_SPAN}-0"))]],
            |s| {
                b3_continues(s, B3_TRACE)?;
                for hop in 0..s.hop_count() {
                    let (c, _) = b3_single(s, hop)?;
                    ensure(!c.is_sampled(), || format!("hop {hop}: sampled"))?;
                }
                Ok(())
            },
        ),
        case(
            r#"B3 Single Header, repeated (choice; RFC 9110 §5.3): two b3 lines are invalid, a new trace"#,
            "/b3s/",
            vec![vec![("b3", single.clone()), ("b3", single.clone())]],
            |s| b3_restarts(s, &[B3_TRACE]),
        ),
        // Jaeger.
        case(
            r#"Jaeger Key: "uber-trace-id", "Case-insensitive in HTTP""#,
            "/jaeger/",
            vec![vec![("Uber-Trace-Id", format!("{B3_TRACE}:{B3_SPAN}:0:1"))]],
            |s| jaeger_continues(s, B3_TRACE),
        ),
        case(
            r#"Jaeger Key: "Lower-case in protocols that preserve header case""#,
            "/jaeger/",
            vec![vec![("UBER-TRACE-ID", format!("{B3_TRACE}:{B3_SPAN}:0:1"))]],
            |s| {
                let names: Vec<&str> = s
                    .app
                    .lines
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .filter(|n| n.eq_ignore_ascii_case("uber-trace-id"))
                    .collect();
                ensure(names == ["uber-trace-id"], || format!("{names:?}"))
            },
        ),
        case(
            r#"Jaeger trace-id: "Receivers MUST accept hex-strings shorter than 32 characters and 0-pad them on the left""#,
            "/jaeger/",
            ut(format!("abc:{B3_SPAN}:0:1")),
            |s| jaeger_continues(s, &format!("{:0>32}", "abc")),
        ),
        case(
            r#"Jaeger trace-id: "Senders SHOULD generate hex strings of exactly 16 or 32 characters in length""#,
            "/jaeger/",
            vec![
                vec![("uber-trace-id", format!("abc:{B3_SPAN}:0:1"))],
                vec![("uber-trace-id", format!("{B3_TRACE}:{B3_SPAN}:0:1"))],
            ],
            |s| {
                for hop in 0..s.hop_count() {
                    let (_, f) = jaeger_fields(s, hop)?;
                    ensure(f[0].len() == 16 || f[0].len() == 32, || {
                        format!("hop {hop}: {f:?}")
                    })?;
                }
                Ok(())
            },
        ),
        case(
            r#"Jaeger trace-id: "Value of 0 is not valid""#,
            "/jaeger/",
            ut(format!("0:{B3_SPAN}:0:1")),
            |s| jaeger_restarts(s, &"0".repeat(32)),
        ),
        case(
            r#"Jaeger span-id: "Receivers MUST accept hex-strings shorter than 16 characters and 0-pad them on the left""#,
            "/jaeger/",
            ut(format!("{B3_TRACE}:abc:0:1")),
            |s| {
                jaeger_continues(s, B3_TRACE)?;
                let (_, f) = jaeger_fields(s, 0)?;
                ensure(f[2] == "0000000000000abc", || format!("parent {f:?}"))
            },
        ),
        case(
            r#"Jaeger span-id: "Senders SHOULD generate hex strings of exactly 16 characters in length""#,
            "/jaeger/",
            ut(format!("{B3_TRACE}:abc:0:1")),
            |s| {
                for hop in 0..s.hop_count() {
                    let (_, f) = jaeger_fields(s, hop)?;
                    ensure(f[1].len() == 16, || format!("hop {hop}: {f:?}"))?;
                }
                Ok(())
            },
        ),
        case(
            r#"Jaeger span-id: "Value of 0 is not valid""#,
            "/jaeger/",
            ut(format!("{B3_TRACE}:0:0:1")),
            |s| jaeger_restarts(s, B3_TRACE),
        ),
        case(
            r#"Jaeger parent-span-id: "Deprecated, most Jaeger clients ignore on the receiving side, but still include it on the sending side""#,
            "/jaeger/",
            ut(format!("{B3_TRACE}:{B3_SPAN}:{B3_PARENT}:1")),
            |s| {
                jaeger_continues(s, B3_TRACE)?;
                let (one, f1) = jaeger_fields(s, 0)?;
                ensure(f1[2] == B3_SPAN, || format!("hop 0: parent {f1:?}"))?;
                let (_, f2) = jaeger_fields(s, 1)?;
                ensure(f2[2] == one.span_id.to_hex(), || {
                    format!("hop 1: parent {f2:?}")
                })
            },
        ),
        case(
            r#"Jaeger flags: "One byte bitmap, as one or two hex digits (leading zero may be omitted)""#,
            "/jaeger/",
            vec![
                vec![("uber-trace-id", format!("{B3_TRACE}:{B3_SPAN}:0:1"))],
                vec![("uber-trace-id", format!("{B3_TRACE}:{B3_SPAN}:0:01"))],
            ],
            |s| {
                jaeger_continues(s, B3_TRACE)?;
                let (_, f) = jaeger_fields(s, 0)?;
                ensure(f[3] == "01", || format!("{f:?}"))
            },
        ),
        case(
            r#"Jaeger flags: "Bit 1 (right-most, least significant, bit mask 0x01) is "sampled" flag""#,
            "/jaeger/",
            vec![
                vec![("uber-trace-id", format!("{B3_TRACE}:{B3_SPAN}:0:0"))],
                vec![("uber-trace-id", format!("{B3_TRACE}:{B3_SPAN}:0:1"))],
            ],
            |s| {
                let sent = s.sent_value("uber-trace-id")?;
                let want = if sent.ends_with(":1") { "01" } else { "00" };
                for hop in 0..s.hop_count() {
                    let (_, f) = jaeger_fields(s, hop)?;
                    ensure(f[3] == want, || {
                        format!("hop {hop}: sent {sent}, got {f:?}")
                    })?;
                }
                Ok(())
            },
        ),
        case(
            r#"Jaeger flags: "Bit 2 (bit mask 0x02) is "debug" flag", "Debug flag should only be set when the sampled flag is set""#,
            "/jaeger/",
            vec![
                vec![("uber-trace-id", format!("{B3_TRACE}:{B3_SPAN}:0:3"))],
                vec![("uber-trace-id", format!("{B3_TRACE}:{B3_SPAN}:0:2"))],
            ],
            |s| {
                for hop in 0..s.hop_count() {
                    let (_, f) = jaeger_fields(s, hop)?;
                    ensure(f[3] == "03", || format!("hop {hop}: {f:?}"))?;
                }
                Ok(())
            },
        ),
        case(
            r#"Jaeger flags: "Bit 4 (bit mask 0x08) is "firehose" flag" (choice: not carried, the other bits are)"#,
            "/jaeger/",
            ut(format!("{B3_TRACE}:{B3_SPAN}:0:9")),
            |s| {
                let (_, f) = jaeger_fields(s, 0)?;
                ensure(f[3] == "01", || format!("{f:?}"))
            },
        ),
        case(
            r#"Jaeger uber-trace-id, repeated (choice; RFC 9110 §5.3): two lines are invalid, a new trace"#,
            "/jaeger/",
            vec![vec![
                ("uber-trace-id", format!("{B3_TRACE}:{B3_SPAN}:0:1")),
                ("uber-trace-id", format!("{B3_TRACE}:{B3_SPAN}:0:1")),
            ]],
            |s| jaeger_restarts(s, B3_TRACE),
        ),
        case(
            r#"Jaeger uber-trace-id, percent-encoded (choice, as Jaeger's Go client writes it): %3A separators are read"#,
            "/jaeger/",
            ut(format!("{B3_TRACE}%3A{B3_SPAN}%3A0%3A1")),
            |s| jaeger_continues(s, B3_TRACE),
        ),
        // grpc-trace-bin.
        case(
            r#"grpc-trace-bin (OpenCensus BinaryEncoding): a valid context continues the trace"#,
            "/grpc/",
            vec![vec![("grpc-trace-bin", grpc.clone())]],
            |s| {
                for hop in 0..s.hop_count() {
                    let v = s.one(hop, "grpc-trace-bin")?;
                    let c = formats::parse_grpc_trace_bin(v).map_err(|e| e.to_string())?;
                    ensure(
                        c.trace_id.to_hex() == TRACE && c.span_id.to_hex() != SPAN,
                        || format!("hop {hop}: {c:?}"),
                    )?;
                }
                Ok(())
            },
        ),
        case(
            r#"grpc-trace-bin, repeated (choice; RFC 9110 §5.3): two lines are invalid, a new trace"#,
            "/grpc/",
            vec![vec![
                ("grpc-trace-bin", grpc.clone()),
                ("grpc-trace-bin", grpc.clone()),
            ]],
            |s| {
                let v = s.one(0, "grpc-trace-bin")?;
                let c = formats::parse_grpc_trace_bin(v).map_err(|e| e.to_string())?;
                ensure(c.trace_id.to_hex() != TRACE, || "the trace was kept".into())
            },
        ),
        // W3C Baggage.
        case(
            r#"Baggage: "Multiple baggage headers are allowed. Values can be combined in a single header according to RFC 7230" (combined, in order, one line)"#,
            "/w3c/",
            vec![vec![
                ("baggage", "userId=alice".into()),
                ("baggage", "".into()),
                ("baggage", "serverNode=DF%2028,isProduction=false".into()),
            ]],
            |s| {
                for hop in 0..s.hop_count() {
                    let v = s.one(hop, "baggage")?;
                    ensure(
                        v == "userId=alice,serverNode=DF%2028,isProduction=false",
                        || format!("hop {hop}: {v}"),
                    )?;
                }
                Ok(())
            },
        ),
        case(
            r#"Baggage Limits: "the resulting baggage-string contains 64 list-members or less" (over all lines)"#,
            "/w3c/",
            vec![vec![
                ("baggage", baggage[..40].join(",")),
                ("baggage", baggage[40..].join(",")),
            ]],
            move |s| {
                for hop in 0..s.hop_count() {
                    let v = s.one(hop, "baggage")?;
                    ensure(v == first64, || {
                        format!("hop {hop}: {} members", v.split(',').count())
                    })?;
                }
                Ok(())
            },
        ),
        case(
            r#"Baggage Limits: "the resulting baggage-string is of size 8192 bytes or less", "MUST NOT propagate any partial list-members" (over all lines)"#,
            "/w3c/",
            vec![vec![("baggage", big_a.clone()), ("baggage", big_b.clone())]],
            move |s| {
                for hop in 0..s.hop_count() {
                    let v = s.one(hop, "baggage")?;
                    ensure(v == big_a2, || format!("hop {hop}: {} bytes", v.len()))?;
                }
                Ok(())
            },
        ),
        case(
            r#"Baggage: "A received header MAY be altered to change or add information and it SHOULD be passed on to all downstream requests""#,
            "/w3c/",
            vec![vec![(
                "baggage",
                "key1=value1;property1;property2, key2 = value2".into(),
            )]],
            |s| {
                for hop in 0..s.hop_count() {
                    let v = s.one(hop, "baggage")?;
                    ensure(
                        v == "key1=value1;property1;property2, key2 = value2",
                        || format!("hop {hop}: {v}"),
                    )?;
                }
                Ok(())
            },
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test(flavor = "multi_thread")]
async fn w3c_traceparent_rules_hold_through_a_sidecar_pair() {
    Pair::start()
        .await
        .run("traceparent", traceparent_cases())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn w3c_tracestate_rules_hold_through_a_sidecar_pair() {
    Pair::start()
        .await
        .run("tracestate", tracestate_cases())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn b3_jaeger_grpc_trace_bin_and_baggage_rules_hold_through_a_sidecar_pair() {
    Pair::start()
        .await
        .run("formats", other_format_cases())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_call_of_the_app_is_a_span_of_the_outbound_sidecar_and_exported_parents_chain_across_both(
) {
    let pair = Pair::start().await;
    // The caller's span, then one inbound span, then three outbound ones (one per call).
    for (what, lines, calls) in [
        ("continued", vec![("traceparent".to_string(), tp("01"))], 3),
        ("started at the inbound sidecar", vec![], 3),
    ] {
        let path = format!("/w3c/chain-{}?calls={calls}", lines.len());
        let seen = pair.send(&path, &lines).await.unwrap();
        assert_eq!(seen.next.len(), calls, "{what}");
        let inbound = seen.traceparent(0).unwrap();
        let trace = inbound.trace_id.to_hex();
        let outbound: Vec<SpanContext> =
            (1..=calls).map(|h| seen.traceparent(h).unwrap()).collect();
        // Each call carries a span id of its own: the outbound sidecar's span for that call.
        let mut ids: Vec<String> = outbound.iter().map(|c| c.span_id.to_hex()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), calls, "{what}: a new span id per call: {ids:?}");
        assert!(!ids.contains(&inbound.span_id.to_hex()), "{what}");
        for c in &outbound {
            assert_eq!(c.trace_id.to_hex(), trace, "{what}: one trace");
        }

        let of_trace = || -> Vec<_> {
            pair.receiver
                .spans()
                .into_iter()
                .filter(|s| s.trace_id == trace)
                .collect()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while of_trace().len() < 1 + calls && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let spans = of_trace();
        assert_eq!(spans.len(), 1 + calls, "{what}: {spans:?}");
        let inbound_spans: Vec<_> = spans
            .iter()
            .filter(|s| s.service_name == "inbound")
            .collect();
        let outbound_spans: Vec<_> = spans
            .iter()
            .filter(|s| s.service_name == "outbound")
            .collect();
        assert_eq!(
            (inbound_spans.len(), outbound_spans.len()),
            (1, calls),
            "{what}"
        );
        let first = inbound_spans[0];
        assert_eq!(
            first.span_id,
            inbound.span_id.to_hex(),
            "{what}: the span the app was given"
        );
        let expected_parent = (what == "continued").then(|| SPAN.to_string());
        assert_eq!(
            first.parent_span_id, expected_parent,
            "{what}: the caller is the inbound span's parent"
        );
        let mut exported: Vec<String> = outbound_spans.iter().map(|s| s.span_id.clone()).collect();
        exported.sort();
        assert_eq!(
            exported, ids,
            "{what}: the outbound spans are the ones the next hop received"
        );
        for s in &outbound_spans {
            assert_eq!(
                s.parent_span_id.as_deref(),
                Some(first.span_id.as_str()),
                "{what}: the inbound span is each outbound span's parent"
            );
        }
    }
}

#[test]
fn every_rule_is_listed_in_the_readme() {
    let readme =
        std::fs::read_to_string(workspace_root().join("filters/trace-propagation/README.md"))
            .unwrap();
    let mut rules: Vec<&str> = Vec::new();
    let cases: Vec<Case> = traceparent_cases()
        .into_iter()
        .chain(tracestate_cases())
        .chain(other_format_cases())
        .collect();
    for case in &cases {
        assert!(!case.rule.contains('|'), "a table cell: {}", case.rule);
        assert!(
            !rules.contains(&case.rule),
            "two cases are named {}",
            case.rule
        );
        rules.push(case.rule);
    }
    let missing: Vec<&&str> = rules
        .iter()
        .filter(|r| !readme.contains(&format!("| {r} |")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} rules are not in the README's conformance table:\n{}",
        missing.len(),
        rules.len(),
        missing
            .iter()
            .map(|r| format!("| {r} | holds |"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
