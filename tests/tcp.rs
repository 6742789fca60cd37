//! Outbound TCP through the `tcp` grant: a granted endpoint is reached, and the `sockets`
//! guest finds everything else shut: other ports, names not granted (not even looked up), a
//! granted name that resolves to an internal address, and UDP.

use std::time::Duration;

use kiln::capabilities::tcp::{self, TcpUsage};
use kiln::{Grants, JobLimits, Outcome};
use serde_json::{Value, json};

use crate::http_server::EchoServer;
use crate::util::{job, load, run_granted, runtime};

fn grants(endpoints: &[String]) -> Grants {
    Grants {
        tcp: endpoints.iter().map(|e| tcp::check(e).unwrap()).collect(),
        ..Grants::default()
    }
}

/// Runs `sockets` with `payload` under `grants`; its report and what it did over TCP.
async fn probe(payload: Value, grants: &Grants) -> (Value, Option<TcpUsage>) {
    let runtime = runtime();
    let sockets = load(&runtime, "sockets");
    let limits = JobLimits {
        timeout: Duration::from_secs(10),
        ..JobLimits::default()
    };
    let input = job("sockets", payload.to_string().as_bytes());
    let done = run_granted(&runtime, &sockets, &input, &limits, grants).await;
    let Outcome::Ok(bytes) = &done.outcome else {
        panic!("expected a report, got {:?}", done.outcome);
    };
    (serde_json::from_slice(bytes).unwrap(), done.tcp)
}

#[tokio::test]
async fn a_tcp_grant_reaches_a_local_echo_server() {
    let server = EchoServer::start().await;
    let target = server.addr.to_string();
    let payload = json!({"tcp": target, "send": "HELO kiln\r\n"});
    let (report, usage) = probe(payload, &grants(std::slice::from_ref(&target))).await;
    assert_eq!(report["tcp"], "ok: HELO kiln\r\n");
    assert_eq!(
        usage,
        Some(TcpUsage {
            connections: 1,
            denied: 0
        })
    );
}

#[tokio::test]
async fn every_other_endpoint_name_and_udp_is_refused() {
    let granted = EchoServer::start().await;
    let other = EchoServer::start().await;
    let named = EchoServer::start().await;
    let by_name = format!("localhost:{}", named.addr.port());
    let allowed = grants(&[granted.addr.to_string(), by_name.clone()]);

    let (report, usage) = probe(json!({"tcp": other.addr.to_string()}), &allowed).await;
    assert!(
        report["tcp"].as_str().unwrap().starts_with("error"),
        "{report}"
    );
    assert_eq!(usage.map(|u| u.denied), Some(1));
    assert_eq!(other.connections(), 0);

    let (report, _) = probe(json!({"lookup": "example.com"}), &allowed).await;
    assert!(
        report["lookup"].as_str().unwrap().starts_with("error"),
        "{report}"
    );

    let (report, _) = probe(json!({"tcp": by_name}), &allowed).await;
    assert!(
        report["tcp"].as_str().unwrap().starts_with("error"),
        "{report}"
    );
    assert_eq!(
        named.connections(),
        0,
        "localhost resolves to an internal address"
    );

    let udp = json!({"udp": granted.addr.to_string()});
    let (report, _) = probe(udp, &allowed).await;
    assert!(
        report["udp"].as_str().unwrap().starts_with("error"),
        "{report}"
    );
}
