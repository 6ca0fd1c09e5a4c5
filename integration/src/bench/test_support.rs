//! Results made up for the tests of the checks, the report and the chart: one round, every
//! variant of a configuration with the same CPU per request and requests/s.

use std::collections::BTreeMap;

use super::{Kind, Results, Run, Sample, Variant};

pub(crate) fn sample(cpu_per_req: f64, rps: f64) -> Sample {
    Sample {
        requests: 1000,
        window_s: 1000.0 / rps,
        cpu_us: cpu_per_req * 1000.0,
        p50_ms: 1.0,
        p99_ms: 2.0,
        errors: 0,
    }
}

pub(crate) fn results(rows: &[(Kind, f64, f64)]) -> Results {
    let mut round = BTreeMap::new();
    for &(kind, cpu, rps) in rows {
        let mut run = Run {
            startup_ms: 100.0,
            rss_kib: 40 * 1024,
            samples: BTreeMap::new(),
        };
        if kind == Kind::Suite {
            run.startup_ms = 500.0;
            run.rss_kib = 60 * 1024;
        }
        for v in Variant::ALL {
            run.samples.insert(v, Ok(sample(cpu, rps)));
        }
        round.insert(kind, Ok(run));
    }
    Results {
        kinds: rows.iter().map(|r| r.0).collect(),
        rounds: vec![round],
    }
}
