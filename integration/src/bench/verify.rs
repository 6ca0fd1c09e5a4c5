//! The functional check of a configuration: what the upstream and the caller saw
//! ([`Observed`]) must show that each filter did its work ([`verify`]).

use super::{admin_stat, Kind, Reply, Stage, CLIENT_ID, TRACEPARENT};

/// What the upstream and the caller saw, for the functional check of a configuration.
pub struct Observed {
    /// The request headers the upstream received on `/proxied/echo`.
    pub upstream: Vec<(String, String)>,
    /// The response to `/direct`.
    pub direct: Reply,
    /// `/stats/prometheus` of the measured Envoy after those requests.
    pub prometheus: String,
    /// `/stats` of the measured Envoy after those requests.
    pub stats: String,
}

impl Observed {
    fn upstream_header(&self, name: &str) -> Option<&str> {
        self.upstream
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Checks that each filter of a configuration visibly did its work; the error says what is
/// missing.
pub fn verify(kind: Kind, seen: &Observed) -> Result<(), String> {
    let mut missing = Vec::new();
    if kind == Kind::Calibration {
        if seen.upstream_header("x-calibration-seen") != Some("1") {
            missing.push("the upstream did not see x-calibration-seen: 1".to_owned());
        }
        if seen.direct.header("x-calibration") != Some("1") {
            missing.push("the direct response has no x-calibration: 1".to_owned());
        }
    }
    if kind == Kind::NativeRbac
        && admin_stat(&seen.stats, "http.bench.rbac.allowed").unwrap_or(0) == 0
    {
        missing.push("http.bench.rbac.allowed did not count".to_owned());
    }
    if kind == Kind::NativeRouteTimeout {
        let t = seen
            .upstream_header("x-envoy-expected-rq-timeout-ms")
            .and_then(|v| v.parse::<u64>().ok());
        if t != Some(15000) {
            missing.push(format!(
                "the upstream saw x-envoy-expected-rq-timeout-ms {t:?}, not the route's 15000"
            ));
        }
    }
    for stage in kind.stages() {
        match stage {
            Stage::SpiffeIdentity => {
                if seen.upstream_header("x-spiffe-id") != Some(CLIENT_ID) {
                    missing.push(format!("the upstream did not see x-spiffe-id: {CLIENT_ID}"));
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
            Stage::CircuitBreaker => {
                if crate::envoy::prometheus_value(
                    &seen.prometheus,
                    "mesh_circuit_breaker_state",
                    &[("route", "proxied")],
                )
                .is_none()
                {
                    missing.push("no mesh_circuit_breaker_state{route=\"proxied\"}".to_owned());
                }
            }
            Stage::RetryBudget => {
                if crate::envoy::prometheus_value(
                    &seen.prometheus,
                    "mesh_retry_budget_rq_total",
                    &[("route", "proxied")],
                )
                .unwrap_or(0.0)
                    < 1.0
                {
                    missing.push(
                        "mesh_retry_budget_rq_total{route=\"proxied\"} did not count".to_owned(),
                    );
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("check failed: {}", missing.join("; ")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::bench::header_lines;

    #[test]
    fn the_functional_check_names_what_is_missing() {
        let seen = Observed {
            upstream: header_lines(&format!(
                "x-spiffe-id: {CLIENT_ID}\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01\nb3: 4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-1\nx-envoy-expected-rq-timeout-ms: 14999\n"
            )),
            direct: Reply::default(),
            prometheus: "mesh_circuit_breaker_state{route=\"proxied\"} 0\nmesh_retry_budget_rq_total{route=\"proxied\"} 1\n".to_owned(),
            stats: String::new(),
        };
        assert_eq!(verify(Kind::Suite, &seen), Ok(()));
        let err = verify(Kind::Calibration, &seen).unwrap_err();
        assert!(err.contains("x-calibration-seen"), "{err}");
        assert!(verify(Kind::NativeRbac, &seen).is_err());
    }
}
