//! The `kiln` binary end to end: `check`, `handlers`, config errors, the job commands
//! against a running host on the same store, `kill -9` of a host mid-run, and SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kiln::store::{AnyStore, JobState, JobStore, ListFilter, OutcomeClass, Page};
use serde_json::Value;

use crate::util::{guest, install};

/// A scratch project: config.toml, a handlers directory and the SQLite store.
pub struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    /// A project on the embedded store `kiln.db`, created (as `kiln run` would) so the job
    /// commands find it.
    pub fn new(handlers: &[&str], host_keys: &str) -> Project {
        let project = Self::with_store(handlers, host_keys, "[store]\npath = \"kiln.db\"\n");
        project.store();
        project
    }

    /// A project whose config has `store` as its `[store]` table (and anything after it).
    pub fn with_store(handlers: &[&str], host_keys: &str, store: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        let handlers_dir = dir.path().join("handlers");
        std::fs::create_dir(&handlers_dir).unwrap();
        for name in handlers {
            install(&guest(name), &handlers_dir, &format!("{name}.wasm"));
        }
        let config = format!(
            "[host]\nhandlers_dir = \"handlers\"\ncache_dir = \"cache\"\nconcurrency = 4\n\
             {host_keys}\n{store}\n[handlers.panic]\nmax_attempts = 1\n"
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        Project { dir }
    }

    /// The last lines of every host log, for a failing test's message.
    pub fn host_logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                out.push_str(&format!("--- {}\n{tail}\n", path.display()));
            }
        }
        out
    }

    /// Every host log of the project, whole.
    pub fn all_host_logs(&self) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(self.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        out
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn kiln(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command.current_dir(self.path());
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("KILN_")) {
            command.env_remove(key);
        }
        command.env("KILN_CONFIG", self.path().join("config.toml"));
        command.env("KILN_LOG", "warn");
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[])
    }

    /// `kiln ARGS` with `env` added to its environment (config overrides).
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = self.kiln();
        command.args(args).envs(env.iter().copied());
        command.output().expect("kiln runs")
    }

    pub fn host(&self) -> Host {
        self.host_with(&[])
    }

    /// A `kiln run` with `env` added to its environment (config overrides).
    pub fn host_with(&self, env: &[(&str, &str)]) -> Host {
        let log = std::fs::File::create(
            self.path()
                .join(format!("host-{}.log", Instant::now().elapsed().as_nanos())),
        )
        .unwrap();
        let child = self
            .kiln()
            .arg("run")
            .envs(env.iter().copied())
            .env("KILN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kiln run starts");
        Host { child }
    }

    fn store(&self) -> AnyStore {
        AnyStore::open_embedded(self.path().join("kiln.db")).unwrap()
    }
}

/// A running `kiln run`; killed (SIGKILL, by pid) if the test forgets to stop it.
pub struct Host {
    child: Child,
}

impl Host {
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait("SIGTERM")
    }

    /// Sends `kill -SIGNAL` to the host, by pid.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits (bounded) for the host to exit, after `what`.
    pub fn wait(&mut self, what: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "host did not stop after {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn guest_path(name: &str) -> PathBuf {
    guest(name)
}

#[test]
fn check_validates_components_against_the_contract() {
    let project = Project::new(&[], "");
    let progress = guest_path("progress");
    let ok = project.run(&["check", progress.to_str().unwrap()]);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let out = text(&ok.stdout);
    assert!(out.contains("valid:"), "{out}");
    assert!(out.contains("kiln:handler/host@0.1.0 (interface)"), "{out}");
    assert!(out.contains("handle (func)"), "{out}");

    let other = guest_path("wrongworld");
    let bad = project.run(&["check", other.to_str().unwrap(), "--json"]);
    assert_eq!(bad.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("does not match the kiln:handler world")
    );

    let corrupt = project.path().join("corrupt.wasm");
    std::fs::write(&corrupt, b"\0asm\x0d\0\x01\0garbage").unwrap();
    let bad = project.run(&["check", corrupt.to_str().unwrap()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stdout).contains("corrupt.wasm"),
        "{}",
        text(&bad.stdout)
    );
}

#[test]
fn handlers_lists_the_configured_directory() {
    let project = Project::new(&["echo", "flaky"], "");
    std::fs::write(project.path().join("handlers/broken.wasm"), b"nope").unwrap();
    let out = project.run(&["handlers", "--json"]);
    // A refused file makes the listing exit 1, and is listed with its error.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["broken", "echo", "flaky"]);
    assert!(rows[0]["error"].as_str().unwrap().contains("`broken.wasm`"));
    assert_eq!(rows[1]["digest"].as_str().unwrap().len(), 64);
    // The second listing maps the artifacts the first one cached.
    let again: Vec<Value> =
        serde_json::from_slice(&project.run(&["handlers", "--json"]).stdout).unwrap();
    assert_eq!(again[1]["source"], "cache");
}

