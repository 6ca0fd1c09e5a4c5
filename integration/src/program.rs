//! The `main` of the long-running check programs (`soak`, `rollout`): `--help`, parameters from
//! the environment, a two-thread tokio runtime, then the run's failures as `<name>: FAIL …` lines
//! or `<name>: PASS`, and the exit code (2: bad parameters; 1: a failure or an error).

use std::future::Future;
use std::process::ExitCode;

/// Runs `check` with the parameters `params` reads from the environment (its error is printed
/// with `usage`); `check` prints its report and returns what failed (nothing: PASS).
pub fn main<P, F>(
    name: &str,
    usage: &str,
    params: impl FnOnce() -> Result<P, String>,
    check: impl FnOnce(P) -> F,
) -> ExitCode
where
    F: Future<Output = Result<Vec<String>, crate::Error>>,
{
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        println!("{usage}");
        return ExitCode::SUCCESS;
    }
    let params = match params() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{name}: {e}\n\n{usage}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(check(params)) {
        Ok(failures) if failures.is_empty() => {
            println!("{name}: PASS");
            ExitCode::SUCCESS
        }
        Ok(failures) => {
            for f in &failures {
                println!("{name}: FAIL {f}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}
