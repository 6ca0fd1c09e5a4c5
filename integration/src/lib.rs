//! The harness of the end-to-end tests: a real Envoy, real upstreams, real clients, real
//! certificates, and one of each helper the tests share.
//!
//! A test starts what it needs on free loopback ports (port 0), talks to it, asserts on
//! status, headers, timings, upstream attempts and `/stats/prometheus`, and stops it (Envoy by
//! PID, its log printed when the test fails):
//!
//! ```text
//! let svc = upstream::local("auth").await?;                       // the demo service
//! let envoy = Envoy::start(&fixture::one_service(
//!     vec![bootstrap::filter("mesh.deadline", &json!({"timeout": "2s"}))],
//!     vec![route("auth", "/", "svc")], svc.addr()))?;
//! let r = client::get(envoy.listener("main"), "/auth/x?sleep_ms=3000", &[]).await?;
//! envoy.wait_for_value("mesh_deadline_rq_timeout", &[("route", "auth")], 1.0).await?;
//! ```
//!
//! * [`envoy`]: a real Envoy process on free ports ([`envoy::Envoy`]), killed by PID on drop;
//!   its admin interface, and its metrics through [`metrics`].
//! * [`metrics`]: `/stats/prometheus` parsed once; an absent sample is an error naming what is
//!   there, never a 0; [`envoy::Envoy::wait_for`] polls until a condition on metrics holds.
//! * [`wait`]: the one poll loop (a condition, a timeout, the last values seen).
//! * [`bootstrap`]: the bootstrap builder (listeners, routes with metadata, clusters, TLS and
//!   mTLS, `stats_tags`); our filters enter a bootstrap through [`bootstrap::wasm_filter`] only
//!   (and [`bootstrap::native_filter`] for the native module `libmesh_filters.so`).
//! * [`dynamic`]: dynamic resources without a control plane: listeners (LDS) and route tables
//!   (RDS) read from watched files, rolled while Envoy serves, and Envoy's verdict on each update.
//! * [`fixture`]: what tests set up again and again: SPIFFE IDs ([`fixture::sa`]), one
//!   listener before one service, the mTLS [`fixture::Mesh`], the refusal of an invalid
//!   configuration, the demo configuration on free ports.
//! * [`client`]: one [`client::Response`] for HTTP/1.1 and h2c, [`client::tls`] (the same over
//!   TLS, optionally mTLS), [`client::grpc`] (tonic, raw-bytes unary calls), [`client::raw`]
//!   (bytes written exactly as given) and blocking admin GETs on the same code.
//! * [`server`]: the one server skeleton (bind, accept loop, HTTP/1.1 + h2c, graceful stop)
//!   of the in-process servers, and the `main` of the server binaries.
//! * [`upstream`]: the demo service (HTTP/1.1 and h2c, plain HTTP and gRPC) steered per
//!   request by headers or query parameters, recording every request; the `mesh-demo` binary
//!   runs it as a process.
//! * [`otlp_receiver`]: a real OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf) that
//!   stores every exported span and can be made to answer slowly; the `otlp-receiver` binary
//!   adds part of Jaeger's query API.
//! * [`certs`]: a throw-away CA issuing server certificates and SPIFFE X509-SVIDs, URI SANs
//!   written verbatim (also invalid SPIFFE IDs), and PEM files for Envoy (its own, and a client
//!   SVID's for an Envoy that originates mTLS: [`certs::Pki::client_files`]).
//! * [`broken`]: the corpus of invalid configurations, each as a minimal bootstrap.
//! * [`load`]: open-loop load at a fixed request rate, one connection per request.
//! * [`runtime`]: `MESH_RUNTIME=wasm|native`: the same tests on the wasm modules or on
//!   `libmesh_filters.so`, the bootstrap adapted as a user switching modules would.
//! * [`native`]: what only the native module's own tests need: a per-route configuration as
//!   raw text, its metrics by their own names, a test build loaded from its file.
//! * [`tempdir`]: a temporary directory removed on drop.
//! * [`bench`](mod@bench): `make bench`, a module per concern (parameters, variants, the
//!   configurations measured in both runtimes, the bootstraps, [`bench::driver`] for one measured
//!   run, what the load generators and `/proc` say, results and their paired ratios, the targets,
//!   `BENCHMARKS.md` and its chart, the upstream, the functional check); everything public is
//!   re-exported at `bench::`.
//! * [`profile`]: `make profile`, what each kind of host call costs in the real Envoy.
//! * [`soak`]: `make soak`, steady load through the suite over churned route names.
//! * [`rollout`]: `make rollout`, configuration rollouts, a hot restart and a trapped VM under a
//!   steady load through the suite.

pub mod bench;
pub mod bootstrap;
pub mod broken;
pub mod certs;
pub mod client;
pub mod dynamic;
pub mod envoy;
pub mod fixture;
pub mod load;
pub mod metrics;
pub mod native;
pub mod otlp_receiver;
pub mod profile;
pub mod program;
pub mod rollout;
pub mod runtime;
pub mod server;
pub mod soak;
pub mod tempdir;
pub mod upstream;
pub mod wait;

/// The error of every harness call: what failed and why, as text for the test's message.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
