//! What the load generators print: `wrk --latency` output, and `h2load` output with the
//! per-request log it writes (`--log-file`), read into one [`LoadReport`].

use super::percentile;

/// What a load generator reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Requests completed, as the load generator counted them.
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx responses plus connection and timeout errors.
    pub errors: u64,
}

/// A latency as wrk prints it (`812.00us`, `1.23ms`, `2.01s`, `1.50m`), in milliseconds.
pub fn parse_wrk_latency(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = (s.get(..split)?, s.get(split..)?);
    let n: f64 = num.parse().ok()?;
    let factor = match unit {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return None,
    };
    Some(n * factor)
}

/// Reads `wrk --latency` output.
pub fn parse_wrk(text: &str) -> Result<LoadReport, String> {
    let mut r = LoadReport::default();
    let (mut p50, mut p99, mut requests) = (None, None, None);
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v, ..] => p50 = parse_wrk_latency(v),
            ["99%", v, ..] => p99 = parse_wrk_latency(v),
            [n, "requests", "in", ..] => requests = n.parse().ok(),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                r.errors += n.parse::<u64>().unwrap_or(0);
            }
            ["Socket", "errors:", rest @ ..] => {
                // Socket errors: connect 0, read 0, write 0, timeout 0
                r.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    r.requests = requests.ok_or("wrk printed no request count")?;
    r.p50_ms = p50.ok_or("wrk printed no 50% latency (is --latency given?)")?;
    r.p99_ms = p99.ok_or("wrk printed no 99% latency")?;
    Ok(r)
}

/// Reads `h2load` output, with percentiles from its `--log-file` (one row per request:
/// start µs, status, duration µs).
pub fn parse_h2load(text: &str, log: &str) -> Result<LoadReport, String> {
    let mut r = LoadReport::default();
    let mut requests = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("requests:") {
            // requests: 100 total, 100 started, 100 done, 98 succeeded, 2 failed, 0 errored, 0 timeout
            let mut words = rest.split_whitespace();
            while let (Some(n), Some(what)) = (words.next(), words.next()) {
                let n: u64 = n.parse().unwrap_or(0);
                match what.trim_end_matches(',') {
                    "succeeded" => requests = Some(n),
                    "failed" | "errored" | "timeout" => r.errors += n,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            // status codes: 100 2xx, 0 3xx, 0 4xx, 0 5xx
            let mut words = rest.split_whitespace();
            while let (Some(n), Some(what)) = (words.next(), words.next()) {
                if matches!(what.trim_end_matches(','), "4xx" | "5xx") {
                    r.errors += n.parse::<u64>().unwrap_or(0);
                }
            }
        }
    }
    r.requests = requests.ok_or("h2load printed no `requests:` line")?;
    let mut latencies: Vec<f64> = log
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let _start = cols.next()?;
            let _status = cols.next()?;
            cols.next()?.trim().parse::<f64>().ok().map(|us| us / 1e3)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    r.p50_ms = percentile(&latencies, 0.50).ok_or("h2load logged no request")?;
    r.p99_ms = percentile(&latencies, 0.99).ok_or("h2load logged no request")?;
    Ok(r)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const WRK: &str = "Running 3s test @ http://127.0.0.1:1234/direct
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms  312.45us   9.87ms   91.23%
    Req/Sec    10.51k   402.11    11.02k    80.00%
  Latency Distribution
     50%    1.47ms
     75%    1.60ms
     90%    1.78ms
     99%    2.51ms
  31402 requests in 3.00s, 3.41MB read
  Non-2xx or 3xx responses: 2
  Socket errors: connect 0, read 1, write 0, timeout 3
Requests/sec:  10467.12
Transfer/sec:      1.14MB
";

    #[test]
    fn wrk_output_is_read() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 31402);
        assert!((r.p50_ms - 1.47).abs() < 1e-9);
        assert!((r.p99_ms - 2.51).abs() < 1e-9);
        assert_eq!(r.errors, 6);
        assert_eq!(parse_wrk_latency("812.00us"), Some(0.812));
        assert_eq!(parse_wrk_latency("2.00s"), Some(2000.0));
        assert!(parse_wrk("garbage").is_err());
    }

    #[test]
    fn h2load_output_and_log_are_read() {
        let text = "finished in 2.50s, 12000.00 req/s, 1.00MB/s
requests: 30000 total, 30000 started, 30000 done, 29990 succeeded, 10 failed, 0 errored, 0 timeout
status codes: 29990 2xx, 0 3xx, 0 4xx, 10 5xx
";
        let log: String = (1..=100)
            .map(|i| format!("1700000000000000\t200\t{}\n", i * 10))
            .collect();
        let r = parse_h2load(text, &log).unwrap();
        assert_eq!(r.requests, 29990);
        assert_eq!(r.errors, 20);
        assert!((r.p50_ms - 0.5).abs() < 1e-9);
        assert!((r.p99_ms - 0.99).abs() < 1e-9);
        assert!(parse_h2load(text, "").is_err());
    }
}
