//! The spoofing matrix of the SPIFFE identity filter, end to end against a real Envoy.
//!
//! One table of cases: each names the listener it is sent to, the certificate the client
//! presents (if any), the request headers it sends (written byte for byte on the wire, so odd
//! case and repeated headers reach Envoy as sent), and the expected outcome: refused (403 with
//! the filter's error, the upstream never contacted), or forwarded with exactly one
//! `x-spiffe-id`, the verified one (none where the filter is off or, in audit mode, where there
//! is no valid identity). Every case is also checked against the filter's counters: exactly the
//! documented one moves by one (`allowed`, `denied`, `unauthenticated`, `audit_denied`,
//! `config_error`; none where the filter is off), no other on any route. A forged identity must
//! appear in no header the upstream receives.
//!
//! Listener kinds (the plaintext ones share an Envoy, the mTLS ones another, and the
//! behind-a-proxy pair is a front and a back Envoy):
//!
//! - **plaintext**: `plain` (Envoy's default XFCC handling, which drops a client's XFCC),
//!   `plain-fwd` and `plain-xfcc` (`ALWAYS_FORWARD_ONLY`: a forged XFCC reaches the filter,
//!   which must refuse it by itself; `source` peer_certificate and xfcc respectively);
//! - **mTLS**: `mtls` (`SANITIZE_SET`, client certificate optional: the documented setup),
//!   `mtls-audit` (the same in audit mode) and `mtls-fwd` (`ALWAYS_FORWARD_ONLY`, the
//!   misconfiguration of the README's "known limit");
//! - **behind a front proxy**: `via-front` (client → front Envoy, `SANITIZE_SET`, no filter →
//!   back Envoy, mTLS, `FORWARD_ONLY`, `source: xfcc` trusting the front's SPIFFE ID) and
//!   `back` (straight to the back Envoy, as a workload or with the front's own certificate, i.e.
//!   what the trusted front could send).
//!
//! Every listener also has a route switched off by route metadata (`/open/`) and one where
//! Envoy's `FilterConfig{disabled: true}` skips the filter and the route strips `x-spiffe-id`
//! (`/off/`).
//!
//! The outcome table (markdown, for HARDENING.md) is printed to stderr:
//! `cargo test -p mesh-integration --test spoofing -- --nocapture`.
//!
//! The cases are in `cases.rs` (one table, about 80 entries); this file holds the deployment
//! and the run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use mesh_integration::bootstrap::{
    bootstrap, cluster, filter, listener, route, with_filter_disabled, with_forward_client_cert,
    with_metadata, with_mtls, with_upstream_tls,
};
use mesh_integration::certs::{Leaf, Pki, ENVOY_ID, SERVER_NAME};
use mesh_integration::client::raw;
use mesh_integration::client::Response;
use mesh_integration::envoy::Envoy;
use mesh_integration::fixture::{sa, SA_PREFIX};
use mesh_integration::upstream::{self, Upstream};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

mod cases;

use cases::{cases, At, Expect, Peer};

const FILTER: &str = "mesh.spiffe_identity";
pub(crate) const XFCC: &str = "x-forwarded-client-cert";
/// The counters of the filter, by their Prometheus names.
const COUNTERS: [&str; 5] = [
    "allowed",
    "denied",
    "unauthenticated",
    "audit_denied",
    "config_error",
];

// ---------------------------------------------------------------------------------------------
// The deployment under test.

struct Mesh {
    pki: Pki,
    svc: Upstream,
    plain: Envoy,
    mtls: Envoy,
    back: Envoy,
    front: Envoy,
}

impl Mesh {
    fn envoy(&self, at: At) -> &Envoy {
        match at {
            At::Plain | At::PlainFwd | At::PlainXfcc => &self.plain,
            At::Mtls | At::MtlsFwd | At::MtlsAudit => &self.mtls,
            At::ViaFront | At::Back => &self.back,
        }
    }

    /// The Envoy and listener the client connects to.
    fn entry(&self, at: At) -> SocketAddr {
        match at {
            At::ViaFront => self.front.listener("front"),
            other => self.envoy(other).listener(other.name()),
        }
    }
}

