//! Outbound HTTP through the `http` grant: granted requests succeed, everything else is
//! denied and logged, and the hostile guests (a Host-header forger, a redirect follower, a
//! flood of requests, a reader of a server that never answers, a hoarder of a 1 GiB body)
//! meet each limit while `echo` keeps being served. Every server is in-process on 127.0.0.1.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kiln::capabilities::http::{self, HttpUsage};
use kiln::{ErrorKind, Grants, JobLimits, Outcome, Runtime};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::http_server::{Reply, Server};
use crate::util::{job, load, make_certificates, run, run_granted, runtime};

fn limits() -> JobLimits {
    JobLimits {
        timeout: Duration::from_secs(10),
        memory: 32 << 20,
        ..JobLimits::default()
    }
}

/// Grants for the `http` origins `origins`, trusting `ca_files` besides the system's roots.
fn grants(origins: &[String], ca_files: &[std::path::PathBuf]) -> Grants {
    let mut grants = Grants::default();
    grants.http.origins = origins.iter().map(|o| http::check(o).unwrap()).collect();
    grants.http.ca_files = ca_files.to_vec();
    grants
}

/// Runs guest `name` with `payload`, `limits` and `grants`.
async fn attempt(
    runtime: &Runtime,
    name: &str,
    payload: Value,
    limits: &JobLimits,
    grants: &Grants,
) -> kiln::Attempt {
    let handler = load(runtime, name);
    let input = job(name, payload.to_string().as_bytes());
    run_granted(runtime, &handler, &input, limits, grants).await
}

fn result(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Ok(bytes) => serde_json::from_slice(bytes).expect("result is JSON"),
        other => panic!("expected success, got {other:?}"),
    }
}

/// The message of a fatal error, failing the test on any other outcome.
fn fatal(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Error {
            kind: ErrorKind::Fatal,
            message,
        } => message,
        other => panic!("expected a fatal error, got {other:?}"),
    }
}

async fn echo_still_serves(runtime: &Runtime) {
    let echo = load(runtime, "echo");
    let after = run(runtime, &echo, &job("echo", b"still here"), &limits()).await;
    assert_eq!(after.outcome, Outcome::Ok(b"still here".to_vec()));
}

#[tokio::test]
async fn fetch_gets_a_granted_local_server() {
    let server = Server::http(|_| Reply::status(200, "hello kiln")).await;
    let runtime = runtime();
    let url = format!("{}/greeting", server.origin());
    let granted = grants(&[server.origin()], &[]);
    let done = attempt(&runtime, "fetch", json!({"url": url}), &limits(), &granted).await;
    let report = result(&done.outcome);
    assert_eq!(report["status"], 200);
    assert_eq!(report["bytes"], 10);
    assert_eq!(report["sha256"], hex::encode(Sha256::digest(b"hello kiln")));
    assert_eq!(
        done.http,
        Some(HttpUsage {
            requests: 1,
            denied: 0,
            bytes_sent: 0,
            bytes_received: 10
        })
    );
    assert_eq!(server.seen()[0].target, "/greeting");
}

/// A `tracing` writer that keeps everything written, to read back what the host logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_host_port_or_scheme_not_granted_is_denied_and_logged() {
    let server = Server::http(|_| Reply::status(200, "secret")).await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _log = tracing::subscriber::set_default(subscriber);
    let runtime = runtime();
    let granted = grants(&[server.origin()], &[]);
    let port = server.port;
    for url in [
        format!("http://127.0.0.2:{port}/"),
        format!("http://127.0.0.1:{}/", port + 1),
        format!("https://127.0.0.1:{port}/"),
    ] {
        // Another test's thread may register the log line's callsite while this test's
        // subscriber is being installed and cache it as unwanted; recompute that first.
        tracing::callsite::rebuild_interest_cache();
        let done = attempt(&runtime, "fetch", json!({"url": url}), &limits(), &granted).await;
        assert!(fatal(&done.outcome).contains("HttpRequestDenied"), "{url}");
        assert_eq!(
            done.http.map(|h| (h.requests, h.denied)),
            Some((0, 1)),
            "{url}"
        );
    }
    assert_eq!(
        server.connections(),
        0,
        "no denied request reached the server"
    );
    let log = captured.text();
    assert!(log.contains("http request denied"), "{log}");
    assert!(
        log.contains("test-fetch") && log.contains("handler=\"fetch\""),
        "{log}"
    );
    assert!(log.contains(&format!("https://127.0.0.1:{port}")), "{log}");
}

#[tokio::test]
async fn a_granted_name_resolving_to_an_internal_address_is_refused() {
    let server = Server::http(|_| Reply::status(200, "internal")).await;
    let runtime = runtime();
    let by_name = format!("http://localhost:{}", server.port);
    let granted = grants(std::slice::from_ref(&by_name), &[]);
    let done = attempt(
        &runtime,
        "fetch",
        json!({"url": by_name}),
        &limits(),
        &granted,
    )
    .await;
    assert!(fatal(&done.outcome).contains("DestinationIpProhibited"));
    assert_eq!(done.http.map(|h| h.denied), Some(1));
    assert_eq!(server.connections(), 0);
    echo_still_serves(&runtime).await;
}

