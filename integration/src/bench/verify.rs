//! The functional check of a configuration: what the upstream and the caller saw
//! ([`Observed`]) must show that each filter did its work ([`verify`]).
//!
//! Our filters' metrics are read in the runtime's own names: `mesh_<stage>_<stat>` for the wasm
//! modules (labels from the bootstrap's `stats_tags`), `envoy_mesh_<stage>_<stat>` for the
//! native module (Envoy's prefix, real labels); the `route` label is the same in both.

use super::{Kind, Stage, CLIENT_ID, LOCAL_RATE_LIMIT_PREFIX, STAT_PREFIX, TRACEPARENT};
use crate::client::Response;
use crate::metrics::Metrics;

/// What the upstream and the caller saw, for the functional check of a configuration: one
/// request to `/proxied/fail` (answered 503 by the upstream), then `/proxied/echo` and
/// `/direct`.
pub struct Observed {
    /// The request headers the upstream received on `/proxied/echo`.
    pub upstream: Vec<(String, String)>,
    /// The response to `/direct`.
    pub direct: Response,
    /// `/stats/prometheus` of the measured Envoy after those requests.
    pub metrics: Metrics,
}

impl Observed {
    fn upstream_header(&self, name: &str) -> Option<&str> {
        self.upstream
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A counter of one of Envoy's own filters on the measured listener.
    fn envoy_counter(&self, name: &str, prefix_label: &str, prefix: &str) -> f64 {
        self.metrics
            .get(name, &[(prefix_label, prefix)])
            .unwrap_or(0.0)
    }
}

/// The Prometheus name of our stat `mesh_<stage>_<stat>` in the runtime `kind` runs.
fn ours(kind: Kind, wasm_name: &str) -> String {
    if kind.is_native_module() {
        format!("envoy_{wasm_name}")
    } else {
        wasm_name.to_owned()
    }
}

/// Checks that each filter of a configuration visibly did its work; the error says what is
/// missing.
pub fn verify(kind: Kind, seen: &Observed) -> Result<(), String> {
    let mut missing = Vec::new();
    match kind {
        Kind::Calibration => {
            if seen.upstream_header("x-calibration-seen") != Some("1") {
                missing.push("the upstream did not see x-calibration-seen: 1".to_owned());
            }
            if seen.direct.header("x-calibration") != Some("1") {
                missing.push("the direct response has no x-calibration: 1".to_owned());
            }
        }
        Kind::NativeEmpty => {
            // Loaded and configured: the module defines its panics counter at configuration
            // time (at 0), and nothing of ours touches the request.
            if seen.metrics.get("envoy_mesh_native_panics", &[]).is_none() {
                missing.push(
                    "envoy_mesh_native_panics is missing: the module did not load".to_owned(),
                );
            }
            for header in ["x-spiffe-id", "b3"] {
                if let Some(v) = seen.upstream_header(header) {
                    missing.push(format!(
                        "the upstream saw {header}: {v} with no stage configured"
                    ));
                }
            }
        }
        Kind::NativeRbac => {
            let prefix = ("envoy_http_conn_manager_prefix", STAT_PREFIX);
            if seen.envoy_counter("envoy_http_rbac_allowed", prefix.0, prefix.1) < 1.0 {
                missing.push("http.bench.rbac.allowed did not count".to_owned());
            }
        }
        Kind::NativeRouteTimeout => {
            let t = seen
                .upstream_header("x-envoy-expected-rq-timeout-ms")
                .and_then(|v| v.parse::<u64>().ok());
            if t != Some(15000) {
                missing.push(format!(
                    "the upstream saw x-envoy-expected-rq-timeout-ms {t:?}, not the route's 15000"
                ));
            }
        }
        Kind::NativeLocalRateLimit => {
            let prefix = ("envoy_local_http_ratelimit_prefix", LOCAL_RATE_LIMIT_PREFIX);
            if seen.envoy_counter("envoy_http_local_rate_limit_ok", prefix.0, prefix.1) < 1.0 {
                missing.push(format!(
                    "{LOCAL_RATE_LIMIT_PREFIX}.http_local_rate_limit.ok did not count"
                ));
            }
            let limited = seen.envoy_counter(
                "envoy_http_local_rate_limit_rate_limited",
                prefix.0,
                prefix.1,
            );
            if limited > 0.0 {
                missing.push(format!(
                    "Envoy's local rate limit limited {limited} requests"
                ));
            }
        }
        _ => {}
    }
    for stage in kind.stages() {
        check_stage(kind, stage, seen, &mut missing);
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("check failed: {}", missing.join("; ")))
    }
}

