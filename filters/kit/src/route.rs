//! Per-route configuration.
//!
//! Envoy's wasm filter has no per-route typed config, so a route carries a partial configuration
//! in its metadata, under the filter's key:
//!
//! ```yaml
//! routes:
//! - name: events
//!   match: { prefix: /events/ }
//!   metadata:
//!     filter_metadata:
//!       mesh.deadline: { timeout: 2s }      # overrides the plugin's `timeout` on this route
//! ```
//!
//! Fields present replace the plugin configuration's fields of the same name (a shallow merge:
//! a list given on a route replaces the plugin's list); `{"disabled": true}` switches the filter
//! off on that route. The metadata arrives from `xds.route_metadata` as a serialized
//! `envoy.config.core.v3.Metadata`; it is decoded and merged once per route name, and the result
//! is cached in [`RouteCache`] (bounded, so routes churned by name cannot grow it without limit)
//! and checked against the route's metadata again once a second, so an RDS update that changes
//! a route's metadata under the same name takes effect within [`REFRESH_US`].
//! Routes without a name are not cached, since two of them may carry different metadata.

use crate::config::{from_value, ConfigError, Validate};
use crate::hash::FxHashMap;
use crate::proto::envoy_core::Metadata;
use prost::Message;
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};
use std::rc::Rc;

/// Most route names remembered per stage; past this the cache starts over.
pub const MAX_CACHED_ROUTES: usize = 1024;

/// The configuration that applies to one route.
#[derive(Debug)]
pub enum RouteConfig<C> {
    /// The plugin configuration, or the route's overrides merged over it.
    Enabled(Rc<C>),
    /// `{"disabled": true}` on this route.
    Disabled,
    /// The route's metadata is invalid; the filter applies its failure policy. `fallback` is
    /// the plugin configuration, for filters whose policy is to fail open with it.
    Invalid { fallback: Rc<C> },
}

impl<C> Clone for RouteConfig<C> {
    fn clone(&self) -> Self {
        match self {
            RouteConfig::Enabled(c) => RouteConfig::Enabled(Rc::clone(c)),
            RouteConfig::Disabled => RouteConfig::Disabled,
            RouteConfig::Invalid { fallback } => RouteConfig::Invalid {
                fallback: Rc::clone(fallback),
            },
        }
    }
}

/// Decodes `xds.route_metadata` bytes and returns the filter's section as JSON, if present.
pub fn route_section(metadata: &[u8], key: &str) -> Result<Option<Value>, String> {
    let md = Metadata::decode(metadata)
        .map_err(|e| format!("route metadata is not a valid envoy.config.core.v3.Metadata: {e}"))?;
    Ok(md.filter_metadata.get(key).map(struct_to_json))
}

/// `google.protobuf.Struct` → JSON. Struct numbers are doubles; whole ones become integers so
/// that `max_retries: 3` in YAML deserializes into an integer field.
pub fn struct_to_json(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: &prost_types::Value) -> Value {
    use prost_types::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value_to_json).collect()),
    }
}

fn number(n: f64) -> Value {
    // Whole numbers within ±2^53 are exact in a double; keep them integers.
    if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_992.0 {
        #[allow(clippy::cast_possible_truncation)]
        return Value::Number(Number::from(n as i64));
    }
    Number::from_f64(n).map_or(Value::Null, Value::Number)
}

/// The route section merged over the plugin configuration, or `None` when the route disables
/// the filter. `disabled` must be a boolean; `{"disabled": false}` is the same as no key.
pub fn merge(base: &Value, section: &Value) -> Result<Option<Value>, ConfigError> {
    let Value::Object(over) = section else {
        return Err(ConfigError::new(
            "",
            Some(section),
            "route metadata for a filter must be an object",
        ));
    };
    match over.get("disabled") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => return Ok(None),
        Some(other) => {
            return Err(ConfigError::new(
                "disabled",
                Some(other),
                "must be true or false",
            ))
        }
    }
    let mut merged: Map<String, Value> = base.as_object().cloned().unwrap_or_default();
    for (k, v) in over {
        if k != "disabled" {
            merged.insert(k.clone(), v.clone());
        }
    }
    Ok(Some(Value::Object(merged)))
}

