//! The rate-limit stage: the adapter-facing table of contents of the filter.
//!
//! Request headers: name the client ([`client_key`]: the verified identity, a header or the
//! route; else the route's bucket for requests without a key), pick its limit (an identity
//! override, else the configuration's), and take a token from its bucket in the route's table
//! in shared data ([`table::admit`], compare-and-swap). Over the limit: HTTP 429 /
//! gRPC RESOURCE_EXHAUSTED with `retry-after` and `RetryInfo`; in audit mode, count and let
//! through. Response headers of that reply: `RateLimit-Policy` and `RateLimit`.
//! Background (`on_tick`, once a second per worker): count the buckets each table holds for the
//! `keys` gauge, a bounded number of slots per tick.
//!
//! Fails open: when the shared state cannot be read or written the request goes on and
//! `state_error` counts it; invalid route metadata switches the stage off on that route
//! (`config_error`).

use crate::bucket::{Decision, Limit};
use crate::config::{format_rate, Config, Key, Mode};
use crate::fields;
use crate::key::ClientKey;
use crate::table::{self, admit, Table};
use mesh_kit::host::{Host, MetricKind, MetricName, Property};
use mesh_kit::metrics::label_value;
use mesh_kit::reply::{GrpcCode, Reply};
use mesh_kit::shared::Label;
use mesh_kit::stage::{Cx, Exchange, Flow, OnInvalid, Stage};
use mesh_kit::values::format_duration;
use mesh_spiffe_identity::id::{self, SpiffeId};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

mesh_kit::stats! {
    /// The rate limit's stats, per route or per cluster (`scope`).
    pub enum Stat {
        Allowed = counter("allowed"),
        Limited = counter("limited"),
        AuditLimited = counter("audit_limited"),
        Unkeyed = counter("unkeyed"),
        Evicted = counter("evicted"),
        Keys = gauge("keys"),
        ConfigError = counter("config_error"),
        StateError = counter("state_error"),
    }
}

/// How often the census runs, and how many slots it reads each time (per worker).
pub const CENSUS_PERIOD: Duration = Duration::from_secs(1);
pub const CENSUS_SLOTS_PER_TICK: u32 = 1024;
/// Tables one worker's census follows at most.
const MAX_TRACKED: usize = 4096;

pub struct RateLimit {
    /// Per VM in the wasm module; one for the process in the native module, whose main thread
    /// ticks.
    census: Mutex<Census>,
}

