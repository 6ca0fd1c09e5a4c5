//! The SPIFFE identity filter end to end: a real Envoy with an mTLS listener loading
//! `mesh_spiffe_identity.wasm`, certificates made by the test (a CA for `mesh.local` and workload
//! SVIDs, valid and deliberately broken), real HTTP/1.1, HTTP/2 and gRPC clients over mTLS.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use bytes::Bytes;
use mesh_integration::bootstrap::{
    bootstrap, cluster, filter, listener, route, with_metadata, with_mtls, with_upstream_tls,
};
use mesh_integration::certs::{Leaf, Pki, ENVOY_ID, SERVER_NAME};
use mesh_integration::client::{self, Proto};
use mesh_integration::envoy::Envoy;
use mesh_integration::fixture::{self, sa, Mesh};
use mesh_integration::upstream;
use serde_json::{json, Value};
use std::net::SocketAddr;

const FILTER: &str = "mesh.spiffe_identity";

/// The demo mesh's rules, one route per service, all to cluster `svc`.
fn mesh_routes() -> Vec<Value> {
    vec![
        with_metadata(
            route("auth", "/auth/", "svc"),
            FILTER,
            json!({"allow": [sa("learner"), sa("events")]}),
        ),
        with_metadata(
            route("learner", "/learner/", "svc"),
            FILTER,
            json!({"allow": ["spiffe://mesh.local/ns/*/sa/auth"]}),
        ),
        with_metadata(
            route("events", "/events/", "svc"),
            FILTER,
            json!({"allow": ["spiffe://mesh.local/**"]}),
        ),
        with_metadata(
            route("auth-grpc", "/mesh.demo.Auth/", "svc"),
            FILTER,
            json!({"allow": [sa("learner"), sa("events")]}),
        ),
    ]
}

/// An mTLS listener `mtls` (client certificate optional, so the filter sees callers without one)
/// and a plaintext listener `plain`, both with the filter.
fn start_mesh(tag: &str, config: Value, routes: Vec<Value>, svc: SocketAddr) -> Mesh {
    Mesh::builder(tag)
        .filter(filter(FILTER, &config))
        .routes(routes)
        .cluster(cluster("svc", svc, true))
        .with_plaintext()
        .start()
        .unwrap()
}

