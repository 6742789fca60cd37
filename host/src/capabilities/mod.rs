//! What a handler may be granted beyond the deny-by-default sandbox: one file per capability,
//! each holding its grant's config type and checks, how it is applied to an attempt's sandbox,
//! its per-attempt state and limits, and its tests. Adding a capability is adding a file here
//! and a field to [`Grants`].
//!
//! - `wasi`: the WASI base every attempt gets, which denies everything by default.
//! - `env`: environment variables, values from the config only.
//! - `dir`: one host directory, read-only.
//! - `http`: outbound HTTP(S) to granted origins, through `wasi:http`.
//! - `tcp`: outbound TCP to granted endpoints, through `wasi:sockets`.
//! - `net`: the host and address rules `http` and `tcp` share.
//!
//! A handler's grants are its queue's plus its own (`Config::job_settings`, [`Grants::add`]);
//! the sandbox builds each attempt's WASI context from them with [`wasi_ctx`].

pub mod dir;
pub mod env;
pub mod http;
pub mod net;
pub mod tcp;
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
    /// Origins the handler may send HTTP requests to (see [`http`]).
    pub http: http::HttpGrant,
    /// Endpoints the handler may open TCP connections to (see [`tcp`]).
    pub tcp: tcp::TcpGrant,
}

impl Grants {
    /// Adds `other` (a handler's grants) to these (its queue's): variables are merged, the
    /// handler's value winning for the same name; origins, CA files and endpoints add up; the
    /// handler's directory, if it names one, replaces the queue's (one directory is mounted).
    pub fn add(&mut self, other: &Grants) {
        self.env
            .extend(other.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if other.dir.is_some() {
            self.dir = other.dir.clone();
        }
        self.http.add(&other.http);
        self.tcp.extend(other.tcp.iter().cloned());
    }
}

/// The WASI context of one attempt: the deny-all base with each grant applied.
pub(crate) fn wasi_ctx(
    grants: &Grants,
    journal: &Arc<Journal>,
    tcp: &Arc<tcp::TcpState>,
) -> wasmtime::Result<WasiCtx> {
    let mut builder = wasi::base(journal);
    env::apply(&grants.env, &mut builder);
    dir::apply(&grants.dir, &mut builder)?;
    tcp::apply(tcp, &mut builder);
    Ok(builder.build())
}
