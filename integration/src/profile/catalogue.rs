//! What the profile measures: one probe configuration per kind of host call the suite makes,
//! each at `n = 0` and `n = k`, plus the references (bare Envoy, the do-nothing probe, the suite,
//! the calibration filter).
//! Over 600 lines: one entry per host-call kind with its probe configuration, kept as one
//! catalogue so that the table in BENCHMARKS.md and what is measured cannot drift apart.

use serde_json::{json, Value};

use crate::bench::{Protocol, Route, Stage, Variant};

/// The probe's module name and root_id.
pub const PROBE_MODULE: &str = "mesh_bench_probe";
pub const PROBE_ROOT_ID: &str = "bench.probe";

/// Listeners of the measured Envoy that are not probes at `n = k`.
pub const BARE: &str = "bare";
/// The do-nothing probe: the reference of every probe without work of its own at `n = 0`.
pub const NONE: &str = "none";
pub const SUITE: &str = "suite";
pub const CALIBRATION: &str = "calibration";
/// The probe that counts the suite's host calls.
pub const COUNT: &str = "count";

/// Where a probe is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routes {
    Direct,
    Proxied,
    Both,
}

impl Routes {
    pub fn has(self, route: Route) -> bool {
        matches!(
            (self, route),
            (Routes::Both, _) | (Routes::Direct, Route::Direct) | (Routes::Proxied, Route::Proxied)
        )
    }
}

/// What a probe's slope is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prices {
    /// One host call, by the key the suite's counts use (`request get_property xds.route_name`).
    Call(String),
    /// A measurement that checks others (the calibration filter's writes, get + CAS set), not
    /// a call the suite's counts name.
    Check(String),
    /// The suite's own code per request, in the VM (`suite_in_vm`), per iteration of a loop.
    Compute,
    /// The same, run once per request (`k = 1`): as the suite runs it.
    ComputeOnce,
    /// `suite_in_vm` of the suite with only its first `i` stages (0: the adapter alone), per
    /// iteration of a loop: the code by stage, as the marginal when a stage is added.
    StageCompute(usize),
    /// The suite's host calls in its order and mix (`call_mix`), per iteration of a loop.
    Mix,
    /// The same, once per request: as the suite makes them.
    MixOnce,
    /// A local reply instead of the route's direct response (per request, not per call).
    LocalReply,
}

/// One probe configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Probe {
    /// Listener name (`p07`); the `n = 0` run of a probe with its own reference is `p07z`.
    pub listener: String,
    /// What it does, as shown in tables.
    pub label: String,
    pub prices: Prices,
    /// The probe configuration without `n`.
    pub op: Value,
    /// Repetitions at the measured point.
    pub k: u32,
    /// The probe does work of its own at `n = 0` (it reads the map it writes back, the request
    /// it replays): its reference is its own `n = 0` run instead of [`NONE`].
    pub own_reference: bool,
    /// The reference is another probe's `n = 0` run (the same work at `n = 0`), measured right
    /// before this one.
    pub shared_reference: Option<String>,
    pub routes: Routes,
    /// Its routes carry route metadata (the `xds.route_metadata` probe).
    pub route_metadata: bool,
}

impl Probe {
    /// The probe's configuration at `n`.
    pub fn config(&self, n: u32) -> Value {
        let mut c = self.op.clone();
        if let Some(o) = c.as_object_mut() {
            o.insert("n".to_owned(), json!(n));
        }
        c
    }

    /// Its reference listener.
    pub fn reference(&self) -> String {
        if let Some(r) = &self.shared_reference {
            r.clone()
        } else if self.own_reference {
            format!("{}z", self.listener)
        } else {
            NONE.to_owned()
        }
    }

