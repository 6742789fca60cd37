//! The handler registry: handler name -> the loaded, type-checked version that serves it.
//!
//! Loading reads a `.wasm`, hashes it, and either maps a precompiled artifact from the cache
//! or compiles the component and writes the artifact (temp file, then rename: a cached file
//! may be memory-mapped by a running host and is never rewritten in place). The component is
//! then pre-instantiated against the linker, which refuses anything that is not a
//! `kiln:handler` component. Compilation runs on blocking threads, never the async ones.
//!
//! Jobs hold an `Arc<LoadedHandler>`: replacing a handler never disturbs a job in flight.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;

use crate::bindings::HandlerPre;
use crate::engine::Runtime;
use crate::host_api::JobCtx;

/// Where a loaded handler's machine code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadSource {
    /// Compiled from the `.wasm` now.
    Compiled,
    /// Mapped from a precompiled artifact in the cache.
    Cache,
}

/// One version of one handler, ready to instantiate.
pub struct LoadedHandler {
    /// The handler's name: the file stem of its `.wasm`.
    pub name: String,
    /// Hex SHA-256 of the `.wasm` bytes; recorded with every attempt this version runs.
    pub digest: String,
    /// Size of the `.wasm` in bytes.
    pub size: u64,
    pub path: PathBuf,
    /// Time to compile or to load from the cache, and type-check.
    pub took: Duration,
    pub source: LoadSource,
    pub(crate) pre: HandlerPre<JobCtx>,
}

impl fmt::Debug for LoadedHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedHandler")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Why a file could not become a handler. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("failed to read handler `{file}`")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("handler `{file}` is not a valid WebAssembly component: {reason}")]
    Invalid { file: String, reason: String },
    #[error("handler `{file}` does not match the kiln:handler world: {reason}")]
    Contract { file: String, reason: String },
    #[error("handler `{file}` has no usable name (expected NAME.wasm)")]
    Name { file: String },
}

impl LoadError {
    /// The file the error is about, as shown to users.
    pub fn file(&self) -> &str {
        match self {
            LoadError::Read { file, .. }
            | LoadError::Invalid { file, .. }
            | LoadError::Contract { file, .. }
            | LoadError::Name { file } => file,
        }
    }
}

/// The handler name a path serves: its file stem, if it is a `.wasm` file.
pub fn handler_name(path: &Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    let valid = !stem.is_empty()
        && !stem.starts_with('.')
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    valid.then(|| stem.to_owned())
}

fn display_file(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}

/// Hex SHA-256 of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Runtime {
    /// Reads, compiles (or loads from `cache_dir`) and type-checks the handler at `path`.
    /// Blocking: call it from a blocking thread.
    pub fn load_handler(
        &self,
        path: &Path,
        cache_dir: Option<&Path>,
    ) -> Result<LoadedHandler, LoadError> {
        let started = Instant::now();
        let file = display_file(path);
        let name = handler_name(path).ok_or_else(|| LoadError::Name { file: file.clone() })?;
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            file: file.clone(),
            source,
        })?;
        let digest = digest(&bytes);
        let (component, source) = self.component(&bytes, &digest, cache_dir, &file)?;
        let pre = self.pre_instantiate(&component, &file)?;
        Ok(LoadedHandler {
            name,
            digest,
            size: bytes.len() as u64,
            path: path.to_owned(),
            took: started.elapsed(),
            source,
            pre,
        })
    }

    /// Type-checks a compiled component against the handler world.
    pub(crate) fn pre_instantiate(
        &self,
        component: &Component,
        file: &str,
    ) -> Result<HandlerPre<JobCtx>, LoadError> {
        let contract = |error: wasmtime::Error| LoadError::Contract {
            file: file.to_owned(),
            reason: format!("{error:#}"),
        };
        let pre = self.linker.instantiate_pre(component).map_err(contract)?;
        HandlerPre::new(pre).map_err(contract)
    }

    /// Compiles `bytes`, without the cache; used by `kiln check`.
    pub fn compile(&self, bytes: &[u8], file: &str) -> Result<Component, LoadError> {
        Component::new(&self.engine, bytes).map_err(|error| LoadError::Invalid {
            file: file.to_owned(),
            reason: format!("{error:#}"),
        })
    }

    fn component(
        &self,
        bytes: &[u8],
        digest: &str,
        cache_dir: Option<&Path>,
        file: &str,
    ) -> Result<(Component, LoadSource), LoadError> {
        let Some(cache_dir) = cache_dir else {
            return Ok((self.compile(bytes, file)?, LoadSource::Compiled));
        };
        let artifact = cache_dir.join(format!("{digest}-{}.cwasm", self.settings_hash));
        if artifact.exists() {
            match self.deserialize_artifact(&artifact) {
                Ok(component) => return Ok((component, LoadSource::Cache)),
                Err(error) => tracing::warn!(
                    artifact = %artifact.display(),
                    "ignoring unusable cached artifact: {error:#}"
                ),
            }
        }
        let component = self.compile(bytes, file)?;
        if let Err(error) = write_artifact(&component, cache_dir, &artifact) {
            tracing::warn!(
                artifact = %artifact.display(),
                "failed to cache compiled handler `{file}`: {error:#}"
            );
        }
        Ok((component, LoadSource::Compiled))
    }

    /// Maps a precompiled artifact written by this host.
    #[allow(unsafe_code)]
    fn deserialize_artifact(&self, artifact: &Path) -> wasmtime::Result<Component> {
        // SAFETY: wasmtime requires that the file was produced by `Component::serialize` of a
        // compatible engine and is not modified while mapped. Kiln only reads artifacts from
        // its own cache directory (which must be writable by the host's user alone), names
        // them by content digest and engine settings, writes them under a temporary name and
        // renames them into place, and never rewrites one in place.
        unsafe { Component::deserialize_file(&self.engine, artifact) }
    }
}

