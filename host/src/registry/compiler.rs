//! Compiling an untrusted component under a budget. A component can be written to make
//! Cranelift spend minutes and gigabytes (deeply nested blocks), so a host compiles in a
//! child process, `kiln compile-handler`: the kernel caps the child's CPU time
//! (`RLIMIT_CPU`), and the parent kills it by pid when its resident memory passes the
//! budget (read from `/proc` every 10 ms) or the wall-clock budget runs out. (Memory is
//! watched rather than capped with `RLIMIT_DATA`: the allocator reserves a large arena up
//! front, which that limit would count although it is never touched.) The bytes go in on stdin, the serialized artifact comes
//! back on stdout, a compile error on stderr. A file over the budget costs one child, never
//! the host's memory or its other compiles.
//!
//! The child builds its engine from the same [`RuntimeSettings`] as the host, so the artifact
//! it returns is one the host's engine accepts.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::config::HostConfig;
use crate::engine::{RuntimeSettings, engine_config};

/// The `kiln` executable of this process, when this process is the `kiln` binary: set by
/// its `main`, so hosts it starts compile in children; a program that embeds the library
/// compiles in-process.
static EXECUTABLE: OnceLock<PathBuf> = OnceLock::new();

/// Declares that this process is the `kiln` binary at `exe` (its `main` calls this).
pub fn set_executable(exe: PathBuf) {
    let _ = EXECUTABLE.set(exe);
}

/// `host.compile_timeout`'s default.
pub const DEFAULT_TIME: Duration = Duration::from_secs(30);
/// `host.compile_memory`'s default.
pub const DEFAULT_MEMORY: u64 = 1 << 30;
/// `host.max_handler_size`'s default: room for components that carry a language runtime.
pub const DEFAULT_MAX_SIZE: u64 = 100 << 20;

/// The budget a host with `config` compiles under (the defaults without one), when this
/// process is the `kiln` binary.
pub fn budget(config: Option<&HostConfig>) -> Option<CompileBudget> {
    Some(CompileBudget {
        exe: EXECUTABLE.get()?.clone(),
        time: config.map_or(DEFAULT_TIME, |c| c.compile_timeout),
        memory: config.map_or(DEFAULT_MEMORY, |c| c.compile_memory),
        max_size: config.map_or(DEFAULT_MAX_SIZE, |c| c.max_handler_size),
    })
}

/// How often the parent looks whether the child has finished.
const POLL: Duration = Duration::from_millis(10);

/// What one compile may use, and the executable that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileBudget {
    /// The `kiln` binary (`std::env::current_exe()` in the host).
    pub exe: PathBuf,
    /// Wall-clock and CPU time for one compile.
    pub time: Duration,
    /// Memory the compiling child may allocate.
    pub memory: u64,
    /// The largest `.wasm` file compiled at all.
    pub max_size: u64,
}

/// Why a budgeted compile produced no artifact.
#[derive(Debug)]
pub enum CompileFailure {
    /// The component is invalid: the compiler's own message.
    Invalid(String),
    /// It ran out of the budget: what ran out, as a phrase.
    OverBudget(String),
}

/// Compiles `bytes` in a child under `budget`; the serialized artifact on success.
pub fn compile(
    budget: &CompileBudget,
    settings: &RuntimeSettings,
    bytes: &[u8],
) -> Result<Vec<u8>, CompileFailure> {
    let spawn_error = |e: std::io::Error| {
        CompileFailure::Invalid(format!(
            "failed to start the compiler `{}`: {e}",
            budget.exe.display()
        ))
    };
    let mut child = Command::new(&budget.exe)
        .arg("compile-handler")
        .args(["--max-instances", &settings.max_instances.to_string()])
        .args(["--max-memory", &settings.max_memory.to_string()])
        .args(["--pooling", &settings.pooling.to_string()])
        .args(["--cpu-seconds", &budget.time.as_secs().max(1).to_string()])
        .env("KILN_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let errors = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stderr.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + budget.time;
    let mut over_memory_seen = false;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(spawn_error)? {
            break Some(status);
        }
        over_memory_seen = resident(child.id()).is_some_and(|rss| rss > budget.memory);
        if over_memory_seen || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL);
    };
    let _ = writer.join();
    let artifact = reader.join().ok().and_then(Result::ok).unwrap_or_default();
    let message = errors.join().unwrap_or_default();
    let over_time = || {
        CompileFailure::OverBudget(format!(
            "compiling it took longer than {} (`host.compile_timeout`)",
            humantime::format_duration(budget.time)
        ))
    };
    let Some(status) = status else {
        return Err(if over_memory_seen {
            over_memory(budget)
        } else {
            over_time()
        });
    };
    if status.success() {
        return Ok(artifact);
    }
    use std::os::unix::process::ExitStatusExt as _;
    match status.signal() {
        Some(libc::SIGXCPU) | Some(libc::SIGKILL) => Err(over_time()),
        Some(_) if message.contains("memory allocation") => Err(over_memory(budget)),
        Some(signal) => Err(CompileFailure::Invalid(format!(
            "the compiler was killed by signal {signal}"
        ))),
        None if message.contains("memory allocation") => Err(over_memory(budget)),
        None => Err(CompileFailure::Invalid(message.trim().to_owned())),
    }
}

/// Resident bytes of process `pid`, from `/proc/PID/statm`.
fn resident(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn over_memory(budget: &CompileBudget) -> CompileFailure {
    CompileFailure::OverBudget(format!(
        "compiling it needed more than {} MiB of memory (`host.compile_memory`)",
        budget.memory >> 20
    ))
}

/// The child's side, `kiln compile-handler`: caps itself, compiles stdin, writes the
/// artifact to stdout. Exit 0 on success, 1 with the error on stderr when invalid.
pub fn child_main(settings: &RuntimeSettings, cpu_seconds: u64) -> ExitCode {
    limit_cpu(cpu_seconds);
    let mut bytes = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("failed to read the component from stdin: {error}");
        return ExitCode::FAILURE;
    }
    // The pool only matters for running; it reserves memory a compile-only engine would
    // count against its cap, and artifacts do not depend on it.
    let compile_only = RuntimeSettings {
        pooling: false,
        ..settings.clone()
    };
    let compiled = Engine::new(&engine_config(&compile_only))
        .and_then(|engine| Component::new(&engine, &bytes))
        .and_then(|component| component.serialize());
    match compiled {
        Ok(artifact) => match std::io::stdout().write_all(&artifact) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("failed to write the artifact: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Caps this process's CPU seconds; past them the kernel stops it (`SIGXCPU`).
#[allow(unsafe_code)]
fn limit_cpu(seconds: u64) {
    let limit = libc::rlimit {
        rlim_cur: seconds,
        rlim_max: seconds,
    };
    // SAFETY: `setrlimit` only reads the struct passed by reference, which lives across the
    // call; lowering this process's own limit cannot break memory safety.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CPU, &limit);
    }
}
