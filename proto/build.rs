//! Compiles `hallmark/v1/*.proto` with a vendored protoc so a fresh machine needs no system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The vendored protoc, handed to prost-build directly (no PROTOC variable to set).
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "hallmark/v1/ca.proto",
        "hallmark/v1/devices.proto",
        "hallmark/v1/enrollment.proto",
        "hallmark/v1/revocation.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("hallmark_descriptor.bin"))
        .compile_with_config(config, &protos, &["."])?;
    Ok(())
}