    /// A short id for `PROFILE_ONLY`: the counted key with `_` for spaces
    /// (`request_get_property_xds.route_name`), or the operation's name (`suite_in_vm`,
    /// `suite_in_vm_once`, `suite_in_vm_stages_2`, `call_mix`, `call_mix_once`,
    /// `shared_update`, `send_local_response`).
    pub fn id(&self) -> String {
        match &self.prices {
            Prices::Call(k) => k.replace(' ', "_"),
            Prices::Check(_) => "shared_update".to_owned(),
            Prices::Compute => "suite_in_vm".to_owned(),
            Prices::ComputeOnce => "suite_in_vm_once".to_owned(),
            Prices::StageCompute(i) => format!("suite_in_vm_stages_{i}"),
            Prices::Mix => "call_mix".to_owned(),
            Prices::MixOnce => "call_mix_once".to_owned(),
            Prices::LocalReply => "send_local_response".to_owned(),
        }
    }
}

/// The route metadata of the `xds.route_metadata` probe: per-route overrides as the shipped
/// configurations write them, a few fields for three stages.
pub fn route_metadata() -> Value {
    json!({"filter_metadata": {
        "mesh.deadline": {"timeout": "5s", "per_try_timeout": "1s"},
        "mesh.circuit_breaker": {"consecutive_failures": 3, "open_duration": "30s"},
        "mesh.retry_budget": {"max_retries": 1, "retry_ratio": 0.1}
    }})
}

/// The suite configurations the counting probe runs: the first `i` stages of the measured suite,
/// for `i` = 0 (the adapter alone) to all of them.
pub fn suite_prefixes() -> Vec<Value> {
    (0..=Stage::ALL.len())
        .map(|i| {
            let mut sections = serde_json::Map::new();
            for s in Stage::ALL.iter().take(i) {
                sections.insert(s.section().to_owned(), s.config());
            }
            Value::Object(sections)
        })
        .collect()
}

