//! Hand-written bindings of the Envoy dynamic-module ABI, HTTP-filter subset, as Envoy 1.40.0
//! implements it (ABI version `v0.2.0`, see [`ABI_VERSION`]).
//!
//! Three kinds of items, named as in the C header:
//!
//! * **types**: buffers, header pairs, opaque pointers and the C enums. Every C enum is a
//!   `#[repr(transparent)]` newtype over `u32` with one associated constant per enumerator, never a
//!   Rust `enum`: a value Envoy sends that this file does not know is then just a number, not
//!   undefined behaviour.
//! * **event hooks** (`envoy_dynamic_module_on_*`): functions the module exports and Envoy calls.
//!   They cannot be declared here (the module defines them); their exact signatures are the `On*`
//!   function-pointer aliases below, so a module can check its exports at compile time with
//!   `const _: OnHttpFilterNew = envoy_dynamic_module_on_http_filter_new;`.
//! * **callbacks** (`envoy_dynamic_module_callback_*`): functions Envoy exports and the module
//!   calls, declared in the `extern "C"` block. The shared object leaves them undefined; the dynamic
//!   loader resolves them against the Envoy binary, which exports all of them (`nm -D`).
//!
//! Names, argument order and types follow the header; each callback's doc says what the header
//! says about ownership and lifetime. `ABI.md` next to this crate records which of these facts
//! were verified against the real binary. Envoy-owned buffers ([`EnvoyBuffer`]) are valid until
//! the end of the current event hook unless a setter of the same map is called, unless the doc of
//! the callback says otherwise; module-owned buffers ([`ModuleBuffer`]) only need to live for the
//! duration of the call (Envoy copies what it keeps).

// FFI declarations: the whole ABI is `extern "C"`, and reading an Envoy-owned buffer is a raw
// pointer dereference. Kept in this one module; everything else in the crate is safe code.
#![allow(unsafe_code)]

use core::ffi::{c_char, c_void};

/// The ABI version Envoy 1.40.0 expects from `envoy_dynamic_module_on_program_init`. Another
/// value is accepted with a warning (`Dynamic module ABI version … is deprecated`); this one is
/// logged at info level as `Dynamic module ABI version v0.2.0 matched.`
pub const ABI_VERSION: &core::ffi::CStr = c"v0.2.0";

// ================================== Common types ==================================

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy. Not NUL-terminated, not
/// guaranteed UTF-8; `ptr` may be null when `length` is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvoyBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl EnvoyBuffer {
    /// An empty buffer, for out-parameters.
    pub const EMPTY: EnvoyBuffer = EnvoyBuffer {
        ptr: core::ptr::null(),
        length: 0,
    };

    /// The bytes, or an empty slice for a null or empty buffer.
    ///
    /// # Safety
    /// The buffer must have been filled by Envoy and still be valid: in general until the end of
    /// the event hook in which it was obtained, and before any setter of the same header map or
    /// body is called. The returned slice must not outlive that.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            // SAFETY: non-null, and the caller guarantees `length` readable bytes at `ptr`.
            unsafe { core::slice::from_raw_parts(self.ptr.cast::<u8>(), self.length) }
        }
    }
}

impl Default for EnvoyBuffer {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by the module, borrowed by Envoy for
/// the duration of one callback.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

impl ModuleBuffer {
    /// The null buffer (`ptr` null, length 0). Where a callback accepts it, it means "none", e.g.
    /// "remove the header" as the value of [`envoy_dynamic_module_callback_http_set_header`].
    pub const NULL: ModuleBuffer = ModuleBuffer {
        ptr: core::ptr::null(),
        length: 0,
    };

    /// Borrows `bytes`; the slice must outlive the callback the buffer is passed to.
    pub const fn new(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr().cast::<c_char>(),
            length: bytes.len(),
        }
    }
}

impl From<&[u8]> for ModuleBuffer {
    fn from(bytes: &[u8]) -> Self {
        ModuleBuffer::new(bytes)
    }
}

impl From<&str> for ModuleBuffer {
    fn from(s: &str) -> Self {
        ModuleBuffer::new(s.as_bytes())
    }
}

/// `envoy_dynamic_module_type_module_http_header`: a header pair owned by the module.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

impl ModuleHttpHeader {
    /// Borrows `key` and `value`; both must outlive the callback the header is passed to.
    pub const fn new(key: &[u8], value: &[u8]) -> ModuleHttpHeader {
        ModuleHttpHeader {
            key_ptr: key.as_ptr().cast::<c_char>(),
            key_length: key.len(),
            value_ptr: value.as_ptr().cast::<c_char>(),
            value_length: value.len(),
        }
    }
}

/// `envoy_dynamic_module_type_module_key_value_pair`: a string pair owned by the module (used by
/// [`envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ModuleKeyValuePair {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`: a header pair owned by Envoy's header map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EnvoyHttpHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

impl EnvoyHttpHeader {
    /// An empty pair, to fill an output array.
    pub const EMPTY: EnvoyHttpHeader = EnvoyHttpHeader {
        key_ptr: core::ptr::null(),
        key_length: 0,
        value_ptr: core::ptr::null(),
        value_length: 0,
    };

    /// Key and value bytes.
    ///
    /// # Safety
    /// As for [`EnvoyBuffer::as_bytes`]: Envoy filled the pair and it is still valid.
    pub unsafe fn as_bytes<'a>(&self) -> (&'a [u8], &'a [u8]) {
        let key = EnvoyBuffer {
            ptr: self.key_ptr,
            length: self.key_length,
        };
        let value = EnvoyBuffer {
            ptr: self.value_ptr,
            length: self.value_length,
        };
        // SAFETY: forwarded to the caller's guarantee.
        unsafe { (key.as_bytes(), value.as_bytes()) }
    }
}

impl Default for EnvoyHttpHeader {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// Declares a C enum as a transparent `u32` newtype with one constant per enumerator, in the
/// header's order (values are the C defaults, 0, 1, 2, …, unless given).
macro_rules! c_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $value:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub u32);

        impl $name {
            $($(#[$vmeta])* pub const $variant: $name = $name($value);)+
        }
    };
}

