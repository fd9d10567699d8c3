//! Compiles the demo's gRPC service (`proto/demo.proto`); needs `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/demo.proto");
    tonic_prost_build::compile_protos("proto/demo.proto")?;
    Ok(())
}
