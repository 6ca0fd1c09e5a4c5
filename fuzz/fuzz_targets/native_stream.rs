//! One stream through the native module's request path, without Envoy: arbitrary bytes become
//! what Envoy hands the module on a stream (request header and response header name/value
//! bytes, and the attributes the stages read: the route name, the peer certificate's URI SAN
//! and digest, `connection.mtls`, `response.code`), each header converted with
//! `mesh_native::input::text` exactly as the adapter's `Stream::headers` does. The suite
//! (`mesh_filters::factory`, every stage, the plugin configuration of envoy/demo.yaml's mTLS
//! listener, `common/configs.rs`'s `suite_json`) then runs the stream as the module's `Filter`
//! does over an in-memory host (`mesh_kit::testing::TestHost`): request headers; response
//! headers unless a stage answered locally (Envoy does not run them for the filter's own
//! reply); end of stream. Twice on one connection and root, so that the second request meets
//! the route cache, the identity stage's per-connection memo and the state the first one left
//! (each input has a fresh root and host; the connection id is a hash of the peer certificate's
//! attributes, see `connection_id`).
//! A route named like a route of the demo's mTLS listener (`auth`, `learner-grpc`, ...) carries
//! that route's per-route configuration, as its `DynamicModuleFilterPerRoute` would. The
//! `:status` of both header lists goes through `mesh_native::input::status_of` too.
//!
//! Properties: never panics; every request or response header the suite writes has a name and
//! a value without CR, LF or NUL, as has every header of a local reply (and the `grpc-message`
//! the module would send, `mesh_native::host::grpc_message`); at most one reply per request,
//! sent exactly when the request stops; an HTTP reply's status is in 100..=599, a gRPC reply's
//! `grpc-status` in 0..=16; `status_of` is the first `:status` pair whose value, trimmed, is a
//! `u32`.
//!
//! Input (every part optional: a short input leaves the rest empty):
//!
//! ```text
//! input  := control route san digest code pair*
//! control:= 1 byte: bits 0-4 the number of request header pairs (the pairs after them are
//!           response headers), bit 5 connection.mtls
//! route, san, digest, code := field   (an empty san, digest or code: the attribute is absent;
//!           code: up to 8 bytes, little-endian, as Envoy's integer attributes)
//! pair   := name:field value:field
//! field  := length:u8, then that many bytes (fewer when the input ends)
//! ```
//!
//! The other attributes are fixed: cluster `svc`, `response.flags` 0, `response.code_details`
//! `via_upstream`, one attempt, the clock and `request.time` at 2027-01-15.
#![no_main]

#[path = "common/configs.rs"]
mod configs;

use configs::*;
use libfuzzer_sys::fuzz_target;
use mesh_kit::host::Property;
use mesh_kit::reply::Rendered;
use mesh_kit::stage::Root;
use mesh_kit::testing::TestHost;
use mesh_native::input::{status_of, text};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;
use std::sync::OnceLock;

/// The input, split.
struct Stream<'a> {
    mtls: bool,
    route: &'a [u8],
    san: &'a [u8],
    digest: &'a [u8],
    code: &'a [u8],
    request: Vec<(&'a [u8], &'a [u8])>,
    response: Vec<(&'a [u8], &'a [u8])>,
}

fn field<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let Some((&n, rest)) = data.split_first() else {
        return &[];
    };
    let (f, rest) = rest.split_at(usize::from(n).min(rest.len()));
    *data = rest;
    f
}

fn split(mut data: &[u8]) -> Stream<'_> {
    let control = data.first().copied().unwrap_or(0);
    data = data.get(1..).unwrap_or_default();
    let (route, san, digest, code) = (
        field(&mut data),
        field(&mut data),
        field(&mut data),
        field(&mut data),
    );
    let mut pairs = Vec::new();
    while !data.is_empty() {
        let name = field(&mut data);
        pairs.push((name, field(&mut data)));
    }
    let n = usize::from(control & 0x1f).min(pairs.len());
    let response = pairs.split_off(n);
    Stream {
        mtls: control & 0x20 != 0,
        route,
        san,
        digest,
        code,
        request: pairs,
        response,
    }
}

/// Header pairs as the adapter hands them to the kit.
fn headers(pairs: &[(&[u8], &[u8])]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (text(k), text(v))).collect()
}

/// The per-route configuration of the demo's mTLS routes (envoy/demo.yaml), by route name.
fn demo_route(name: &str) -> BTreeMap<String, Value> {
    let sa = |s: &str| format!("spiffe://mesh.local/ns/default/sa/{s}");
    let (timeout, allow, rate_limit_off) = match name {
        "auth" | "auth-grpc" => ("5s", json!([sa("learner"), sa("events")]), true),
        "learner" | "learner-grpc" => ("10s", json!(["spiffe://mesh.local/ns/*/sa/auth"]), true),
        "events" | "events-grpc" => ("2s", json!(["spiffe://mesh.local/**"]), false),
        _ => return BTreeMap::new(),
    };
    let mut sections = BTreeMap::from([
        ("mesh.deadline".to_string(), json!({ "timeout": timeout })),
        (
            "mesh.spiffe_identity".to_string(),
            json!({ "allow": allow }),
        ),
    ]);
    if rate_limit_off {
        sections.insert("mesh.rate_limit".into(), json!({"disabled": true}));
    }
    sections
}

