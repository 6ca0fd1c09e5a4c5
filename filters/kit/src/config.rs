//! Plugin configuration: JSON parsed with serde (`deny_unknown_fields`, snake_case), then checked
//! by the filter's [`Validate`] for rules serde cannot express. Every failure becomes one
//! [`ConfigError`] that names the filter, the field, the value and the reason, so the single log
//! line Envoy shows when it refuses the configuration says what to fix:
//!
//! ```text
//! mesh.deadline: invalid configuration: field `timeout`, value "5": missing unit; write e.g. "5s"
//! ```

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;

/// A configuration type whose JSON Schema can be generated: `schemars::JsonSchema` with the
/// `schema` feature (`mesh-filters schema`), nothing without it (the wasm modules).
#[cfg(feature = "schema")]
pub trait Schema: schemars::JsonSchema {}
#[cfg(feature = "schema")]
impl<T: schemars::JsonSchema> Schema for T {}
#[cfg(not(feature = "schema"))]
pub trait Schema {}
#[cfg(not(feature = "schema"))]
impl<T> Schema for T {}

/// What is wrong with a configuration, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the field (`timeout`, `honor[1]`); empty for the document itself.
    pub field: String,
    /// The offending value as JSON, when there is one.
    pub value: Option<String>,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, value: Option<&Value>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            value: value.map(|v| truncate(&v.to_string(), 120)),
            reason: reason.into(),
        }
    }

    /// The one log line: `<filter>: invalid configuration: field `x`, value v: reason`.
    pub fn line(&self, filter: &str) -> String {
        format!("{filter}: invalid configuration: {self}")
    }

    /// Prefixes the field with a section name (the suite nests each stage's config).
    pub fn within(mut self, section: &str) -> Self {
        self.field = if self.field.is_empty() {
            section.to_string()
        } else {
            format!("{section}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for ConfigError {
    /// One line whatever the configuration holds: control characters in the field (a JSON key
    /// may contain `\n`), the value (JSON leaves DEL and U+0080 to U+009F unescaped) and the
    /// reason (which may quote either) are written escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str("the document")?;
        } else {
            write!(f, "field `{}`", OneLine(&self.field))?;
        }
        if let Some(v) = &self.value {
            write!(f, ", value {}", OneLine(v))?;
        }
        write!(f, ": {}", OneLine(&self.reason))
    }
}

/// Writes a string with its control characters escaped (`\n`, `\u{1b}`).
struct OneLine<'a>(&'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// Rules a configuration must follow beyond its types; called after deserializing.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Parses JSON bytes into an object [`Value`]. Empty input is an empty object.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ConfigError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(serde_json::Map::new()));
    }
    let v: Value = serde_json::from_slice(bytes)
        .map_err(|e| ConfigError::new("", None, format!("not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(ConfigError::new(
            "",
            Some(&v),
            "the configuration must be a JSON object",
        ));
    }
    Ok(v)
}

/// Deserializes a typed configuration from a JSON value and validates it.
pub fn from_value<T: DeserializeOwned + Validate>(value: &Value) -> Result<T, ConfigError> {
    let config: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_json appends " at line L column C" only for text input; a Value has none.
        if let Some(unknown) = unknown_field_name(&inner) {
            // The path may or may not already end with the unknown key, by serde version.
            let field = if path == unknown || path.ends_with(&format!(".{unknown}")) {
                path
            } else {
                join(&path, &unknown)
            };
            let v = lookup(value, &field);
            return ConfigError::new(field, v, inner);
        }
        let field = if path == "." { String::new() } else { path };
        let v = lookup(value, &field);
        ConfigError::new(field, v, inner)
    })?;
    config.validate()?;
    Ok(config)
}

fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    rest.get(..end).map(str::to_string)
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() || parent == "." {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// Finds the value at a serde_path_to_error path such as `a.b[2].c`.
fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return None;
    }
    let mut cur = root;
    for part in path.split('.') {
        let (name, indexes) = match part.find('[') {
            Some(i) => (part.get(..i)?, part.get(i..)?),
            None => (part, ""),
        };
        if !name.is_empty() {
            cur = cur.get(name)?;
        }
        for idx in indexes.split('[').filter(|s| !s.is_empty()) {
            let n: usize = idx.trim_end_matches(']').parse().ok()?;
            cur = cur.get(n)?;
        }
    }
    Some(cur)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::Dur;
    use serde::Deserialize;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute, so these tests also run compiled to
    // wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        timeout: Dur,
        #[serde(default)]
        names: Vec<String>,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        every: Dur,
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            if self.timeout.get().is_zero() {
                return Err(ConfigError::new("timeout", None, "must be above zero"));
            }
            Ok(())
        }
    }

    fn err(json: &str) -> ConfigError {
        from_value::<Sample>(&parse_json(json.as_bytes()).unwrap()).unwrap_err()
    }

    #[test]
    fn a_duration_without_unit_names_field_value_and_reason() {
        let e = err(r#"{"timeout": "5"}"#);
        assert_eq!(e.field, "timeout");
        assert_eq!(e.value.as_deref(), Some("\"5\""));
        assert!(e.reason.contains("unit"), "{e}");
        assert!(e
            .line("mesh.deadline")
            .starts_with("mesh.deadline: invalid configuration: field `timeout`"));
    }

    #[test]
    fn an_unknown_field_is_named_even_when_nested() {
        let e = err(r#"{"timeout": "1s", "timeuot": "2s"}"#);
        assert_eq!(e.field, "timeuot");
        assert_eq!(e.value.as_deref(), Some("\"2s\""));
        let e = err(r#"{"timeout": "1s", "inner": {"every": "1s", "evry": 3}}"#);
        assert_eq!(e.field, "inner.evry");
    }

    #[test]
    fn a_negative_duration_and_a_wrong_type_are_refused() {
        assert!(err(r#"{"timeout": "-5s"}"#).reason.contains("negative"));
        let e = err(r#"{"timeout": "1s", "names": ["a", 3]}"#);
        assert_eq!(e.field, "names[1]");
        assert_eq!(e.value.as_deref(), Some("3"));
    }

    #[test]
    fn a_missing_required_field_and_validation_rules_are_reported() {
        assert!(err(r#"{}"#).reason.contains("missing field `timeout`"));
        assert_eq!(err(r#"{"timeout": "0s"}"#).field, "timeout");
    }

    #[test]
    fn the_error_is_one_line_even_when_a_key_holds_a_newline() {
        // Found by fuzzing (fuzz target `plugin_json`): an unknown key "service\nname" put a
        // raw newline into the field and the reason of the log line.
        let e = err("{\"timeout\": \"1s\", \"time\\nout\\u001b\": \"2s\"}");
        assert_eq!(e.field, "time\nout\u{1b}");
        let line = e.line("mesh.deadline");
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.starts_with("mesh.deadline: invalid configuration: field `time\\nout\\u{1b}`"),
            "{line}"
        );
        assert!(line.contains("unknown field `time\\nout\\u{1b}`"), "{line}");
        // JSON escapes only U+0000 to U+001F in the value; DEL and C1 controls are escaped here.
        let e = err("{\"timeout\": \"1\u{7f}\u{85}s\"}");
        let line = e.line("mesh.deadline");
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(line.contains("value \"1\\u{7f}\\u{85}s\""), "{line}");
    }

    #[test]
    fn empty_input_is_an_empty_object_and_junk_is_refused() {
        assert_eq!(parse_json(b"  ").unwrap(), serde_json::json!({}));
        assert!(parse_json(b"[1]").unwrap_err().reason.contains("object"));
        assert!(parse_json(b"{").unwrap_err().reason.contains("JSON"));
    }
}