impl RateLimit {
    fn census(&self) -> MutexGuard<'_, Census> {
        // The census only counts for a gauge: usable whatever step a panicking holder was at.
        self.census.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Stage for RateLimit {
    const NAME: &'static str = "mesh.rate_limit";
    type Stat = Stat;

    type Config = Config;
    type Request = ();

    fn describe(c: &Config) -> String {
        let limit = c.limit();
        let mut s = format!("{}/s burst {} per {}", c.rate, limit.burst(), c.key);
        for o in &c.overrides {
            s.push_str(&format!(
                ", {} {}/s burst {}",
                o.identity,
                o.rate,
                o.limit().burst()
            ));
        }
        if c.mode == Mode::Audit {
            s.push_str(" (audit)");
        }
        s
    }

    fn new(_config: &Config, _host: &dyn Host) -> Self {
        RateLimit {
            census: Mutex::new(Census::default()),
        }
    }

    /// Fail open: a route whose metadata is invalid is not limited.
    fn on_invalid_route_config(&self) -> OnInvalid {
        OnInvalid::Skip
    }

    fn on_request_headers(&self, cx: &mut Cx<'_, Self>) -> Flow {
        let label = cx.config.scope.label(cx.ex);
        let stats = cx.stats_for(&label);
        let table = Table::new(&cx.state_key(&label), cx.config.max_keys);
        let (key, identity) = client_key(cx.config, cx.ex);
        let (limit, which) = cx.config.limit_for(identity.as_ref());
        if key.is_unkeyed() {
            stats.inc(cx.host(), Stat::Unkeyed);
        }
        self.census().track(&table, &label);
        let now = cx.ex.now_us();
        let admission = match admit(cx.host(), &table, key.hash(), &limit, now) {
            Ok(a) => a,
            Err(e) => {
                stats.inc(cx.host(), Stat::StateError);
                log::warn!(
                    "{}: {} {:?}: bucket update failed ({e:?}); request let through",
                    Self::NAME,
                    label.kind,
                    label.name
                );
                return Flow::Continue;
            }
        };
        if admission.evicted {
            stats.inc(cx.host(), Stat::Evicted);
        }
        match admission.decision {
            Decision::Allowed { .. } => {
                stats.inc(cx.host(), Stat::Allowed);
                Flow::Continue
            }
            Decision::Limited { .. } if cx.config.mode == Mode::Audit => {
                stats.inc(cx.host(), Stat::AuditLimited);
                Flow::Continue
            }
            Decision::Limited { retry_in_us } => {
                stats.inc(cx.host(), Stat::Limited);
                Flow::Reject(
                    rejection(&limit, retry_in_us)
                        .with_header(fields::POLICY, fields::policy(which, &limit))
                        .with_header(fields::RATELIMIT, fields::remaining(which, 0, retry_in_us)),
                )
            }
        }
    }

    fn tick_period(&self) -> Option<Duration> {
        Some(CENSUS_PERIOD)
    }

    fn on_tick(&self, host: &dyn Host) {
        self.census().run(host, mesh_kit::host::unix_us(host.now()));
    }
}

/// The client a request counts against, and its SPIFFE ID when the key is the identity.
pub fn client_key(config: &Config, ex: &mut Exchange) -> (ClientKey, Option<SpiffeId>) {
    match &config.key {
        Key::Route => (ClientKey::Route(ex.route().to_string()), None),
        Key::Header(name) => match ex.header(name) {
            Some(v) => (ClientKey::Header(v.to_string()), None),
            None => (ClientKey::Unkeyed, None),
        },
        // The identity stage's verdict is a valid ID already: parsed again only when an
        // override's pattern has to match it.
        Key::Identity if config.overrides.is_empty() && ex.verified_identity.is_some() => (
            ClientKey::Identity(ex.verified_identity.clone().unwrap_or_default()),
            None,
        ),
        Key::Identity => match verified_identity(ex) {
            Some(id) => (ClientKey::Identity(id.as_str().to_string()), Some(id)),
            None => (ClientKey::Unkeyed, None),
        },
    }
}

/// The identity stage's verified ID when it ran; otherwise the mTLS peer certificate's first
/// URI SAN, if it is a valid SPIFFE ID (Envoy verified the certificate). Never a header.
pub fn verified_identity(ex: &Exchange) -> Option<SpiffeId> {
    if let Some(verified) = &ex.verified_identity {
        return id::parse(verified).ok();
    }
    if !ex.flag(Property::Mtls) {
        return None;
    }
    id::parse(&ex.text(Property::PeerUriSan)?).ok()
}

fn rejection(limit: &Limit, retry_in_us: u64) -> Reply {
    let retry = Duration::from_micros(retry_in_us);
    let message = format!(
        "rate limit of {}/s (burst {}) reached; retry in {}",
        format_rate(limit.per_us),
        limit.burst(),
        format_duration(retry)
    );
    Reply::new(429, GrpcCode::ResourceExhausted, "rate_limited", message)
        .with_retry_after(retry)
        .with_error_info()
}

/// The `keys` gauge: each table this worker has seen, read a bounded number of slots at a time.
#[derive(Default)]
struct Census {
    tables: Vec<Tracked>,
    by_prefix: HashMap<String, usize>,
    cursor: usize,
    last_run_us: u64,
}

struct Tracked {
    table: Table,
    /// The table's label: kind and name (owned: the census may be shared by threads).
    label: (&'static str, String),
    /// The `keys` gauge of this table, defined on the thread that ticks, on its first count.
    gauge: Option<Option<u32>>,
    next: u32,
    active: u32,
}

impl Census {
    fn track(&mut self, table: &Table, label: &Label) {
        if self.by_prefix.contains_key(table.prefix()) || self.tables.len() >= MAX_TRACKED {
            return;
        }
        self.by_prefix
            .insert(table.prefix().to_string(), self.tables.len());
        self.tables.push(Tracked {
            table: table.clone(),
            label: (label.kind, label.name.to_string()),
            gauge: None,
            next: 0,
            active: 0,
        });
    }