/// Every probe, in the order measured.
pub fn probes() -> Vec<Probe> {
    struct P {
        label: &'static str,
        prices: Prices,
        op: Value,
        k: u32,
        own: bool,
        routes: Routes,
    }
    let call = |k: &str| Prices::Call(k.to_owned());
    let property = |phase: &str, path: &str, routes: Routes| P {
        label: "",
        prices: call(&format!("{phase} get_property {path}")),
        op: json!({"op": "get_property", "path": path, "phase": phase}),
        k: 32,
        own: false,
        routes,
    };
    let mut list = vec![
        property("request", "xds.route_name", Routes::Direct),
        property("request", "xds.route_metadata", Routes::Direct),
        property("request", "xds.cluster_name", Routes::Direct),
        property("request", "connection.mtls", Routes::Direct),
        property(
            "request",
            "connection.uri_san_peer_certificate",
            Routes::Direct,
        ),
        property(
            "request",
            "connection.sha256_peer_certificate_digest",
            Routes::Direct,
        ),
        property("request", "request.time", Routes::Direct),
        property("response", "response.flags", Routes::Both),
        property("log", "response.code", Routes::Both),
        property("log", "response.flags", Routes::Both),
        property("log", "response.code_details", Routes::Both),
        property("log", "upstream.request_attempt_count", Routes::Both),
        P {
            label: "",
            prices: call("request get_map request_headers"),
            op: json!({"op": "get_map"}),
            k: 8,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label: "",
            prices: call("request get_map_value request_headers"),
            op: json!({"op": "get_map_value", "header": "x-bench-calibration"}),
            k: 32,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label: "",
            prices: call("request set_map_value request_headers"),
            op: json!({"op": "set_map_value"}),
            k: 32,
            own: false,
            routes: Routes::Both,
        },
        P {
            label: "",
            prices: call("request add_map_value request_headers"),
            op: json!({"op": "add_map_value"}),
            k: 32,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label: "set_map request_headers (whole map + 4 headers)",
            prices: call("request set_map request_headers"),
            op: json!({"op": "set_map"}),
            k: 8,
            own: true,
            routes: Routes::Direct,
        },
        P {
            label: "",
            prices: call("response get_map_value response_headers"),
            op: json!({"op": "get_map_value", "header": ":status", "phase": "response"}),
            k: 32,
            own: false,
            routes: Routes::Both,
        },
        P {
            label: "",
            prices: call("log get_map_value response_headers"),
            op: json!({"op": "get_map_value", "header": "x-mesh-rejected-by", "phase": "log"}),
            k: 32,
            own: false,
            routes: Routes::Both,
        },
        P {
            label: "",
            prices: call("response set_map_value response_headers"),
            op: json!({"op": "set_map_value", "phase": "response"}),
            k: 32,
            own: false,
            routes: Routes::Both,
        },
        P {
            label: "",
            prices: call("response add_map_value response_headers"),
            op: json!({"op": "add_map_value", "phase": "response"}),
            k: 32,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label: "get_shared_data (234 bytes)",
            prices: call("request get_shared_data"),
            op: json!({"op": "get_shared_data"}),
            k: 32,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label: "set_shared_data (234 bytes, CAS that wins)",
            prices: call("request set_shared_data"),
            op: json!({"op": "set_shared_data"}),
            k: 32,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label: "get_shared_data + CAS set_shared_data (one update round)",
            prices: Prices::Check("request shared_update".to_owned()),
            op: json!({"op": "shared_update"}),
            k: 32,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label: "",
            prices: call("request increment_metric"),
            op: json!({"op": "increment_metric"}),
            k: 32,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label: "",
            prices: call("request record_metric"),
            op: json!({"op": "record_metric"}),
            k: 32,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label: "",
            prices: call("request get_current_time"),
            op: json!({"op": "get_current_time"}),
            k: 32,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label: "random_get (WASI, 256 bytes: a refill of the random pool)",
            prices: call("request random_get"),
            op: json!({"op": "random_get"}),
            k: 32,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label: "send_local_response (instead of the route's direct response)",
            prices: Prices::LocalReply,
            op: json!({"op": "send_local_response"}),
            k: 1,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label:
                "suite_in_vm: the suite's request path over the in-memory host, per iteration of 4",
            prices: Prices::Compute,
            op: json!({"op": "suite_in_vm", "suite": crate::bench::suite_config()}),
            k: 4,
            own: true,
            routes: Routes::Both,
        },
        P {
            label: "",
            prices: Prices::StageCompute(0),
            op: json!({}),
            k: 4,
            own: false,
            routes: Routes::Direct,
        },
        P {
            label: "suite_in_vm once per request",
            prices: Prices::ComputeOnce,
            op: json!({"op": "suite_in_vm", "suite": crate::bench::suite_config()}),
            k: 1,
            own: false,
            routes: Routes::Both,
        },
        P {
            label: "call_mix: the suite's host calls replayed, per iteration of 4",
            prices: Prices::Mix,
            op: json!({"op": "call_mix", "suite": crate::bench::suite_config()}),
            k: 4,
            own: true,
            routes: Routes::Both,
        },
        P {
            label: "call_mix once per request",
            prices: Prices::MixOnce,
            op: json!({"op": "call_mix", "suite": crate::bench::suite_config()}),
            k: 1,
            own: false,
            routes: Routes::Both,
        },
    ];
    // The suite's code by stage: the suite with its first 0…n−1 stages (n is the whole suite).
    if let Some(at) = list
        .iter()
        .position(|p| p.prices == Prices::StageCompute(0))
    {
        let prefixes = suite_prefixes();
        let stages: Vec<P> = (0..Stage::ALL.len())
            .map(|i| P {
                label: "",
                prices: Prices::StageCompute(i),
                op: json!({"op": "suite_in_vm", "suite": prefixes.get(i).cloned().unwrap_or_default()}),
                k: 4,
                own: false,
                routes: Routes::Direct,
            })
            .collect();
        list.splice(at..=at, stages);
    }
    let mut probes: Vec<Probe> = list
        .drain(..)
        .enumerate()
        .map(|(i, p)| {
            let label = if p.label.is_empty() {
                match &p.prices {
                    Prices::Call(k) | Prices::Check(k) => k.clone(),
                    Prices::StageCompute(0) => {
                        "suite_in_vm, the adapter alone (no stage), per iteration of 4".to_owned()
                    }
                    Prices::StageCompute(i) => format!(
                        "suite_in_vm, the first {i} stage(s) (to {}), per iteration of 4",
                        Stage::ALL
                            .get(i - 1)
                            .map(|s| s.section())
                            .unwrap_or_default()
                    ),
                    _ => String::new(),
                }
            } else {
                match &p.prices {
                    Prices::Call(k) => {
                        let phase = k.split(' ').next().unwrap_or("");
                        format!("{phase} {}", p.label)
                    }
                    _ => p.label.to_owned(),
                }
            };
            Probe {
                listener: format!("p{i:02}"),
                route_metadata: p.prices
                    == Prices::Call("request get_property xds.route_metadata".to_owned()),
                label,
                prices: p.prices,
                op: p.op,
                k: p.k,
                own_reference: p.own,
                shared_reference: None,
                routes: p.routes,
            }
        })
        .collect();
    // Once per request and the stage prefixes share the loop's n = 0 run: the same probe, the
    // same fixed work.
    let compute_ref = probes
        .iter()
        .find(|p| p.prices == Prices::Compute)
        .map(Probe::reference);
    let mix_ref = probes
        .iter()
        .find(|p| p.prices == Prices::Mix)
        .map(Probe::reference);
    for p in &mut probes {
        match p.prices {
            Prices::ComputeOnce | Prices::StageCompute(_) => {
                p.shared_reference.clone_from(&compute_ref)
            }
            Prices::MixOnce => p.shared_reference.clone_from(&mix_ref),
            _ => {}
        }
    }
    probes
}

