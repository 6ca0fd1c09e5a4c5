//! `mesh-demo --listen NAME=ADDR [--listen NAME=ADDR ...]`
//!
//! Runs one demo upstream (see `mesh_integration::upstream`) per `--listen` pair until
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use mesh_integration::{server, upstream};

const USAGE: &str = "usage: mesh-demo --listen NAME=ADDR [--listen NAME=ADDR ...]

Starts one demo upstream service per --listen pair, e.g.
  mesh-demo --listen auth=127.0.0.1:9001 --listen learner=127.0.0.1:9002
Each port serves HTTP/1.1 and h2c (plain HTTP echo and gRPC echo). Runs until SIGINT/SIGTERM.";

fn main() -> ExitCode {
    let listeners = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(listeners)) => listeners,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("mesh-demo: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    server::main("mesh-demo", run(listeners))
}

#[derive(Debug, PartialEq)]
enum Command {
    Run(Vec<(String, SocketAddr)>),
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut listeners: Vec<(String, SocketAddr)> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let spec = match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--listen" => args
                .next()
                .ok_or_else(|| "--listen needs a value NAME=ADDR".to_owned())?,
            other => match other.strip_prefix("--listen=") {
                Some(spec) => spec.to_owned(),
                None => return Err(format!("unexpected argument {other:?}")),
            },
        };
        let (name, addr) = spec
            .split_once('=')
            .ok_or_else(|| format!("--listen {spec:?}: expected NAME=ADDR"))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "--listen {spec:?}: NAME must be non-empty letters, digits, '-', '_' or '.'"
            ));
        }
        let addr: SocketAddr = addr.parse().map_err(|e| {
            format!("--listen {spec:?}: ADDR {addr:?} is not IP:PORT (e.g. 127.0.0.1:9001): {e}")
        })?;
        if listeners.iter().any(|(n, _)| n == name) {
            return Err(format!("--listen {spec:?}: name {name:?} given twice"));
        }
        listeners.push((name.to_owned(), addr));
    }
    if listeners.is_empty() {
        return Err("at least one --listen NAME=ADDR is required".to_owned());
    }
    Ok(Command::Run(listeners))
}

async fn run(listeners: Vec<(String, SocketAddr)>) -> ExitCode {
    let mut running = Vec::with_capacity(listeners.len());
    for (name, addr) in listeners {
        match upstream::spawn(&name, addr).await {
            Ok(service) => {
                println!("mesh-demo: {name} listening on {}", service.addr());
                running.push(service);
            }
            Err(err) => {
                eprintln!("mesh-demo: {name}: cannot listen on {addr}: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    match server::wait_for_signal().await {
        Ok(signal) => eprintln!("mesh-demo: {signal} received, shutting down"),
        Err(err) => {
            eprintln!("mesh-demo: cannot wait for signals: {err}");
            return ExitCode::FAILURE;
        }
    }
    for service in running {
        service.shutdown().await;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_listeners() {
        let parsed = parse_args(args(&[
            "--listen",
            "auth=127.0.0.1:9001",
            "--listen=learner=[::1]:9002",
        ]));
        let expected = Command::Run(vec![
            ("auth".to_owned(), "127.0.0.1:9001".parse().unwrap()),
            ("learner".to_owned(), "[::1]:9002".parse().unwrap()),
        ]);
        assert_eq!(parsed, Ok(expected));
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(parse_args(args(&[])).is_err());
        assert!(parse_args(args(&["--listen"])).is_err());
        assert!(parse_args(args(&["--listen", "auth"])).is_err());
        assert!(parse_args(args(&["--listen", "=127.0.0.1:1"])).is_err());
        assert!(parse_args(args(&["--listen", "a=localhost:1"])).is_err());
        assert!(parse_args(args(&[
            "--listen",
            "a=1.2.3.4:1",
            "--listen",
            "a=1.2.3.4:2"
        ]))
        .is_err());
        assert!(parse_args(args(&["--port", "1"])).is_err());
        assert_eq!(parse_args(args(&["--help"])), Ok(Command::Help));
    }
}
