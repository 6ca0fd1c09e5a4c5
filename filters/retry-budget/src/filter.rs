//! The retry-budget stage: the adapter-facing table of contents of the filter.
//!
//! Request headers: strip client copies of the router's retry headers, reserve retries from the
//! shared budget ([`Budget::admit`], compare-and-swap) and tell the router: `x-envoy-retry-on`,
//! `x-envoy-retry-grpc-on`, `x-envoy-max-retries` (0 when the budget is empty) and, when
//! configured, the per-try timeout. Response headers / trailers: a failed gRPC call whose
//! retries the budget cut short carries `grpc-retry-pushback-ms: -1` (gRPC A6), so clients stop
//! retrying on their own. End of stream: withdraw the retries the router made
//! (`upstream.request_attempt_count` − 1) and give the rest of the reservation back.

use crate::budget::{Budget, Reservation};
use crate::config::Config;
use mesh_kit::host::{Host, Property};
use mesh_kit::shared::{update, Label, CAS_TRIES};
use mesh_kit::stage::{Cx, Flow, Stage};

pub const RETRY_ON: &str = "x-envoy-retry-on";
pub const RETRY_GRPC_ON: &str = "x-envoy-retry-grpc-on";
pub const MAX_RETRIES: &str = "x-envoy-max-retries";
pub const PER_TRY_TIMEOUT: &str = "x-envoy-upstream-rq-per-try-timeout-ms";
pub const PUSHBACK: &str = "grpc-retry-pushback-ms";

mesh_kit::stats! {
    /// The budget's stats, per route or per cluster (`scope`).
    pub enum Stat {
        RqTotal = counter("rq_total"),
        Retries = counter("retries"),
        BudgetExhausted = counter("budget_exhausted"),
        Available = gauge("retries_available"),
        ConfigError = counter("config_error"),
        StateError = counter("state_error"),
    }
}

pub struct RetryBudget;

#[derive(Default)]
pub struct State {
    key: Option<std::rc::Rc<str>>,
    label: Label,
    reservation: Option<Reservation>,
}

impl Stage for RetryBudget {
    const NAME: &'static str = "mesh.retry_budget";
    type Stat = Stat;

    type Config = Config;
    type Request = State;

    fn describe(c: &Config) -> String {
        format!(
            "{} within {}%+{}/s",
            c.max_retries,
            c.retry_ratio.get() * 100.0,
            c.min_retries_per_second
        )
    }

    fn new(_config: &Config, _host: &dyn Host) -> Self {
        RetryBudget
    }

    fn on_request_headers(&self, cx: &mut Cx<'_, Self>) -> Flow {
        cx.ex.remove_header(RETRY_ON);
        cx.ex.remove_header(RETRY_GRPC_ON);
        cx.ex.remove_header(MAX_RETRIES);
        if cx.route_config_invalid {
            // Failure policy: fail open to "no retries".
            cx.ex.set_header(MAX_RETRIES, "0");
            return Flow::Continue;
        }
        let label = cx.config.scope.label(cx.ex);
        let stats = cx.stats_for(&label);
        stats.inc(cx.host(), Stat::RqTotal);
        let key = cx.state_key(&label);
        let settings = cx.config.settings();
        let now = cx.ex.now_us();
        let reserved = update(cx.host(), &key, CAS_TRIES, |bytes| {
            let mut budget = bytes.and_then(Budget::decode).unwrap_or_default();
            let r = budget.admit(&settings, now);
            (Some(budget.encode()), r)
        });
        let reservation = match reserved {
            Ok(r) => r,
            Err(e) => {
                stats.inc(cx.host(), Stat::StateError);
                log::warn!(
                    "{}: {} {:?}: budget update failed ({e:?}); no retries",
                    Self::NAME,
                    label.kind,
                    label.name
                );
                cx.ex.set_header(MAX_RETRIES, "0");
                return Flow::Continue;
            }
        };
        if reservation.retries == 0 && cx.config.max_retries > 0 {
            stats.inc(cx.host(), Stat::BudgetExhausted);
        }
        stats.set(
            cx.host(),
            Stat::Available,
            u64::from(reservation.available_after),
        );

        let retry_on = cx.config.retry_on_header();
        if !retry_on.is_empty() {
            cx.ex.set_header(RETRY_ON, &retry_on);
        }
        let retry_grpc_on = cx.config.retry_grpc_on_header();
        if !retry_grpc_on.is_empty() {
            cx.ex.set_header(RETRY_GRPC_ON, &retry_grpc_on);
        }
        cx.ex
            .set_header(MAX_RETRIES, &reservation.retries.to_string());
        if let Some(per_try) = cx.config.per_try_timeout {
            // Never above a per-try timeout set before us (mesh.deadline caps it by the budget).
            let own = u64::try_from(per_try.get().as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let earlier = cx
                .ex
                .header(PER_TRY_TIMEOUT)
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|v| *v > 0);
            cx.ex.set_header(
                PER_TRY_TIMEOUT,
                &earlier.map_or(own, |e| e.min(own)).to_string(),
            );
        }
        *cx.state = State {
            key: Some(key),
            label,
            reservation: Some(reservation),
        };
        Flow::Continue
    }

    fn on_response_headers(&self, cx: &mut Cx<'_, Self>) {
        if pushback_applies(cx) && failed(cx.ex.response_header("grpc-status").as_deref()) {
            cx.ex.set_response_header(PUSHBACK, "-1");
        }
    }

    fn on_response_trailers(&self, cx: &mut Cx<'_, Self>) {
        if pushback_applies(cx) && failed(cx.ex.response_trailer("grpc-status").as_deref()) {
            cx.ex.set_response_trailer(PUSHBACK, "-1");
        }
    }

    fn on_log(&self, cx: &mut Cx<'_, Self>) {
        let Some(reservation) = cx.state.reservation.take() else {
            return;
        };
        let attempts = cx.ex.int(Property::AttemptCount).unwrap_or(0);
        let made = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX);
        let label = std::mem::take(&mut cx.state.label);
        let stats = cx.stats_for(&label);
        if made > 0 {
            stats.add(cx.host(), Stat::Retries, i64::from(made));
        }
        let settings = cx.config.settings();
        let now = cx.ex.now_us();
        let Some(key) = cx.state.key.take() else {
            return;
        };
        let settled = update(cx.host(), &key, CAS_TRIES, |bytes| {
            let mut budget = bytes.and_then(Budget::decode).unwrap_or_default();
            budget.settle(&settings, &reservation, made, now);
            let available = budget.available(&settings, now);
            (Some(budget.encode()), available)
        });
        match settled {
            Ok(available) => stats.set(cx.host(), Stat::Available, u64::from(available)),
            Err(e) => {
                stats.inc(cx.host(), Stat::StateError);
                log::warn!(
                    "{}: {} {:?}: retries not withdrawn ({e:?})",
                    Self::NAME,
                    label.kind,
                    label.name
                );
            }
        }
    }
}

/// A gRPC request whose retries the budget cut below `max_retries`.
fn pushback_applies(cx: &Cx<'_, RetryBudget>) -> bool {
    cx.ex.is_grpc() && cx.state.reservation.is_some_and(|r| r.limited)
}

fn failed(grpc_status: Option<&str>) -> bool {
    grpc_status.is_some_and(|s| s.trim() != "0")
}
