//! Config reload: a running `kiln run` re-reads its config file on SIGHUP and when the file
//! changes, and swaps the new config into its [`LiveConfig`].
//!
//! Rules it keeps:
//! - The file is read with [`Config::load`], the same function as at start, so `KILN_*`
//!   overrides from the process environment still apply and every check still runs.
//! - An invalid new config is refused whole: its error (naming the key and line) is logged
//!   and the running config stays in force. Nothing is half applied.
//! - Settings the running host was built from cannot change without a restart
//!   (see [`restart_only`]): a new value of one is logged as "needs a restart" and the running
//!   value kept, while the rest of the new config is adopted. A job memory cap above what
//!   the instance pool reserved at start refuses the new config, since it could not be
//!   honoured.
//! - The file's directory is watched, not the file: editors save by writing a new file and
//!   renaming it over the old one, which a watch on the old file would miss. Events for
//!   other names are ignored, and a burst of events (a save is several) is one reload once
//!   quiet for [`DEBOUNCE`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, LiveConfig};
use crate::registry::describe;

/// Quiet time after the last event for the config file before it is read: a save is a
/// burst of events (write, close, rename), and reading mid-burst would see a partial file.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// A running reloader; dropping it stops watching and listening for SIGHUP.
pub struct Reloader {
    _watcher: Option<RecommendedWatcher>,
    task: JoinHandle<()>,
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reloader {
    /// Listens for SIGHUP and watches `live`'s config file. Fails only when SIGHUP cannot be
    /// listened for; a directory that cannot be watched is logged and SIGHUP still works.
    pub fn start(live: LiveConfig) -> std::io::Result<Reloader> {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let start = live.current();
        let source = start.source.clone();
        let (events, mut changed) = mpsc::unbounded_channel();
        let watcher = watch(&source, events);
        let reserved = start.max_job_memory();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = changed.recv() => {
                        quiet(&mut changed).await;
                        tracing::info!(file = %source.display(), "config file changed: reloading");
                    }
                    Some(()) = hangup.recv() => {
                        tracing::info!(file = %source.display(), "SIGHUP: reloading the config");
                    }
                    else => return,
                }
                reload(&live, reserved);
            }
        });
        Ok(Reloader {
            _watcher: watcher,
            task,
        })
    }
}

/// Watches the directory of `file` and sends on `events` for each event naming `file`.
fn watch(file: &Path, events: mpsc::UnboundedSender<()>) -> Option<RecommendedWatcher> {
    let name = file.file_name()?.to_owned();
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let handler = move |event: notify::Result<notify::Event>| match event {
        Ok(event) if !event.kind.is_access() => {
            if event.paths.iter().any(|p| p.file_name() == Some(&name)) {
                let _ = events.send(());
            }
        }
        Ok(_) => {}
        Err(error) => tracing::warn!("config directory watch error: {error}"),
    };
    let watched = notify::recommended_watcher(handler)
        .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    match watched {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(
                dir = %dir.display(),
                "cannot watch the config file's directory (SIGHUP still reloads): {error}"
            );
            None
        }
    }
}

/// Waits until no event has come for [`DEBOUNCE`].
async fn quiet(events: &mut mpsc::UnboundedReceiver<()>) {
    loop {
        tokio::select! {
            event = events.recv() => if event.is_none() { return },
            () = tokio::time::sleep(DEBOUNCE) => return,
        }
    }
}

/// Reads the config file again and swaps it in, or refuses it; logs which. `reserved` is
/// the per-instance memory the runtime's pool was built with.
pub fn reload(live: &LiveConfig, reserved: u64) {
    let running = live.current();
    let loaded = Config::load(&running.source).map_err(|error| describe(&error));
    match loaded.and_then(|new| adopt(&running, new, reserved)) {
        Ok((new, kept)) => {
            for key in &kept {
                tracing::warn!(
                    key,
                    "config: `{key}` changed but needs a restart; keeping the running value"
                );
            }
            let summary = crate::config::describe_changes(&running, &new);
            live.replace(std::sync::Arc::new(new));
            tracing::info!("config reloaded: {summary}");
        }
        Err(error) => {
            tracing::error!("config refused: {error}; keeping the running config");
        }
    }
}

