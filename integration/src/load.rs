//! Open-loop load: requests sent at a fixed rate, whatever the responses take.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::{self, Result};

/// Sends `GET path` to `addr` at `rate` requests per second for `duration`, each request on a
/// new connection (see [`client::get`]), and returns their statuses in the order they were sent.
///
/// Requests are started on schedule without waiting for earlier ones to finish. Fails when the
/// rate gives no usable interval (0, or above one request per nanosecond) or when any request
/// fails (connection, protocol or [`client::TIMEOUT`]); every status counts as a response.
pub async fn steady_load(
    addr: SocketAddr,
    path: &str,
    rate: u32,
    duration: Duration,
) -> Result<Vec<u16>> {
    let period = Duration::from_secs(1)
        .checked_div(rate)
        .filter(|p| !p.is_zero())
        .ok_or_else(|| format!("steady_load: rate {rate}/s gives no usable interval"))?;
    let mut tick = tokio::time::interval(period);
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    while Instant::now() < end {
        tick.tick().await;
        let path = path.to_owned();
        tasks.push(tokio::spawn(
            async move { client::get(addr, &path, &[]).await },
        ));
    }
    let mut statuses = Vec::with_capacity(tasks.len());
    for t in tasks {
        statuses.push(t.await??.status);
    }
    Ok(statuses)
}
