//! What the `BENCH_*` environment variables choose ([`Params`]), and the reader of one numeric
//! setting that `make soak`'s `SOAK_*` variables share ([`env_number`]).

use super::Kind;

/// What `BENCH_*` environment variables choose.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Measured window of one run, seconds (`BENCH_SECONDS`, default 2).
    pub seconds: f64,
    /// Rounds over every configuration (`BENCH_ROUNDS`, default 3).
    pub rounds: u32,
    /// Load before the window opens, seconds (`BENCH_WARMUP`, default 0.5).
    pub warmup: f64,
    /// HTTP/1.1 connections of `wrk` (`BENCH_H1_CONNECTIONS`, default 16).
    pub h1_connections: u32,
    /// HTTP/2 connections × concurrent streams of `h2load` (`BENCH_H2_CONNECTIONS`, default 4;
    /// `BENCH_H2_STREAMS`, default 8).
    pub h2_connections: u32,
    pub h2_streams: u32,
    /// Only these configurations (`BENCH_ONLY`, comma-separated ids; bare and calibration are
    /// always kept, since everything is relative to them).
    pub only: Option<Vec<String>>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            seconds: 2.0,
            rounds: 3,
            warmup: 0.5,
            h1_connections: 16,
            h2_connections: 4,
            h2_streams: 8,
            only: None,
        }
    }
}

impl Params {
    /// Reads the `BENCH_*` variables through `get` (the environment, in the binary).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Params, String> {
        let mut p = Params::default();
        let num = |name: &str, min: f64, max: f64| env_number(&get, name, min, max);
        if let Some(s) = num("BENCH_SECONDS", 0.5, 600.0)? {
            p.seconds = s;
        }
        if let Some(r) = num("BENCH_ROUNDS", 1.0, 100.0)? {
            p.rounds = whole(r);
        }
        if let Some(w) = num("BENCH_WARMUP", 0.0, 60.0)? {
            p.warmup = w;
        }
        if let Some(c) = num("BENCH_H1_CONNECTIONS", 1.0, 1000.0)? {
            p.h1_connections = whole(c);
        }
        if let Some(c) = num("BENCH_H2_CONNECTIONS", 1.0, 1000.0)? {
            p.h2_connections = whole(c);
        }
        if let Some(c) = num("BENCH_H2_STREAMS", 1.0, 1000.0)? {
            p.h2_streams = whole(c);
        }
        if let Some(list) = get("BENCH_ONLY").filter(|v| !v.trim().is_empty()) {
            let ids: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
            let known: Vec<&str> = Kind::ALL.iter().map(|k| k.id()).collect();
            if let Some(bad) = ids.iter().find(|id| !known.contains(&id.as_str())) {
                return Err(format!(
                    "BENCH_ONLY: unknown configuration {bad:?}; known: {}",
                    known.join(", ")
                ));
            }
            p.only = Some(ids);
        }
        Ok(p)
    }
}

/// An optional numeric environment setting (`BENCH_*`, `SOAK_*`) read through `get`: unset or
/// blank is `None`; anything but a finite number within `min..=max` is an error naming it.
pub fn env_number(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, String> {
    match get(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(n) if n.is_finite() && n >= min && n <= max => Ok(Some(n)),
            _ => Err(format!(
                "{name}={v:?}: expected a number within {min}..={max}"
            )),
        },
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn whole(n: f64) -> u32 {
    n.round().clamp(0.0, f64::from(u32::MAX)) as u32
}

/// For the `from_env` tests of the programs' parameters: an environment holding only `pairs`.
#[cfg(test)]
pub(crate) fn fake_env(
    pairs: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_and_refusals() {
        let env = crate::bench::fake_env;
        assert_eq!(Params::from_env(env(&[])).unwrap(), Params::default());
        let p = Params::from_env(env(&[
            ("BENCH_SECONDS", "2"),
            ("BENCH_ROUNDS", "1"),
            ("BENCH_ONLY", "suite, deadline"),
        ]))
        .unwrap();
        assert_eq!(p.seconds, 2.0);
        assert_eq!(p.rounds, 1);
        assert_eq!(
            p.only,
            Some(vec!["suite".to_owned(), "deadline".to_owned()])
        );
        assert!(Params::from_env(env(&[("BENCH_SECONDS", "x")])).is_err());
        assert!(Params::from_env(env(&[("BENCH_ROUNDS", "0")])).is_err());
        assert!(Params::from_env(env(&[("BENCH_ONLY", "nope")])).is_err());
    }
}
