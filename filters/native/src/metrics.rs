//! Metrics with real labels, defined while the filter config is created.
//!
//! Envoy lets a dynamic module define metrics only inside `on_http_filter_config_new` (a later
//! definition is `FROZEN`, `ABI.md` §6), each as a *family*: a name and its label names, whose
//! label values are given with every update. The stages, written for proxy-wasm, define a
//! metric per label value whenever they first meet a route. So:
//!
//! - at config time every per-route stat of every configured stage is defined twice, as family
//!   `<stage>.<stat>` labelled `route` and labelled `cluster` (`deadline.rq_total{route}`), and
//!   every metric a stage defines while it is built (the trace stage's `extracted{format}`)
//!   becomes a family too, plus a *static handle* (family and label value) that every thread
//!   may use: [`MetricTable`], shared;
//! - at run time a stage's `define_metric` resolves to a family defined above and returns a
//!   per-thread handle for (family, label value): [`ThreadHandles`], one per thread, as each
//!   wasm VM has its own metric ids.
//!
//! With `metrics_namespace: mesh` Envoy shows `mesh.deadline.rq_total.route.auth` in `/stats`
//! and `envoy_mesh_deadline_rq_total{route="auth"}` in `/stats/prometheus`.

use crate::ffi::{ConfigPtr, MetricOp};
use mesh_kit::host::{MetricKind, MetricName};
use std::collections::HashMap;
use std::rc::Rc;

/// Handles at or above this are per-thread ([`ThreadHandles`]); below, static.
pub const DYNAMIC: u32 = 1 << 31;

/// Most per-thread handles: the route and cluster names of a configuration, times its stats.
pub const MAX_THREAD_HANDLES: usize = 1 << 20;

/// One defined metric family.
#[derive(Debug)]
pub struct Family {
    /// `deadline.rq_total`.
    pub name: String,
    pub kind: MetricKind,
    /// The id Envoy gave it (ids are per kind).
    pub envoy_id: usize,
    /// Defined with one label name (`route`, `cluster`, `format`), or none.
    pub labelled: bool,
}

/// `mesh.deadline` + `rq_total` → `deadline.rq_total` (the namespace adds `mesh.` back).
pub fn family_name(stage: &str, stat: &str) -> String {
    format!("{}.{stat}", stage.strip_prefix("mesh.").unwrap_or(stage))
}

/// The families of one filter config and its static handles; read-only once the config exists.
#[derive(Debug, Default)]
pub struct MetricTable {
    families: Vec<Family>,
    by_key: HashMap<(String, Option<String>), usize>,
    statics: Vec<(usize, Option<String>)>,
}

impl MetricTable {
    /// Defines family `name` with label name `label` (once; later calls return the same one).
    /// Config time only.
    pub fn define_family(
        &mut self,
        config: ConfigPtr,
        kind: MetricKind,
        name: &str,
        label: Option<&str>,
    ) -> Option<usize> {
        let key = (name.to_string(), label.map(str::to_string));
        if let Some(&i) = self.by_key.get(&key) {
            return self
                .families
                .get(i)
                .is_some_and(|f| f.kind == kind)
                .then_some(i);
        }
        let labels: Vec<&str> = label.into_iter().collect();
        match config.define(kind, name, &labels) {
            Ok(envoy_id) => {
                self.families.push(Family {
                    name: name.to_string(),
                    kind,
                    envoy_id,
                    labelled: label.is_some(),
                });
                let i = self.families.len() - 1;
                self.by_key.insert(key, i);
                Some(i)
            }
            Err(r) => {
                log::warn!(
                    "mesh: metric {name:?} could not be defined (Envoy's result {}); it is not counted",
                    r.0
                );
                None
            }
        }
    }

