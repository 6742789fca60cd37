//! The handler registry: handler name -> the loaded, type-checked version that serves it,
//! kept in step with the handlers directory by `load_all` and `reload`. A file that fails to
//! load is refused and its error kept; the version already serving (if any) goes on serving.
//!
//! Reading, compiling, caching and type-checking one file is `loader`'s job (`contract`
//! says why a component does not fit); compiling runs
//! on blocking threads, never the async ones. Jobs hold an `Arc<LoadedHandler>`: replacing a
//! handler never disturbs a job in flight.

mod contract;
mod loader;
mod memory;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::engine::Runtime;
use crate::events::{Event, Events};

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
        }
    }

    /// Reports every handler loaded, refused or removed to `events` (by default they are
    /// only logged).
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = events;
        self
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

    /// Loads every `*.wasm` in the directory, compiling on blocking threads in parallel.
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
        let loads: Vec<_> = paths
            .into_iter()
            .map(|path| self.spawn_load(path))
            .collect();
        for (path, load) in loads {
            changes.push(self.apply(&path, load.await));
        }
        Ok(changes)
    }

    fn spawn_load(
        &self,
        path: PathBuf,
    ) -> (
        PathBuf,
        tokio::task::JoinHandle<Result<LoadedHandler, LoadError>>,
    ) {
        let runtime = self.runtime.clone();
        let cache_dir = self.cache_dir.clone();
        let owned = path.clone();
        let task =
            tokio::task::spawn_blocking(move || runtime.load_handler(&owned, cache_dir.as_deref()));
        (path, task)
    }

    fn apply(
        &self,
        path: &Path,
        load: Result<Result<LoadedHandler, LoadError>, tokio::task::JoinError>,
    ) -> Change {
        let name = listed_name(path);
        match load {
            Ok(Ok(loaded)) => self.install(name, loaded),
            Ok(Err(error)) => self.refuse(name, &error),
            Err(panic) => self.refuse_message(name, format!("loading panicked: {panic}")),
        }
    }

    /// Brings the handler at `path` up to date with the file: load, replace or remove.
    pub async fn reload(&self, path: &Path) -> Change {
        let name = listed_name(path);
        if path.symlink_metadata().is_err() {
            return self.remove(name);
        }
        if let Err(error) = check_file(path) {
            return self.refuse(name, &error);
        }
        let (path, load) = self.spawn_load(path.to_owned());
        self.apply(&path, load.await)
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