c_enum! {
    /// `envoy_dynamic_module_type_http_header_type`: which header map a header callback acts on.
    HttpHeaderType {
        REQUEST_HEADER = 0,
        REQUEST_TRAILER = 1,
        RESPONSE_HEADER = 2,
        RESPONSE_TRAILER = 3,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_log_level` (Envoy's `spdlog` levels).
    LogLevel {
        TRACE = 0,
        DEBUG = 1,
        INFO = 2,
        WARN = 3,
        ERROR = 4,
        CRITICAL = 5,
        OFF = 6,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_http_callout_init_result`: whether a callout or stream started.
    HttpCalloutInitResult {
        SUCCESS = 0,
        /// `:method`, `:path` or `host` missing from the request headers.
        MISSING_REQUIRED_HEADERS = 1,
        CLUSTER_NOT_FOUND = 2,
        DUPLICATE_CALLOUT_ID = 3,
        /// E.g. no healthy host in the cluster.
        CANNOT_CREATE_REQUEST = 4,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_http_callout_result`: how a callout ended.
    HttpCalloutResult {
        SUCCESS = 0,
        RESET = 1,
        EXCEED_RESPONSE_BUFFER_LIMIT = 2,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_http_stream_reset_reason`: why a streamable callout was reset.
    HttpStreamResetReason {
        CONNECTION_FAILURE = 0,
        CONNECTION_TERMINATION = 1,
        LOCAL_RESET = 2,
        LOCAL_REFUSED_STREAM_RESET = 3,
        OVERFLOW = 4,
        REMOTE_RESET = 5,
        REMOTE_REFUSED_STREAM_RESET = 6,
        PROTOCOL_ERROR = 7,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_metrics_result`.
    MetricsResult {
        SUCCESS = 0,
        /// The id was not defined by this config (or for this metric kind).
        METRIC_NOT_FOUND = 1,
        /// Label count does not match the definition.
        INVALID_LABELS = 2,
        /// Metric definition after stats creation was frozen.
        FROZEN = 3,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_metadata_source`: where `http_get_metadata_*` read from.
    MetadataSource {
        /// The stream's dynamic metadata.
        DYNAMIC = 0,
        /// The matched route's `metadata`.
        ROUTE = 1,
        /// The upstream cluster's `metadata`.
        CLUSTER = 2,
        /// The upstream host's (`LbEndpoint`) metadata.
        HOST = 3,
        /// The upstream host's locality (`LocalityLbEndpoints`) metadata.
        HOST_LOCALITY = 4,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_attribute_id`: Envoy's attributes
    /// (`intro/arch_overview/advanced/attributes`), read with
    /// `envoy_dynamic_module_callback_http_filter_get_attribute_{string,int,bool}`. Which getter
    /// answers for which attribute is listed in `ABI.md`.
    AttributeId {
        REQUEST_PATH = 0,
        REQUEST_URL_PATH = 1,
        REQUEST_HOST = 2,
        REQUEST_SCHEME = 3,
        REQUEST_METHOD = 4,
        REQUEST_HEADERS = 5,
        REQUEST_REFERER = 6,
        REQUEST_USER_AGENT = 7,
        REQUEST_TIME = 8,
        REQUEST_ID = 9,
        REQUEST_PROTOCOL = 10,
        REQUEST_QUERY = 11,
        REQUEST_DURATION = 12,
        REQUEST_SIZE = 13,
        REQUEST_TOTAL_SIZE = 14,
        RESPONSE_CODE = 15,
        RESPONSE_CODE_DETAILS = 16,
        RESPONSE_FLAGS = 17,
        RESPONSE_GRPC_STATUS = 18,
        RESPONSE_HEADERS = 19,
        RESPONSE_TRAILERS = 20,
        RESPONSE_SIZE = 21,
        RESPONSE_TOTAL_SIZE = 22,
        RESPONSE_BACKEND_LATENCY = 23,
        SOURCE_ADDRESS = 24,
        SOURCE_PORT = 25,
        DESTINATION_ADDRESS = 26,
        DESTINATION_PORT = 27,
        CONNECTION_ID = 28,
        CONNECTION_MTLS = 29,
        CONNECTION_REQUESTED_SERVER_NAME = 30,
        CONNECTION_TLS_VERSION = 31,
        CONNECTION_SUBJECT_LOCAL_CERTIFICATE = 32,
        CONNECTION_SUBJECT_PEER_CERTIFICATE = 33,
        CONNECTION_DNS_SAN_LOCAL_CERTIFICATE = 34,
        CONNECTION_DNS_SAN_PEER_CERTIFICATE = 35,
        CONNECTION_URI_SAN_LOCAL_CERTIFICATE = 36,
        CONNECTION_URI_SAN_PEER_CERTIFICATE = 37,
        CONNECTION_SHA256_PEER_CERTIFICATE_DIGEST = 38,
        CONNECTION_TRANSPORT_FAILURE_REASON = 39,
        CONNECTION_TERMINATION_DETAILS = 40,
        UPSTREAM_ADDRESS = 41,
        UPSTREAM_PORT = 42,
        UPSTREAM_TLS_VERSION = 43,
        UPSTREAM_SUBJECT_LOCAL_CERTIFICATE = 44,
        UPSTREAM_SUBJECT_PEER_CERTIFICATE = 45,
        UPSTREAM_DNS_SAN_LOCAL_CERTIFICATE = 46,
        UPSTREAM_DNS_SAN_PEER_CERTIFICATE = 47,
        UPSTREAM_URI_SAN_LOCAL_CERTIFICATE = 48,
        UPSTREAM_URI_SAN_PEER_CERTIFICATE = 49,
        UPSTREAM_SHA256_PEER_CERTIFICATE_DIGEST = 50,
        UPSTREAM_LOCAL_ADDRESS = 51,
        UPSTREAM_TRANSPORT_FAILURE_REASON = 52,
        UPSTREAM_REQUEST_ATTEMPT_COUNT = 53,
        UPSTREAM_CX_POOL_READY_DURATION = 54,
        UPSTREAM_LOCALITY = 55,
        XDS_NODE = 56,
        XDS_CLUSTER_NAME = 57,
        XDS_CLUSTER_METADATA = 58,
        XDS_LISTENER_DIRECTION = 59,
        XDS_LISTENER_METADATA = 60,
        XDS_ROUTE_NAME = 61,
        XDS_ROUTE_METADATA = 62,
        XDS_VIRTUAL_HOST_NAME = 63,
        XDS_VIRTUAL_HOST_METADATA = 64,
        XDS_UPSTREAM_HOST_METADATA = 65,
        XDS_FILTER_CHAIN_NAME = 66,
        HEALTH_CHECK = 67,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_socket_option_state`.
    SocketOptionState {
        PREBIND = 0,
        BOUND = 1,
        LISTENING = 2,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_socket_direction`.
    SocketDirection {
        UPSTREAM = 0,
        DOWNSTREAM = 1,
    }
}

// ================================== HTTP filter types ==================================

/// `envoy_dynamic_module_type_http_filter_config_envoy_ptr`: Envoy's filter config object; given
/// to `on_http_filter_config_new`, valid until `on_http_filter_config_destroy`. Used to define
/// metrics, schedule main-thread events and start config-level callouts.
pub type HttpFilterConfigEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_config_module_ptr`: the module's config object,
/// returned by `on_http_filter_config_new`, owned by the module until
/// `on_http_filter_config_destroy`. Shared by every worker's filters.
pub type HttpFilterConfigModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_per_route_config_module_ptr`: the module's per-route
/// config, returned by `on_http_filter_per_route_config_new`, owned by the module until
/// `on_http_filter_per_route_config_destroy`.
pub type HttpFilterPerRouteConfigModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_envoy_ptr`: Envoy's per-stream filter; valid until
/// `on_http_filter_destroy`.
pub type HttpFilterEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_module_ptr`: the module's per-stream filter, returned by
/// `on_http_filter_new`, owned by the module until `on_http_filter_destroy`.
pub type HttpFilterModulePtr = *const c_void;
/// `envoy_dynamic_module_type_http_filter_scheduler_module_ptr`: allocated by Envoy, owned by the
/// module, which must free it with [`envoy_dynamic_module_callback_http_filter_scheduler_delete`].
pub type HttpFilterSchedulerModulePtr = *mut c_void;
/// `envoy_dynamic_module_type_http_filter_config_scheduler_module_ptr`: as above for the config
/// scheduler ([`envoy_dynamic_module_callback_http_filter_config_scheduler_delete`]).
pub type HttpFilterConfigSchedulerModulePtr = *mut c_void;
/// `envoy_dynamic_module_type_span_envoy_ptr`: the stream's active span, owned by Envoy.
pub type SpanEnvoyPtr = *mut c_void;
/// `envoy_dynamic_module_type_child_span_module_ptr`: a child span the module must finish with
/// [`envoy_dynamic_module_callback_http_child_span_finish`].
pub type ChildSpanModulePtr = *mut c_void;

c_enum! {
    /// `envoy_dynamic_module_type_http_body_type`.
    HttpBodyType {
        /// The chunk of the current `on_http_filter_request_body` call only.
        RECEIVED_REQUEST_BODY = 0,
        BUFFERED_REQUEST_BODY = 1,
        RECEIVED_RESPONSE_BODY = 2,
        BUFFERED_RESPONSE_BODY = 3,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_on_http_filter_request_headers_status` (`FilterHeadersStatus`).
    OnHttpFilterRequestHeadersStatus {
        CONTINUE = 0,
        STOP_ITERATION = 1,
        CONTINUE_AND_DONT_END_STREAM = 2,
        STOP_ALL_ITERATION_AND_BUFFER = 3,
        STOP_ALL_ITERATION_AND_WATERMARK = 4,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_on_http_filter_request_body_status` (`FilterDataStatus`).
    OnHttpFilterRequestBodyStatus {
        CONTINUE = 0,
        STOP_ITERATION_AND_BUFFER = 1,
        STOP_ITERATION_AND_WATERMARK = 2,
        STOP_ITERATION_NO_BUFFER = 3,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_on_http_filter_request_trailers_status`.
    OnHttpFilterRequestTrailersStatus {
        CONTINUE = 0,
        STOP_ITERATION = 1,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_on_http_filter_response_headers_status`.
    OnHttpFilterResponseHeadersStatus {
        CONTINUE = 0,
        STOP_ITERATION = 1,
        CONTINUE_AND_DONT_END_STREAM = 2,
        STOP_ALL_ITERATION_AND_BUFFER = 3,
        STOP_ALL_ITERATION_AND_WATERMARK = 4,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_on_http_filter_response_body_status`.
    OnHttpFilterResponseBodyStatus {
        CONTINUE = 0,
        STOP_ITERATION_AND_BUFFER = 1,
        STOP_ITERATION_AND_WATERMARK = 2,
        STOP_ITERATION_NO_BUFFER = 3,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_on_http_filter_response_trailers_status`.
    OnHttpFilterResponseTrailersStatus {
        CONTINUE = 0,
        STOP_ITERATION = 1,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_on_http_filter_local_reply_status` (`LocalErrorStatus`).
    OnHttpFilterLocalReplyStatus {
        CONTINUE = 0,
        CONTINUE_AND_RESET_STREAM = 1,
    }
}

c_enum! {
    /// `envoy_dynamic_module_type_http_filter_stream_reset_reason`: for
    /// [`envoy_dynamic_module_callback_http_filter_reset_stream`].
    HttpFilterStreamResetReason {
        LOCAL_RESET = 0,
        LOCAL_REFUSED_STREAM_RESET = 1,
    }
}

// ================================== Event hooks ==================================
//
// Signatures of the functions a module exports, as function-pointer types. The symbol name of each
// is in its doc. Envoy 1.40 resolves the twenty marked "required" when it creates the first filter
// config from the module and refuses the config if one is missing ("Failed to resolve symbol …");
// the others are looked up when the feature that needs them is used.

/// `envoy_dynamic_module_on_program_init` (required, main thread, once per `dlopen`): returns the
/// module's ABI version string ([`ABI_VERSION`]), which must stay valid until the hook returns.
/// Null makes Envoy unload the module and refuse the config.
pub type OnProgramInit = unsafe extern "C" fn() -> *const c_char;

/// `envoy_dynamic_module_on_http_filter_config_new` (required, main thread): one call per
/// `DynamicModuleFilter` config. `name` is `filter_name`; `config` is `filter_config` unwrapped
/// (`StringValue`/`BytesValue`: the raw value; `Struct`: JSON). Both buffers are valid only during
/// the call. Null rejects the config.
pub type OnHttpFilterConfigNew = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> HttpFilterConfigModulePtr;

/// `envoy_dynamic_module_on_http_filter_config_destroy` (required).
pub type OnHttpFilterConfigDestroy =
    unsafe extern "C" fn(filter_config_ptr: HttpFilterConfigModulePtr);

/// `envoy_dynamic_module_on_http_filter_per_route_config_new` (main thread, when a route carries a
/// `DynamicModuleFilterPerRoute` for this module): `name` is its `filter_name` (or the deprecated
/// `per_route_config_name`), `config` as for the filter config. Null rejects the route
/// configuration. Both per-route hooks are required once a route uses them.
pub type OnHttpFilterPerRouteConfigNew = unsafe extern "C" fn(
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> HttpFilterPerRouteConfigModulePtr;

/// `envoy_dynamic_module_on_http_filter_per_route_config_destroy`.
pub type OnHttpFilterPerRouteConfigDestroy =
    unsafe extern "C" fn(filter_config_ptr: HttpFilterPerRouteConfigModulePtr);

/// `envoy_dynamic_module_on_http_filter_new` (required, worker thread, once per stream). Null
/// closes the stream.
pub type OnHttpFilterNew = unsafe extern "C" fn(
    filter_config_ptr: HttpFilterConfigModulePtr,
    filter_envoy_ptr: HttpFilterEnvoyPtr,
) -> HttpFilterModulePtr;

/// `envoy_dynamic_module_on_http_filter_request_headers` (required).
pub type OnHttpFilterRequestHeaders = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    end_of_stream: bool,
) -> OnHttpFilterRequestHeadersStatus;

/// `envoy_dynamic_module_on_http_filter_request_body` (required): one call per data frame.
pub type OnHttpFilterRequestBody = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    end_of_stream: bool,
) -> OnHttpFilterRequestBodyStatus;

/// `envoy_dynamic_module_on_http_filter_request_trailers` (required).
pub type OnHttpFilterRequestTrailers = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
) -> OnHttpFilterRequestTrailersStatus;

/// `envoy_dynamic_module_on_http_filter_response_headers` (required).
pub type OnHttpFilterResponseHeaders = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    end_of_stream: bool,
) -> OnHttpFilterResponseHeadersStatus;

/// `envoy_dynamic_module_on_http_filter_response_body` (required).
pub type OnHttpFilterResponseBody = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    end_of_stream: bool,
) -> OnHttpFilterResponseBodyStatus;

/// `envoy_dynamic_module_on_http_filter_response_trailers` (required).
pub type OnHttpFilterResponseTrailers = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
) -> OnHttpFilterResponseTrailersStatus;

/// `envoy_dynamic_module_on_http_filter_stream_complete` (required): the stream is done, before
/// `on_http_filter_destroy` and before access logs are flushed. Response attributes
/// (`response.code`, `upstream.request_attempt_count`, …) are final here.
pub type OnHttpFilterStreamComplete = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
);

/// `envoy_dynamic_module_on_http_filter_destroy` (required): free the module's filter.
pub type OnHttpFilterDestroy = unsafe extern "C" fn(filter_module_ptr: HttpFilterModulePtr);

/// `envoy_dynamic_module_on_http_filter_http_callout_done` (required): the response of
/// [`envoy_dynamic_module_callback_http_filter_http_callout`]. `headers` and `body_chunks` are
/// owned by Envoy, valid until the hook returns, and may be null on failure or for an empty
/// response.
pub type OnHttpFilterHttpCalloutDone = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    callout_id: u64,
    result: HttpCalloutResult,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
);

/// `envoy_dynamic_module_on_http_filter_http_stream_headers` (required): response headers of a
/// streamable callout; valid until the hook returns.
pub type OnHttpFilterHttpStreamHeaders = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    stream_id: u64,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    end_stream: bool,
);

