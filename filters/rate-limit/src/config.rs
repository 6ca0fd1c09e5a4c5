//! The rate limit's configuration (plugin JSON, and per route in `mesh.rate_limit` route
//! metadata). Defaults as documented in README.md.

use crate::bucket::{Limit, MAX_BURST, MAX_RATE, MICRO};
use crate::table::MAX_SLOTS;
use mesh_kit::config::{ConfigError, Validate};
use mesh_spiffe_identity::id::SpiffeId;
use mesh_spiffe_identity::pattern::Pattern;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use std::fmt;

/// What one table of buckets covers: the kit's [`Scope`] (`route`, the default, or `cluster`).
pub use mesh_kit::shared::Scope;

/// Headers a client could set to name someone else: never a key (use `"identity"`).
const FORGEABLE: [&str; 2] = ["x-spiffe-id", "x-forwarded-client-cert"];

/// Which client a request counts against.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Key {
    /// The caller's verified SPIFFE ID: the identity stage's, else the mTLS peer certificate's
    /// first URI SAN when it is a valid SPIFFE ID. Never a request header.
    #[default]
    Identity,
    /// One bucket for the whole route (or cluster).
    Route,
    /// The first value of this request header (lowercase), which the client chooses.
    Header(
        #[cfg_attr(
            feature = "schema",
            schemars(
                regex(pattern = r"^(:[a-z]+|[a-z0-9_-]+)$"),
                extend("not" = {"enum": ["x-spiffe-id", "x-forwarded-client-cert"]})
            )
        )]
        String,
    ),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Identity => f.write_str("identity"),
            Key::Route => f.write_str("route"),
            Key::Header(h) => f.write_str(h),
        }
    }
}

/// What happens to a request over its limit.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Answer it locally: HTTP 429, gRPC RESOURCE_EXHAUSTED.
    #[default]
    Enforce,
    /// Count it (`audit_limited`) and let it through.
    Audit,
}

/// A rate in tokens (requests) per second: above 0, at most 1,000,000, at most six decimals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rate {
    /// Micro-tokens per second.
    micro: u64,
}

impl Rate {
    pub fn new(v: f64) -> Result<Rate, String> {
        #[allow(clippy::cast_precision_loss)]
        let max = MAX_RATE as f64;
        if !v.is_finite() || v <= 0.0 || v > max {
            return Err(format!(
                "{v} is not a rate above 0 and at most {MAX_RATE} per second"
            ));
        }
        let scaled = v * 1e6;
        let micro = scaled.round();
        if micro < 1.0 || (scaled - micro).abs() > 1e-3 {
            return Err(format!(
                "{v}: a rate has at most six decimals (the smallest is 0.000001 per second)"
            ));
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Rate {
            micro: micro as u64,
        })
    }

    /// Micro-tokens per second.
    pub fn micro(self) -> u64 {
        self.micro
    }

    /// Whole tokens per second, rounded up: the default burst.
    pub fn ceil(self) -> u32 {
        u32::try_from(self.micro.div_ceil(MICRO)).unwrap_or(MAX_BURST)
    }
}

impl fmt::Display for Rate {
    /// `5`, `0.5`, `2.000001`: as a configuration writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_rate(self.micro))
    }
}

