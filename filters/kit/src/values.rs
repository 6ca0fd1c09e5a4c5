//! Configuration values shared by all filters.
//!
//! Durations are strings with a unit: `"250ms"`, `"5s"`, `"1m"`, `"1h"`, also `"500us"` and
//! Envoy's fractional seconds `"0.25s"`. A bare number (`"5"`), a negative value, a space or an
//! unknown unit is an error that names the value. Ratios are numbers in `[0, 1]`.
//!
//! ```
//! use mesh_kit::values::parse_duration;
//! use std::time::Duration;
//! assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
//! assert_eq!(parse_duration("0.25s"), Ok(Duration::from_millis(250)));
//! assert!(parse_duration("5").unwrap_err().contains("unit"));
//! ```

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// Longest duration accepted anywhere in a configuration: 365 days. Larger values are typos.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration string; the error says what is wrong, for a config error message.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty duration; write e.g. \"250ms\" or \"5s\"".into());
    }
    if s.starts_with('-') {
        return Err("durations cannot be negative".into());
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.is_empty() {
        return Err("a duration starts with a number, e.g. \"250ms\"".into());
    }
    let nanos_per_unit: u128 = match unit {
        "" => {
            return Err(
                "missing unit; write e.g. \"5s\" or \"250ms\" (units: ns, us, ms, s, m, h)".into(),
            )
        }
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} (units: ns, us, ms, s, m, h)"
            ))
        }
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() || frac.contains('.') || (number.contains('.') && frac.is_empty()) {
        return Err("malformed number".into());
    }
    if whole.len() > 12 || frac.len() > 9 {
        return Err("too many digits".into());
    }
    let whole: u128 = whole.parse().map_err(|_| "malformed number".to_string())?;
    let mut nanos = whole * nanos_per_unit;
    if !frac.is_empty() {
        let frac_value: u128 = frac.parse().map_err(|_| "malformed number".to_string())?;
        let scale = 10u128.pow(u32::try_from(frac.len()).unwrap_or(9));
        nanos += frac_value * nanos_per_unit / scale;
    }
    let d = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    if d > MAX_DURATION {
        return Err("longer than 365 days".into());
    }
    Ok(d)
}

/// Formats a duration the way a config would write it: `"250ms"`, `"5s"`, `"1500us"`; as
/// fractional seconds (`"1000000.000001s"`) when the count of the finest exact unit would have
/// more than the 12 digits [`parse_duration`] reads back.
pub fn format_duration(d: Duration) -> String {
    const MAX_WHOLE: u128 = 999_999_999_999;
    let nanos = d.as_nanos();
    let (per, unit) = if nanos == 0 {
        return "0ms".into();
    } else if nanos.is_multiple_of(1_000_000_000) {
        (1_000_000_000, "s")
    } else if nanos.is_multiple_of(1_000_000) {
        (1_000_000, "ms")
    } else if nanos.is_multiple_of(1_000) {
        (1_000, "us")
    } else {
        (1, "ns")
    };
    let count = nanos / per;
    if count <= MAX_WHOLE || unit == "s" {
        return format!("{count}{unit}");
    }
    let frac = format!("{:09}", d.subsec_nanos());
    format!("{}.{}s", d.as_secs(), frac.trim_end_matches('0'))
}

/// A duration field in a configuration (`"250ms"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn from_millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\" or \"5s\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Dur, E> {
                parse_duration(s).map(Dur).map_err(E::custom)
            }
        }
        de.deserialize_str(V)
    }
}

/// A ratio field in a configuration: a number in `[0, 1]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct Ratio(f64);

impl Ratio {
    pub fn new(v: f64) -> Result<Self, String> {
        if v.is_finite() && (0.0..=1.0).contains(&v) {
            Ok(Ratio(v))
        } else {
            Err(format!("{v} is not a ratio in [0, 1]"))
        }
    }
    pub const fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Ratio {
    /// A number, or a string holding one: Envoy hands a route's metadata over as a
    /// `google.protobuf.Struct` in which a YAML or JSON *fractional* number (`failure_rate: 0.5`)
    /// arrives as the string `"0.5"` (integers stay numbers; verified on Envoy 1.40).
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Ratio;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number in [0, 1]")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Ratio, E> {
                Ratio::new(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Ratio, E> {
                #[allow(clippy::cast_precision_loss)]
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Ratio, E> {
                #[allow(clippy::cast_precision_loss)]
                self.visit_f64(v as f64)
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Ratio, E> {
                // Decimal notation only (digits, point, sign, exponent): no "nan", "inf" or spaces.
                let decimal = !s.is_empty()
                    && s.bytes().all(|b| {
                        b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'e' | b'E' | b'+')
                    });
                match s.parse::<f64>() {
                    Ok(v) if decimal => self.visit_f64(v),
                    _ => Err(E::custom(format!("{s:?} is not a number in [0, 1]"))),
                }
            }
        }
        de.deserialize_any(V)
    }
}

/// JSON Schema of the configuration values (feature `schema`, for `mesh-filters schema`; never in
/// the wasm modules). The schemas state the parsers' rules; `Serialize` writes a value the way a
/// configuration does, so that the filters' defaults appear in the schemas as `default`.
#[cfg(feature = "schema")]
pub mod schema {
    use super::{format_duration, Dur, Ratio};
    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
    use serde::{Serialize, Serializer};
    use std::borrow::Cow;