async fn get(
    mesh: &Mesh,
    who: Option<&Leaf>,
    path: &str,
    headers: &[(&str, &str)],
) -> client::Response {
    mesh.get(who, path, headers).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_mesh_rules_admit_every_allowed_pair_and_refuse_every_other() {
    let svc = upstream::local("mesh").await.unwrap();
    let mesh = start_mesh("matrix", json!({}), mesh_routes(), svc.addr());
    let callers = [
        ("auth", mesh.client(&[&sa("auth")]).unwrap()),
        ("learner", mesh.client(&[&sa("learner")]).unwrap()),
        ("events", mesh.client(&[&sa("events")]).unwrap()),
    ];
    let allowed = |caller: &str, route: &str| match route {
        "auth" => caller == "learner" || caller == "events",
        "learner" => caller == "auth",
        _ => true,
    };
    for route in ["auth", "learner", "events"] {
        for (caller, leaf) in &callers {
            svc.clear();
            let proto = if route == "learner" {
                Proto::H2c
            } else {
                Proto::Http1
            };
            let r = mesh
                .tls(Some(leaf))
                .request(mesh.addr(), proto, "GET", &format!("/{route}/x"), &[], None)
                .await
                .unwrap();
            if allowed(caller, route) {
                assert_eq!(r.status, 200, "{caller} → {route}: {}", r.text());
                assert_eq!(
                    svc.requests()[0].header("x-spiffe-id"),
                    Some(sa(caller).as_str()),
                    "{caller} → {route}"
                );
            } else {
                assert_eq!(r.status, 403, "{caller} → {route}");
                assert_eq!(r.header("x-mesh-rejected-by"), Some(FILTER));
                assert_eq!(r.json()["error"], "permission_denied");
                assert_eq!(svc.count(), 0, "{caller} → {route} reached the upstream");
            }
        }
    }
    // Over gRPC: allowed passes, others get PERMISSION_DENIED.
    let ok = mesh
        .tls(Some(&callers[1].1))
        .grpc_unary(
            mesh.addr(),
            "/mesh.demo.Auth/Check",
            &[],
            Bytes::from_static(b"hi"),
        )
        .await
        .unwrap();
    assert_eq!(ok.message, Bytes::from_static(b"hi"));
    let denied = mesh
        .tls(Some(&callers[0].1))
        .grpc_unary(mesh.addr(), "/mesh.demo.Auth/Check", &[], Bytes::new())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_eq!(denied.metadata().get("x-mesh-rejected-by").unwrap(), FILTER);
    for route in ["auth", "auth-grpc"] {
        mesh.envoy
            .wait_for_value("mesh_spiffe_identity_denied", &[("route", route)], 1.0)
            .await
            .unwrap();
    }
    assert!(mesh.envoy.log().contains(&format!(
        "refused on route \"learner\": {} denied by rule: no allow rule matched",
        sa("learner")
    )));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_x_spiffe_id_never_reaches_an_upstream() {
    let svc = upstream::local("mesh").await.unwrap();
    let mesh = start_mesh("forged", json!({}), mesh_routes(), svc.addr());
    let forged = [("x-spiffe-id", "spiffe://mesh.local/ns/default/sa/admin")];
    let learner = mesh.client(&[&sa("learner")]).unwrap();
    let r = get(&mesh, Some(&learner), "/auth/x", &forged).await;
    assert_eq!(r.status, 200);
    let seen: Vec<String> = svc.requests()[0]
        .headers
        .iter()
        .filter(|(k, _)| k == "x-spiffe-id")
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(
        seen,
        vec![sa("learner")],
        "replaced by the verified ID, not added to"
    );

    svc.clear();
    let r = client::get(mesh.envoy.listener("plain"), "/events/x", &forged)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("unauthenticated"))
    );
    assert_eq!(svc.count(), 0);
    // Nor with a forged XFCC on the plaintext listener.
    let xfcc = [("x-forwarded-client-cert", "By=spiffe://mesh.local/ns/default/sa/envoy;Hash=00;URI=spiffe://mesh.local/ns/default/sa/learner")];
    assert_eq!(
        client::get(mesh.envoy.listener("plain"), "/events/x", &xfcc)
            .await
            .unwrap()
            .status,
        403
    );
    assert_eq!(svc.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_identities_are_refused_as_unauthenticated() {
    let svc = upstream::local("mesh").await.unwrap();
    let mesh = start_mesh("broken", json!({}), mesh_routes(), svc.addr());
    let long = format!(
        "spiffe://mesh.local/{}",
        "a".repeat(2049 - "spiffe://mesh.local/".len())
    );
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("two URI SANs", vec![sa("learner"), sa("events")]),
        (
            "uppercase trust domain",
            vec!["spiffe://Mesh.Local/ns/default/sa/learner".into()],
        ),
        (
            "a port",
            vec!["spiffe://mesh.local:8443/ns/default/sa/learner".into()],
        ),
        (
            "a dot-dot segment",
            vec!["spiffe://mesh.local/ns/../sa/learner".into()],
        ),
        (
            "percent-encoding",
            vec!["spiffe://mesh.local/ns/default/sa/%6cearner".into()],
        ),
        (
            "a non-spiffe URI",
            vec!["https://mesh.local/ns/default/sa/learner".into()],
        ),
        ("no URI SAN", vec![]),
        ("a 2049-byte ID", vec![long]),
    ];
    for (what, uris) in &cases {
        let leaf = mesh
            .client(&uris.iter().map(String::as_str).collect::<Vec<_>>())
            .unwrap();
        let r = get(&mesh, Some(&leaf), "/events/x", &[]).await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (403, Some("unauthenticated")),
            "{what}: {}",
            r.text()
        );
    }
    let r = get(&mesh, None, "/events/x", &[]).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("unauthenticated")),
        "no client certificate"
    );
    assert_eq!(svc.count(), 0);
    mesh.envoy
        .wait_for_value(
            "mesh_spiffe_identity_unauthenticated",
            &[("route", "events")],
            cases.len() as f64 + 1.0,
        )
        .await
        .unwrap();
    let log = mesh.envoy.log();
    for reason in [
        "2 URI SANs",
        "uppercase",
        "port is not allowed",
        "'..' segment",
        "percent-encoding",
        "scheme is not spiffe",
        "no URI SAN",
        "longer than 2048",
        "no client certificate",
    ] {
        assert!(log.contains(reason), "no refusal logged for {reason:?}");
    }
    // Invalid input is logged escaped and truncated, never raw.
    assert!(
        !mesh.envoy.log().contains(&"a".repeat(300)),
        "a 2049-byte ID was logged whole"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_front_envoy_the_back_authorizes_the_original_client_and_only_trusted_xfcc() {
    let pki = Pki::new("xfcc").unwrap();
    let svc = upstream::local("learner").await.unwrap();
    let back_config =
        json!({"source": "xfcc", "xfcc_trusted_by": [ENVOY_ID], "allow": [sa("learner")]});
    let back_listener = with_mtls(
        listener(
            "back",
            vec![route("learner", "/", "svc")],
            vec![filter(FILTER, &back_config)],
        ),
        &pki.envoy,
        true,
        "FORWARD_ONLY",
    );
    let back = Envoy::start(&bootstrap(
        vec![back_listener],
        vec![cluster("svc", svc.addr(), true)],
    ))
    .unwrap();
    // The front terminates the client's mTLS, builds XFCC (SANITIZE_SET) and calls the back with
    // its own SVID. It runs no identity filter itself.
    let front_listener = with_mtls(
        listener("front", vec![route("learner", "/", "back")], vec![]),
        &pki.envoy,
        true,
        "SANITIZE_SET",
    );
    let back_cluster = with_upstream_tls(
        cluster("back", back.listener("back"), true),
        &pki.envoy,
        SERVER_NAME,
    );
    let front = Envoy::start(&bootstrap(vec![front_listener], vec![back_cluster])).unwrap();

    let learner = pki.client(&[&sa("learner")]).unwrap();
    let r = pki
        .tls()
        .presenting(Some(&learner))
        .get(front.listener("front"), "/x", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        svc.requests()[0].header("x-spiffe-id"),
        Some(sa("learner").as_str())
    );

    let auth = pki.client(&[&sa("auth")]).unwrap();
    let r = pki
        .tls()
        .presenting(Some(&auth))
        .get(front.listener("front"), "/x", &[])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("permission_denied"))
    );

    // A workload calling the back directly with a forged XFCC naming the trusted front: refused,
    // its connection's peer is not the front.
    let forged = [("x-forwarded-client-cert", "By=spiffe://mesh.local/ns/default/sa/envoy;Hash=00;URI=spiffe://mesh.local/ns/default/sa/learner")];
    let r = pki
        .tls()
        .presenting(Some(&auth))
        .get(back.listener("back"), "/x", &forged)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("unauthenticated"))
    );
    // And an XFCC whose By= is not a trusted Envoy: refused even from the trusted peer's certificate.
    let untrusted = [("x-forwarded-client-cert", "By=spiffe://mesh.local/ns/default/sa/intruder;URI=spiffe://mesh.local/ns/default/sa/learner")];
    let envoy_leaf = pki.envoy_leaf().unwrap();
    let r = pki
        .tls()
        .presenting(Some(&envoy_leaf))
        .get(back.listener("back"), "/x", &untrusted)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("unauthenticated"))
    );
    assert_eq!(svc.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_mode_lets_a_disallowed_request_through_logs_it_and_counts_it() {
    let svc = upstream::local("auth").await.unwrap();
    let mesh = start_mesh("audit", json!({"mode": "audit"}), mesh_routes(), svc.addr());
    let auth = mesh.client(&[&sa("auth")]).unwrap();
    let r = get(&mesh, Some(&auth), "/auth/x", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        svc.requests()[0].header("x-spiffe-id"),
        Some(sa("auth").as_str()),
        "the verified ID is still forwarded"
    );
    mesh.envoy
        .wait_for_value(
            "mesh_spiffe_identity_audit_denied",
            &[("route", "auth")],
            1.0,
        )
        .await
        .unwrap();
    assert!(mesh
        .envoy
        .log()
        .contains("audit: would refuse on route \"auth\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_route_metadata_fails_closed_and_is_counted() {
    let svc = upstream::local("auth").await.unwrap();
    let routes = vec![with_metadata(
        route("broken", "/", "svc"),
        FILTER,
        json!({"allow": ["spiffe://mesh.local/ns/**/x"]}),
    )];
    let mesh = start_mesh(
        "closed",
        json!({"allow": ["spiffe://mesh.local/**"]}),
        routes,
        svc.addr(),
    );
    let learner = mesh.client(&[&sa("learner")]).unwrap();
    let r = get(&mesh, Some(&learner), "/x", &[]).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("identity_unverifiable"))
    );
    assert_eq!(svc.count(), 0);
    mesh.envoy
        .wait_for_value(
            "mesh_spiffe_identity_config_error",
            &[("route", "broken")],
            1.0,
        )
        .await
        .unwrap();
}

#[test]
fn invalid_identity_configs_are_refused_and_the_log_names_the_field() {
    for (config, field) in [
        (json!({"allow": ["spiffe://mesh.local/a/**/b"]}), "allow"),
        (json!({"trust_domains": ["Mesh.Local"]}), "trust_domains[0]"),
        (json!({"source": "xfcc"}), "xfcc_trusted_by"),
    ] {
        let line = fixture::refusal(FILTER, &config).unwrap();
        assert!(line.contains(&format!("field `{field}`")), "{line}");
    }
}
