//! The profile: what each kind of host call costs in the real Envoy, and how the suite's overhead
//! is made of them.
//!
//! # Method
//!
//! The probe filter (`bench/probe`, `mesh_bench_probe.wasm`) performs one kind of host call `n`
//! times per request, in the phase where the suite performs it. One measured Envoy (the bench's
//! set-up: `--concurrency 1` on core 0, reached through a client Envoy over mTLS with an
//! Envoy-built `x-forwarded-client-cert`) holds one listener per probe configuration, next to bare
//! Envoy, the do-nothing probe (`none`), the suite and the calibration filter; a client Envoy
//! routes `/<listener>/…` to each. A run is the bench's: closed-loop load (wrk for HTTP/1.1,
//! h2load for HTTP/2), Envoy's CPU time from `/proc/<pid>/stat` and the listener's completed
//! requests sampled around the window.
//!
//! - **Slope** of a call: (CPU µs/request of the probe at `n = k` − its reference's) ÷ `k`. The
//!   reference is the do-nothing probe (the probe at `n = 0` does nothing either), or the probe's
//!   own `n = 0` run when it has fixed work (`set_map` reads the map it writes back,
//!   `suite_in_vm` reads the request it replays). References are measured on both sides of every
//!   run and interpolated to its position, so a slow drift of the machine cancels; rounds
//!   alternate the order. The slope is the median over rounds, `±` half the range.
//! - **Fixed cost** of a wasm HttpContext: the do-nothing probe − bare Envoy.
//! - **Compute**: `suite_in_vm`'s slope, the suite's request path per iteration against an
//!   in-memory host inside the VM: the suite's own Rust code as V8 runs it.
//! - **Counts**: the suite's host calls per request by kind, counted in Envoy against the real
//!   host (`suite_counted`) after warm-up, for the suite with its first 0, 1, …, 5 stages; a
//!   stage's calls are the marginal count when it is added, in suite order.
//! - **Prediction**: fixed + Σ count × cost per call + compute, against the suite's measured
//!   overhead (suite − bare) in the same run.
//!
//! [`analysis`] is the arithmetic, [`catalogue`] what is measured, [`report`] the markdown,
//! [`run`] the driver.

pub mod analysis;
pub mod catalogue;
pub mod reasons;
pub mod report;
pub mod run;

use std::collections::BTreeMap;

use crate::bench::{env_number, Route, Variant};
use analysis::{Counts, Runs};
use catalogue::Probe;

/// What `PROFILE_*` variables choose.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// Measured window of one run, seconds (`PROFILE_SECONDS`, default 1).
    pub seconds: f64,
    /// Rounds (`PROFILE_ROUNDS`, default 3).
    pub rounds: usize,
    /// Load before the window, seconds (`PROFILE_WARMUP`, default 0.3; the Envoy is warm, only
    /// the connections are new).
    pub warmup: f64,
    /// `PROFILE_VARIANTS`, default `h1-direct,h2-direct,h1-proxied`.
    pub variants: Vec<Variant>,
    /// Only these probes (`PROFILE_ONLY`, comma-separated ids, e.g.
    /// `request_get_map_request_headers,suite_in_vm`; see [`Probe::id`]).
    pub only: Option<Vec<String>>,
    /// Probes between two runs of the do-nothing reference.
    pub chunk: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            seconds: 1.0,
            rounds: 3,
            warmup: 0.3,
            variants: catalogue::VARIANTS.iter().take(3).copied().collect(),
            only: None,
            chunk: 6,
        }
    }
}

impl Params {
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Params, String> {
        let mut p = Params::default();
        if let Some(s) = env_number(&get, "PROFILE_SECONDS", 0.2, 600.0)? {
            p.seconds = s;
        }
        if let Some(r) = env_number(&get, "PROFILE_ROUNDS", 1.0, 100.0)? {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let r = r.round() as usize;
            p.rounds = r;
        }
        if let Some(w) = env_number(&get, "PROFILE_WARMUP", 0.0, 60.0)? {
            p.warmup = w;
        }
        if let Some(list) = get("PROFILE_VARIANTS").filter(|v| !v.trim().is_empty()) {
            let mut vs = Vec::new();
            for id in list.split(',').map(str::trim) {
                let v = catalogue::VARIANTS
                    .iter()
                    .find(|v| catalogue::variant_id(**v) == id)
                    .ok_or_else(|| {
                        let known: Vec<String> = catalogue::VARIANTS
                            .iter()
                            .map(|v| catalogue::variant_id(*v))
                            .collect();
                        format!(
                            "PROFILE_VARIANTS: unknown variant {id:?}; known: {}",
                            known.join(", ")
                        )
                    })?;
                if !vs.contains(v) {
                    vs.push(*v);
                }
            }
            p.variants = vs;
        }
        if let Some(list) = get("PROFILE_ONLY").filter(|v| !v.trim().is_empty()) {
            let ids: Vec<String> = list.split(',').map(|s| s.trim().to_owned()).collect();
            let known: Vec<String> = catalogue::probes().iter().map(Probe::id).collect();
            if let Some(bad) = ids.iter().find(|id| !known.contains(id)) {
                return Err(format!(
                    "PROFILE_ONLY: unknown probe {bad:?}; known: {}",
                    known.join(", ")
                ));
            }
            p.only = Some(ids);
        }
        Ok(p)
    }