/// Per-stage cache of route name → effective configuration, and whatever else the stage keeps
/// per route (`X`: the adapter keeps the route's metric ids there, so one lookup serves both).
///
/// A route's configuration can change under the same name (an RDS update that edits its
/// metadata) while the plugin, and so this cache, lives on. So an entry is checked again once
/// it is [`REFRESH_US`] old: the route's section is read again (one host call per route and
/// worker per second, not per request) and decoded only when it differs from what the entry was
/// made from. A route metadata rollout takes effect on every worker within [`REFRESH_US`] of
/// the route's first request after it.
pub struct RouteCache<C, X = ()> {
    base_json: Value,
    base: Rc<C>,
    routes: FxHashMap<String, Entry<C, X>>,
}

/// How long a cached route configuration is used before its section is read again: 1 s.
pub const REFRESH_US: u64 = 1_000_000;

struct Entry<C, X> {
    config: RouteConfig<C>,
    extra: X,
    /// What [`Entry::config`] was made from: the route's section as the host gave it.
    section: Result<Option<Value>, String>,
    checked_us: u64,
}

/// A route's configuration, and the error to log when it was just found invalid (once per
/// decode, not once per request).
pub struct Lookup<C, X = ()> {
    pub config: RouteConfig<C>,
    pub new_error: Option<ConfigError>,
    pub extra: X,
}

impl<C: DeserializeOwned + Validate> RouteCache<C, ()> {
    /// The configuration for `route` at `now_us` (microseconds, any epoch as long as it does not
    /// go back). `section` (the route's per-route configuration for this stage,
    /// [`crate::host::Host::route_config`]) is called when the route is not cached, or its entry
    /// is [`REFRESH_US`] old.
    pub fn get(
        &mut self,
        route: &str,
        now_us: u64,
        section: impl FnOnce() -> Result<Option<Value>, String>,
    ) -> Lookup<C> {
        self.get_with(route, now_us, section, || ())
    }
}

impl<C: DeserializeOwned + Validate, X: Clone> RouteCache<C, X> {
    pub fn new(base_json: Value, base: C) -> Self {
        RouteCache {
            base_json,
            base: Rc::new(base),
            routes: FxHashMap::default(),
        }
    }

    pub fn base(&self) -> &Rc<C> {
        &self.base
    }

    /// [`RouteCache::get`], with `extra` made (once per route name) and cached beside the
    /// configuration.
    pub fn get_with(
        &mut self,
        route: &str,
        now_us: u64,
        section: impl FnOnce() -> Result<Option<Value>, String>,
        extra: impl FnOnce() -> X,
    ) -> Lookup<C, X> {
        if let Some(entry) = self.routes.get_mut(route) {
            if now_us.saturating_sub(entry.checked_us) >= REFRESH_US {
                entry.checked_us = now_us;
                let now = section();
                if now != entry.section {
                    let (config, new_error) = decide(&self.base_json, &self.base, &now);
                    entry.config = config;
                    entry.section = now;
                    return Lookup {
                        config: entry.config.clone(),
                        new_error,
                        extra: entry.extra.clone(),
                    };
                }
            }
            return Lookup {
                config: entry.config.clone(),
                new_error: None,
                extra: entry.extra.clone(),
            };
        }
        let section = section();
        let (config, new_error) = decide(&self.base_json, &self.base, &section);
        let x = extra();
        if !route.is_empty() {
            if self.routes.len() >= MAX_CACHED_ROUTES {
                self.routes.clear();
            }
            self.routes.insert(
                route.to_string(),
                Entry {
                    config: config.clone(),
                    extra: x.clone(),
                    section,
                    checked_us: now_us,
                },
            );
        }
        Lookup {
            config,
            new_error,
            extra: x,
        }
    }
}

/// The configuration `section` makes over the plugin's, or the fallback and the error.
fn decide<C: DeserializeOwned + Validate>(
    base_json: &Value,
    base: &Rc<C>,
    section: &Result<Option<Value>, String>,
) -> (RouteConfig<C>, Option<ConfigError>) {
    match resolve(base_json, base, section.clone()) {
        Ok(c) => (c, None),
        Err(e) => (
            RouteConfig::Invalid {
                fallback: Rc::clone(base),
            },
            Some(e),
        ),
    }
}

