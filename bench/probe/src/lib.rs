//! `mesh_bench_probe.wasm`: the profile's probe, root_id `bench.probe`.
//!
//! A proxy-wasm HTTP filter whose plugin configuration names one operation and a count `n`
//! ([`plan`]): on every request it performs that operation `n` times, in the phase where the
//! suite performs it. Measured in Envoy at `n = 0` and `n = k`, the difference in Envoy CPU time
//! per request divided by `k` is what one such call costs (`make bench`'s profile,
//! `integration/src/profile.rs`). The operations are the host calls the mesh filters make
//! (`mesh_kit::host::Proxy`: properties, header maps, shared data, metrics, the clock, WASI
//! randomness, local replies), plus two that run the suite itself:
//!
//! - `suite_in_vm`: the suite's request path (the kit's `Root` → `Request` →
//!   `request_headers()` / `response_headers()` / `log()`, with the suite's stages) `n` times
//!   per request against an in-memory host inside the VM ([`replay`]), so no call crosses the
//!   boundary: what the suite's Rust code costs when V8 runs it;
//! - `suite_counted`: the same path once per request against the real host, counting every call
//!   by phase and kind ([`count`]); the request picks one of several suite configurations with
//!   `x-probe-stages: <index>`, a request with `x-probe-report` gets the counts as JSON and one
//!   with `x-probe-reset` clears them;
//! - `call_mix`: the suite's host calls without the suite: a steady-state request of the suite is
//!   recorded call by call ([`trace`]), then replayed against the real host `n` times per
//!   request, in each phase, per route.
//!
//! The probe runs the suite itself (`mesh_filters::factory`, the suite crate without its wasm
//! entry point). Periodic work (`on_tick`) of the suite's stages is not
//! forwarded: the configurations measured have none.
//!
//! Built like the filters: `cargo build --release --target wasm32-wasip1 -p mesh-bench-probe`.

#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod count;
#[cfg(target_arch = "wasm32")]
pub mod filter;
pub mod plan;
pub mod replay;
pub mod trace;

/// The suite's factory.
pub use mesh_filters::factory as suite_factory;

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::<crate::filter::ProbeRoot>::default()
        });
    }}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// Answers like Envoy for the bench's mTLS caller on the `direct` route.
    struct Envoyish;

    impl replay::Source for Envoyish {
        fn property(&self, p: mesh_kit::host::Property) -> Option<Vec<u8>> {
            use mesh_kit::host::Property as P;
            match p {
                P::RouteName => Some(b"direct".to_vec()),
                P::Mtls => Some(vec![1]),
                P::PeerUriSan => Some(b"spiffe://mesh.local/ns/default/sa/bench-client".to_vec()),
                P::PeerDigest => Some(b"aa11".to_vec()),
                P::RequestTime => Some(1_800_000_000_000_000_000u64.to_le_bytes().to_vec()),
                P::ResponseCode => Some(200u64.to_le_bytes().to_vec()),
                P::ResponseFlags => Some(0u64.to_le_bytes().to_vec()),
                P::ResponseCodeDetails => Some(b"direct_response".to_vec()),
                _ => None,
            }
        }
        fn route_config(&self, _: &str) -> Result<Option<serde_json::Value>, String> {
            Ok(None)
        }
        fn response_header(&self, name: &str) -> Option<String> {
            (name == ":status").then(|| "200".to_owned())
        }
        fn response_trailer(&self, _: &str) -> Option<String> {
            None
        }
        fn now(&self) -> std::time::SystemTime {
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000)
        }
    }

    #[test]
    fn the_suite_runs_over_the_in_memory_host_without_asking_the_real_one_after_warm_up() {
        let host = Rc::new(replay::Replay::new(Envoyish));
        let mut root = mesh_kit::stage::Root::new("mesh", suite_factory, host.clone());
        let config = serde_json::json!({
            "spiffe_identity": {"trust_domains": ["mesh.local"], "allow": ["spiffe://mesh.local/ns/default/sa/bench-client"]},
            "circuit_breaker": {"consecutive_failures": 5, "open_duration": "60s"},
            "deadline": {"timeout": "15s"},
            "retry_budget": {"max_retries": 2, "retry_ratio": 0.2, "min_retries_per_second": 10},
            "trace_propagation": {"inject": ["w3c", "b3"]}
        });
        root.configure(config.to_string().as_bytes()).unwrap();
        let headers: Vec<(String, String)> = [
            (":method", "GET"),
            (":path", "/direct"),
            (":authority", "bench"),
            ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ("x-envoy-expected-rq-timeout-ms", "30000"),
            (
                "x-forwarded-client-cert",
                "By=spiffe://mesh.local/ns/default/sa/envoy;Hash=aa11;URI=spiffe://mesh.local/ns/default/sa/bench-client",
            ),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let mut misses = Vec::new();
        for _ in 0..4 {
            host.begin_request("direct", headers.clone());
            let mut r = root.new_request();
            assert!(r.request_headers(), "the bench's caller is allowed");
            host.set_phase(plan::Phase::Response);
            r.response_headers();
            host.set_phase(plan::Phase::Log);
            r.log();
            misses.push(host.misses.get());
        }
        assert!(misses[0] > 0);
        assert_eq!(
            misses[1], misses[3],
            "replayed from memory after the first request"
        );
    }

    #[test]
    fn the_factory_builds_the_sections_given() {
        let host = mesh_kit::testing::TestHost::default();
        let json = serde_json::json!({"deadline": {"timeout": "15s"}, "trace_propagation": {}});
        let names: Vec<&str> = suite_factory(&json, &host)
            .unwrap()
            .iter()
            .map(|b| b.stage.name())
            .collect();
        assert_eq!(names, ["mesh.deadline", "mesh.trace_propagation"]);
        assert!(suite_factory(&serde_json::json!({"nope": {}}), &host).is_err());
    }
}
