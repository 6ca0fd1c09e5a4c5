//! The rollouts' verdicts (what breaks the bounds) and their Markdown.

use std::time::Duration;

use crate::dynamic::Update;

use super::*;

/// Slack for the new filter chain's start-up: clients are asked to move about a second after
/// the new chain is warm, and need a moment to do so.
pub const MOVE_SLACK: Duration = Duration::from_secs(2);

impl Step {
    /// Whether the old filter chain had the time to move its connections before Envoy closed
    /// them: Envoy counts `--drain-time-s` from when it began processing the update, and a new
    /// module's compilation on the main thread eats into it (measured here by how long the
    /// update took).
    pub fn drain_sufficed(&self, drain_time_s: u32) -> bool {
        self.update.after() + MOVE_SLACK < Duration::from_secs(u64::from(drain_time_s))
    }
}

impl Report {
    /// What went wrong: everything the bounds forbid.
    pub fn failures(&self) -> Vec<String> {
        let p = &self.params;
        let mut out = Vec::new();
        if self.per_worker.len() != WORKERS as usize || self.per_worker.contains(&0) {
            out.push(format!(
                "a worker took no connection: {:?}",
                self.per_worker
            ));
        }
        if !self.vm_failures.is_empty() {
            out.push(format!(
                "VM failures in the Envoy log: {:?}",
                self.vm_failures
            ));
        }
        for s in &self.steps {
            let name = s.kind.describe();
            let want_applied = s.kind != Kind::BadConfig;
            if s.update.applied() != want_applied {
                out.push(format!("{name}: Envoy's verdict {:?}", s.update));
                continue;
            }
            let lost_spans = s.spans.0 - s.spans.1;
            if s.drain_sufficed(p.drain_time_s) {
                if s.during.lost() > 0 {
                    out.push(format!(
                        "{name}: {} requests lost: {:?}",
                        s.during.lost(),
                        s.lost
                    ));
                }
                if lost_spans > 0 {
                    out.push(format!(
                        "{name}: {lost_spans} spans lost at {:?}",
                        s.spans_missing
                    ));
                }
            } else {
                // The documented bound: what was in flight on the old chain when Envoy closed it
                // (one request per connection), and the spans of its last flush interval.
                if s.during.lost() > p.connections {
                    out.push(format!(
                        "{name}: {} requests lost, over the bound of {} (the drain time was eaten                          by a {:?} update)",
                        s.during.lost(),
                        p.connections,
                        s.update.after()
                    ));
                }
                if lost_spans > p.rate as usize {
                    out.push(format!(
                        "{name}: {lost_spans} spans lost, over one second of load"
                    ));
                }
            }
            // A bound for a stall, not for noise: the machine is shared.
            if s.during.p99_ms > 5000.0 {
                out.push(format!(
                    "{name}: p99 {:.0} ms during the change",
                    s.during.p99_ms
                ));
            }
            match s.kind {
                Kind::RouteMetadata => {
                    if s.took_effect.is_none() {
                        out.push(format!(
                            "{name}: the new deadline was not in force on every probe within {:?}",
                            TAKE_EFFECT_BOUND
                        ));
                    }
                    if s.tightened && s.breaker_opened_after != Some(3) {
                        out.push(format!(
                            "{name}: the breaker probe route opened after {:?} failures, not 3",
                            s.breaker_opened_after
                        ));
                    }
                }
                Kind::NewVmId => {
                    if s.breaker_open_after != Some(false) {
                        out.push(format!("{name}: the new VM's breaker is not closed"));
                    }
                    if s.budget.map(|b| b.1) != Some(BUDGET_FLOOR) {
                        out.push(format!(
                            "{name}: the new VM's budget {:?} is not full",
                            s.budget
                        ));
                    }
                }
                _ => {
                    if s.breaker_open_after != Some(true) {
                        out.push(format!("{name}: the open breaker did not stay open"));
                    }
                    if let Some((a, b)) = s.budget {
                        if a != b {
                            out.push(format!("{name}: the budget balance went {a} → {b}"));
                        }
                    }
                }
            }
            if let Some((old, new)) = s.versions {
                let seen: Vec<u32> = s.versions_seen.iter().map(|(v, _)| *v).collect();
                let expected: Vec<u32> = if old == new {
                    vec![old]
                } else {
                    vec![old, new]
                };
                let moved = seen.last() == Some(&new) && seen.iter().all(|v| expected.contains(v));
                if !moved {
                    out.push(format!(
                        "{name}: configurations serving {:?}, expected {expected:?}",
                        s.versions_seen
                    ));
                }
            }
            if s.kind == Kind::BadConfig {
                let lines: Vec<&String> =
                    s.refusals.iter().filter(|l| l.contains(REFUSAL)).collect();
                if lines.len() != 1 {
                    out.push(format!(
                        "{name}: {} refusal lines: {:?}",
                        lines.len(),
                        s.refusals
                    ));
                }
            }
        }
        if self.lost > 0 && out.is_empty() {
            // Losses outside every step's window (there should be none).
            let in_steps: usize = self.steps.iter().map(|s| s.during.lost()).sum();
            if self.lost > in_steps {
                out.push(format!(
                    "{} requests lost outside the changes",
                    self.lost - in_steps
                ));
            }
        }
        out
    }
}

