//! Compiles the demo's gRPC service (`proto/demo.proto`) with the `protoc`
//! that `protoc-bin-vendored` ships, so the demo builds with nothing but the
//! Rust toolchain: no system `protoc`, and `PROTOC` is not read.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/demo.proto");
    // so that scripts/test's no-protoc check really runs this script again
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &["proto/demo.proto"], &["proto"])?;
    Ok(())
}
