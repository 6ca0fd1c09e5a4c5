//! Why each host call the suite still makes per request is needed: the rows of "Why each call
//! remains" in BENCHMARKS.md, keyed like the counts (`<phase> <call>[ <argument>]`) and by the
//! stage that makes it (`None`: the adapter, for every stage). A counted call without a reason
//! here is shown as such, so a new call cannot enter the request path unexplained.

use crate::bench::Stage;

/// `(call, stage, why it is needed)`.
const REASONS: &[(&str, Option<Stage>, &str)] = &[
    (
        "request get_map request_headers",
        None,
        "every stage reads request headers; one read of the whole map serves all six (a \
         `get_map_value` per header would cost more from the second header on)",
    ),
    (
        "request get_current_time",
        Some(Stage::SpiffeIdentity),
        "the clock of the request, read once for every stage: the route cache's once-a-second \
         refresh of route metadata, the breaker's and the budget's windows, the bucket's refill",
    ),
    (
        "request get_property connection.id",
        Some(Stage::SpiffeIdentity),
        "the key of the per-connection memo: the peer's mTLS flag, URI SAN and certificate \
         digest (three properties) are read on a connection's first request only",
    ),
    (
        "request get_property xds.route_name",
        Some(Stage::SpiffeIdentity),
        "the route: the key of every stage's per-route configuration and of the route label of \
         its metrics; read once for all stages",
    ),
    (
        "request increment_metric",
        Some(Stage::SpiffeIdentity),
        "the decision counter (allowed / denied per route), what an operator alerts on",
    ),
    (
        "request set_map_value request_headers",
        Some(Stage::SpiffeIdentity),
        "forwards the verified identity (`x-spiffe-id`) to the upstream",
    ),
    (
        "request add_map_value request_headers",
        Some(Stage::SpiffeIdentity),
        "forwards the verified identity (`x-spiffe-id`) to the upstream (added: the request \
         had none)",
    ),
    (
        "request get_shared_data",
        Some(Stage::RateLimit),
        "the caller's token bucket, shared by every worker: a request is admitted against what \
         all workers spent",
    ),
    (
        "request set_shared_data",
        Some(Stage::RateLimit),
        "the bucket's debit (CAS). Batching debits per worker would let a client exceed its \
         limit by the batch × workers; the limit is the product",
    ),
    (
        "request increment_metric",
        Some(Stage::RateLimit),
        "the allowed counter per route",
    ),
    (
        "request get_shared_data",
        Some(Stage::CircuitBreaker),
        "the breaker's state, shared by every worker: a breaker another worker opened must fail \
         this request fast. Skipping the read while closed would let each worker send until \
         its own next read",
    ),
    (
        "log get_current_time",
        Some(Stage::CircuitBreaker),
        "the end of the request: its latency (the slow-call trigger) and the outcome's place in \
         the failure-rate window",
    ),
    (
        "log get_map_value response_headers",
        Some(Stage::CircuitBreaker),
        "`grpc-status` of the response: a gRPC failure is an HTTP 200",
    ),
    (
        "log get_property response.code",
        Some(Stage::CircuitBreaker),
        "the outcome's HTTP status (5xx counts as a failure)",
    ),
    (
        "log get_property response.flags",
        Some(Stage::CircuitBreaker),
        "resets, refused connections and timeouts, which have no upstream status",
    ),
    (
        "log get_shared_data",
        Some(Stage::CircuitBreaker),
        "records the outcome into the shared failure counters and window (written only when \
         they change)",
    ),
    (
        "log set_shared_data",
        Some(Stage::CircuitBreaker),
        "the outcome recorded (a failure, or a success that resets the consecutive count)",
    ),
    (
        "request get_property request.time",
        Some(Stage::Deadline),
        "when Envoy received the request: the time spent before this filter comes off the \
         caller's budget",
    ),
    (
        "request set_map_value request_headers",
        Some(Stage::Deadline),
        "replaces the caller's remaining budget for the next hop \
         (`x-envoy-expected-rq-timeout-ms`, `grpc-timeout`) and any router timeout set before \
         (`x-envoy-upstream-rq-timeout-ms`)",
    ),
    (
        "request add_map_value request_headers",
        Some(Stage::Deadline),
        "the router's timeout and the remaining budget for the next hop, added where the \
         request had none",
    ),
    (
        "request increment_metric",
        Some(Stage::Deadline),
        "the requests counter per route",
    ),
    (
        "response get_property response.flags",
        Some(Stage::Deadline),
        "whether the router's timeout fired (`UT`): the deadline-exceeded reply and metric",
    ),
    (
        "request get_shared_data",
        Some(Stage::RetryBudget),
        "the route's budget, shared by every worker: deposits and reservations of all workers",
    ),
    (
        "request set_shared_data",
        Some(Stage::RetryBudget),
        "this request's deposit and its reservation of retries (CAS). Batched deposits would \
         make the budget late, not cheaper per request: the reservation still needs the write",
    ),
    (
        "request set_map_value request_headers",
        Some(Stage::RetryBudget),
        "the router's retry policy for this request: `x-envoy-max-retries` (what the budget \
         grants), `x-envoy-retry-on`, `x-envoy-retry-grpc-on`",
    ),
    (
        "request add_map_value request_headers",
        Some(Stage::RetryBudget),
        "the router's retry policy for this request, added where the request had none",
    ),
    (
        "request increment_metric",
        Some(Stage::RetryBudget),
        "the requests counter per route",
    ),
    (
        "request record_metric",
        Some(Stage::RetryBudget),
        "the budget's gauge (retries available), kept current for dashboards",
    ),
    (
        "log get_property upstream.request_attempt_count",
        Some(Stage::RetryBudget),
        "how many attempts the router made: the reservation is settled with what was used",
    ),
    (
        "log get_shared_data",
        Some(Stage::RetryBudget),
        "the budget, to settle the reservation",
    ),
    (
        "log set_shared_data",
        Some(Stage::RetryBudget),
        "unused reserved retries returned to the budget (CAS)",
    ),
    (
        "log record_metric",
        Some(Stage::RetryBudget),
        "the budget's gauge after the settlement",
    ),
    (
        "request random_get",
        Some(Stage::TracePropagation),
        "the new span id; drawn from a 256-byte pool, so one call serves 32 requests (a \
         request that refills the pool shows 1 here, most show 0)",
    ),
    (
        "request set_map_value request_headers",
        Some(Stage::TracePropagation),
        "replaces the caller's trace context (`traceparent`, or `b3` when it came so) with this \
         hop's span id",
    ),
    (
        "request add_map_value request_headers",
        Some(Stage::TracePropagation),
        "the outgoing trace context in the formats the request did not carry (`b3`)",
    ),
    (
        "request increment_metric",
        Some(Stage::TracePropagation),
        "the spans counter per route",
    ),
];

/// Why `call` (a count key, `request get_shared_data`) made by `stage` (`None`: the adapter)
/// is needed.
pub fn reason(call: &str, stage: Option<Stage>) -> Option<&'static str> {
    REASONS
        .iter()
        .find(|(c, s, _)| *c == call && *s == stage)
        .map(|(_, _, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_is_found_by_call_and_stage_and_each_is_given_once() {
        assert!(reason("request get_shared_data", Some(Stage::RateLimit))
            .is_some_and(|r| r.contains("bucket")));
        assert!(reason("request get_shared_data", Some(Stage::Deadline)).is_none());
        assert!(reason("request get_map request_headers", None).is_some());
        for (i, (c, s, _)) in REASONS.iter().enumerate() {
            assert!(
                !REASONS
                    .iter()
                    .skip(i + 1)
                    .any(|(c2, s2, _)| c2 == c && s2 == s),
                "{c} {s:?} twice"
            );
        }
    }
}
