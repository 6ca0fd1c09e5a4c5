//! Exercises the test PKI and the TLS clients directly, without Envoy: against a
//! rustls server started here that requires a client certificate from the test CA.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use mesh_integration::certs::{self, Ca, Leaf, LeafSpec};
use mesh_integration::client::tls::Tls;
use mesh_integration::client::Proto;
use mesh_integration::fixture::sa;
use mesh_integration::server::{self, Server};
use mesh_integration::tempdir;
use mesh_integration::upstream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tonic::Code;
use x509_parser::extensions::GeneralName;

const SERVER_NAME: &str = "envoy.mesh.local";
const ECHO: &str = "/mesh.demo.Demo/Echo";

/// What the test server does with a TLS connection once the handshake is done.
#[derive(Clone, Copy)]
enum Backend {
    /// Answer every request with JSON describing the connection (see [`describe`]).
    Describe,
    /// Relay the decrypted bytes to this plain-TCP address.
    Forward(SocketAddr),
}

async fn tls_server(ca: &Ca, backend: Backend) -> Server {
    let leaf = ca
        .issue(&LeafSpec::server("envoy", &[SERVER_NAME]))
        .unwrap();
    tls_server_with(&ca.cert_pem(), &leaf, backend).await
}

/// Like [`tls_server`], with the given CA (for client certificates) and server identity.
/// A TLS server on 127.0.0.1 requiring a client certificate issued by `ca_pem`, with this
/// server identity; stops on drop.
async fn tls_server_with(ca_pem: &str, leaf: &Leaf, backend: Backend) -> Server {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let (chain, key) = mesh_integration::client::tls::identity(leaf).unwrap();
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    // The skeleton's accept loop; each connection's TLS handshake, then `backend`.
    Server::tcp("127.0.0.1:0".parse().unwrap(), move |stream, _stop| {
        serve(acceptor.clone(), stream, backend)
    })
    .await
    .unwrap()
}

async fn serve(acceptor: TlsAcceptor, stream: TcpStream, backend: Backend) {
    // A refused client certificate ends here, with an alert sent to the client.
    let Ok(mut stream) = acceptor.accept(stream).await else {
        return;
    };
    match backend {
        Backend::Describe => {
            let info = describe(stream.get_ref().1);
            server::serve_connection(stream, move |request: Request<Incoming>| {
                let mut info = info.clone();
                info["version"] = json!(format!("{:?}", request.version()));
                info["path"] = json!(request.uri().path());
                let response = Response::new(Full::new(Bytes::from(info.to_string())));
                async move { server::ok(response) }
            })
            .await;
        }
        Backend::Forward(to) => {
            let Ok(mut upstream) = TcpStream::connect(to).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
        }
    }
}

/// `{"peer_cert": bool, "peer_uris": [..], "alpn": ..}` of a server connection.
fn describe(conn: &rustls::ServerConnection) -> Value {
    let peer = conn.peer_certificates().and_then(|certs| certs.first());
    let uris = peer.map(|der| uri_sans(der)).unwrap_or_default();
    json!({
        "peer_cert": peer.is_some(),
        "peer_uris": uris,
        "alpn": conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
    })
}

/// The URI SANs of a DER certificate, in order.
fn uri_sans(der: &[u8]) -> Vec<String> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    assert!(rest.is_empty());
    let Some(san) = cert.subject_alternative_name().unwrap() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some((*uri).to_owned()),
            _ => None,
        })
        .collect()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

fn svid(ca: &Ca, name: &str) -> Leaf {
    ca.issue(&LeafSpec::client(name, &[&sa(name)])).unwrap()
}

/// The SAN cases the identity filter's tests need: every invalid form, and valid ones.
fn san_cases() -> Vec<(&'static str, Vec<String>)> {
    let long = format!("spiffe://mesh.local/{}", "a".repeat(2049 - 20));
    assert_eq!(long.len(), 2049);
    vec![
        ("valid", vec!["spiffe://mesh.local/ns/default/sa/x".into()]),
        (
            "uppercase-trust-domain",
            vec!["spiffe://Mesh.Local/ns/default/sa/x".into()],
        ),
        ("port", vec!["spiffe://mesh.local:8443/x".into()]),
        ("dot-dot", vec!["spiffe://mesh.local/ns/../sa/x".into()]),
        ("dot", vec!["spiffe://mesh.local/ns/./x".into()]),
        ("percent", vec!["spiffe://mesh.local/ns/%61uth".into()]),
        ("not-spiffe", vec!["https://example.com/x".into()]),
        ("userinfo", vec!["spiffe://user@mesh.local/x".into()]),
        ("query", vec!["spiffe://mesh.local/x?y=1#z".into()]),
        ("trailing-slash", vec!["spiffe://mesh.local/ns/".into()]),
        (
            "empty-path-segment",
            vec!["spiffe://mesh.local/ns//x".into()],
        ),
        ("no-path", vec!["spiffe://mesh.local".into()]),
        ("too-long", vec![long]),
        (
            "two-uris",
            vec![
                "spiffe://mesh.local/ns/default/sa/a".into(),
                "spiffe://mesh.local/ns/default/sa/b".into(),
            ],
        ),
        ("none", vec![]),
    ]
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "openssl {args:?}: {text}");
    text
}

