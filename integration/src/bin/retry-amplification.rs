//! `retry-amplification [--rate N] [--seconds N] [--rates 0,0.1,0.5,1]`
//!
//! Measures retry amplification (upstream attempts ÷ client requests) against a real Envoy for
//! several upstream failure rates, once with the retry-budget filter and once with a plain route
//! retry policy, and prints the results as a Markdown table. Every run gets a fresh Envoy and a
//! fresh demo upstream; the upstream answers 503 with the given probability on each attempt
//! (`fail_rate`). Needs the filters built (`make build`) and an Envoy (`make envoy`, or
//! `ENVOY_BIN`); `make bench` does both and runs this program.

use std::fmt;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use mesh_integration::bootstrap::{bootstrap, cluster, listener, route, wasm_filter};
use mesh_integration::envoy::{self, Envoy, Options};
use mesh_integration::{load, upstream};
use serde_json::{json, Value};

const USAGE: &str = "usage: retry-amplification [--rate N] [--seconds N] [--rates LIST]

Prints retry amplification (upstream attempts / client requests) for several upstream failure
rates, with the mesh.retry_budget filter and with a plain route retry policy, against a real
Envoy (--concurrency 2), as a Markdown table on stdout. Progress goes to stderr.

  --rate N       client requests per second, each on a new connection (default 200)
  --seconds N    duration of each run in seconds; also the budget's ttl (default 5)
  --rates LIST   comma-separated upstream failure probabilities within 0..=1
                 (default 0,0.1,0.5,1)
  -h, --help     this text

Needs the filters built (`make build`) and Envoy (`make envoy` or ENVOY_BIN); `make bench`
does both.";

const ENVOY_WORKERS: u32 = 2;
const RETRY_RATIO: f64 = 0.2;
const MIN_RETRIES_PER_SECOND: u32 = 1;
const MAX_RETRIES: u32 = 3;

type Error = mesh_integration::Error;

/// The error `main` returns: shown as its message (with the Envoy log, when there is one) rather
/// than as a debug-quoted string.
struct Failure(Error);

impl<E: Into<Error>> From<E> for Failure {
    fn from(err: E) -> Self {
        Failure(err.into())
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "retry-amplification: {}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Params {
    rate: u32,
    seconds: u64,
    failure_rates: Vec<f64>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            rate: 200,
            seconds: 5,
            failure_rates: vec![0.0, 0.1, 0.5, 1.0],
        }
    }
}

#[derive(Debug, PartialEq)]
enum Cli {
    Run(Params),
    Help,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Config {
    Budget,
    RouteRetryPolicy,
}

impl Config {
    const ALL: [Config; 2] = [Config::Budget, Config::RouteRetryPolicy];

    fn name(self) -> &'static str {
        match self {
            Config::Budget => "budget",
            Config::RouteRetryPolicy => "route retry policy",
        }
    }
}

/// What one run measured.
struct Row {
    failure_rate: f64,
    config: Config,
    requests: usize,
    successes: usize,
    attempts: usize,
}

impl Row {
    fn amplification(&self) -> f64 {
        self.attempts as f64 / self.requests as f64
    }

    fn success_rate(&self) -> f64 {
        self.successes as f64 / self.requests as f64
    }
}

fn main() -> Result<ExitCode, Failure> {
    let params = match parse_args(std::env::args().skip(1)) {
        Ok(Cli::Run(params)) => params,
        Ok(Cli::Help) => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        Err(message) => {
            eprintln!("retry-amplification: {message}\n\n{USAGE}");
            return Ok(ExitCode::from(2));
        }
    };
    // Before anything starts: fails with "run `make build` first" when the filter is missing.
    let wasm = envoy::wasm("mesh_retry_budget")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(run_all(&params, &wasm))?;
    print_report(&params, &rows);
    Ok(ExitCode::SUCCESS)
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Cli, String> {
    let mut params = Params::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Cli::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        if !matches!(flag.as_str(), "--rate" | "--seconds" | "--rates") {
            return Err(format!("unknown argument {arg:?}"));
        }
        let value = match inline {
            Some(value) => value,
            None => args.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        match flag.as_str() {
            "--rate" => params.rate = positive(&flag, &value)?,
            "--seconds" => params.seconds = positive(&flag, &value)?,
            _ => params.failure_rates = failure_rates(&value)?,
        }
    }
    Ok(Cli::Run(params))
}

fn positive<T: std::str::FromStr + Default + PartialEq>(
    flag: &str,
    value: &str,
) -> Result<T, String> {
    match value.trim().parse::<T>() {
        Ok(n) if n != T::default() => Ok(n),
        _ => Err(format!(
            "{flag} {value:?}: expected a whole number of at least 1"
        )),
    }
}

fn failure_rates(list: &str) -> Result<Vec<f64>, String> {
    let rates = list
        .split(',')
        .map(|item| match item.trim().parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(format!(
                "--rates {list:?}: {item:?} is not a failure probability within 0..=1"
            )),
        })
        .collect::<Result<Vec<f64>, String>>()?;
    if rates.is_empty() {
        return Err("--rates needs at least one value".to_owned());
    }
    Ok(rates)
}

