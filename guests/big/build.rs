//! Writes about 2 MB of pseudo-random (so incompressible) bytes into OUT_DIR for `big` to embed.

use std::{env, fs, path::Path};

/// Size of the embedded blob; makes the component about 2 MB.
const BLOB_BYTES: usize = 2_000_000;

fn main() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut blob = Vec::with_capacity(BLOB_BYTES);
    while blob.len() < BLOB_BYTES {
        // xorshift64: cheap, deterministic, and its output does not compress.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        blob.extend_from_slice(&state.to_le_bytes());
    }
    blob.truncate(BLOB_BYTES);
    let out = env::var("OUT_DIR").expect("cargo sets OUT_DIR for build scripts");
    fs::write(Path::new(&out).join("blob.bin"), blob).expect("failed to write blob.bin");
    println!("cargo::rerun-if-changed=build.rs");
}
