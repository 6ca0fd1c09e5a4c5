//! `mesh_bench_calibration.wasm`: the yardstick of `make bench`.
//!
//! The smallest HTTP filter that does what every mesh filter does at least once per request: it
//! reads one request header (`x-bench-calibration`), adds one request header
//! (`x-calibration-seen: <that value or "-">`) and one response header (`x-calibration: 1`). No
//! configuration, no metrics, no shared data. The benchmark reports each mesh filter's CPU
//! overhead as a ratio to this filter's, so numbers from a noisy machine stay comparable.
//!
//! Root id `bench.calibration`. Built by `make bench`:
//! `cargo build --release --target wasm32-wasip1 -p mesh-bench-calibration`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

/// The request header read on every request.
pub const READ_HEADER: &str = "x-bench-calibration";
/// The request header added on every request.
pub const REQUEST_HEADER: &str = "x-calibration-seen";
/// The response header added on every response.
pub const RESPONSE_HEADER: &str = "x-calibration";

/// The value of [`REQUEST_HEADER`]: the value read, or `-` when the request had none.
pub fn seen(value: Option<&str>) -> &str {
    match value {
        Some(v) if !v.is_empty() => v,
        _ => "-",
    }
}

/// The root context: creates a [`Calibration`] per request.
pub struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Calibration))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The HTTP context: one per request.
pub struct Calibration;

impl Context for Calibration {}

impl HttpContext for Calibration {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let value = self.get_http_request_header(READ_HEADER);
        self.add_http_request_header(REQUEST_HEADER, seen(value.as_deref()));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.add_http_response_header(RESPONSE_HEADER, "1");
        Action::Continue
    }
}

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Warn);
        proxy_wasm::set_root_context(|_| -> Box<dyn super::RootContext> { Box::new(super::Root) });
    }}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_read_is_forwarded_and_a_missing_one_is_a_dash() {
        assert_eq!(seen(Some("abc")), "abc");
        assert_eq!(seen(Some("")), "-");
        assert_eq!(seen(None), "-");
    }
}
