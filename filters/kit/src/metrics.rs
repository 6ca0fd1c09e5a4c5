//! Metrics per route (or per cluster), defined once per root context.
//!
//! A stage lists its stats once (`&[Stat]`); the first request on a route defines them with the
//! label encoded in the name, `mesh.deadline.rq_total.route=auth`, and later requests reuse the
//! ids. Envoy shows them as `wasmcustom.mesh.deadline.rq_total.route=auth` in `/stats`; the
//! `stats_tags` of the shipped bootstraps,
//!
//! ```yaml
//! stats_config:
//!   stats_tags:
//!   - { tag_name: route, regex: '(\.route=([^.;]+))' }
//!   - { tag_name: cluster, regex: '(\.cluster=([^.;]+))' }
//! ```
//!
//! turn that into `mesh_deadline_rq_total{route="auth"}` in `/stats/prometheus`. Label values
//! come from configuration (route and cluster names), never from requests; characters other than
//! `[A-Za-z0-9_-]` become `_`, and an empty name is `unnamed`.

use crate::host::{Host, MetricKind};
use std::collections::HashMap;
use std::rc::Rc;

/// One stat of a stage: its name after the prefix, and its kind.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub name: &'static str,
    pub kind: MetricKind,
}

impl Stat {
    pub const fn counter(name: &'static str) -> Self {
        Stat {
            name,
            kind: MetricKind::Counter,
        }
    }
    pub const fn gauge(name: &'static str) -> Self {
        Stat {
            name,
            kind: MetricKind::Gauge,
        }
    }
}

/// Most label values remembered per stage (Envoy keeps the metrics themselves).
pub const MAX_LABELS: usize = 4096;

/// The metric ids of one label value (one route), in the order of the stage's stat list.
#[derive(Debug)]
pub struct Stats {
    ids: Box<[Option<u32>]>,
}

impl Stats {
    pub fn add(&self, host: &dyn Host, stat: usize, delta: i64) {
        if let Some(Some(id)) = self.ids.get(stat) {
            host.increment_metric(*id, delta);
        }
    }

    pub fn inc(&self, host: &dyn Host, stat: usize) {
        self.add(host, stat, 1);
    }

    pub fn set(&self, host: &dyn Host, stat: usize, value: u64) {
        if let Some(Some(id)) = self.ids.get(stat) {
            host.record_metric(*id, value);
        }
    }
}

/// Metric ids by label for one stage.
pub struct StatsCache {
    prefix: &'static str,
    stats: &'static [Stat],
    by_label: HashMap<(&'static str, String), Rc<Stats>>,
}

impl StatsCache {
    /// `prefix` is the filter name (`mesh.deadline`).
    pub fn new(prefix: &'static str, stats: &'static [Stat]) -> Self {
        StatsCache {
            prefix,
            stats,
            by_label: HashMap::new(),
        }
    }

    /// The stats for `label=value`, e.g. `("route", "auth")` or `("cluster", "auth_v1")`.
    pub fn get(&mut self, host: &dyn Host, label: &'static str, value: &str) -> Rc<Stats> {
        if let Some(s) = self.by_label.get(&(label, value.to_string())) {
            return Rc::clone(s);
        }
        let safe = label_value(value);
        let ids = self
            .stats
            .iter()
            .map(|s| host.define_metric(s.kind, &metric_name(self.prefix, s.name, label, &safe)))
            .collect();
        let stats = Rc::new(Stats { ids });
        if self.by_label.len() >= MAX_LABELS {
            self.by_label.clear();
        }
        self.by_label
            .insert((label, value.to_string()), Rc::clone(&stats));
        stats
    }
}

/// `mesh.deadline` + `rq_total` + `route` + `auth` → `mesh.deadline.rq_total.route=auth`.
pub fn metric_name(prefix: &str, stat: &str, label: &str, value: &str) -> String {
    format!("{prefix}.{stat}.{label}={value}")
}

/// A label value safe inside a metric name and a Prometheus label.
pub fn label_value(s: &str) -> String {
    if s.is_empty() {
        return "unnamed".into();
    }
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // On wasm32, #[test] here is wasm-bindgen-test's attribute, so these tests also run compiled to
    // wasm32 under Node.js: scripts/wasm-test.sh.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn names_encode_the_label_for_stats_tags() {
        assert_eq!(
            metric_name("mesh.deadline", "rq_total", "route", "auth"),
            "mesh.deadline.rq_total.route=auth"
        );
    }

    #[test]
    fn label_values_cannot_break_the_tag_regex() {
        assert_eq!(label_value("auth.v1;x=y"), "auth_v1_x_y");
        assert_eq!(label_value(""), "unnamed");
        assert_eq!(label_value("learner-api_2"), "learner-api_2");
    }
}