/// What shows that `stage` did its work, in either runtime.
fn check_stage(kind: Kind, stage: Stage, seen: &Observed, missing: &mut Vec<String>) {
    let proxied = [("route", "proxied")];
    let counted = |name: &str| seen.metrics.get(&ours(kind, name), &proxied);
    match stage {
        Stage::SpiffeIdentity => {
            if seen.upstream_header("x-spiffe-id") != Some(CLIENT_ID) {
                missing.push(format!("the upstream did not see x-spiffe-id: {CLIENT_ID}"));
            }
        }
        Stage::RateLimit => {
            if counted("mesh_rate_limit_allowed").unwrap_or(0.0) < 1.0 {
                missing.push(format!(
                    "{}{{route=\"proxied\"}} did not count",
                    ours(kind, "mesh_rate_limit_allowed")
                ));
            }
            // The limit never triggers: what is measured is the stage's work, not 429s.
            if let Some(limited) = counted("mesh_rate_limit_limited").filter(|n| *n > 0.0) {
                missing.push(format!("the rate limit limited {limited} requests"));
            }
            // Every request is keyed by the client's verified identity.
            if let Some(unkeyed) = counted("mesh_rate_limit_unkeyed").filter(|n| *n > 0.0) {
                missing.push(format!(
                    "the rate limit found no verified identity on {unkeyed} requests"
                ));
            }
        }
        Stage::Deadline => {
            let t = seen
                .upstream_header("x-envoy-expected-rq-timeout-ms")
                .and_then(|v| v.parse::<u64>().ok());
            if !t.is_some_and(|t| (14000..=15000).contains(&t)) {
                missing.push(format!(
                    "the upstream saw x-envoy-expected-rq-timeout-ms {t:?}, not the deadline's 15 s budget"
                ));
            }
        }
        Stage::TracePropagation => {
            let tp = seen.upstream_header("traceparent").unwrap_or("");
            let trace = TRACEPARENT.get(3..35).unwrap_or("");
            if !tp.contains(trace) || tp == TRACEPARENT {
                missing.push(format!(
                    "the upstream saw traceparent {tp:?}, not the same trace with a new span"
                ));
            }
            if !seen
                .upstream_header("b3")
                .is_some_and(|b| b.starts_with(trace))
            {
                missing.push("the upstream saw no b3 header of the trace".to_owned());
            }
        }
        // The failed call: every outcome is classified, and the native module shows no
        // breaker series before one moves (its state gauge appears on the first transition).
        Stage::CircuitBreaker => {
            if counted("mesh_circuit_breaker_failures").unwrap_or(0.0) < 1.0 {
                missing.push(format!(
                    "{}{{route=\"proxied\"}} did not count the failed call",
                    ours(kind, "mesh_circuit_breaker_failures")
                ));
            }
        }
        Stage::RetryBudget => {
            if counted("mesh_retry_budget_rq_total").unwrap_or(0.0) < 1.0 {
                missing.push(format!(
                    "{}{{route=\"proxied\"}} did not count",
                    ours(kind, "mesh_retry_budget_rq_total")
                ));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn response(headers: &[(&str, &str)]) -> Response {
        Response {
            status: 200,
            headers: pairs(headers),
            trailers: Vec::new(),
            body: bytes::Bytes::from_static(b"ok\n"),
            elapsed: std::time::Duration::ZERO,
        }
    }

    /// What the upstream sees when every stage did its work.
    fn upstream() -> Vec<(String, String)> {
        pairs(&[
            ("x-spiffe-id", CLIENT_ID),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01",
            ),
            ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-1"),
            ("x-envoy-expected-rq-timeout-ms", "14999"),
        ])
    }

    const WASM_METRICS: &str = "mesh_circuit_breaker_failures{route=\"proxied\"} 1
mesh_retry_budget_rq_total{route=\"proxied\"} 1
mesh_rate_limit_allowed{route=\"proxied\"} 2
";

    #[test]
    fn the_functional_check_names_what_is_missing() {
        let seen = Observed {
            upstream: upstream(),
            direct: response(&[]),
            metrics: Metrics::parse(WASM_METRICS),
        };
        assert_eq!(verify(Kind::Suite, &seen), Ok(()));
        let err = verify(Kind::Calibration, &seen).unwrap_err();
        assert!(err.contains("x-calibration-seen"), "{err}");
        assert!(verify(Kind::NativeRbac, &seen).is_err());
        assert!(verify(Kind::NativeLocalRateLimit, &seen).is_err());
        // The native module's metrics carry Envoy's prefix: the wasm names are not its.
        let err = verify(Kind::NativeSuite, &seen).unwrap_err();
        assert!(err.contains("envoy_mesh_rate_limit_allowed"), "{err}");
    }

    #[test]
    fn the_native_module_is_checked_in_its_own_metric_names() {
        let native: String = WASM_METRICS
            .lines()
            .map(|l| format!("envoy_{l}\n"))
            .collect();
        let seen = Observed {
            upstream: upstream(),
            direct: response(&[]),
            metrics: Metrics::parse(&native),
        };
        assert_eq!(verify(Kind::NativeSuite, &seen), Ok(()));
        assert_eq!(verify(Kind::NativeStage(Stage::RateLimit), &seen), Ok(()));
        assert!(verify(Kind::Wasm(Stage::RateLimit), &seen).is_err());
    }

    #[test]
    fn a_rate_limit_that_limited_or_went_unkeyed_fails_the_check() {
        let seen = Observed {
            upstream: upstream(),
            direct: response(&[]),
            metrics: Metrics::parse(&format!(
                "{WASM_METRICS}mesh_rate_limit_limited{{route=\"proxied\"}} 3\n"
            )),
        };
        let err = verify(Kind::Wasm(Stage::RateLimit), &seen).unwrap_err();
        assert!(err.contains("limited 3"), "{err}");
        let unkeyed = Observed {
            upstream: upstream(),
            direct: response(&[]),
            metrics: Metrics::parse(&format!(
                "{WASM_METRICS}mesh_rate_limit_unkeyed{{route=\"proxied\"}} 2\n"
            )),
        };
        let err = verify(Kind::Wasm(Stage::RateLimit), &unkeyed).unwrap_err();
        assert!(err.contains("no verified identity on 2"), "{err}");
        let local = Observed {
            upstream: upstream(),
            direct: response(&[]),
            metrics: Metrics::parse(&format!(
                "envoy_http_local_rate_limit_ok{{envoy_local_http_ratelimit_prefix=\"{LOCAL_RATE_LIMIT_PREFIX}\"}} 5\n"
            )),
        };
        assert_eq!(verify(Kind::NativeLocalRateLimit, &local), Ok(()));
    }
}
