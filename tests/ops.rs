//! The operations layer every front end calls: enqueue resolves and checks a request the same
//! way for every producer (the CLI, handlers' child jobs), and each refusal is a typed error.

use std::path::Path;
use std::sync::Arc;

use kiln::config::Config;
use kiln::ops::{EnqueueRequest, ErrorClass, Ops, OpsError};
use kiln::store::{AnyStore, JobState, Page};

use crate::util::{guest, install};

/// Ops on a fresh embedded store, with `echo` in the handlers directory and `config` added.
fn ops(dir: &Path, config: &str) -> Ops<AnyStore> {
    let handlers = dir.join("handlers");
    std::fs::create_dir(&handlers).unwrap();
    install(&guest("echo"), &handlers, "echo.wasm");
    let text =
        format!("[host]\nhandlers_dir = \"handlers\"\n[store]\npath = \"kiln.db\"\n{config}");
    let config = Config::from_toml_str(&text, &dir.join("config.toml"), Vec::new()).unwrap();
    let store = AnyStore::open_embedded(dir.join("kiln.db")).unwrap();
    Ops::new(Arc::new(config), Arc::new(store))
}

#[tokio::test]
async fn enqueue_resolves_queue_priority_and_attempts_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[queues.mail]\npriority = 7\nmax_attempts = 5\n\
                  [handlers.echo]\nqueue = \"mail\"\n";
    let ops = ops(dir.path(), config);
    let enqueued = ops
        .enqueue(EnqueueRequest::new("echo", "{}"))
        .await
        .unwrap();
    let job = ops.job(&enqueued.id).await.unwrap();
    assert_eq!(
        (job.queue.as_str(), job.priority, job.max_attempts),
        ("mail", 7, 5)
    );
    assert_eq!(job.state, JobState::Waiting);
}

#[tokio::test]
async fn every_refusal_names_what_was_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let ops = ops(dir.path(), "[defaults]\nmax_payload = \"16B\"\n");
    let refused = |request: EnqueueRequest| {
        let ops = ops.clone();
        async move { ops.enqueue(request).await.unwrap_err() }
    };
    let error = refused(EnqueueRequest::new("ghost", "{}")).await;
    assert!(matches!(error, OpsError::UnknownHandler { .. }), "{error}");
    assert_eq!(error.class(), ErrorClass::NotFound);

    let error = refused(EnqueueRequest::new("with space", "{}")).await;
    assert_eq!(error.class(), ErrorClass::Invalid, "{error}");
    assert!(error.to_string().contains("`with space`"), "{error}");

    let mut elsewhere = EnqueueRequest::new("echo", "{}");
    elsewhere.queue = Some("nowhere".into());
    let error = refused(elsewhere).await;
    assert!(
        error
            .to_string()
            .contains("queue `nowhere` is not configured"),
        "{error}"
    );

    let error = refused(EnqueueRequest::new("echo", vec![b'x'; 17])).await;
    assert_eq!(error.class(), ErrorClass::TooLarge, "{error}");

    let mut keyed = EnqueueRequest::new("echo", "{}");
    keyed.unique_key = Some(String::new());
    assert_eq!(refused(keyed).await.class(), ErrorClass::Invalid);

    let error = ops.job("no-such-job").await.unwrap_err();
    assert!(matches!(error, OpsError::JobNotFound(_)), "{error}");
    let error = ops.pause("nowhere").await.unwrap_err();
    assert_eq!(error.class(), ErrorClass::NotFound);
    let error = ops.clear("nowhere").await.unwrap_err();
    assert_eq!(
        error.class(),
        ErrorClass::NotFound,
        "clear checks the queue as pause does"
    );
}

#[tokio::test]
async fn a_batch_is_checked_whole_before_anything_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let ops = ops(dir.path(), "");
    let batch = vec![
        EnqueueRequest::new("echo", "1"),
        EnqueueRequest::new("ghost", "2"),
    ];
    assert!(ops.enqueue_many(batch).await.is_err());
    let stored = ops.list(None, None, Page::default()).await.unwrap();
    assert!(stored.is_empty(), "nothing of a refused batch is stored");
}

#[tokio::test]
async fn stats_lists_every_configured_queue() {
    let dir = tempfile::tempdir().unwrap();
    let ops = ops(dir.path(), "[queues.idle]\n");
    let queues: Vec<String> = ops
        .stats()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.queue)
        .collect();
    assert_eq!(queues, ["default", "idle"]);
}

#[tokio::test]
async fn without_a_handlers_directory_only_configured_handlers_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[host]\nhandlers_dir = \"nowhere\"\n[store]\npath = \"kiln.db\"\n\
                [handlers.mail]\nmax_attempts = 2\n";
    let config = Config::from_toml_str(text, &dir.path().join("config.toml"), Vec::new()).unwrap();
    let store = AnyStore::open_embedded(dir.path().join("kiln.db")).unwrap();
    let ops = Ops::new(Arc::new(config), Arc::new(store));
    ops.enqueue(EnqueueRequest::new("mail", "{}"))
        .await
        .unwrap();
    let error = ops
        .enqueue(EnqueueRequest::new("typo", "{}"))
        .await
        .unwrap_err();
    assert_eq!(error.class(), ErrorClass::NotFound, "{error}");
    assert!(error.to_string().contains("[handlers.typo]"), "{error}");
}