#[tokio::test]
async fn neither_a_host_header_nor_an_absolute_target_reaches_another_origin() {
    let granted_server = Server::http(|_| Reply::status(200, "granted")).await;
    let other = Server::http(|_| Reply::status(200, "other")).await;
    let runtime = runtime();
    let granted = grants(&[granted_server.origin()], &[]);
    let payload = json!({"granted": granted_server.authority(), "other": other.authority()});
    let done = attempt(&runtime, "forge", payload, &limits(), &granted).await;
    let report = result(&done.outcome);
    assert_eq!(other.connections(), 0, "{report}");
    for seen in granted_server.seen() {
        assert_eq!(
            seen.header("host"),
            Some(granted_server.authority().as_str())
        );
        assert!(seen.target.starts_with('/'), "{seen:?}");
    }
    let network_path = report["network_path"].as_str().unwrap();
    assert!(network_path.starts_with("200 granted"), "{report}");
    assert!(
        granted_server
            .seen()
            .iter()
            .any(|s| s.target.ends_with("/stolen"))
    );
}

#[tokio::test]
async fn redirects_are_not_followed_by_the_host_and_each_hop_is_checked() {
    let elsewhere = Server::http(|_| Reply::status(200, "elsewhere")).await;
    let location = format!("{}/landing", elsewhere.origin());
    let server = Server::http(move |_| Reply::Fixed {
        status: 302,
        headers: vec![("location".into(), location.clone())],
        body: Vec::new(),
    })
    .await;
    let runtime = runtime();
    let granted = grants(&[server.origin()], &[]);
    let url = format!("{}/", server.origin());
    let done = attempt(&runtime, "follow", json!({"url": url}), &limits(), &granted).await;
    let hops = result(&done.outcome)["hops"].clone();
    assert_eq!(hops[0], format!("302 {url}"));
    let second = hops[1].as_str().unwrap();
    assert!(second.contains("HttpRequestDenied"), "{hops}");
    assert_eq!(elsewhere.connections(), 0);
    echo_still_serves(&runtime).await;
}

#[tokio::test]
async fn a_server_that_never_answers_is_cut_off_at_the_deadline() {
    let server = Server::http(|_| Reply::Never).await;
    let runtime = runtime();
    let tight = JobLimits {
        timeout: Duration::from_millis(300),
        ..limits()
    };
    let granted = grants(&[server.origin()], &[]);
    let url = format!("{}/", server.origin());
    let done = attempt(&runtime, "fetch", json!({"url": url}), &tight, &granted).await;
    assert_eq!(done.outcome, Outcome::Timeout);
    assert!(done.wall >= tight.timeout, "stopped early: {:?}", done.wall);
    // Generous bound, as for a spinning handler: the point is that the wait was cut off.
    assert!(
        done.wall < tight.timeout + Duration::from_secs(2),
        "{:?}",
        done.wall
    );
    echo_still_serves(&runtime).await;
}

#[tokio::test]
async fn requests_in_flight_are_capped_while_echo_is_served() {
    let server = Server::http(|_| Reply::After(Duration::from_millis(200))).await;
    let runtime = runtime();
    let granted = grants(&[server.origin()], &[]);
    let payload = json!({"authority": server.authority(), "count": 20});
    let limits = limits();
    let flood = attempt(&runtime, "flood", payload, &limits, &granted);
    let (flooded, ()) = tokio::join!(flood, echo_still_serves(&runtime));
    let report = result(&flooded.outcome);
    assert_eq!(report["ok"], 20, "{report}");
    assert!(
        server.most_open() <= 8,
        "{} open at once",
        server.most_open()
    );
    assert_eq!(flooded.http.map(|h| h.requests), Some(20));

    let three = JobLimits {
        http: http::HttpLimits {
            max_in_flight: 3,
            ..limits.http
        },
        ..limits
    };
    let server = Server::http(|_| Reply::After(Duration::from_millis(100))).await;
    let granted = grants(&[server.origin()], &[]);
    let payload = json!({"authority": server.authority(), "count": 9});
    let done = attempt(&runtime, "flood", payload, &three, &granted).await;
    assert_eq!(result(&done.outcome)["ok"], 9);
    assert!(
        server.most_open() <= 3,
        "{} open at once",
        server.most_open()
    );
}

#[tokio::test]
async fn https_works_with_the_granted_ca_and_fails_without_it() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let server = Server::https(certs.path(), |_| Reply::status(200, "over tls")).await;
    let runtime = runtime();
    let origin = format!("https://127.0.0.1:{}", server.port);
    let url = format!("{origin}/secure");
    let with_ca = grants(
        std::slice::from_ref(&origin),
        &[certs.path().join("ca.crt")],
    );
    let done = attempt(&runtime, "fetch", json!({"url": url}), &limits(), &with_ca).await;
    assert_eq!(result(&done.outcome)["bytes"], 8);
    assert_eq!(server.seen()[0].target, "/secure");

    let without = grants(&[origin], &[]);
    let done = attempt(&runtime, "fetch", json!({"url": url}), &limits(), &without).await;
    let Outcome::Error { kind, message } = &done.outcome else {
        panic!("expected an error, got {:?}", done.outcome);
    };
    assert!(kind == &ErrorKind::Retry { delay: None }, "{message}");
    assert_eq!(
        server.seen().len(),
        1,
        "the untrusted handshake sent no request"
    );
}

