//! The corpus of invalid configurations (`tools/mesh-filters/tests/broken.yaml`): each case as a
//! minimal bootstrap, for `mesh-filters check` and for the real Envoy.

use crate::bootstrap::{
    bootstrap, cluster, listener, module, route, wasm_filter, with_metadata, Plugin,
};
use crate::client::Result;
use crate::envoy::workspace_root;
use serde_json::Value;
use std::path::Path;

/// One invalid configuration.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    /// root_id: `mesh.<filter>` or `mesh` (the suite)
    pub filter: String,
    /// The plugin configuration, as Envoy passes it (JSON text).
    pub plugin: String,
    /// Route metadata under `key`, when the case is about a route.
    pub route: Option<Value>,
    pub key: String,
    /// Text the error must contain.
    pub expect: String,
}

/// Reads the corpus.
pub fn corpus() -> Result<Vec<Case>> {
    let path = workspace_root().join("tools/mesh-filters/tests/broken.yaml");
    let text = std::fs::read_to_string(&path)?;
    let doc: Vec<Value> = serde_yaml::from_str(&text)?;
    let field = |c: &Value, k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
    doc.iter()
        .map(|c| {
            let filter = field(c, "filter").ok_or("case without filter")?;
            Ok(Case {
                name: field(c, "name").ok_or("case without name")?,
                plugin: field(c, "plugin").ok_or("case without plugin")?,
                route: c.get("route").cloned(),
                key: field(c, "key").unwrap_or_else(|| filter.clone()),
                expect: field(c, "expect").ok_or("case without expect")?,
                filter,
            })
        })
        .collect()
}

/// A bootstrap with the case's filter on one listener (route `r` to cluster `svc`), modules
/// from `wasm_dir`.
pub fn bootstrap_for(case: &Case, wasm_dir: &Path) -> Value {
    let wasm = wasm_dir.join(format!("{}.wasm", module(&case.filter)));
    let filter = wasm_filter(&case.filter, &wasm, Plugin::text(&case.plugin));
    let mut r = route("r", "/", "svc");
    if let Some(md) = &case.route {
        r = with_metadata(r, &case.key, md.clone());
    }
    bootstrap(
        vec![listener("main", vec![r], vec![filter])],
        vec![cluster(
            "svc",
            std::net::SocketAddr::from(([127, 0, 0, 1], 9)),
            true,
        )],
    )
}