fn resolve<C: DeserializeOwned + Validate>(
    base_json: &Value,
    base: &Rc<C>,
    section: Result<Option<Value>, String>,
) -> Result<RouteConfig<C>, ConfigError> {
    let Some(section) = section.map_err(|e| ConfigError::new("", None, e))? else {
        return Ok(RouteConfig::Enabled(Rc::clone(base)));
    };
    match merge(base_json, &section)? {
        None => Ok(RouteConfig::Disabled),
        Some(merged) => Ok(RouteConfig::Enabled(Rc::new(from_value(&merged)?))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{value::Kind, Struct};
    use serde::Deserialize;
    use serde_json::json;
    use std::cell::Cell;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute (proptest's #[test] too), so these
    // tests also run compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        timeout: crate::values::Dur,
        #[serde(default)]
        retries: u32,
    }
    impl Validate for Cfg {}

    fn sv(kind: Kind) -> prost_types::Value {
        prost_types::Value { kind: Some(kind) }
    }

    fn metadata(key: &str, fields: Vec<(&str, Kind)>) -> Vec<u8> {
        let s = Struct {
            fields: fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), sv(v)))
                .collect(),
        };
        Metadata {
            filter_metadata: [(key.to_string(), s)].into_iter().collect(),
        }
        .encode_to_vec()
    }

    fn cache() -> RouteCache<Cfg> {
        let base = json!({"timeout": "5s"});
        let cfg = from_value(&base).unwrap();
        RouteCache::new(base, cfg)
    }

    #[test]
    fn a_route_without_metadata_gets_the_plugin_config() {
        let mut c = cache();
        let l = c.get("auth", 0, || Ok(None));
        assert!(
            matches!(l.config, RouteConfig::Enabled(ref cfg) if cfg.timeout.get().as_secs() == 5)
        );
    }

    #[test]
    fn route_fields_override_and_whole_doubles_become_integers() {
        let mut c = cache();
        let md = metadata(
            "mesh.deadline",
            vec![
                ("timeout", Kind::StringValue("2s".into())),
                ("retries", Kind::NumberValue(3.0)),
            ],
        );
        let l = c.get("events", 0, || route_section(&md, "mesh.deadline"));
        let RouteConfig::Enabled(cfg) = l.config else {
            panic!("not enabled")
        };
        assert_eq!(
            *cfg,
            Cfg {
                timeout: crate::values::Dur::from_millis(2000),
                retries: 3
            }
        );
    }

    #[test]
    fn disabled_true_switches_the_filter_off_and_other_keys_are_ignored() {
        let mut c = cache();
        let md = metadata("mesh.deadline", vec![("disabled", Kind::BoolValue(true))]);
        assert!(matches!(
            c.get("r", 0, || route_section(&md, "mesh.deadline")).config,
            RouteConfig::Disabled
        ));
        let other = metadata("mesh.other", vec![("disabled", Kind::BoolValue(true))]);
        assert!(matches!(
            c.get("r2", 0, || route_section(&other, "mesh.deadline"))
                .config,
            RouteConfig::Enabled(_)
        ));
    }

    #[test]
    fn invalid_metadata_is_reported_once_then_cached_as_invalid() {
        let mut c = cache();
        let md = metadata(
            "mesh.deadline",
            vec![("timeout", Kind::StringValue("5".into()))],
        );
        let first = c.get("bad", 0, || route_section(&md, "mesh.deadline"));
        assert!(matches!(first.config, RouteConfig::Invalid { .. }));
        assert_eq!(first.new_error.unwrap().field, "timeout");
        let second = c.get("bad", 0, || panic!("decoded twice"));
        assert!(matches!(second.config, RouteConfig::Invalid { .. }));
        assert!(second.new_error.is_none());
        let junk = c.get("junk", 0, || {
            route_section(&[0xff, 0xff, 0xff], "mesh.deadline")
        });
        assert!(junk.new_error.unwrap().reason.contains("Metadata"));
    }

    #[test]
    fn metadata_is_decoded_once_per_route_name_but_every_time_for_unnamed_routes() {
        let mut c = cache();
        let calls = Cell::new(0);
        for _ in 0..3 {
            c.get("auth", 0, || {
                calls.set(calls.get() + 1);
                Ok(None)
            });
        }
        assert_eq!(calls.get(), 1);
        for _ in 0..3 {
            c.get("", 0, || {
                calls.set(calls.get() + 1);
                Ok(None)
            });
        }
        assert_eq!(calls.get(), 4);
    }

    fn timeout_of(l: &Lookup<Cfg>) -> u64 {
        match &l.config {
            RouteConfig::Enabled(c) => c.timeout.get().as_secs(),
            other => panic!("not enabled: {other:?}"),
        }
    }

    #[test]
    fn a_route_whose_metadata_changes_under_the_same_name_gets_the_new_config_within_the_refresh() {
        let mut c = cache();
        let two = metadata(
            "mesh.deadline",
            vec![("timeout", Kind::StringValue("2s".into()))],
        );
        let three = metadata(
            "mesh.deadline",
            vec![("timeout", Kind::StringValue("3s".into()))],
        );
        assert_eq!(
            timeout_of(&c.get("r", 0, || route_section(&two, "mesh.deadline"))),
            2
        );
        // Within the refresh period the entry is used as it is, whatever the route says now.
        let before = c.get("r", REFRESH_US - 1, || panic!("read before the refresh"));
        assert_eq!(timeout_of(&before), 2);
        // Then the section is read again, and the new one decoded.
        let after = c.get("r", REFRESH_US, || route_section(&three, "mesh.deadline"));
        assert_eq!(timeout_of(&after), 3);
        assert!(after.new_error.is_none());
        // The next check is a refresh period after that one.
        let next = c.get("r", 2 * REFRESH_US - 1, || {
            panic!("read before the refresh")
        });
        assert_eq!(timeout_of(&next), 3);
        // Metadata removed: the plugin's configuration again.
        assert_eq!(timeout_of(&c.get("r", 2 * REFRESH_US, || Ok(None))), 5);
    }

    #[test]
    fn an_unchanged_section_is_not_decoded_again_and_a_new_invalid_one_is_reported_once() {
        let mut c = cache();
        let two = metadata(
            "mesh.deadline",
            vec![("timeout", Kind::StringValue("2s".into()))],
        );
        let bad = metadata(
            "mesh.deadline",
            vec![("timeout", Kind::StringValue("2".into()))],
        );
        let first = c.get("r", 0, || route_section(&two, "mesh.deadline"));
        let again = c.get("r", REFRESH_US, || route_section(&two, "mesh.deadline"));
        match (&first.config, &again.config) {
            (RouteConfig::Enabled(a), RouteConfig::Enabled(b)) => assert!(Rc::ptr_eq(a, b)),
            _ => panic!("not enabled"),
        }
        let broken = c.get("r", 2 * REFRESH_US, || route_section(&bad, "mesh.deadline"));
        assert!(matches!(broken.config, RouteConfig::Invalid { .. }));
        assert_eq!(broken.new_error.unwrap().field, "timeout");
        let still = c.get("r", 3 * REFRESH_US, || route_section(&bad, "mesh.deadline"));
        assert!(matches!(still.config, RouteConfig::Invalid { .. }));
        assert!(still.new_error.is_none(), "reported once per change");
    }

    #[test]
    fn the_cache_stays_bounded_when_route_names_churn() {
        let mut c = cache();
        for i in 0..(MAX_CACHED_ROUTES * 3) {
            c.get(&format!("r{i}"), 0, || Ok(None));
        }
        assert!(c.routes.len() <= MAX_CACHED_ROUTES);
    }

    #[test]
    fn disabled_must_be_a_boolean() {
        let e = merge(&json!({}), &json!({"disabled": "yes"})).unwrap_err();
        assert_eq!(e.field, "disabled");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_metadata_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let mut c = cache();
            let _ = c.get("x", 0, || route_section(&bytes, "mesh.deadline"));
        }
    }
}