async fn run_all(params: &Params, wasm: &Path) -> Result<Vec<Row>, Error> {
    let mut rows = Vec::new();
    for &failure_rate in &params.failure_rates {
        for config in Config::ALL {
            eprint!(
                "retry-amplification: failure rate {}, {}: {} requests/s for {} s ... ",
                percent(failure_rate),
                config.name(),
                params.rate,
                params.seconds
            );
            let started = Instant::now();
            let row = run_one(params, wasm, config, failure_rate)
                .await
                .inspect_err(|_| eprintln!("failed"))?;
            eprintln!(
                "amplification {:.3} ({:.1} s)",
                row.amplification(),
                started.elapsed().as_secs_f64()
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// One run: a fresh upstream and Envoy, a steady load, the counts.
async fn run_one(
    params: &Params,
    wasm: &Path,
    config: Config,
    failure_rate: f64,
) -> Result<Row, Error> {
    let svc = upstream::spawn("svc", "127.0.0.1:0".parse()?).await?;
    let mut svc_route = route("svc", "/", "svc");
    let filters = match config {
        Config::Budget => vec![wasm_filter(
            "mesh.retry_budget",
            wasm,
            &json!({
                "retry_ratio": RETRY_RATIO,
                "min_retries_per_second": MIN_RETRIES_PER_SECOND,
                "ttl": format!("{}s", params.seconds),
                "max_retries": MAX_RETRIES,
            }),
        )],
        Config::RouteRetryPolicy => {
            svc_route
                .get_mut("route")
                .and_then(Value::as_object_mut)
                .ok_or("the route has no route action")?
                .insert(
                    "retry_policy".to_owned(),
                    json!({"retry_on": "5xx", "num_retries": MAX_RETRIES}),
                );
            Vec::new()
        }
    };
    let config_json = bootstrap(
        vec![listener("main", vec![svc_route], filters)],
        vec![cluster("svc", svc.addr(), true)],
    );
    let options = Options {
        concurrency: ENVOY_WORKERS,
        ..Options::default()
    };
    // Start-up polls and sleeps: keep it off the runtime's workers.
    let proxy =
        tokio::task::spawn_blocking(move || Envoy::start_with(&config_json, &options)).await??;

    let path = format!("/x?fail_rate={failure_rate}");
    let statuses = load::steady_load(
        proxy.listener("main"),
        &path,
        params.rate,
        Duration::from_secs(params.seconds),
    )
    .await?;
    // Every response is in, so every attempt behind it has reached the upstream.
    let attempts = svc.count();
    drop(proxy);
    svc.shutdown().await;

    if statuses.is_empty() {
        return Err("no requests were sent".into());
    }
    // The upstream answers 200 or 503; anything else means the setup is broken (no route, say)
    // and the counts would mean nothing.
    if let Some(other) = statuses.iter().find(|&&s| s != 200 && s != 503) {
        return Err(format!(
            "failure rate {}, {}: unexpected status {other} from Envoy",
            percent(failure_rate),
            config.name()
        )
        .into());
    }
    Ok(Row {
        failure_rate,
        config,
        requests: statuses.len(),
        successes: statuses.iter().filter(|&&s| s == 200).count(),
        attempts,
    })
}

fn print_report(params: &Params, rows: &[Row]) {
    let bound = 1.0 + RETRY_RATIO + f64::from(MIN_RETRIES_PER_SECOND) / f64::from(params.rate);
    println!(
        "Machine: {} CPUs (nproc), {}. Parameters: {} requests/s for {} s per run, one connection \
         per request, a fresh Envoy (--concurrency {ENVOY_WORKERS}) and upstream per run; budget: \
         retry_ratio {RETRY_RATIO}, min_retries_per_second {MIN_RETRIES_PER_SECOND}, ttl {}s, \
         max_retries {MAX_RETRIES}; route retry policy: retry_on 5xx, num_retries {MAX_RETRIES}.",
        nproc(),
        uname(),
        params.rate,
        params.seconds,
        params.seconds,
    );
    println!();
    println!(
        "| failure rate | config | requests | upstream attempts | amplification | client success |"
    );
    println!("|---:|---|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.1} % |",
            percent(row.failure_rate),
            row.config.name(),
            row.requests,
            row.attempts,
            row.amplification(),
            row.success_rate() * 100.0,
        );
    }
    println!();
    println!(
        "Theoretical bound with the budget: amplification ≤ 1 + {RETRY_RATIO} + \
         {MIN_RETRIES_PER_SECOND}/rate = 1 + {RETRY_RATIO} + {MIN_RETRIES_PER_SECOND}/{} = {bound:.3} \
         (retries within a ttl ≤ requests × retry_ratio + min_retries_per_second × ttl); \
         the route retry policy alone allows up to 1 + {MAX_RETRIES} = {}.",
        params.rate,
        1 + MAX_RETRIES,
    );
}

/// A probability as a percentage: `0.1` → `10 %`.
fn percent(p: f64) -> String {
    format!("{} %", (p * 1000.0).round() / 10.0)
}

fn nproc() -> String {
    command_output("nproc", &[])
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .map(|n| n.to_string())
        })
        .unwrap_or_else(|| "?".to_owned())
}

fn uname() -> String {
    command_output("uname", &["-sr"]).unwrap_or_else(|| std::env::consts::OS.to_owned())
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(parse_args(args(&[])).unwrap(), Cli::Run(Params::default()));
        let parsed = parse_args(args(&[
            "--rate",
            "50",
            "--seconds=2",
            "--rates",
            "0, 0.25,1",
        ]));
        assert_eq!(
            parsed.unwrap(),
            Cli::Run(Params {
                rate: 50,
                seconds: 2,
                failure_rates: vec![0.0, 0.25, 1.0],
            })
        );
        assert_eq!(parse_args(args(&["-h"])).unwrap(), Cli::Help);
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--rate"][..],
            &["--rate", "0"],
            &["--rate", "-3"],
            &["--seconds", "x"],
            &["--rates", "0,1.5"],
            &["--rates", ""],
            &["--rates", "0,,1"],
            &["--burst", "3"],
            &["200"],
        ] {
            assert!(parse_args(args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(0.0), "0 %");
        assert_eq!(percent(0.1), "10 %");
        assert_eq!(percent(1.0), "100 %");
        assert_eq!(percent(0.125), "12.5 %");
    }
}
