//! Metrics per route (or per cluster), defined once per root context.
//!
//! A stage declares its stats once, with [`stats!`](crate::stats): an enum whose discriminants
//! are the indices into the list of names and kinds, so the two cannot drift apart. The first
//! request on a route defines them with the label encoded in the name, `mesh.deadline.rq_total.route=auth`, and later requests reuse the
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

use crate::hash::FxHashMap;
use crate::host::{Host, MetricKind, MetricName};
use std::marker::PhantomData;
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

/// A stage's set of stats: an enum whose discriminants index [`StatSet::ALL`]. Declared with
/// [`stats!`](crate::stats), never by hand.
pub trait StatSet: Copy + 'static {
    /// Names and kinds, in discriminant order.
    const ALL: &'static [Stat];
    /// Counted by the adapter when a route's metadata for the stage is invalid; every stage has
    /// one, named `config_error`.
    const CONFIG_ERROR: Self;
    fn index(self) -> usize;
}

/// Declares a stage's stats once: the enum and its list of names and kinds, in one order.
///
/// ```
/// mesh_kit::stats! {
///     /// The deadline stage's stats.
///     pub enum Stat {
///         RqTotal = counter("rq_total"),
///         Remaining = gauge("remaining"),
///         ConfigError = counter("config_error"),
///     }
/// }
/// use mesh_kit::metrics::StatSet;
/// assert_eq!(Stat::ALL[Stat::Remaining.index()].name, "remaining");
/// assert_eq!(Stat::CONFIG_ERROR, Stat::ConfigError);
/// ```
#[macro_export]
macro_rules! stats {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $kind:ident($stat:literal)),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(usize)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }
        impl $crate::metrics::StatSet for $name {
            const ALL: &'static [$crate::metrics::Stat] = &[$($crate::metrics::Stat::$kind($stat)),+];
            const CONFIG_ERROR: Self = $name::ConfigError;
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

/// Most label values remembered per stage (Envoy keeps the metrics themselves).
pub const MAX_LABELS: usize = 4096;

/// The metric ids of one label value (one route) of a stage whose stats are `K` (cheap to
/// clone: the ids are shared).
#[derive(Debug)]
pub struct Stats<K> {
    ids: Rc<[Option<u32>]>,
    kind: PhantomData<K>,
}

impl<K> Clone for Stats<K> {
    fn clone(&self) -> Self {
        Stats {
            ids: Rc::clone(&self.ids),
            kind: PhantomData,
        }
    }
}

impl<K: StatSet> Stats<K> {
    pub fn add(&self, host: &dyn Host, stat: K, delta: i64) {
        if let Some(Some(id)) = self.ids.get(stat.index()) {
            host.increment_metric(*id, delta);
        }
    }

    pub fn inc(&self, host: &dyn Host, stat: K) {
        self.add(host, stat, 1);
    }

    pub fn set(&self, host: &dyn Host, stat: K, value: u64) {
        if let Some(Some(id)) = self.ids.get(stat.index()) {
            host.record_metric(*id, value);
        }
    }
}

/// Metric ids by label for one stage. The typed face is generic; the work is not, so the
/// modules carry one copy of it whatever the number of stages.
pub struct StatsCache<K> {
    ids: IdsByLabel,
    kind: PhantomData<K>,
}

impl<K: StatSet> StatsCache<K> {
    /// `prefix` is the filter name (`mesh.deadline`).
    pub fn new(prefix: &'static str) -> Self {
        StatsCache {
            ids: IdsByLabel {
                prefix,
                by_label: FxHashMap::default(),
                len: 0,
            },
            kind: PhantomData,
        }
    }

    /// The stats for `label=value`, e.g. `("route", "auth")` or `("cluster", "auth_v1")`.
    pub fn get(&mut self, host: &dyn Host, label: &'static str, value: &str) -> Stats<K> {
        Stats {
            ids: self.ids.get(host, K::ALL, label, value),
            kind: PhantomData,
        }
    }
}

/// One label's metric ids, by stat index (`None`: the host refused to define it).
type Ids = Rc<[Option<u32>]>;

struct IdsByLabel {
    prefix: &'static str,
    /// Label name (`route`, `cluster`) → label value → ids: looked up without allocating.
    by_label: FxHashMap<&'static str, FxHashMap<String, Ids>>,
    len: usize,
}

impl IdsByLabel {
    fn get(
        &mut self,
        host: &dyn Host,
        stats: &[Stat],
        label: &'static str,
        value: &str,
    ) -> Rc<[Option<u32>]> {
        if let Some(ids) = self.by_label.get(label).and_then(|m| m.get(value)) {
            return Rc::clone(ids);
        }
        let safe = label_value(value);
        let ids: Rc<[Option<u32>]> = stats
            .iter()
            .map(|s| {
                let name = MetricName {
                    stage: self.prefix,
                    stat: s.name,
                    label: Some((label, &safe)),
                };
                host.define_metric(s.kind, &name)
            })
            .collect();
        if self.len >= MAX_LABELS {
            self.by_label.clear();
            self.len = 0;
        }
        self.len += 1;
        self.by_label
            .entry(label)
            .or_default()
            .insert(value.to_string(), Rc::clone(&ids));
        ids
    }
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
    fn the_wasm_form_encodes_the_label_for_stats_tags() {
        let name = MetricName {
            stage: "mesh.deadline",
            stat: "rq_total",
            label: Some(("route", "auth")),
        };
        assert_eq!(name.flat(), "mesh.deadline.rq_total.route=auth");
        let plain = MetricName {
            label: None,
            ..name
        };
        assert_eq!(plain.flat(), "mesh.deadline.rq_total");
    }

    #[test]
    fn label_values_cannot_break_the_tag_regex() {
        assert_eq!(label_value("auth.v1;x=y"), "auth_v1_x_y");
        assert_eq!(label_value(""), "unnamed");
        assert_eq!(label_value("learner-api_2"), "learner-api_2");
    }
}
