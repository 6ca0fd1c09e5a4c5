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

const FILTER: &str = "mesh.spiffe_identity";
const XFCC: &str = "x-forwarded-client-cert";
/// The counters of the filter, by their Prometheus names.
const COUNTERS: [&str; 5] = [
    "allowed",
    "denied",
    "unauthenticated",
    "audit_denied",
    "config_error",
];

/// Where a case is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum At {
    /// Plaintext, Envoy's default XFCC handling (a client's XFCC is dropped).
    Plain,
    /// Plaintext, `ALWAYS_FORWARD_ONLY`: a client's XFCC reaches the filter (peer_certificate).
    PlainFwd,
    /// Plaintext, `ALWAYS_FORWARD_ONLY`, `source: xfcc`.
    PlainXfcc,
    /// mTLS, `SANITIZE_SET` + `set_current_client_cert_details: {uri: true}` (the README's setup).
    Mtls,
    /// mTLS, `ALWAYS_FORWARD_ONLY`: the misconfiguration of the README's "known limit".
    MtlsFwd,
    /// As `Mtls`, the filter in audit mode.
    MtlsAudit,
    /// Client → front Envoy (mTLS, `SANITIZE_SET`, no filter) → back Envoy (`source: xfcc`).
    ViaFront,
    /// Straight to the back Envoy (mTLS required, `FORWARD_ONLY`, `source: xfcc`).
    Back,
}

impl At {
    fn name(self) -> &'static str {
        match self {
            At::Plain => "plain",
            At::PlainFwd => "plain-fwd",
            At::PlainXfcc => "plain-xfcc",
            At::Mtls => "mtls",
            At::MtlsFwd => "mtls-fwd",
            At::MtlsAudit => "mtls-audit",
            At::ViaFront => "via-front",
            At::Back => "back",
        }
    }

    fn tls(self) -> bool {
        !matches!(self, At::Plain | At::PlainFwd | At::PlainXfcc)
    }

    /// The route the filter runs on (and labels its counters with) for `path`.
    fn route(self, path: &str) -> String {
        let base = match self {
            At::ViaFront => "back",
            other => other.name(),
        };
        if path.starts_with("/open/") {
            format!("{base}-open")
        } else {
            base.to_string()
        }
    }
}

/// The certificate the client presents.
#[derive(Clone, Debug)]
enum Peer {
    None,
    /// A client certificate of the test CA with these URI SANs, byte for byte.
    Cert(Vec<String>),
    /// The front Envoy's own certificate (URI SAN `ENVOY_ID`): what the trusted front sends.
    Front,
}

/// What must happen.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// 200; the upstream got the request once, with exactly this one `x-spiffe-id` (`None`:
    /// without any).
    Forwarded(Option<String>),
    /// 403 from the filter with this `error`; the upstream never saw the request.
    Refused(&'static str),
    /// Audit mode: what enforce mode would refuse goes on (200), counted in `audit_denied`; the
    /// upstream saw exactly this one `x-spiffe-id` (`None`: without any).
    Audited(Option<String>),
}

impl Expect {
    /// The counter that must move by one, if any.
    fn counter(&self) -> Option<&'static str> {
        match self {
            Expect::Forwarded(Some(_)) => Some("allowed"),
            Expect::Forwarded(None) => None,
            Expect::Refused("unauthenticated") => Some("unauthenticated"),
            Expect::Refused("permission_denied") => Some("denied"),
            Expect::Refused("identity_unverifiable") => Some("config_error"),
            Expect::Refused(other) => panic!("no counter for error {other:?}"),
            Expect::Audited(_) => Some("audit_denied"),
        }
    }

    fn show(&self) -> String {
        match self {
            Expect::Forwarded(Some(id)) => format!("200, upstream x-spiffe-id = {}", short(id)),
            Expect::Forwarded(None) => "200, no x-spiffe-id upstream".into(),
            Expect::Refused(error) => format!("403 {error}"),
            Expect::Audited(Some(id)) => {
                format!("200 (audit), upstream x-spiffe-id = {}", short(id))
            }
            Expect::Audited(None) => "200 (audit), no x-spiffe-id upstream".into(),
        }
    }
}

