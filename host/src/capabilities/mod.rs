//! What a handler may be granted beyond the deny-by-default sandbox: one file per capability,
//! each holding its grant's config type and checks, how it is applied to an attempt's sandbox,
//! and its tests. Adding a capability is adding a file here and a field to [`Grants`].
//!
//! - `wasi`: the WASI base every attempt gets, which denies everything by default.
//! - `env`: environment variables, values from the config only.
//! - `dir`: one host directory, read-only.
//!
//! A handler's grants are its queue's plus its own (`Config::job_settings`); the sandbox
//! builds each attempt's WASI context from them with [`wasi_ctx`].

pub mod dir;
pub mod env;
pub mod wasi;

use std::sync::Arc;

use wasmtime_wasi::WasiCtx;

use crate::host_api::Journal;

/// Everything one handler is granted. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Environment variables the handler sees (see [`env`]).
    pub env: env::EnvGrant,
    /// A host directory the handler may read (see [`dir`]).
    pub dir: dir::DirGrant,
}

/// The WASI context of one attempt: the deny-all base with each grant applied.
pub(crate) fn wasi_ctx(grants: &Grants, journal: &Arc<Journal>) -> wasmtime::Result<WasiCtx> {
    let mut builder = wasi::base(journal);
    env::apply(&grants.env, &mut builder);
    dir::apply(&grants.dir, &mut builder)?;
    Ok(builder.build())
}