    /// The `PROFILE_*` settings that differ from the defaults, as a command prefix.
    pub fn env_prefix(&self) -> String {
        let d = Params::default();
        let mut env = Vec::new();
        if self.seconds != d.seconds {
            env.push(format!("PROFILE_SECONDS={}", self.seconds));
        }
        if self.rounds != d.rounds {
            env.push(format!("PROFILE_ROUNDS={}", self.rounds));
        }
        if self.warmup != d.warmup {
            env.push(format!("PROFILE_WARMUP={}", self.warmup));
        }
        if self.variants != d.variants {
            let ids: Vec<String> = self
                .variants
                .iter()
                .map(|v| catalogue::variant_id(*v))
                .collect();
            env.push(format!("PROFILE_VARIANTS={}", ids.join(",")));
        }
        if let Some(only) = &self.only {
            env.push(format!("PROFILE_ONLY={}", only.join(",")));
        }
        env.iter().map(|e| format!("{e} ")).collect()
    }
}

/// A profile run: what was measured and counted.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub params: Params,
    pub probes: Vec<Probe>,
    pub runs: Runs,
    /// Calls per request by route, one map per suite configuration (0 to every stage).
    pub counts: BTreeMap<Route, Vec<Counts>>,
    /// Runs that failed (they are left out).
    pub failures: Vec<String>,
    pub elapsed_s: f64,
}

impl Profile {
    /// The whole suite's calls per request by route.
    pub fn suite_counts(&self) -> BTreeMap<Route, Counts> {
        self.counts
            .iter()
            .filter_map(|(r, c)| Some((*r, c.last()?.clone())))
            .collect()
    }

    pub fn analyse(&self) -> Vec<analysis::VariantAnalysis> {
        analysis::analyse(
            &self.probes,
            &self.runs,
            &self.suite_counts(),
            &self.params.variants,
        )
    }
}

/// Where the profile's section starts and ends in BENCHMARKS.md.
pub const SECTION_START: &str = "<!-- profile: written by the profile program; `cargo run --release -p mesh-integration --bin profile -- --write` replaces it alone -->";
pub const SECTION_END: &str = "<!-- /profile -->";

/// `doc` with its profile section replaced by `section` (markers included), or `section`
/// appended when `doc` has none.
pub fn replace_section(doc: &str, section: &str) -> String {
    let wrapped = format!("{SECTION_START}\n{}\n{SECTION_END}", section.trim_end());
    match (doc.find(SECTION_START), doc.find(SECTION_END)) {
        (Some(a), Some(b)) if b > a => {
            let end = b + SECTION_END.len();
            format!(
                "{}{wrapped}{}",
                doc.get(..a).unwrap_or(""),
                doc.get(end..).unwrap_or("")
            )
        }
        _ => format!("{}\n\n{wrapped}\n", doc.trim_end()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_in_place_or_appended() {
        let doc = format!("# B\n\nintro\n\n{SECTION_START}\nold\n{SECTION_END}\n\n## After\n");
        let new = replace_section(&doc, "## Where each microsecond goes\n\nnew\n");
        assert!(new.contains("\nnew\n"));
        assert!(!new.contains("old"));
        assert!(new.ends_with("## After\n"));
        assert!(new.starts_with("# B\n\nintro\n\n"));
        let appended = replace_section("# B\n", "x");
        assert!(appended.starts_with("# B\n\n"));
        assert!(appended.contains(&format!("{SECTION_START}\nx\n{SECTION_END}")));
        // Replacing twice is replacing once.
        assert_eq!(replace_section(&new, "y"), replace_section(&doc, "y"));
    }

    #[test]
    fn environment_chooses_length_variants_and_probes() {
        let env = crate::bench::fake_env;
        assert_eq!(Params::from_env(env(&[])).unwrap(), Params::default());
        let p = Params::from_env(env(&[
            ("PROFILE_SECONDS", "0.5"),
            ("PROFILE_ROUNDS", "1"),
            ("PROFILE_VARIANTS", "h2-proxied,h1-direct"),
            (
                "PROFILE_ONLY",
                "request_get_map_request_headers,suite_in_vm",
            ),
        ]))
        .unwrap();
        assert_eq!((p.seconds, p.rounds), (0.5, 1));
        assert_eq!(
            p.variants,
            vec![catalogue::VARIANTS[3], catalogue::VARIANTS[0]]
        );
        assert_eq!(
            p.env_prefix(),
            "PROFILE_SECONDS=0.5 PROFILE_ROUNDS=1 PROFILE_VARIANTS=h2-proxied,h1-direct \
             PROFILE_ONLY=request_get_map_request_headers,suite_in_vm "
        );
        assert!(Params::from_env(env(&[("PROFILE_VARIANTS", "h3")])).is_err());
        assert!(Params::from_env(env(&[("PROFILE_ONLY", "nope")])).is_err());
        assert!(Params::from_env(env(&[("PROFILE_ROUNDS", "0")])).is_err());
    }
}
