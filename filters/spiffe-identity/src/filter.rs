//! The SPIFFE identity stage: the adapter-facing table of contents of the filter.
//!
//! 1. Remove the incoming `forward_header` (`x-spiffe-id`): only this filter sets it. Also on a
//!    route whose metadata switches the filter off ([`Stage::on_disabled_route`]).
//! 2. Find the caller's URI SANs ([`peer_uris`] or [`xfcc_uris`], by `source`).
//! 3. Authenticate: exactly one URI SAN, a valid SPIFFE ID ([`crate::id`]), of an accepted trust
//!    domain. Otherwise 403 / Stat::Unauthenticated.
//! 4. Authorize: a `deny` match refuses, else an `allow` match admits, else refused: 403 /
//!    PERMISSION_DENIED. In audit mode a refusal is logged and counted and the request goes on.
//! 5. Forward the verified ID upstream in `forward_header`, and hand it to later stages
//!    ([`Exchange::verified_identity`]).
//!
//! Fails closed: when it cannot decide (invalid route metadata, a property it cannot read, an
//! XFCC it cannot trust) it refuses and counts `config_error`.

use crate::config::{Config, Mode, Source};
use crate::id::{self, escape_for_log, SpiffeId};
use crate::pattern::first_match;
use crate::xfcc;
use mesh_kit::hash::FxHashMap;
use mesh_kit::host::{Host, Property};
use mesh_kit::reply::{GrpcCode, Reply};
use mesh_kit::stage::{Cx, Exchange, Flow, OnInvalid, Stage};
use std::cell::RefCell;

pub const XFCC: &str = "x-forwarded-client-cert";

mesh_kit::stats! {
    /// The identity stage's stats, per route.
    pub enum Stat {
        Allowed = counter("allowed"),
        Denied = counter("denied"),
        Unauthenticated = counter("unauthenticated"),
        AuditDenied = counter("audit_denied"),
        ConfigError = counter("config_error"),
    }
}

pub struct SpiffeIdentity {
    /// The plugin's `forward_header`, removed on routes where the filter is switched off.
    forward_header: String,
}

/// Why a caller is refused.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    /// No usable identity: the caller is not authenticated.
    Unauthenticated(String),
    /// A valid identity that the route does not allow.
    Denied { id: String, rule: String },
    /// The filter cannot decide (misconfiguration, unreadable property): fail closed.
    CannotDecide(String),
}

impl Stage for SpiffeIdentity {
    const NAME: &'static str = "mesh.spiffe_identity";
    type Stat = Stat;

    type Config = Config;
    type Request = ();

    fn describe(c: &Config) -> String {
        let allow: Vec<String> = c.allow.iter().map(ToString::to_string).collect();
        let mut s = if allow.is_empty() {
            "nobody".to_string()
        } else {
            allow.join(" ")
        };
        if !c.deny.is_empty() {
            let deny: Vec<String> = c.deny.iter().map(ToString::to_string).collect();
            s.push_str(&format!(" except {}", deny.join(" ")));
        }
        if c.mode == Mode::Audit {
            s.push_str(" (audit)");
        }
        s
    }

    fn new(config: &Config, _host: &dyn Host) -> Self {
        SpiffeIdentity {
            forward_header: config.forward_header.clone(),
        }
    }

    /// Where the filter is switched off no identity is verified, so none may reach the
    /// upstream either: a client's `forward_header` is removed there too.
    fn on_disabled_route(&self, ex: &mut Exchange) {
        ex.remove_header(&self.forward_header);
    }

    fn on_invalid_route_config(&self) -> OnInvalid {
        OnInvalid::Reject(refusal_reply(&Refusal::CannotDecide(
            "invalid route configuration".into(),
        )))
    }

