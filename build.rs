//! Compiles `proto/holdup/v1/lab.proto` into Rust, plus a file descriptor set that the
//! reflection service serves (grpcurl needs it to list and describe the service); and the same
//! for `proto/helloworld/helloworld.proto` and `proto/routeguide/route_guide.proto`, the services
//! of `examples/diagnosed_greeter.rs` and `examples/route_guide.rs`.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate unless `PROTOC` is set, so a fresh
//! machine builds with no manual step.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // Safety: no other thread of this build script reads the environment.
        unsafe { env::set_var("PROTOC", protoc) };
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("holdup_descriptor.bin"))
        .compile_protos(&["proto/holdup/v1/lab.proto"], &["proto"])?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("helloworld_descriptor.bin"))
        .compile_protos(&["proto/helloworld/helloworld.proto"], &["proto"])?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("routeguide_descriptor.bin"))
        .compile_protos(&["proto/routeguide/route_guide.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