/// `envoy_dynamic_module_on_http_filter_http_stream_data` (required).
pub type OnHttpFilterHttpStreamData = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    stream_id: u64,
    data: *const EnvoyBuffer,
    data_count: usize,
    end_stream: bool,
);

/// `envoy_dynamic_module_on_http_filter_http_stream_trailers` (required).
pub type OnHttpFilterHttpStreamTrailers = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    stream_id: u64,
    trailers: *mut EnvoyHttpHeader,
    trailers_size: usize,
);

/// `envoy_dynamic_module_on_http_filter_http_stream_complete` (required): the stream id is
/// invalid afterwards.
pub type OnHttpFilterHttpStreamComplete = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    stream_id: u64,
);

/// `envoy_dynamic_module_on_http_filter_http_stream_reset` (required): the stream id is invalid
/// afterwards.
pub type OnHttpFilterHttpStreamReset = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    stream_id: u64,
    reason: HttpStreamResetReason,
);

/// `envoy_dynamic_module_on_http_filter_scheduled` (required): runs on the stream's worker thread
/// after [`envoy_dynamic_module_callback_http_filter_scheduler_commit`].
pub type OnHttpFilterScheduled = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    event_id: u64,
);

/// `envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark` (required).
pub type OnHttpFilterDownstreamAboveWriteBufferHighWatermark = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
);

