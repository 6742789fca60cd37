//! One claimed job through the sandbox: its limits and grants from the config, its progress
//! written to the store as it runs, and the settlement that records how the attempt ended.
//! The retry policy lives here: which outcomes are retried, after what delay, and when a job
//! has no attempts left.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::claim::SlotPermit;
use super::{Running, Settling, Shared, StopReason, lock};
use crate::config::JobSettings;
use crate::events::Event;
use crate::host_api::{JobHooks, ProgressHook, stored_log};
use crate::sandbox::{Attempt, ErrorKind, JobInput, Outcome};
use crate::store::lifecycle::Held;
use crate::store::{AttemptRecord, Job, JobStore, Progress, SettleAction, Settlement, Timestamp};

/// Longest a job whose handler is not loaded is parked before it is offered again, unless a
/// load of its handler wakes it first: bounds how late a wake-up that was missed (the
/// handler appeared on another host only) makes it run.
const PARK_LIMIT: Duration = Duration::from_secs(30);
/// Wait before a job whose handler is still loading is offered again: most loads take well
/// under a second, and the job should not wait much longer than its handler.
const LOADING_HANDLER_RETRY: Duration = Duration::from_millis(250);

/// Runs one claimed job and queues its settlement.
pub(super) async fn run_job<S: JobStore + 'static>(
    shared: Arc<Shared<S>>,
    job: Job,
    _permit: SlotPermit,
) {
    let Some(handler) = shared.registry.get(&job.handler) else {
        let settlement = unknown_handler(&shared, &job);
        let _ = shared.settle.send(Settling { settlement, job });
        return;
    };
    let settings = shared
        .config
        .current()
        .job_settings(&job.handler, &job.queue);
    let running = Arc::new(Running {
        cancel: CancellationToken::new(),
        reason: Mutex::new(None),
    });
    lock(&shared.running).insert(job.id.clone(), running.clone());
    let started_at = shared.clock.now();
    let (progress_hook, progress_task) = progress_writer(shared.clone(), job.id.clone());
    let hooks = JobHooks {
        progress: Some(progress_hook),
        enqueue: Some(shared.children.clone()),
    };
    let input = JobInput {
        id: job.id.clone(),
        handler: job.handler.clone(),
        queue: job.queue.clone(),
        payload: job.payload.clone(),
        attempt: job.attempts,
        max_attempts: job.max_attempts,
    };
    shared.events.emit(Event::AttemptStarted {
        job: &job,
        digest: &handler.digest,
    });
    let runtime = shared.registry.runtime();
    let attempt = runtime
        .run(
            &handler,
            &input,
            &settings.limits,
            &settings.grants,
            hooks,
            &running.cancel,
        )
        .await;
    // The store, and with it the progress hook, is gone: the writer (if any) ends.
    let writer = lock(&progress_task).take();
    if let Some(writer) = writer {
        let _ = writer.await;
    }
    lock(&shared.running).remove(&job.id);
    let ended_at = shared.clock.now();
    shared.events.emit(Event::AttemptEnded {
        job: &job,
        attempt: &attempt,
    });
    if let Some(settlement) = settle_attempt(
        &job,
        &settings,
        attempt,
        running.reason(),
        (started_at, ended_at),
        &shared,
    ) {
        let _ = shared.settle.send(Settling { settlement, job });
    }
}

/// A job whose handler is not loaded is parked until the handler is loaded (at most until
/// the grace is over, and `PARK_LIMIT` at a time), or fails once the grace is over (never
/// while its handler is still loading: then it is offered again shortly, quietly).
fn unknown_handler<S>(shared: &Shared<S>, job: &Job) -> Settlement {
    let now = shared.clock.now();
    let grace = shared.config.current().host.unknown_handler_grace;
    // A handler still compiling is not missing: its jobs wait, quietly and without a limit.
    let loading = shared.registry.is_loading(&job.handler);
    let failed = !loading && now.since(job.created_at) >= grace;
    if !loading {
        shared.events.emit(Event::HandlerMissing { job, failed });
    }
    let action = if failed {
        let waited = humantime::format_duration(grace);
        let error = match shared.registry.errors().remove(&job.handler) {
            Some(load_error) => format!(
                "handler `{}` is not loaded (waited {waited}): {load_error}",
                job.handler
            ),
            None => format!("handler `{}` is not loaded (waited {waited})", job.handler),
        };
        SettleAction::Fail { error }
    } else if loading {
        SettleAction::Release {
            at: now + LOADING_HANDLER_RETRY,
        }
    } else {
        SettleAction::Park {
            until: (job.created_at + grace).min(now + PARK_LIMIT),
        }
    };
    Settlement {
        id: job.id.clone(),
        owner: shared.owner.clone(),
        attempt: None,
        action,
    }
}

