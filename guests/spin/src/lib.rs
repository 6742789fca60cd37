//! `spin`: computes forever and never returns; only a deadline, an exhausted fuel budget or a
//! cancel can stop it.

use std::hint::black_box;

use kiln_sdk::{Handler, Job, JobError};

struct Spin;

impl Handler for Spin {
    fn handle(_job: Job) -> Result<Vec<u8>, JobError> {
        kiln_sdk::info!("spinning until stopped");
        let mut state: u64 = 1;
        loop {
            // `black_box` keeps the optimiser from proving the loop has no effect.
            state = black_box(
                state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407),
            );
        }
    }
}

kiln_sdk::export!(Spin);
