//! The handler registry: handler name -> the loaded, type-checked version that serves it,
//! kept in step with the handlers directory by `load_all` and `reload`. A file that fails to
//! load is refused and its error kept; the version already serving (if any) goes on serving.
//!
//! Reading, compiling, caching and type-checking one file is `loader`'s job (`contract`
//! says why a component does not fit); compiling runs
//! on blocking threads, never the async ones. Jobs hold an `Arc<LoadedHandler>`: replacing a
//! handler never disturbs a job in flight.

pub mod compiler;
mod contract;
mod loader;
mod memory;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::engine::Runtime;
use crate::events::{Event, Events};

pub use compiler::{
    CompileBudget, budget as compile_budget, child_main as compile_child_main, set_executable,
};
use loader::listed_name;
pub use loader::{
    LoadError, LoadSource, LoadedHandler, MAX_NAME_LEN, check_file, check_name, digest,
    handler_name, is_handler_file, name_of,
};

/// What a reload did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new handler started serving.
    Added { name: String, digest: String },
    /// A new version replaced the old one.
    Replaced { name: String, digest: String },
    /// The file is gone and so is the handler.
    Removed { name: String },
    /// The file's content is the version already serving.
    Unchanged { name: String },
    /// The file was refused; the previous version (if any) keeps serving.
    Refused { name: String, error: String },
}

/// The handlers a host serves, by name, plus the last error of each refused file.
pub struct Registry {
    /// Compiles and links every handler, so all of them run in one engine.
    runtime: Arc<Runtime>,
    /// The handlers directory: `load_all` reads every `*.wasm` in it.
    dir: PathBuf,
    /// Where compiled artifacts are kept across restarts; `None` compiles every time.
    cache_dir: Option<PathBuf>,
    /// Std lock: held only to clone an `Arc` or swap one, never across an `.await`.
    handlers: RwLock<BTreeMap<String, Arc<LoadedHandler>>>,
    /// The message of each name whose newest file was refused, for `kiln handlers`; cleared
    /// when a file of that name loads or is removed. Same locking as `handlers`.
    errors: RwLock<BTreeMap<String, String>>,
    /// Told of every handler loaded, refused or removed.
    events: Events,
    /// Orders loads that run side by side (std lock, never held across an `.await`).
    tickets: Mutex<Tickets>,
    /// The name of each handler version that starts serving (see [`Registry::loads`]).
    loads: tokio::sync::broadcast::Sender<String>,
}

/// Loads a subscriber may fall behind by before it is told it lagged.
const LOADS_BUFFER: usize = 256;

/// Every load or removal takes the next ticket when it starts; a result older than the
/// newest one already applied to its name is dropped, so a slow load that finishes late
/// cannot put an old version back, and one file's compile never waits for another's.
#[derive(Debug, Default)]
struct Tickets {
    next: u64,
    /// The newest ticket applied, by name.
    applied: HashMap<String, u64>,
    /// Loads under way, by name.
    loading: HashMap<String, usize>,
}

impl Tickets {
    fn start(&mut self, name: &str) -> u64 {
        self.next += 1;
        *self.loading.entry(name.to_owned()).or_default() += 1;
        self.next
    }

    /// Makes every load of `name` started so far stale: what happened now (a removal, a
    /// refusal) is newer than any of them.
    fn supersede(&mut self, name: &str) {
        self.next += 1;
        self.applied.insert(name.to_owned(), self.next);
    }

    /// Ends `ticket`'s load; whether its result is the newest and should be applied.
    fn finish(&mut self, name: &str, ticket: u64) -> bool {
        if let Some(count) = self.loading.get_mut(name) {
            *count -= 1;
            if *count == 0 {
                self.loading.remove(name);
            }
        }
        let applied = self.applied.entry(name.to_owned()).or_default();
        if *applied > ticket {
            return false;
        }
        *applied = ticket;
        true
    }
}

/// One load on a blocking thread.
struct Load {
    path: PathBuf,
    ticket: u64,
    task: tokio::task::JoinHandle<Result<LoadedHandler, LoadError>>,
}

impl Registry {
    pub fn new(runtime: Arc<Runtime>, dir: PathBuf, cache_dir: Option<PathBuf>) -> Self {
        Registry {
            runtime,
            dir,
            cache_dir,
            handlers: RwLock::default(),
            errors: RwLock::default(),
            events: Events::default(),
            tickets: Mutex::default(),
            loads: tokio::sync::broadcast::channel(LOADS_BUFFER).0,
        }
    }

