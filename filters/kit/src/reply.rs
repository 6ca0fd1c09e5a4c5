//! Local replies: a filter that stops a request says who did it and why.
//!
//! Every reply carries `x-mesh-rejected-by: <filter>`. For gRPC requests
//! (`content-type: application/grpc*`) it is trailers-only with `grpc-status`, `grpc-message`
//! and, when the reply has details, `grpc-status-details-bin` (base64 of a `google.rpc.Status`
//! carrying `RetryInfo` / `ErrorInfo`). For HTTP it is a status code and a JSON body
//! `{"error": ..., "message": ..., "filter": ...}`.

use crate::proto::google_rpc::{ErrorInfo, RetryInfo, Status};
use base64::Engine;
use prost::Message;
use std::time::Duration;

pub const REJECTED_BY: &str = "x-mesh-rejected-by";

/// gRPC status codes used by the filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum GrpcCode {
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// What a filter wants to answer; [`Reply::render`] turns it into HTTP or gRPC.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub http_status: u32,
    pub grpc_status: GrpcCode,
    /// Short machine-readable reason, e.g. `deadline_exceeded`; also `ErrorInfo.reason`.
    pub error: &'static str,
    /// One human sentence.
    pub message: String,
    /// Adds `retry-after` (HTTP, whole seconds rounded up) and `RetryInfo` (gRPC).
    pub retry_after: Option<Duration>,
    /// Adds `ErrorInfo{reason: error, domain: filter}` to the gRPC status details.
    pub error_info: bool,
    /// More response headers, on the HTTP and the gRPC form (the rate limit's RateLimit fields).
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn new(
        http_status: u32,
        grpc_status: GrpcCode,
        error: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Reply {
            http_status,
            grpc_status,
            error,
            message: message.into(),
            retry_after: None,
            error_info: false,
            headers: Vec::new(),
        }
    }

    /// Adds a response header to the reply, whichever form it takes. Set here, not in the
    /// response phase: whether a filter sees the response of its own local reply differs
    /// between Envoy's wasm and dynamic-module filters.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn with_retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    pub fn with_error_info(mut self) -> Self {
        self.error_info = true;
        self
    }

    pub fn render(&self, filter: &str, grpc: bool) -> Rendered {
        let mut headers = vec![(REJECTED_BY.to_string(), filter.to_string())];
        if grpc {
            if self.retry_after.is_some() || self.error_info {
                headers.push((
                    "grpc-status-details-bin".into(),
                    self.status_details(filter),
                ));
            }
            headers.extend(self.extra_headers());
            return Rendered::Grpc {
                status: self.grpc_status as u32,
                message: self.message.clone(),
                headers,
            };
        }
        if let Some(d) = self.retry_after {
            headers.push(("retry-after".into(), retry_after_seconds(d).to_string()));
        }
        headers.extend(self.extra_headers());
        headers.push(("content-type".into(), "application/json".into()));
        let body =
            serde_json::json!({"error": self.error, "message": self.message, "filter": filter});
        Rendered::Http {
            status: self.http_status,
            headers,
            body: body.to_string().into_bytes(),
        }
    }

    fn extra_headers(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
    }

    /// base64 (padded, as gRPC's `-bin` headers) of `google.rpc.Status`.
    pub fn status_details(&self, filter: &str) -> String {
        let mut details = Vec::new();
        if let Some(d) = self.retry_after {
            let delay = prost_types::Duration {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
            };
            details.push(prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: RetryInfo {
                    retry_delay: Some(delay),
                }
                .encode_to_vec(),
            });
        }
        if self.error_info {
            details.push(prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                value: ErrorInfo {
                    reason: self.error.into(),
                    domain: filter.into(),
                    metadata: Default::default(),
                }
                .encode_to_vec(),
            });
        }
        let status = Status {
            code: self.grpc_status as i32,
            message: self.message.clone(),
            details,
        };
        base64::engine::general_purpose::STANDARD.encode(status.encode_to_vec())
    }
}

/// Whole seconds, rounded up, at least 1 (HTTP `retry-after`).
pub fn retry_after_seconds(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// A reply ready for the host.
#[derive(Clone, Debug, PartialEq)]
pub enum Rendered {
    Http {
        status: u32,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    Grpc {
        status: u32,
        message: String,
        headers: Vec<(String, String)>,
    },
}

/// `content-type: application/grpc`, `application/grpc+proto`, `application/grpc-web`... are gRPC.
pub fn is_grpc(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| {
        ct.get(..16)
            .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute, so these tests also run compiled to
    // wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn an_http_reply_is_json_and_names_the_filter() {
        let r = Reply::new(
            504,
            GrpcCode::DeadlineExceeded,
            "deadline_exceeded",
            "too late",
        )
        .render("mesh.deadline", false);
        let Rendered::Http {
            status,
            headers,
            body,
        } = r
        else {
            panic!()
        };
        assert_eq!(status, 504);
        assert!(headers.contains(&(REJECTED_BY.into(), "mesh.deadline".into())));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"], "deadline_exceeded");
        assert_eq!(v["filter"], "mesh.deadline");
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(60)), 60);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn grpc_details_decode_to_status_with_retry_info() {
        let r = Reply::new(503, GrpcCode::Unavailable, "circuit_open", "open")
            .with_retry_after(Duration::from_millis(1500))
            .with_error_info();
        let Rendered::Grpc {
            status, headers, ..
        } = r.render("mesh.circuit_breaker", true)
        else {
            panic!()
        };
        assert_eq!(status, 14);
        let b64 = &headers
            .iter()
            .find(|(k, _)| k == "grpc-status-details-bin")
            .unwrap()
            .1;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let st = Status::decode(bytes.as_slice()).unwrap();
        assert_eq!(st.code, 14);
        assert_eq!(st.details.len(), 2);
        let ri = RetryInfo::decode(st.details[0].value.as_slice()).unwrap();
        assert_eq!(
            ri.retry_delay.unwrap(),
            prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        let ei = ErrorInfo::decode(st.details[1].value.as_slice()).unwrap();
        assert_eq!(
            (ei.reason.as_str(), ei.domain.as_str()),
            ("circuit_open", "mesh.circuit_breaker")
        );
    }

    #[test]
    fn grpc_content_types_are_recognised_case_insensitively() {
        assert!(is_grpc(Some("application/grpc")));
        assert!(is_grpc(Some("application/grpc+proto")));
        assert!(is_grpc(Some("Application/GRPC-web")));
        assert!(!is_grpc(Some("application/json")));
        assert!(!is_grpc(Some("application/grp")));
        assert!(!is_grpc(None));
    }
}
