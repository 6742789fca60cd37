//! The `http` grant: outbound HTTP(S) through `wasi:http/outgoing-handler`, to the origins a
//! handler is granted (`grants = { http = ["https://api.mail.example", "http://127.0.0.1:*"] }`)
//! and nowhere else.
//!
//! `wasi:http` is linked for every handler (a component importing it loads without a grant);
//! every request goes through [`Hooks::send_request`], which Kiln implements itself:
//! - the origin checked is the one connected to: the request's scheme, host and port. The
//!   `Host` header sent is rewritten to that authority, so a header cannot steer a request
//!   to another virtual host (the lesson of Spin's GHSA-f3h7-gpjj-wcvh);
//! - a request to anything else gets `HttpRequestDenied`, and the host logs the job, handler
//!   and origin;
//! - names are looked up only once granted, and a granted *name* that resolves to an internal
//!   address is refused with `DestinationIpProhibited` (see `net::is_internal`); only a grant
//!   that writes the address (`http://127.0.0.1:8080`) opens one;
//! - redirects are answered to the guest as they are; the host never follows one, so every
//!   hop is checked again;
//! - the attempt's deadline bounds every wait (lookup, connect, TLS, response, body): each
//!   future spawned here is cut at the deadline, and each is owned by a resource of the
//!   attempt's store, so dropping the store aborts it;
//! - [`HttpLimits`]: a connect timeout, and at most `max_in_flight` requests in flight per
//!   attempt (a request holds its slot until its response body is finished or dropped);
//! - response bodies stream frame by frame into guest memory, so the memory cap bounds what a
//!   handler can hold, and the host never buffers a whole body;
//! - HTTPS uses rustls with the system's roots, plus any `http_ca_file` granted, one TLS
//!   configuration per set of CA files for the whole host ([`TlsConfigs`]).
//!
//! What an attempt did is counted in [`HttpUsage`] and recorded with the attempt.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{
    Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
};

use super::net::{self, Host, HostPattern, Requester};

/// One granted origin: `scheme://host[:port]`, where the port may be `*` and the host's
/// leftmost labels may be `*.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    /// As written in the config, for messages.
    text: String,
    https: bool,
    host: HostPattern,
    /// `None` is any port.
    port: Option<u16>,
}

/// Everything a handler may reach over HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpGrant {
    /// Granted origins; empty denies every request.
    pub origins: Vec<OriginPattern>,
    /// PEM files of certificate authorities trusted on top of the system's roots.
    pub ca_files: Vec<PathBuf>,
}

/// Per-attempt limits of outbound HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Requests one attempt may have in flight at once; more wait for a slot. Bounds the
    /// connections, sockets and buffers one handler can hold open on the host.
    pub max_in_flight: usize,
    /// How long a connection (TCP and TLS handshake) may take, so a black-holed server costs
    /// an attempt this long per try rather than its whole deadline.
    pub connect_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_in_flight: 8,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// What one attempt did over HTTP; recorded with the attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpUsage {
    /// Requests sent (past the grant check).
    pub requests: u64,
    /// Requests refused: origin not granted, or a granted name resolving to an internal address.
    pub denied: u64,
    /// Request body bytes sent.
    pub bytes_sent: u64,
    /// Response body bytes received.
    pub bytes_received: u64,
}

/// Parses one `grants.http` entry, `scheme://host[:port]`.
pub fn check(entry: &str) -> Result<OriginPattern, String> {
    let (scheme, rest) = entry
        .split_once("://")
        .ok_or_else(|| format!("`{entry}` is not an origin; write scheme://host[:port]"))?;
    let https = match scheme {
        "https" => true,
        "http" => false,
        other => return Err(format!("scheme `{other}` is not http or https")),
    };
    if rest.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "`{entry}` has a path, query or user; grant the origin only (scheme://host[:port])"
        ));
    }
    let (host, port) = net::split_host_port(rest)?;
    let port = match port {
        None => Some(if https { 443 } else { 80 }),
        Some("*") => None,
        Some(port) => Some(net::parse_port(port)?),
    };
    Ok(OriginPattern {
        text: entry.to_owned(),
        https,
        host: HostPattern::parse(host)?,
        port,
    })
}