/// No CR, LF or NUL: what Envoy refuses in a header (or what would split it).
fn clean(what: &str, s: &str) {
    assert!(!s.contains(['\r', '\n', '\0']), "{what}: {s:?}");
}

fn clean_pair(what: &str, (k, v): (&str, &str)) {
    clean(what, k);
    clean(what, v);
}

fn check_reply(reply: &Rendered) {
    match reply {
        Rendered::Http {
            status, headers, ..
        } => {
            assert!((100..=599).contains(status), "HTTP status {status}");
            for (k, v) in headers {
                clean_pair("reply header", (k, v));
            }
        }
        Rendered::Grpc {
            status,
            message,
            headers,
        } => {
            assert!(*status <= 16, "grpc-status {status}");
            let sent = mesh_native::host::grpc_message(message);
            assert!(
                sent.bytes().all(|b| (0x20..=0x7e).contains(&b)),
                "grpc-message {sent:?}"
            );
            for (k, v) in headers {
                clean_pair("reply header", (k, v));
            }
        }
    }
}

/// `status_of` against its definition.
fn check_status(pairs: &[(&[u8], &[u8])]) {
    let expected = pairs.iter().find_map(|(k, v)| {
        if *k != b":status" {
            return None;
        }
        std::str::from_utf8(v).ok()?.trim().parse::<u32>().ok()
    });
    assert_eq!(status_of(pairs.iter().copied()), expected);
}

fn config() -> &'static [u8] {
    static CONFIG: OnceLock<Vec<u8>> = OnceLock::new();
    CONFIG.get_or_init(|| suite_json().to_string().into_bytes())
}

/// The downstream connection's id: a hash of its peer certificate's attributes. The identity
/// stage remembers a connection's peer certificate and its verdict per worker thread, keyed by
/// this id (Envoy's are unique in the process): keyed by what it remembers, the memo gives each
/// input the answer it would compute afresh, so no input depends on the ones before it, and
/// inputs with a peer seen before allocate nothing that outlives them (which would make
/// libFuzzer run a leak check after each of them).
fn connection_id(s: &Stream<'_>) -> u64 {
    let mut h = DefaultHasher::new();
    (s.mtls, s.san, s.digest).hash(&mut h);
    h.finish()
}

fuzz_target!(|data: &[u8]| {
    let stream = split(data);
    check_status(&stream.request);
    check_status(&stream.response);

    let host = Rc::new(TestHost::default());
    *host.headers.borrow_mut() = headers(&stream.request);
    let served_response = headers(&stream.response);
    let route = text(stream.route);
    *host.route_configs.borrow_mut() = demo_route(&route);
    host.now_us.set(1_800_000_000_000_000);
    host.set_property(Property::RouteName, stream.route);
    host.set_text(Property::ClusterName, "svc");
    host.set_int(Property::ConnectionId, connection_id(&stream));
    host.set_int(Property::RequestTime, 1_800_000_000_000_000_000);
    host.set_property(Property::Mtls, &[u8::from(stream.mtls)]);
    if !stream.san.is_empty() {
        host.set_property(Property::PeerUriSan, stream.san);
    }
    if !stream.digest.is_empty() {
        host.set_property(Property::PeerDigest, stream.digest);
    }
    if !stream.code.is_empty() {
        let mut code = [0u8; 8];
        for (c, b) in code.iter_mut().zip(stream.code) {
            *c = *b;
        }
        host.set_property(Property::ResponseCode, &code);
    }
    host.set_int(Property::ResponseFlags, 0);
    host.set_text(Property::ResponseCodeDetails, "via_upstream");
    host.set_int(Property::AttemptCount, 1);

    let mut root = Root::new(mesh_filters::NAME, mesh_filters::factory, host.clone());
    if let Err(e) = root.configure(config()) {
        panic!("the demo configuration is refused: {e}");
    }
    for _ in 0..2 {
        host.header_writes.borrow_mut().clear();
        host.replies.borrow_mut().clear();
        *host.response_headers.borrow_mut() = served_response.clone();

        let mut request = root.new_request();
        let through = request.request_headers();
        let replied = {
            let replies = host.replies.borrow();
            assert!(replies.len() <= 1, "{} replies", replies.len());
            assert_eq!(through, replies.is_empty(), "a reply exactly when stopped");
            replies.iter().for_each(check_reply);
            replies.len()
        };
        if through {
            request.response_headers();
        }
        request.log();

        for (name, value) in host.header_writes.borrow().iter() {
            clean("request header write", name);
            if let Some(v) = value {
                clean("request header write", v);
            }
        }
        for (k, v) in host.response_headers.borrow().iter() {
            if !served_response.iter().any(|(sk, sv)| sk == k && sv == v) {
                clean_pair("response header write", (k, v));
            }
        }
        assert_eq!(
            host.replies.borrow().len(),
            replied,
            "a reply after request headers"
        );
    }
});
