//! Plugin configuration (the bytes Envoy hands `on_configure`): arbitrary bytes through the
//! adapter's `Root::configure` of each single filter and of the suite (JSON parsing, sections,
//! serde with `deny_unknown_fields`, each filter's validation, building the stages over an
//! in-memory host) never panic, and every refusal is one log line without control characters. The same JSON is also
//! loaded directly as each filter's configuration, and what the filters derive from a loaded
//! configuration is computed.
#![no_main]

#[path = "common/configs.rs"]
mod configs;

use configs::*;
use libfuzzer_sys::fuzz_target;
use mesh_kit::config::parse_json;
use mesh_kit::testing::TestHost;
use mesh_kit::stage::Root;
use std::rc::Rc;

fuzz_target!(|data: &[u8]| {
    let roots = std::iter::once((mesh_filters::NAME, mesh_filters::factory as _))
        .chain(mesh_filters::STAGES.iter().map(|e| (e.name, e.single)));
    for (name, factory) in roots {
        let mut root = Root::new(name, factory, Rc::new(TestHost::default()));
        if let Err(line) = root.configure(data) {
            assert!(line.starts_with(name), "{line}");
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
    }
    let Ok(json) = parse_json(data) else {
        return;
    };
    load::<SpiffeIdentity>(&json);
    load::<RateLimit>(&json);
    load::<CircuitBreaker>(&json);
    load::<Deadline>(&json);
    load::<RetryBudget>(&json);
    load::<TracePropagation>(&json);
    // Each section as its stage reads it in the suite, through the stage's own check.
    for stage in &mesh_filters::STAGES {
        if let Some(part) = json.get(stage.section()) {
            let _ = (stage.check)(part);
        }
    }
});
