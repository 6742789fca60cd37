//! Shared helpers of the integration tests: building the guest handlers once, a runtime
//! sized for tests, shortcuts for running one attempt, and test certificates.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Once};

use kiln::registry::LoadedHandler;
use kiln::{Attempt, Grants, JobHooks, JobInput, JobLimits, Runtime, RuntimeSettings};
use tokio_util::sync::CancellationToken;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// The directory holding every built guest (`target/guests`), building them on first use.
pub fn guests() -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Command::new("bash")
            .arg(root().join("guests/build.sh"))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running guests/build.sh");
        assert!(status.success(), "guests/build.sh failed");
    });
    root().join("target/guests")
}

/// The built `.wasm` of guest `name`.
pub fn guest(name: &str) -> PathBuf {
    guests().join(format!("{name}.wasm"))
}

/// A runtime sized for tests.
pub fn runtime() -> Arc<Runtime> {
    Arc::new(
        Runtime::new(RuntimeSettings {
            max_instances: 16,
            max_memory: 128 << 20,
            pooling: true,
        })
        .expect("runtime starts"),
    )
}

/// Loads guest `name` without a cache.
pub fn load(runtime: &Runtime, name: &str) -> LoadedHandler {
    runtime
        .load_handler(&guest(name), None)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// A first attempt of a job for `handler` with `payload`.
pub fn job(handler: &str, payload: &[u8]) -> JobInput {
    JobInput {
        id: format!("test-{handler}"),
        handler: handler.into(),
        queue: "default".into(),
        payload: payload.to_vec(),
        attempt: 1,
        max_attempts: 3,
    }
}

/// Runs one attempt with no hooks and no grants.
pub async fn run(
    runtime: &Runtime,
    handler: &LoadedHandler,
    job: &JobInput,
    limits: &JobLimits,
) -> Attempt {
    run_granted(runtime, handler, job, limits, &Grants::default()).await
}

/// Runs one attempt with no hooks and `grants`.
pub async fn run_granted(
    runtime: &Runtime,
    handler: &LoadedHandler,
    job: &JobInput,
    limits: &JobLimits,
    grants: &Grants,
) -> Attempt {
    runtime
        .run(
            handler,
            job,
            limits,
            grants,
            JobHooks::default(),
            &CancellationToken::new(),
        )
        .await
}

/// Copies `file` to `dir/name` by writing a temporary file and renaming it.
pub fn install(file: &Path, dir: &Path, name: &str) {
    let temp = dir.join(format!(".{name}.partial"));
    std::fs::copy(file, &temp).expect("copy handler");
    std::fs::rename(&temp, dir.join(name)).expect("rename handler");
}

/// `bytes` with a custom section appended: the same component, a different digest.
pub fn variant(bytes: &[u8], n: u32) -> Vec<u8> {
    let name = b"kiln-test-variant";
    let body_len = 1 + name.len() + 4;
    let mut out = bytes.to_vec();
    out.push(0); // custom section id
    out.push(u8::try_from(body_len).expect("small section"));
    out.push(u8::try_from(name.len()).expect("short name"));
    out.extend_from_slice(name);
    out.extend_from_slice(&n.to_le_bytes());
    out
}

/// Writes `ca.crt`/`ca.key` (a certificate authority) and `server.crt`/`server.key` (a
/// certificate for 127.0.0.1 that it signed) into `dir`, with the `openssl` command.
pub fn make_certificates(dir: &Path) {
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=kiln test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            "server.crt",
        ],
    ];
    std::fs::write(dir.join("san.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    for args in steps {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "`openssl {}` failed; the TLS test needs openssl (tests/run.sh installs it)",
            args.join(" ")
        );
    }
}

/// Polls `ready` every 50 ms until it holds; panics naming `what` after a minute.
pub fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A component holding one core function of `depth` nested empty blocks: a few bytes per
/// level on disk, and seconds of compiling at a depth of 50,000 (the hostile file behind
/// the rule that one handler's compile never holds another's).
pub fn compile_bomb(depth: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(kind: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(kind);
        leb(body.len(), out);
        out.extend_from_slice(body);
    }
    let mut body = vec![0u8]; // no locals
    body.extend(std::iter::repeat_n([0x02, 0x40], depth).flatten()); // block (empty type)
    body.extend(std::iter::repeat_n(0x0b, depth + 1)); // end of each block, then of the body
    let mut code = vec![1u8];
    leb(body.len(), &mut code);
    code.extend_from_slice(&body);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut module); // one type: [] -> []
    section(3, &[1, 0], &mut module); // one function of that type
    section(10, &code, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component); // one core module
    component
}