/// Allows any workload of `mesh.local` except `auth`, so that most forged IDs would be admitted
/// if they got through.
fn filter_config(source: Source) -> Value {
    let mut c = json!({
        "trust_domains": ["mesh.local"],
        "allow": ["spiffe://mesh.local/**"],
        "deny": [sa("auth")],
    });
    match source {
        Source::Peer => {}
        Source::PeerAudit => c["mode"] = json!("audit"),
        Source::Xfcc => {
            c["source"] = json!("xfcc");
            c["xfcc_trusted_by"] = json!([ENVOY_ID]);
        }
    }
    c
}

/// The filter's configuration on a listener.
#[derive(Clone, Copy)]
enum Source {
    /// `source: "peer_certificate"` (the default).
    Peer,
    /// The same, `mode: "audit"`.
    PeerAudit,
    /// `source: "xfcc"`, trusting `ENVOY_ID` (the front Envoy).
    Xfcc,
}

/// A listener with the filter and three routes to cluster `svc`: `<name>-open` (`/open/`, the
/// filter switched off by route metadata), `<name>-off` (`/off/`, the filter skipped by Envoy's
/// `FilterConfig{disabled: true}`, the route removing `x-spiffe-id` itself, as the filter's README
/// asks) and `<name>` (everything else).
fn filtered_listener(name: &str, source: Source) -> Value {
    let mut envoy_off = with_filter_disabled(route(&format!("{name}-off"), "/off/", "svc"), FILTER);
    envoy_off["request_headers_to_remove"] = json!(["x-spiffe-id"]);
    let routes = vec![
        with_metadata(
            route(&format!("{name}-open"), "/open/", "svc"),
            FILTER,
            json!({"disabled": true}),
        ),
        envoy_off,
        route(name, "/", "svc"),
    ];
    let filter = filter(FILTER, &filter_config(source));
    listener(name, routes, vec![filter])
}

async fn start_mesh() -> Mesh {
    let pki = Pki::new("spoofing").unwrap();
    let svc = upstream::local("svc").await.unwrap();
    let svc_cluster = || cluster("svc", svc.addr(), false);

    let plain = Envoy::start(&bootstrap(
        vec![
            filtered_listener("plain", Source::Peer),
            with_forward_client_cert(
                filtered_listener("plain-fwd", Source::Peer),
                "ALWAYS_FORWARD_ONLY",
            ),
            with_forward_client_cert(
                filtered_listener("plain-xfcc", Source::Xfcc),
                "ALWAYS_FORWARD_ONLY",
            ),
        ],
        vec![svc_cluster()],
    ))
    .unwrap();
    let mtls = Envoy::start(&bootstrap(
        vec![
            with_mtls(
                filtered_listener("mtls", Source::Peer),
                &pki.envoy,
                false,
                "SANITIZE_SET",
            ),
            with_mtls(
                filtered_listener("mtls-fwd", Source::Peer),
                &pki.envoy,
                false,
                "ALWAYS_FORWARD_ONLY",
            ),
            with_mtls(
                filtered_listener("mtls-audit", Source::PeerAudit),
                &pki.envoy,
                false,
                "SANITIZE_SET",
            ),
        ],
        vec![svc_cluster()],
    ))
    .unwrap();
    let back = Envoy::start(&bootstrap(
        vec![with_mtls(
            filtered_listener("back", Source::Xfcc),
            &pki.envoy,
            true,
            "FORWARD_ONLY",
        )],
        vec![svc_cluster()],
    ))
    .unwrap();
    let front = Envoy::start(&bootstrap(
        vec![with_mtls(
            listener("front", vec![route("front", "/", "back")], vec![]),
            &pki.envoy,
            false,
            "SANITIZE_SET",
        )],
        vec![with_upstream_tls(
            cluster("back", back.listener("back"), true),
            &pki.envoy,
            SERVER_NAME,
        )],
    ))
    .unwrap();
    Mesh {
        pki,
        svc,
        plain,
        mtls,
        back,
        front,
    }
}

/// The `error` of the filter's JSON reply.
fn error(r: &Response) -> Option<String> {
    r.json()["error"].as_str().map(str::to_string)
}

/// The SHA-256 of a certificate's DER, lowercase hex, as Envoy writes XFCC `Hash=`.
fn cert_hash(leaf: &Leaf) -> String {
    let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap();
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let digest = suite.tls13().unwrap().common.hash_provider.hash(&der);
    digest.as_ref().iter().fold(String::new(), |mut s, b| {
        write!(s, "{b:02x}").unwrap();
        s
    })
}

