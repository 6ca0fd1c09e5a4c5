//! The deadline stage: the adapter-facing table of contents of the filter.
//!
//! Request headers: strip client copies of the router's timeout headers, read the honoured
//! incoming deadlines, decide ([`crate::budget::decide`]), then either reject (504 /
//! DEADLINE_EXCEEDED) or tell the router the budget (`x-envoy-upstream-rq-timeout-ms`, the
//! per-try header) and propagate it (`grpc-timeout` for gRPC, `x-envoy-expected-rq-timeout-ms`).
//! Response headers: when the router timed the request out, count it, and turn the gRPC
//! UNAVAILABLE that Envoy maps a 504 to into DEADLINE_EXCEEDED.

use crate::budget::{decide, millis_floor, Decision};
use crate::config::{Config, EXPECTED_TIMEOUT, GRPC_TIMEOUT};
use crate::grpc_timeout;
use mesh_kit::host::Property;
use mesh_kit::reply::{GrpcCode, Reply};
use mesh_kit::stage::{Cx, Flow, Stage};
use mesh_kit::values::format_duration;
use std::time::{Duration, UNIX_EPOCH};

pub const UPSTREAM_TIMEOUT: &str = "x-envoy-upstream-rq-timeout-ms";
pub const PER_TRY_TIMEOUT: &str = "x-envoy-upstream-rq-per-try-timeout-ms";

/// Envoy response flag UT: upstream request timeout.
const FLAG_UPSTREAM_TIMEOUT: u64 = 0x4;

mesh_kit::stats! {
    /// The deadline stage's stats, per route.
    pub enum Stat {
        RqTotal = counter("rq_total"),
        RqExpired = counter("rq_expired"),
        RqTimeout = counter("rq_timeout"),
        InvalidHeader = counter("invalid_header"),
        ConfigError = counter("config_error"),
    }
}

pub struct Deadline;

#[derive(Default)]
pub struct State {
    /// A budget was given to the router for this request.
    active: bool,
}

impl Stage for Deadline {
    const NAME: &'static str = "mesh.deadline";
    type Stat = Stat;

    type Config = Config;
    type Request = State;

    fn describe(c: &Config) -> String {
        match c.per_try_timeout {
            Some(p) => format!("{} ({p}/try)", c.timeout),
            None => c.timeout.to_string(),
        }
    }

    fn new(_config: &Config, _host: &dyn mesh_kit::host::Host) -> Self {
        Deadline
    }

    fn on_request_headers(&self, cx: &mut Cx<'_, Self>) -> Flow {
        cx.inc(Stat::RqTotal);
        cx.ex.remove_header(UPSTREAM_TIMEOUT);
        cx.ex.remove_header(PER_TRY_TIMEOUT);

        let (incoming, invalid) = incoming_deadline(cx);
        if invalid > 0 {
            cx.stats.add(cx.host(), Stat::InvalidHeader, invalid);
        }
        let elapsed = time_spent_here(cx);
        match decide(&cx.config.limits(), incoming, elapsed) {
            Decision::Expired { remaining } => {
                cx.inc(Stat::RqExpired);
                let message = format!(
                    "deadline exceeded: {} left, below min_budget {}",
                    format_duration(remaining),
                    cx.config.min_budget
                );
                Flow::Reject(
                    Reply::new(
                        504,
                        GrpcCode::DeadlineExceeded,
                        "deadline_exceeded",
                        message,
                    )
                    .with_error_info(),
                )
            }
            Decision::Proceed { budget, per_try } => {
                let ms = millis_floor(budget).to_string();
                cx.ex.set_header(UPSTREAM_TIMEOUT, &ms);
                if let Some(p) = per_try {
                    cx.ex
                        .set_header(PER_TRY_TIMEOUT, &millis_floor(p).to_string());
                }
                if cx.config.propagate {
                    if cx.ex.is_grpc() {
                        cx.ex
                            .set_header(GRPC_TIMEOUT, &grpc_timeout::format(budget));
                    }
                    cx.ex.set_header(EXPECTED_TIMEOUT, &ms);
                }
                cx.state.active = true;
                Flow::Continue
            }
        }
    }

    fn on_response_headers(&self, cx: &mut Cx<'_, Self>) {
        if !cx.state.active {
            return;
        }
        let flags = cx.ex.int(Property::ResponseFlags).unwrap_or(0);
        if flags & FLAG_UPSTREAM_TIMEOUT == 0 {
            return;
        }
        if cx.ex.is_grpc() {
            // Envoy maps its 504 to UNAVAILABLE for gRPC; a deadline is DEADLINE_EXCEEDED.
            if cx.ex.response_header("grpc-status").as_deref() == Some("14") {
                cx.inc(Stat::RqTimeout);
                cx.ex.set_response_header("grpc-status", "4");
                cx.ex.set_response_header(
                    "grpc-message",
                    "deadline exceeded: upstream request timeout",
                );
            }
        } else if cx.ex.response_header(":status").as_deref() == Some("504") {
            cx.inc(Stat::RqTimeout);
        }
    }
}

/// The smallest valid incoming deadline among the honoured headers, and how many were invalid.
fn incoming_deadline(cx: &Cx<'_, Deadline>) -> (Option<Duration>, i64) {
    let mut smallest: Option<Duration> = None;
    let mut invalid = 0;
    for name in &cx.config.honor {
        for value in cx.ex.header_values(name) {
            match parse_deadline(name, value) {
                Some(d) => smallest = Some(smallest.map_or(d, |s| s.min(d))),
                None => invalid += 1,
            }
        }
    }
    (smallest, invalid)
}

/// `grpc-timeout` uses the gRPC wire format; every other honoured header is whole milliseconds.
pub fn parse_deadline(name: &str, value: &str) -> Option<Duration> {
    if name == GRPC_TIMEOUT {
        return grpc_timeout::parse(value);
    }
    if value.is_empty() || value.len() > 12 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().map(Duration::from_millis)
}

/// Time since Envoy received the request (`request.time`), zero when unknown.
fn time_spent_here(cx: &Cx<'_, Deadline>) -> Duration {
    let Some(start_nanos) = cx.ex.int(Property::RequestTime) else {
        return Duration::ZERO;
    };
    let start = UNIX_EPOCH + Duration::from_nanos(start_nanos);
    cx.ex
        .now()
        .duration_since(start)
        .unwrap_or(Duration::ZERO)
        .min(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute, so these tests also run compiled to
    // wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn millisecond_headers_are_digits_only() {
        assert_eq!(
            parse_deadline(EXPECTED_TIMEOUT, "300"),
            Some(Duration::from_millis(300))
        );
        assert_eq!(parse_deadline(EXPECTED_TIMEOUT, "0"), Some(Duration::ZERO));
        for bad in ["", "-1", "1.5", "abc", "1e3", "9999999999999", " 5"] {
            assert_eq!(parse_deadline(EXPECTED_TIMEOUT, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grpc_timeout_uses_the_grpc_format() {
        assert_eq!(
            parse_deadline(GRPC_TIMEOUT, "300m"),
            Some(Duration::from_millis(300))
        );
        assert_eq!(parse_deadline(GRPC_TIMEOUT, "300"), None);
    }
}