/// A rate of `micro` micro-tokens per second as a configuration writes it: `5`, `0.5`.
pub fn format_rate(micro: u64) -> String {
    let (whole, frac) = (micro / MICRO, micro % MICRO);
    if frac == 0 {
        whole.to_string()
    } else {
        let digits = format!("{frac:06}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl<'de> Deserialize<'de> for Rate {
    /// A number, or a string holding one: Envoy hands a route's metadata over as a
    /// `google.protobuf.Struct` in which a fractional number (`rate: 0.5`) arrives as the string
    /// `"0.5"` (integers stay numbers), as for the kit's ratios.
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a rate in requests per second, e.g. 5 or 0.5")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Rate, E> {
                Rate::new(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Rate, E> {
                #[allow(clippy::cast_precision_loss)]
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Rate, E> {
                #[allow(clippy::cast_precision_loss)]
                self.visit_f64(v as f64)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Rate, E> {
                // Decimal notation only: no "nan", "inf", hex or spaces.
                let decimal = !s.is_empty()
                    && s.bytes().all(|b| {
                        b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'e' | b'E' | b'+')
                    });
                match s.parse::<f64>() {
                    Ok(v) if decimal => self.visit_f64(v),
                    _ => Err(E::custom(format!(
                        "{s:?} is not a rate in requests per second"
                    ))),
                }
            }
        }
        de.deserialize_any(V)
    }
}

/// Identities with a limit of their own.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema, serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// A SPIFFE ID pattern (the identity stage's syntax: `*` within a segment, a final `/**`).
    #[serde(deserialize_with = "pattern")]
    pub identity: Pattern,
    /// Tokens per second for the identities it matches.
    pub rate: Rate,
    /// Their bucket size. Default: the override's rate, rounded up.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1_000_000)))]
    pub burst: Option<u32>,
}

impl Override {
    pub fn limit(&self) -> Limit {
        Limit::new(self.rate.micro(), self.burst.unwrap_or(self.rate.ceil()))
    }
}

fn pattern<'de, D: Deserializer<'de>>(de: D) -> Result<Pattern, D::Error> {
    let s = String::deserialize(de)?;
    Pattern::parse(&s).map_err(serde::de::Error::custom)
}

/// The rate limit's configuration: a token bucket per client and route.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "RateLimitConfig"))]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Tokens (requests) per second each client's bucket gains; above 0, at most 1,000,000, at
    /// most six decimals. Required.
    pub rate: Rate,
    /// Bucket size: the requests a client may send at once after being idle; 1 to 1,000,000.
    /// Default: the rate, rounded up.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1_000_000)))]
    pub burst: Option<u32>,
    /// What a client is: `"identity"` (the verified SPIFFE ID), `{"header": "<name>"}` or
    /// `"route"`.
    #[serde(default)]
    pub key: Key,
    /// With `key: "identity"`: limits of their own for the identities a pattern matches; the
    /// first match applies, everyone else gets `rate` and `burst`.
    #[serde(default)]
    pub overrides: Vec<Override>,
    /// Slots of a route's table: how many clients it tracks at once; 1 to 65536.
    #[serde(default = "default_max_keys")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65_536)))]
    pub max_keys: u32,
    /// One table per route name, or per upstream cluster (shared by every route to it).
    #[serde(default)]
    pub scope: Scope,
    /// `enforce` answers 429 / RESOURCE_EXHAUSTED; `audit` only counts.
    #[serde(default)]
    pub mode: Mode,
}

fn default_max_keys() -> u32 {
    1024
}

/// Which limit applies to a request: `None` for the configuration's own, `Some(i)` for
/// `overrides[i]`.
pub type Which = Option<usize>;

impl Config {
    /// The limit of clients no override matches.
    pub fn limit(&self) -> Limit {
        Limit::new(self.rate.micro(), self.burst.unwrap_or(self.rate.ceil()))
    }

    /// The limit of `id`: the first override whose pattern matches it, else the default.
    pub fn limit_for(&self, id: Option<&SpiffeId>) -> (Limit, Which) {
        let hit = id.and_then(|id| {
            self.overrides
                .iter()
                .enumerate()
                .find(|(_, o)| o.identity.matches(id))
        });
        match hit {
            Some((i, o)) => (o.limit(), Some(i)),
            None => (self.limit(), None),
        }
    }
}

fn check_burst(field: &str, burst: Option<u32>) -> Result<(), ConfigError> {
    match burst {
        Some(b) if b == 0 || b > MAX_BURST => Err(ConfigError::new(
            field,
            Some(&Value::from(b)),
            format!("must be 1 to {MAX_BURST}"),
        )),
        _ => Ok(()),
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        check_burst("burst", self.burst)?;
        if self.max_keys == 0 || self.max_keys > MAX_SLOTS {
            return Err(ConfigError::new(
                "max_keys",
                Some(&Value::from(self.max_keys)),
                format!("must be 1 to {MAX_SLOTS}"),
            ));
        }
        if let Key::Header(h) = &self.key {
            let name = h.strip_prefix(':').unwrap_or(h);
            let pseudo = h.starts_with(':');
            let valid = !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || (!pseudo && (b.is_ascii_digit() || b == b'-' || b == b'_'))
                });
            if !valid {
                return Err(ConfigError::new(
                    "key.header",
                    Some(&Value::String(h.clone())),
                    "must be a lowercase header name of [a-z0-9-_] (or a pseudo-header such as :authority)",
                ));
            }
            if FORGEABLE.contains(&h.as_str()) {
                return Err(ConfigError::new(
                    "key.header",
                    Some(&Value::String(h.clone())),
                    "a client can send this header itself; to limit per verified identity write \"key\": \"identity\"",
                ));
            }
        }
        if !self.overrides.is_empty() && self.key != Key::Identity {
            return Err(ConfigError::new(
                "overrides",
                None,
                format!(
                    "overrides match SPIFFE IDs: they need \"key\": \"identity\", not {}",
                    match &self.key {
                        Key::Header(h) => format!("{{\"header\": {h:?}}}"),
                        other => format!("{:?}", other.to_string()),
                    }
                ),
            ));
        }
        for (i, o) in self.overrides.iter().enumerate() {
            check_burst(&format!("overrides[{i}].burst"), o.burst)?;
        }
        Ok(())
    }
}

