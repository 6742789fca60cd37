//! What the `kiln` binary prints and how it exits, as a script sees it: one JSON key per
//! field, stdout that holds only what a script captures, the README's exit-code table row by
//! row, help on every argument, and the handler-name rule.

use std::io::{BufRead as _, BufReader};
use std::process::{Output, Stdio};

use clap::CommandFactory as _;
use kiln::cli::Cli;
use serde_json::Value;

use crate::cli::Project;
use crate::util::wait_until;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn enqueue(project: &Project, args: &[&str]) -> String {
    let mut all = vec!["enqueue"];
    all.extend_from_slice(args);
    let out = project.run(&all);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out).trim().to_owned()
}

fn status_json(project: &Project, id: &str, extra: &[&str]) -> Value {
    let mut args = vec!["status", id, "--json"];
    args.extend_from_slice(extra);
    let out = project.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn status_json_has_one_key_per_body_and_summarises_large_ones() {
    let project = Project::new(&["echo"], "");
    let json = enqueue(&project, &["echo", "--payload", r#"{"a":1}"#]);
    let view = status_json(&project, &json, &[]);
    assert_eq!(view["payload"]["encoding"], "json");
    assert_eq!(view["payload"]["value"]["a"], 1);
    let printed = stdout(&project.run(&["status", &json, "--json"]));
    assert_eq!(
        printed.matches("\"payload\"").count(),
        1,
        "the payload appears once"
    );

    let binary = project.path().join("binary.bin");
    std::fs::write(&binary, [0xff, 0x00, 0xfe]).unwrap();
    let id = enqueue(
        &project,
        &["echo", "--payload-file", binary.to_str().unwrap()],
    );
    let view = status_json(&project, &id, &[]);
    assert_eq!(view["payload"]["encoding"], "base64");
    assert_eq!(view["payload"]["value"], "/wD+");

    let big = project.path().join("big.txt");
    std::fs::write(&big, "x".repeat(100 << 10)).unwrap();
    let id = enqueue(&project, &["echo", "--payload-file", big.to_str().unwrap()]);
    let view = status_json(&project, &id, &[]);
    assert_eq!(view["payload"]["summarised"], true);
    assert!(view["payload"].get("value").is_none());
    let full = status_json(&project, &id, &["--full"]);
    assert_eq!(full["payload"]["value"].as_str().unwrap().len(), 100 << 10);
}

/// The README's exit-code table, a row at a time.
#[test]
fn exit_codes_follow_the_readme_table() {
    let project = Project::new(&["echo"], "");
    let code = |args: &[&str]| project.run(args).status.code();
    let id = enqueue(&project, &["echo"]);
    // 0: done.
    assert_eq!(code(&["status", &id]), Some(0));
    // 1: the job's state refuses the action (only failed jobs are retried).
    assert_eq!(code(&["retry", &id]), Some(1));
    // 2: usage, invalid input, or something named that does not exist.
    for args in [
        &["status", "nope"][..],
        &["cancel", "nope"],
        &["retry", "nope"],
        &[
            "enqueue",
            "echo",
            "--payload-file",
            "/nonexistent/payload.json",
        ],
        &["enqueue", "echo", "--in", "-5s"],
        &["enqueue", "ghost"],
        &["pause", "nowhere"],
        &["clear", "nowhere"],
        &["jobs", "--queue", "nowhere"],
        &["retry", "--all-failed", "--queue", "nowhere"],
        &["status"],
    ] {
        assert_eq!(code(args), Some(2), "kiln {}", args.join(" "));
    }
    // 3: the store cannot be reached (nothing listens on port 1).
    let unreachable =
        Project::with_store(&["echo"], "", "[store]\nurl = \"redis://127.0.0.1:1\"\n");
    let out = unreachable.run(&["stats"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // 4: `--wait --timeout` stopped waiting (no host runs here); the job is untouched.
    let out = project.run(&["enqueue", "echo", "--wait", "--timeout", "300ms"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("still waiting after 300ms"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_negative_delay_is_refused_by_name() {
    let project = Project::new(&["echo"], "");
    let out = project.run(&["enqueue", "echo", "--in", "-5s"]);
    assert!(
        stderr(&out).contains("--in `-5s` is negative"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_unique_key_note_goes_to_stderr_and_into_json() {
    let project = Project::new(&["echo"], "");
    let first = enqueue(&project, &["echo", "--key", "k"]);
    let out = project.run(&["enqueue", "echo", "--key", "k"]);
    assert_eq!(stdout(&out).trim(), first, "stdout holds only the id");
    assert!(stderr(&out).contains("already enqueued with key `k`"));
    let out = project.run(&["enqueue", "echo", "--key", "k", "--json"]);
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (value["id"].as_str(), &value["existing"]),
        (Some(first.as_str()), &Value::Bool(true))
    );
    assert_eq!(
        project.run(&["enqueue", "echo", "--key", ""]).status.code(),
        Some(2)
    );
}

#[test]
fn enqueue_wait_prints_the_id_on_stderr_and_only_the_result_on_stdout() {
    let project = Project::new(&["echo"], "");
    let host = project.host();
    let out = project.run(&["enqueue", "echo", "--payload", r#"{"n":2}"#, "--wait"]);
    host.terminate();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(result["n"], 2, "echo returns its payload");
    let err = stderr(&out);
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("waiting for job "))
        .unwrap();
    let job = status_json(&project, id, &[]);
    assert_eq!(job["state"], "succeeded");
    assert!(
        !err.contains('\x1b'),
        "no terminal codes on a pipe: {err:?}"
    );
    assert!(
        err.trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("100% succeeded"),
        "{err}"
    );
}

#[test]
fn enqueue_wait_says_when_a_job_was_cancelled() {
    let project = Project::new(&["echo"], "");
    let mut waiting = project
        .kiln()
        .args(["enqueue", "echo", "--wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(waiting.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let id = first.strip_prefix("waiting for job ").unwrap().to_owned();
    assert_eq!(project.run(&["cancel", &id]).status.code(), Some(0));
    let status = waiting.wait().unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert_eq!(status.code(), Some(1));
    assert!(
        rest.iter().any(|l| l == &format!("job {id} was cancelled")),
        "{rest:?}"
    );
}

#[test]
fn action_commands_print_json_when_asked() {
    let project = Project::new(&["echo"], "");
    let id = enqueue(&project, &["echo"]);
    let json = |args: &[&str]| -> Value {
        let out = project.run(args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let other = enqueue(&project, &["echo"]);
    assert_eq!(json(&["pause", "default", "--json"])["paused"], true);
    assert_eq!(json(&["resume", "default", "--json"])["paused"], false);
    assert_eq!(json(&["retry", "--all-failed", "--json"])["retried"], 0);
    assert_eq!(json(&["cancel", &id, "--json"])["outcome"], "cancelled");
    assert_eq!(json(&["cancel", &id, "--json"])["state"], "cancelled");
    assert_eq!(json(&["clear", "default", "--json"])["deleted"], 1);
    let out = project.run(&["status", &other]);
    assert_eq!(out.status.code(), Some(2), "cleared jobs are gone");
}

#[test]
fn every_argument_of_every_command_has_help() {
    let cli = Cli::command();
    for command in cli.get_subcommands() {
        assert!(
            command.get_about().is_some(),
            "`{}` has no help",
            command.get_name()
        );
        for arg in command.get_arguments() {
            if matches!(arg.get_id().as_str(), "help" | "config") {
                continue;
            }
            assert!(
                arg.get_help().is_some(),
                "`kiln {} {}` has no help",
                command.get_name(),
                arg.get_id()
            );
        }
    }
}

#[test]
fn handlers_and_check_print_clean_tables() {
    let project = Project::new(&["echo"], "");
    let out = project
        .kiln()
        .args(["handlers", "--json"])
        .env("KILN_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("handler loaded"), "{}", stderr(&out));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ms = rows[0]["load_ms"].as_f64().unwrap();
    assert_eq!(
        (ms * 100.0).round() / 100.0,
        ms,
        "hundredths of a millisecond: {ms}"
    );
    let file = project.path().join("handlers/echo.wasm");
    let out = project.run(&["check", file.to_str().unwrap()]);
    assert!(!stdout(&out).contains("sha256:"), "{}", stdout(&out));
    assert!(stdout(&out).contains(rows[0]["digest"].as_str().unwrap()));
}

#[test]
fn unknown_kiln_variables_are_refused_by_name() {
    let project = Project::new(&["echo"], "");
    let out = project
        .kiln()
        .arg("stats")
        .env("KILN_STORE_PATH", "x.db")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`KILN_STORE_PATH`"),
        "{}",
        stderr(&out)
    );
}

/// Files that can never serve: each is refused with its reason, logged by the host, listed
/// by `kiln handlers`; `check` and `enqueue` agree with the host.
#[test]
fn handler_files_that_cannot_serve_are_refused_with_a_reason() {
    let project = Project::new(&["echo"], "");
    let dir = project.path().join("handlers");
    let echo = dir.join("echo.wasm");
    for name in ["with space.wasm", ".hidden.wasm", "ünï.wasm", "a..b.wasm"] {
        std::fs::copy(&echo, dir.join(name)).unwrap();
    }
    std::fs::create_dir(dir.join("folder.wasm")).unwrap();
    std::os::unix::fs::symlink(dir.join("gone.wasm"), dir.join("dangling.wasm")).unwrap();
    std::os::unix::fs::symlink(dir.join("loop.wasm"), dir.join("loop.wasm")).unwrap();
    let out = project.run(&["handlers", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let refused = |name: &str| -> String {
        let row = rows
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name}: {rows:?}"));
        row["error"].as_str().unwrap().to_owned()
    };
    assert!(refused("with space.wasm").contains("' ' is not allowed"));
    assert!(refused(".hidden.wasm").contains("start with a letter or digit"));
    assert!(refused("ünï.wasm").contains("'ü' is not allowed"));
    assert!(refused("a..b.wasm").contains("`..`"));
    assert!(refused("folder").contains("is a directory"));
    assert!(refused("dangling").contains("symbolic link"));
    assert!(refused("loop").contains("symbolic link"));

    let out = project.run(&["check", dir.join("with space.wasm").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("would not serve it"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        project.run(&["enqueue", "with space"]).status.code(),
        Some(2)
    );

    let host = project.host();
    wait_until("the host logs the refusals", || {
        all_logs(&project).contains("loop.wasm")
    });
    host.terminate();
    let logs = all_logs(&project);
    for file in [
        "with space.wasm",
        ".hidden.wasm",
        "folder.wasm",
        "dangling.wasm",
    ] {
        assert!(logs.contains(file), "{file} not logged:\n{logs}");
    }
}

/// Every line the project's hosts logged.
fn all_logs(project: &Project) -> String {
    let mut logs = String::new();
    for entry in std::fs::read_dir(project.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            logs.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
    }
    logs
}

/// A job whose handler file was refused fails, after the grace, with the load error.
#[test]
fn a_job_for_a_refused_handler_fails_with_its_load_error() {
    let project = Project::new(&["echo"], "unknown_handler_grace = \"1s\"");
    std::fs::write(project.path().join("handlers/broken.wasm"), b"not wasm").unwrap();
    let id = enqueue(&project, &["broken"]);
    let host = project.host();
    wait_until("the job fails", || {
        status_json(&project, &id, &[])["state"] == "failed"
    });
    host.terminate();
    let error = status_json(&project, &id, &[])["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(error.contains("is not loaded"), "{error}");
    assert!(
        error.contains("not a valid WebAssembly component"),
        "{error}"
    );
}

/// `kiln ... | head`: a reader that goes away ends the command quietly, without a panic.
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let project = Project::new(&["echo"], "");
    for _ in 0..3 {
        enqueue(&project, &["echo"]);
    }
    let mut child = project
        .kiln()
        .args(["jobs", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

#[test]
fn check_refuses_a_component_whose_memory_starts_over_the_given_cap() {
    let project = Project::new(&[], "");
    let file = crate::util::guest("bigmem");
    let file = file.to_str().unwrap();
    let out = project.run(&["check", file, "--max-memory", "64MiB"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("linear memory"), "{}", stdout(&out));
    assert_eq!(project.run(&["check", file]).status.code(), Some(0));
}

/// A host serves each handler as soon as it is compiled: an `echo` job finishes while a file
/// that takes seconds to compile is still compiling (the summary line comes only after it).
#[test]
fn a_host_serves_each_handler_as_soon_as_it_is_ready() {
    let project = Project::new(&["echo"], "");
    let bomb = crate::util::compile_bomb(50_000);
    std::fs::write(project.path().join("handlers/bomb.wasm"), bomb).unwrap();
    let host = project.host();
    let out = project.run(&["enqueue", "echo", "--wait", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let early = all_logs(&project);
    wait_until("the bomb is refused", || {
        all_logs(&project).contains("handlers loaded")
    });
    host.terminate();
    assert!(
        !early.contains("handlers loaded"),
        "echo waited for the bomb:\n{early}"
    );
}

/// A compile bomb is compiled in a child under the budget, refused with the reason, and
/// remembered by digest so the next load does not compile it again; `echo` still loads.
#[test]
fn a_compile_over_its_budget_is_refused_and_remembered() {
    for (keys, reason) in [
        ("compile_timeout = \"1s\"", "took longer than 1s"),
        ("compile_memory = \"64MiB\"", "needed more than 64 MiB"),
    ] {
        let project = Project::new(&["echo"], keys);
        let bomb = crate::util::compile_bomb(100_000);
        std::fs::write(project.path().join("handlers/bomb.wasm"), bomb).unwrap();
        let listed = |project: &Project| -> Vec<Value> {
            let out = project.run(&["handlers", "--json"]);
            assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
            serde_json::from_slice(&out.stdout).unwrap()
        };
        let rows = listed(&project);
        let error = rows[0]["error"].as_str().unwrap();
        assert!(error.contains(reason), "{keys}: {error}");
        assert!(rows[1]["digest"].is_string(), "echo loads beside it");
        let again = listed(&project);
        let error = again[0]["error"].as_str().unwrap();
        assert!(
            error.contains("remembered") && error.contains(reason),
            "{error}"
        );
    }
}

#[test]
fn a_handler_file_over_the_size_cap_is_refused_unread() {
    let project = Project::new(&["echo"], "max_handler_size = \"1KiB\"");
    let out = project.run(&["handlers", "--json"]);
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let error = rows[0]["error"].as_str().unwrap();
    assert!(error.contains("max_handler_size"), "{error}");
}

/// Many jobs waiting for a handler that is not loaded make one warning per handler per
/// interval, not one per job per offer.
#[test]
fn jobs_for_a_missing_handler_warn_once_per_interval() {
    let project = Project::new(&["echo"], "");
    std::fs::write(project.path().join("handlers/broken.wasm"), b"not wasm").unwrap();
    for _ in 0..20 {
        enqueue(&project, &["broken"]);
    }
    let host = project.host();
    let id = enqueue(&project, &["echo", "--wait", "--timeout", "60s"]);
    assert!(!id.is_empty());
    wait_until("every broken job was offered", || {
        all_logs(&project).contains("offers since the last warning")
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    host.terminate();
    let logs = all_logs(&project);
    let warnings = logs.matches("handler is not loaded").count();
    assert_eq!(warnings, 1, "{logs}");
}
