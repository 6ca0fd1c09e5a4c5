//! The HTTP server loop shared by the in-process test servers ([`crate::upstream`],
//! [`crate::otlp_receiver`]): HTTP/1.1 and h2c on one port, one task per connection.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The response body of the test servers.
pub type Body = BoxBody<Bytes, Infallible>;

/// Accepts connections until aborted, answering each request with `handle(shared, request)`;
/// dropping the `JoinSet` (aborting this task) aborts every connection.
pub async fn accept_loop<S, H, F>(listener: TcpListener, shared: Arc<S>, handle: H)
where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    accept_loop_fallible(listener, shared, move |shared, request| {
        let response = handle(shared, request);
        async move { Ok::<_, Infallible>(response.await) }
    })
    .await;
}

/// [`accept_loop`] for handlers that may fail a request (and bodies that may fail mid-stream):
/// hyper then closes the HTTP/1.1 connection or resets the HTTP/2 stream, which is how the demo
/// service plays a service dying mid-request.
pub async fn accept_loop_fallible<S, H, F, B, E>(listener: TcpListener, shared: Arc<S>, handle: H)
where
    S: Send + Sync + 'static,
    H: Fn(Arc<S>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = Arc::clone(&shared);
                    connections.spawn(async move {
                        let service = service_fn(move |request: Request<Incoming>| {
                            handle(Arc::clone(&shared), request)
                        });
                        // Connection errors (client resets, malformed requests) only end this
                        // connection.
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // Out of file descriptors and the like: back off and keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
