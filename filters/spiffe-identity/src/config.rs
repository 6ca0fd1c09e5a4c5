//! The SPIFFE identity filter's configuration (plugin JSON, and per route in
//! `mesh.spiffe_identity` route metadata, where `allow` / `deny` replace the plugin's lists).

use crate::pattern::Pattern;
use mesh_kit::config::{ConfigError, Validate};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Where the caller's identity comes from.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The TLS peer of this Envoy (all its URI SANs, from the XFCC Envoy builds itself).
    #[default]
    PeerCertificate,
    /// The `x-forwarded-client-cert` element added by a trusted Envoy in front.
    Xfcc,
}

/// What happens to a caller the rules refuse.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuse it (403, or gRPC PERMISSION_DENIED).
    #[default]
    Enforce,
    /// Log and count what would be refused (`audit_denied`) and let it through.
    Audit,
}

/// The SPIFFE identity filter's configuration.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(
        rename = "SpiffeIdentityConfig",
        extend(
            "if" = {"properties": {"source": {"const": "xfcc"}}, "required": ["source"]},
            "then" = {"properties": {"xfcc_trusted_by": {"minItems": 1}}, "required": ["xfcc_trusted_by"]}
        )
    )
)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// SPIFFE ID patterns allowed on this route; empty: nobody.
    #[serde(default, deserialize_with = "patterns")]
    pub allow: Vec<Pattern>,
    /// SPIFFE ID patterns refused even when allowed; deny wins.
    #[serde(default, deserialize_with = "patterns")]
    pub deny: Vec<Pattern>,
    /// Trust domains accepted at all; empty: any.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(inner(regex(pattern = crate::pattern::schema::TRUST_DOMAIN_PATTERN)))
    )]
    pub trust_domains: Vec<String>,
    /// Where the caller's identity comes from.
    #[serde(default)]
    pub source: Source,
    /// With `source: "xfcc"` (then required, not empty): the SPIFFE IDs of the Envoys whose XFCC
    /// is believed.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(inner(
            regex(pattern = crate::pattern::schema::SPIFFE_ID_PATTERN),
            length(max = crate::id::MAX_ID_LEN)
        ))
    )]
    pub xfcc_trusted_by: Vec<String>,
    /// Set upstream to the verified ID; always removed from the incoming request first. A
    /// lowercase header name of `[a-z0-9-_]`, not `x-forwarded-client-cert`.
    #[serde(default = "default_forward_header")]
    #[cfg_attr(
        feature = "schema",
        schemars(
            regex(pattern = r"^[a-z0-9_-]+$"),
            extend("not" = {"const": "x-forwarded-client-cert"})
        )
    )]
    pub forward_header: String,
    /// `enforce` refuses; `audit` logs and counts what would be refused and lets it through.
    #[serde(default)]
    pub mode: Mode,
}

fn default_forward_header() -> String {
    "x-spiffe-id".into()
}

fn patterns<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<Pattern>, D::Error> {
    Vec::<String>::deserialize(de)?
        .iter()
        .map(|p| Pattern::parse(p).map_err(serde::de::Error::custom))
        .collect()
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        for (i, td) in self.trust_domains.iter().enumerate() {
            // A trust domain is valid when `spiffe://<td>/x` is a valid ID whose trust domain is
            // all of it (`td/x` would otherwise pass as trust domain `td` with a longer path).
            let why = match crate::id::parse(&format!("spiffe://{td}/x")) {
                Err(e) => Some(e.to_string()),
                Ok(id) if id.trust_domain() != td => {
                    Some("a trust domain has no path: write only the name, e.g. example.org".into())
                }
                Ok(_) => None,
            };
            if let Some(why) = why {
                return Err(ConfigError::new(
                    format!("trust_domains[{i}]"),
                    Some(&Value::String(td.clone())),
                    format!("not a trust domain: {why}"),
                ));
            }
        }
        for (i, by) in self.xfcc_trusted_by.iter().enumerate() {
            if let Err(e) = crate::id::parse(by) {
                return Err(ConfigError::new(
                    format!("xfcc_trusted_by[{i}]"),
                    Some(&Value::String(by.clone())),
                    format!("not a SPIFFE ID: {e}"),
                ));
            }
        }
        if self.source == Source::Xfcc && self.xfcc_trusted_by.is_empty() {
            return Err(ConfigError::new(
                "xfcc_trusted_by",
                None,
                "source \"xfcc\" needs the SPIFFE IDs of the Envoys whose XFCC is trusted",
            ));
        }
        let h = &self.forward_header;
        let valid = !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid || h == "x-forwarded-client-cert" {
            return Err(ConfigError::new(
                "forward_header",
                Some(&Value::String(h.clone())),
                "must be a lowercase header name of [a-z0-9-_], not x-forwarded-client-cert",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_kit::config::{from_value, parse_json};

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        from_value(&parse_json(s.as_bytes())?)
    }

    #[test]
    fn an_empty_config_allows_nobody_and_reads_the_peer_certificate() {
        let c = parse("{}").unwrap();
        assert!(c.allow.is_empty() && c.deny.is_empty() && c.trust_domains.is_empty());
        assert_eq!(
            (c.source, c.mode, c.forward_header.as_str()),
            (Source::PeerCertificate, Mode::Enforce, "x-spiffe-id")
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (json, field) in [
            (r#"{"allow": ["spiffe://mesh.local/ns/**/x"]}"#, "allow[0]"),
            (r#"{"deny": ["https://mesh.local/x"]}"#, "deny[0]"),
            (r#"{"trust_domains": ["Mesh.Local"]}"#, "trust_domains[0]"),
            (
                r#"{"trust_domains": ["mesh.local", "td/x"]}"#,
                "trust_domains[1]",
            ),
            (r#"{"source": "xfcc"}"#, "xfcc_trusted_by"),
            (
                r#"{"source": "xfcc", "xfcc_trusted_by": ["spiffe://mesh.local"]}"#,
                "xfcc_trusted_by[0]",
            ),
            (r#"{"forward_header": "X Spiffe"}"#, "forward_header"),
            (r#"{"mode": "log"}"#, "mode"),
            (r#"{"allowed": []}"#, "allowed"),
        ] {
            let e = parse(json).unwrap_err();
            assert!(
                e.field == field || e.field.starts_with(field.trim_end_matches("[0]")),
                "{json}: {e}"
            );
        }
    }
}
