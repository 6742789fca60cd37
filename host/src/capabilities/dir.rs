//! The `dir` grant: one host directory a handler may read, `grants = { dir = "/srv/assets" }`,
//! preopened read-only at the same path inside the guest. Nothing outside it is reachable:
//! WASI resolves every path against a preopen and refuses `..` escapes and symlinks out.

use std::path::PathBuf;

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

/// The directory, if one is granted (relative paths were resolved against the config file).
pub type DirGrant = Option<PathBuf>;

/// Preopens the granted directory read-only; fails if it cannot be opened.
pub(crate) fn apply(grant: &DirGrant, builder: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
    if let Some(dir) = grant {
        let guest_path = dir.to_string_lossy();
        builder.preopened_dir(dir, &*guest_path, FsPerms::ReadOnly)?;
    }
    Ok(())
}
