//! Compiles `proto/` into Rust (prost + tonic) and generates the proto3 JSON mapping (pbjson).
//!
//! The `.proto` files are parsed by `protox`, a protobuf compiler written in Rust that carries the
//! well-known types (`google/protobuf/*.proto`) itself, so the build needs no `protoc` and no
//! `.proto` include files from the machine: the Rust toolchain is enough.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/yichuang/v1/submission.proto",
        "proto/yichuang/v1/case.proto",
        "proto/yichuang/v1/case_service.proto",
        "proto/yichuang/v1/bus.proto",
        "proto/yichuang/v1/admin.proto",
        "proto/yichuang/v1/hotline.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(protos)?;

    // The encoded set serves gRPC reflection (`api.rs`) and pbjson; it holds the imports too, as
    // `protoc --include_imports` did, so reflection can describe `google.protobuf.Timestamp`.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let set = compiler.encode_file_descriptor_set();
    std::fs::write(out.join("yichuang_descriptor.bin"), &set)?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .btree_map(".")
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(compiler.file_descriptor_set())?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .btree_map(["."])
        .build(&[".yichuang"])?;
    Ok(())
}
