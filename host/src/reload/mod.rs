//! Hot reload: keeps the registry in step with the handlers directory while the host runs
//! (this file), and the live config in step with the config file (`config_file`).
//!
//! A filesystem watcher reports changes to `*.wasm` files; each path is reloaded once its
//! events have been quiet for a short debounce, so a `cp` over an old file (a truncate and
//! several writes) or an editor's write-then-rename turns into one reload of the finished
//! file. A load that fails (a half-written file, a corrupt one) leaves the old version
//! serving; the next event for the path tries again.

pub mod config_file;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::registry::{Change, Registry, is_handler_file};

/// Quiet time after the last write event before a path is reloaded; covers the gaps
/// between the chunks of a `cp` without keeping a new version waiting long.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// Quiet time after an event that says the file is complete (closed after writing,
/// renamed into place, removed).
pub const SETTLED: Duration = Duration::from_millis(10);

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _watcher: RecommendedWatcher,
    task: JoinHandle<()>,
    changes: broadcast::Sender<Change>,
}

impl Watcher {
    /// Starts watching the registry's directory.
    pub fn start(registry: Arc<Registry>) -> notify::Result<Watcher> {
        let (events, receiver) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event) => {
                    let Some(quiet) = quiet_time(&event.kind) else {
                        return;
                    };
                    for path in event.paths {
                        if is_handler_file(&path) {
                            let _ = events.send((path, quiet));
                        }
                    }
                }
                Err(error) => tracing::warn!("handler directory watch error: {error}"),
            })?;
        watcher.watch(registry.dir(), RecursiveMode::NonRecursive)?;
        let (changes, _) = broadcast::channel(1024);
        let task = tokio::spawn(debounce_loop(registry, receiver, changes.clone()));
        Ok(Watcher {
            _watcher: watcher,
            task,
            changes,
        })
    }

    /// Every change the watcher applies from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long to wait after this kind of event before reloading; `None` ignores it.
fn quiet_time(kind: &EventKind) -> Option<Duration> {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Modify(ModifyKind::Name(_))
        | EventKind::Remove(_) => Some(SETTLED),
        EventKind::Create(_) | EventKind::Modify(_) => Some(DEBOUNCE),
        EventKind::Access(_) | EventKind::Any | EventKind::Other => None,
    }
}

async fn debounce_loop(
    registry: Arc<Registry>,
    mut events: mpsc::UnboundedReceiver<(PathBuf, Duration)>,
    changes: broadcast::Sender<Change>,
) {
    let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
    loop {
        let next = pending.values().min().copied();
        let event = match next {
            Some(at) => tokio::select! {
                event = events.recv() => event,
                () = tokio::time::sleep_until(at) => {
                    let now = Instant::now();
                    let due: Vec<PathBuf> = pending
                        .iter()
                        .filter(|(_, at)| **at <= now)
                        .map(|(path, _)| path.clone())
                        .collect();
                    for path in due {
                        pending.remove(&path);
                        apply(&registry, &path, &changes);
                    }
                    continue;
                }
            },
            None => events.recv().await,
        };
        let Some((path, quiet)) = event else {
            return;
        };
        // A later "settled" event shortens the wait; a later write lengthens it again.
        pending.insert(path, Instant::now() + quiet);
    }
}

/// Reloads `path` in its own task: one file's slow compile never holds another's change.
fn apply(registry: &Arc<Registry>, path: &Path, changes: &broadcast::Sender<Change>) {
    let (registry, path, changes) = (registry.clone(), path.to_owned(), changes.clone());
    tokio::spawn(async move {
        let change = registry.reload(&path).await;
        let _ = changes.send(change);
    });
}
