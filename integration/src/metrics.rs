//! Envoy's `/stats/prometheus`, read once into a [`Metrics`] snapshot.
//!
//! A sample that is not on the page is *absent*, which is not the same as zero: a misspelled
//! name, a wrong label or a stat the filter never defined all read as absent, and
//! [`Metrics::value`] fails on it with the names and label sets that are there. Only
//! [`Metrics::get`] (an `Option`) lets a test treat absent as it means to.
//!
//! Every lookup is remembered, so that [`wait_for`] (behind [`crate::envoy::Envoy::wait_for`])
//! can fail with the values its condition last looked at.
//!
//! The page is Prometheus text format 0.0.4: `# TYPE name kind` lines and
//! `name{label="value",...} number` samples; label values are unescaped (`\"`, `\\`, `\n`).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wait;
use crate::Error;

/// One sample of the page.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    /// The labels in page order.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of one label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether every given label is on the sample with that value (others may be too).
    pub fn matches(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(k, v)| self.label(k) == Some(*v))
    }
}

/// A parsed `/stats/prometheus` page.
#[derive(Debug, Default)]
pub struct Metrics {
    samples: Vec<Sample>,
    /// `(name, kind)` of every `# TYPE` line, in page order.
    types: Vec<(String, String)>,
    /// What the lookups since the snapshot was taken found (for failure messages).
    looked_up: RefCell<Vec<String>>,
}

impl Metrics {
    /// Parses a page; lines that are not samples or `# TYPE` lines are skipped.
    pub fn parse(text: &str) -> Metrics {
        let mut metrics = Metrics::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    metrics.types.push((name.to_owned(), kind.to_owned()));
                }
            } else if !line.starts_with('#') {
                if let Some(sample) = parse_sample(line) {
                    metrics.samples.push(sample);
                }
            }
        }
        metrics
    }

    /// The value of the first sample called `name` that carries every label given; `None`
    /// when there is none (absent, which is not 0).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let value = self
            .samples(name)
            .find(|s| s.matches(labels))
            .map(|s| s.value);
        let shown = match value {
            Some(v) => format!("{} = {v}", series(name, labels)),
            None => format!("{} absent", series(name, labels)),
        };
        if let Ok(mut seen) = self.looked_up.try_borrow_mut() {
            seen.push(shown);
        }
        value
    }

    /// Like [`Metrics::get`]; an absent sample is an error that names it and lists the samples
    /// of that name, or else the names that look like it.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64, Error> {
        self.get(name, labels)
            .ok_or_else(|| self.absent(name, labels).into())
    }

    /// The sum of every sample called `name`, whatever its labels; `None` when there is none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut samples = self.samples(name).peekable();
        samples.peek()?;
        let total = samples.map(|s| s.value).sum();
        if let Ok(mut seen) = self.looked_up.try_borrow_mut() {
            seen.push(format!("sum of {name} = {total}"));
        }
        Some(total)
    }

    /// Every sample called `name`.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Every sample of the page.
    pub fn all(&self) -> &[Sample] {
        &self.samples
    }

    /// Whether any sample is called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.samples(name).next().is_some()
    }

    /// `(name, kind)` of every `# TYPE` line.
    pub fn types(&self) -> impl Iterator<Item = (&str, &str)> {
        self.types.iter().map(|(n, k)| (n.as_str(), k.as_str()))
    }

    /// What the lookups on this snapshot found, `; `-separated.
    pub fn looked_up(&self) -> String {
        self.looked_up
            .try_borrow()
            .map(|seen| seen.join("; "))
            .unwrap_or_default()
    }

    /// The message for an absent sample: the label sets of that name, else similar names.
    pub fn absent(&self, name: &str, labels: &[(&str, &str)]) -> String {
        let mut text = format!("metric {} is absent", series(name, labels));
        let same: Vec<String> = self
            .samples(name)
            .take(12)
            .map(|s| format!("{s:?}", s = Shown(s)))
            .collect();
        if !same.is_empty() {
            let _ = write!(text, "; samples of {name}: {}", same.join(", "));
            return text;
        }
        let similar = self.similar(name);
        if similar.is_empty() {
            let _ = write!(text, "; no similar name on the page");
        } else {
            let _ = write!(text, "; similar names: {}", similar.join(", "));
        }
        text
    }

    /// Names on the page close to `name` (edit distance), closest first, at most 8.
    fn similar(&self, name: &str) -> Vec<String> {
        let names: BTreeSet<&str> = self.samples.iter().map(|s| s.name.as_str()).collect();
        let limit = (name.len() / 4).max(3);
        let mut close: Vec<(usize, &str)> = names
            .iter()
            .map(|n| (distance(name, n), *n))
            .filter(|(d, _)| *d <= limit)
            .collect();
        if close.is_empty() {
            // No near miss: the names of the same family (`mesh_deadline_...`).
            let family: String = name.split('_').take(2).collect::<Vec<_>>().join("_");
            close = names
                .iter()
                .filter(|n| n.starts_with(&family))
                .map(|n| (0, *n))
                .collect();
        }
        close.sort();
        close
            .into_iter()
            .take(8)
            .map(|(_, n)| n.to_owned())
            .collect()
    }
}

