//! Dynamic resources without a control plane: Envoy reads its listeners (LDS) and its route
//! tables (RDS) from files, so a test can roll a new plugin configuration, new route metadata,
//! a new module or a new listener into a running Envoy, as a control plane would.
//!
//! ```text
//! let mut xds = Xds::new("rollout")?;
//! xds.write_routes(&[dynamic::route_config("main", routes)])?;
//! xds.write_listeners(&[xds.listener("main", "main", vec![filter])])?;
//! let envoy = Envoy::start_with(&xds.bootstrap(clusters), &opts)?;
//! // ... later, under load:
//! let update = xds.roll_routes(&envoy, &[dynamic::route_config("main", new_routes)]).await?;
//! assert!(update.applied());
//! ```
//!
//! Each resource type has a directory of its own (`lds/`, `rds/`), watched by Envoy
//! (`path_config_source.watched_directory`): an update is written to a temporary file in that
//! directory and renamed over the resource file, the one move Envoy reacts to, so it never
//! reads a half-written file. The file is a `DiscoveryResponse` in JSON with a new
//! `version_info` each time.
//!
//! Whether Envoy took an update is read from its own counters, never guessed from time:
//! `listener_manager.lds.update_success` / `update_rejected` for listeners,
//! `http.<prefix>.rds.<route table>.update_success` / `update_rejected` for route tables;
//! after an accepted listener update, the new listener (or filter chain) must also have
//! warmed (`listener_manager.total_listeners_warming` back to 0).
//!
//! Listeners keep their address across updates: a listener updated with the same name and the
//! same configured address (port 0 included) keeps its socket, so clients keep connecting to
//! the port they learnt at start. A listener that only changes its filter chains is updated in
//! place: its old chain drains (`--drain-time-s`, see [`crate::envoy::Options`]) while new
//! connections get the new one.
//!
//! The files are written as given: the wasm runtime only (`MESH_RUNTIME=native` adapts the
//! bootstrap Envoy starts on, not the resources served here; see [`crate::runtime`]).

// Test tooling: JSON values built here have the shape indexed.
#![allow(clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bootstrap;
use crate::envoy::Envoy;
use crate::tempdir;
use crate::Error;

/// How long [`Xds::roll_listeners`] and [`Xds::roll_routes`] wait for Envoy to take or refuse
/// an update (a new wasm VM is compiled on the main thread, then on every worker).
pub const UPDATE_TIMEOUT: Duration = Duration::from_secs(30);

const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";

/// What Envoy made of an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// Taken (and, for listeners, warmed), this long after the file was renamed into place.
    Applied(Duration),
    /// Refused (the `update_rejected` counter moved): Envoy keeps what it had.
    Rejected(Duration),
}

impl Update {
    pub fn applied(self) -> bool {
        matches!(self, Update::Applied(_))
    }

    /// Time from the rename to Envoy's verdict.
    pub fn after(self) -> Duration {
        match self {
            Update::Applied(d) | Update::Rejected(d) => d,
        }
    }
}

/// The files an Envoy reads its listeners and route tables from.
pub struct Xds {
    dir: tempdir::Dir,
    version: u64,
}

/// A route table (`RouteConfiguration`) named `name` with one virtual host for every domain,
/// as [`bootstrap::listener`] builds inline (the upstream sees `x-envoy-attempt-count`).
pub fn route_config(name: &str, routes: Vec<Value>) -> Value {
    json!({
        "@type": ROUTE_TYPE,
        "name": name,
        "virtual_hosts": [{
            "name": name, "domains": ["*"], "routes": routes,
            "include_request_attempt_count": true
        }]
    })
}

impl Xds {
    /// Empty resource directories in a temporary directory named after `tag`.
    pub fn new(tag: &str) -> Result<Xds, Error> {
        let dir = tempdir::Dir::new(&format!("xds-{tag}"))?;
        std::fs::create_dir_all(dir.path().join("lds"))?;
        std::fs::create_dir_all(dir.path().join("rds"))?;
        Ok(Xds { dir, version: 0 })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, kind: &str) -> PathBuf {
        self.dir.path().join(kind).join(format!("{kind}.json"))
    }

    /// The `ConfigSource` of one resource type: its file, its directory watched for moves.
    fn config_source(&self, kind: &str) -> Value {
        json!({
            "path_config_source": {
                "path": self.file(kind).display().to_string(),
                "watched_directory": {"path": self.dir.path().join(kind).display().to_string()}
            },
            "resource_api_version": "V3"
        })
    }

    /// A bootstrap with an admin interface on a free port, these static clusters, and the
    /// listeners read from this directory (write them with [`Xds::write_listeners`] first).
    pub fn bootstrap(&self, clusters: Vec<Value>) -> Value {
        let mut b = bootstrap::bootstrap(Vec::new(), clusters);
        if let Some(statics) = b["static_resources"].as_object_mut() {
            statics.remove("listeners");
        }
        b["dynamic_resources"] = json!({"lds_config": self.config_source("lds")});
        // Dynamic resources need a node, whoever serves them.
        b["node"] = json!({"id": "mesh-test", "cluster": "mesh-test"});
        b
    }

