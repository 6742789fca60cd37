//! Turning one `.wasm` file into a [`LoadedHandler`]: reading it, hashing it, compiling it or
//! mapping its precompiled artifact from the cache, and pre-instantiating it against the
//! linker, which refuses anything that is not a `kiln:handler` component.
//!
//! Rules: loading blocks (file I/O, Cranelift), so it runs on blocking threads, never the
//! async ones. An artifact is written under a temporary name and renamed into place: a cached
//! file may be memory-mapped by a running host and is never rewritten in place. A cache that
//! cannot be read or written only costs a compile; it never refuses a handler.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;

use super::compiler::{self, CompileFailure};
use super::{contract, memory};
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
    #[error("skipped handler file `{file}`: {reason}")]
    Name { file: String, reason: String },
    #[error(
        "handler `{file}` needs {} of linear memory before it runs, more than the memory cap \
         of {} (`max_memory`)",
        mib(*needs),
        mib(*cap)
    )]
    TooMuchMemory { file: String, needs: u64, cap: u64 },
    #[error("handler `{file}` was refused: {reason}")]
    OverBudget { file: String, reason: String },
    #[error("skipped handler file `{file}`: {reason}")]
    NotAFile { file: String, reason: String },
}

/// Longest handler name, in bytes: it becomes part of store keys and log lines.
pub const MAX_NAME_LEN: usize = 100;

/// Whether `path` is meant as a handler: its extension is `.wasm`. Other files in the
/// handlers directory (notes, editors' swap files, half-written `.tmp` copies) are ignored.
pub fn is_handler_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

/// The handler name a path serves: its file stem, if it is a `.wasm` file with a valid name.
pub fn handler_name(path: &Path) -> Option<String> {
    if !is_handler_file(path) {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    check_name(stem).is_ok().then(|| stem.to_owned())
}

/// Why `name` cannot be a handler name, if it cannot. The rule: 1 to [`MAX_NAME_LEN`] ASCII
/// letters, digits, `-`, `_` and `.`, starting with a letter or digit, with no `..`.
pub fn check_name(name: &str) -> Result<(), String> {
    let problem = if name.is_empty() {
        "the name is empty".to_owned()
    } else if name.len() > MAX_NAME_LEN {
        format!("the name is longer than {MAX_NAME_LEN} bytes")
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        format!("{c:?} is not allowed")
    } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        "it must start with a letter or digit".to_owned()
    } else if name.contains("..") {
        "`..` is not allowed".to_owned()
    } else {
        return Ok(());
    };
    Err(format!(
        "`{name}` cannot be a handler name: {problem} (names are ASCII letters, digits, `-`, \
         `_` and `.`, start with a letter or digit, and have no `..`)"
    ))
}

/// The handler name `path` would serve, or why it cannot serve one.
pub fn name_of(path: &Path) -> Result<String, LoadError> {
    let file = display_file(path);
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !is_handler_file(path) {
        return Err(LoadError::Name {
            file,
            reason: "handler files end in `.wasm`".into(),
        });
    }
    check_name(&stem).map_err(|reason| LoadError::Name { file, reason })?;
    Ok(stem)
}

/// The handler name `path` serves, after checking that it is one and that it names a
/// regular file (following links): a directory called `x.wasm`, a dangling link or a link
/// loop is refused with the reason, not skipped.
pub fn check_file(path: &Path) -> Result<String, LoadError> {
    let name = name_of(path)?;
    let not_a_file = |reason: String| LoadError::NotAFile {
        file: display_file(path),
        reason,
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(name),
        Ok(meta) if meta.is_dir() => Err(not_a_file("it is a directory, not a file".into())),
        Ok(_) => Err(not_a_file("it is not a regular file".into())),
        Err(error) if path.is_symlink() => Err(not_a_file(format!(
            "it is a symbolic link whose target cannot be opened: {error}"
        ))),
        Err(error) => Err(not_a_file(format!("it cannot be opened: {error}"))),
    }
}

/// The name a refusal of `path` is listed under: its handler name, else its file name.
pub fn listed_name(path: &Path) -> String {
    handler_name(path).unwrap_or_else(|| display_file(path))
}

/// `bytes` as MiB with up to one decimal, for messages.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20)).replace(".0 MiB", " MiB")
}