#[tokio::test]
async fn http1_and_http2_over_mtls() {
    let ca = Ca::new("mesh.local test CA").unwrap();
    let server = tls_server(&ca, Backend::Describe).await;
    let auth = svid(&ca, "auth");
    let ca_pem = ca.cert_pem();

    for (proto, version, alpn) in [
        (Proto::Http1, "HTTP/1.1", "http/1.1"),
        (Proto::H2c, "HTTP/2.0", "h2"),
    ] {
        let resp = Tls::new(SERVER_NAME, &ca_pem)
            .presenting(Some(&auth))
            .request(
                server.addr(),
                proto,
                "POST",
                "/who?x=1",
                &[("x-test", "1")],
                Some(b"body".to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{proto:?}");
        let info = resp.json();
        assert_eq!(info["version"], version, "{info}");
        assert_eq!(info["alpn"], alpn, "{info}");
        assert_eq!(info["path"], "/who", "{info}");
        assert_eq!(info["peer_cert"], true, "{info}");
        assert_eq!(
            info["peer_uris"],
            json!(["spiffe://mesh.local/ns/default/sa/auth"]),
            "{info}"
        );
    }

    let resp = Tls::new(SERVER_NAME, &ca_pem)
        .presenting(Some(&auth))
        .get(server.addr(), "/", &[])
        .await
        .unwrap();
    assert_eq!(resp.json()["version"], "HTTP/1.1");
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let ca = Ca::new("mesh.local test CA").unwrap();
    let server = tls_server(&ca, Backend::Describe).await;
    for proto in [Proto::Http1, Proto::H2c] {
        let err = Tls::new(SERVER_NAME, &ca.cert_pem())
            .request(server.addr(), proto, "GET", "/", &[], None)
            .await
            .unwrap_err();
        // TLS 1.3: the server's alert arrives once the client reads.
        let text = format!("{err:?}");
        assert!(text.contains("CertificateRequired"), "{proto:?}: {text}");
    }
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let ca = Ca::new("mesh.local test CA").unwrap();
    let other = Ca::new("other CA").unwrap();
    let server = tls_server(&ca, Backend::Describe).await;
    let stranger = svid(&other, "auth");
    let result = Tls::new(SERVER_NAME, &ca.cert_pem())
        .presenting(Some(&stranger))
        .get(server.addr(), "/", &[])
        .await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn server_is_verified_by_ca_and_name() {
    let ca = Ca::new("mesh.local test CA").unwrap();
    let other = Ca::new("other CA").unwrap();
    let server = tls_server(&ca, Backend::Describe).await;
    let auth = svid(&ca, "auth");

    let err = Tls::new("other.mesh.local", &ca.cert_pem())
        .presenting(Some(&auth))
        .get(server.addr(), "/", &[])
        .await
        .unwrap_err();
    assert!(format!("{err}").contains("not valid for name"), "{err}");

    let err = Tls::new(SERVER_NAME, &other.cert_pem())
        .presenting(Some(&auth))
        .get(server.addr(), "/", &[])
        .await
        .unwrap_err();
    assert!(format!("{err}").contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn grpc_unary_over_mtls() {
    let ca = Ca::new("mesh.local test CA").unwrap();
    let up = upstream::spawn("grpc", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let server = tls_server(&ca, Backend::Forward(up.addr())).await;
    let auth = svid(&ca, "auth");
    let ca_pem = ca.cert_pem();

    let reply = Tls::new(SERVER_NAME, &ca_pem)
        .presenting(Some(&auth))
        .grpc_unary(
            server.addr(),
            ECHO,
            &[("x-custom", "v"), ("trace-bin", "\u{1}raw")],
            Bytes::from_static(b"\x0a\x05hello"),
        )
        .await
        .unwrap();
    assert_eq!(&reply.message[..], b"\x0a\x05hello");
    assert_eq!(reply.header("x-demo-service"), Some("grpc"));
    assert_eq!(reply.header("grpc-status"), Some("0"));
    let records = up.requests();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].path, ECHO);
    assert_eq!(records[0].header("x-custom"), Some("v"));

    let status = Tls::new(SERVER_NAME, &ca_pem)
        .presenting(Some(&auth))
        .grpc_unary(
            server.addr(),
            ECHO,
            &[("x-demo-grpc-status", "7")],
            Bytes::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let (result, elapsed) = Tls::new(SERVER_NAME, &ca_pem)
        .grpc_unary_timed(server.addr(), ECHO, &[], Bytes::new())
        .await;
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("CertificateRequired"),
        "{status:?}"
    );
    assert!(
        elapsed < mesh_integration::client::grpc::TIMEOUT,
        "{elapsed:?}"
    );
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn every_san_case_is_issued_verbatim_and_usable() {
    let ca = Ca::new("mesh.local test CA").unwrap();
    let server = tls_server(&ca, Backend::Describe).await;
    let ca_pem = ca.cert_pem();
    let dir = tempdir::Dir::new("tls-selftest").unwrap();
    let ca_file = ca.write(dir.path()).unwrap();
    assert_eq!(ca_file, dir.path().join("ca.crt"));

    for (name, uris) in san_cases() {
        let spec = LeafSpec {
            common_name: name.to_owned(),
            uris: uris.clone(),
            dns: Vec::new(),
            server: false,
            client: true,
        };
        let leaf = ca.issue(&spec).unwrap();

        // Parsed back: exactly the URIs given, clientAuth only, not a CA.
        let der = der(&leaf.cert_pem);
        assert_eq!(uri_sans(&der), uris, "{name}");
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth, "{name}");
        assert!(
            !cert.basic_constraints().unwrap().unwrap().value.ca,
            "{name}"
        );

        // OpenSSL agrees: chains to the CA for client use, same SANs.
        let (crt, key) = certs::write_pem_files(dir.path(), name, &leaf).unwrap();
        assert_eq!(crt, dir.path().join(format!("{name}.crt")));
        assert_eq!(key, dir.path().join(format!("{name}.key")));
        let ca_arg = ca_file.to_str().unwrap();
        let crt_arg = crt.to_str().unwrap();
        openssl(&[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            ca_arg,
            crt_arg,
        ]);
        let text = openssl(&["x509", "-noout", "-ext", "subjectAltName", "-in", crt_arg]);
        let shown: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.contains("Subject Alternative Name"))
            .skip(1)
            .flat_map(|l| l.split(", "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let expected: Vec<String> = uris.iter().map(|u| format!("URI:{u}")).collect();
        assert_eq!(shown, expected, "{name}: {text}");
        openssl(&["pkey", "-noout", "-in", key.to_str().unwrap()]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }

        // And a TLS server sees the same URIs on the connection.
        let resp = Tls::new(SERVER_NAME, &ca_pem)
            .presenting(Some(&leaf))
            .get(server.addr(), "/", &[])
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(resp.json()["peer_uris"], json!(uris), "{name}");
    }
}

#[test]
fn leaf_spec_helpers_and_eku() {
    let ca = Ca::new("mesh.local test CA").unwrap();
    let both = ca
        .issue(&LeafSpec {
            common_name: "envoy".into(),
            uris: vec!["spiffe://mesh.local/ns/default/sa/envoy".into()],
            dns: vec![SERVER_NAME.into(), "localhost".into()],
            server: true,
            client: true,
        })
        .unwrap();
    let der = der(&both.cert_pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let san = cert.subject_alternative_name().unwrap().unwrap().value;
    let dns: Vec<&str> = san
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        })
        .collect();
    assert_eq!(dns, [SERVER_NAME, "localhost"]);

    assert_eq!(
        LeafSpec::server("envoy", &[SERVER_NAME]),
        LeafSpec {
            common_name: "envoy".into(),
            uris: vec![],
            dns: vec![SERVER_NAME.into()],
            server: true,
            client: false,
        }
    );
    let err = ca
        .issue(&LeafSpec::client("x", &["spiffe://mesh.local/ns/é"]))
        .unwrap_err();
    assert!(err.to_string().contains("not ASCII"), "{err}");
}

/// `scripts/demo-certs.sh` makes certificates that rustls (webpki) accepts both ways.
#[tokio::test]
async fn demo_certs_script_makes_working_mtls_certificates() {
    let dir = tempdir::Dir::new("demo-certs").unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo-certs.sh");
    let run = |args: &[&str]| {
        let out = Command::new("bash")
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let out_dir = dir.path().join("certs");
    let out_arg = out_dir.to_str().unwrap();
    let made = run(&[out_arg]);
    assert_eq!(made.lines().count(), 12, "{made}");
    assert!(run(&[out_arg]).contains("nothing to do"));
    assert_eq!(run(&["--force", out_arg]).lines().count(), 12);

    let read = |name: &str| {
        let file = |ext: &str| out_dir.join(format!("{name}.{ext}"));
        Leaf::read(&file("crt"), &file("key")).unwrap()
    };
    let ca_pem = std::fs::read_to_string(out_dir.join("ca.crt")).unwrap();
    let envoy = read("envoy");
    let server = tls_server_with(&ca_pem, &envoy, Backend::Describe).await;
    for name in ["auth", "learner", "events", "admin", "envoy"] {
        let leaf = read(name);
        for server_name in [SERVER_NAME, "localhost", "127.0.0.1"] {
            let resp = Tls::new(server_name, &ca_pem)
                .presenting(Some(&leaf))
                .get(server.addr(), "/", &[])
                .await
                .unwrap_or_else(|e| panic!("{name} to {server_name}: {e}"));
            assert_eq!(resp.json()["peer_uris"], json!([sa(name)]), "{name}");
        }
    }
}