    /// A metric a stage defines while it is built: its family and a handle valid on every
    /// thread. Config time only.
    pub fn define_static(
        &mut self,
        config: ConfigPtr,
        kind: MetricKind,
        name: &MetricName<'_>,
    ) -> Option<u32> {
        let family = self.define_family(
            config,
            kind,
            &family_name(name.stage, name.stat),
            name.label.map(|(k, _)| k),
        )?;
        let id = u32::try_from(self.statics.len())
            .ok()
            .filter(|id| *id < DYNAMIC)?;
        self.statics
            .push((family, name.label.map(|(_, v)| v.to_string())));
        Some(id)
    }

    /// The family a run-time definition belongs to.
    pub fn find(&self, kind: MetricKind, name: &MetricName<'_>) -> Option<usize> {
        let key = (
            family_name(name.stage, name.stat),
            name.label.map(|(k, _)| k.to_string()),
        );
        let i = *self.by_key.get(&key)?;
        self.families
            .get(i)
            .is_some_and(|f| f.kind == kind)
            .then_some(i)
    }

    pub fn family(&self, i: usize) -> Option<&Family> {
        self.families.get(i)
    }

    /// Every family, in definition order.
    pub fn families(&self) -> &[Family] {
        &self.families
    }

    fn resolve_static(&self, id: u32) -> Option<(&Family, Option<&str>)> {
        let (family, label) = self.statics.get(usize::try_from(id).ok()?)?;
        Some((self.families.get(*family)?, label.as_deref()))
    }
}

/// One thread's handles over a [`MetricTable`]: (family, label value), deduplicated, so the
/// table grows with the distinct route and cluster names only.
#[derive(Debug, Default)]
pub struct ThreadHandles {
    entries: Vec<(usize, Option<Rc<str>>)>,
    by_key: HashMap<(usize, Option<Rc<str>>), u32>,
}

impl ThreadHandles {
    /// A run-time `define_metric`: `None` when no family was defined for it at config time
    /// (it then goes uncounted, and is logged once).
    pub fn define(
        &mut self,
        table: &MetricTable,
        kind: MetricKind,
        name: &MetricName<'_>,
    ) -> Option<u32> {
        let Some(family) = table.find(kind, name) else {
            once(&UNDEFINED, || {
                format!(
                    "mesh: metric {:?} was not defined when the configuration loaded; it is not counted",
                    name.flat()
                )
            });
            return None;
        };
        let key = (family, name.label.map(|(_, v)| Rc::<str>::from(v)));
        if let Some(&id) = self.by_key.get(&key) {
            return Some(id);
        }
        if self.entries.len() >= MAX_THREAD_HANDLES {
            return None;
        }
        let id = DYNAMIC | u32::try_from(self.entries.len()).ok()?;
        self.entries.push(key.clone());
        self.by_key.insert(key, id);
        Some(id)
    }

    /// How many per-thread handles there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No per-thread handle yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The family and label value of a handle (static or this thread's).
    pub fn resolve<'a>(
        &'a self,
        table: &'a MetricTable,
        id: u32,
    ) -> Option<(&'a Family, Option<&'a str>)> {
        if id < DYNAMIC {
            return table.resolve_static(id);
        }
        let (family, label) = self.entries.get(usize::try_from(id & !DYNAMIC).ok()?)?;
        Some((table.family(*family)?, label.as_deref()))
    }
}

/// The ABI call and value for an update of `delta` (`increment_metric`) on a metric of `kind`.
pub fn increment(kind: MetricKind, delta: i64) -> Option<(MetricOp, u64)> {
    match (kind, delta) {
        (_, 0) => None,
        (MetricKind::Counter, d) if d > 0 => Some((MetricOp::CounterAdd, d.unsigned_abs())),
        (MetricKind::Counter, _) => None,
        (MetricKind::Gauge, d) if d > 0 => Some((MetricOp::GaugeAdd, d.unsigned_abs())),
        (MetricKind::Gauge, d) => Some((MetricOp::GaugeSub, d.unsigned_abs())),
    }
}

