//! Generates the prost messages of OTLP trace export from the trimmed opentelemetry-proto
//! files in `proto/` at the workspace root. protoc comes from the `protoc-bin-vendored`
//! crate, so no system protobuf compiler is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = [
        "opentelemetry/proto/common/v1/common.proto",
        "opentelemetry/proto/resource/v1/resource.proto",
        "opentelemetry/proto/trace/v1/trace.proto",
        "opentelemetry/proto/collector/trace/v1/trace_service.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    let include = protoc_bin_vendored::include_path()?;
    prost_build::Config::new()
        .compile_protos(&protos.map(|p| root.join(p)), &[root.clone(), include])?;
    Ok(())
}