    fn on_request_headers(&self, cx: &mut Cx<'_, Self>) -> Flow {
        let forward = cx.config.forward_header.clone();
        cx.ex.remove_header(&forward);
        match decide(cx) {
            Ok(id) => {
                cx.inc(Stat::Allowed);
                cx.ex.set_header(&forward, id.as_str());
                cx.ex.verified_identity = Some(id.as_str().to_string());
                Flow::Continue
            }
            Err(refusal) => {
                let route = cx.ex.route().to_string();
                let what = describe(&refusal);
                if cx.config.mode == Mode::Audit {
                    cx.inc(Stat::AuditDenied);
                    log::info!(
                        "{}: audit: would refuse on route {route:?}: {what}",
                        Self::NAME
                    );
                    if let Refusal::Denied { id, .. } = &refusal {
                        // Authenticated, only not authorized: the identity is still verified.
                        cx.ex.set_header(&forward, id);
                        cx.ex.verified_identity = Some(id.clone());
                    }
                    return Flow::Continue;
                }
                cx.inc(match refusal {
                    Refusal::Unauthenticated(_) => Stat::Unauthenticated,
                    Refusal::Denied { .. } => Stat::Denied,
                    Refusal::CannotDecide(_) => Stat::ConfigError,
                });
                log::info!("{}: refused on route {route:?}: {what}", Self::NAME);
                Flow::Reject(refusal_reply(&refusal))
            }
        }
    }
}

/// Authenticate, then authorize.
fn decide(cx: &mut Cx<'_, SpiffeIdentity>) -> Result<SpiffeId, Refusal> {
    let id = match cx.config.source {
        Source::PeerCertificate => peer_identity(cx)?,
        Source::Xfcc => identity_of(&xfcc_uris(cx)?)?,
    };
    check_trust_domain(cx.config, &id)?;
    authorize(cx.config, &id)?;
    Ok(id)
}

/// Exactly one URI SAN, a valid SPIFFE ID, of an accepted trust domain.
pub fn authenticate(config: &Config, uris: &[String]) -> Result<SpiffeId, Refusal> {
    let id = identity_of(uris)?;
    check_trust_domain(config, &id)?;
    Ok(id)
}

/// Exactly one URI SAN, a valid SPIFFE ID: what a certificate says, whatever the route's rules.
pub fn identity_of(uris: &[String]) -> Result<SpiffeId, Refusal> {
    let uri = match uris {
        [] => return Err(Refusal::Unauthenticated("no URI SAN".into())),
        [one] => one,
        more => {
            return Err(Refusal::Unauthenticated(format!(
                "{} URI SANs; an SVID has exactly one",
                more.len()
            )))
        }
    };
    id::parse(uri).map_err(|e| {
        Refusal::Unauthenticated(format!(
            "{} is not a valid SPIFFE ID: {e}",
            escape_for_log(uri, 128)
        ))
    })
}

/// The ID's trust domain is one the configuration accepts (any, when it names none).
pub fn check_trust_domain(config: &Config, id: &SpiffeId) -> Result<(), Refusal> {
    if !config.trust_domains.is_empty()
        && !config
            .trust_domains
            .iter()
            .any(|td| td == id.trust_domain())
    {
        return Err(Refusal::Unauthenticated(format!(
            "trust domain of {} is not accepted",
            id.as_str()
        )));
    }
    Ok(())
}

/// Deny wins; then the first allow pattern; nothing allowed by default.
pub fn authorize(config: &Config, id: &SpiffeId) -> Result<(), Refusal> {
    if let Some(rule) = first_match(&config.deny, id) {
        return Err(Refusal::Denied {
            id: id.as_str().to_string(),
            rule: format!("deny {}", rule.as_str()),
        });
    }
    if first_match(&config.allow, id).is_some() {
        return Ok(());
    }
    Err(Refusal::Denied {
        id: id.as_str().to_string(),
        rule: "no allow rule matched".into(),
    })
}

