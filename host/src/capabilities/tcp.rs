//! The `tcp` grant: outbound TCP connections through `wasi:sockets` to the endpoints a handler
//! is granted (`grants = { tcp = ["smtp.example.com:587", "127.0.0.1:5432"] }`), so it can
//! speak SMTP or a database protocol. Nothing else opens:
//! - TCP is enabled only for a handler with a `tcp` grant, and every connect is checked by
//!   the WASI context's `socket_addr_check` against the granted endpoints;
//! - a guest may look up only the names it is granted: `resolve-addresses` is replaced by
//!   [`add_to_linker`] with one that refuses every other name (no lookups for exfiltration
//!   through DNS), resolves a granted name itself and opens the *public* addresses it found,
//!   on the granted port only (`net::is_internal`: a granted name never opens an internal
//!   address, only an address written in the grant does);
//! - binding (other than the implicit bind of a connect), listening and accepting stay
//!   denied, and UDP stays off for every handler.
//!
//! Connections made and refused are counted in [`TcpUsage`] and recorded with the attempt.
//! The bytes of a connection are not: wasmtime-wasi owns its streams and offers no hook.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use wasmtime::component::{Linker, Resource, ResourceAny};
use wasmtime::{AsContextMut, StoreContextMut};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::Network;
use wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::Host as _;
use wasmtime_wasi::p2::bindings::sockets::network::ErrorCode;
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsView};

use super::net::{self, Host, Requester};
use crate::host_api::JobCtx;

/// The interface whose `resolve-addresses` Kiln replaces; the version wasmtime-wasi 48 links.
const IP_NAME_LOOKUP: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// One granted endpoint, `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    host: Host,
    port: u16,
}

/// The endpoints a handler may connect to; empty denies TCP altogether.
pub type TcpGrant = Vec<Endpoint>;

/// What one attempt did over TCP; recorded with the attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpUsage {
    /// Connections to granted endpoints.
    pub connections: u64,
    /// Connections and name lookups refused.
    pub denied: u64,
}

