//! `echo`: returns the payload unchanged; the smallest useful handler, used by the demo and by
//! most tests.

use kiln_sdk::{Handler, Job, JobError};

struct Echo;

impl Handler for Echo {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        Ok(job.payload)
    }
}

kiln_sdk::export!(Echo);