    /// [`bootstrap::listener`] whose routes come from the route table `route_config_name` of
    /// this directory (RDS) instead of an inline one.
    pub fn listener(&self, name: &str, route_config_name: &str, http_filters: Vec<Value>) -> Value {
        let mut l = bootstrap::listener(name, Vec::new(), http_filters);
        let hcm = &mut l["filter_chains"][0]["filters"][0]["typed_config"];
        if let Some(hcm) = hcm.as_object_mut() {
            hcm.remove("route_config");
            hcm.insert(
                "rds".to_owned(),
                json!({
                    "route_config_name": route_config_name,
                    "config_source": self.config_source("rds")
                }),
            );
        }
        l
    }

    /// Writes the listeners (whole set: a listener left out is removed) without waiting.
    pub fn write_listeners(&mut self, listeners: &[Value]) -> Result<(), Error> {
        let resources: Vec<Value> = listeners
            .iter()
            .map(|l| {
                let mut l = l.clone();
                l["@type"] = json!(LISTENER_TYPE);
                l
            })
            .collect();
        crate::envoy::check_modules(&Value::Array(resources.clone()).to_string())?;
        self.write("lds", resources)
    }

    /// Writes the route tables (whole set) without waiting.
    pub fn write_routes(&mut self, route_configs: &[Value]) -> Result<(), Error> {
        let resources = route_configs
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r["@type"] = json!(ROUTE_TYPE);
                r
            })
            .collect();
        self.write("rds", resources)
    }

    /// A `DiscoveryResponse` with a new version, written next to the resource file and renamed
    /// over it.
    fn write(&mut self, kind: &str, resources: Vec<Value>) -> Result<(), Error> {
        self.version += 1;
        let response = json!({"version_info": self.version.to_string(), "resources": resources});
        let target = self.file(kind);
        let temp = self
            .dir
            .path()
            .join(kind)
            .join(format!(".{kind}.json.{}", self.version));
        std::fs::write(&temp, serde_json::to_vec_pretty(&response)?)?;
        std::fs::rename(&temp, &target)?;
        Ok(())
    }

    /// Writes the listeners and waits until Envoy has taken them (and warmed what is new) or
    /// refused them.
    pub async fn roll_listeners(
        &mut self,
        envoy: &Envoy,
        listeners: &[Value],
    ) -> Result<Update, Error> {
        let counters = Counters::lds();
        let before = counters.read(envoy)?;
        let start = Instant::now();
        self.write_listeners(listeners)?;
        let update = counters.wait(envoy, before, start).await?;
        if update.applied() {
            wait_stat(envoy, "listener_manager.total_listeners_warming", 0, start).await?;
            return Ok(Update::Applied(start.elapsed()));
        }
        Ok(update)
    }

    /// Writes the route tables and waits until every connection manager that reads them has
    /// taken them or one has refused them.
    pub async fn roll_routes(
        &mut self,
        envoy: &Envoy,
        route_configs: &[Value],
    ) -> Result<Update, Error> {
        let names: Vec<String> = route_configs
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect();
        let counters = Counters::rds(&names);
        let before = counters.read(envoy)?;
        let start = Instant::now();
        self.write_routes(route_configs)?;
        counters.wait(envoy, before, start).await
    }
}

/// The success and rejection counters of one resource type, summed over the stats matching.
struct Counters {
    success: String,
    rejected: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    success: u64,
    rejected: u64,
}

impl Counters {
    fn lds() -> Counters {
        Counters {
            success: "^listener_manager\\.lds\\.update_success$".to_owned(),
            rejected: "^listener_manager\\.lds\\.update_rejected$".to_owned(),
        }
    }

    /// `http.<prefix>.rds.<name>.update_*` of every connection manager reading these tables.
    fn rds(names: &[String]) -> Counters {
        let names: Vec<String> = names.iter().map(|n| n.replace('.', "\\.")).collect();
        let any = names.join("|");
        Counters {
            success: format!("^http\\..*\\.rds\\.({any})\\.update_success$"),
            rejected: format!("^http\\..*\\.rds\\.({any})\\.update_rejected$"),
        }
    }

    fn read(&self, envoy: &Envoy) -> Result<Seen, Error> {
        let sum = |re: &str| -> Result<(u64, usize), Error> {
            let stats = envoy.stats(re)?;
            Ok((stats.iter().map(|(_, v)| v).sum(), stats.len()))
        };
        let (success, n) = sum(&self.success)?;
        let (rejected, _) = sum(&self.rejected)?;
        if n == 0 {
            return Err(format!("no stat matches {:?}", self.success).into());
        }
        Ok(Seen { success, rejected })
    }

    async fn wait(&self, envoy: &Envoy, before: Seen, start: Instant) -> Result<Update, Error> {
        loop {
            let now = tokio::task::block_in_place(|| self.read(envoy))?;
            if now.rejected > before.rejected {
                return Ok(Update::Rejected(start.elapsed()));
            }
            if now.success > before.success {
                return Ok(Update::Applied(start.elapsed()));
            }
            if start.elapsed() > UPDATE_TIMEOUT {
                return Err(format!(
                    "Envoy neither took nor refused the update within {UPDATE_TIMEOUT:?} \
                     ({} / {} still {before:?})",
                    self.success, self.rejected
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until the admin stat `name` reads `want` (at most [`UPDATE_TIMEOUT`] after `start`).
pub async fn wait_stat(envoy: &Envoy, name: &str, want: u64, start: Instant) -> Result<(), Error> {
    loop {
        let now = tokio::task::block_in_place(|| envoy.stat(name))?;
        if now == Some(want) {
            return Ok(());
        }
        if start.elapsed() > UPDATE_TIMEOUT {
            return Err(format!("{name} is {now:?}, not {want}, after {UPDATE_TIMEOUT:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
