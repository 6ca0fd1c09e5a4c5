//! The load generators of the scenarios: `h2load` (h2c, many connections) and `wrk`
//! (HTTP/1.1 keep-alive), run to completion and their counts read back.

use super::CONNECTIONS;
use mesh_integration::envoy::workspace_root;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `wrk` and `h2load`, installed by `scripts/ensure-tools.sh` when missing (as `make bench`).
pub fn tools() -> &'static (PathBuf, PathBuf) {
    static TOOLS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let out = Command::new(workspace_root().join("scripts/ensure-tools.sh"))
            .args(["wrk:wrk", "h2load:nghttp2-client"])
            .output()
            .expect("scripts/ensure-tools.sh");
        assert!(
            out.status.success(),
            "wrk and h2load are needed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines().map(PathBuf::from);
        (lines.next().unwrap(), lines.next().unwrap())
    })
}

/// What h2load reported.
#[derive(Debug, Default)]
pub struct H2Load {
    pub done: u64,
    pub failed: u64,
    pub errored: u64,
    pub s2xx: u64,
    pub s5xx: u64,
    pub elapsed: Duration,
}

/// `h2load -n n -c 32 -m 1` over h2c; with several URIs each connection cycles through them.
pub async fn h2load(n: u32, uris: Vec<String>) -> H2Load {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = Command::new(&tools().1)
            .args(["-n", &n.to_string(), "-c", &CONNECTIONS.to_string()])
            .args(["-m", "1", "-t", "1"])
            .args(&uris)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "h2load: {text}");
        let mut r = H2Load {
            elapsed: started.elapsed(),
            ..H2Load::default()
        };
        for line in text.lines().map(str::trim) {
            let nums = |l: &str| -> Vec<(String, u64)> {
                l.split(',')
                    .filter_map(|part| {
                        let mut w = part.split_whitespace().rev();
                        let what = w.next()?.to_string();
                        let n = w.next()?.parse().ok()?;
                        Some((what, n))
                    })
                    .collect()
            };
            if let Some(rest) = line.strip_prefix("requests:") {
                for (what, n) in nums(rest) {
                    match what.as_str() {
                        "done" => r.done = n,
                        "failed" => r.failed = n,
                        "errored" => r.errored = n,
                        _ => {}
                    }
                }
            } else if let Some(rest) = line.strip_prefix("status codes:") {
                for (what, n) in nums(rest) {
                    match what.as_str() {
                        "2xx" => r.s2xx = n,
                        "5xx" => r.s5xx = n,
                        _ => {}
                    }
                }
            }
        }
        r
    })
    .await
    .unwrap()
}

/// `wrk -t2 -c32 -d<secs>s` over HTTP/1.1 keep-alive; the requests it completed.
pub async fn wrk(url: String, secs: u32) -> u64 {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(&tools().0)
            .args(["-t", "2", "-c", &CONNECTIONS.to_string()])
            .args(["-d", &format!("{secs}s"), "--timeout", "10s", &url])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "wrk: {text}");
        text.lines()
            .find_map(|l| {
                let (n, rest) = l.trim().split_once(' ')?;
                rest.starts_with("requests in").then(|| n.parse().ok())?
            })
            .unwrap_or_else(|| panic!("wrk printed no request count: {text}"))
    })
    .await
    .unwrap()
}
