//! The spoofing matrix: every case, what it sends and what must happen (see `main.rs`).
//! Over 600 lines: it is one table of about 80 cases, kept whole so it reads (and is reviewed)
//! as one list, in the order of the outcome table it prints.

use super::{short, XFCC};
use mesh_integration::certs::ENVOY_ID;
use mesh_integration::fixture::sa;

/// Where a case is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
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
    pub fn name(self) -> &'static str {
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

    pub fn tls(self) -> bool {
        !matches!(self, At::Plain | At::PlainFwd | At::PlainXfcc)
    }

    /// The route the filter runs on (and labels its counters with) for `path`.
    pub fn route(self, path: &str) -> String {
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
pub enum Peer {
    None,
    /// A client certificate of the test CA with these URI SANs, byte for byte.
    Cert(Vec<String>),
    /// The front Envoy's own certificate (URI SAN `ENVOY_ID`): what the trusted front sends.
    Front,
}

/// What must happen.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
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
    pub fn counter(&self) -> Option<&'static str> {
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

    pub fn show(&self) -> String {
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

pub struct Case {
    pub name: &'static str,
    pub at: At,
    pub peer: Peer,
    pub path: &'static str,
    /// Sent as written (name case included); `{hash}` in a value becomes the SHA-256 of the
    /// presented certificate, as Envoy writes it in XFCC `Hash=`.
    pub headers: Vec<(&'static str, String)>,
    pub expect: Expect,
    /// Forged identities: none may appear in any header the upstream receives.
    pub forged: Vec<String>,
}

pub fn case(name: &'static str, at: At, peer: Peer, expect: Expect) -> Case {
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
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }
    pub fn path(mut self, path: &'static str) -> Case {
        self.path = path;
        self
    }
    pub fn forged(mut self, id: impl Into<String>) -> Case {
        self.forged.push(id.into());
        self
    }
}

pub fn cert(uris: &[&str]) -> Peer {
    Peer::Cert(uris.iter().map(|u| u.to_string()).collect())
}

pub fn refused(error: &'static str) -> Expect {
    Expect::Refused(error)
}

pub fn forwarded(id: &str) -> Expect {
    Expect::Forwarded(Some(id.to_string()))
}

/// The matrix.
pub fn cases() -> Vec<Case> {
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