struct Case {
    name: &'static str,
    at: At,
    peer: Peer,
    path: &'static str,
    /// Sent as written (name case included); `{hash}` in a value becomes the SHA-256 of the
    /// presented certificate, as Envoy writes it in XFCC `Hash=`.
    headers: Vec<(&'static str, String)>,
    expect: Expect,
    /// Forged identities: none may appear in any header the upstream receives.
    forged: Vec<String>,
}

fn case(name: &'static str, at: At, peer: Peer, expect: Expect) -> Case {
    Case {
        name,
        at,
        peer,
        path: "/x",
        headers: vec![],
        expect,
        forged: vec![],
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }
    fn path(mut self, path: &'static str) -> Case {
        self.path = path;
        self
    }
    fn forged(mut self, id: impl Into<String>) -> Case {
        self.forged.push(id.into());
        self
    }
}

fn cert(uris: &[&str]) -> Peer {
    Peer::Cert(uris.iter().map(|u| u.to_string()).collect())
}

fn refused(error: &'static str) -> Expect {
    Expect::Refused(error)
}

fn forwarded(id: &str) -> Expect {
    Expect::Forwarded(Some(id.to_string()))
}

/// The matrix.
fn cases() -> Vec<Case> {
    use At::*;
    let learner = sa("learner");
    let admin = sa("admin");
    let auth = sa("auth");
    let events = sa("events");
    let intruder = sa("intruder");
    let max = format!(
        "spiffe://mesh.local/{}",
        "a".repeat(2048 - "spiffe://mesh.local/".len())
    );
    let over = format!("{max}a");
    let learner_cert = || cert(&[&learner]);
    let unauth = || refused("unauthenticated");
    let forged_xfcc = format!("By={ENVOY_ID};Hash={{hash}};URI={admin}");
    let trusted_learner = format!("By={ENVOY_ID};URI={learner}");
    let intruder_admin = format!("By={intruder};URI={admin}");

    vec![
        // ---- plaintext ----
        case("no identity at all", Plain, Peer::None, unauth()),
        case("forged x-spiffe-id", Plain, Peer::None, unauth())
            .header("x-spiffe-id", &admin)
            .forged(&admin),
        case("forged X-Spiffe-Id (odd case)", Plain, Peer::None, unauth())
            .header("X-Spiffe-Id", &admin)
            .forged(&admin),
        case(
            "forged x-spiffe-id, two values",
            Plain,
            Peer::None,
            unauth(),
        )
        .header("x-spiffe-id", &admin)
        .header("X-SPIFFE-ID", &learner)
        .forged(&admin),
        case("forged XFCC", Plain, Peer::None, unauth())
            .header(XFCC, format!("By={ENVOY_ID};Hash=00;URI={admin}"))
            .forged(&admin),
        case(
            "forged x-spiffe-id, route with the filter disabled",
            Plain,
            Peer::None,
            Expect::Forwarded(None),
        )
        .path("/open/x")
        .header("x-spiffe-id", &admin)
        .forged(&admin),
        case(
            "forged XFCC reaching the filter",
            PlainFwd,
            Peer::None,
            unauth(),
        )
        .header(XFCC, format!("By={ENVOY_ID};Hash=00;URI={admin}"))
        .forged(&admin),
        case(
            "forged XFCC naming the trusted By=",
            PlainXfcc,
            Peer::None,
            unauth(),
        )
        .header(XFCC, format!("By={ENVOY_ID};URI={admin}"))
        .forged(&admin),
        case(
            "forged XFCC (odd case) and x-spiffe-id",
            PlainXfcc,
            Peer::None,
            unauth(),
        )
        .header(
            "X-Forwarded-Client-Cert",
            format!("By={ENVOY_ID};URI={admin}"),
        )
        .header("x-spiffe-id", &admin)
        .forged(&admin),
        // ---- mTLS: controls ----
        case(
            "control: valid allowed ID",
            Mtls,
            learner_cert(),
            forwarded(&learner),
        ),
        case(
            "control: valid ID the route denies",
            Mtls,
            cert(&[&auth]),
            refused("permission_denied"),
        ),
        case(
            "control: valid ID of exactly 2048 bytes",
            Mtls,
            cert(&[&max]),
            forwarded(&max),
        ),
        // ---- mTLS: forged headers ----
        case(
            "forged x-spiffe-id",
            Mtls,
            learner_cert(),
            forwarded(&learner),
        )
        .header("x-spiffe-id", &admin)
        .forged(&admin),
        case(
            "forged X-Spiffe-Id (odd case)",
            Mtls,
            learner_cert(),
            forwarded(&learner),
        )
        .header("X-Spiffe-Id", &admin)
        .forged(&admin),
        case(
            "forged x-spiffe-id, two values, mixed case",
            Mtls,
            learner_cert(),
            forwarded(&learner),
        )
        .header("x-spiffe-id", &admin)
        .header("X-SPIFFE-ID", &events)
        .forged(&admin)
        .forged(&events),
        case(
            "forged x-spiffe-id naming an allowed ID, denied certificate",
            Mtls,
            cert(&[&auth]),
            refused("permission_denied"),
        )
        .header("x-spiffe-id", &learner),
        case(
            "forged x-spiffe-id, no certificate",
            Mtls,
            Peer::None,
            unauth(),
        )
        .header("x-spiffe-id", &learner),
        case("forged XFCC, no certificate", Mtls, Peer::None, unauth())
            .header(XFCC, format!("By={ENVOY_ID};Hash=00;URI={learner}")),
        case(
            "forged XFCC with the certificate's own Hash",
            Mtls,
            learner_cert(),
            forwarded(&learner),
        )
        .header(XFCC, &forged_xfcc)
        .forged(&admin),
        case(
            "forged XFCC, repeated, odd case",
            Mtls,
            learner_cert(),
            forwarded(&learner),
        )
        .header("X-Forwarded-Client-Cert", &forged_xfcc)
        .header("x-forwarded-client-CERT", format!("URI={admin}"))
        .forged(&admin),
        case(
            "forged XFCC, multiple-element chain",
            Mtls,
            learner_cert(),
            forwarded(&learner),
        )
        .header(XFCC, format!("By={intruder};URI={admin},{forged_xfcc}"))
        .forged(&admin),
        case(
            "forged x-spiffe-id, route with the filter disabled",
            Mtls,
            learner_cert(),
            Expect::Forwarded(None),
        )
        .path("/open/x")
        .header("x-spiffe-id", &admin)
        .forged(&admin),
        case(
            "forged x-spiffe-id, filter skipped by Envoy, route strips it",
            Mtls,
            learner_cert(),
            Expect::Forwarded(None),
        )
        .path("/off/x")
        .header("X-Spiffe-Id", &admin)
        .forged(&admin),
        // ---- mTLS: certificate shapes ----
        case(
            "two URI SANs, both SPIFFE IDs",
            Mtls,
            cert(&[&learner, &events]),
            unauth(),
        ),
        case(
            "two URI SANs, SPIFFE then https",
            Mtls,
            cert(&[&learner, "https://mesh.local/ns/default/sa/admin"]),
            unauth(),
        ),
        case(
            "two URI SANs, https then SPIFFE",
            Mtls,
            cert(&["https://mesh.local/ns/default/sa/admin", &learner]),
            unauth(),
        ),
        case(
            "uppercase trust domain",
            Mtls,
            cert(&["spiffe://MESH.local/ns/default/sa/learner"]),
            unauth(),
        ),
        case(
            "uppercase scheme",
            Mtls,
            cert(&["SPIFFE://mesh.local/ns/default/sa/learner"]),
            unauth(),
        ),
        case(
            "percent-encoded trust domain",
            Mtls,
            cert(&["spiffe://mesh%2Elocal/ns/default/sa/learner"]),
            unauth(),
        ),
        case(
            "percent-encoded path",
            Mtls,
            cert(&["spiffe://mesh.local/ns/default/sa/%6Cearner"]),
            unauth(),
        ),
        case(
            "port",
            Mtls,
            cert(&["spiffe://mesh.local:8443/ns/default/sa/learner"]),
            unauth(),
        ),
        case(
            "'.' segment",
            Mtls,
            cert(&["spiffe://mesh.local/ns/default/sa/./learner"]),
            unauth(),
        ),
        case(
            "'..' segment",
            Mtls,
            cert(&["spiffe://mesh.local/ns/default/../default/sa/learner"]),
            unauth(),
        ),
        case(
            "empty segment",
            Mtls,
            cert(&["spiffe://mesh.local/ns//sa/learner"]),
            unauth(),
        ),
        case("2049-byte ID", Mtls, cert(&[&over]), unauth()),
        case(
            "query",
            Mtls,
            cert(&["spiffe://mesh.local/ns/default/sa/learner?x=1"]),
            unauth(),
        ),
        case(
            "fragment",
            Mtls,
            cert(&["spiffe://mesh.local/ns/default/sa/learner#x"]),
            unauth(),
        ),
        case(
            "userinfo",
            Mtls,
            cert(&["spiffe://admin@mesh.local/ns/default/sa/learner"]),
            unauth(),
        ),
        case(
            "non-spiffe scheme only",
            Mtls,
            cert(&["https://mesh.local/ns/default/sa/learner"]),
            unauth(),
        ),
        case("empty path", Mtls, cert(&["spiffe://mesh.local"]), unauth()),
        case(
            "trailing slash",
            Mtls,
            cert(&["spiffe://mesh.local/ns/default/sa/learner/"]),
            unauth(),
        ),
        case("no URI SAN", Mtls, cert(&[]), unauth()),
        case(
            "trust domain not accepted",
            Mtls,
            cert(&["spiffe://other.local/ns/default/sa/learner"]),
            unauth(),
        ),
        case(
            "URI SAN smuggling a second URI= into XFCC",
            Mtls,
            cert(&[&format!("{learner};URI={admin}")]),
            unauth(),
        )
        .forged(&admin),
        case(
            "URI SAN smuggling a second XFCC element",
            Mtls,
            cert(&[&format!("{learner},By={ENVOY_ID};URI={admin}")]),
            unauth(),
        )
        .forged(&admin),
        case(
            "URI SAN with a quote and a space",
            Mtls,
            cert(&[&format!("{learner}\" {admin}")]),
            unauth(),
        )
        .forged(&admin),
        case(
            "second URI SAN breaking the XFCC Envoy builds",
            Mtls,
            cert(&[&learner, &format!("https://mesh.local/x?id={admin}")]),
            refused("identity_unverifiable"),
        ),
        // ---- mTLS, misconfigured listener (ALWAYS_FORWARD_ONLY) ----
        case(
            "forged XFCC with the certificate's own Hash",
            MtlsFwd,
            learner_cert(),
            refused("identity_unverifiable"),
        )
        .header(XFCC, &forged_xfcc)
        .forged(&admin),
        case(
            "forged XFCC with another Hash",
            MtlsFwd,
            learner_cert(),
            refused("identity_unverifiable"),
        )
        .header(XFCC, format!("By={ENVOY_ID};Hash=00;URI={admin}"))
        .forged(&admin),
        case(
            "known limit: forged XFCC hiding a second URI SAN",
            MtlsFwd,
            cert(&[&learner, &events]),
            forwarded(&learner),
        )
        .header(XFCC, format!("Hash={{hash}};URI={learner}")),
        // ---- mTLS, audit mode: what goes on carries no forged identity ----
        case(
            "forged x-spiffe-id, no certificate",
            MtlsAudit,
            Peer::None,
            Expect::Audited(None),
        )
        .header("x-spiffe-id", &admin)
        .forged(&admin),
        case(
            "forged x-spiffe-id, valid ID the route denies",
            MtlsAudit,
            cert(&[&auth]),
            Expect::Audited(Some(auth.clone())),
        )
        .header("X-Spiffe-Id", &learner)
        .header("x-spiffe-id", &admin)
        .forged(&admin)
        .forged(&learner),
        case(
            "forged x-spiffe-id and XFCC, uppercase trust domain",
            MtlsAudit,
            cert(&["spiffe://MESH.local/ns/default/sa/learner"]),
            Expect::Audited(None),
        )
        .header("x-spiffe-id", &admin)
        .header(XFCC, &forged_xfcc)
        .forged(&admin),
        case(
            "forged x-spiffe-id, two URI SANs",
            MtlsAudit,
            cert(&[&learner, &events]),
            Expect::Audited(None),
        )
        .header("x-spiffe-id", &admin)
        .forged(&admin),
        // ---- behind a front proxy: through the front ----
        case(
            "control: valid allowed ID",
            ViaFront,
            learner_cert(),
            forwarded(&learner),
        ),
        case(
            "control: valid ID the route denies",
            ViaFront,
            cert(&[&auth]),
            refused("permission_denied"),
        ),
        case(
            "forged x-spiffe-id",
            ViaFront,
            learner_cert(),
            forwarded(&learner),
        )
        .header("X-Spiffe-Id", &admin)
        .forged(&admin),
        case("forged XFCC", ViaFront, learner_cert(), forwarded(&learner))
            .header(XFCC, format!("By={ENVOY_ID};URI={admin}"))
            .forged(&admin),
        case(
            "forged XFCC, repeated, odd case",
            ViaFront,
            learner_cert(),
            forwarded(&learner),
        )
        .header(
            "X-Forwarded-Client-Cert",
            format!("By={ENVOY_ID};URI={admin}"),
        )
        .header(XFCC, format!("By={ENVOY_ID};URI={admin}"))
        .forged(&admin),
        case(
            "forged XFCC, no certificate",
            ViaFront,
            Peer::None,
            unauth(),
        )
        .header(XFCC, &trusted_learner),
        case(
            "forged x-spiffe-id, no certificate",
            ViaFront,
            Peer::None,
            unauth(),
        )
        .header("x-spiffe-id", &learner),
        case(
            "two URI SANs",
            ViaFront,
            cert(&[&learner, &events]),
            unauth(),
        ),
        case(
            "uppercase trust domain",
            ViaFront,
            cert(&["spiffe://MESH.local/ns/default/sa/learner"]),
            unauth(),
        ),
        // ---- behind a front proxy: straight to the back ----
        case(
            "forged XFCC from a workload (peer is not the front)",
            Back,
            learner_cert(),
            unauth(),
        )
        .header(XFCC, format!("By={ENVOY_ID};URI={admin}"))
        .forged(&admin),
        case(
            "forged XFCC and x-spiffe-id from a workload",
            Back,
            learner_cert(),
            unauth(),
        )
        .header(XFCC, format!("By={ENVOY_ID};URI={admin}"))
        .header("x-spiffe-id", &admin)
        .forged(&admin),
        case("untrusted By=", Back, Peer::Front, unauth())
            .header(XFCC, &intruder_admin)
            .forged(&admin),
        case(
            "By= of a mesh workload, not the front",
            Back,
            Peer::Front,
            unauth(),
        )
        .header(XFCC, format!("By={auth};URI={admin}"))
        .forged(&admin),
        case(
            "By= repeated: trusted and untrusted",
            Back,
            Peer::Front,
            unauth(),
        )
        .header(XFCC, format!("By={ENVOY_ID};By={intruder};URI={admin}"))
        .forged(&admin),
        case(
            "By= with uppercase trust domain",
            Back,
            Peer::Front,
            unauth(),
        )
        .header(
            XFCC,
            format!("By=spiffe://MESH.local/ns/default/sa/envoy;URI={admin}"),
        )
        .forged(&admin),
        case(
            "chain: trusted element, then untrusted last",
            Back,
            Peer::Front,
            unauth(),
        )
        .header(XFCC, format!("{trusted_learner},{intruder_admin}"))
        .forged(&admin),
        case(
            "chain: untrusted element, then trusted last",
            Back,
            Peer::Front,
            forwarded(&learner),
        )
        .header(XFCC, format!("{intruder_admin},{trusted_learner}")),
        case(
            "repeated XFCC: trusted, then untrusted",
            Back,
            Peer::Front,
            unauth(),
        )
        .header(XFCC, &trusted_learner)
        .header(XFCC, &intruder_admin)
        .forged(&admin),
        case(
            "repeated XFCC: untrusted, then trusted",
            Back,
            Peer::Front,
            forwarded(&learner),
        )
        .header(XFCC, &intruder_admin)
        .header(XFCC, &trusted_learner),
        case(
            "repeated XFCC, odd case: trusted, then untrusted",
            Back,
            Peer::Front,
            unauth(),
        )
        .header("X-Forwarded-Client-Cert", &trusted_learner)
        .header("x-FORWARDED-client-cert", &intruder_admin)
        .forged(&admin),
        case(
            "odd-case keys adding a second URI",
            Back,
            Peer::Front,
            unauth(),
        )
        .header(XFCC, format!("By={ENVOY_ID};URI={learner};uri={admin}"))
        .forged(&admin),
        case(
            "odd-case keys adding a second By",
            Back,
            Peer::Front,
            unauth(),
        )
        .header(XFCC, format!("by={ENVOY_ID};URI={admin};BY={intruder}"))
        .forged(&admin),
        case("invalid ID in URI=", Back, Peer::Front, unauth())
            .header(
                XFCC,
                format!("By={ENVOY_ID};URI=spiffe://mesh.local/ns/default/sa/../sa/admin"),
            )
            .forged("sa/admin"),
        case("malformed XFCC", Back, Peer::Front, unauth())
            .header(XFCC, format!("By={ENVOY_ID};URI=\"{admin}"))
            .forged(&admin),
        case("no XFCC", Back, Peer::Front, unauth())
            .header("x-spiffe-id", &admin)
            .forged(&admin),
        case(
            "trusted XFCC (odd-case name) and a forged x-spiffe-id",
            Back,
            Peer::Front,
            forwarded(&learner),
        )
        .header("X-Forwarded-Client-Cert", &trusted_learner)
        .header("x-spiffe-id", &admin)
        .forged(&admin),
    ]
}

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
fn short(s: &str) -> String {
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