/// The update that makes a metric's series exist without changing it (adding 0): a wasm
/// `define_metric` shows the metric at 0 at once, Envoy shows a labelled series only once it has
/// been updated.
pub fn zero(kind: MetricKind) -> MetricOp {
    match kind {
        MetricKind::Counter => MetricOp::CounterAdd,
        MetricKind::Gauge => MetricOp::GaugeAdd,
    }
}

/// The ABI call for `record_metric` (a gauge's value; counters have no such update).
pub fn record(kind: MetricKind) -> Option<MetricOp> {
    (kind == MetricKind::Gauge).then_some(MetricOp::GaugeSet)
}

/// The label values a family takes: one for a labelled family, none otherwise. A mismatch is
/// refused here, because Envoy would accept the call and count nothing (`ABI.md` §6).
pub fn labels_match(family: &Family, label: Option<&str>) -> bool {
    family.labelled == label.is_some()
}

static UNDEFINED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Logs `message()` the first time `flag` is seen unset (once per process).
pub fn once(flag: &std::sync::atomic::AtomicBool, message: impl FnOnce() -> String) {
    if !flag.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log::warn!("{}", message());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_names_drop_the_mesh_prefix_the_namespace_adds_back() {
        assert_eq!(
            family_name("mesh.deadline", "rq_total"),
            "deadline.rq_total"
        );
        assert_eq!(family_name("mesh.native", "panics"), "native.panics");
        assert_eq!(family_name("other", "x"), "other.x");
    }

    #[test]
    fn gauges_go_down_counters_never_do() {
        assert_eq!(
            increment(MetricKind::Counter, 3),
            Some((MetricOp::CounterAdd, 3))
        );
        assert_eq!(increment(MetricKind::Counter, -1), None);
        assert_eq!(
            increment(MetricKind::Gauge, -2),
            Some((MetricOp::GaugeSub, 2))
        );
        assert_eq!(increment(MetricKind::Gauge, 0), None);
        assert_eq!(record(MetricKind::Gauge), Some(MetricOp::GaugeSet));
        assert_eq!(record(MetricKind::Counter), None);
    }

    fn table_with(families: &[(&str, MetricKind, Option<&str>)]) -> MetricTable {
        let mut t = MetricTable::default();
        for (name, kind, label) in families {
            t.families.push(Family {
                name: name.to_string(),
                kind: *kind,
                envoy_id: t.families.len(),
                labelled: label.is_some(),
            });
            t.by_key.insert(
                (name.to_string(), label.map(str::to_string)),
                t.families.len() - 1,
            );
        }
        t
    }

    #[test]
    fn thread_handles_are_one_per_family_and_label_value() {
        let t = table_with(&[
            ("deadline.rq_total", MetricKind::Counter, Some("route")),
            ("deadline.rq_total", MetricKind::Counter, Some("cluster")),
        ]);
        let mut h = ThreadHandles::default();
        let name = |label| MetricName {
            stage: "mesh.deadline",
            stat: "rq_total",
            label,
        };
        let auth = h
            .define(&t, MetricKind::Counter, &name(Some(("route", "auth"))))
            .unwrap();
        let again = h
            .define(&t, MetricKind::Counter, &name(Some(("route", "auth"))))
            .unwrap();
        let other = h
            .define(&t, MetricKind::Counter, &name(Some(("cluster", "auth"))))
            .unwrap();
        assert_eq!(auth, again);
        assert_ne!(auth, other);
        assert!(auth >= DYNAMIC);
        // No family for it, or of another kind: not counted.
        assert_eq!(
            h.define(&t, MetricKind::Gauge, &name(Some(("route", "auth")))),
            None
        );
        assert_eq!(h.define(&t, MetricKind::Counter, &name(None)), None);
        let (family, label) = h.resolve(&t, other).unwrap();
        assert_eq!((family.envoy_id, label), (1, Some("auth")));
        assert!(labels_match(family, Some("auth")));
        assert!(!labels_match(family, None));
    }
}
