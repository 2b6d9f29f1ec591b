//! Compiles `hallmark/v1/*.proto` with a vendored protoc so a fresh machine needs no system protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY of set_var: build scripts are single-threaded at this point.
    unsafe { std::env::set_var("PROTOC", protoc) };
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
        .compile_protos(&protos, &["."])?;
    Ok(())
}