    /// The grammar of [`super::parse_duration`]: 1 to 12 digits, optionally `.` and 1 to 9
    /// digits, then a unit. (The 365-day ceiling is not expressed.)
    pub const DURATION_PATTERN: &str = r"^[0-9]{1,12}(\.[0-9]{1,9})?(ns|us|µs|ms|s|m|h)$";

    impl JsonSchema for Dur {
        fn schema_name() -> Cow<'static, str> {
            "Duration".into()
        }
        fn schema_id() -> Cow<'static, str> {
            "mesh_kit::values::Dur".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "string",
                "pattern": DURATION_PATTERN,
                "description": "A duration: a number and a unit (ns, us, ms, s, m, h), e.g. \"250ms\", \"5s\", \"1m\", or Envoy's fractional seconds \"0.25s\". No bare numbers, no negative values, no spaces; at most 365 days.",
                "examples": ["250ms", "5s", "0.25s"]
            })
        }
    }

    impl Serialize for Dur {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&format_duration(self.0))
        }
    }

    impl JsonSchema for Ratio {
        fn schema_name() -> Cow<'static, str> {
            "Ratio".into()
        }
        fn schema_id() -> Cow<'static, str> {
            "mesh_kit::values::Ratio".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "A ratio: a number from 0 to 1."
            })
        }
    }

    impl Serialize for Ratio {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_f64(self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute (proptest's #[test] too), so these
    // tests also run compiled to wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn ratios_are_numbers_or_the_strings_envoy_makes_of_fractional_route_metadata() {
        let ratio = |v: serde_json::Value| {
            serde_json::from_value::<Ratio>(v)
                .map(Ratio::get)
                .map_err(|e| e.to_string())
        };
        assert_eq!(ratio(serde_json::json!(0.5)), Ok(0.5));
        assert_eq!(ratio(serde_json::json!(1)), Ok(1.0));
        assert_eq!(ratio(serde_json::json!(0)), Ok(0.0));
        // What Envoy delivers for `failure_rate: 0.5` / `1.0` / `1e-1` in route metadata.
        assert_eq!(ratio(serde_json::json!("0.5")), Ok(0.5));
        assert_eq!(ratio(serde_json::json!("1.0")), Ok(1.0));
        assert_eq!(ratio(serde_json::json!("1e-1")), Ok(0.1));
        for bad in [
            serde_json::json!(1.5),
            serde_json::json!(-0.1),
            serde_json::json!("1.5"),
            serde_json::json!("half"),
            serde_json::json!("NaN"),
            serde_json::json!("inf"),
            serde_json::json!(" 0.5"),
            serde_json::json!(""),
            serde_json::json!(true),
            serde_json::json!([0.5]),
        ] {
            assert!(ratio(bad.clone()).is_err(), "{bad}");
        }
        assert!(ratio(serde_json::json!("half"))
            .unwrap_err()
            .contains("is not a number in [0, 1]"));
        assert!(ratio(serde_json::json!(2))
            .unwrap_err()
            .contains("is not a ratio in [0, 1]"));
    }

    #[test]
    fn accepts_every_documented_form() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("1m", Duration::from_secs(60)),
            ("2h", Duration::from_secs(7200)),
            ("0.25s", Duration::from_millis(250)),
            ("1.5ms", Duration::from_micros(1500)),
            ("500us", Duration::from_micros(500)),
            ("10ns", Duration::from_nanos(10)),
            ("0ms", Duration::ZERO),
        ];
        for (s, d) in cases {
            assert_eq!(parse_duration(s), Ok(d), "{s}");
        }
    }

    #[test]
    fn rejects_bare_numbers_negatives_and_junk_with_a_reason() {
        for (s, needle) in [
            ("5", "unit"),
            ("-5s", "negative"),
            ("", "empty"),
            ("s", "number"),
            ("5 s", "unit"),
            ("5sec", "unit"),
            ("1.s", "malformed"),
            (".5s", "number"),
            ("1.2.3s", "malformed"),
            ("9999999h", "365 days"),
        ] {
            let err = parse_duration(s).unwrap_err();
            assert!(err.contains(needle), "{s:?}: {err}");
        }
    }

    #[test]
    fn format_round_trips_through_parse() {
        for ms in [0u64, 1, 250, 1000, 1500, 60_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    #[test]
    fn format_of_a_long_duration_with_a_fraction_of_a_millisecond_parses_back() {
        // Found by fuzzing (fuzz target `duration`): 999.91999995h was written as
        // "3599711999820us", 13 digits, which parse_duration refuses.
        let d = parse_duration("999.91999995h").unwrap();
        assert_eq!(format_duration(d), "3599711.99982s");
        assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        for d in [
            Duration::new(1_000_000, 1_000),
            Duration::new(1_000, 1),
            MAX_DURATION - Duration::from_nanos(1),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{d:?}");
        }
        assert_eq!(
            format_duration(Duration::from_micros(999_999_999_999)),
            "999999999999us"
        );
    }

    #[test]
    fn ratios_outside_zero_to_one_are_refused() {
        assert!(Ratio::new(0.2).is_ok());
        assert!(Ratio::new(1.0).is_ok());
        assert!(Ratio::new(-0.1).is_err());
        assert!(Ratio::new(1.01).is_err());
        assert!(Ratio::new(f64::NAN).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = parse_duration(&s);
        }

        #[test]
        fn millis_round_trip(ms in 0u64..10_000_000) {
            let d = Duration::from_millis(ms);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn nanos_round_trip(ns in 0..=MAX_DURATION.as_nanos() as u64) {
            let d = Duration::from_nanos(ns);
            proptest::prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
