//! Listing a Redis queue that holds a corrupt record: the listing is not a casualty of one
//! bad job. The record is skipped, moved aside as a claim would move it, and every other
//! caller keeps listing.

use kiln::store::{JobState, JobStore, ListFilter, Page, RedisTarget};

use super::{namespace, open, server};
use crate::store::{T0, job};

/// Garbage under a job key listed in the queue's `all` set: `list` returns the sound jobs,
/// and the bad one becomes a failed job saying it was corrupt, its value kept under
/// `garbage:ID`, so the next listing shows it as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_record_is_skipped_and_moved_aside() {
    let server = server();
    let store = open(RedisTarget::server(server.url()).with_namespace(namespace())).await;
    let batch = vec![job("q", "first"), job("q", "second")];
    let good: Vec<String> = store
        .enqueue(batch, T0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    let bad = "q/0190d1a2-0000-7000-8000-0000000000ff";
    let key = store.job_key(bad).unwrap();
    server.cli(&["SET", &key, "not a job record"]);
    server.cli(&["ZADD", &store.queue_key("q", "all"), "0", bad]);

    let everything = ListFilter {
        queue: Some("q".to_owned()),
        state: None,
    };
    let listed = store
        .list(everything.clone(), Page::default())
        .await
        .unwrap();
    let mut ids: Vec<&str> = listed.iter().map(|j| j.id.as_str()).collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = good.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(
        ids, expected,
        "the sound jobs are listed, the corrupt one skipped"
    );

    let aside = store.queue_key("q", &format!("garbage:{bad}"));
    assert_eq!(server.cli(&["GET", &aside]).trim(), "not a job record");
    let moved = store.get(bad).await.unwrap().expect("kept as a failed job");
    assert_eq!(moved.state, JobState::Failed);
    assert!(moved.error.unwrap_or_default().starts_with("corrupt job: "));
    let again = store.list(everything, Page::default()).await.unwrap();
    assert_eq!(again.len(), 3, "the moved job lists as failed");
}
