//! Compiles proto/strom/v1/*.proto with protox (pure Rust), so building needs no protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = ["common", "broker", "admin", "group", "quorum", "replication"]
        .map(|f| root.join(format!("strom/v1/{f}.proto")));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        // Record data and opaque group metadata stay `bytes::Bytes`: no copies on decode.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
