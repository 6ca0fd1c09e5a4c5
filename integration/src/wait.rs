//! Waiting for something to happen: poll a check until it holds or a timeout passes, and fail
//! with what the last check saw. Tests use this instead of sleeping a fixed time and looking
//! once, so that a slow machine makes them slower, not red, and a wrong expectation fails with
//! the values that were there.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::Error;

/// How long [`crate::envoy::Envoy::wait_for`] waits by default: far longer than anything a
/// test waits for takes on a quiet machine (an `on_log` after the response, a flush of spans).
pub const WAIT: Duration = Duration::from_secs(5);

/// The pause between two checks: a hundredth of the timeout, within 10 ms ..= 250 ms.
pub fn poll_interval(timeout: Duration) -> Duration {
    (timeout / 100).clamp(Duration::from_millis(10), Duration::from_millis(250))
}

/// Runs `check` until it returns `Ok`, at most for `timeout` (it runs at least once); its value.
/// After the timeout the error names `what` and the last `Err` of `check`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(why) if Instant::now() >= deadline => {
                return Err(format!("{what}: not within {timeout:?}; last seen: {why}").into())
            }
            Err(_) => tokio::time::sleep(poll_interval(timeout)).await,
        }
    }
}

/// Waits until `done()` holds; false if `timeout` passed first.
pub async fn until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn eventually_returns_the_first_success_or_the_last_reason() {
        let mut n = 0;
        let got = eventually("three", Duration::from_secs(5), || {
            n += 1;
            let now = n;
            async move {
                if now >= 3 {
                    Ok(now)
                } else {
                    Err(format!("n = {now}"))
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
        let err = eventually("never", Duration::from_millis(30), || async {
            Err::<(), _>("still no".to_owned())
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("never: not within"), "{err}");
        assert!(err.to_string().contains("still no"), "{err}");
    }
}
