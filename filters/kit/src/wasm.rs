//! The proxy-wasm runtime: [`Proxy`], the kit's [`Host`] over proxy-wasm host calls, and the
//! RootContext/HttpContext glue that hands Envoy's callbacks to the adapter core
//! ([`crate::stage::Root`], [`crate::stage::Request`]).
//!
//! A filter's own `.wasm` is this glue with one stage ([`export_stage!`](crate::export_stage));
//! the suite is the same glue with every stage ([`export_filter!`](crate::export_filter)).

use crate::host::{fallback_random, metadata_section, Host, MetricKind, MetricName, Property};
use crate::reply::Rendered;
use crate::stage::{Factory, Request, Root};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType, MetricType, Status};
use serde_json::Value;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

/// The real host: proxy-wasm hostcalls. Errors from the host are treated as "absent".
#[derive(Clone, Copy, Debug, Default)]
pub struct Proxy;

impl Host for Proxy {
    fn now(&self) -> SystemTime {
        hostcalls::get_current_time().unwrap_or(SystemTime::UNIX_EPOCH)
    }

    // The host adapter is the one place allowed to reach the entropy source (filters/clippy.toml).
    #[allow(clippy::disallowed_methods)]
    fn random(&self, out: &mut [u8]) {
        // WASI `random_get`, which Envoy serves from its own random source.
        if getrandom::fill(out).is_err() {
            fallback_random(self.now(), out);
        }
    }

    fn property(&self, property: Property) -> Option<Vec<u8>> {
        hostcalls::get_property(property.path().to_vec())
            .ok()
            .flatten()
    }

    /// Route metadata: `xds.route_metadata`, a serialized `envoy.config.core.v3.Metadata`.
    fn route_config(&self, key: &str) -> Result<Option<Value>, String> {
        let bytes = hostcalls::get_property(vec!["xds", "route_metadata"])
            .ok()
            .flatten();
        metadata_section(bytes.as_deref(), key)
    }

    fn request_headers(&self) -> Vec<(String, String)> {
        hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
    }

    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn add_request_header(&self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
    }

    fn set_response_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn response_trailer(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value(MapType::HttpResponseTrailers, name)
            .ok()
            .flatten()
    }

    fn set_response_trailer(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseTrailers, name, value);
    }

    fn send_reply(&self, reply: &Rendered) {
        match reply {
            Rendered::Http {
                status,
                headers,
                body,
            } => {
                let headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let _ = hostcalls::send_http_response(*status, headers, Some(body));
            }
            Rendered::Grpc {
                status,
                message,
                headers,
            } => {
                let metadata: Vec<(&str, &[u8])> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_bytes()))
                    .collect();
                let _ = hostcalls::send_grpc_response(grpc_code(*status), Some(message), metadata);
            }
        }
    }

    /// The label goes into the name (`mesh.deadline.rq_total.route=auth`): the `stats_tags` of
    /// the bootstrap turn it back into a Prometheus label.
    fn define_metric(&self, kind: MetricKind, name: &MetricName<'_>) -> Option<u32> {
        let t = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        hostcalls::define_metric(t, &name.flat()).ok()
    }

    fn increment_metric(&self, id: u32, delta: i64) {
        let _ = hostcalls::increment_metric(id, delta);
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Option<u32> {
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), Some(body), Vec::new(), timeout)
            .ok()
    }

    fn http_call_status(&self) -> Option<u32> {
        hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
    }

    fn set_tick_period(&self, period: Duration) {
        let _ = hostcalls::set_tick_period(period);
    }

    fn shared_get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn shared_set(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), crate::host::CasError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(crate::host::CasError::Mismatch),
            Err(_) => Err(crate::host::CasError::Failed),
        }
    }
}

fn grpc_code(status: u32) -> proxy_wasm::types::GrpcStatusCode {
    use proxy_wasm::types::GrpcStatusCode as G;
    match status {
        0 => G::Ok,
        1 => G::Cancelled,
        3 => G::InvalidArgument,
        4 => G::DeadlineExceeded,
        5 => G::NotFound,
        6 => G::AlreadyExists,
        7 => G::PermissionDenied,
        8 => G::ResourceExhausted,
        9 => G::FailedPrecondition,
        10 => G::Aborted,
        11 => G::OutOfRange,
        12 => G::Unimplemented,
        13 => G::Internal,
        14 => G::Unavailable,
        15 => G::DataLoss,
        16 => G::Unauthenticated,
        _ => G::Unknown,
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        _body_size: usize,
        _num_trailers: usize,
    ) {
        Root::on_http_call_response(self, token_id);
    }
}

impl RootContext for Root {
    fn on_tick(&mut self) {
        Root::on_tick(self);
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match self.configure(&bytes) {
            Ok(()) => true,
            Err(line) => {
                log::error!("{line}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(self.new_request()))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Context for Request {}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.request_headers() {
            Action::Continue
        } else {
            Action::Pause
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.response_headers();
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.response_trailers();
        Action::Continue
    }

    fn on_log(&mut self) {
        self.log();
    }
}

/// A root context on the real host.
pub fn root(name: &'static str, factory: Factory) -> Box<dyn RootContext> {
    Box::new(Root::new(name, factory, Rc::new(Proxy)))
}

/// Installs the root context factory (called from the wasm entry point).
pub fn install(new_root: fn(u32) -> Box<dyn RootContext>) {
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(new_root);
}

/// The wasm entry point of a filter with one stage:
///
/// ```text
/// #[cfg(feature = "standalone")]
/// mesh_kit::export_stage!(crate::filter::Deadline);
/// ```
#[macro_export]
macro_rules! export_stage {
    ($stage:ty) => {
        fn __mesh_new_root(_context_id: u32) -> Box<dyn $crate::proxy_wasm::traits::RootContext> {
            $crate::wasm::root(
                <$stage as $crate::stage::Stage>::NAME,
                $crate::stage::single::<$stage>,
            )
        }
        $crate::proxy_wasm::main! {{
            $crate::wasm::install(__mesh_new_root);
        }}
    };
}

/// The wasm entry point of a filter whose stages a factory builds from the configuration (the
/// suite):
///
/// ```text
/// mesh_kit::export_filter!("mesh", crate::factory);
/// ```
#[macro_export]
macro_rules! export_filter {
    ($name:expr, $factory:path) => {
        fn __mesh_new_root(_context_id: u32) -> Box<dyn $crate::proxy_wasm::traits::RootContext> {
            $crate::wasm::root($name, $factory)
        }
        $crate::proxy_wasm::main! {{
            $crate::wasm::install(__mesh_new_root);
        }}
    };
}
