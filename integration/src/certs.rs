//! Test PKI: a throw-away certificate authority that issues X.509 leaf certificates
//! (SPIFFE X509-SVIDs and server certificates) for the mTLS end-to-end tests.
//!
//! Keys are ECDSA P-256, certificates are signed with ECDSA-SHA256 (rcgen on ring) and
//! valid from one hour ago for [`VALIDITY`].
//!
//! URI SANs are written byte for byte as given, without any parsing or normalisation, so
//! tests can also make certificates with IDs that a SPIFFE validator must reject
//! (uppercase trust domain, port, `..` segments, percent-encoding, other schemes,
//! over-long IDs, several URI SANs or none). A SAN must be ASCII: X.509 stores it as an
//! IA5String.
//!
//! Envoy reads its TLS material from files: see [`Ca::write`] and [`write_pem_files`].

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

use crate::bootstrap::TlsFiles;
use crate::client::tls::Tls;
use crate::client::Result;
use crate::tempdir;

/// How long issued certificates stay valid (counted from now).
pub const VALIDITY: time::Duration = time::Duration::days(2);

/// Back-dating of `notBefore`, so that small clock differences do not matter.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// A certificate authority: a self-signed CA certificate and its signing key.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// What to put in a leaf certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeafSpec {
    /// Subject common name.
    pub common_name: String,
    /// URI SANs, in order, written exactly as given (e.g. SPIFFE IDs).
    pub uris: Vec<String>,
    /// DNS SANs, in order.
    pub dns: Vec<String>,
    /// Extended key usage `serverAuth`.
    pub server: bool,
    /// Extended key usage `clientAuth`.
    pub client: bool,
}

impl LeafSpec {
    /// A client certificate (EKU `clientAuth`) with the given URI SANs, e.g. an X509-SVID.
    pub fn client(common_name: &str, uris: &[&str]) -> LeafSpec {
        LeafSpec {
            common_name: common_name.to_owned(),
            uris: uris.iter().map(|u| (*u).to_owned()).collect(),
            client: true,
            ..LeafSpec::default()
        }
    }

    /// A server certificate (EKU `serverAuth`) with the given DNS SANs.
    pub fn server(common_name: &str, dns: &[&str]) -> LeafSpec {
        LeafSpec {
            common_name: common_name.to_owned(),
            dns: dns.iter().map(|d| (*d).to_owned()).collect(),
            server: true,
            ..LeafSpec::default()
        }
    }
}

/// An issued leaf certificate and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The certificate, PEM (`CERTIFICATE`).
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8 `PRIVATE KEY`).
    pub key_pem: String,
}

impl Ca {
    /// A new self-signed CA (basic constraints `CA:TRUE`, key usages `keyCertSign`,
    /// `cRLSign`, `digitalSignature`) with a fresh key.
    pub fn new(common_name: &str) -> Result<Ca> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params)?;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// Issues a leaf certificate (basic constraints `CA:FALSE`, key usage
    /// `digitalSignature`, the extended key usages asked for, none when neither) with a
    /// fresh key. Fails when a SAN is not ASCII.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Leaf> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(&spec.common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        for uri in &spec.uris {
            params.subject_alt_names.push(SanType::URI(ia5(uri)?));
        }
        for dns in &spec.dns {
            params.subject_alt_names.push(SanType::DnsName(ia5(dns)?));
        }
        set_validity(&mut params)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes the CA certificate to `dir/ca.crt` and returns that path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("ca.crt");
        write_file(&path, &self.cert_pem, false)?;
        Ok(path)
    }
}

/// Writes `dir/<name>.crt` and `dir/<name>.key` (the key readable by the owner only) and
/// returns their paths in that order.
pub fn write_pem_files(dir: &Path, name: &str, leaf: &Leaf) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    write_file(&cert, &leaf.cert_pem, false)?;
    write_file(&key, &leaf.key_pem, true)?;
    Ok((cert, key))
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn ia5(san: &str) -> Result<Ia5String> {
    Ia5String::try_from(san)
        .map_err(|e| format!("SAN {san:?} is not ASCII, X.509 cannot hold it: {e}").into())
}

fn set_validity(params: &mut CertificateParams) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    params.not_before = now
        .checked_sub(BACKDATE)
        .ok_or("certificate validity start out of range")?;
    params.not_after = now
        .checked_add(VALIDITY)
        .ok_or("certificate validity end out of range")?;
    Ok(())
}

fn write_file(path: &Path, contents: &str, private: bool) -> Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    // `mode` only applies when the file is created; tighten an existing one too.
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// The TLS server name of Envoy in the mTLS tests.
pub const SERVER_NAME: &str = "envoy.mesh.local";
/// Envoy's own SPIFFE ID in the mTLS tests.
pub const ENVOY_ID: &str = "spiffe://mesh.local/ns/default/sa/envoy";

/// A CA, Envoy's certificate (server and client), and a way to issue client SVIDs.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Ca,
    /// Envoy's files: the CA, its certificate (server for [`SERVER_NAME`], client for [`ENVOY_ID`]) and key.
    pub envoy: TlsFiles,
    _files: tempdir::Dir,
}

impl Pki {
    /// A fresh PKI in a temporary directory named after `tag` (removed on drop).
    pub fn new(tag: &str) -> Result<Pki> {
        let files = tempdir::Dir::new(&format!("pki-{tag}"))?;
        let dir = files.path().to_path_buf();
        let ca = Ca::new("mesh.local test CA")?;
        let ca_file = ca.write(&dir)?;
        let leaf = ca.issue(&LeafSpec {
            common_name: "envoy".into(),
            uris: vec![ENVOY_ID.into()],
            dns: vec![SERVER_NAME.into()],
            server: true,
            client: true,
        })?;
        let (cert, key) = write_pem_files(&dir, "envoy", &leaf)?;
        Ok(Pki {
            dir,
            ca,
            envoy: TlsFiles {
                ca: ca_file,
                cert,
                key,
            },
            _files: files,
        })
    }

    /// A client certificate with these URI SANs, byte for byte.
    pub fn client(&self, uris: &[&str]) -> Result<Leaf> {
        self.ca.issue(&LeafSpec::client("client", uris))
    }

    /// [`Pki::client`] written to `<name>.crt` and `<name>.key` in the PKI's directory, with
    /// the CA: what an Envoy that originates mTLS as that client presents
    /// ([`crate::bootstrap::with_upstream_tls`]).
    pub fn client_files(&self, name: &str, uris: &[&str]) -> Result<TlsFiles> {
        let (cert, key) = write_pem_files(&self.dir, name, &self.client(uris)?)?;
        Ok(TlsFiles {
            ca: self.envoy.ca.clone(),
            cert,
            key,
        })
    }

    /// Envoy's own certificate and key, as a client presents them (what a trusted front
    /// Envoy sends).
    pub fn envoy_leaf(&self) -> Result<Leaf> {
        Leaf::read(&self.envoy.cert, &self.envoy.key)
    }

    /// A TLS client that trusts this CA for [`SERVER_NAME`] and presents no certificate.
    pub fn tls(&self) -> Tls {
        Tls::new(SERVER_NAME, &self.ca.cert_pem())
    }
}

impl Leaf {
    /// A certificate and its key from PEM files.
    pub fn read(cert: &Path, key: &Path) -> Result<Leaf> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        Ok(Leaf {
            cert_pem: read(cert)?,
            key_pem: read(key)?,
        })
    }
}
