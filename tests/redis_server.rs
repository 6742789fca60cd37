//! Real `redis-server` processes for the Redis store tests: one server, or a three-master
//! Redis Cluster, on free ports of 127.0.0.1 in a temp dir, each stopped by its pid on drop.
//!
//! A missing `redis-server` fails the test loudly (in CI and locally alike): tests that need
//! Redis never pass by skipping. `tests/run.sh` installs it.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a starting server or a forming cluster may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Fails the test unless `redis-server` and `redis-cli` can run.
fn require_redis() {
    for tool in ["redis-server", "redis-cli"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        let ci = if std::env::var_os("CI").is_some() {
            " (CI is set: the Redis tests must run)"
        } else {
            ""
        };
        assert!(
            found,
            "`{tool}` is not installed{ci}; install redis (tests/run.sh does: apt-get install redis-server)"
        );
    }
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

/// Runs `redis-cli -p port args...` and returns its output.
fn cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Retries `ready` until it holds, failing the test after `START_TIMEOUT`. Waiting for a
/// process to come up is the one place these tests poll.
fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + START_TIMEOUT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One `redis-server` process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// Keeps the working directory (AOF, cluster config) alive until drop.
    dir: TempDir,
    /// Extra arguments, reused by `restart`.
    args: Vec<String>,
    /// The TLS port, for a server started by `tls`.
    tls_port: Option<u16>,
}

impl RedisServer {
    /// A server without persistence.
    pub fn start() -> Self {
        Self::with_args(&["--save", "", "--appendonly", "no"])
    }

    /// A server that fsyncs its append-only file on every write, so a restart keeps
    /// everything it acknowledged.
    pub fn persistent() -> Self {
        Self::with_args(&[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
    }

    fn with_args(args: &[&str]) -> Self {
        require_redis();
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir for redis"),
            args: args.iter().map(|arg| (*arg).to_owned()).collect(),
            tls_port: None,
        };
        server.spawn();
        server
    }

    /// A server without persistence that also serves TLS on a second port, with a
    /// certificate for 127.0.0.1 signed by a certificate authority made for it (`ca_file`).
    pub fn tls() -> Self {
        require_redis();
        let dir = tempfile::tempdir().expect("temp dir for redis");
        crate::util::make_certificates(dir.path());
        let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let tls_port = free_port();
        let args = [
            ("--save", String::new()),
            ("--appendonly", "no".into()),
            ("--tls-port", tls_port.to_string()),
            ("--tls-cert-file", file("server.crt")),
            ("--tls-key-file", file("server.key")),
            ("--tls-ca-cert-file", file("ca.crt")),
            ("--tls-auth-clients", "no".into()),
        ];
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir,
            args: args
                .into_iter()
                .flat_map(|(k, v)| [k.to_owned(), v])
                .collect(),
            tls_port: Some(tls_port),
        };
        server.spawn();
        server
    }

    /// `rediss://127.0.0.1:TLS_PORT`, for a server started by `tls`.
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with RedisServer::tls");
        format!("rediss://127.0.0.1:{port}")
    }

    /// The PEM file of the certificate authority that signed a `tls` server's certificate.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--dir"])
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let port = self.port;
        wait_until(&format!("redis-server on port {port}"), || {
            cli(port, &["PING"]).is_some_and(|reply| reply.trim() == "PONG")
        });
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the process (SIGKILL, like a crash or a lost machine) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `kill -SIGNAL` to the process, by pid.
    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("the server runs");
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Stops the process where it is (SIGSTOP): its sockets stay open and accept
    /// connections, but nothing answers, as with a server stalled by swapping or a debugger.
    pub fn stall(&self) {
        self.signal("STOP");
    }

    /// Lets a stalled process run again (SIGCONT); it answers what was sent meanwhile.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Starts the server again on the same port and directory (after `kill`).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs a command with `redis-cli` against this server.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args).unwrap_or_else(|| panic!("redis-cli {args:?} failed"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three masters (no replicas) forming a Redis Cluster.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, creates the cluster and waits until every node
    /// reports `cluster_state:ok`.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let bus = free_port().to_string();
                RedisServer::with_args(&[
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    "--cluster-port",
                    &bus,
                ])
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running redis-cli --cluster create");
        assert!(status.success(), "redis-cli --cluster create failed");
        for node in &nodes {
            let port = node.port();
            wait_until(&format!("cluster node {port} to report ok"), || {
                cli(port, &["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            });
        }
        RedisCluster { nodes }
    }

    /// The node URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// How many keys each node holds.
    pub fn key_counts(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|node| {
                node.cli(&["DBSIZE"])
                    .trim()
                    .parse()
                    .expect("DBSIZE is a number")
            })
            .collect()
    }
}
