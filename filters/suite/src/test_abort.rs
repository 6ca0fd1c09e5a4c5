//! Test builds only (feature `test-abort`): a stage that traps the VM on demand, so the end-to-end
//! tests can show what Envoy's `failure_policy` does to requests when the VM dies. The default
//! build has neither the stage nor its section: `test_abort` is then an unknown section and the
//! configuration is refused.
//!
//! ```json
//! {"test_abort": {"header": "x-mesh-test-abort"}, "deadline": {"timeout": "5s"}}
//! ```
//!
//! A request carrying the header panics in its request-headers hook: with `panic = "abort"` the
//! panic is a wasm trap (`unreachable`), which fails the whole VM of that worker. The stage runs
//! first, before every real stage.

use mesh_kit::config::{ConfigError, Validate};
use mesh_kit::host::Host;
use mesh_kit::registry::{entry, Entry};
use mesh_kit::stage::{Built, Cx, Flow, Stage};
use serde::Deserialize;
use serde_json::Value;

/// The suite's section of the stage.
pub const SECTION: &str = "test_abort";

mesh_kit::stats! {
    /// Only the stat every stage has.
    pub enum Stat {
        ConfigError = counter("config_error"),
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The request header that makes the VM trap.
    #[serde(default = "default_header")]
    pub header: String,
}

fn default_header() -> String {
    "x-mesh-test-abort".to_owned()
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.header.is_empty() || self.header.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ConfigError::new(
                "header",
                Some(&Value::from(self.header.clone())),
                "must be a lowercase header name",
            ));
        }
        Ok(())
    }
}

pub struct TestAbort {
    header: String,
}

impl Stage for TestAbort {
    const NAME: &'static str = "mesh.test_abort";
    type Stat = Stat;
    type Config = Config;
    type Request = ();

    fn new(config: &Config, _host: &dyn Host) -> Self {
        TestAbort {
            header: config.header.clone(),
        }
    }

    #[allow(clippy::panic)]
    fn on_request_headers(&self, cx: &mut Cx<'_, Self>) -> Flow {
        if cx.ex.has_header(&self.header) {
            panic!("{}: deliberate trap ({} present)", Self::NAME, self.header);
        }
        Flow::Continue
    }
}

const STAGE: Entry = entry::<TestAbort>();

/// Takes the `test_abort` section out of the suite's configuration: the configuration without
/// it, and the stage when the section was there.
pub fn strip(json: &Value, host: &dyn Host) -> Result<(Value, Option<Built>), ConfigError> {
    let Value::Object(map) = json else {
        return Ok((json.clone(), None));
    };
    let mut rest = map.clone();
    let Some(section) = rest.remove(SECTION) else {
        return Ok((json.clone(), None));
    };
    if !section.is_object() {
        return Err(ConfigError::new(
            SECTION,
            Some(&section),
            "a stage's section must be an object",
        ));
    }
    let built = (STAGE.build)(&section, host).map_err(|e| e.within(SECTION))?;
    Ok((Value::Object(rest), Some(built)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_kit::testing::TestHost;
    use serde_json::json;

    #[test]
    fn the_section_becomes_the_first_stage_and_leaves_the_configuration() {
        let host = TestHost::default();
        let Ok(stages) = crate::factory(
            &json!({"deadline": {"timeout": "1s"}, "test_abort": {}}),
            &host,
        ) else {
            panic!("the configuration was refused");
        };
        let names: Vec<&str> = stages.iter().map(|b| b.stage.name()).collect();
        assert_eq!(names, ["mesh.test_abort", "mesh.deadline"]);
    }

    #[test]
    fn a_bad_section_is_refused_naming_its_field() {
        let host = TestHost::default();
        let field = |json: Value| strip(&json, &host).err().map(|e| e.field);
        assert_eq!(
            field(json!({"test_abort": {"header": "X-Up"}})).as_deref(),
            Some("test_abort.header")
        );
        assert_eq!(
            field(json!({"test_abort": true})).as_deref(),
            Some("test_abort")
        );
        let Ok((rest, built)) = strip(&json!({"deadline": {"timeout": "1s"}}), &host) else {
            panic!("refused");
        };
        assert!(built.is_none());
        assert_eq!(rest, json!({"deadline": {"timeout": "1s"}}));
    }
}
