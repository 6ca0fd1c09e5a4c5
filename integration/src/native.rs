//! What only the tests of the native module itself need, beyond [`crate::runtime`]'s
//! adaptation of the shared tests: a per-route configuration given as raw text, the
//! module's metrics by their own names whatever the runtime, and a test build of
//! `libmesh_filters.so` loaded from its file.
//!
//! The test build ([`test_panic_module`]) has feature `native-test-panic`: a plugin
//! configuration may name a hook in `test_panic`, and requests carrying `x-mesh-test-panic`
//! then panic there. It lives in a target directory of its own, so that it never replaces the
//! real module, and a bootstrap loads it by path ([`native_filter_from`]), so that the Envoy
//! running it needs no search path of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::bootstrap::{native_filter, with_native_route_config};
use crate::envoy::workspace_root;
use crate::metrics::Metrics;
use crate::{wait, Error};

/// [`with_native_route_config`] with the per-route configuration given as text, valid JSON or
/// not, as Envoy passes it to the module.
pub fn with_native_route_config_text(route: Value, filter: &str, text: &str) -> Value {
    let mut route = with_native_route_config(route, filter, &json!({}));
    if let Some(value) = route.pointer_mut(&format!(
        "/typed_per_filter_config/{}/filter_config/value",
        filter.replace('~', "~0").replace('/', "~1")
    )) {
        *value = json!(text);
    }
    route
}

/// [`native_filter`] with the module loaded from the file `so`
/// (`dynamic_module_config.module.local.filename`) instead of by name from
/// `ENVOY_DYNAMIC_MODULES_SEARCH_PATH`.
pub fn native_filter_from(so: &Path, name: &str, configuration: &str) -> Value {
    let mut filter = native_filter(name, configuration);
    if let Some(config) = filter.pointer_mut("/typed_config/dynamic_module_config") {
        *config = json!({
            "module": {"local": {"filename": so.display().to_string()}},
            "metrics_namespace": "mesh"
        });
    }
    filter
}

/// `libmesh_filters.so` built with feature `native-test-panic`, in
/// `target/native-test-panic` (`$CARGO_TARGET_DIR/native-test-panic` if set): built once per
/// test process, a no-op when it is up to date. A cargo target directory of its own has its
/// own lock, so the build never waits on the `cargo test` running it.
pub fn test_panic_module() -> Result<PathBuf, Error> {
    static MODULE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"))
                .join("native-test-panic");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let args = [
                "build",
                "--profile",
                "native",
                "-p",
                "mesh-suite",
                "--features",
                "native-test-panic",
            ];
            let out = Command::new(cargo)
                .args(args)
                .current_dir(workspace_root())
                .env("CARGO_TARGET_DIR", &target)
                .output()
                .map_err(|e| format!("cargo {}: {e}", args.join(" ")))?;
            if !out.status.success() {
                return Err(format!(
                    "cargo {} failed:\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let so = target.join("native/libmesh_filters.so");
            if so.is_file() {
                Ok(so)
            } else {
                Err(format!("{} is missing after the build", so.display()))
            }
        })
        .clone()
        .map_err(Error::from)
}

/// The `/stats/prometheus` page of the Envoy whose admin interface is `admin`, parsed as it is:
/// the native module's metrics by their own names (`envoy_mesh_*`), under either runtime
/// (unlike [`crate::envoy::Envoy::metrics`], which names them as the wasm module does under
/// the native runtime).
pub async fn raw_metrics(admin: SocketAddr) -> Result<Metrics, Error> {
    let r = crate::client::get(admin, "/stats/prometheus", &[]).await?;
    if r.status != 200 {
        return Err(format!("/stats/prometheus on {admin}: status {}", r.status).into());
    }
    Ok(Metrics::parse(&r.text()))
}

/// Waits, at most [`wait::WAIT`], until the sample `name{labels}` of [`raw_metrics`] has
/// exactly the value `want`.
pub async fn wait_for_raw(
    admin: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    want: f64,
) -> Result<(), Error> {
    let what = format!("{name}{labels:?} = {want}");
    wait::eventually(&what, wait::WAIT, || async {
        let metrics = raw_metrics(admin).await.map_err(|e| e.to_string())?;
        match metrics.get(name, labels) {
            Some(v) if v == want => Ok(()),
            Some(_) => Err(metrics.looked_up()),
            None => Err(metrics.absent(name, labels)),
        }
    })
    .await
}
