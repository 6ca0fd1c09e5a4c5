//! The functional check of a configuration: what the upstream and the caller saw
//! ([`Observed`]) must show that each filter did its work ([`verify`]).

use super::{Kind, Stage, CLIENT_ID, STAT_PREFIX, TRACEPARENT};
use crate::client::Response;
use crate::metrics::Metrics;

/// What the upstream and the caller saw, for the functional check of a configuration.
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
        && seen
            .metrics
            .get(
                "envoy_http_rbac_allowed",
                &[("envoy_http_conn_manager_prefix", STAT_PREFIX)],
            )
            .unwrap_or(0.0)
            < 1.0
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
                if seen
                    .metrics
                    .get("mesh_circuit_breaker_state", &[("route", "proxied")])
                    .is_none()
                {
                    missing.push("no mesh_circuit_breaker_state{route=\"proxied\"}".to_owned());
                }
            }
            Stage::RetryBudget => {
                if seen
                    .metrics
                    .get("mesh_retry_budget_rq_total", &[("route", "proxied")])
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

    #[test]
    fn the_functional_check_names_what_is_missing() {
        let seen = Observed {
            upstream: pairs(&[
                ("x-spiffe-id", CLIENT_ID),
                ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"),
                ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-1"),
                ("x-envoy-expected-rq-timeout-ms", "14999"),
            ]),
            direct: response(&[]),
            metrics: Metrics::parse(
                "mesh_circuit_breaker_state{route=\"proxied\"} 0\nmesh_retry_budget_rq_total{route=\"proxied\"} 1\n",
            ),
        };
        assert_eq!(verify(Kind::Suite, &seen), Ok(()));
        let err = verify(Kind::Calibration, &seen).unwrap_err();
        assert!(err.contains("x-calibration-seen"), "{err}");
        assert!(verify(Kind::NativeRbac, &seen).is_err());
    }
}