    /// Reports every handler loaded, refused or removed to `events` (by default they are
    /// only logged).
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// The names of handler versions that start serving from now on, as they do. A
    /// subscriber that falls behind is told it lagged and should look at every handler.
    pub fn loads(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.loads.subscribe()
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The version currently serving `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedHandler>> {
        let handlers = self.handlers.read().unwrap_or_else(PoisonError::into_inner);
        handlers.get(name).cloned()
    }

    /// Every serving handler, by name.
    pub fn handlers(&self) -> Vec<Arc<LoadedHandler>> {
        let handlers = self.handlers.read().unwrap_or_else(PoisonError::into_inner);
        handlers.values().cloned().collect()
    }

    /// The last load error of each handler name whose newest file was refused.
    pub fn errors(&self) -> BTreeMap<String, String> {
        self.errors
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Loads every `*.wasm` in the directory, compiling on blocking threads in parallel;
    /// each handler serves as soon as its own load is done, whatever the others take.
    /// A `.wasm` entry that cannot be a handler (a bad name, a directory, a dangling or
    /// looping link) is refused under its file name: logged and listed, never skipped
    /// silently. Files with other extensions are not handlers and are ignored.
    pub async fn load_all(&self) -> std::io::Result<Vec<Change>> {
        let mut paths = Vec::new();
        let mut changes = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if !is_handler_file(&path) {
                continue;
            }
            match check_file(&path) {
                Ok(_) => paths.push(path),
                Err(error) => changes.push(self.refuse(listed_name(&path), &error)),
            }
        }
        paths.sort();
        let mut loads = tokio::task::JoinSet::new();
        for path in paths {
            let load = self.spawn_load(path);
            loads.spawn(async move { (load.path, load.ticket, load.task.await) });
        }
        while let Some(done) = loads.join_next().await {
            let (path, ticket, result) = done.expect("a load task is never cancelled");
            changes.push(self.apply(&path, ticket, result));
        }
        Ok(changes)
    }

    /// Whether a load of `name` is under way (jobs for it wait without a warning).
    pub fn is_loading(&self, name: &str) -> bool {
        self.tickets().loading.contains_key(name)
    }

    fn tickets(&self) -> std::sync::MutexGuard<'_, Tickets> {
        self.tickets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts loading `path` on a blocking thread, with the next ticket for its name.
    fn spawn_load(&self, path: PathBuf) -> Load {
        let ticket = self.tickets().start(&listed_name(&path));
        let runtime = self.runtime.clone();
        let cache_dir = self.cache_dir.clone();
        let owned = path.clone();
        let task =
            tokio::task::spawn_blocking(move || runtime.load_handler(&owned, cache_dir.as_deref()));
        Load { path, ticket, task }
    }

    /// Applies a finished load, unless a newer load or removal of its name was applied first.
    fn apply(
        &self,
        path: &Path,
        ticket: u64,
        load: Result<Result<LoadedHandler, LoadError>, tokio::task::JoinError>,
    ) -> Change {
        let name = listed_name(path);
        if !self.tickets().finish(&name, ticket) {
            return Change::Unchanged { name };
        }
        match load {
            Ok(Ok(loaded)) => self.install(name, loaded),
            Ok(Err(error)) => self.refuse(name, &error),
            Err(panic) => self.refuse_message(name, format!("loading panicked: {panic}")),
        }
    }

    /// Brings the handler at `path` up to date with the file: load, replace or remove.
    /// Reloads of different files run side by side; of one file, the newest started wins.
    pub async fn reload(&self, path: &Path) -> Change {
        let name = listed_name(path);
        if path.symlink_metadata().is_err() {
            self.tickets().supersede(&name);
            return self.remove(name);
        }
        if let Err(error) = check_file(path) {
            self.tickets().supersede(&name);
            return self.refuse(name, &error);
        }
        let load = self.spawn_load(path.to_owned());
        let result = load.task.await;
        self.apply(&load.path, load.ticket, result)
    }

    fn install(&self, name: String, loaded: LoadedHandler) -> Change {
        self.errors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&name);
        let digest = loaded.digest.clone();
        if self.get(&name).is_some_and(|c| c.digest == digest) {
            return Change::Unchanged { name };
        }
        let loaded = Arc::new(loaded);
        let replaced = self
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), loaded.clone())
            .is_some();
        self.events.emit(Event::HandlerLoaded {
            handler: &loaded,
            replaced,
        });
        // Nobody subscribed is no error.
        let _ = self.loads.send(name.clone());
        if replaced {
            Change::Replaced { name, digest }
        } else {
            Change::Added { name, digest }
        }
    }

    fn refuse(&self, name: String, error: &LoadError) -> Change {
        self.refuse_message(name, describe(error))
    }

    fn refuse_message(&self, name: String, message: String) -> Change {
        self.events.emit(Event::HandlerRefused {
            name: &name,
            error: &message,
            serving: self.get(&name).is_some(),
        });
        self.errors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), message.clone());
        Change::Refused {
            name,
            error: message,
        }
    }

    fn remove(&self, name: String) -> Change {
        self.errors
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&name);
        let removed = self
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&name);
        if removed.is_some() {
            self.events.emit(Event::HandlerRemoved { name: &name });
        }
        Change::Removed { name }
    }
}

/// An error and its causes on one line, `cause: cause: cause`.
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