#[test]
fn a_bad_config_exits_2_naming_key_and_line() {
    let project = Project::new(&[], "");
    let config = project.path().join("config.toml");
    std::fs::write(&config, "[host]\nconcurrency = 4\nwibble = 1\n").unwrap();
    let out = project.run(&["stats"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("host.wibble") && err.contains("line 3"),
        "{err}"
    );

    let out = project.run(&["enqueue"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[test]
fn the_cli_and_a_running_host_share_one_store() {
    // One thread runs the host's jobs, their progress and the store I/O alike.
    let project = Project::new(&["echo", "panic", "progress"], "threads = 1");
    let host = project.host();

    let out = project.run(&["enqueue", "echo", "--payload", r#"{"a":1}"#, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), r#"{"a":1}"#);

    let out = project.run(&[
        "enqueue",
        "panic",
        "--payload",
        r#"{"message":"no"}"#,
        "--wait",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("handler panicked: no"),
        "{}",
        text(&out.stderr)
    );

    let out = project.run(&[
        "enqueue",
        "progress",
        "--payload",
        r#"{"pause_ms":5}"#,
        "--wait",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["progress"]["percent"], 100);

    let later = text(
        &project
            .run(&["enqueue", "echo", "--in", "1h", "--key", "k1"])
            .stdout,
    );
    let again = project.run(&["enqueue", "echo", "--key", "k1", "--json"]);
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["id"], later.trim());
    assert_eq!(again["existing"], true);
    let status = project.run(&["status", later.trim(), "--json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["state"], "scheduled");
    let cancel = project.run(&["cancel", later.trim()]);
    assert!(text(&cancel.stdout).contains("cancelled"));

    let unknown = project.run(&["enqueue", "ghost"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(text(&unknown.stderr).contains("unknown handler `ghost`"));

    let stats = project.run(&["stats", "--json"]);
    let stats: Vec<Value> = serde_json::from_slice(&stats.stdout).unwrap();
    let default = stats.iter().find(|q| q["queue"] == "default").unwrap();
    assert_eq!(default["succeeded"], 2);
    assert_eq!(default["failed"], 1);
    assert_eq!(default["cancelled"], 1);

    assert!(host.terminate().success());
}

async fn count(store: &AnyStore, state: JobState) -> usize {
    let filter = ListFilter {
        queue: None,
        state: Some(state),
    };
    let page = Page {
        offset: 0,
        limit: 10_000,
    };
    store.list(filter, page).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_run_loses_no_job() {
    let project = Project::new(&["progress"], "lease = \"1s\"");
    const JOBS: usize = 40;
    for _ in 0..JOBS {
        let out = project.run(&["enqueue", "progress", "--payload", r#"{"pause_ms":30}"#]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let store = project.store();
    let first = project.host();
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&store, JobState::Succeeded).await < 4 {
        assert!(Instant::now() < deadline, "the first host made no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        count(&store, JobState::Active).await > 0,
        "killed while jobs ran"
    );
    first.kill_9();

    let second = project.host();
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&store, JobState::Succeeded).await < JOBS {
        assert!(Instant::now() < deadline, "jobs were lost");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = Page {
        offset: 0,
        limit: 100,
    };
    let jobs = store.list(ListFilter::default(), page).await.unwrap();
    assert_eq!(jobs.len(), JOBS);
    assert!(jobs.iter().all(|j| j.state == JobState::Succeeded));
    let lost = jobs
        .iter()
        .filter(|j| j.history.iter().any(|a| a.outcome == OutcomeClass::Lost))
        .count();
    assert!(
        lost > 0,
        "the killed host's jobs were recovered with a lost attempt"
    );
    assert!(second.terminate().success());
}

/// Polls (real time, bounded: the host is a real process) until `done` holds.
pub fn until(what: &str, project: &Project, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; host logs:\n{}",
            project.host_logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The job `id` as `kiln status --json` shows it.
pub fn status(project: &Project, id: &str) -> Value {
    let out = project.run(&["status", id, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Two signals while a job on its last attempt runs: the second interrupts it and hands it
/// back uncounted, so after a restart it runs again and ends by its handler's own result.
pub fn two_signals_hand_back_the_last_attempt(project: &Project) {
    let out = project.run(&["enqueue", "spin"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    let mut host = project.host();
    until("the job runs", project, || {
        status(project, &id)["state"] == "active"
    });
    host.signal("TERM");
    until("the host starts its graceful shutdown", project, || {
        project.host_logs().contains("signal received")
    });
    host.signal("TERM");
    let exit = host.wait("two SIGTERMs");
    assert_eq!(exit.code(), Some(130), "{}", project.host_logs());
    let job = status(project, &id);
    assert_eq!(job["state"], "waiting", "{job}");
    assert_eq!(
        job["attempts"], 0,
        "the interrupted attempt is not counted: {job}"
    );

    // Restarted with a fuel budget, `spin` ends by running out of it: its own result.
    let host = project.host_with(&[("KILN_HANDLERS__SPIN__FUEL", "50000000")]);
    until("the job ends", project, || {
        status(project, &id)["state"] == "failed"
    });
    let job = status(project, &id);
    let error = job["error"].as_str().unwrap_or_default();
    assert!(!error.contains("lease expired"), "{job}");
    let outcomes: Vec<&Value> = job["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["outcome"])
        .collect();
    assert_eq!(outcomes, ["out-of-fuel"], "{job}");
    assert!(host.terminate().success());
}

/// The `spin` job's config for [`two_signals_hand_back_the_last_attempt`]: one attempt, no
/// deadline or fuel to end it before the signals do, and a grace longer than the test.
pub const LAST_ATTEMPT_SPIN: &str =
    "shutdown_grace = \"1h\"\n[handlers.spin]\nmax_attempts = 1\ntimeout = \"1h\"\n";

#[test]
fn two_signals_do_not_use_up_the_last_attempt() {
    let project = Project::new(&["spin"], LAST_ATTEMPT_SPIN);
    two_signals_hand_back_the_last_attempt(&project);
}

#[test]
fn the_job_commands_do_not_create_a_store() {
    let project = Project::new(&["echo"], "");
    let path = project.path().join("nonexistent/dir/x.db");
    let env = [("KILN_STORE__PATH", path.to_str().unwrap())];
    for args in [&["enqueue", "echo"][..], &["stats"]] {
        let out = project.run_with(args, &env);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!("job store `{}` does not exist", path.display())),
            "{stderr}"
        );
    }
    assert!(
        !project.path().join("nonexistent").exists(),
        "nothing created"
    );
}

#[test]
fn kiln_run_creates_a_missing_store_and_says_so() {
    let project = Project::new(&["echo"], "");
    let path = project.path().join("new/x.db");
    let host = project.host_with(&[("KILN_STORE__PATH", path.to_str().unwrap())]);
    until("the host runs", &project, || {
        project.host_logs().contains("worker started")
    });
    assert!(
        project
            .host_logs()
            .contains("created a new, empty job store"),
        "{}",
        project.host_logs()
    );
    assert!(path.exists());
    assert!(host.terminate().success());
    let env = [("KILN_STORE__PATH", path.to_str().unwrap())];
    let out = project.run_with(&["enqueue", "echo"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_host_whose_store_file_is_deleted_stops_naming_it() {
    let project = Project::new(&["echo"], "");
    let mut host = project.host();
    until("the host runs", &project, || {
        project.host_logs().contains("worker started")
    });
    let path = project.path().join("kiln.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let exit = host.wait("its store file was deleted");
    assert_eq!(exit.code(), Some(3), "{}", project.host_logs());
    let logs = project.host_logs();
    let message = format!("job store `{}` was deleted or replaced", path.display());
    assert!(logs.contains(&message), "{logs}");
}

/// Makes `path` unwritable for this process: `chmod 444`, and for root (which permissions do
/// not stop) the immutable attribute; undone on drop so the temp dir can be removed.
struct Unwritable<'a>(&'a Path);

impl<'a> Unwritable<'a> {
    fn new(path: &'a Path) -> Self {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o444)).unwrap();
        let root = std::fs::metadata(path).unwrap().uid() == 0;
        if root {
            let status = Command::new("chattr").arg("+i").arg(path).status();
            assert!(status.is_ok_and(|s| s.success()), "chattr +i failed");
        }
        Unwritable(path)
    }
}

impl Drop for Unwritable<'_> {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .arg("-i")
            .arg(self.0)
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn a_read_only_store_is_a_startup_error_naming_it() {
    let project = Project::new(&["echo"], "");
    let path = project.path().join("kiln.db");
    let _unwritable = Unwritable::new(&path);
    let mut host = project.host();
    let exit = host.wait("starting on a read-only store");
    assert_eq!(exit.code(), Some(3), "{}", project.host_logs());
    let logs = project.host_logs();
    let message = format!("job store `{}` is read-only", path.display());
    assert!(logs.contains(&message), "{logs}");
}

#[test]
fn a_job_command_on_a_locked_store_gives_up_naming_it() {
    let project = Project::new(&["echo"], "");
    let path = project.path().join("kiln.db");
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let out = project.run(&["enqueue", "echo"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let named = format!("`{}`", path.display());
    assert!(
        stderr.contains(&named) && stderr.contains("locked"),
        "{stderr}"
    );
    holder.execute_batch("ROLLBACK").unwrap();
}
