//! End-to-end test support for the mesh filters.
//!
//! * [`upstream`]: an in-process demo service (HTTP/1.1 and h2c on one port, plain HTTP
//!   and gRPC) whose behaviour is steered per request by headers or query parameters,
//!   and which records every request it receives. The `mesh-demo` binary runs the same
//!   service as a separate process.
//! * [`client`]: a small HTTP/1.1 and h2c client that reports status, headers, body,
//!   trailers and elapsed time.
//! * [`grpc`]: a real gRPC client (tonic) for raw-bytes unary calls.
//! * [`envoy`]: a real Envoy process started on free ports, killed by PID on drop.
//! * [`bootstrap`]: Envoy bootstraps for tests (listeners, routes, our wasm filters, clusters).

pub mod bootstrap;
pub mod client;
pub mod envoy;
pub mod grpc;
pub mod upstream;
