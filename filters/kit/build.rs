//! Generates the prost messages from the trimmed protos in `proto/` at the workspace root.
//! protoc comes from the `protoc-bin-vendored` crate, so no system protobuf compiler is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let protos = [
        "envoy/config/core/v3/metadata.proto",
        "google/rpc/status.proto",
        "google/rpc/error_details.proto",
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
