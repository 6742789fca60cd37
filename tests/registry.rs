//! The registry and hot reload: loading, the artifact cache, refusing bad files with the file
//! named, and replacing handlers under load without failing a job.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kiln::registry::{LoadSource, Registry};
use kiln::reload::Watcher;
use kiln::{Change, JobLimits, Outcome};
use tokio::sync::broadcast;

use crate::util::{guest, install, job, run, runtime, variant};

fn registry(dir: &std::path::Path, cache: Option<&std::path::Path>) -> Arc<Registry> {
    Arc::new(Registry::new(
        runtime(),
        dir.to_owned(),
        cache.map(|c| c.to_owned()),
    ))
}

/// Waits for the watcher to report a change about `name` that `accept` likes.
async fn change(
    changes: &mut broadcast::Receiver<Change>,
    accept: impl Fn(&Change) -> bool,
) -> Change {
    let wait = async {
        loop {
            let change = changes.recv().await.expect("watcher is running");
            if accept(&change) {
                return change;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .expect("the watcher reported the change")
}

#[tokio::test]
async fn loads_every_handler_and_then_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    for name in ["echo", "flaky"] {
        install(&guest(name), dir.path(), &format!("{name}.wasm"));
    }
    std::fs::write(dir.path().join("notes.txt"), "not a handler").unwrap();
    let cold = registry(dir.path(), Some(cache.path()));
    cold.load_all().await.unwrap();
    let names: Vec<String> = cold.handlers().iter().map(|h| h.name.clone()).collect();
    assert_eq!(names, ["echo", "flaky"]);
    assert!(
        cold.handlers()
            .iter()
            .all(|h| h.source == LoadSource::Compiled)
    );

    let warm = registry(dir.path(), Some(cache.path()));
    warm.load_all().await.unwrap();
    assert!(
        warm.handlers()
            .iter()
            .all(|h| h.source == LoadSource::Cache)
    );
    let echo = warm.get("echo").unwrap();
    let attempt = run(
        warm.runtime(),
        &echo,
        &job("echo", b"warm"),
        &JobLimits::default(),
    )
    .await;
    assert_eq!(attempt.outcome, Outcome::Ok(b"warm".to_vec()));
}

#[tokio::test]
async fn a_corrupt_cache_artifact_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    install(&guest("echo"), dir.path(), "echo.wasm");
    registry(dir.path(), Some(cache.path()))
        .load_all()
        .await
        .unwrap();
    for entry in std::fs::read_dir(cache.path()).unwrap() {
        std::fs::write(entry.unwrap().path(), b"garbage").unwrap();
    }
    let again = registry(dir.path(), Some(cache.path()));
    again.load_all().await.unwrap();
    assert_eq!(again.get("echo").unwrap().source, LoadSource::Compiled);
}

#[tokio::test]
async fn bad_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("corrupt.wasm"), b"\0asm garbage").unwrap();
    install(&guest("wrongworld"), dir.path(), "other.wasm");
    let registry = registry(dir.path(), None);
    let changes = registry.load_all().await.unwrap();
    assert_eq!(changes.len(), 2);
    assert!(registry.handlers().is_empty());
    let errors = registry.errors();
    assert!(
        errors["corrupt"].contains("`corrupt.wasm`"),
        "{}",
        errors["corrupt"]
    );
    assert!(errors["corrupt"].contains("not a valid WebAssembly component"));
    assert!(
        errors["other"].contains("`other.wasm`"),
        "{}",
        errors["other"]
    );
    assert!(errors["other"].contains("does not match the kiln:handler world"));
}

