//! The stages as the rest of the project knows them: one [`Entry`] per stage, made from its
//! [`Stage`] impl by [`entry`], so that the suite's sections, the single-filter modules, the
//! configuration checker, the JSON Schema and the fuzz targets all read one list of names and
//! constructors instead of spelling `"mesh.deadline"` out and dispatching on it.
//!
//! Each filter crate exports its entry (`pub const STAGE: Entry = entry::<Deadline>();`); the
//! suite lists them once, in the order they run, and builds its filter from that list with
//! [`from_sections`].

use crate::config::{from_value, ConfigError};
use crate::host::Host;
use crate::stage::{build, single, Built, Factory, Stage};
use serde_json::Value;

/// Builds one configured stage from its plugin configuration.
pub type StageFactory = fn(&Value, &dyn Host) -> Result<Built, ConfigError>;

/// One stage, type-erased.
#[derive(Clone, Copy)]
pub struct Entry {
    /// `mesh.deadline`: the single filter's root_id, the metric prefix and the route-metadata
    /// key (see [`Stage::NAME`]).
    pub name: &'static str,
    /// Builds the stage from its plugin configuration.
    pub build: StageFactory,
    /// The stats the stage keeps per route or cluster (the native module defines them when the
    /// configuration loads).
    pub stats: &'static [crate::metrics::Stat],
    /// The factory of the single-filter module: the whole plugin configuration is the stage's.
    pub single: Factory,
    /// Checks a configuration with the stage's own code (parsing and validation), host-free.
    pub check: fn(&Value) -> Result<(), ConfigError>,
    /// A valid configuration's effective settings in a few words ([`Stage::describe`]); with
    /// the tooling feature `schema` only, so the modules carry no formatting they never use.
    #[cfg(feature = "schema")]
    pub describe: fn(&Value) -> Option<String>,
    /// The JSON Schema of the configuration.
    #[cfg(feature = "schema")]
    pub schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
}

impl Entry {
    /// `deadline`: the stage's section in the suite's configuration.
    pub fn section(&self) -> &'static str {
        self.name.strip_prefix("mesh.").unwrap_or(self.name)
    }
}

/// The entry of stage `S`.
pub const fn entry<S: Stage>() -> Entry {
    Entry {
        name: S::NAME,
        build: build::<S>,
        stats: <S::Stat as crate::metrics::StatSet>::ALL,
        single: single::<S>,
        check: check::<S>,
        #[cfg(feature = "schema")]
        describe: describe::<S>,
        #[cfg(feature = "schema")]
        schema: |g| g.subschema_for::<S::Config>(),
    }
}

fn check<S: Stage>(json: &Value) -> Result<(), ConfigError> {
    from_value::<S::Config>(json).map(drop)
}

#[cfg(feature = "schema")]
fn describe<S: Stage>(json: &Value) -> Option<String> {
    from_value::<S::Config>(json).ok().map(|c| S::describe(&c))
}

/// Builds the stages of a filter configured with one optional section per stage (the suite):
/// the stages that have a section, in `stages` order; a stage without one is off. An unknown
/// section, or an invalid one, is an error naming `<section>.<field>`.
pub fn from_sections(
    stages: &[Entry],
    json: &Value,
    host: &dyn Host,
) -> Result<Vec<Built>, ConfigError> {
    let Value::Object(sections) = json else {
        return Err(ConfigError::new(
            "",
            Some(json),
            "the configuration must be a JSON object with one section per stage",
        ));
    };
    if let Some(unknown) = sections
        .keys()
        .find(|k| !stages.iter().any(|e| e.section() == k.as_str()))
    {
        let names: Vec<&str> = stages.iter().map(Entry::section).collect();
        return Err(ConfigError::new(
            unknown.as_str(),
            None,
            format!("unknown section; the stages are {}", names.join(", ")),
        ));
    }
    let mut slots = Vec::new();
    for e in stages {
        let Some(config) = sections.get(e.section()) else {
            continue;
        };
        if !config.is_object() {
            return Err(ConfigError::new(
                e.section(),
                Some(config),
                "a stage's section must be an object ({} to use its defaults)",
            ));
        }
        slots.push((e.build)(config, host).map_err(|err| err.within(e.section()))?);
    }
    Ok(slots)
}

/// The entry named `name` (`mesh.deadline`).
pub fn find<'a>(stages: &'a [Entry], name: &str) -> Option<&'a Entry> {
    stages.iter().find(|e| e.name == name)
}