/// The identity of this connection's TLS peer: its URI SANs read from the
/// `x-forwarded-client-cert` Envoy builds for this connection (`forward_client_cert_details:
/// SANITIZE_SET`, `set_current_client_cert_details: {uri: true}`; Envoy's
/// `connection.uri_san_peer_certificate` shows only the first one, see
/// [`peer_certificate_uris`]), then [`identity_of`] them.
///
/// Remembered per connection on this worker ([`PEERS`]): the peer certificate's properties are
/// read once per connection, and the header's verdict is reused while the header is the same
/// text (Envoy builds the same one for every request of a connection). The verdict is a pure
/// function of the certificate and the header, so reusing it changes nothing but the cost.
fn peer_identity(cx: &Cx<'_, SpiffeIdentity>) -> Result<SpiffeId, Refusal> {
    let xfcc = cx.ex.header(XFCC);
    let Some(connection) = cx.ex.int(Property::ConnectionId) else {
        return identity_of(&peer_certificate_uris(&read_peer(cx), xfcc)?);
    };
    PEERS.with(|peers| {
        let mut peers = peers.borrow_mut();
        if let Some(memo) = peers.get(&connection) {
            if memo.xfcc.as_deref() == xfcc {
                return memo.verdict.clone();
            }
        }
        let peer = match peers.remove(&connection) {
            Some(memo) => memo.peer,
            None => read_peer(cx),
        };
        let verdict = peer_certificate_uris(&peer, xfcc).and_then(|uris| identity_of(&uris));
        if peers.len() >= MAX_PEERS {
            peers.clear();
        }
        peers.insert(
            connection,
            PeerMemo {
                peer,
                xfcc: xfcc.map(str::to_string),
                verdict: verdict.clone(),
            },
        );
        verdict
    })
}

fn read_peer(cx: &Cx<'_, SpiffeIdentity>) -> PeerCertificate {
    if cx.ex.flag(Property::Mtls) {
        PeerCertificate {
            mtls: true,
            digest: cx.ex.text(Property::PeerDigest),
            first_uri: cx.ex.text(Property::PeerUriSan).unwrap_or_default(),
        }
    } else {
        PeerCertificate::default()
    }
}

/// Connections remembered per worker; past this the memo starts over.
const MAX_PEERS: usize = 4096;

/// A connection's TLS peer, and the verdict on the last `x-forwarded-client-cert` seen on it.
struct PeerMemo {
    peer: PeerCertificate,
    xfcc: Option<String>,
    verdict: Result<SpiffeId, Refusal>,
}

thread_local! {
    /// Per worker (a wasm VM, or a native worker thread): connection id → [`PeerMemo`]. A
    /// connection is served by one worker; Envoy's connection ids are unique in the process.
    static PEERS: RefCell<FxHashMap<u64, PeerMemo>> = RefCell::new(FxHashMap::default());
}

/// What Envoy reports about this connection's TLS peer.
#[derive(Debug, Default)]
pub struct PeerCertificate {
    /// `connection.mtls`: the client presented a certificate Envoy verified.
    pub mtls: bool,
    /// `connection.sha256_peer_certificate_digest`, hex.
    pub digest: Option<String>,
    /// `connection.uri_san_peer_certificate`: the certificate's first URI SAN only (empty when
    /// it has none).
    pub first_uri: String,
}

/// Every URI SAN of the peer certificate: the element of the Envoy-built `xfcc` whose `Hash` is
/// the certificate's digest, whose first URI must be the one Envoy reports.
///
/// A certificate whose first URI SAN is not a valid SPIFFE ID is refused as unauthenticated
/// before the header is read: it names no workload whatever its other SANs, and Envoy writes
/// URI SANs into the header unquoted, so such a SAN (`?a=b`, `;URI=…`, `,By=…`, a quote or a
/// space) would otherwise break or reshape the header and be taken for a listener problem
/// (`identity_unverifiable`, counted as `config_error`) instead of a caller without a valid ID.
pub fn peer_certificate_uris(
    peer: &PeerCertificate,
    xfcc: Option<&str>,
) -> Result<Vec<String>, Refusal> {
    if !peer.mtls {
        return Err(Refusal::Unauthenticated("no client certificate".into()));
    }
    if !peer.first_uri.is_empty() {
        if let Err(e) = id::parse(&peer.first_uri) {
            return Err(Refusal::Unauthenticated(format!(
                "{} is not a valid SPIFFE ID: {e}",
                escape_for_log(&peer.first_uri, 128)
            )));
        }
    }
    let digest = peer.digest.as_deref().ok_or_else(|| {
        Refusal::CannotDecide("the peer certificate digest is not readable".into())
    })?;
    let header = xfcc.ok_or_else(|| {
        Refusal::CannotDecide(
            "no x-forwarded-client-cert: set forward_client_cert_details: SANITIZE_SET and set_current_client_cert_details: {uri: true} on this listener".into(),
        )
    })?;
    let elements = xfcc::parse(header)
        .map_err(|e| Refusal::CannotDecide(format!("x-forwarded-client-cert: {e}")))?;
    let element = elements
        .iter()
        .find(|e| e.hash().is_some_and(|h| h.eq_ignore_ascii_case(digest)))
        .ok_or_else(|| Refusal::CannotDecide("x-forwarded-client-cert does not describe this connection's peer certificate (is it SANITIZE_SET?)".into()))?;
    // Envoy writes an empty `URI=` for a certificate without URI SANs.
    let uris: Vec<String> = element
        .uris()
        .into_iter()
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if uris.first().map(String::as_str).unwrap_or_default() != peer.first_uri {
        return Err(Refusal::CannotDecide(
            "x-forwarded-client-cert and the peer certificate disagree".into(),
        ));
    }
    Ok(uris)
}

