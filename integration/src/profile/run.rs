//! Runs the profile against a real Envoy: one measured Envoy with one mTLS listener per probe
//! configuration (and bare Envoy, the do-nothing probe, the suite, the calibration filter and
//! the counting probe), one client Envoy with a route and an mTLS cluster per listener, the
//! suite's calls counted, then the rounds.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::bench::driver::{self, Driver};
use crate::bench::{self, Kind, Modules, Route};
use crate::bootstrap::{self, Plugin, TlsFiles};
use crate::client;
use crate::envoy::{Envoy, Options};
use crate::profile::analysis::{counts_from_report, Counts, Measurement, Runs};
use crate::profile::catalogue::{
    self, Probe, BARE, CALIBRATION, COUNT, NONE, PROBE_ROOT_ID, SUITE,
};
use crate::profile::{Params, Profile};

/// What a profile run needs from its caller.
pub struct Setup {
    /// The load and the CPU sampling (its window and warm-up are replaced by the profile's).
    pub driver: Driver,
    /// `mesh_bench_probe`, `mesh_filters` and `mesh_bench_calibration`, by module name.
    pub modules: Modules,
    pub server_tls: TlsFiles,
    pub client_tls: TlsFiles,
    pub upstream: SocketAddr,
}

/// Warm-up requests per suite configuration before counting, and requests counted.
const COUNT_WARMUP: u32 = 3;
const COUNT_REQUESTS: u32 = 4;

fn probe_filter(module: &std::path::Path, config: &Value) -> Value {
    bootstrap::wasm_filter(
        PROBE_ROOT_ID,
        module,
        Plugin::json(config).in_vm(PROBE_ROOT_ID),
    )
}

/// Every listener of the measured Envoy: name, routes' metadata (if any), filters.
fn listeners(setup: &Setup, probes: &[Probe]) -> Result<Vec<(String, bool, Vec<Value>)>, String> {
    let probe = setup
        .modules
        .get(catalogue::PROBE_MODULE)
        .ok_or_else(|| {
            format!(
                "{}.wasm is missing: run `cargo build --release --target wasm32-wasip1 -p \
                 mesh-bench-probe` (make bench does)",
                catalogue::PROBE_MODULE
            )
        })?
        .clone();
    let mut out = vec![
        (BARE.to_owned(), false, vec![]),
        (
            NONE.to_owned(),
            false,
            vec![probe_filter(&probe, &json!({"op": "none"}))],
        ),
        (
            SUITE.to_owned(),
            false,
            bench::http_filters(Kind::Suite, &setup.modules)?,
        ),
        (
            CALIBRATION.to_owned(),
            false,
            bench::http_filters(Kind::Calibration, &setup.modules)?,
        ),
        (
            COUNT.to_owned(),
            false,
            vec![probe_filter(
                &probe,
                &json!({"op": "suite_counted", "suites": catalogue::suite_prefixes()}),
            )],
        ),
    ];
    for p in probes {
        out.push((
            p.listener.clone(),
            p.route_metadata,
            vec![probe_filter(&probe, &p.config(p.k))],
        ));
        if p.own_reference && p.shared_reference.is_none() {
            out.push((
                p.reference(),
                p.route_metadata,
                vec![probe_filter(&probe, &p.config(0))],
            ));
        }
    }
    Ok(out)
}

fn routes(with_metadata: bool) -> Vec<Value> {
    let mut routes = bench::measured_routes("0s");
    if with_metadata {
        for r in &mut routes {
            if let Some(o) = r.as_object_mut() {
                o.insert("metadata".to_owned(), catalogue::route_metadata());
            }
        }
    }
    routes
}

/// The client Envoy: `/<listener>/…` goes to that measured listener as `/…`.
fn client_bootstrap(measured: &Envoy, names: &[String], tls: &TlsFiles) -> Value {
    let routes: Vec<Value> = names
        .iter()
        .map(|n| {
            json!({
                "name": n,
                "match": {"prefix": format!("/{n}/")},
                "route": {"cluster": n, "timeout": "30s", "prefix_rewrite": "/"}
            })
        })
        .collect();
    let clusters: Vec<Value> = names
        .iter()
        .map(|n| bench::client_cluster(n, measured.listener(n), tls, crate::certs::SERVER_NAME))
        .collect();
    bootstrap::bootstrap(
        vec![bootstrap::listener("client", routes, vec![])],
        clusters,
    )
}

