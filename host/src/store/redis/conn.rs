//! Where the Redis store lives and how it talks to it: the target (one server or a cluster,
//! the key namespace, the CA to trust for TLS), the multiplexed command connection, and the
//! reconnect and timeout settings both connection kinds share.
//!
//! Redis going away is an error (`StoreError::Backend`), never a panic: each connection
//! reconnects with backoff on the next call.

use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, TlsCertificates, Value};

use super::{DEFAULT_NAMESPACE, backend};
use crate::store::StoreResult;

/// How long connecting to a Redis node may take before the attempt fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one command may wait for its reply. Longer than any script should run; a dead
/// server is detected by this instead of hanging a worker.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reconnect attempts (exponential backoff from `RECONNECT_MIN_DELAY` up to
/// `RECONNECT_MAX_DELAY`) before a call fails with `StoreError::Backend`. The next call
/// starts reconnecting again, so a host rides out a Redis restart of any length.
const RECONNECT_ATTEMPTS: usize = 6;

/// A job command's connect and reply timeouts ([`Patience::FailFast`]): one connect
/// attempt, and a reply within this, so a stopped or unreachable server ends the command
/// with an error instead of holding a user's terminal through every reconnect attempt.
const FAIL_FAST_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const FAIL_FAST_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const RECONNECT_MIN_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

/// Where the Redis store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// One server or a cluster.
    pub endpoint: RedisEndpoint,
    /// Prefix of every key and of the wake channel, so several Kiln deployments (or test
    /// runs) can share one Redis without seeing each other's jobs.
    pub namespace: String,
    /// For `rediss://`: a PEM file of the certificate authority to trust instead of the
    /// system's roots (a private CA, a self-signed server).
    pub ca_file: Option<PathBuf>,
    /// How long connecting and each reply may take, and whether connecting is retried.
    pub patience: Patience,
}

/// How a connection to Redis waits for an unreachable server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Patience {
    /// A host's: connect within 5 s, each reply within 10 s, and reconnect with backoff
    /// (`RECONNECT_ATTEMPTS` per call), so it rides out a Redis restart.
    #[default]
    RideOut,
    /// A job command's: one connect attempt within 3 s (a cluster keeps its retries, which
    /// also follow redirections), each reply within 5 s.
    FailFast,
}

impl Patience {
    fn connect_timeout(self) -> Duration {
        match self {
            Patience::RideOut => CONNECT_TIMEOUT,
            Patience::FailFast => FAIL_FAST_CONNECT_TIMEOUT,
        }
    }

    fn response_timeout(self) -> Duration {
        match self {
            Patience::RideOut => RESPONSE_TIMEOUT,
            Patience::FailFast => FAIL_FAST_RESPONSE_TIMEOUT,
        }
    }

    fn reconnect_attempts(self) -> usize {
        match self {
            Patience::RideOut => RECONNECT_ATTEMPTS,
            Patience::FailFast => 0,
        }
    }
}

/// A Redis deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// One server: `redis://[user:pass@]host:port[/db]`, or `rediss://` for TLS.
    Server(String),
    /// Redis Cluster: URLs of some of its nodes; the rest are discovered.
    Cluster(Vec<String>),
}

impl RedisTarget {
    /// One server at `url`, with the default namespace.
    pub fn server(url: impl Into<String>) -> Self {
        RedisTarget {
            endpoint: RedisEndpoint::Server(url.into()),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            ca_file: None,
            patience: Patience::default(),
        }
    }

    /// A cluster reached through `nodes`, with the default namespace.
    pub fn cluster(nodes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        RedisTarget {
            endpoint: RedisEndpoint::Cluster(nodes.into_iter().map(Into::into).collect()),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            ca_file: None,
            patience: Patience::default(),
        }
    }

    /// The same target with another key namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// The same target with connections that wait as `patience` says.
    pub fn with_patience(mut self, patience: Patience) -> Self {
        self.patience = patience;
        self
    }

    /// The same target trusting the certificate authority in the PEM file `path` for TLS.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// The CA to trust for TLS, read from `ca_file`, if one is set.
    pub(super) fn certificates(&self) -> Result<Option<TlsCertificates>, redis::RedisError> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot read the CA file",
                format!("`{}`: {e}", path.display()),
            ))
        })?;
        Ok(Some(TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }

    /// A client for one server URL, trusting `ca_file` when set.
    pub(super) fn client(
        &self,
        url: impl IntoConnectionInfo,
    ) -> Result<redis::Client, redis::RedisError> {
        install_tls_provider();
        match self.certificates()? {
            Some(certificates) => redis::Client::build_with_tls(url, certificates),
            None => redis::Client::open(url),
        }
    }

    /// The node URLs, for error messages and the wake subscription.
    pub fn urls(&self) -> Vec<String> {
        match &self.endpoint {
            RedisEndpoint::Server(url) => vec![url.clone()],
            RedisEndpoint::Cluster(nodes) => nodes.clone(),
        }
    }
}

/// A multiplexed connection to a server or a cluster. Both kinds reconnect by themselves and
/// are cheap to clone; clones share the socket(s).
#[derive(Clone)]
pub(super) enum Conn {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Server(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Server(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Reconnect and timeout settings shared by the command and subscriber connections.
pub(super) fn manager_config(patience: Patience) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(patience.reconnect_attempts())
        .set_min_delay(RECONNECT_MIN_DELAY)
        .set_max_delay(RECONNECT_MAX_DELAY)
        .set_connection_timeout(Some(patience.connect_timeout()))
        .set_response_timeout(Some(patience.response_timeout()))
}

/// Makes ring the TLS provider of the process (for `rediss://`), once; a provider installed
/// before (by an embedding program) is kept.
fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

pub(super) async fn connect(target: &RedisTarget) -> StoreResult<Conn> {
    let context = || format!("connect to redis at {}", target.urls().join(", "));
    match &target.endpoint {
        RedisEndpoint::Server(url) => {
            let client = target.client(url.as_str()).map_err(backend(context()))?;
            let config = manager_config(target.patience);
            let manager = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(backend(context()))?;
            Ok(Conn::Server(manager))
        }
        RedisEndpoint::Cluster(nodes) => {
            install_tls_provider();
            let mut builder =
                redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str));
            if let Some(certificates) = target.certificates().map_err(backend(context()))? {
                builder = builder.certs(certificates);
            }
            // Retries also follow a cluster's redirections, so a job command keeps them.
            let patience = target.patience;
            let client = builder
                .retries(u32::try_from(RECONNECT_ATTEMPTS).unwrap_or(u32::MAX))
                .min_retry_wait(u64::try_from(RECONNECT_MIN_DELAY.as_millis()).unwrap_or(50))
                .max_retry_wait(u64::try_from(RECONNECT_MAX_DELAY.as_millis()).unwrap_or(2_000))
                .connection_timeout(patience.connect_timeout())
                .response_timeout(patience.response_timeout())
                .build()
                .map_err(backend(context()))?;
            let conn = client
                .get_async_connection()
                .await
                .map_err(backend(context()))?;
            Ok(Conn::Cluster(conn))
        }
    }
}
