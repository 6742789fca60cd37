//! The host's own log against handlers that write too much of theirs (guest `chatter`): it
//! keeps what the job's log keeps and no more, a guest's text cannot pass for a host line,
//! and a reader that stops reading the host's log stops no job.

use std::io::Read as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use crate::cli::{Project, status};
use crate::util::wait_until;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Enqueues a job and waits for it, asserting it succeeded; its id.
fn run_job(project: &Project, handler: &str, payload: &str) -> String {
    let out = project.run(&[
        "enqueue",
        handler,
        "--payload",
        payload,
        "--wait",
        "--timeout",
        "120s",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        project.host_logs()
    );
    text(&out.stderr)
        .lines()
        .find_map(|line| line.strip_prefix("waiting for job "))
        .expect("the job id on stderr")
        .to_owned()
}

/// The text of every host log in the project.
fn host_log(project: &Project) -> String {
    project.all_host_logs()
}

/// 200,000 log calls and 8 MiB each of stdout and stderr: the host's log carries the lines
/// the job's log kept, one warning with what was dropped, and nothing more.
#[test]
fn a_log_flood_reaches_the_host_log_only_as_far_as_max_log() {
    let project = Project::new(
        &["chatter", "echo"],
        "[handlers.chatter]\nmax_log = \"16KiB\"\n",
    );
    let _host = project.host();
    let id = run_job(
        &project,
        "chatter",
        r#"{"calls": 200000, "stdout_mib": 8, "stderr_mib": 8}"#,
    );
    wait_until("the dropped-lines warning is logged", || {
        host_log(&project).contains("were dropped from the job's log and from this one")
    });
    let log = host_log(&project);
    let guest_lines = log
        .lines()
        .filter(|line| line.contains(&id) && line.contains("text="))
        .count();
    let stored = project.run(&["logs", &id]);
    assert!(stored.status.success(), "{}", text(&stored.stderr));
    let stored_lines = text(&stored.stdout).lines().count();
    assert!(stored_lines > 0);
    assert_eq!(guest_lines, stored_lines, "host log lines vs the job's log");
    assert!(
        log.len() < 1 << 20,
        "the host log grew {} bytes for a 16 KiB job log",
        log.len()
    );
    assert_eq!(status(&project, &id)["state"], "succeeded");
}

/// A message holding a newline, a carriage return and an ANSI escape stays one quoted field
/// of one host line; no line of the host's log starts with the forged text.
#[test]
fn a_guest_message_cannot_forge_a_host_log_line() {
    let project = Project::new(&["chatter"], "");
    let _host = project.host();
    let forged = "INFO kiln::registry: handler loaded handler=echo digest=forged";
    let message = format!("hello\n2026-01-01T00:00:00.000000Z  {forged}\r\u{1b}[2Kwiped");
    let payload = serde_json::json!({ "calls": 1, "message": message }).to_string();
    let id = run_job(&project, "chatter", &payload);
    wait_until("the guest's line is logged", || {
        host_log(&project).contains("digest=forged")
    });
    let log = host_log(&project);
    for line in log.lines().filter(|line| line.contains("digest=forged")) {
        let guest = line.find(" kiln::guest: ").expect("a guest line");
        let quoted = line.find("text=\"hello\\n").expect("the text field");
        assert!(
            guest < quoted && quoted < line.find(forged).unwrap(),
            "{line}"
        );
        assert!(line.contains(&id), "{line}");
    }
    assert!(!log.contains('\r'), "a raw carriage return in {log}");
    assert!(!log.contains('\u{1b}'), "a raw escape in {log}");
    assert_eq!(
        log.lines()
            .filter(|line| line.contains("digest=forged"))
            .count(),
        1
    );
}

/// A host whose log nobody reads (its stderr a pipe that is never drained) keeps running
/// jobs, and says how many lines it dropped once the reader comes back.
#[test]
fn a_stopped_log_reader_stops_no_job() {
    let project = Project::new(&["chatter", "echo"], "");
    let mut host = project
        .kiln()
        .arg("run")
        .env("KILN_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kiln run starts");
    let mut pipe = host.stderr.take().unwrap();
    // Far more than a pipe holds: 64 KiB of kept log lines per job, 20 jobs.
    for _ in 0..20 {
        let out = project.run(&["enqueue", "chatter", "--payload", r#"{"calls": 5000}"#]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = project.run(&[
        "enqueue",
        "echo",
        "--payload",
        "\"still served\"",
        "--wait",
        "--timeout",
        "60s",
    ]);
    let served = out.status.success() && text(&out.stdout).contains("still served");
    // Every job finishes with nobody reading; then the reader comes back.
    let succeeded = || {
        let stats = project.run(&["stats", "--json"]);
        let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap_or_default();
        stats[0]["succeeded"] == 21
    };
    if served {
        wait_until("every job succeeds", succeeded);
    }
    let log = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 64 << 10];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                log.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        })
    };
    let read = || text(&log.lock().unwrap());
    if served {
        wait_until("the host says what it dropped", || {
            read().contains("so that no job waited for it")
        });
    }
    let _ = host.kill();
    let _ = host.wait();
    reader.join().unwrap();
    assert!(served, "{}\n{}", text(&out.stderr), read());
}
