//! Compiles the sidecar API's protobuf with protox (no protoc needed) into prost messages and
//! tonic client and server code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/portcullis/v1/sidecar.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    // Ordered maps: a view encodes to the same bytes every time, so its content hash is stable.
    tonic_prost_build::configure()
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