/// Turns an attempt into the settlement that records it; `None` if the job is no longer ours.
fn settle_attempt<S>(
    job: &Job,
    settings: &JobSettings,
    attempt: Attempt,
    stopped: Option<StopReason>,
    (started_at, ended_at): (Timestamp, Timestamp),
    shared: &Shared<S>,
) -> Option<Settlement> {
    let record = AttemptRecord {
        attempt: job.attempts,
        digest: Some(attempt.digest.clone()),
        started_at,
        ended_at,
        outcome: attempt.outcome.class(),
        message: attempt.outcome.message(),
        wall_ms: u64::try_from(attempt.wall.as_millis()).unwrap_or(u64::MAX),
        fuel: Some(attempt.fuel_used),
        http: attempt.http,
        tcp: attempt.tcp,
        log: stored_log(&attempt.log),
        log_truncated: attempt.log_truncated,
    };
    let (action, record) = match (&attempt.outcome, stopped) {
        (_, Some(StopReason::LeaseLost)) => return None,
        (Outcome::Cancelled, Some(StopReason::Shutdown)) => {
            (SettleAction::Release { at: ended_at }, None)
        }
        (Outcome::Cancelled, _) => (SettleAction::Cancel, Some(record)),
        (Outcome::Ok(_), _)
            if shared
                .config
                .current()
                .retention(&job.queue)
                .succeeded
                .keeps_none() =>
        {
            (SettleAction::SucceedAndDelete, None)
        }
        (Outcome::Ok(result), _) => (
            SettleAction::Succeed {
                result: result.clone(),
            },
            Some(record),
        ),
        (outcome, _) => {
            let error = outcome.message().unwrap_or_default();
            let action = if outcome.is_retryable() && held(job).has_attempts_left() {
                SettleAction::Retry {
                    at: ended_at + retry_delay(settings, job.attempts, outcome),
                    error,
                }
            } else {
                SettleAction::Fail { error }
            };
            (action, Some(record))
        }
    };
    Some(Settlement {
        id: job.id.clone(),
        owner: shared.owner.clone(),
        attempt: record,
        action,
    })
}

/// The configured backoff for `attempt`, or longer if the handler asked for a longer delay.
fn retry_delay(settings: &JobSettings, attempt: u32, outcome: &Outcome) -> Duration {
    let backoff = settings.backoff.delay(attempt, rand::random::<f64>());
    match outcome {
        Outcome::Error {
            kind: ErrorKind::Retry { delay: Some(asked) },
            ..
        } => backoff.max(*asked),
        _ => backoff,
    }
}

/// A progress hook that keeps only the latest report, and the task writing it to the store.
/// The task ends when the hook (held by the job's sandbox) is dropped.
fn progress_writer<S: JobStore + 'static>(
    shared: Arc<Shared<S>>,
    id: String,
) -> (
    ProgressHook,
    Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
) {
    let (tx, rx) = watch::channel::<Option<Progress>>(None);
    let rx = Mutex::new(Some(rx));
    let task = Arc::new(Mutex::new(None));
    let spawned = task.clone();
    // The writer task starts with the first report: most jobs never report progress.
    let hook = Arc::new(move |percent, message| {
        let _ = tx.send(Some(Progress { percent, message }));
        if let Some(rx) = lock(&rx).take() {
            let writer = write_progress(shared.clone(), id.clone(), rx);
            *lock(&spawned) = Some(tokio::spawn(writer));
        }
    });
    (hook, task)
}

/// Records the latest progress of job `id` until its hook is dropped.
async fn write_progress<S: JobStore>(
    shared: Arc<Shared<S>>,
    id: String,
    mut rx: watch::Receiver<Option<Progress>>,
) {
    while rx.changed().await.is_ok() {
        let Some(progress) = rx.borrow_and_update().clone() else {
            continue;
        };
        let now = shared.clock.now();
        if let Err(error) = shared
            .store
            .progress(&id, &shared.owner, progress, now)
            .await
        {
            tracing::debug!(job = %id, "progress not recorded: {error}");
        }
    }
}

/// The claimed job as the lifecycle rules see it.
fn held(job: &Job) -> Held {
    Held {
        attempts: job.attempts,
        max_attempts: job.max_attempts,
        cancel_requested: job.cancel_requested,
    }
}
