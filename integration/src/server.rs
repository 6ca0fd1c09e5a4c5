//! The one server skeleton of the in-process test servers (the demo [`crate::upstream`], the
//! OTLP [`crate::otlp_receiver`], the receiver's query API, the TLS test server of
//! `tests/tls_selftest.rs`): bind, accept loop with one task per connection, HTTP/1.1 and h2c
//! on one port, and a graceful stop.
//!
//! A [`Server`] owns its accept task. Dropping it, or [`Server::shutdown`], closes the listener
//! and every connection at once, and raises the [`Stop`] signal, so handlers that sleep on
//! purpose ([`Stop::sleep`]) end instead of holding a test up.
//!
//! The two binaries share [`main`] (a runtime, a start-up error as exit code 1) and
//! [`wait_for_signal`] (SIGINT or SIGTERM).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The response body of the test servers.
pub type Body = BoxBody<Bytes, Infallible>;

/// The error type handlers and bodies may fail with.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The stop signal of a [`Server`], for its handlers.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Whether the server was stopped.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Sleeps for `duration`; false when the server was (or is) stopped meanwhile.
    pub async fn sleep(&self, duration: Duration) -> bool {
        if self.is_stopped() {
            return false;
        }
        if duration.is_zero() {
            return true;
        }
        let mut stop = self.0.clone();
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            _ = stop.wait_for(|stopped| *stopped) => false,
        }
    }
}

/// A running server; see the module documentation.
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and hands every accepted TCP connection to
    /// `serve(stream, stop)`, each in a task of its own. Must be called inside a tokio runtime.
    pub async fn tcp<C, F>(addr: SocketAddr, serve: C) -> std::io::Result<Server>
    where
        C: Fn(TcpStream, Stop) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, Stop(stop_rx), serve));
        Ok(Server {
            addr,
            stop,
            task: Some(task),
        })
    }

    /// HTTP/1.1 and h2c on `addr`. `state(stop)` builds the state shared by the handlers once;
    /// every request is answered by `handle(state, request)`. A handler's `Err` (or a body
    /// that fails mid-stream) cuts the request short: hyper closes the HTTP/1.1 connection or
    /// resets the HTTP/2 stream, which is how the demo service plays one dying mid-request.
    pub async fn http<S, H, F, B, E>(
        addr: SocketAddr,
        state: impl FnOnce(Stop) -> S,
        handle: H,
    ) -> std::io::Result<(Server, Arc<S>)>
    where
        S: Send + Sync + 'static,
        H: Fn(Arc<S>, Request<Incoming>) -> F + Copy + Send + Sync + 'static,
        F: Future<Output = Result<Response<B>, E>> + Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
        E: Into<BoxError>,
    {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(state(Stop(stop_rx.clone())));
        let state = Arc::clone(&shared);
        let serve = move |stream: TcpStream, _stop: Stop| {
            let state = Arc::clone(&state);
            async move {
                serve_connection(stream, move |request| handle(Arc::clone(&state), request)).await
            }
        };
        let task = tokio::spawn(accept_loop(listener, Stop(stop_rx), serve));
        let server = Server {
            addr,
            stop,
            task: Some(task),
        };
        Ok((server, shared))
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The stop signal, raised when the server stops.
    pub fn stop_signal(&self) -> Stop {
        Stop(self.stop.subscribe())
    }

    /// Stops the server and waits until its listener and connections are closed.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Accepts connections until aborted; dropping the `JoinSet` (aborting this task) aborts every
/// connection.
async fn accept_loop<C, F>(listener: TcpListener, stop: Stop, serve: C)
where
    C: Fn(TcpStream, Stop) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve(stream, stop.clone()));
                }
                // Out of file descriptors and the like: back off and keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves HTTP/1.1 and h2c on one connection (plain TCP, or a TLS stream a server accepted
/// itself) until it ends. Connection errors (client resets, malformed requests) only end this
/// connection.
pub async fn serve_connection<IO, H, F, B, E>(io: IO, handle: H)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service_fn(handle))
        .await;
}

/// An infallible handler's answer, as [`Server::http`] takes it.
pub fn ok<B>(response: Response<B>) -> Result<Response<B>, Infallible> {
    Ok(response)
}

/// The `main` of a server binary: runs `run` on a multi-threaded runtime; a runtime that
/// cannot start is reported as `<program>: …` with exit code 1.
pub fn main<F>(program: &str, run: F) -> ExitCode
where
    F: Future<Output = ExitCode>,
{
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run),
        Err(err) => {
            eprintln!("{program}: cannot start the runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C elsewhere); the name of the signal.
#[cfg(unix)]
pub async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    })
}

/// Waits for SIGTERM or SIGINT (Ctrl-C elsewhere); the name of the signal.
#[cfg(not(unix))]
pub async fn wait_for_signal() -> std::io::Result<&'static str> {
    tokio::signal::ctrl_c().await?;
    Ok("ctrl-c")
}