/// Checks that `path` is a readable PEM file holding at least one certificate.
pub fn check_ca_file(path: &Path) -> Result<(), String> {
    match read_certificates(path) {
        Ok(certs) if certs.is_empty() => {
            Err(format!("`{}` holds no PEM certificate", path.display()))
        }
        Ok(_) => Ok(()),
        Err(reason) => Err(reason),
    }
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    certs
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{}` is not a PEM file: {e}", path.display()))
}

impl HttpGrant {
    /// Adds `other`'s origins and CA files to these (a handler's grant to its queue's).
    pub fn add(&mut self, other: &HttpGrant) {
        self.origins.extend(other.origins.iter().cloned());
        self.ca_files.extend(other.ca_files.iter().cloned());
    }

    /// The first granted origin that covers `origin`.
    fn allows(&self, origin: &Origin) -> Option<&OriginPattern> {
        self.origins.iter().find(|p| p.matches(origin))
    }
}

impl OriginPattern {
    fn matches(&self, origin: &Origin) -> bool {
        self.https == origin.https
            && self.port.is_none_or(|p| p == origin.port)
            && self.host.matches(&origin.host)
    }
}

impl fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The origin a request goes to: what is checked and what is connected to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    https: bool,
    host: Host,
    port: u16,
}

impl Origin {
    /// The origin of `uri`; `None` when it has no usable scheme or host.
    fn of(uri: &http::Uri) -> Option<Origin> {
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => return None,
        };
        let authority = uri.authority()?;
        Some(Origin {
            https,
            host: Host::parse(authority.host())?,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
        })
    }

    /// `host:port` as sent in the `Host` header.
    fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// The host's TLS client configurations, one per set of granted CA files, built on first
/// use: reading the system's roots costs milliseconds, so it is done once per host.
#[derive(Default)]
pub struct TlsConfigs {
    built: Mutex<HashMap<Vec<PathBuf>, Arc<rustls::ClientConfig>>>,
}

impl TlsConfigs {
    async fn config(&self, ca_files: &[PathBuf]) -> Result<Arc<rustls::ClientConfig>, Error> {
        let cached = self.lock().get(ca_files).cloned();
        if let Some(config) = cached {
            return Ok(config);
        }
        let files = ca_files.to_vec();
        let built = tokio::task::spawn_blocking(move || build_tls(&files))
            .await
            .map_err(|e| Error::InternalError(Some(e.to_string())))?
            .map_err(|reason| Error::InternalError(Some(reason)))?;
        let built = Arc::new(built);
        self.lock().insert(ca_files.to_vec(), built.clone());
        Ok(built)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<PathBuf>, Arc<rustls::ClientConfig>>> {
        self.built.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// rustls over ring with the system's roots and `ca_files`, speaking HTTP/1.1.
fn build_tls(ca_files: &[PathBuf]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    for file in ca_files {
        for cert in read_certificates(file)? {
            roots
                .add(cert)
                .map_err(|e| format!("`{}`: {e}", file.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The `wasi:http` state of one attempt, held by its store.
pub(crate) struct HttpCtx {
    ctx: WasiHttpCtx,
    hooks: Hooks,
}

impl HttpCtx {
    pub(crate) fn new(
        grant: &HttpGrant,
        limits: &HttpLimits,
        tls: Arc<TlsConfigs>,
        deadline: std::time::Instant,
        who: Requester,
    ) -> HttpCtx {
        let attempt = PerAttempt {
            grant: grant.clone(),
            connect_timeout: limits.connect_timeout,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            tls,
            deadline: deadline.into(),
            who,
            counters: Counters::default(),
        };
        HttpCtx {
            ctx: WasiHttpCtx::new(),
            hooks: Hooks(Arc::new(attempt)),
        }
    }

    /// The view `wasi:http`'s host functions work on.
    pub(crate) fn view<'a>(&'a mut self, table: &'a mut ResourceTable) -> WasiHttpCtxView<'a> {
        WasiHttpCtxView {
            ctx: &mut self.ctx,
            table,
            hooks: &mut self.hooks,
        }
    }

    /// What the attempt did, or `None` if it made no request at all.
    pub(crate) fn usage(&self) -> Option<HttpUsage> {
        let c = &self.hooks.0.counters;
        let usage = HttpUsage {
            requests: c.requests.load(Ordering::Relaxed),
            denied: c.denied.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            bytes_received: c.bytes_received.load(Ordering::Relaxed),
        };
        (usage != HttpUsage::default()).then_some(usage)
    }
}

/// The HTTP side of one attempt, shared by its store (through [`Hooks`]) and the request
/// futures it spawned (each owned by a resource of that store).
struct PerAttempt {
    grant: HttpGrant,
    connect_timeout: Duration,
    /// One permit per request in flight ([`HttpLimits::max_in_flight`]).
    in_flight: Arc<Semaphore>,
    /// The host's TLS configurations, one per set of CA files.
    tls: Arc<TlsConfigs>,
    /// The attempt's deadline: no future spawned here waits past it.
    deadline: Instant,
    who: Requester,
    /// What [`HttpCtx::usage`] reports.
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    denied: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
}

impl PerAttempt {
    /// Counts and logs a refused request, and returns the error the guest gets.
    fn deny(&self, origin: &dyn fmt::Display, reason: &str, error: Error) -> Error {
        self.counters.denied.fetch_add(1, Ordering::Relaxed);
        let (job, handler) = (&*self.who.job, &*self.who.handler);
        tracing::warn!(job, handler, origin = %origin, "http request denied: {reason}");
        error
    }
}

struct Hooks(Arc<PerAttempt>);

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let attempt = self.0.clone();
        Box::new(async move {
            let deadline = attempt.deadline;
            let sent = tokio::time::timeout_at(deadline, send(attempt, request, options)).await;
            sent.unwrap_or(Err(Error::ConnectionTimeout))
        })
    }
}

/// Checks, resolves, connects and sends one request; the response body streams on.
async fn send(
    attempt: Arc<PerAttempt>,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let origin = granted_origin(&attempt, request.uri())?;
    let permit = attempt.in_flight.clone().acquire_owned().await;
    let permit = permit.map_err(|_| Error::ConnectionLimitReached)?;
    let stream = open(&attempt, &origin, options).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::from)?;
    prepare(&mut request, &origin);
    let request = request.map(|body| Counted::new(body, attempt.clone(), Direction::Sent, None));
    let exchange = exchange(sender, Box::pin(conn), request);
    let (response, conn) = match options.and_then(|o| o.first_byte_timeout) {
        Some(wait) => tokio::time::timeout(wait, exchange)
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?,
        None => exchange.await,
    }?;
    let response = response.map(|body| {
        let body = body.map_err(Error::from);
        Counted::new(body, attempt.clone(), Direction::Received, Some(permit)).boxed_unsync()
    });
    Ok((response, drive(conn, attempt.deadline)))
}

/// The origin of a request if it is granted; otherwise the refusal, counted and logged.
fn granted_origin(attempt: &PerAttempt, uri: &http::Uri) -> Result<Origin, Error> {
    let Some(origin) = Origin::of(uri) else {
        let uri = uri.to_string();
        return Err(attempt.deny(&uri, "not an http(s) URL", Error::HttpRequestUriInvalid));
    };
    if attempt.grant.allows(&origin).is_none() {
        return Err(attempt.deny(&origin, "origin not granted", Error::HttpRequestDenied));
    }
    Ok(origin)
}

/// A connection to `origin` within the connect timeout (the guest may ask for a shorter one).
async fn open(
    attempt: &PerAttempt,
    origin: &Origin,
    options: Option<RequestOptions>,
) -> Result<Box<dyn Io>, Error> {
    let addrs = addresses(attempt, origin).await?;
    attempt.counters.requests.fetch_add(1, Ordering::Relaxed);
    let timeout = options
        .and_then(|o| o.connect_timeout)
        .map_or(attempt.connect_timeout, |t| t.min(attempt.connect_timeout));
    tokio::time::timeout(timeout, connect(attempt, origin, &addrs))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
}

/// The client side of one connection, driven until the response's body is done.
type Conn =
    Pin<Box<hyper::client::conn::http1::Connection<TokioIo<Box<dyn Io>>, Counted<WasiBody>>>>;

/// Sends `request` while driving the connection; the response, and the connection if it is
/// still open (it carries the response body).
async fn exchange(
    mut sender: hyper::client::conn::http1::SendRequest<Counted<WasiBody>>,
    conn: Conn,
    request: http::Request<Counted<WasiBody>>,
) -> Result<(http::Response<hyper::body::Incoming>, Option<Conn>), Error> {
    let mut conn = Some(conn);
    let mut response = std::pin::pin!(sender.send_request(request));
    loop {
        let Some(driving) = conn.as_mut() else {
            return Ok((response.await?, None));
        };
        tokio::select! {
            biased;
            done = &mut response => return Ok((done?, conn)),
            closed = driving => {
                conn = None;
                closed?;
            }
        }
    }
}

/// The future that keeps the connection going while the guest reads the body, cut at the
/// attempt's deadline.
fn drive(conn: Option<Conn>, deadline: Instant) -> IoFuture {
    Box::new(async move {
        let Some(conn) = conn else { return Ok(()) };
        match tokio::time::timeout_at(deadline, conn).await {
            Ok(done) => done.map_err(Error::from),
            Err(_) => Err(Error::ConnectionReadTimeout),
        }
    })
}

/// The addresses to try for `origin`: a granted address as it is, a granted name's public
/// addresses only.
async fn addresses(attempt: &PerAttempt, origin: &Origin) -> Result<Vec<SocketAddr>, Error> {
    let name = match &origin.host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, origin.port)]),
        Host::Name(name) => name,
    };
    let found = tokio::net::lookup_host((name.as_str(), origin.port))
        .await
        .map_err(|e| Error::DnsError {
            rcode: Some(e.to_string()),
            info_code: None,
        })?;
    let (public, refused) = net::public_only(found);
    if public.is_empty() && refused {
        let error = Error::DestinationIpProhibited;
        return Err(attempt.deny(
            origin,
            "granted name resolves to an internal address",
            error,
        ));
    }
    if public.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    Ok(public)
}

/// A connection to the first of `addrs` that answers, wrapped in TLS for `https`.
async fn connect(
    attempt: &PerAttempt,
    origin: &Origin,
    addrs: &[SocketAddr],
) -> Result<Box<dyn Io>, Error> {
    let mut last = Error::ConnectionRefused;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) if !origin.https => return Ok(Box::new(tcp)),
            Ok(tcp) => return tls(attempt, origin, tcp).await,
            Err(error) => last = Error::Connect(error),
        }
    }
    Err(last)
}

async fn tls(attempt: &PerAttempt, origin: &Origin, tcp: TcpStream) -> Result<Box<dyn Io>, Error> {
    let config = attempt.tls.config(&attempt.grant.ca_files).await?;
    let name = match &origin.host {
        Host::Ip(ip) => ServerName::from(*ip),
        Host::Name(name) => ServerName::try_from(name.clone())
            .map_err(|e| Error::InternalError(Some(e.to_string())))?,
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    let stream = connector.connect(name, tcp).await.map_err(Error::Tls)?;
    Ok(Box::new(stream))
}

/// Makes the request what is sent on the wire: an origin-form target, and a `Host` header
/// naming the origin connected to whatever the guest's headers said.
fn prepare(request: &mut http::Request<WasiBody>, origin: &Origin) {
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() =
        http::Uri::try_from(target).unwrap_or_else(|_| http::Uri::from_static("/"));
    let headers = request.headers_mut();
    headers.remove(http::header::HOST);
    if let Ok(host) = http::HeaderValue::try_from(origin.authority()) {
        headers.insert(http::header::HOST, host);
    }
}

/// A connection the HTTP client can run over: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

#[derive(Clone, Copy)]
enum Direction {
    Sent,
    Received,
}

/// A body whose data bytes are counted into the attempt's usage as they pass; a response body
/// also holds its request's in-flight slot until it ends or is dropped.
struct Counted<B> {
    inner: B,
    attempt: Arc<PerAttempt>,
    direction: Direction,
    slot: Option<OwnedSemaphorePermit>,
}

impl<B> Counted<B> {
    fn new(
        inner: B,
        attempt: Arc<PerAttempt>,
        direction: Direction,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Counted {
            inner,
            attempt,
            direction,
            slot,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                let c = &self.attempt.counters;
                let counter = match self.direction {
                    Direction::Sent => &c.bytes_sent,
                    Direction::Received => &c.bytes_received,
                };
                counter.fetch_add(n, Ordering::Relaxed);
            }
            Poll::Ready(_) => self.slot = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(uri: &str) -> Origin {
        Origin::of(&uri.parse().unwrap()).unwrap()
    }

    fn grant(entries: &[&str]) -> HttpGrant {
        HttpGrant {
            origins: entries.iter().map(|e| check(e).unwrap()).collect(),
            ca_files: Vec::new(),
        }
    }

    #[test]
    fn origins_match_scheme_host_and_port() {
        let g = grant(&[
            "https://api.mail.example",
            "http://127.0.0.1:*",
            "https://*.partner.example:8443",
        ]);
        for allowed in [
            "https://api.mail.example/send",
            "https://API.mail.example:443/",
            "http://127.0.0.1:5000/x",
            "https://eu.partner.example:8443/v1",
        ] {
            assert!(g.allows(&origin(allowed)).is_some(), "{allowed}");
        }
        for denied in [
            "http://api.mail.example/",
            "https://api.mail.example:8443/",
            "https://127.0.0.1:5000/",
            "http://localhost:5000/",
            "https://partner.example:8443/",
            "https://eu.partner.example/",
            "https://evil.example/?https://api.mail.example",
        ] {
            assert!(g.allows(&origin(denied)).is_none(), "{denied}");
        }
    }

    #[test]
    fn entries_that_are_not_origins_are_refused() {
        for entry in [
            "api.mail.example",
            "ftp://files.example",
            "https://api.mail.example/path",
            "https://user@api.mail.example",
            "https://*",
            "https://a.*.example",
            "https://api.mail.example:0",
            "https://api.mail.example:http",
            "https://[::1",
        ] {
            assert!(check(entry).is_err(), "{entry}");
        }
        assert!(check("http://[::1]:8080").is_ok());
    }

    #[test]
    fn the_host_header_names_the_origin_connected_to() {
        let mut request = http::Request::builder()
            .uri("http://127.0.0.1:8080/a?b=c")
            .header(http::header::HOST, "metadata.internal")
            .body(
                http_body_util::Empty::new()
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            )
            .unwrap();
        prepare(&mut request, &origin("http://127.0.0.1:8080/"));
        assert_eq!(request.uri(), "/a?b=c");
        assert_eq!(request.headers()[http::header::HOST], "127.0.0.1:8080");
        assert_eq!(
            request.headers().get_all(http::header::HOST).iter().count(),
            1
        );
    }
}