/// Parses one `grants.tcp` entry, `host:port` (`[v6]:port` for IPv6).
pub fn check(entry: &str) -> Result<Endpoint, String> {
    let (host, port) = net::split_host_port(entry)?;
    let port = port.ok_or_else(|| format!("`{entry}` names no port; write host:port"))?;
    let host =
        Host::parse(host).ok_or_else(|| format!("`{host}` is not a host name or address"))?;
    Ok(Endpoint {
        host,
        port: net::parse_port(port)?,
    })
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The TCP state of one attempt, shared by its WASI context's address check and its store.
pub(crate) struct TcpState {
    grant: TcpGrant,
    /// Public addresses found by looking up granted names, each with its granted port.
    resolved: Mutex<HashSet<SocketAddr>>,
    connections: AtomicU64,
    denied: AtomicU64,
    who: Requester,
}

impl TcpState {
    pub(crate) fn new(grant: &TcpGrant, who: Requester) -> Arc<TcpState> {
        Arc::new(TcpState {
            grant: grant.clone(),
            resolved: Mutex::new(HashSet::new()),
            connections: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            who,
        })
    }

    /// What the attempt did, or `None` if it tried nothing.
    pub(crate) fn usage(&self) -> Option<TcpUsage> {
        let usage = TcpUsage {
            connections: self.connections.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
        };
        (usage != TcpUsage::default()).then_some(usage)
    }

    fn resolved(&self) -> std::sync::MutexGuard<'_, HashSet<SocketAddr>> {
        self.resolved.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a connect to `addr` is granted, counting (and logging a refusal of) it.
    fn connect(&self, addr: SocketAddr) -> bool {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let literal = self
            .grant
            .iter()
            .any(|e| e.host == Host::Ip(addr.ip()) && e.port == addr.port());
        let allowed = literal || self.resolved().contains(&addr);
        if allowed {
            self.connections.fetch_add(1, Ordering::Relaxed);
        } else {
            self.deny(&addr, "endpoint not granted");
        }
        allowed
    }

    fn deny(&self, what: &dyn fmt::Display, reason: &str) {
        self.denied.fetch_add(1, Ordering::Relaxed);
        let (job, handler) = (&*self.who.job, &*self.who.handler);
        tracing::warn!(job, handler, target = %what, "tcp denied: {reason}");
    }

    /// The granted ports of `name`, empty if it is not granted.
    fn ports_of(&self, name: &Host) -> Vec<u16> {
        self.grant
            .iter()
            .filter(|e| e.host == *name)
            .map(|e| e.port)
            .collect()
    }

    /// Looks up granted `name` and opens its public addresses on its granted ports.
    async fn open_name(&self, name: &str, ports: &[u16]) {
        let Ok(found) = tokio::net::lookup_host((name, 0)).await else {
            return;
        };
        let ips: Vec<IpAddr> = found.map(|a| a.ip().to_canonical()).collect();
        let (public, refused) = net::public_only(ips.iter().map(|ip| SocketAddr::new(*ip, 0)));
        if refused {
            self.deny(&name, "granted name resolves to an internal address");
        }
        let mut resolved = self.resolved();
        for addr in public {
            resolved.extend(ports.iter().map(|port| SocketAddr::new(addr.ip(), *port)));
        }
    }
}

/// Opens TCP for a handler with a `tcp` grant; UDP and name lookup stay as the base left them
/// unless granted (name lookup is opened here, and narrowed to granted names by
/// [`add_to_linker`]).
pub(crate) fn apply(state: &Arc<TcpState>, builder: &mut WasiCtxBuilder) {
    if state.grant.is_empty() {
        return;
    }
    let names = state.grant.iter().any(|e| matches!(e.host, Host::Name(_)));
    builder.allow_tcp(true).allow_ip_name_lookup(names);
    let state = state.clone();
    builder.socket_addr_check(move |addr, usage| {
        let allowed = match usage {
            // The check wasmtime makes before the OS binds a connecting socket implicitly.
            SocketAddrUse::TcpBind => addr.ip().is_unspecified() && addr.port() == 0,
            SocketAddrUse::TcpConnect => state.connect(addr),
            _ => false,
        };
        Box::pin(async move { allowed })
    });
}

/// Replaces `resolve-addresses` with one that looks up granted names only. Call after
/// wasmtime-wasi's own interfaces are linked.
pub(crate) fn add_to_linker(linker: &mut Linker<JobCtx>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let linked = linker
        .instance(IP_NAME_LOOKUP)?
        .func_wrap_async("resolve-addresses", resolve_addresses);
    linker.allow_shadowing(false);
    linked
}

type Resolved = (Result<ResourceAny, ErrorCode>,);

fn resolve_addresses(
    mut store: StoreContextMut<'_, JobCtx>,
    (network, name): (Resource<Network>, String),
) -> Box<dyn Future<Output = wasmtime::Result<Resolved>> + Send + '_> {
    Box::new(async move {
        let state = store.data().tcp.clone();
        let host = Host::parse(name.trim_end_matches('.'));
        let ports = host.as_ref().map(|h| state.ports_of(h)).unwrap_or_default();
        if ports.is_empty() {
            state.deny(&name, "name lookup not granted");
            return Ok((Err(ErrorCode::AccessDenied),));
        }
        if let Some(Host::Name(granted)) = &host {
            state.open_name(granted, &ports).await;
        }
        let stream = store.data_mut().sockets().resolve_addresses(network, name);
        match stream {
            Ok(stream) => Ok((Ok(stream.try_into_resource_any(store.as_context_mut())?),)),
            Err(error) => Ok((Err(error.downcast()?),)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Requester {
        Requester {
            job: "j".into(),
            handler: "h".into(),
        }
    }

    #[test]
    fn endpoints_need_a_host_and_a_port() {
        assert!(check("smtp.example.com:587").is_ok());
        assert!(check("[::1]:5432").is_ok());
        for entry in [
            "smtp.example.com",
            "smtp.example.com:0",
            ":25",
            "*.example.com:25",
        ] {
            assert!(check(entry).is_err(), "{entry}");
        }
    }

    #[test]
    fn only_granted_addresses_and_ports_connect() {
        let grant = vec![
            check("127.0.0.1:5432").unwrap(),
            check("db.example:5432").unwrap(),
        ];
        let state = TcpState::new(&grant, who());
        assert!(state.connect("127.0.0.1:5432".parse().unwrap()));
        assert!(state.connect("[::ffff:127.0.0.1]:5432".parse().unwrap()));
        assert!(!state.connect("127.0.0.1:5433".parse().unwrap()));
        assert!(!state.connect("10.0.0.1:5432".parse().unwrap()));
        assert_eq!(state.ports_of(&Host::parse("DB.example").unwrap()), [5432]);
        assert!(
            state
                .ports_of(&Host::parse("other.example").unwrap())
                .is_empty()
        );
        assert_eq!(
            state.usage(),
            Some(TcpUsage {
                connections: 2,
                denied: 2
            })
        );
    }
}
