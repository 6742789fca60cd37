//! The job a handler receives and the ways an attempt can fail.
//!
//! These are the SDK's own types rather than the generated ones, so that handlers get
//! constructors, readable `Display` output and JSON helpers; `lib.rs` converts at the boundary.

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// One attempt of one job, as the handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Identifier the job store gave the job when it was enqueued; stable across attempts,
    /// so it can serve as an idempotency key for side effects.
    pub id: String,
    /// Name of the handler that runs the job (the file stem of its `.wasm`).
    pub name: String,
    /// Queue the job was taken from.
    pub queue: String,
    /// Bytes given by whoever enqueued the job; read them with [`Job::json`] when they are JSON.
    pub payload: Vec<u8>,
    /// Which attempt this is, starting at 1.
    pub attempt: u32,
    /// How many attempts the job gets in all, so a handler can act differently on its last.
    pub max_attempts: u32,
}

impl Job {
    /// Reads the payload as JSON into `T`.
    ///
    /// A payload that does not parse can never succeed on a later attempt, so the error is
    /// [`JobError::Fatal`], and `?` ends the job with a message that says what was wrong.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_slice(&self.payload).map_err(|err| {
            JobError::fatal(format!(
                "invalid json payload for handler `{}`: {err}",
                self.name
            ))
        })
    }

    /// Like [`Job::json`], but an empty (or all-whitespace) payload gives `T::default()`,
    /// for handlers whose every setting is optional.
    pub fn json_or_default<T: DeserializeOwned + Default>(&self) -> Result<T, JobError> {
        if self.payload.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        self.json()
    }

    /// Whether this is the job's last attempt, after which a retry error fails it for good.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// How an attempt failed, so the host knows whether to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// Try again later, if the job has attempts left.
    Retry {
        /// Why this attempt failed; stored with the attempt.
        message: String,
        /// Wait at least this long before the next attempt, instead of the configured
        /// backoff (e.g. what a rate-limited API asked for).
        delay: Option<Duration>,
    },
    /// Never try again: the job fails now with this message.
    Fatal(String),
}

impl JobError {
    /// A failure that may go away, retried after the queue's configured backoff.
    pub fn retry(message: impl Into<String>) -> Self {
        JobError::Retry {
            message: message.into(),
            delay: None,
        }
    }

    /// A failure that may go away, retried no sooner than `delay` from now.
    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        JobError::Retry {
            message: message.into(),
            delay: Some(delay),
        }
    }

    /// A failure that will not go away; the job fails now whatever attempts it has left.
    pub fn fatal(message: impl Into<String>) -> Self {
        JobError::Fatal(message.into())
    }

    /// The message stored with the attempt.
    pub fn message(&self) -> &str {
        match self {
            JobError::Retry { message, .. } | JobError::Fatal(message) => message,
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for JobError {}

/// Encodes `value` as the JSON result of a job.
///
/// Meant as the last expression of a handler: `kiln_sdk::json(&report)`. A value that cannot
/// be encoded (a map with non-string keys, say) fails the job as [`JobError::Fatal`].
pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, JobError> {
    serde_json::to_vec(value)
        .map_err(|err| JobError::fatal(format!("failed to encode the job result as json: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn job(payload: &str) -> Job {
        Job {
            id: "j1".into(),
            name: "resize".into(),
            queue: "default".into(),
            payload: payload.as_bytes().to_vec(),
            attempt: 1,
            max_attempts: 3,
        }
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Settings {
        #[serde(default)]
        width: u32,
    }

    #[test]
    fn json_reads_a_typed_payload() {
        assert_eq!(job(r#"{"width": 640}"#).json(), Ok(Settings { width: 640 }));
    }

    #[test]
    fn bad_json_is_a_fatal_error_naming_the_handler() {
        let err = job(r#"{"width": "wide"}"#).json::<Settings>().unwrap_err();
        let JobError::Fatal(message) = err else {
            panic!("expected a fatal error, got {err:?}");
        };
        assert!(message.starts_with("invalid json payload for handler `resize`: "));
        assert!(message.contains("line 1"), "{message}");
    }

    #[test]
    fn empty_payload_gives_the_default_only_when_asked() {
        assert_eq!(job("  \n").json_or_default(), Ok(Settings::default()));
        assert!(job("").json::<Settings>().is_err());
        assert_eq!(
            job(r#"{"width": 3}"#).json_or_default(),
            Ok(Settings { width: 3 })
        );
    }

    #[test]
    fn constructors_say_whether_to_retry() {
        assert_eq!(
            JobError::retry_after("busy", Duration::from_secs(2)),
            JobError::Retry {
                message: "busy".into(),
                delay: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(JobError::retry("busy").to_string(), "busy");
        assert_eq!(JobError::fatal("bad input").message(), "bad input");
    }

    #[test]
    fn last_attempt_is_detected() {
        let mut j = job("");
        assert!(!j.is_last_attempt());
        j.attempt = 3;
        assert!(j.is_last_attempt());
    }

    #[test]
    fn json_result_round_trips() {
        let bytes = json(&serde_json::json!({"steps": 11})).unwrap();
        assert_eq!(bytes, br#"{"steps":11}"#);
    }
}