/// `envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark` (required).
pub type OnHttpFilterDownstreamBelowWriteBufferLowWatermark = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
);

/// `envoy_dynamic_module_on_http_filter_local_reply` (optional): a local reply is about to be
/// sent on the stream (by any filter or by Envoy).
pub type OnHttpFilterLocalReply = unsafe extern "C" fn(
    filter_envoy_ptr: HttpFilterEnvoyPtr,
    filter_module_ptr: HttpFilterModulePtr,
    response_code: u32,
    details: EnvoyBuffer,
    reset_imminent: bool,
) -> OnHttpFilterLocalReplyStatus;

/// `envoy_dynamic_module_on_http_filter_config_scheduled` (optional): runs on the main thread
/// after [`envoy_dynamic_module_callback_http_filter_config_scheduler_commit`].
pub type OnHttpFilterConfigScheduled = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    event_id: u64,
);

/// `envoy_dynamic_module_on_http_filter_config_http_callout_done` (optional): the response of
/// [`envoy_dynamic_module_callback_http_filter_config_http_callout`]; buffers as for
/// [`OnHttpFilterHttpCalloutDone`].
pub type OnHttpFilterConfigHttpCalloutDone = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    callout_id: u64,
    result: HttpCalloutResult,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    body_chunks: *mut EnvoyBuffer,
    body_chunks_size: usize,
);