/// The URI SANs of the original client, from the XFCC element added by the trusted Envoy in
/// front (the last element). That Envoy must be this connection's mTLS peer and be named in
/// `xfcc_trusted_by`, and its element's `By` too: a header from anyone else is not believed.
fn xfcc_uris(cx: &Cx<'_, SpiffeIdentity>) -> Result<Vec<String>, Refusal> {
    let trusted = &cx.config.xfcc_trusted_by;
    let mtls = cx.ex.flag(Property::Mtls);
    let peer = cx.ex.text(Property::PeerUriSan).unwrap_or_default();
    if !mtls || !trusted.contains(&peer) {
        return Err(Refusal::Unauthenticated(format!(
            "x-forwarded-client-cert is trusted only from {}; the peer is {}",
            trusted.join(", "),
            if mtls {
                escape_for_log(&peer, 128)
            } else {
                "not authenticated".into()
            }
        )));
    }
    let header = cx
        .ex
        .header(XFCC)
        .ok_or_else(|| Refusal::Unauthenticated("no x-forwarded-client-cert".into()))?;
    let elements = xfcc::parse(header)
        .map_err(|e| Refusal::Unauthenticated(format!("malformed x-forwarded-client-cert: {e}")))?;
    let last = elements
        .last()
        .ok_or_else(|| Refusal::Unauthenticated("empty x-forwarded-client-cert".into()))?;
    let by = last.by();
    if by.len() != 1 || !trusted.iter().any(|t| by.first() == Some(&t.as_str())) {
        return Err(Refusal::Unauthenticated(format!(
            "x-forwarded-client-cert By={} is not trusted",
            by.iter()
                .map(|b| escape_for_log(b, 128))
                .collect::<Vec<_>>()
                .join(",")
        )));
    }
    Ok(last
        .uris()
        .into_iter()
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect())
}

fn describe(r: &Refusal) -> String {
    match r {
        Refusal::Unauthenticated(why) => format!("unauthenticated: {why}"),
        Refusal::Denied { id, rule } => format!("{id} denied by rule: {rule}"),
        Refusal::CannotDecide(why) => format!("cannot decide, failing closed: {why}"),
    }
}

