//! Enqueueing: one job or a batch, from any producer, resolved and checked the same way.
//!
//! A request names a handler and a payload and may name a queue, a start time, a unique key
//! and a priority. What it leaves out comes from the config (the handler's queue, the queue's
//! priority, the handler > queue > defaults `max_attempts`). A request is refused, before
//! anything is stored, when its handler name can never be loaded, its handler is not in the
//! handlers directory (or, where that directory does not exist, not under `[handlers]` in
//! the config), its queue is not configured, its payload is over `max_payload`, or its
//! unique key is empty. A batch is checked whole, then stored in one call.

use std::time::Duration;

use super::{Ops, OpsError};
use crate::host_api::{ChildEnqueuer, ChildRequest, EnqueueFuture};
use crate::registry::check_name;
use crate::store::{JobStore, NewJob, Timestamp};

pub use crate::store::Enqueued;

/// What a producer asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnqueueRequest {
    /// The handler that runs the job (its `.wasm` file stem).
    pub handler: String,
    /// Bytes handed to the handler.
    pub payload: Vec<u8>,
    /// The queue; by default the handler's configured queue.
    pub queue: Option<String>,
    /// Earliest start; `None` is now.
    pub run_at: Option<Timestamp>,
    /// While an unfinished job has this key, enqueueing again returns that job's id.
    pub unique_key: Option<String>,
    /// Priority within the queue; by default the queue's.
    pub priority: Option<i32>,
}

impl EnqueueRequest {
    /// A request for `handler` with `payload` and everything else from the config.
    pub fn new(handler: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        EnqueueRequest {
            handler: handler.into(),
            payload: payload.into(),
            ..EnqueueRequest::default()
        }
    }
}

impl<S: JobStore> Ops<S> {
    /// The job `request` stands for, resolved from the config and checked.
    pub fn new_job(&self, request: EnqueueRequest) -> Result<NewJob, OpsError> {
        self.known_handler(&request.handler)?;
        let queue = match request.queue {
            Some(queue) => queue,
            None => self.config().queue_for(&request.handler).to_owned(),
        };
        self.known_queue(&queue)?;
        let settings = self.config().job_settings(&request.handler, &queue);
        let limit = settings.limits.max_payload;
        if request.payload.len() > limit {
            return Err(OpsError::TooLarge {
                field: "payload".into(),
                size: request.payload.len(),
                limit,
            });
        }
        if request.unique_key.as_deref() == Some("") {
            return Err(OpsError::invalid("unique key", "must not be empty"));
        }
        Ok(NewJob {
            priority: request
                .priority
                .unwrap_or(self.config().queues[&queue].priority),
            handler: request.handler,
            queue,
            payload: request.payload,
            run_at: request.run_at,
            max_attempts: settings.max_attempts,
            unique_key: request.unique_key,
            tick: None,
        })
    }

    /// Enqueues one job.
    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<Enqueued, OpsError> {
        let mut enqueued = self.enqueue_many(vec![request]).await?;
        enqueued
            .pop()
            .ok_or_else(|| OpsError::Conflict("the job store returned no id".into()))
    }

    /// Enqueues a batch: every request is checked before any is stored.
    pub async fn enqueue_many(
        &self,
        requests: Vec<EnqueueRequest>,
    ) -> Result<Vec<Enqueued>, OpsError> {
        let jobs = requests
            .into_iter()
            .map(|request| self.new_job(request))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.store.enqueue(jobs, self.now()).await?)
    }

    /// Whether a job for `handler` could ever run: its name is one a `.wasm` file can
    /// serve, and its file is in the handlers directory. Where that directory does not exist
    /// (a producer on another machine than its hosts), the handler must be named under
    /// `[handlers]` in the config instead, so a typo is still caught.
    fn known_handler(&self, handler: &str) -> Result<(), OpsError> {
        check_name(handler).map_err(|reason| OpsError::invalid("handler name", reason))?;
        let file = format!("{handler}.wasm");
        let dir = &self.config().host.handlers_dir;
        let reason = if dir.is_dir() {
            if dir.join(&file).exists() {
                return Ok(());
            }
            format!("no `{file}` in handlers directory `{}`", dir.display())
        } else {
            if self.config().handlers.contains_key(handler) {
                return Ok(());
            }
            format!(
                "handlers directory `{}` does not exist here and `[handlers.{handler}]` is not \
                 in the config",
                dir.display()
            )
        };
        Err(OpsError::UnknownHandler {
            handler: handler.to_owned(),
            reason,
        })
    }
}

/// Handlers' `enqueue` calls go through the same rules as every other producer.
impl<S: JobStore + 'static> ChildEnqueuer for Ops<S> {
    fn enqueue(&self, request: ChildRequest) -> EnqueueFuture {
        let ops = self.clone();
        let now = self.now();
        let parent = request.parent_id;
        let request = EnqueueRequest {
            handler: request.handler,
            payload: request.payload,
            queue: request.queue,
            run_at: request.delay.map(|delay: Duration| now + delay),
            unique_key: request.unique_key,
            priority: request.priority,
        };
        Box::pin(async move {
            let enqueued = ops.enqueue(request).await.map_err(|e| e.to_string())?;
            tracing::debug!(%parent, child = %enqueued.id, "handler enqueued a child job");
            Ok(enqueued.id)
        })
    }
}
