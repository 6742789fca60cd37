//! [`OpsError`]: why an action was refused or failed, typed so each front end maps it once.

use crate::store::StoreError;

/// Why an operation did not happen. Messages are lowercase and name the thing.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// No job with this id.
    #[error("job `{0}` not found")]
    JobNotFound(String),
    /// The queue is not in the config.
    #[error("queue `{queue}` is not configured (queues: {})", known.join(", "))]
    UnknownQueue { queue: String, known: Vec<String> },
    /// No schedule of this name is configured.
    #[error("schedule `{name}` is not configured (schedules: {})", known.join(", "))]
    UnknownSchedule { name: String, known: Vec<String> },
    /// No handler of this name can be loaded from the handlers directory.
    #[error("unknown handler `{handler}`: {reason}")]
    UnknownHandler { handler: String, reason: String },
    /// A field of the request is not acceptable; `field` names it as the user wrote it.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A body is larger than its cap.
    #[error("{field} of {size} bytes exceeds the cap of {limit} bytes")]
    TooLarge {
        field: String,
        size: usize,
        limit: usize,
    },
    /// The job is not in a state the action applies to.
    #[error("{0}")]
    Conflict(String),
    /// The job store could not be reached or failed.
    #[error("the job store is unavailable")]
    Unavailable(#[source] StoreError),
    /// The store holds something Kiln cannot read, or another store error.
    #[error(transparent)]
    Store(StoreError),
}

/// What kind of failure an [`OpsError`] is, for the front ends' mappings (exit code, HTTP
/// status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The thing named does not exist (a job, a queue, a handler).
    NotFound,
    /// The request is malformed or names something it may not.
    Invalid,
    /// A body is over its cap.
    TooLarge,
    /// The action does not apply to the thing's current state.
    Conflict,
    /// The store is unreachable; trying again later may work.
    Unavailable,
    /// Something is wrong inside Kiln or its store.
    Internal,
}

impl OpsError {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            OpsError::JobNotFound(_)
            | OpsError::UnknownQueue { .. }
            | OpsError::UnknownSchedule { .. }
            | OpsError::UnknownHandler { .. } => ErrorClass::NotFound,
            OpsError::Invalid { .. } => ErrorClass::Invalid,
            OpsError::TooLarge { .. } => ErrorClass::TooLarge,
            OpsError::Conflict(_) => ErrorClass::Conflict,
            OpsError::Unavailable(_) => ErrorClass::Unavailable,
            OpsError::Store(_) => ErrorClass::Internal,
        }
    }

    /// A stable code for machine readers (`not-found`, `invalid`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            OpsError::JobNotFound(_) => "job-not-found",
            OpsError::UnknownQueue { .. } => "unknown-queue",
            OpsError::UnknownHandler { .. } => "unknown-handler",
            OpsError::UnknownSchedule { .. } => "unknown-schedule",
            OpsError::Invalid { .. } => "invalid",
            OpsError::TooLarge { .. } => "too-large",
            OpsError::Conflict(_) => "conflict",
            OpsError::Unavailable(_) => "store-unavailable",
            OpsError::Store(_) => "store-error",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        OpsError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<StoreError> for OpsError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(id) => OpsError::JobNotFound(id),
            StoreError::InvalidState { .. } => OpsError::Conflict(error.to_string()),
            StoreError::InvalidJob { .. } => OpsError::invalid("job", error.to_string()),
            error if error.is_unavailable() => OpsError::Unavailable(error),
            // `LeaseNotHeld`, `Corrupt`, `IncompatibleSchema`.
            error => OpsError::Store(error),
        }
    }
}