fn write_artifact(component: &Component, dir: &Path, artifact: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile_in(dir)?;
    temp.1.write_all(&bytes)?;
    temp.1.sync_all()?;
    std::fs::rename(&temp.0, artifact)?;
    Ok(())
}

/// A new file in `dir` with a unique name, for writing before a rename.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let path = dir.join(format!(".tmp-{}", uuid::Uuid::now_v7()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

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
    runtime: Arc<Runtime>,
    dir: PathBuf,
    cache_dir: Option<PathBuf>,
    /// Std lock: held only to clone an `Arc` or swap one, never across an `.await`.
    handlers: RwLock<BTreeMap<String, Arc<LoadedHandler>>>,
    errors: RwLock<BTreeMap<String, String>>,
}

impl Registry {
    pub fn new(runtime: Arc<Runtime>, dir: PathBuf, cache_dir: Option<PathBuf>) -> Self {
        Registry {
            runtime,
            dir,
            cache_dir,
            handlers: RwLock::default(),
            errors: RwLock::default(),
        }
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
    pub async fn load_all(&self) -> std::io::Result<Vec<Change>> {
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if handler_name(&path).is_some() && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        let loads: Vec<_> = paths
            .into_iter()
            .map(|path| self.spawn_load(path))
            .collect();
        let mut changes = Vec::with_capacity(loads.len());
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
        let name = handler_name(path).unwrap_or_else(|| display_file(path));
        match load {
            Ok(Ok(loaded)) => self.install(name, loaded),
            Ok(Err(error)) => self.refuse(name, &error),
            Err(panic) => self.refuse_message(name, format!("loading panicked: {panic}")),
        }
    }

    /// Brings the handler at `path` up to date with the file: load, replace or remove.
    pub async fn reload(&self, path: &Path) -> Change {
        let Some(name) = handler_name(path) else {
            return Change::Refused {
                name: display_file(path),
                error: LoadError::Name {
                    file: display_file(path),
                }
                .to_string(),
            };
        };
        if !path.exists() {
            return self.remove(name);
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
        tracing::info!(
            handler = %name, %digest, source = ?loaded.source, took = ?loaded.took,
            "handler loaded"
        );
        let mut handlers = self
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match handlers.insert(name.clone(), Arc::new(loaded)) {
            Some(_) => Change::Replaced { name, digest },
            None => Change::Added { name, digest },
        }
    }

    fn refuse(&self, name: String, error: &LoadError) -> Change {
        self.refuse_message(name, describe(error))
    }

    fn refuse_message(&self, name: String, message: String) -> Change {
        if self.get(&name).is_some() {
            tracing::error!(handler = %name, "{message}; the previous version keeps serving");
        } else {
            tracing::error!(handler = %name, "{message}");
        }
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
            tracing::info!(handler = %name, "handler removed");
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