/// A blocking GET through the client Envoy.
fn get(
    entry: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<client::Response, String> {
    client::blocking(client::get(entry, path, headers)).map_err(|e| format!("GET {path}: {e}"))
}

/// Counts the suite's host calls per request on `route`: warm-up requests for every suite
/// configuration, a reset, [`COUNT_REQUESTS`] requests each, the report.
fn count(entry: SocketAddr, route: Route) -> Result<Vec<Counts>, String> {
    let path = match route {
        Route::Direct => format!("/{COUNT}/direct"),
        Route::Proxied => format!("/{COUNT}/proxied"),
    };
    let n = catalogue::suite_prefixes().len();
    let send = |extra: (&str, &str)| -> Result<client::Response, String> {
        let mut headers: Vec<(&str, &str)> = bench::LOAD_HEADERS.to_vec();
        headers.push(extra);
        let r = get(entry, &path, &headers)?;
        if r.status != 200 {
            return Err(format!(
                "the counting probe answered {} on {path}: {}",
                r.status,
                r.text().trim()
            ));
        }
        Ok(r)
    };
    let index: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    for i in &index {
        for _ in 0..COUNT_WARMUP {
            send(("x-probe-stages", i))?;
        }
    }
    send(("x-probe-reset", "1"))?;
    for i in &index {
        for _ in 0..COUNT_REQUESTS {
            send(("x-probe-stages", i))?;
        }
    }
    // The last request's on_log runs after its response is sent.
    std::thread::sleep(Duration::from_millis(200));
    let report = send(("x-probe-report", "1"))?;
    let json: Value = report
        .try_json()
        .map_err(|e| format!("the counting probe's report: {e}: {}", report.text()))?;
    counts_from_report(&json)
}

/// The profile: starts the Envoys, checks every listener, counts the suite's calls, measures the
/// rounds. Progress goes to `say`.
pub fn run(setup: &Setup, params: &Params, say: &dyn Fn(&str)) -> Result<Profile, String> {
    let started = Instant::now();
    let probes = selected(catalogue::probes(), params.only.as_deref());
    let listeners = listeners(setup, &probes)?;
    let measured_listeners: Vec<Value> = listeners
        .iter()
        .map(|(name, meta, filters)| {
            bench::measured_listener(name, routes(*meta), filters.clone(), &setup.server_tls)
        })
        .collect();
    let bootstrap = bootstrap::bootstrap(
        measured_listeners,
        vec![bench::static_cluster("upstream", setup.upstream)],
    );
    let measured =
        Envoy::start_with(&bootstrap, &Options::default()).map_err(driver::short_error)?;
    let names: Vec<String> = listeners.iter().map(|(n, _, _)| n.clone()).collect();
    let client = Envoy::start_with(
        &client_bootstrap(&measured, &names, &setup.client_tls),
        &Options::default(),
    )
    .map_err(|e| format!("client Envoy: {}", driver::short_error(e)))?;
    driver::to_load_core(setup.driver.pinned, client.pid())?;
    let entry = client.listener("client");
    say(&format!(
        "profile: {} listeners up ({:.1} s)",
        names.len(),
        started.elapsed().as_secs_f64()
    ));

    // Every listener answers on the routes it is measured on.
    for (name, _, _) in &listeners {
        if name == COUNT {
            continue;
        }
        let probe = probes
            .iter()
            .find(|p| p.listener == *name || p.reference() == *name);
        for route in [Route::Direct, Route::Proxied] {
            if probe.is_some_and(|p| !p.routes.has(route)) {
                continue;
            }
            let path = match route {
                Route::Direct => format!("/{name}/direct"),
                Route::Proxied => format!("/{name}/proxied"),
            };
            let r = get(entry, &path, &bench::LOAD_HEADERS)?;
            if r.status != 200 {
                return Err(format!(
                    "check failed: {path} answered {} ({}); measured Envoy log:\n{}",
                    r.status,
                    r.text().trim(),
                    tail(&measured.log(), 20)
                ));
            }
        }
    }

    let mut counts = BTreeMap::new();
    for route in [Route::Direct, Route::Proxied] {
        counts.insert(route, count(entry, route)?);
    }
    say("profile: the suite's host calls counted");

    let driver = Driver {
        seconds: params.seconds,
        warmup: params.warmup,
        ..setup.driver.clone()
    };
    let mut runs = Runs {
        rounds: params.rounds,
        measurements: Vec::new(),
    };
    let mut failures = Vec::new();
    for round in 0..params.rounds {
        for &v in &params.variants {
            let order = catalogue::schedule(&probes, v, round, params.chunk);
            say(&format!(
                "profile: round {}/{} {} ({} runs, {:.0} s elapsed)",
                round + 1,
                params.rounds,
                v.label(),
                order.len(),
                started.elapsed().as_secs_f64()
            ));
            for (pos, listener) in order.iter().enumerate() {
                let url = format!("http://{entry}/{listener}{}", v.path());
                match driver.measure(&measured, listener, &url, v.protocol, &bench::LOAD_HEADERS) {
                    Ok(s) => {
                        let cpu = s.cpu_per_request().unwrap_or(f64::NAN);
                        say(&format!(
                            "profile:   {listener:<12} {:>8.0} req/s {cpu:>7.1} µs/req{}",
                            s.rps(),
                            if s.errors > 0 {
                                format!("  {} errors", s.errors)
                            } else {
                                String::new()
                            }
                        ));
                        runs.measurements.push(Measurement {
                            round,
                            pos,
                            listener: listener.clone(),
                            variant: v,
                            cpu,
                            rps: s.rps(),
                            errors: s.errors,
                        });
                    }
                    Err(e) => {
                        say(&format!("profile:   {listener} failed: {e}"));
                        failures.push(format!("{} {listener}: {e}", v.label()));
                    }
                }
            }
        }
    }
    drop(client);
    drop(measured);
    Ok(Profile {
        params: params.clone(),
        probes,
        runs,
        counts,
        failures,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// The probes `only` names (all without it), with the probe whose `n = 0` run a selected probe
/// shares, in catalogue order.
pub fn selected(all: Vec<Probe>, only: Option<&[String]>) -> Vec<Probe> {
    let Some(only) = only else {
        return all;
    };
    let chosen: Vec<&Probe> = all.iter().filter(|p| only.contains(&p.id())).collect();
    let wanted: Vec<String> = all
        .iter()
        .filter(|p| {
            chosen.iter().any(|c| c.listener == p.listener)
                || chosen.iter().any(|c| {
                    c.shared_reference.is_some()
                        && p.own_reference
                        && p.shared_reference.is_none()
                        && p.reference() == c.reference()
                })
        })
        .map(|p| p.listener.clone())
        .collect();
    all.into_iter()
        .filter(|p| wanted.contains(&p.listener))
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all.iter()
        .skip(all.len().saturating_sub(lines))
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules the profile loads, found where `make build` and `make bench` put them.
pub fn modules() -> Result<Modules, String> {
    let mut m = Modules::new();
    for (name, build) in [
        (
            catalogue::PROBE_MODULE,
            "cargo build --release --target wasm32-wasip1 -p mesh-bench-probe",
        ),
        (bench::SUITE_MODULE, "make build"),
        (
            bench::CALIBRATION_MODULE,
            "cargo build --release --target wasm32-wasip1 -p mesh-bench-calibration",
        ),
    ] {
        let path: PathBuf = crate::envoy::wasm(name)
            .map_err(|_| format!("{name}.wasm is missing: run `{build}` (make bench does)"))?;
        m.insert(name.to_owned(), path);
    }
    Ok(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_selected_probe_brings_the_probe_whose_reference_it_shares() {
        let ids = |ps: &[Probe]| ps.iter().map(Probe::id).collect::<Vec<_>>();
        let only = vec![
            "suite_in_vm_once".to_owned(),
            "request_random_get".to_owned(),
        ];
        let got = selected(catalogue::probes(), Some(&only));
        assert_eq!(
            ids(&got),
            ["request_random_get", "suite_in_vm", "suite_in_vm_once"]
        );
        assert_eq!(
            selected(catalogue::probes(), None).len(),
            catalogue::probes().len()
        );
    }
}
