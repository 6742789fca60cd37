//! `sockets`: tries what a `tcp` grant opens and what it must not: a TCP connection that
//! sends a line and reads the answer, a UDP datagram, and a name lookup.
//!
//! Payload (all optional): `{"tcp": "host:port", "send": "text", "udp": "host:port",
//! "lookup": "name"}`. Result: one entry per probe given, `"ok: <what it got>"` or
//! `"error: <why>"`: the echoed text, the bytes sent, the addresses found.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};

use kiln_sdk::{Handler, Job, JobError};
use serde::{Deserialize, Serialize};

#[derive(Default, Deserialize)]
#[serde(default)]
struct Request {
    tcp: Option<String>,
    send: Option<String>,
    udp: Option<String>,
    lookup: Option<String>,
}

#[derive(Serialize)]
struct Report {
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udp: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lookup: Option<String>,
}

fn outcome(result: std::io::Result<String>) -> String {
    match result {
        Ok(got) => format!("ok: {got}"),
        Err(err) => format!("error: {err}"),
    }
}

/// Connects, sends `text` and reads until the peer closes or as many bytes came back.
fn echo(target: &str, text: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(target)?;
    stream.write_all(text.as_bytes())?;
    let mut back = vec![0; text.len()];
    stream.read_exact(&mut back)?;
    Ok(String::from_utf8_lossy(&back).into_owned())
}

fn datagram(target: &str) -> std::io::Result<String> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    let sent = socket.send_to(b"kiln", target)?;
    Ok(format!("sent {sent} bytes"))
}

fn lookup(name: &str) -> std::io::Result<String> {
    let found: Vec<String> = (name, 0)
        .to_socket_addrs()?
        .map(|a| a.ip().to_string())
        .collect();
    Ok(found.join(", "))
}

struct Sockets;

impl Handler for Sockets {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json_or_default()?;
        let text = request.send.as_deref().unwrap_or("ping\n");
        kiln_sdk::json(&Report {
            tcp: request.tcp.map(|t| outcome(echo(&t, text))),
            udp: request.udp.map(|u| outcome(datagram(&u))),
            lookup: request.lookup.map(|n| outcome(lookup(&n))),
        })
    }
}

kiln_sdk::export!(Sockets);
