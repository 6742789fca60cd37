//! Servers for the network tests, in-process on free ports of 127.0.0.1: a small HTTP/1.1
//! server (plain or TLS) whose answer to each request a test chooses, and a TCP echo server.
//! Each counts the connections it saw and how many were open at once, and stops when dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The most request-head bytes read; the tests' requests are small.
const MAX_HEAD: usize = 16 << 10;

/// What the server received: the request line's target and the headers, lowercased names.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How the server answers one request.
pub enum Reply {
    /// This status, extra headers and body.
    Fixed {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Never answers; keeps the connection open.
    Never,
    /// Status 200 with a body of `bytes` zeros, generated as it is written.
    Zeros { bytes: u64 },
    /// Waits this long, then answers 200 `ok`.
    After(Duration),
}

impl Reply {
    pub fn status(status: u16, body: &str) -> Reply {
        Reply::Fixed {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }
}

type Behaviour = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// Counters shared with the server's tasks.
#[derive(Default)]
pub struct Counts {
    /// Connections accepted.
    pub connections: AtomicUsize,
    open: AtomicUsize,
    /// The most connections open at once.
    pub most_open: AtomicUsize,
    /// Every request received, in order.
    pub seen: Mutex<Vec<Seen>>,
}

/// A running server; stopped on drop.
pub struct Server {
    pub port: u16,
    pub counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Plain HTTP, answering each request with `behaviour`.
    pub async fn http(behaviour: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
        Self::start(Arc::new(behaviour), None).await
    }

    /// HTTPS with the certificate for 127.0.0.1 in `dir` (see `util::make_certificates`).
    pub async fn https(
        dir: &Path,
        behaviour: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> Server {
        let certs = CertificateDer::pem_file_iter(dir.join("server.crt"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        Self::start(
            Arc::new(behaviour),
            Some(TlsAcceptor::from(Arc::new(config))),
        )
        .await
    }

    async fn start(behaviour: Behaviour, tls: Option<TlsAcceptor>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (behaviour, counts, tls) = (behaviour.clone(), shared.clone(), tls.clone());
                tokio::spawn(async move {
                    counts.opened();
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                serve(stream, &behaviour, &counts).await;
                            }
                        }
                        None => serve(stream, &behaviour, &counts).await,
                    }
                    counts.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Server { port, counts, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`.
    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.counts.seen.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }

    pub fn most_open(&self) -> usize {
        self.counts.most_open.load(Ordering::SeqCst)
    }
}

impl Counts {
    fn opened(&self) {
        self.connections.fetch_add(1, Ordering::SeqCst);
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_open.fetch_max(now, Ordering::SeqCst);
    }
}

/// Reads one request from `stream` and answers it; one request per connection.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    behaviour: &Behaviour,
    counts: &Counts,
) {
    let Some(seen) = read_request(&mut stream).await else {
        return;
    };
    counts.seen.lock().unwrap().push(seen.clone());
    let reply = behaviour(&seen);
    let _ = write_reply(&mut stream, reply).await;
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > MAX_HEAD {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut seen = Seen {
        method,
        target,
        headers,
        body: buf[end + 4..].to_vec(),
    };
    let chunked = seen.header("transfer-encoding") == Some("chunked");
    let length: usize = seen
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap_or(0));
    // Read the whole body: a connection closed with unread input is reset, and the client
    // would lose the reply.
    while !body_complete(&seen.body, chunked, length) {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        seen.body.extend_from_slice(&chunk[..n]);
    }
    if chunked {
        seen.body = dechunk(&seen.body);
    }
    Some(seen)
}

fn body_complete(body: &[u8], chunked: bool, length: usize) -> bool {
    if chunked {
        body.starts_with(b"0\r\n\r\n") || body.windows(7).any(|w| w == b"\r\n0\r\n\r\n")
    } else {
        body.len() >= length
    }
}

/// The data of a chunked body (`SIZE\r\nDATA\r\n`..., ending with a zero-size chunk).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        if size == 0 || raw.len() < end + 2 + size {
            break;
        }
        data.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[(end + 4 + size).min(raw.len())..];
    }
    data
}

async fn write_reply<S: AsyncWrite + Unpin>(stream: &mut S, reply: Reply) -> std::io::Result<()> {
    let (status, headers, body) = match reply {
        Reply::Fixed {
            status,
            headers,
            body,
        } => (status, headers, body),
        Reply::Never => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Reply::Zeros { bytes } => return write_zeros(stream, bytes).await,
        Reply::After(wait) => {
            tokio::time::sleep(wait).await;
            (200, Vec::new(), b"ok".to_vec())
        }
    };
    let mut head = format!(
        "HTTP/1.1 {status} Test\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

async fn write_zeros<S: AsyncWrite + Unpin>(stream: &mut S, bytes: u64) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {bytes}\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    let block = vec![0u8; 64 << 10];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        stream.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    stream.shutdown().await
}

/// A TCP server that writes back whatever it reads, one task per connection.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoServer {
    pub async fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                shared.opened();
                let counts = shared.clone();
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                    counts.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        EchoServer { addr, counts, task }
    }

    pub fn connections(&self) -> usize {
        self.counts.connections.load(Ordering::SeqCst)
    }
}