/// The file as errors and logs name it: its file name, else the whole path.
pub(super) fn display_file(path: &Path) -> String {
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
        let name = name_of(path)?;
        self.fits_size(path, &file)?;
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            file: file.clone(),
            source,
        })?;
        let digest = digest(&bytes);
        self.fits_memory(&bytes, &file)?;
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
            reason: contract::explain(component, &self.engine)
                .unwrap_or_else(|| format!("{error:#}")),
        };
        let pre = self.linker.instantiate_pre(component).map_err(contract)?;
        HandlerPre::new(pre).map_err(contract)
    }

    /// Refuses a component whose initial memory is over this runtime's memory cap: it could
    /// only fail at every instantiation.
    pub fn fits_memory(&self, bytes: &[u8], file: &str) -> Result<(), LoadError> {
        match memory::initial_memory(bytes) {
            Some(needs) if needs > self.max_memory => Err(LoadError::TooMuchMemory {
                file: file.to_owned(),
                needs,
                cap: self.max_memory,
            }),
            _ => Ok(()),
        }
    }

    /// Refuses a file over the compile budget's size cap before reading it.
    fn fits_size(&self, path: &Path, file: &str) -> Result<(), LoadError> {
        let (Some(budget), Ok(meta)) = (&self.compile_budget, std::fs::metadata(path)) else {
            return Ok(());
        };
        if meta.len() > budget.max_size {
            return Err(LoadError::OverBudget {
                file: file.to_owned(),
                reason: format!(
                    "it is {}, over the {} allowed (`host.max_handler_size`)",
                    mib(meta.len()),
                    mib(budget.max_size)
                ),
            });
        }
        Ok(())
    }

    /// Compiles `bytes`, without the cache: in a budgeted child process when this runtime
    /// has a compile budget, else in this process.
    pub fn compile(&self, bytes: &[u8], file: &str) -> Result<Component, LoadError> {
        let Some(budget) = &self.compile_budget else {
            return Component::new(&self.engine, bytes).map_err(|error| LoadError::Invalid {
                file: file.to_owned(),
                reason: format!("{error:#}"),
            });
        };
        if bytes.len() as u64 > budget.max_size {
            return Err(LoadError::OverBudget {
                file: file.to_owned(),
                reason: format!(
                    "it is over {} (`host.max_handler_size`)",
                    mib(budget.max_size)
                ),
            });
        }
        let artifact =
            compiler::compile(budget, &self.settings, bytes).map_err(|failure| match failure {
                CompileFailure::Invalid(reason) => LoadError::Invalid {
                    file: file.to_owned(),
                    reason,
                },
                CompileFailure::OverBudget(reason) => LoadError::OverBudget {
                    file: file.to_owned(),
                    reason,
                },
            })?;
        self.deserialize_bytes(&artifact)
            .map_err(|error| LoadError::Invalid {
                file: file.to_owned(),
                reason: format!("the compiler's artifact is unusable: {error:#}"),
            })
    }

    /// The compiled component for `bytes`: from the cache when it holds a usable artifact,
    /// else compiled now (and cached, if there is a cache).
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
        let refused = self.refusal_file(cache_dir, digest);
        if let Some(refused) = &refused
            && let Ok(reason) = std::fs::read_to_string(refused)
        {
            return Err(LoadError::OverBudget {
                file: file.to_owned(),
                reason: format!(
                    "{reason} (remembered from an earlier try; delete `{}` to try again)",
                    refused.display()
                ),
            });
        }
        let component = match self.compile(bytes, file) {
            Err(LoadError::OverBudget { file, reason }) => {
                if let Some(refused) = &refused {
                    remember_refusal(cache_dir, refused, &reason);
                }
                return Err(LoadError::OverBudget { file, reason });
            }
            other => other?,
        };
        if let Err(error) = write_artifact(&component, cache_dir, &artifact) {
            tracing::warn!(
                artifact = %artifact.display(),
                "failed to cache compiled handler `{file}`: {error:#}"
            );
        }
        Ok((component, LoadSource::Compiled))
    }

    /// Where a refusal over the compile budget is remembered: named by the file's digest,
    /// the engine settings and the budget, so a larger budget tries again.
    fn refusal_file(&self, cache_dir: &Path, digest: &str) -> Option<PathBuf> {
        let budget = self.compile_budget.as_ref()?;
        Some(cache_dir.join(format!(
            "{digest}-{}-{}s-{}.refused",
            self.settings_hash,
            budget.time.as_secs(),
            budget.memory
        )))
    }

    /// An artifact the budgeted compiler just returned.
    #[allow(unsafe_code)]
    fn deserialize_bytes(&self, artifact: &[u8]) -> wasmtime::Result<Component> {
        // SAFETY: the bytes come from `Component::serialize` in a `kiln compile-handler`
        // child this host started, with an engine built from the same settings; wasmtime
        // checks that the settings match and copies the bytes before using them.
        unsafe { Component::deserialize(&self.engine, artifact) }
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

/// Writes `component`'s artifact to `artifact` in `dir`: a temporary file, synced, renamed.
fn write_artifact(component: &Component, dir: &Path, artifact: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile_in(dir)?;
    temp.1.write_all(&bytes)?;
    temp.1.sync_all()?;
    std::fs::rename(&temp.0, artifact)?;
    Ok(())
}

/// Writes why a file was over budget, so a restart does not compile it again.
fn remember_refusal(dir: &Path, refused: &Path, reason: &str) {
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| tempfile_in(dir))
        .and_then(|(temp, mut f)| {
            f.write_all(reason.as_bytes())?;
            std::fs::rename(&temp, refused)
        });
    if let Err(error) = written {
        tracing::warn!(file = %refused.display(), "failed to remember a refused handler: {error}");
    }
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
