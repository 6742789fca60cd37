//! `escape`: tries everything a Kiln sandbox must deny by default and reports what it saw, so
//! tests can assert on each capability.
//!
//! Payload (all optional): `{"connect": "host:port", "read": "/path", "write": "/path",
//! "env_key": "NAME"}`. `connect` defaults to `127.0.0.1:6379`, `write` to
//! `/tmp/kiln-escape.txt`; `read` and `env_key` are only reported when given (used to test a
//! granted read-only directory and granted variables).
//!
//! Result: `{"files": {"/etc/passwd": .., "/": .., ".": .., "/tmp": ..}, "env": ["K=V", ..],
//! "args": [..], "stdin": .., "tcp": .., "udp": .., "write": .., "read": .., "env_key": ..}`
//! where every probe is `"ok: <what it got>"` or `"error: <why>"`: a file's contents, a
//! directory's sorted entries joined by ", ", what stdin held, the socket's address.
//! It also prints one line to stdout and one to stderr, to test that both are captured.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::{self, Read};
use std::net::{TcpStream, UdpSocket};
use std::{env, fs};

use kiln_sdk::{Handler, Job, JobError};
use serde::{Deserialize, Serialize};

/// Paths probed on every run: a host file, the root, the working directory and a temp dir.
const PROBED_PATHS: [&str; 4] = ["/etc/passwd", "/", ".", "/tmp"];

#[derive(Default, Deserialize)]
#[serde(default)]
struct Request {
    connect: Option<String>,
    read: Option<String>,
    write: Option<String>,
    env_key: Option<String>,
}

#[derive(Serialize)]
struct Report {
    files: BTreeMap<&'static str, String>,
    env: Vec<String>,
    args: Vec<String>,
    stdin: String,
    tcp: String,
    udp: String,
    write: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    read: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    env_key: Option<String>,
}

fn outcome<T: Display, E: Display>(result: Result<T, E>) -> String {
    match result {
        Ok(got) => format!("ok: {got}"),
        Err(err) => format!("error: {err}"),
    }
}

/// Lists a directory or reads a file, whichever `path` is.
fn probe(path: &str) -> String {
    let read = fs::metadata(path).and_then(|meta| {
        if !meta.is_dir() {
            return fs::read_to_string(path);
        }
        let mut names = fs::read_dir(path)?
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<_>>>()?;
        names.sort();
        Ok(names.join(", "))
    });
    outcome(read)
}

fn lossy(values: impl Iterator<Item = std::ffi::OsString>) -> Vec<String> {
    values.map(|v| v.to_string_lossy().into_owned()).collect()
}

struct Escape;

impl Handler for Escape {
    fn handle(job: Job) -> Result<Vec<u8>, JobError> {
        let request: Request = job.json_or_default()?;
        println!("escape: a line on stdout");
        eprintln!("escape: a line on stderr");
        let connect = request.connect.as_deref().unwrap_or("127.0.0.1:6379");
        let write_path = request.write.as_deref().unwrap_or("/tmp/kiln-escape.txt");
        let mut stdin = String::new();
        let report = Report {
            files: PROBED_PATHS.map(|path| (path, probe(path))).into(),
            env: env::vars_os()
                .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
                .collect(),
            args: lossy(env::args_os()),
            stdin: outcome(io::stdin().read_to_string(&mut stdin).map(|_| &stdin)),
            tcp: outcome(TcpStream::connect(connect).and_then(|s| s.peer_addr())),
            udp: outcome(UdpSocket::bind("0.0.0.0:0").and_then(|s| s.local_addr())),
            write: outcome(
                fs::write(write_path, "kiln escape was here\n")
                    .map(|()| format!("wrote {write_path}")),
            ),
            read: request.read.as_deref().map(probe),
            env_key: request.env_key.map(|key| outcome(env::var(&key))),
        };
        kiln_sdk::json(&report)
    }
}

kiln_sdk::export!(Escape);