/// The settings the running host was built from, by key, and whether `new` changes each:
/// the store it opened, the directories its registry and cache use, its runtime's threads
/// and instance pool (sized by `host.concurrency`), its lease (the renewer's period and the
/// reaper's contact rule) and its runtime's compile budget.
fn restart_only(running: &Config, new: &Config) -> [(&'static str, bool); 9] {
    let (old, next) = (&running.host, &new.host);
    [
        ("store", running.store != new.store),
        ("host.handlers_dir", old.handlers_dir != next.handlers_dir),
        ("host.cache_dir", old.cache_dir != next.cache_dir),
        ("host.threads", old.threads != next.threads),
        ("host.concurrency", old.concurrency != next.concurrency),
        ("host.lease", old.lease != next.lease),
        (
            "host.compile_timeout",
            old.compile_timeout != next.compile_timeout,
        ),
        (
            "host.compile_memory",
            old.compile_memory != next.compile_memory,
        ),
        (
            "host.max_handler_size",
            old.max_handler_size != next.max_handler_size,
        ),
    ]
}

/// `new` with the running values of the [`restart_only`] settings, and the keys whose new
/// value was set aside; an error when `new` needs more memory per job than was reserved.
fn adopt(
    running: &Config,
    mut new: Config,
    reserved: u64,
) -> Result<(Config, Vec<&'static str>), String> {
    if new.max_job_memory() > reserved {
        return Err(format!(
            "a job memory cap of {} bytes is above the {reserved} bytes this host reserved \
             per job at start (a larger cap needs a restart)",
            new.max_job_memory()
        ));
    }
    let kept = (restart_only(running, &new).into_iter())
        .filter(|(_, changed)| *changed)
        .map(|(key, _)| key)
        .collect();
    // The host table is all restart-only but for the two graces, read when they apply.
    let (shutdown_grace, unknown_handler_grace) =
        (new.host.shutdown_grace, new.host.unknown_handler_grace);
    new.host = running.host.clone();
    new.host.shutdown_grace = shutdown_grace;
    new.host.unknown_handler_grace = unknown_handler_grace;
    new.store = running.store.clone();
    Ok((new, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let origin = Path::new("/srv/kiln/config.toml");
        Config::from_toml_str(text, origin, Vec::new()).unwrap()
    }

    #[test]
    fn restart_only_settings_are_named_and_kept_and_the_rest_adopted() {
        let running = config("[host]\nconcurrency = 4\nshutdown_grace = \"1s\"\n");
        let reserved = running.max_job_memory();
        let new = config(
            "[host]\nconcurrency = 8\nlease = \"10s\"\nshutdown_grace = \"2s\"\n\
             [store]\npath = \"other.db\"\n[queues.extra]\n",
        );
        let (adopted, kept) = adopt(&running, new, reserved).unwrap();
        assert_eq!(kept, ["store", "host.concurrency", "host.lease"]);
        assert_eq!(adopted.host.concurrency, 4);
        assert_eq!(adopted.host.lease, running.host.lease);
        assert_eq!(adopted.store, running.store);
        assert_eq!(adopted.host.shutdown_grace, Duration::from_secs(2));
        assert!(adopted.queues.contains_key("extra"));
    }

    #[test]
    fn a_memory_cap_above_what_was_reserved_is_refused() {
        let running = config("");
        let reserved = running.max_job_memory();
        let new = config("[handlers.big]\nmemory = \"1GiB\"\n");
        let error = adopt(&running, new, reserved).unwrap_err();
        assert!(error.contains("needs a restart"), "{error}");
        let lower = config("[defaults]\nmemory = \"1MiB\"\n");
        assert!(adopt(&running, lower, reserved).is_ok());
    }
}