/// The variants the profile can measure (gRPC is left out: the counts are of HTTP requests).
pub const VARIANTS: [Variant; 4] = [
    Variant {
        protocol: Protocol::Http1,
        route: Route::Direct,
    },
    Variant {
        protocol: Protocol::Http2,
        route: Route::Direct,
    },
    Variant {
        protocol: Protocol::Http1,
        route: Route::Proxied,
    },
    Variant {
        protocol: Protocol::Http2,
        route: Route::Proxied,
    },
];

/// `h1-direct`, `h2-proxied`, …: a variant's id in `PROFILE_VARIANTS`.
pub fn variant_id(v: Variant) -> String {
    v.short().replace(' ', "-")
}

/// The order of one round for one variant: the references first, then the probes measured on
/// the variant's route in chunks of `chunk`, each chunk followed by the do-nothing probe again,
/// then the references again (so each run has a reference on both sides to interpolate).
/// Probes with their own reference are measured right after it. Odd rounds run the probes in
/// reverse, so no probe is always measured at the same point of the round.
pub fn schedule(probes: &[Probe], variant: Variant, round: usize, chunk: usize) -> Vec<String> {
    let mut out: Vec<String> = [BARE, NONE, SUITE, CALIBRATION]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    // A probe sharing another's reference goes with it: [reference, owner, sharer].
    let mut groups: Vec<Vec<&Probe>> = Vec::new();
    for p in probes.iter().filter(|p| p.routes.has(variant.route)) {
        match &p.shared_reference {
            Some(r) => match groups
                .iter_mut()
                .find(|g| g.first().is_some_and(|o| o.reference() == *r))
            {
                Some(g) => g.push(p),
                None => groups.push(vec![p]),
            },
            None => groups.push(vec![p]),
        }
    }
    if round % 2 == 1 {
        groups.reverse();
    }
    let count = groups.len();
    for (i, g) in groups.iter().enumerate() {
        for (j, p) in g.iter().enumerate() {
            if j == 0 && (p.own_reference || p.shared_reference.is_some()) {
                out.push(p.reference());
            }
            out.push(p.listener.clone());
        }
        if (i + 1) % chunk.max(1) == 0 && i + 1 < count {
            out.push(NONE.to_owned());
        }
    }
    out.extend(
        [NONE, CALIBRATION, SUITE, BARE]
            .iter()
            .map(|s| (*s).to_owned()),
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_has_a_listener_a_label_and_a_valid_configuration() {
        let probes = probes();
        let mut listeners: Vec<&str> = probes.iter().map(|p| p.listener.as_str()).collect();
        listeners.dedup();
        assert_eq!(listeners.len(), probes.len());
        for p in &probes {
            assert!(!p.label.is_empty(), "{p:?}");
            assert!(p.k > 0, "{p:?}");
            let c = p.config(p.k);
            assert_eq!(c["n"], p.k);
            assert!(c["op"].is_string());
        }
        let meta: Vec<&Probe> = probes.iter().filter(|p| p.route_metadata).collect();
        assert_eq!(meta.len(), 1);
        assert!(probes
            .iter()
            .any(|p| p.label == "request set_map request_headers (whole map + 4 headers)"));
        assert_eq!(
            probes
                .iter()
                .find(|p| p.prices == Prices::Compute)
                .unwrap()
                .reference(),
            format!(
                "{}z",
                probes
                    .iter()
                    .find(|p| p.prices == Prices::Compute)
                    .unwrap()
                    .listener
            )
        );
        assert_eq!(probes[0].id(), "request_get_property_xds.route_name");
        let mut ids: Vec<String> = probes.iter().map(Probe::id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), probes.len(), "ids are unique");
    }

    #[test]
    fn the_counting_configurations_add_one_stage_at_a_time_in_suite_order() {
        let p = suite_prefixes();
        assert_eq!(p.len(), Stage::ALL.len() + 1);
        assert_eq!(p[0], json!({}));
        assert_eq!(p[1].as_object().unwrap().len(), 1);
        assert!(p[1].get("spiffe_identity").is_some());
        assert!(p[2].get("rate_limit").is_some());
        assert!(p[3].get("circuit_breaker").is_some());
        assert_eq!(p[Stage::ALL.len()], crate::bench::suite_config());
    }

    #[test]
    fn a_schedule_brackets_every_probe_with_references() {
        let probes = probes();
        let v = VARIANTS[0];
        let s = schedule(&probes, v, 0, 6);
        assert_eq!(&s[..4], [BARE, NONE, SUITE, CALIBRATION]);
        assert_eq!(s.last().map(String::as_str), Some(BARE));
        let direct = probes
            .iter()
            .filter(|p| p.routes.has(Route::Direct))
            .count();
        let own = probes
            .iter()
            .filter(|p| p.routes.has(Route::Direct) && p.own_reference)
            .count();
        // Each probe sharing a reference runs after the probe that owns it, in one group with
        // no other run in between.
        for p in probes.iter().filter(|p| p.shared_reference.is_some()) {
            let i = s.iter().position(|l| *l == p.listener).unwrap();
            let owner = probes
                .iter()
                .find(|o| o.own_reference && o.reference() == p.reference())
                .unwrap();
            let o = s.iter().position(|l| *l == owner.listener).unwrap();
            assert!(o < i, "{} before {}", owner.listener, p.listener);
            assert!(s[o..i].iter().all(|l| probes
                .iter()
                .any(|q| q.listener == *l && q.reference() == p.reference())));
        }
        let nones = s.iter().filter(|l| *l == NONE).count();
        assert_eq!(s.len(), 8 + direct + own + nones - 2);
        // Each probe with its own reference right after it.
        for p in probes
            .iter()
            .filter(|p| p.own_reference && p.routes.has(Route::Direct))
        {
            let i = s.iter().position(|l| *l == p.listener).unwrap();
            assert_eq!(s[i - 1], p.reference());
        }
        // Odd rounds reverse the probes.
        let r = schedule(&probes, v, 1, 6);
        let first = |s: &[String]| s.iter().position(|l| l.starts_with('p')).unwrap();
        assert_ne!(s[first(&s)], r[first(&r)]);
        // The proxied route measures only the probes that run there.
        let proxied = schedule(&probes, VARIANTS[2], 0, 6);
        assert!(proxied.iter().all(|l| !l.starts_with('p')
            || probes
                .iter()
                .find(|p| p.listener == *l || p.reference() == *l)
                .unwrap()
                .routes
                .has(Route::Proxied)));
        assert_eq!(variant_id(VARIANTS[3]), "h2-proxied");
    }
}