/// `envoy_dynamic_module_on_http_filter_config_http_stream_headers` (optional).
pub type OnHttpFilterConfigHttpStreamHeaders = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    stream_id: u64,
    headers: *mut EnvoyHttpHeader,
    headers_size: usize,
    end_stream: bool,
);

/// `envoy_dynamic_module_on_http_filter_config_http_stream_data` (optional).
pub type OnHttpFilterConfigHttpStreamData = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    stream_id: u64,
    data: *const EnvoyBuffer,
    data_count: usize,
    end_stream: bool,
);

/// `envoy_dynamic_module_on_http_filter_config_http_stream_trailers` (optional).
pub type OnHttpFilterConfigHttpStreamTrailers = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    stream_id: u64,
    trailers: *mut EnvoyHttpHeader,
    trailers_size: usize,
);

/// `envoy_dynamic_module_on_http_filter_config_http_stream_complete` (optional).
pub type OnHttpFilterConfigHttpStreamComplete = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    stream_id: u64,
);

/// `envoy_dynamic_module_on_http_filter_config_http_stream_reset` (optional).
pub type OnHttpFilterConfigHttpStreamReset = unsafe extern "C" fn(
    filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    filter_config_ptr: HttpFilterConfigModulePtr,
    stream_id: u64,
    reason: HttpStreamResetReason,
);

// ================================== Callbacks ==================================

