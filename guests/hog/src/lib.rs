//! `hog`: allocates memory 1 MiB at a time, writing every byte, until an allocation is
//! refused; then it panics (a trap). It never finishes normally under a memory cap below the
//! 4 GiB a 32-bit linear memory can reach.

use std::hint::black_box;

use kiln_sdk::{Handler, Job, JobError};

/// Size of each allocation; large enough to reach a cap quickly, small enough to land close
/// to it.
const CHUNK: usize = 1024 * 1024;

struct Hog;

impl Handler for Hog {
    fn handle(_job: Job) -> Result<Vec<u8>, JobError> {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut chunk = Vec::new();
            if chunk.try_reserve_exact(CHUNK).is_err() || chunks.try_reserve(1).is_err() {
                panic!("memory refused after {} MiB", chunks.len());
            }
            // Writing (not zero-filling) makes sure the pages are really touched.
            chunk.resize(CHUNK, 0xA5);
            chunks.push(black_box(chunk));
            if chunks.len().is_multiple_of(64) {
                kiln_sdk::debug!("holding {} MiB", chunks.len());
            }
        }
    }
}

kiln_sdk::export!(Hog);