    /// Reads up to [`CENSUS_SLOTS_PER_TICK`] slots, round robin over the tables; a table whose
    /// pass completes sets its gauge. At most once per [`CENSUS_PERIOD`], whatever the tick.
    fn run(&mut self, host: &dyn Host, now_us: u64) {
        let period = u64::try_from(CENSUS_PERIOD.as_micros()).unwrap_or(u64::MAX);
        if self.tables.is_empty() || now_us.saturating_sub(self.last_run_us) < period {
            return;
        }
        self.last_run_us = now_us;
        let mut budget = CENSUS_SLOTS_PER_TICK;
        for _ in 0..self.tables.len() {
            if budget == 0 {
                break;
            }
            let at = self.cursor % self.tables.len();
            let Some(t) = self.tables.get_mut(at) else {
                break;
            };
            let slots = t.table.slots();
            let to = slots.min(t.next.saturating_add(budget));
            t.active += table::count_active(host, &t.table, t.next, to, now_us);
            budget -= to - t.next;
            t.next = to;
            if t.next < slots {
                // Out of budget in the middle of this table: go on from here next time.
                return;
            }
            let gauge = *t.gauge.get_or_insert_with(|| {
                let name = MetricName {
                    stage: RateLimit::NAME,
                    stat: "keys",
                    label: Some((t.label.0, &label_value(&t.label.1))),
                };
                host.define_metric(MetricKind::Gauge, &name)
            });
            if let Some(id) = gauge {
                host.record_metric(id, u64::from(t.active));
            }
            t.next = 0;
            t.active = 0;
            self.cursor = (at + 1) % self.tables.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Store, StoreExt};
    use mesh_kit::reply::Rendered;
    use mesh_kit::stage::{single, Root};
    use std::rc::Rc;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const VICTIM: &str = "spiffe://mesh.local/ns/default/sa/learner";
    const ATTACKER: &str = "spiffe://mesh.local/ns/default/sa/admin";
    const T0: u64 = 1_700_000_000_000_000;

    fn setup(config: &str) -> (Rc<Store>, Root) {
        let host = Rc::new(Store::default());
        host.now_us.set(T0);
        host.set_text(mesh_kit::host::Property::RouteName, "events");
        let mut root = Root::new(RateLimit::NAME, single::<RateLimit>, host.clone());
        root.configure(config.as_bytes()).unwrap();
        (host, root)
    }

    /// One request through the adapter: whether it went on, and the reply if not.
    fn request(host: &Store, root: &Root) -> (bool, Option<Rendered>) {
        host.replies.borrow_mut().clear();
        host.response_headers.borrow_mut().clear();
        let mut r = root.new_request();
        let on = r.request_headers();
        r.response_headers();
        r.log();
        (on, host.replies.borrow().last().cloned())
    }

    fn as_peer(host: &Store, id: Option<&str>) {
        match id {
            Some(id) => {
                host.set_property(mesh_kit::host::Property::Mtls, &[1]);
                host.set_text(mesh_kit::host::Property::PeerUriSan, id);
            }
            None => {
                host.set_property(mesh_kit::host::Property::Mtls, &[0]);
                host.clear_property(mesh_kit::host::Property::PeerUriSan);
            }
        }
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_client_gets_its_burst_then_a_429_with_retry_after_and_the_ratelimit_fields() {
        let (host, root) = setup(r#"{"rate": 2, "burst": 3, "key": {"header": "x-client"}}"#);
        host.set_headers(&[("x-client", "a")]);
        for _ in 0..3 {
            assert_eq!(request(&host, &root), (true, None));
        }
        let (on, reply) = request(&host, &root);
        assert!(!on);
        let Some(Rendered::Http {
            status, headers, ..
        }) = reply
        else {
            panic!("no HTTP reply")
        };
        assert_eq!(status, 429);
        assert_eq!(
            header(&headers, "x-mesh-rejected-by"),
            Some(RateLimit::NAME)
        );
        assert_eq!(header(&headers, "retry-after"), Some("1"));
        assert_eq!(
            header(&headers, "ratelimit-policy"),
            Some(r#""default";q=3;w=2"#)
        );
        assert_eq!(header(&headers, "ratelimit"), Some(r#""default";r=0;t=1"#));
        assert_eq!(
            (
                host.stat("allowed", "events"),
                host.stat("limited", "events")
            ),
            (3, 1)
        );
        // Half a second later a token has arrived; another client was never limited.
        host.now_us.set(T0 + 500_000);
        assert!(request(&host, &root).0);
        assert!(!request(&host, &root).0);
        host.set_headers(&[("x-client", "b")]);
        assert!(request(&host, &root).0);
        assert!(
            host.response_headers.borrow().is_empty(),
            "no fields on an allowed request"
        );
    }

    #[test]
    fn a_grpc_caller_gets_resource_exhausted_with_retry_info() {
        let (host, root) = setup(r#"{"rate": 0.1, "burst": 1, "key": "route"}"#);
        host.set_headers(&[("content-type", "application/grpc")]);
        assert!(request(&host, &root).0);
        let (_, reply) = request(&host, &root);
        let Some(Rendered::Grpc {
            status, headers, ..
        }) = reply
        else {
            panic!("no gRPC reply")
        };
        assert_eq!(status, GrpcCode::ResourceExhausted as u32);
        assert!(header(&headers, "grpc-status-details-bin").is_some());
    }

    #[test]
    fn a_forged_identity_header_is_never_a_key() {
        let (host, root) = setup(r#"{"rate": 0.01, "burst": 2}"#);
        as_peer(&host, Some(VICTIM));
        host.set_headers(&[]);
        assert!(request(&host, &root).0, "the victim's first request");
        // Without a certificate, claiming the victim's ID: the shared bucket of requests
        // without a key, never the victim's.
        as_peer(&host, None);
        host.set_headers(&[("x-spiffe-id", VICTIM)]);
        assert!(request(&host, &root).0);
        assert!(request(&host, &root).0);
        assert!(!request(&host, &root).0, "the unkeyed bucket is empty");
        assert_eq!(host.stat("unkeyed", "events"), 3);
        // With its own certificate and the victim's ID in the header: its own bucket.
        as_peer(&host, Some(ATTACKER));
        assert!(request(&host, &root).0);
        assert!(request(&host, &root).0);
        assert!(!request(&host, &root).0);
        // The victim's bucket still holds the token it left.
        as_peer(&host, Some(VICTIM));
        host.set_headers(&[]);
        assert!(request(&host, &root).0);
        assert!(!request(&host, &root).0);
    }

    #[test]
    fn the_identity_stages_verdict_comes_before_the_peer_certificate() {
        let host = Rc::new(Store::default());
        as_peer(&host, Some(ATTACKER));
        let config: Config = mesh_kit::config::from_value(&serde_json::json!({"rate": 1})).unwrap();
        let mut ex = Exchange::new(host.clone());
        ex.verified_identity = Some(VICTIM.into());
        assert_eq!(
            client_key(&config, &mut ex).0,
            ClientKey::Identity(VICTIM.into())
        );
        let mut ex = Exchange::new(host.clone());
        assert_eq!(
            client_key(&config, &mut ex).0,
            ClientKey::Identity(ATTACKER.into())
        );
        // A certificate whose first URI SAN is not a SPIFFE ID names no workload.
        for bad in [
            "https://mesh.local/x",
            "spiffe://Mesh.local/x",
            "spiffe://mesh.local",
        ] {
            as_peer(&host, Some(bad));
            let mut ex = Exchange::new(host.clone());
            assert_eq!(client_key(&config, &mut ex).0, ClientKey::Unkeyed, "{bad}");
        }
        // No mTLS: the SAN property is not even trusted.
        host.set_property(mesh_kit::host::Property::Mtls, &[0]);
        host.set_text(mesh_kit::host::Property::PeerUriSan, VICTIM);
        let mut ex = Exchange::new(host.clone());
        assert_eq!(client_key(&config, &mut ex).0, ClientKey::Unkeyed);
    }

    #[test]
    fn overrides_give_matching_identities_a_limit_of_their_own() {
        let (host, root) = setup(
            r#"{"rate": 0.01, "burst": 1, "overrides": [
                {"identity": "spiffe://mesh.local/ns/batch/**", "rate": 0.01, "burst": 3}]}"#,
        );
        as_peer(&host, Some("spiffe://mesh.local/ns/batch/sa/job"));
        let got: Vec<bool> = (0..3).map(|_| request(&host, &root).0).collect();
        assert_eq!(got, [true, true, true]);
        let (on, reply) = request(&host, &root);
        assert!(!on);
        let Some(Rendered::Http { headers, .. }) = reply else {
            panic!("no HTTP reply")
        };
        assert_eq!(
            header(&headers, "ratelimit-policy"),
            Some(r#""override-1";q=3;w=300"#)
        );
        as_peer(&host, Some(VICTIM));
        let got: Vec<bool> = (0..2).map(|_| request(&host, &root).0).collect();
        assert_eq!(got, [true, false]);
    }

    #[test]
    fn audit_mode_counts_what_it_would_limit_and_lets_it_through() {
        let (host, root) = setup(r#"{"rate": 0.01, "burst": 1, "key": "route", "mode": "audit"}"#);
        for _ in 0..4 {
            assert_eq!(request(&host, &root), (true, None));
        }
        assert_eq!(
            (
                host.stat("allowed", "events"),
                host.stat("audit_limited", "events"),
                host.stat("limited", "events")
            ),
            (1, 3, 0)
        );
    }

    #[test]
    fn shared_state_that_cannot_be_updated_fails_open_and_is_counted() {
        // A new client must write its bucket; every write loses the compare-and-swap.
        let (host, root) = setup(r#"{"rate": 0.01, "burst": 1, "key": {"header": "x-c"}}"#);
        host.set_headers(&[("x-c", "new")]);
        host.conflicts.set(10_000);
        assert_eq!(request(&host, &root), (true, None));
        assert_eq!(host.stat("state_error", "events"), 1);
        assert_eq!(host.stat("allowed", "events"), 0);
    }

    #[test]
    fn an_allowed_request_costs_one_read_one_write_and_one_metric() {
        let (host, root) = setup(r#"{"rate": 100, "burst": 100, "key": {"header": "x-c"}}"#);
        host.set_headers(&[("x-c", "a")]);
        for _ in 0..3 {
            request(&host, &root);
        }
        host.take_calls();
        let mut r = root.new_request();
        assert!(r.request_headers());
        let calls = host.take_calls();
        let want: std::collections::BTreeMap<String, u32> = [
            ("request_headers", 1),
            ("property xds.route_name", 1), // the route's configuration is cached
            ("now", 1),
            ("shared_get", 1),
            ("shared_set", 1),
            ("increment_metric", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(calls, want);
        r.response_headers();
        r.log();
        assert!(
            host.take_calls().is_empty(),
            "nothing after the request headers"
        );
    }

    #[test]
    fn the_census_reports_the_buckets_that_have_not_refilled() {
        let (host, root) =
            setup(r#"{"rate": 1, "burst": 2, "key": {"header": "x-c"}, "max_keys": 8}"#);
        for c in 0..20 {
            host.set_headers(&[("x-c", &format!("client-{c}"))]);
            assert!(request(&host, &root).0);
        }
        assert!(host.stat("evicted", "events") >= 12);
        root.on_tick();
        assert_eq!(host.stat("keys", "events"), 8);
        assert!(host.shared_keys().len() <= 8, "{:?}", host.shared_keys());
        // A second later every bucket has refilled; the census runs at most once a second.
        host.now_us.set(T0 + 999_999);
        root.on_tick();
        assert_eq!(host.stat("keys", "events"), 8);
        host.now_us.set(T0 + 1_000_000);
        root.on_tick();
        assert_eq!(host.stat("keys", "events"), 0);
    }

    #[test]
    fn describe_says_rate_burst_key_and_overrides() {
        let c: Config = mesh_kit::config::from_value(&serde_json::json!({
            "rate": 5, "burst": 10,
            "overrides": [{"identity": "spiffe://mesh.local/ns/batch/**", "rate": 0.5}]
        }))
        .unwrap();
        assert_eq!(
            RateLimit::describe(&c),
            "5/s burst 10 per identity, spiffe://mesh.local/ns/batch/** 0.5/s burst 1"
        );
        let c: Config = mesh_kit::config::from_value(
            &serde_json::json!({"rate": 1, "key": {"header": "x-client"}, "mode": "audit"}),
        )
        .unwrap();
        assert_eq!(RateLimit::describe(&c), "1/s burst 1 per x-client (audit)");
    }
}