#[tokio::test]
async fn a_bad_new_version_leaves_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    install(&guest("echo"), dir.path(), "echo.wasm");
    let registry = registry(dir.path(), None);
    registry.load_all().await.unwrap();
    let good = registry.get("echo").unwrap().digest.clone();
    let watcher = Watcher::start(registry.clone()).unwrap();
    let mut changes = watcher.subscribe();

    std::fs::write(dir.path().join("echo.wasm"), b"truncated").unwrap();
    let refused = change(&mut changes, |c| matches!(c, Change::Refused { .. })).await;
    assert!(matches!(&refused, Change::Refused { error, .. } if error.contains("`echo.wasm`")));
    assert_eq!(registry.get("echo").unwrap().digest, good);

    install(&guest("wrongworld"), dir.path(), "echo.wasm");
    let refused = change(&mut changes, |c| matches!(c, Change::Refused { .. })).await;
    assert!(matches!(&refused, Change::Refused { error, .. } if error.contains("kiln:handler")));
    let echo = registry.get("echo").unwrap();
    assert_eq!(echo.digest, good);
    let attempt = run(
        registry.runtime(),
        &echo,
        &job("echo", b"still"),
        &JobLimits::default(),
    )
    .await;
    assert_eq!(attempt.outcome, Outcome::Ok(b"still".to_vec()));
}

#[tokio::test]
async fn handlers_are_added_replaced_and_removed_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let registry = registry(dir.path(), None);
    registry.load_all().await.unwrap();
    let watcher = Watcher::start(registry.clone()).unwrap();
    let mut changes = watcher.subscribe();

    // Editors write a temporary file and rename it over the handler.
    install(&guest("echo"), dir.path(), "greet.wasm");
    change(
        &mut changes,
        |c| matches!(c, Change::Added { name, .. } if name == "greet"),
    )
    .await;
    assert!(registry.get("greet").is_some());

    // A plain `cp` truncates the old file and writes the new one in place.
    let replaced = variant(&std::fs::read(guest("echo")).unwrap(), 1);
    std::fs::write(dir.path().join("greet.wasm"), &replaced).unwrap();
    let digest = kiln::registry::digest(&replaced);
    change(
        &mut changes,
        |c| matches!(c, Change::Replaced { digest: d, .. } if *d == digest),
    )
    .await;

    std::fs::remove_file(dir.path().join("greet.wasm")).unwrap();
    change(&mut changes, |c| matches!(c, Change::Removed { .. })).await;
    assert!(registry.get("greet").is_none());
}