/// JSON Schema of a rate (feature `schema`, for `mesh-filters schema`; never in the wasm modules).
#[cfg(feature = "schema")]
mod schema {
    use super::{Rate, MAX_RATE};
    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
    use serde::{Serialize, Serializer};
    use std::borrow::Cow;

    impl JsonSchema for Rate {
        fn schema_name() -> Cow<'static, str> {
            "Rate".into()
        }
        fn schema_id() -> Cow<'static, str> {
            "mesh_rate_limit::config::Rate".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": MAX_RATE,
                "description": "Tokens (requests) per second: above 0, at most 1000000, at most six decimals (0.5 is one request every 2 s).",
                "examples": [5, 100, 0.5]
            })
        }
    }

    impl Serialize for Rate {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            #[allow(clippy::cast_precision_loss)]
            s.serialize_f64(self.micro() as f64 / 1e6)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_kit::config::{from_value, parse_json};
    use proptest::prelude::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        from_value(&parse_json(s.as_bytes())?)
    }

    fn id(s: &str) -> SpiffeId {
        mesh_spiffe_identity::id::parse(s).unwrap()
    }

    #[test]
    fn a_rate_alone_has_the_documented_defaults() {
        let c = parse(r#"{"rate": 5}"#).unwrap();
        assert_eq!(c.limit(), Limit::new(5 * MICRO, 5));
        assert_eq!(
            (&c.key, c.max_keys, c.scope, c.mode),
            (&Key::Identity, 1024, Scope::Route, Mode::Enforce)
        );
        assert!(c.overrides.is_empty());
        assert_eq!(parse(r#"{"rate": 0.5}"#).unwrap().limit().burst(), 1);
    }

    #[test]
    fn keys_are_identity_route_or_a_header() {
        assert_eq!(
            parse(r#"{"rate": 1, "key": "route"}"#).unwrap().key,
            Key::Route
        );
        assert_eq!(
            parse(r#"{"rate": 1, "key": {"header": "x-client"}}"#)
                .unwrap()
                .key,
            Key::Header("x-client".into())
        );
        assert_eq!(
            parse(r#"{"rate": 1, "key": {"header": ":authority"}}"#)
                .unwrap()
                .key,
            Key::Header(":authority".into())
        );
    }

    #[test]
    fn rates_are_numbers_or_the_strings_envoy_makes_of_fractional_route_metadata() {
        for (json, micro) in [
            ("5", 5_000_000),
            ("0.5", 500_000),
            ("\"0.5\"", 500_000),
            ("0.1", 100_000),
            ("0.000001", 1),
            ("1000000", 1_000_000_000_000),
            ("\"2.5e1\"", 25_000_000),
        ] {
            let c = parse(&format!(r#"{{"rate": {json}}}"#)).unwrap();
            assert_eq!(c.rate.micro(), micro, "{json}");
        }
        assert_eq!(Rate::new(2.000001).unwrap().to_string(), "2.000001");
        assert_eq!(Rate::new(0.5).unwrap().to_string(), "0.5");
        assert_eq!(Rate::new(7.0).unwrap().to_string(), "7");
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (json, field, reason) in [
            (r#"{}"#, "", "missing field `rate`"),
            (r#"{"rate": 0}"#, "rate", "above 0"),
            (r#"{"rate": -1}"#, "rate", "above 0"),
            (r#"{"rate": 1000001}"#, "rate", "at most 1000000"),
            (r#"{"rate": 0.0000001}"#, "rate", "six decimals"),
            (r#"{"rate": 1.0000005}"#, "rate", "six decimals"),
            (r#"{"rate": "fast"}"#, "rate", "not a rate"),
            (r#"{"rate": "inf"}"#, "rate", "not a rate"),
            (r#"{"rate": true}"#, "rate", "a rate in requests per second"),
            (r#"{"rate": 1, "burst": 0}"#, "burst", "1 to 1000000"),
            (r#"{"rate": 1, "burst": 2000000}"#, "burst", "1 to 1000000"),
            (r#"{"rate": 1, "burst": -1}"#, "burst", "invalid value"),
            (r#"{"rate": 1, "max_keys": 0}"#, "max_keys", "1 to 65536"),
            (
                r#"{"rate": 1, "max_keys": 70000}"#,
                "max_keys",
                "1 to 65536",
            ),
            (r#"{"rate": 1, "key": "client"}"#, "key", "unknown variant"),
            (
                r#"{"rate": 1, "key": {"header": "X-Client"}}"#,
                "key.header",
                "lowercase",
            ),
            (
                r#"{"rate": 1, "key": {"header": ""}}"#,
                "key.header",
                "lowercase",
            ),
            (
                r#"{"rate": 1, "key": {"header": ":x-y"}}"#,
                "key.header",
                "lowercase",
            ),
            (
                r#"{"rate": 1, "key": {"header": "x-spiffe-id"}}"#,
                "key.header",
                "\"key\": \"identity\"",
            ),
            (
                r#"{"rate": 1, "key": {"cookie": "a"}}"#,
                "key",
                "unknown variant",
            ),
            (
                r#"{"rate": 1, "scope": "host"}"#,
                "scope",
                "unknown variant",
            ),
            (
                r#"{"rate": 1, "mode": "shadow"}"#,
                "mode",
                "unknown variant",
            ),
            (r#"{"rate": 1, "rates": 1}"#, "rates", "unknown field"),
            (
                r#"{"rate": 1, "overrides": [{"identity": "spiffe://td/**/x", "rate": 1}]}"#,
                "overrides[0].identity",
                "only as the whole last segment",
            ),
            (
                r#"{"rate": 1, "overrides": [{"identity": "spiffe://td/a", "rate": 1, "burst": 0}]}"#,
                "overrides[0].burst",
                "1 to 1000000",
            ),
            (
                r#"{"rate": 1, "overrides": [{"identity": "spiffe://td/a"}]}"#,
                "overrides[0]",
                "missing field `rate`",
            ),
            (
                r#"{"rate": 1, "key": "route", "overrides": [{"identity": "spiffe://td/a", "rate": 1}]}"#,
                "overrides",
                "need \"key\": \"identity\"",
            ),
        ] {
            let e = parse(json).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
            assert!(e.reason.contains(reason), "{json}: {e}");
            assert!(!e.line("mesh.rate_limit").contains('\n'));
        }
    }

    #[test]
    fn the_first_matching_override_sets_the_limit() {
        let c = parse(
            r#"{"rate": 100, "burst": 200, "overrides": [
                {"identity": "spiffe://mesh.local/ns/batch/**", "rate": 10},
                {"identity": "spiffe://mesh.local/ns/*/sa/admin", "rate": 0.5, "burst": 3}
            ]}"#,
        )
        .unwrap();
        let batch = id("spiffe://mesh.local/ns/batch/sa/job");
        assert_eq!(
            c.limit_for(Some(&batch)),
            (Limit::new(10 * MICRO, 10), Some(0))
        );
        let admin = id("spiffe://mesh.local/ns/batch/sa/admin");
        assert_eq!(c.limit_for(Some(&admin)).1, Some(0), "the first match wins");
        let admin = id("spiffe://mesh.local/ns/prod/sa/admin");
        assert_eq!(c.limit_for(Some(&admin)), (Limit::new(500_000, 3), Some(1)));
        let other = id("spiffe://mesh.local/ns/prod/sa/web");
        assert_eq!(
            c.limit_for(Some(&other)),
            (Limit::new(100 * MICRO, 200), None)
        );
        assert_eq!(c.limit_for(None), (Limit::new(100 * MICRO, 200), None));
    }

    proptest! {
        #[test]
        fn arbitrary_json_never_panics(s in "\\PC{0,80}") {
            if let Ok(v) = parse_json(s.as_bytes()) {
                let _ = from_value::<Config>(&v);
            }
        }

        #[test]
        fn every_accepted_rate_prints_back_as_itself(micro in 1u64..=MAX_RATE * MICRO) {
            #[allow(clippy::cast_precision_loss)]
            let r = Rate::new(micro as f64 / 1e6).unwrap();
            prop_assert_eq!(r.micro(), micro);
            let printed: f64 = r.to_string().parse().unwrap();
            prop_assert_eq!(Rate::new(printed).unwrap(), r);
        }
    }
}