#[tokio::test]
async fn webhook_retries_on_503_after_retry_after_and_fails_on_400() {
    let unavailable = Server::http(|_| Reply::Fixed {
        status: 503,
        headers: vec![("retry-after".into(), "7".into())],
        body: Vec::new(),
    })
    .await;
    let bad = Server::http(|_| Reply::status(400, "bad request")).await;
    let fine = Server::http(|_| Reply::status(204, "")).await;
    let runtime = runtime();
    let origins = [unavailable.origin(), bad.origin(), fine.origin()];
    let granted = grants(&origins, &[]);
    let post =
        |server: &Server| json!({"url": format!("{}/hook", server.origin()), "body": {"n": 1}});

    let done = attempt(&runtime, "webhook", post(&unavailable), &limits(), &granted).await;
    assert!(
        matches!(&done.outcome, Outcome::Error { kind: ErrorKind::Retry { delay: Some(d) }, .. } if *d == Duration::from_secs(7)),
        "{:?}",
        done.outcome
    );
    let seen = &unavailable.seen()[0];
    assert_eq!(
        (seen.method.as_str(), seen.body.as_slice()),
        ("POST", &br#"{"n":1}"#[..])
    );
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(done.http.map(|h| h.bytes_sent), Some(7));

    let done = attempt(&runtime, "webhook", post(&bad), &limits(), &granted).await;
    assert!(fatal(&done.outcome).contains("400"));
    let done = attempt(&runtime, "webhook", post(&fine), &limits(), &granted).await;
    assert_eq!(result(&done.outcome)["status"], 204);
}

/// Set in the child process that measures memory, so the measurement runs alone.
const RSS_CHILD: &str = "KILN_TEST_RSS_CHILD";

#[tokio::test]
async fn a_1gib_response_ends_at_the_memory_cap_without_growing_the_host() {
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new(exe)
        .args([
            "http::one_gib_response_in_this_process",
            "--exact",
            "--ignored",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env(RSS_CHILD, "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// The peak resident memory of this process, in bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

/// Run by the test above in a process of its own (other tests' memory would blur the peak).
#[tokio::test]
#[ignore = "run in its own process by a_1gib_response_ends_at_the_memory_cap_without_growing_the_host"]
async fn one_gib_response_in_this_process() {
    if std::env::var_os(RSS_CHILD).is_none() {
        return;
    }
    let small = Server::http(|_| Reply::Zeros { bytes: 64 << 20 }).await;
    let huge = Server::http(|_| Reply::Zeros { bytes: 1 << 30 }).await;
    let runtime = runtime();
    let granted = grants(&[small.origin(), huge.origin()], &[]);
    // Loaded once, before measuring: compiling a component takes memory of its own.
    let hoard = load(&runtime, "hoard");
    let hoard_from = |server: &Server| {
        let payload = json!({"url": format!("{}/", server.origin())}).to_string();
        job("hoard", payload.as_bytes())
    };
    // The first attempt brings the guest's memory to its cap once, so the peak includes it.
    let warm = run_granted(&runtime, &hoard, &hoard_from(&small), &limits(), &granted).await;
    assert_eq!(warm.outcome, Outcome::MemoryLimit);
    let before = peak_rss();
    let done = run_granted(&runtime, &hoard, &hoard_from(&huge), &limits(), &granted).await;
    assert_eq!(done.outcome, Outcome::MemoryLimit);
    let received = done.http.unwrap().bytes_received;
    assert!(
        received < 64 << 20,
        "{received} bytes received before the cap"
    );
    let grown = peak_rss().saturating_sub(before);
    println!("peak RSS grew by {} KiB over a 1 GiB response", grown >> 10);
    assert!(grown < 8 << 20, "peak RSS grew by {} KiB", grown >> 10);
    echo_still_serves(&runtime).await;
}

#[tokio::test]
async fn a_connection_that_is_never_accepted_ends_at_the_connect_timeout() {
    // A listener with a backlog of one that never accepts: once its queue is full, the
    // kernel drops further connection attempts, which then hang like a black-holed address.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let connect = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(200), connect).await {
            fillers.push(stream);
        }
    }
    let runtime = runtime();
    let origin = format!("http://{addr}");
    let quick = JobLimits {
        http: http::HttpLimits {
            connect_timeout: Duration::from_millis(300),
            ..limits().http
        },
        ..limits()
    };
    let url = format!("{origin}/");
    let granted = grants(&[origin], &[]);
    let done = attempt(&runtime, "fetch", json!({"url": url}), &quick, &granted).await;
    let Outcome::Error { kind, message } = &done.outcome else {
        panic!("expected an error, got {:?}", done.outcome);
    };
    assert_eq!(*kind, ErrorKind::Retry { delay: None }, "{message}");
    assert!(message.contains("ConnectionTimeout"), "{message}");
    drop((listener, fillers));
}