fn refusal_reply(r: &Refusal) -> Reply {
    match r {
        Refusal::Unauthenticated(_) => Reply::new(
            403,
            GrpcCode::Unauthenticated,
            "unauthenticated",
            "no valid SPIFFE identity",
        )
        .with_error_info(),
        Refusal::Denied { .. } => Reply::new(
            403,
            GrpcCode::PermissionDenied,
            "permission_denied",
            "this workload is not allowed on this route",
        )
        .with_error_info(),
        Refusal::CannotDecide(_) => Reply::new(
            403,
            GrpcCode::PermissionDenied,
            "identity_unverifiable",
            "the caller's identity could not be verified",
        )
        .with_error_info(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const LEARNER: &str = "spiffe://mesh.local/ns/default/sa/learner";
    const ADMIN: &str = "spiffe://mesh.local/ns/default/sa/admin";

    fn peer(first_uri: &str) -> PeerCertificate {
        PeerCertificate {
            mtls: true,
            digest: Some("abcd".into()),
            first_uri: first_uri.into(),
        }
    }

    /// The header Envoy builds with SANITIZE_SET and `{uri: true}`: URI SANs written unquoted.
    fn envoy_xfcc(uris: &[&str]) -> String {
        let mut h = "By=spiffe://mesh.local/ns/default/sa/envoy;Hash=abcd".to_string();
        for u in uris {
            h.push_str(";URI=");
            h.push_str(u);
        }
        h
    }

    fn unauthenticated(r: Result<Vec<String>, Refusal>) -> String {
        match r {
            Err(Refusal::Unauthenticated(why)) => why,
            other => panic!("want unauthenticated, got {other:?}"),
        }
    }

    #[test]
    fn every_uri_san_of_the_peer_certificate_is_read_from_the_envoy_built_header() {
        let header = envoy_xfcc(&[LEARNER, ADMIN]);
        assert_eq!(
            peer_certificate_uris(&peer(LEARNER), Some(&header)),
            Ok(vec![LEARNER.to_string(), ADMIN.to_string()])
        );
        assert_eq!(
            peer_certificate_uris(&peer(""), Some(&envoy_xfcc(&[""]))),
            Ok(vec![])
        );
    }

    #[test]
    fn a_first_uri_san_that_breaks_the_header_is_an_invalid_id_not_a_listener_problem() {
        for san in [
            format!("{LEARNER}?x=1"),
            format!("{LEARNER};URI={ADMIN}"),
            format!("{LEARNER},By=spiffe://mesh.local/ns/default/sa/envoy;URI={ADMIN}"),
            format!("{LEARNER}\" {ADMIN}"),
        ] {
            let why = unauthenticated(peer_certificate_uris(
                &peer(&san),
                Some(&envoy_xfcc(&[&san])),
            ));
            assert!(why.contains("is not a valid SPIFFE ID"), "{san}: {why}");
        }
    }

    #[test]
    fn a_forged_or_foreign_header_still_cannot_decide_when_the_certificate_is_valid() {
        // An element with the certificate's own hash naming another first URI.
        let forged = format!("Hash=abcd;URI={ADMIN}");
        assert!(matches!(
            peer_certificate_uris(&peer(LEARNER), Some(&forged)),
            Err(Refusal::CannotDecide(_))
        ));
        // No element for this certificate; no header; no digest.
        let other = format!("Hash=00;URI={LEARNER}");
        assert!(matches!(
            peer_certificate_uris(&peer(LEARNER), Some(&other)),
            Err(Refusal::CannotDecide(_))
        ));
        assert!(matches!(
            peer_certificate_uris(&peer(LEARNER), None),
            Err(Refusal::CannotDecide(_))
        ));
        let no_digest = PeerCertificate {
            digest: None,
            ..peer(LEARNER)
        };
        assert!(matches!(
            peer_certificate_uris(&no_digest, Some(&envoy_xfcc(&[LEARNER]))),
            Err(Refusal::CannotDecide(_))
        ));
    }

    fn config(json: &str) -> Config {
        mesh_kit::config::from_value(&mesh_kit::config::parse_json(json.as_bytes()).unwrap())
            .unwrap()
    }

    #[test]
    fn a_forged_forward_header_is_removed_on_a_route_where_the_filter_is_off() {
        for (json, header) in [
            ("{}", "x-spiffe-id"),
            (r#"{"forward_header": "x-client-id"}"#, "x-client-id"),
        ] {
            let host = std::rc::Rc::new(mesh_kit::testing::TestHost::with_headers(&[
                (":path", "/x"),
                (header, ADMIN),
                (header, LEARNER),
            ]));
            let mut ex = Exchange::new(host.clone());
            ex.load_request();
            let stage = SpiffeIdentity::new(&config(json), &*host);
            stage.on_disabled_route(&mut ex);
            assert_eq!(
                *host.header_writes.borrow(),
                [(header.to_string(), None)],
                "{json}"
            );
            assert!(!ex.has_header(header));
        }
    }

    #[test]
    fn without_a_client_certificate_the_header_is_never_read() {
        let plain = PeerCertificate::default();
        let why = unauthenticated(peer_certificate_uris(&plain, Some(&envoy_xfcc(&[LEARNER]))));
        assert_eq!(why, "no client certificate");
    }
}