#[tokio::test]
async fn twenty_replacements_under_load_fail_no_job() {
    let dir = tempfile::tempdir().unwrap();
    let echo = std::fs::read(guest("echo")).unwrap();
    std::fs::write(dir.path().join("echo.wasm"), variant(&echo, 0)).unwrap();
    let registry = registry(dir.path(), None);
    registry.load_all().await.unwrap();
    let watcher = Watcher::start(registry.clone()).unwrap();
    let mut changes = watcher.subscribe();

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..4 {
        let (registry, stop, done) = (registry.clone(), stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let payload = format!("job {worker}");
                let handler = registry.get("echo").expect("echo always serves");
                let attempt = run(
                    registry.runtime(),
                    &handler,
                    &job("echo", payload.as_bytes()),
                    &JobLimits::default(),
                )
                .await;
                if attempt.outcome != Outcome::Ok(payload.into_bytes()) {
                    failures.push(attempt.outcome);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    let mut digests = std::collections::HashSet::new();
    for n in 1..=20 {
        let bytes = variant(&echo, n);
        let digest = kiln::registry::digest(&bytes);
        // Alternate between an in-place write and a write-then-rename.
        if n % 2 == 0 {
            std::fs::write(dir.path().join("echo.wasm"), &bytes).unwrap();
        } else {
            let temp = dir.path().join("echo.wasm.swp");
            std::fs::write(&temp, &bytes).unwrap();
            std::fs::rename(&temp, dir.path().join("echo.wasm")).unwrap();
        }
        change(
            &mut changes,
            |c| matches!(c, Change::Replaced { digest: d, .. } if *d == digest),
        )
        .await;
        digests.insert(registry.get("echo").unwrap().digest.clone());
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for worker in workers {
        failures.extend(worker.await.unwrap());
    }
    assert!(failures.is_empty(), "failed jobs: {failures:?}");
    assert_eq!(digests.len(), 20);
    assert!(
        done.load(Ordering::Relaxed) > 20,
        "jobs ran during the reloads"
    );
}

#[tokio::test]
async fn a_component_for_another_contract_is_refused_saying_what_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    install(&guest("nextcontract"), dir.path(), "next.wasm");
    install(&guest("alien"), dir.path(), "alien.wasm");
    let registry = registry(dir.path(), None);
    registry.load_all().await.unwrap();
    let errors = registry.errors();
    assert!(
        errors["next"].contains("built against kiln:handler@0.2.0")
            && errors["next"].contains("serves kiln:handler@0.1.0"),
        "{}",
        errors["next"]
    );
    assert!(
        errors["alien"].contains("imports `acme:secrets/vault@1.0.0`")
            && errors["alien"].contains("does not provide"),
        "{}",
        errors["alien"]
    );
    for error in errors.values() {
        assert!(
            !error.contains("function implementation is missing"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn a_component_whose_memory_starts_over_the_cap_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    install(&guest("bigmem"), dir.path(), "bigmem.wasm");
    let capped = |max_memory| {
        let settings = kiln::RuntimeSettings {
            max_instances: 2,
            max_memory,
            ..kiln::RuntimeSettings::default()
        };
        let runtime = Arc::new(kiln::Runtime::new(settings).unwrap());
        Registry::new(runtime, dir.path().to_owned(), None)
    };
    let small = capped(64 << 20);
    small.load_all().await.unwrap();
    assert!(small.get("bigmem").is_none());
    let error = &small.errors()["bigmem"];
    assert!(
        error.contains("needs 101.1 MiB") && error.contains("64 MiB"),
        "{error}"
    );
    // Under a cap it fits, the same file loads.
    let large = capped(256 << 20);
    large.load_all().await.unwrap();
    assert!(large.get("bigmem").is_some(), "{:?}", large.errors());
}

/// A file that takes seconds to compile holds no other change: while it compiles, an update
/// to `echo` and a new handler both take effect.
#[tokio::test]
async fn one_slow_compile_never_holds_another_files_reload() {
    let dir = tempfile::tempdir().unwrap();
    install(&guest("echo"), dir.path(), "echo.wasm");
    let registry = registry(dir.path(), None);
    registry.load_all().await.unwrap();
    let old = registry.get("echo").unwrap().digest.clone();
    let watcher = Watcher::start(registry.clone()).unwrap();
    let mut changes = watcher.subscribe();

    std::fs::write(
        dir.path().join("bomb.wasm"),
        crate::util::compile_bomb(50_000),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !registry.is_loading("bomb") {
        assert!(
            std::time::Instant::now() < deadline,
            "the bomb never started loading"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let echo_v2 = dir.path().join("staging.bin");
    std::fs::write(&echo_v2, variant(&std::fs::read(guest("echo")).unwrap(), 2)).unwrap();
    std::fs::rename(&echo_v2, dir.path().join("echo.wasm")).unwrap();
    install(&guest("flaky"), dir.path(), "flaky.wasm");
    let mut seen = (false, false);
    while seen != (true, true) {
        match change(
            &mut changes,
            |c| !matches!(c, Change::Refused { name, .. } if name == "bomb"),
        )
        .await
        {
            Change::Replaced { name, .. } if name == "echo" => seen.0 = true,
            Change::Added { name, .. } if name == "flaky" => seen.1 = true,
            _ => {}
        }
    }
    assert!(
        registry.is_loading("bomb"),
        "both changes landed while the bomb compiled"
    );
    assert_ne!(registry.get("echo").unwrap().digest, old);
    let refused = change(&mut changes, |c| matches!(c, Change::Refused { .. })).await;
    assert!(
        matches!(&refused, Change::Refused { name, .. } if name == "bomb"),
        "{refused:?}"
    );
}