extern "C" {
    // ----------------------------- logging, process -----------------------------

    /// Logs `message` under Envoy's `dynamic_modules` logger id at `level`. Any thread. (Envoy
    /// 1.40 also has `envoy_dynamic_module_callback_log_v2` with a source location; not bound.)
    pub fn envoy_dynamic_module_callback_log(level: LogLevel, message: ModuleBuffer);

    /// Whether `level` is enabled for the `dynamic_modules` logger: cheap, call it before
    /// formatting.
    pub fn envoy_dynamic_module_callback_log_enabled(level: LogLevel) -> bool;

    /// The server's worker count (`--concurrency`). Main thread only.
    pub fn envoy_dynamic_module_callback_get_concurrency() -> u32;

    /// Whether Envoy runs with `--mode validate`. Main thread only.
    pub fn envoy_dynamic_module_callback_is_validation_mode() -> bool;

    /// Registers `function_ptr` under `key` in the process-wide function registry. Any thread.
    /// False if the key is taken or the pointer is null.
    pub fn envoy_dynamic_module_callback_register_function(
        key: ModuleBuffer,
        function_ptr: *mut c_void,
    ) -> bool;

    /// Looks up a registered function. Any thread. Writes `function_ptr_out` only on success.
    pub fn envoy_dynamic_module_callback_get_function(
        key: ModuleBuffer,
        function_ptr_out: *mut *mut c_void,
    ) -> bool;

    /// Registers (or overwrites) `data_ptr` under `key` in the process-wide shared-data registry.
    /// Any thread.
    pub fn envoy_dynamic_module_callback_register_shared_data(
        key: ModuleBuffer,
        data_ptr: *mut c_void,
    ) -> bool;

    /// Looks up registered shared data. Any thread. Writes `data_ptr_out` only on success.
    pub fn envoy_dynamic_module_callback_get_shared_data(
        key: ModuleBuffer,
        data_ptr_out: *mut *mut c_void,
    ) -> bool;

    // ----------------------------- metrics -----------------------------
    //
    // Defined on the filter config (`*_config_define_*`, in `on_http_filter_config_new`), each with
    // a list of label names; the id written to `*_id_ptr` is then used with the per-stream
    // (`filter_envoy_ptr`) or config-level (`filter_config_envoy_ptr`) updaters, with one label
    // value per label name. Names carry the `metrics_namespace` prefix of the module config
    // (default `dynamicmodulescustom`); see `ABI.md` for how they show in Prometheus.

    /// Defines a counter. Returns its id in `counter_id_ptr`.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        counter_id_ptr: *mut usize,
    ) -> MetricsResult;

    /// Adds `value` to a counter, from a stream's hook.
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Defines a gauge.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        gauge_id_ptr: *mut usize,
    ) -> MetricsResult;

    /// Adds to a gauge, from a stream's hook.
    pub fn envoy_dynamic_module_callback_http_filter_increment_gauge(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Subtracts from a gauge, from a stream's hook.
    pub fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Sets a gauge, from a stream's hook.
    pub fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Defines a histogram.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        histogram_id_ptr: *mut usize,
    ) -> MetricsResult;

    /// Records a histogram sample, from a stream's hook.
    pub fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Adds to a counter through the config, outside any stream (e.g. in
    /// `on_http_filter_config_scheduled`).
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Adds to a gauge through the config.
    pub fn envoy_dynamic_module_callback_http_filter_config_increment_gauge(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Subtracts from a gauge through the config.
    pub fn envoy_dynamic_module_callback_http_filter_config_decrement_gauge(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Sets a gauge through the config.
    pub fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    /// Records a histogram sample through the config.
    pub fn envoy_dynamic_module_callback_http_filter_config_record_histogram_value(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;

    // ----------------------------- headers and trailers -----------------------------

    /// Value number `index` of header `key` in `result_buffer` (null buffer when absent or out
    /// of range); the number of values of `key` in `optional_size` (may be null). The value is
    /// valid until the end of the current hook unless a setter is called.
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        header_type: HttpHeaderType,
        key: ModuleBuffer,
        result_buffer: *mut EnvoyBuffer,
        index: usize,
        optional_size: *mut usize,
    ) -> bool;

    /// Every value of header `key` into `result_buffer`, which must hold as many entries as
    /// [`envoy_dynamic_module_callback_http_get_header`] reported in `optional_size`.
    pub fn envoy_dynamic_module_callback_http_get_header_values(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        header_type: HttpHeaderType,
        key: ModuleBuffer,
        result_buffer: *mut EnvoyBuffer,
    ) -> bool;

    /// Number of entries in the map (0 when it is not available).
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        header_type: HttpHeaderType,
    ) -> usize;

    /// Every entry of the map into `result_headers`, which must hold
    /// [`envoy_dynamic_module_callback_http_get_headers_size`] entries.
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        header_type: HttpHeaderType,
        result_headers: *mut EnvoyHttpHeader,
    ) -> bool;

    /// Appends a value to header `key` (existing values are kept).
    pub fn envoy_dynamic_module_callback_http_add_header(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        header_type: HttpHeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    /// Replaces every value of header `key` with `value`; with [`ModuleBuffer::NULL`] as the value,
    /// removes the header.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        header_type: HttpHeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    // ----------------------------- local replies -----------------------------

    /// Sends a local reply (`sendLocalReply`): status, extra headers, body, and
    /// `details` (the `response.code_details`; may be [`ModuleBuffer::NULL`]). The hook should
    /// then return `StopIteration`.
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        status_code: u32,
        headers_vector: *mut ModuleHttpHeader,
        headers_vector_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );

    /// Sends response headers (with `:status`) directly, for terminal filters.
    pub fn envoy_dynamic_module_callback_http_send_response_headers(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        headers_vector: *mut ModuleHttpHeader,
        headers_vector_size: usize,
        end_stream: bool,
    );

    /// Sends response body data directly, for terminal filters.
    pub fn envoy_dynamic_module_callback_http_send_response_data(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        data: ModuleBuffer,
        end_stream: bool,
    );

    /// Sends response trailers directly and ends the stream, for terminal filters.
    pub fn envoy_dynamic_module_callback_http_send_response_trailers(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        trailers_vector: *mut ModuleHttpHeader,
        trailers_vector_size: usize,
    );

    // ----------------------------- bodies -----------------------------

    /// Total bytes of the body.
    pub fn envoy_dynamic_module_callback_http_get_body_size(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        body_type: HttpBodyType,
    ) -> usize;

    /// The body's slices into `result_buffer_vector`, which must hold
    /// [`envoy_dynamic_module_callback_http_get_body_chunks_size`] entries.
    pub fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        body_type: HttpBodyType,
        result_buffer_vector: *mut EnvoyBuffer,
    ) -> bool;

    /// Number of slices of the body.
    pub fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        body_type: HttpBodyType,
    ) -> usize;

    /// Appends `data` to the body.
    pub fn envoy_dynamic_module_callback_http_append_body(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        body_type: HttpBodyType,
        data: ModuleBuffer,
    ) -> bool;

    /// Drains up to `number_of_bytes` from the front of the body.
    pub fn envoy_dynamic_module_callback_http_drain_body(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        body_type: HttpBodyType,
        number_of_bytes: usize,
    ) -> bool;

    /// Whether the request body just received is the one an earlier filter buffered.
    pub fn envoy_dynamic_module_callback_http_received_buffered_request_body(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    ) -> bool;

    /// Whether the response body just received is the one an earlier filter buffered.
    pub fn envoy_dynamic_module_callback_http_received_buffered_response_body(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    ) -> bool;

    // ----------------------------- metadata -----------------------------
    //
    // Getters read one top-level key of one namespace (`filter_metadata[ns][key]`) of the given
    // source; setters write the stream's dynamic metadata.

    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_number(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        value: f64,
    );

    /// False if unavailable, absent, or not a number.
    pub fn envoy_dynamic_module_callback_http_get_metadata_number(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        metadata_source: MetadataSource,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        result: *mut f64,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        value: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_string_batch(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        ns: ModuleBuffer,
        entries: *const ModuleKeyValuePair,
        entries_size: usize,
    );

    /// False if unavailable, absent, or not a string. The value is valid until the end of the
    /// current hook unless a setter is called.
    pub fn envoy_dynamic_module_callback_http_get_metadata_string(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        metadata_source: MetadataSource,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_set_dynamic_metadata_bool(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        value: bool,
    );

    /// False if unavailable, absent, or not a bool.
    pub fn envoy_dynamic_module_callback_http_get_metadata_bool(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        metadata_source: MetadataSource,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        result: *mut bool,
    ) -> bool;

    /// Number of keys in namespace `ns` (0 if unavailable or absent).
    pub fn envoy_dynamic_module_callback_http_get_metadata_keys_count(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        metadata_source: MetadataSource,
        ns: ModuleBuffer,
    ) -> usize;

    /// The keys of namespace `ns` into `result_buffer_vector` (sized by `…_keys_count`).
    pub fn envoy_dynamic_module_callback_http_get_metadata_keys(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        metadata_source: MetadataSource,
        ns: ModuleBuffer,
        result_buffer_vector: *mut EnvoyBuffer,
    ) -> bool;

    /// Number of namespaces of the source.
    pub fn envoy_dynamic_module_callback_http_get_metadata_namespaces_count(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        metadata_source: MetadataSource,
    ) -> usize;

    /// The namespaces into `result_buffer_vector` (sized by `…_namespaces_count`).
    pub fn envoy_dynamic_module_callback_http_get_metadata_namespaces(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        metadata_source: MetadataSource,
        result_buffer_vector: *mut EnvoyBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_add_dynamic_metadata_list_number(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        value: f64,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_add_dynamic_metadata_list_string(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_add_dynamic_metadata_list_bool(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        value: bool,
    ) -> bool;

    /// Length of the list at `ns`/`key`; false if it is not a list.
    pub fn envoy_dynamic_module_callback_http_get_metadata_list_size(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        metadata_source: MetadataSource,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        result: *mut usize,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_metadata_list_number(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        metadata_source: MetadataSource,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        index: usize,
        result: *mut f64,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_metadata_list_string(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        metadata_source: MetadataSource,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        index: usize,
        result: *mut EnvoyBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_metadata_list_bool(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        metadata_source: MetadataSource,
        ns: ModuleBuffer,
        key: ModuleBuffer,
        index: usize,
        result: *mut bool,
    ) -> bool;

    // ----------------------------- filter state -----------------------------

    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_filter_state_bytes(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_set_filter_state_typed(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_filter_state_typed(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;

    /// Adds a custom response flag (no whitespace) to the stream, for logs.
    pub fn envoy_dynamic_module_callback_http_add_custom_flag(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        flag: ModuleBuffer,
    );

    // ----------------------------- schedulers -----------------------------

    /// A scheduler that posts events to the stream's worker thread
    /// ([`OnHttpFilterScheduled`]). Free it with
    /// [`envoy_dynamic_module_callback_http_filter_scheduler_delete`].
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    ) -> HttpFilterSchedulerModulePtr;

    /// Posts `event_id` to the stream's worker. Any thread; a no-op once the filter is destroyed.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler_module_ptr: HttpFilterSchedulerModulePtr,
        event_id: u64,
    );

    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(
        scheduler_module_ptr: HttpFilterSchedulerModulePtr,
    );

    /// A scheduler that posts events to the main thread ([`OnHttpFilterConfigScheduled`]). Free it
    /// with [`envoy_dynamic_module_callback_http_filter_config_scheduler_delete`].
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
    ) -> HttpFilterConfigSchedulerModulePtr;

    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler_module_ptr: HttpFilterConfigSchedulerModulePtr,
    );

    /// Posts `event_id` to the main thread. Any thread.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler_module_ptr: HttpFilterConfigSchedulerModulePtr,
        event_id: u64,
    );

    // ----------------------------- routing, attributes -----------------------------

    /// Clears the route cache (no-op in the wrong phase).
    pub fn envoy_dynamic_module_callback_http_clear_route_cache(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    );

    /// A string attribute; false if not available or not a string. Valid until the end of the
    /// current hook.
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        attribute_id: AttributeId,
        result: *mut EnvoyBuffer,
    ) -> bool;

    /// An integer attribute; false if not available or not an integer.
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_int(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        attribute_id: AttributeId,
        result: *mut u64,
    ) -> bool;

    /// A boolean attribute; false if not available or not a bool.
    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_bool(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        attribute_id: AttributeId,
        result: *mut bool,
    ) -> bool;

    /// The per-route config of the most specific level (route, then virtual host, …) that has one
    /// for this filter, or null.
    pub fn envoy_dynamic_module_callback_get_most_specific_route_config(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    ) -> HttpFilterPerRouteConfigModulePtr;

    /// The upstream cluster of the selected route; valid until the end of the hook or a route
    /// change. False before a route is selected.
    pub fn envoy_dynamic_module_callback_http_get_cluster_name(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;

    /// Host counts of the routed cluster at `priority`; each out-pointer may be null.
    pub fn envoy_dynamic_module_callback_http_get_cluster_host_count(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        priority: u32,
        total_count: *mut usize,
        healthy_count: *mut usize,
        degraded_count: *mut usize,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_set_upstream_override_host(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        host: ModuleBuffer,
        strict: bool,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_clear_route_cluster_cache(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    );

    /// The index of the worker running this stream.
    pub fn envoy_dynamic_module_callback_http_filter_get_worker_index(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    ) -> u32;

    // ----------------------------- HTTP callouts -----------------------------

    /// Sends a request to `cluster_name` on the stream's worker; the answer arrives in
    /// [`OnHttpFilterHttpCalloutDone`] with the id written to `callout_id_out`. `headers` must
    /// have `:method`, `:path` and `host`. Only `SUCCESS` starts a callout.
    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> HttpCalloutInitResult;

    /// Starts a streamable callout (answers in the `on_http_filter_http_stream_*` hooks).
    /// `timeout_milliseconds` 0 means none.
    pub fn envoy_dynamic_module_callback_http_filter_start_http_stream(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        stream_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        end_stream: bool,
        timeout_milliseconds: u64,
    ) -> HttpCalloutInitResult;

    pub fn envoy_dynamic_module_callback_http_filter_reset_http_stream(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        stream_id: u64,
    );

    pub fn envoy_dynamic_module_callback_http_stream_send_data(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        stream_id: u64,
        data: ModuleBuffer,
        end_stream: bool,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_stream_send_trailers(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        stream_id: u64,
        trailers: *mut ModuleHttpHeader,
        trailers_size: usize,
    ) -> bool;

    /// A callout tied to the filter config rather than a stream; the answer arrives in
    /// [`OnHttpFilterConfigHttpCalloutDone`] on the thread that started it.
    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        callout_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_milliseconds: u64,
    ) -> HttpCalloutInitResult;

    /// A streamable callout tied to the filter config (answers in the
    /// `on_http_filter_config_http_stream_*` hooks).
    pub fn envoy_dynamic_module_callback_http_filter_config_start_http_stream(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        stream_id_out: *mut u64,
        cluster_name: ModuleBuffer,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
        body: ModuleBuffer,
        end_stream: bool,
        timeout_milliseconds: u64,
    ) -> HttpCalloutInitResult;

    pub fn envoy_dynamic_module_callback_http_filter_config_reset_http_stream(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        stream_id: u64,
    );

    pub fn envoy_dynamic_module_callback_http_filter_config_stream_send_data(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        stream_id: u64,
        data: ModuleBuffer,
        end_stream: bool,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_config_stream_send_trailers(
        filter_config_envoy_ptr: HttpFilterConfigEnvoyPtr,
        stream_id: u64,
        trailers: *mut ModuleHttpHeader,
        trailers_size: usize,
    ) -> bool;

    // ----------------------------- stream control -----------------------------

    /// Resumes a request stopped by a hook (e.g. after a callout or a scheduled event).
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    );

    /// Resumes a stopped response.
    pub fn envoy_dynamic_module_callback_http_filter_continue_encoding(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    );

    /// Resets the stream; only `on_http_filter_destroy` follows.
    pub fn envoy_dynamic_module_callback_http_filter_reset_stream(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        reason: HttpFilterStreamResetReason,
        details: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_filter_send_go_away_and_close(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        graceful: bool,
    );

    pub fn envoy_dynamic_module_callback_http_filter_recreate_stream(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        headers: *mut ModuleHttpHeader,
        headers_size: usize,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_buffer_limit(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    ) -> u64;

    pub fn envoy_dynamic_module_callback_http_set_buffer_limit(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        limit: u64,
    );

    // ----------------------------- socket options -----------------------------

    pub fn envoy_dynamic_module_callback_http_set_socket_option_int(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        level: i64,
        name: i64,
        state: SocketOptionState,
        direction: SocketDirection,
        value: i64,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_set_socket_option_bytes(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        level: i64,
        name: i64,
        state: SocketOptionState,
        direction: SocketDirection,
        value: ModuleBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_get_socket_option_int(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        level: i64,
        name: i64,
        state: SocketOptionState,
        direction: SocketDirection,
        value_out: *mut i64,
    ) -> bool;

    /// The buffer is owned by Envoy and valid until the filter is destroyed.
    pub fn envoy_dynamic_module_callback_http_get_socket_option_bytes(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        level: i64,
        name: i64,
        state: SocketOptionState,
        direction: SocketDirection,
        value_out: *mut EnvoyBuffer,
    ) -> bool;

    // ----------------------------- tracing -----------------------------

    /// The stream's active span, or null when tracing is off.
    pub fn envoy_dynamic_module_callback_http_get_active_span(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
    ) -> SpanEnvoyPtr;

    pub fn envoy_dynamic_module_callback_http_span_set_tag(
        span: SpanEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_span_set_operation(
        span: SpanEnvoyPtr,
        operation: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_span_log(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        span: SpanEnvoyPtr,
        event: ModuleBuffer,
    );

    pub fn envoy_dynamic_module_callback_http_span_set_sampled(span: SpanEnvoyPtr, sampled: bool);

    pub fn envoy_dynamic_module_callback_http_span_disable_local_decision(span: SpanEnvoyPtr);

    /// The value is in thread-local storage, valid until the next tracing callback on the thread.
    pub fn envoy_dynamic_module_callback_http_span_get_baggage(
        span: SpanEnvoyPtr,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_span_set_baggage(
        span: SpanEnvoyPtr,
        key: ModuleBuffer,
        value: ModuleBuffer,
    );

    /// Thread-local result, as for the baggage.
    pub fn envoy_dynamic_module_callback_http_span_get_trace_id(
        span: SpanEnvoyPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;

    /// Thread-local result, as for the baggage.
    pub fn envoy_dynamic_module_callback_http_span_get_span_id(
        span: SpanEnvoyPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;

    /// A child span owned by the module (finish it), or null.
    pub fn envoy_dynamic_module_callback_http_span_spawn_child(
        filter_envoy_ptr: HttpFilterEnvoyPtr,
        span: SpanEnvoyPtr,
        operation_name: ModuleBuffer,
    ) -> ChildSpanModulePtr;

    pub fn envoy_dynamic_module_callback_http_child_span_finish(span: ChildSpanModulePtr);
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn buffers_and_header_pairs_have_the_c_layout() {
        // x86_64/aarch64 Linux: pointer and size_t are 8 bytes.
        assert_eq!(size_of::<EnvoyBuffer>(), 2 * size_of::<usize>());
        assert_eq!(size_of::<ModuleBuffer>(), 2 * size_of::<usize>());
        assert_eq!(size_of::<ModuleHttpHeader>(), 4 * size_of::<usize>());
        assert_eq!(size_of::<EnvoyHttpHeader>(), 4 * size_of::<usize>());
        assert_eq!(size_of::<ModuleKeyValuePair>(), 4 * size_of::<usize>());
        assert_eq!(align_of::<EnvoyBuffer>(), align_of::<usize>());
    }

    #[test]
    fn enums_are_c_int_sized() {
        assert_eq!(size_of::<AttributeId>(), 4);
        assert_eq!(size_of::<OnHttpFilterRequestHeadersStatus>(), 4);
        assert_eq!(size_of::<HttpCalloutResult>(), 4);
    }

    #[test]
    fn attribute_ids_follow_the_header_order() {
        assert_eq!(AttributeId::REQUEST_TIME.0, 8);
        assert_eq!(AttributeId::RESPONSE_CODE.0, 15);
        assert_eq!(AttributeId::CONNECTION_MTLS.0, 29);
        assert_eq!(AttributeId::CONNECTION_URI_SAN_PEER_CERTIFICATE.0, 37);
        assert_eq!(AttributeId::UPSTREAM_REQUEST_ATTEMPT_COUNT.0, 53);
        assert_eq!(AttributeId::XDS_ROUTE_NAME.0, 61);
        assert_eq!(AttributeId::HEALTH_CHECK.0, 67);
    }

    #[test]
    fn module_buffer_borrows_without_copying() {
        let s = "x-mesh";
        let b = ModuleBuffer::from(s);
        assert_eq!(b.ptr.cast::<u8>(), s.as_ptr());
        assert_eq!(b.length, 6);
    }

    #[test]
    fn an_empty_envoy_buffer_reads_as_an_empty_slice() {
        // SAFETY: a null buffer is never dereferenced.
        let bytes = unsafe { EnvoyBuffer::EMPTY.as_bytes() };
        assert!(bytes.is_empty());
    }
}
