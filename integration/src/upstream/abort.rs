//! Aborting on purpose (`x-demo-abort`): a service that dies while it handles a request, before
//! or after its response headers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};

use super::controls::Controls;
use super::plain::{add_service_header, error_response};
use super::{handle, lock, Record, Shared, ADMIN_PREFIX};

/// The error a handler returns to cut a request short (`x-demo-abort`): hyper then closes the
/// HTTP/1.1 connection or resets the HTTP/2 stream.
#[derive(Debug)]
pub struct Aborted;

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("demo: request aborted on purpose (x-demo-abort)")
    }
}

impl std::error::Error for Aborted {}

/// Response bodies of the service: the usual ones, or one that fails mid-stream.
type ServiceBody = BoxBody<Bytes, Aborted>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Abort {
    BeforeHeaders,
    AfterHeaders,
}

pub(super) async fn serve_or_abort(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ServiceBody>, Aborted> {
    let (parts, body) = request.into_parts();
    let abort = if parts.uri.path().starts_with(ADMIN_PREFIX) {
        None
    } else {
        Controls::new(&parts).get("x-demo-abort", "abort")
    };
    let Some(abort) = abort else {
        let response = handle(&shared, Request::from_parts(parts, body)).await;
        return Ok(response.map(|b| b.map_err(|never| match never {}).boxed()));
    };
    lock(&shared.records).push(Record::from_parts(&parts));
    let plan = match abort.trim() {
        "before-headers" => Ok(Abort::BeforeHeaders),
        "after-headers" => Ok(Abort::AfterHeaders),
        other => Err(format!(
            "bad x-demo-abort / abort value {other:?}: expected before-headers or after-headers"
        )),
    };
    let sleep_ms = Controls::new(&parts).number::<u64>("x-demo-sleep-ms", "sleep_ms");
    let (plan, sleep_ms) = match (plan, sleep_ms) {
        (Ok(plan), Ok(sleep_ms)) => (plan, sleep_ms),
        (Err(msg), _) | (_, Err(msg)) => {
            let response = error_response(&shared, StatusCode::BAD_REQUEST, msg);
            return Ok(response.map(|b| b.map_err(|never| match never {}).boxed()));
        }
    };
    if let Some(ms) = sleep_ms {
        if !shared.stop.sleep(Duration::from_millis(ms)).await {
            return Err(Aborted);
        }
    }
    match plan {
        Abort::BeforeHeaders => Err(Aborted),
        Abort::AfterHeaders => {
            let mut response = Response::new(BodyExt::boxed(AbortMidBody::default()));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            add_service_header(&shared, response.headers_mut());
            Ok(response)
        }
    }
}

/// A body that sends one chunk, waits 50 ms (so the headers and the chunk are on the wire) and
/// then fails.
#[derive(Default)]
struct AbortMidBody {
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl hyper::body::Body for AbortMidBody {
    type Data = Bytes;
    type Error = Aborted;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Aborted>>> {
        match self.wait.as_mut() {
            None => {
                self.wait = Some(Box::pin(tokio::time::sleep(Duration::from_millis(50))));
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                    b"the first part of a body that never ends\n",
                )))))
            }
            Some(wait) => wait.as_mut().poll(cx).map(|()| Some(Err(Aborted))),
        }
    }
}