/// `name{k="v",...}` as a test wrote it.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

struct Shown<'a>(&'a Sample);

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let labels: Vec<String> = self
            .0
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        write!(
            f,
            "{}{{{}}} = {}",
            self.0.name,
            labels.join(","),
            self.0.value
        )
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line.get(..name_end)?;
    let mut rest = line.get(name_end..)?;
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"}` → the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (key, after_key) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after_key.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.trim().to_owned(), value));
        s = after_key.get(end + 1..)?;
    }
}

/// Levenshtein distance of two names (bytes).
fn distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut prev = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let left = row.get(j).copied().unwrap_or(usize::MAX);
            let next = (prev + usize::from(ca != *cb))
                .min(above.saturating_add(1))
                .min(left.saturating_add(1));
            prev = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = next;
            }
        }
    }
    row.last().copied().unwrap_or(0)
}

/// Reads the `/stats/prometheus` page of the admin interface at `admin` (`filter` is Envoy's
/// regex on stat names, to read less; `None` reads every stat).
pub async fn scrape(admin: SocketAddr, filter: Option<&str>) -> Result<Metrics, Error> {
    let path = match filter {
        Some(f) => format!(
            "/stats/prometheus?filter={}",
            crate::client::percent_encode(f)
        ),
        None => "/stats/prometheus".to_owned(),
    };
    let response = crate::client::get(admin, &path, &[]).await?;
    if response.status != 200 {
        return Err(format!("{path} on {admin}: status {}", response.status).into());
    }
    Ok(Metrics::parse(&for_runtime(response.text())))
}

/// The page with the native module's metric names as the wasm module's under the native runtime
/// ([`crate::runtime`]), so that one assertion reads both.
pub fn for_runtime(page: String) -> String {
    match crate::runtime::Runtime::current() {
        crate::runtime::Runtime::Wasm => page,
        crate::runtime::Runtime::Native => crate::runtime::wasm_metric_names(&page),
    }
}

/// Scrapes `admin` until `check` returns a value, at most for `timeout`. On timeout the error
/// names `what` and every value the last check looked up.
pub async fn wait_for<T>(
    admin: SocketAddr,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(&Metrics) -> Option<T>,
) -> Result<T, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match scrape(admin, None).await {
            Ok(metrics) => match check(&metrics) {
                Some(value) => return Ok(value),
                None => metrics.looked_up(),
            },
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!("{what}: not within {timeout:?}; last seen: {last}").into());
        }
        tokio::time::sleep(wait::poll_interval(timeout)).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PAGE: &str = "# TYPE mesh_deadline_rq_total counter\n\
        mesh_deadline_rq_total{route=\"auth\"} 3\n\
        mesh_deadline_rq_total{route=\"events\",envoy=\"a \\\"b\\\"\"} 5\n\
        # TYPE mesh_trace_propagation_started counter\n\
        mesh_trace_propagation_started 0\n\
        envoy_cluster_upstream_rq{envoy_response_code=\"200\",envoy_cluster_name=\"svc\"} 7 1700000000\n";

    #[test]
    fn samples_are_found_by_name_and_labels() {
        let m = Metrics::parse(PAGE);
        assert_eq!(
            m.get("mesh_deadline_rq_total", &[("route", "events")]),
            Some(5.0)
        );
        assert_eq!(m.get("mesh_deadline_rq_total", &[("route", "x")]), None);
        assert_eq!(
            m.get("mesh_deadline_rq_total", &[("envoy", "a \"b\"")]),
            Some(5.0)
        );
        assert_eq!(m.get("mesh_trace_propagation_started", &[]), Some(0.0));
        assert_eq!(m.sum("mesh_deadline_rq_total"), Some(8.0));
        assert_eq!(m.sum("mesh_nothing"), None);
        assert_eq!(
            m.get(
                "envoy_cluster_upstream_rq",
                &[("envoy_cluster_name", "svc")]
            ),
            Some(7.0)
        );
        assert_eq!(
            m.types().collect::<Vec<_>>(),
            [
                ("mesh_deadline_rq_total", "counter"),
                ("mesh_trace_propagation_started", "counter")
            ]
        );
    }

    #[test]
    fn an_absent_sample_is_an_error_naming_what_is_there() {
        let m = Metrics::parse(PAGE);
        let err = m
            .value("mesh_deadline_rq_totl", &[("route", "auth")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mesh_deadline_rq_totl{route=\"auth\"} is absent"),
            "{err}"
        );
        assert!(
            err.contains("similar names: mesh_deadline_rq_total"),
            "{err}"
        );
        let err = m
            .value("mesh_deadline_rq_total", &[("route", "off")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("route=\"events\""), "{err}");
        assert!(m.looked_up().contains("absent"), "{}", m.looked_up());
    }

    #[test]
    fn names_are_compared_by_edit_distance() {
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("abc", "abd"), 1);
        assert_eq!(distance("rq_totl", "rq_total"), 1);
        assert_eq!(distance("", "abc"), 3);
    }
}
