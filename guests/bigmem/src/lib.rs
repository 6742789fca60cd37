//! `bigmem`: a handler whose 100 MiB static array makes its linear memory start at over
//! 100 MiB, more than a 64 MiB cap allows. Kiln must refuse it at load (and `kiln check`
//! given that cap), instead of loading it and failing every job at instantiation.

use std::sync::atomic::{AtomicU8, Ordering};

use kiln_sdk::{Handler, Job, JobError};

/// Zero-initialised, so it costs nothing in the file, only in the memory's minimum size.
static CELLS: [AtomicU8; 100 << 20] = [const { AtomicU8::new(0) }; 100 << 20];

struct BigMem;

impl Handler for BigMem {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let cell = &CELLS[job.payload.len() % CELLS.len()];
        cell.fetch_add(1, Ordering::Relaxed);
        Ok(vec![cell.load(Ordering::Relaxed)])
    }
}

kiln_sdk::export!(BigMem);
