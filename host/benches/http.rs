//! Outbound HTTP benchmark: attempts of `fetch` that each make one GET to a local server,
//! through `Runtime::run` (a fresh sandbox per attempt, the grant check, a new connection),
//! beside the same GET made natively from Rust with hyper over a new connection, in one run.
//! Run with `cargo bench -p kiln --bench http` (needs the guests: `bash guests/build.sh`);
//! figures go to BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use kiln::capabilities::http::check;
use kiln::{Grants, JobHooks, JobInput, JobLimits, Outcome, Runtime, RuntimeSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use wasmtime_wasi_http::io::TokioIo;

/// Requests timed one after another for the latency figures.
const SEQUENTIAL: usize = 2_000;
/// How long each throughput measurement runs.
const WINDOW: Duration = Duration::from_secs(3);
/// Concurrent tasks in the throughput measurements.
const TASKS: usize = 16;
const BODY: &[u8] = b"{\"ok\":true}";

fn guest(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guests")
        .join(format!("{name}.wasm"))
}

/// A server answering every request with `BODY`, one request per connection.
async fn serve() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    BODY.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.write_all(BODY).await;
            });
        }
    });
    port
}

/// One GET over a new connection with hyper, the body read to its end.
async fn native_get(port: u16) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("/")
        .header(http::header::HOST, format!("127.0.0.1:{port}"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], BODY);
}

struct Kiln {
    runtime: Arc<Runtime>,
    fetch: Arc<kiln::LoadedHandler>,
    job: JobInput,
    grants: Grants,
}

impl Kiln {
    fn new(port: u16) -> Kiln {
        let runtime = Arc::new(Runtime::new(RuntimeSettings::default()).unwrap());
        let fetch = Arc::new(runtime.load_handler(&guest("fetch"), None).unwrap());
        let url = format!("http://127.0.0.1:{port}/");
        let mut grants = Grants::default();
        grants.http.origins = vec![check(&format!("http://127.0.0.1:{port}")).unwrap()];
        let job = JobInput {
            id: "bench".into(),
            handler: "fetch".into(),
            queue: "default".into(),
            payload: serde_json::json!({ "url": url }).to_string().into_bytes(),
            attempt: 1,
            max_attempts: 1,
        };
        Kiln {
            runtime,
            fetch,
            job,
            grants,
        }
    }

    async fn get(&self) {
        let attempt = self
            .runtime
            .run(
                &self.fetch,
                &self.job,
                &JobLimits::default(),
                &self.grants,
                JobHooks::default(),
                &CancellationToken::new(),
            )
            .await;
        assert!(
            matches!(attempt.outcome, Outcome::Ok(_)),
            "{:?}",
            attempt.outcome
        );
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The median time of `SEQUENTIAL` calls of `f`, one after another.
async fn latency<F: Future<Output = ()>>(f: impl Fn() -> F) -> Duration {
    let mut times = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let started = Instant::now();
        f().await;
        times.push(started.elapsed());
    }
    median(times)
}

/// Calls of `f` per second from `TASKS` tasks over `WINDOW`.
async fn throughput<F>(f: impl Fn() -> F + Clone + Send + 'static) -> f64
where
    F: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move {
                let mut calls = 0u64;
                while started.elapsed() < WINDOW {
                    f().await;
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let mut calls = 0;
    for task in tasks {
        calls += task.await.unwrap();
    }
    calls as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let port = serve().await;
        let kiln = Arc::new(Kiln::new(port));
        kiln.get().await;
        native_get(port).await;
        let native = latency(|| native_get(port)).await;
        let sandboxed = latency(|| kiln.get()).await;
        let native_rate = throughput(move || native_get(port)).await;
        let shared = kiln.clone();
        let kiln_rate = throughput(move || {
            let kiln = shared.clone();
            async move { kiln.get().await }
        })
        .await;
        println!("one GET per request, new connection each, {threads} threads");
        println!("native hyper:  median {native:?}, {native_rate:.0} requests/s ({TASKS} tasks)");
        println!("kiln fetch:    median {sandboxed:?}, {kiln_rate:.0} jobs/s ({TASKS} tasks)");
        println!(
            "added per request: {:?} at the median",
            sandboxed.saturating_sub(native)
        );
    });
}
