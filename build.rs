//! Compiles `proto/` with tonic's prost codegen, using the vendored `protoc` so that a
//! fresh machine needs nothing installed, and writes a descriptor set for reflection.

use std::{env, error::Error, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/introspectd/v1/introspection.proto",
    "proto/introspectd/v1/revocation.proto",
    "proto/introspectd/v1/claims.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // Undecodable requests are INVALID_ARGUMENT, not prost's INTERNAL.
        .codec_path("crate::grpc::codec::StrictCodec")
        .file_descriptor_set_path(out_dir.join("introspectd_descriptor.bin"))
        .compile_with_config(config, PROTOS, &["proto"])?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