pub(super) fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

impl Report {
    /// The steps as the Markdown table of HARDENING.md, and the notes under it.
    pub fn render(&self) -> String {
        let p = &self.params;
        let mut out = format!(
            "Load: {} req/s over {} keep-alive HTTP/1.1 connections through the suite, Envoy \
             `--concurrency {WORKERS} --drain-time-s {}`; {} s before and at least {} s after each \
             change measured.\n\n",
            p.rate,
            p.connections,
            p.drain_time_s,
            p.before.as_secs_f64(),
            p.during.as_secs_f64()
        );
        out.push_str(
            "| change | Envoy | requests | lost | p99 before → during (ms) | max (ms) | clients \
             moved (ms) | old config until (ms) | open breaker | budget | spans |\n\
             |---|---|---:|---:|---|---:|---:|---:|---|---|---|\n",
        );
        for s in &self.steps {
            let verdict = match s.update {
                Update::Applied(d) => format!("taken in {} ms", ms(d)),
                Update::Rejected(d) => format!("refused in {} ms", ms(d)),
            };
            let breaker = match s.breaker_open_after {
                Some(true) => "stays open",
                Some(false) => "closed (new state)",
                None => "–",
            };
            let budget = s
                .budget
                .map(|(a, b)| {
                    if a == b {
                        format!("{a} kept")
                    } else {
                        format!("{a} → {b}")
                    }
                })
                .unwrap_or_else(|| "–".to_owned());
            let old = s
                .old_served_until
                .filter(|_| s.versions.is_some_and(|(a, b)| a != b))
                .map(ms)
                .unwrap_or_else(|| "–".to_owned());
            let moved = s.moved_after.map(ms).unwrap_or_else(|| "–".to_owned());
            out.push_str(&format!(
                "| {} | {verdict} | {} | {} | {:.1} → {:.1} | {:.1} | {moved} | {old} | {breaker} | {budget} | {}/{} |\n",
                s.kind.describe(),
                s.during.requests,
                s.during.lost(),
                s.before.p99_ms,
                s.during.p99_ms,
                s.during.max_ms,
                s.spans.1,
                s.spans.0,
            ));
        }
        out.push('\n');
        for s in &self.steps {
            if s.kind == Kind::RouteMetadata {
                let effect = s
                    .took_effect
                    .map(|d| format!("{} ms after Envoy took the table", ms(d)))
                    .unwrap_or_else(|| {
                        format!(
                            "not within {} s of Envoy taking the table",
                            TAKE_EFFECT_BOUND.as_secs()
                        )
                    });
                if s.tightened {
                    out.push_str(&format!(
                        "- Route metadata, tightened (deadline 2 s → 250 ms, breaker 20 → 3 \
                         failures): the new deadline was in force on every probe {effect}; the \
                         breaker probe route opened after {} failures.\n",
                        s.breaker_opened_after
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| "more than 25".to_owned()),
                    ));
                } else {
                    out.push_str(&format!(
                        "- Route metadata, relaxed (deadline 250 ms → 2 s): the new deadline was \
                         in force on every probe {effect}.\n"
                    ));
                }
            }
            if !s.lost.is_empty() {
                out.push_str(&format!(
                    "- {}: lost {:?}\n",
                    s.kind.describe(),
                    s.lost.iter().take(5).collect::<Vec<_>>()
                ));
            }
            if !s.spans_missing.is_empty() {
                out.push_str(&format!(
                    "- {}: {} spans missing, of requests sent at {} ms after the change\n",
                    s.kind.describe(),
                    s.spans.0 - s.spans.1,
                    s.spans_missing
                        .iter()
                        .take(6)
                        .map(|d| ms(*d))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if s.kind == Kind::BadConfig {
                if let Some(line) = s.refusals.iter().find(|l| l.contains(REFUSAL)) {
                    let text = line.split("wasm log mesh mesh: ").nth(1).unwrap_or(line);
                    out.push_str(&format!("- Bad configuration, the refusal: `{text}`\n"));
                }
            }
        }
        out.push_str(&format!(
            "- Whole run: {} requests, {} lost; {} of {} spans received; {} connections opened, \
             {} requests resent (never written: the connection had just closed); connections \
             per worker {:?}; trace counters {:?}.\n",
            self.requests,
            self.lost,
            self.spans.1,
            self.spans.0,
            self.connections_opened,
            self.resent,
            self.per_worker,
            self.trace_counters
        ));
        out
    }
}
