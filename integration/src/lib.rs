//! End-to-end test support for the mesh filters.
//!
//! * [`upstream`]: an in-process demo service (HTTP/1.1 and h2c on one port, plain HTTP
//!   and gRPC) whose behaviour is steered per request by headers or query parameters,
//!   and which records every request it receives. The `mesh-demo` binary runs the same
//!   service as a separate process.
//! * [`client`]: a small HTTP/1.1 and h2c client that reports status, headers, body,
//!   trailers and elapsed time.
//! * [`grpc`]: a real gRPC client (tonic) for raw-bytes unary calls.
//! * [`tls`]: the same HTTP/1.1, HTTP/2 and gRPC clients over TLS, optionally presenting
//!   a client certificate (mTLS).
//! * [`certs`]: a throw-away CA issuing server certificates and SPIFFE X509-SVIDs, URI
//!   SANs written verbatim (also invalid SPIFFE IDs), and PEM files for Envoy.
//! * [`envoy`]: a real Envoy process started on free ports, killed by PID on drop.
//! * [`broken`]: the corpus of invalid configurations, each as a minimal bootstrap.
//! * [`bootstrap`]: Envoy bootstraps for tests (listeners, routes, our wasm filters, clusters).
//! * [`load`]: open-loop load at a fixed request rate, one connection per request.
//! * [`soak`]: a long steady load through the suite over churned route names, sampling
//!   Envoy's memory (`make soak`).
//! * [`otlp_receiver`]: a real OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf) that
//!   stores every exported span and can be made to answer slowly.

pub mod bench;
pub mod bootstrap;
pub mod broken;
pub mod certs;
pub mod client;
pub mod envoy;
pub mod fixture;
pub mod load;
pub mod metrics;
pub mod otlp_receiver;
pub mod server;
pub mod soak;
pub mod tempdir;
pub mod upstream;
pub mod wait;

/// The error of every harness call: what failed and why, as text for the test's message.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
