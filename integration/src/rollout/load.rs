//! The steady load: numbered, timed requests over keep-alive HTTP/1.1 connections.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::Error;

use super::*;

/// What the steady load sends.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Requests per second, all connections together.
    pub rate: u32,
    /// Keep-alive HTTP/1.1 connections.
    pub connections: usize,
    /// Request `n` goes to `{prefix}{n}`.
    pub prefix: String,
}

/// How one request of the load ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A whole response: its status, who rejected it (`x-mesh-rejected-by`), and whether it
    /// closed the connection (`connection: close`, a draining Envoy's way to move a client).
    Answered {
        status: u16,
        rejected_by: Option<String>,
        closed: bool,
    },
    /// The request was sent and no whole response came: a reset, a closed connection, a timeout.
    Failed(String),
}

/// One request of the load.
#[derive(Clone, Debug)]
pub struct Event {
    /// Its number (its path is `{prefix}{seq}`).
    pub seq: u64,
    /// When it was sent, since the load started.
    pub at: Duration,
    /// Time to the whole response (a new connection's set-up included).
    pub latency: Duration,
    pub outcome: Outcome,
    /// Which of the load's connections sent it (0-based).
    pub conn: usize,
}

impl Event {
    /// Answered 200.
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Answered { status: 200, .. })
    }

    pub(super) fn describe(&self, origin: Duration) -> String {
        let t = self.at.as_secs_f64() * 1e3 - origin.as_secs_f64() * 1e3;
        match &self.outcome {
            Outcome::Answered {
                status,
                rejected_by,
                ..
            } => format!(
                "{t:+.0} ms: {status}{}",
                rejected_by
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            Outcome::Failed(e) => format!("{t:+.0} ms: no response ({e})"),
        }
    }
}

/// The steady load: `connections` keep-alive HTTP/1.1 connections, each sending at
/// `rate / connections` per second (a late request is not made up for). A connection that
/// Envoy closes is opened again for the next request; a request that hyper could not even
/// write on a connection found closed is sent again on a new one (what every HTTP client does,
/// since nothing was sent), and counted in [`Load::resent`].
pub struct Load {
    started: Instant,
    events: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
    conns: Arc<Conns>,
}

/// What the load's connections share.
struct Conns {
    started: Instant,
    /// Connections opened, requests resent.
    opened: AtomicU64,
    resent: AtomicU64,
    /// When each connection was last (re)opened, on the load's clock.
    last_open: Mutex<Vec<Duration>>,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

impl Load {
    /// Starts the load on `addr`; it runs until [`Load::stop`].
    pub fn start(addr: SocketAddr, spec: &LoadSpec) -> Load {
        let connections = spec.connections.max(1);
        let period = Duration::from_secs_f64(connections as f64 / f64::from(spec.rate.max(1)));
        let started = Instant::now();
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(Conns {
            started,
            opened: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            last_open: Mutex::new(vec![Duration::ZERO; connections]),
        });
        let mut tasks = Vec::new();
        for i in 0..connections {
            let (events, stop, next, conns) = (
                Arc::clone(&events),
                Arc::clone(&stop),
                Arc::clone(&next),
                Arc::clone(&conns),
            );
            let prefix = spec.prefix.clone();
            // Connections start spread over one period, so requests are evenly spaced.
            let offset = period.mul_f64(i as f64 / connections as f64);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(offset).await;
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut conn: Option<Sender> = None;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    let path = format!("{prefix}{seq}");
                    let at = started.elapsed();
                    let sent = Instant::now();
                    let outcome = one_request(&mut conn, addr, &path, &conns, i).await;
                    let event = Event {
                        seq,
                        at,
                        latency: sent.elapsed(),
                        outcome,
                        conn: i,
                    };
                    if let Ok(mut e) = events.lock() {
                        e.push(event);
                    }
                }
            }));
        }
        Load {
            started,
            events,
            stop,
            tasks,
            conns,
        }
    }

    /// Time since the load started (the clock of [`Event::at`]).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every request finished so far, in the order they finished.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }

    /// Connections opened so far (one per connection at start, one per reconnection after).
    pub fn connections_opened(&self) -> u64 {
        self.conns.opened.load(Ordering::Relaxed)
    }

    /// Requests sent again because the connection was found closed before they were written.
    pub fn resent(&self) -> u64 {
        self.conns.resent.load(Ordering::Relaxed)
    }

    /// Whether every connection of the load was opened at or after `t` (on the load's clock):
    /// after a listener update taken at `t`, none is left on the old filter chain.
    pub fn all_opened_since(&self, t: Duration) -> bool {
        self.conns
            .last_open
            .lock()
            .map(|l| l.iter().all(|at| *at >= t))
            .unwrap_or(false)
    }

    /// Stops the load and waits for the requests in flight; every request.
    pub async fn stop(self) -> Vec<Event> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut events = self.events.lock().map(|e| e.clone()).unwrap_or_default();
        events.sort_by_key(|e| e.seq);
        events
    }
}

async fn connect(addr: SocketAddr, conns: &Conns, i: usize) -> Result<Sender, Error> {
    let at = conns.started.elapsed();
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    conns.opened.fetch_add(1, Ordering::Relaxed);
    if let Some(slot) = conns
        .last_open
        .lock()
        .ok()
        .as_mut()
        .and_then(|l| l.get_mut(i))
    {
        *slot = at;
    }
    Ok(send)
}

/// One GET on the connection (a new one when there is none or it is closed), body read to the
/// end, within 30 s.
async fn one_request(
    conn: &mut Option<Sender>,
    addr: SocketAddr,
    path: &str,
    conns: &Conns,
    i: usize,
) -> Outcome {
    let work = async {
        let mut request = Request::get(path)
            .header("host", "rollout")
            .header("traceparent", TRACEPARENT)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        // At most one resend: a request hyper never wrote on a connection that had just closed.
        for attempt in 0..2 {
            if conn.as_ref().map_or(true, |c| c.is_closed()) {
                *conn = Some(connect(addr, conns, i).await.map_err(|e| e.to_string())?);
            }
            let Some(send) = conn.as_mut() else {
                return Err("no connection".to_owned());
            };
            if send.ready().await.is_err() {
                // Closed before anything was sent.
                *conn = None;
                continue;
            }
            match send.try_send_request(request).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let header = |name: &str| {
                        response
                            .headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let rejected_by = header("x-mesh-rejected-by");
                    let closed =
                        header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
                    response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| format!("body: {e}"))?;
                    if closed {
                        *conn = None;
                    }
                    return Ok(Outcome::Answered {
                        status,
                        rejected_by,
                        closed,
                    });
                }
                Err(mut e) => {
                    *conn = None;
                    match e.take_message() {
                        Some(unsent) if attempt == 0 => {
                            conns.resent.fetch_add(1, Ordering::Relaxed);
                            request = unsent;
                        }
                        _ => return Err(e.into_error().to_string()),
                    }
                }
            }
        }
        Err("connection closed twice before the request could be written".to_owned())
    };
    match tokio::time::timeout(Duration::from_secs(30), work).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            *conn = None;
            Outcome::Failed(e)
        }
        Err(_) => {
            *conn = None;
            Outcome::Failed("no answer within 30 s".to_owned())
        }
    }
}