/// Every sample of the filter's counters: (counter, route) → value.
fn counters(envoy: &Envoy) -> BTreeMap<(String, String), f64> {
    let metrics = envoy.metrics().unwrap();
    let mut out = BTreeMap::new();
    for counter in COUNTERS {
        for sample in metrics.samples(&format!("mesh_spiffe_identity_{counter}")) {
            let route = sample.label("route").unwrap_or_default().to_string();
            out.insert((counter.to_string(), route), sample.value);
        }
    }
    out
}

/// Counters that moved between two snapshots: "counter{route} +delta".
fn moved(
    before: &BTreeMap<(String, String), f64>,
    after: &BTreeMap<(String, String), f64>,
) -> Vec<String> {
    after
        .iter()
        .filter_map(|((name, route), v)| {
            let d = v - before.get(&(name.clone(), route.clone())).unwrap_or(&0.0);
            (d != 0.0).then(|| format!("{name}{{route={route}}} {d:+}"))
        })
        .collect()
}

/// A string for the table: workload IDs as `sa/<name>`, a long string cut to its head, `…` and
/// its length.
pub(crate) fn short(s: &str) -> String {
    let s = s
        .replace(SA_PREFIX, "sa/")
        .replace("{hash}", "<cert sha256>");
    if s.len() <= 160 {
        s
    } else {
        format!("{}…({} bytes)", &s[..40], s.len())
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

struct Row {
    name: &'static str,
    listener: &'static str,
    input: String,
    expected: String,
    status: String,
    upstream: String,
    counter: String,
}

#[tokio::test(flavor = "multi_thread")]
async fn every_spoofing_attempt_is_refused_or_stripped() {
    let started = Instant::now();
    let mesh = start_mesh().await;
    let tls = mesh.pki.tls();
    let front_leaf = mesh.pki.envoy_leaf().unwrap();
    let cases = cases();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for c in &cases {
        let leaf = match &c.peer {
            Peer::None => None,
            Peer::Cert(uris) => Some(
                mesh.pki
                    .client(&uris.iter().map(String::as_str).collect::<Vec<_>>())
                    .unwrap(),
            ),
            Peer::Front => Some(front_leaf.clone()),
        };
        let hash = leaf.as_ref().map(cert_hash).unwrap_or_default();
        let headers: Vec<(&str, String)> = c
            .headers
            .iter()
            .map(|(n, v)| (*n, v.replace("{hash}", &hash)))
            .collect();
        let envoy = mesh.envoy(c.at);
        let route = c.at.route(c.path);
        mesh.svc.clear();
        let before = counters(envoy);
        let tls = c.at.tls().then(|| tls.presenting(leaf.as_ref()));
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        // Headers go on the wire exactly as written (case, repeats, order).
        let response = raw::get(mesh.entry(c.at), tls.as_ref(), c.path, &headers)
            .await
            .map_err(|e| e.to_string());
        let after = counters(envoy);
        let seen = mesh.svc.requests();

        let mut problems = Vec::new();
        let status = match &response {
            Ok(r) => format!(
                "{}{}",
                r.status,
                error(r).map(|e| format!(" {e}")).unwrap_or_default()
            ),
            Err(e) => {
                problems.push(format!("request failed: {e}"));
                "—".into()
            }
        };
        // The response.
        if let Ok(r) = &response {
            match &c.expect {
                Expect::Forwarded(_) | Expect::Audited(_) => {
                    if r.status != 200 {
                        problems.push(format!("status {} ({}), want 200", r.status, r.text()));
                    }
                }
                Expect::Refused(error) => {
                    if r.status != 403 || self::error(r).as_deref() != Some(error) {
                        problems.push(format!("got {} {}, want 403 {error}", r.status, r.text()));
                    }
                    if r.header("x-mesh-rejected-by") != Some(FILTER) {
                        problems.push(format!(
                            "x-mesh-rejected-by is {:?}",
                            r.header("x-mesh-rejected-by")
                        ));
                    }
                }
            }
        }
        // What the upstream received.
        let upstream = match seen.as_slice() {
            [] => {
                if !matches!(c.expect, Expect::Refused(_)) {
                    problems.push("the upstream never got the request".into());
                }
                "nothing".to_string()
            }
            [one] => {
                let ids: Vec<&str> = one
                    .headers
                    .iter()
                    .filter(|(n, _)| n == "x-spiffe-id")
                    .map(|(_, v)| v.as_str())
                    .collect();
                let xfcc: Vec<&str> = one
                    .headers
                    .iter()
                    .filter(|(n, _)| n == XFCC)
                    .map(|(_, v)| v.as_str())
                    .collect();
                match &c.expect {
                    Expect::Forwarded(want) | Expect::Audited(want) => {
                        let want: Vec<&str> = want.iter().map(String::as_str).collect();
                        if ids != want {
                            problems.push(format!("upstream x-spiffe-id {ids:?}, want {want:?}"));
                        }
                    }
                    Expect::Refused(_) => problems.push("the upstream was contacted".into()),
                }
                for forged in &c.forged {
                    if let Some((n, v)) = one.headers.iter().find(|(_, v)| v.contains(forged)) {
                        problems.push(format!("forged {forged} reached the upstream in {n}: {v}"));
                    }
                }
                let ids = if ids.is_empty() {
                    "no x-spiffe-id".to_string()
                } else {
                    format!(
                        "x-spiffe-id: {}",
                        ids.iter().map(|i| short(i)).collect::<Vec<_>>().join(" + ")
                    )
                };
                let xfcc = match xfcc.as_slice() {
                    [] => String::new(),
                    values => {
                        let clean = c
                            .forged
                            .iter()
                            .all(|f| values.iter().all(|v| !v.contains(f)));
                        format!(
                            "; XFCC {} ({} element(s))",
                            if clean && !c.forged.is_empty() {
                                "without the forged ID"
                            } else {
                                "present"
                            },
                            values.iter().map(|v| v.split(',').count()).sum::<usize>()
                        )
                    }
                };
                format!("{ids}{xfcc}")
            }
            more => {
                problems.push(format!("the upstream got {} requests", more.len()));
                format!("{} requests", more.len())
            }
        };
        // The counters.
        let moved = moved(&before, &after);
        let want_moved: Vec<String> = c
            .expect
            .counter()
            .map(|name| format!("{name}{{route={route}}} +1"))
            .into_iter()
            .collect();
        if moved != want_moved {
            problems.push(format!("counters moved {moved:?}, want {want_moved:?}"));
        }

        let input = {
            let mut parts = Vec::new();
            match &c.peer {
                Peer::None => parts.push("no cert".to_string()),
                Peer::Cert(uris) if uris.is_empty() => parts.push("cert, no URI SAN".into()),
                Peer::Cert(uris) => parts.push(format!(
                    "cert URI SANs [{}]",
                    uris.iter()
                        .map(|u| format!("`{}`", short(u)))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Peer::Front => parts.push("the front's cert".into()),
            }
            for (n, v) in &c.headers {
                parts.push(format!("`{n}: {}`", short(v)));
            }
            if c.path.starts_with("/open/") {
                parts.push("route metadata `disabled: true`".into());
            }
            if c.path.starts_with("/off/") {
                parts.push(
                    "route `FilterConfig{disabled: true}` + `request_headers_to_remove`".into(),
                );
            }
            parts.join("; ")
        };
        let counter = if moved.is_empty() {
            "none".to_string()
        } else {
            moved.join(", ")
        };
        if !problems.is_empty() {
            failures.push(format!(
                "[{}] {}: {}",
                c.at.name(),
                c.name,
                problems.join("; ")
            ));
        }
        rows.push(Row {
            name: c.name,
            listener: c.at.name(),
            input,
            expected: c.expect.show(),
            status,
            upstream,
            counter,
        });
    }

    let mut table = format!(
        "`sa/<name>` stands for `{SA_PREFIX}<name>`; `sa/envoy` is the front Envoy's ID, the one \
         `back` trusts.\n\n\
         | case | listener | input | expected | observed status | what the upstream saw | counter |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for r in &rows {
        writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} |",
            cell(r.name),
            r.listener,
            cell(&r.input),
            cell(&r.expected),
            cell(&r.status),
            cell(&r.upstream),
            cell(&r.counter)
        )
        .unwrap();
    }
    eprintln!(
        "{table}\n{} cases in {:.1}s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}
