//! Compiles `proto/` into Rust (prost + tonic) and generates the proto3 JSON mapping (pbjson).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/yichuang/v1/submission.proto",
        "proto/yichuang/v1/case.proto",
        "proto/yichuang/v1/case_service.proto",
        "proto/yichuang/v1/bus.proto",
        "proto/yichuang/v1/admin.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    if std::env::var_os("PROTOC").is_none() && which_protoc().is_none() {
        return Err("protoc not found: install it (Debian: `apt-get install protobuf-compiler`, or `make deps`) or set PROTOC".into());
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("yichuang_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptors)
        .compile_well_known_types(true)
        .btree_map(".")
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_protos(&protos, &["proto"])?;
    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .btree_map(["."])
        .build(&[".yichuang"])?;
    Ok(())
}

fn which_protoc() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("protoc"))
        .find(|p| p.is_file())
}
