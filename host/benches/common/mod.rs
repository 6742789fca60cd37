//! What the job benches share: a host that serves only `echo`, on the store that the caller's
//! `[store]` section names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln::config::Config;
use kiln::registry::Registry;
use kiln::{Runtime, RuntimeSettings};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A temp dir holding `handlers/echo.wasm`, the config, and the loaded registry.
pub struct EchoHost {
    pub dir: tempfile::TempDir,
    pub config: Arc<Config>,
    pub registry: Arc<Registry>,
}

/// An echo-only host with `concurrency` slots in queue `default`, keeping up to `keep`
/// succeeded jobs; `store` is the body of the `[store]` table.
pub async fn echo_host(concurrency: usize, store: &str, keep: u64) -> EchoHost {
    let dir = tempfile::tempdir().unwrap();
    let handlers = dir.path().join("handlers");
    std::fs::create_dir(&handlers).unwrap();
    std::fs::copy(
        root().join("target/guests/echo.wasm"),
        handlers.join("echo.wasm"),
    )
    .unwrap();
    let text = format!(
        "[host]\nhandlers_dir = \"handlers\"\nconcurrency = {concurrency}\n\
         [queues.default]\nconcurrency = {concurrency}\n[store]\n{store}\n\
         [defaults]\nretention = {{ succeeded = {{ count = {keep}, age = \"1d\" }} }}\n"
    );
    let config = Arc::new(
        Config::from_toml_str(&text, &dir.path().join("config.toml"), Vec::new()).unwrap(),
    );
    let runtime = Arc::new(
        Runtime::new(RuntimeSettings {
            max_instances: concurrency as u32,
            max_memory: config.max_job_memory(),
            pooling: true,
        })
        .unwrap(),
    );
    let registry = Arc::new(Registry::new(runtime, handlers, None));
    registry.load_all().await.unwrap();
    EchoHost {
        dir,
        config,
        registry,
    }
}
