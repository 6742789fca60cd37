//! The job store conformance suite: every `JobStore` implementation must pass these cases.
//!
//! `cases` holds one async function per behaviour, generic over the store; the
//! `conformance!` macro turns them into one `#[tokio::test]` each for a store constructor, so
//! another store runs the very same cases with
//! `crate::store::conformance!(async { (make_store().await, guard) });`.
//! Time is driven by the `now` every operation takes, never by sleeping; only the `wait`
//! cases touch the real clock, and only as a guard against hanging.
//! `embedded` runs the suite on the SQLite store and adds the cases only a file store has
//! (two handles on one file, reopening, schema version, durability modes).

use std::time::Duration;

use kiln::store::{
    AttemptRecord, CancelOutcome, JobState, JobStore, Keep, ListFilter, NewJob, OutcomeClass, Page,
    Progress, RetentionPolicy, RetryTarget, SettleAction, Settlement, StoreError, Timestamp,
};

/// A fixed start time so tests read as offsets from it.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

/// The lease the cases claim with.
pub const LEASE: Duration = Duration::from_secs(30);

/// `T0` plus `secs` seconds.
pub fn at(secs: u64) -> Timestamp {
    T0 + Duration::from_secs(secs)
}

/// A job for `queue` whose payload is `tag`, so tests can tell jobs apart after a claim.
pub fn job(queue: &str, tag: &str) -> NewJob {
    NewJob::new("echo", queue, tag.as_bytes().to_vec())
}

/// The attempt record a worker would write for `job` ending at `now`.
pub fn attempt(job: &kiln::store::Job, outcome: OutcomeClass, now: Timestamp) -> AttemptRecord {
    AttemptRecord {
        attempt: job.attempts,
        digest: Some("sha256:test".to_owned()),
        started_at: job.updated_at,
        ended_at: now,
        outcome,
        message: None,
        wall_ms: 1,
        fuel: Some(42),
        http: None,
        tcp: None,
        log: String::new(),
        log_truncated: false,
    }
}

/// A settlement by `owner` for `job` with an attempt record matching `action`.
pub fn settlement(
    job: &kiln::store::Job,
    owner: &str,
    action: SettleAction,
    now: Timestamp,
) -> Settlement {
    let outcome = match action {
        SettleAction::Succeed { .. } => OutcomeClass::Ok,
        SettleAction::Cancel => OutcomeClass::Cancelled,
        _ => OutcomeClass::Error,
    };
    Settlement {
        id: job.id.clone(),
        owner: owner.to_owned(),
        attempt: Some(attempt(job, outcome, now)),
        action,
    }
}

/// Generates one `#[tokio::test]` per conformance case. `$make` is an async block yielding
/// `(store, guard)`; the guard (e.g. a temp dir or a server) lives until the case ends.
macro_rules! conformance {
    (@cases $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make.await;
                $crate::store::cases::$case(&store).await;
            }
        )+
    };
    ($make:expr) => {
        $crate::store::conformance!(@cases $make;
            enqueue_get_roundtrip, batch_enqueue_keeps_order, priority_then_fifo,
            delayed_jobs_wait_for_run_at, claim_respects_max_and_queue, lease_renewal,
            expired_lease_is_recovered, expired_last_attempt_fails, settle_succeed,
            settle_retry_then_fail, settle_fail_and_cancel, settle_release_uncounts, parked_jobs_wake_on_load,
            stale_settlement_is_not_applied, settled_twice_in_one_batch,
            succeed_and_delete_keeps_nothing, unique_keys,
            pause_and_resume, clear_queue,
            retry_failed_one_and_all, cancel_by_state, list_pages_and_filters, counts_per_queue,
            prune_by_count_and_age, prune_by_each_queues_retention, progress_is_visible, recover_promotes_due_jobs,
            wait_returns_for_waiting_job, wait_wakes_on_enqueue, wait_times_out,
            next_run_at_skips_paused,
            wait_returns_when_a_delayed_job_falls_due);
    };
}
pub(crate) use conformance;

/// The behaviours every store must have, one function per test.
pub mod cases {
    use super::*;

    pub async fn enqueue_get_roundtrip<S: JobStore>(store: &S) {
        let mut new = job("q", "hello");
        new.priority = 7;
        new.max_attempts = 5;
        let out = store.enqueue(vec![new], T0).await.unwrap();
        assert_eq!(out.len(), 1);
        assert!(!out[0].existing);
        let got = store.get(&out[0].id).await.unwrap().expect("job stored");
        assert_eq!(got.id, out[0].id);
        assert_eq!(got.handler, "echo");
        assert_eq!(got.queue, "q");
        assert_eq!(got.payload, b"hello");
        assert_eq!(got.priority, 7);
        assert_eq!(got.state, JobState::Waiting);
        assert_eq!((got.attempts, got.max_attempts), (0, 5));
        assert_eq!(got.run_at, T0);
        assert_eq!((got.created_at, got.updated_at), (T0, T0));
        assert!(got.lease.is_none() && got.result.is_none() && got.error.is_none());
        assert!(got.history.is_empty() && got.finished_at.is_none() && !got.cancel_requested);
        assert!(store.get("no-such-job").await.unwrap().is_none());
    }

    pub async fn batch_enqueue_keeps_order<S: JobStore>(store: &S) {
        let batch = (0..100).map(|i| job("q", &i.to_string())).collect();
        let out = store.enqueue(batch, T0).await.unwrap();
        assert_eq!(out.len(), 100);
        let ids: Vec<_> = out.iter().map(|e| e.id.clone()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids, "ids are unique and sort by creation");
        let claimed = store.claim("q", 100, "w", LEASE, T0).await.unwrap();
        let tags: Vec<_> = claimed.iter().map(|j| j.payload.clone()).collect();
        let expected: Vec<_> = (0..100).map(|i: i32| i.to_string().into_bytes()).collect();
        assert_eq!(tags, expected, "equal priority claims FIFO");
    }

    pub async fn priority_then_fifo<S: JobStore>(store: &S) {
        let mut jobs = Vec::new();
        for (tag, priority) in [
            ("low1", 0),
            ("high1", 5),
            ("low2", 0),
            ("high2", 5),
            ("mid", 1),
        ] {
            let mut new = job("q", tag);
            new.priority = priority;
            jobs.push(new);
        }
        store.enqueue(jobs, T0).await.unwrap();
        let first = store.claim("q", 2, "w", LEASE, T0).await.unwrap();
        let rest = store.claim("q", 10, "w", LEASE, T0).await.unwrap();
        let order: Vec<_> = first
            .iter()
            .chain(&rest)
            .map(|j| String::from_utf8(j.payload.clone()).unwrap())
            .collect();
        assert_eq!(order, ["high1", "high2", "mid", "low1", "low2"]);
    }

    pub async fn delayed_jobs_wait_for_run_at<S: JobStore>(store: &S) {
        let mut delayed = job("q", "later");
        delayed.run_at = Some(at(60));
        let id = store.enqueue(vec![delayed], T0).await.unwrap()[0]
            .id
            .clone();
        let stored = store.get(&id).await.unwrap().unwrap();
        assert_eq!(stored.state, JobState::Scheduled);
        assert_eq!(stored.run_at, at(60));
        let queues = ["q".to_owned()];
        assert_eq!(store.next_run_at(&queues).await.unwrap(), Some(at(60)));
        assert!(
            store
                .claim("q", 10, "w", LEASE, at(59))
                .await
                .unwrap()
                .is_empty()
        );
        let claimed = store.claim("q", 10, "w", LEASE, at(60)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].id, id);
        assert_eq!(store.next_run_at(&queues).await.unwrap(), None);
    }

    pub async fn claim_respects_max_and_queue<S: JobStore>(store: &S) {
        let batch = (0..10).map(|i| job("a", &i.to_string())).collect();
        store.enqueue(batch, T0).await.unwrap();
        store.enqueue(vec![job("b", "other")], T0).await.unwrap();
        assert!(
            store
                .claim("a", 0, "w", LEASE, T0)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.claim("a", 3, "w", LEASE, T0).await.unwrap().len(), 3);
        let rest = store.claim("a", 100, "w", LEASE, T0).await.unwrap();
        assert_eq!(rest.len(), 7);
        assert!(rest.iter().all(|j| j.queue == "a"));
        assert!(
            store
                .claim("a", 100, "w", LEASE, T0)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.claim("b", 100, "w", LEASE, T0).await.unwrap().len(),
            1
        );
    }

    pub async fn lease_renewal<S: JobStore>(store: &S) {
        let id = store.enqueue(vec![job("q", "x")], T0).await.unwrap()[0]
            .id
            .clone();
        let claimed = store.claim("q", 1, "w1", LEASE, T0).await.unwrap();
        let lease = claimed[0].lease.clone().expect("claimed job has a lease");
        assert_eq!((lease.owner.as_str(), lease.expires_at), ("w1", at(30)));
        assert_eq!(claimed[0].state, JobState::Active);
        assert_eq!(claimed[0].attempts, 1);

        let report = store
            .renew(std::slice::from_ref(&id), "w1", LEASE, at(20))
            .await
            .unwrap();
        assert!(report.lost.is_empty() && report.cancel_requested.is_empty());
        let renewed = store.get(&id).await.unwrap().unwrap().lease.unwrap();
        assert_eq!(renewed.expires_at, at(50));
        assert_eq!(
            store.recover(at(40)).await.unwrap(),
            0,
            "renewed lease still held"
        );

        let report = store
            .renew(std::slice::from_ref(&id), "w2", LEASE, at(41))
            .await
            .unwrap();
        assert_eq!(
            report.lost,
            [id.as_str()],
            "a lease not held is reported lost"
        );
        let unknown = store
            .renew(&["gone".to_owned()], "w1", LEASE, at(41))
            .await
            .unwrap();
        assert_eq!(unknown.lost, ["gone"]);
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().lease.unwrap().owner,
            "w1"
        );
    }

    pub async fn expired_lease_is_recovered<S: JobStore>(store: &S) {
        let id = store.enqueue(vec![job("q", "x")], T0).await.unwrap()[0]
            .id
            .clone();
        store.claim("q", 1, "w1", LEASE, T0).await.unwrap();
        assert_eq!(
            store.recover(at(30)).await.unwrap(),
            0,
            "not expired at the deadline"
        );
        assert_eq!(store.recover(at(31)).await.unwrap(), 1);
        let job = store.get(&id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Waiting);
        assert_eq!(job.attempts, 1, "the lost attempt counts");
        assert!(job.lease.is_none());
        assert_eq!(job.history.len(), 1);
        assert_eq!(job.history[0].outcome, OutcomeClass::Lost);
        assert_eq!(job.history[0].attempt, 1);
        let report = store
            .renew(std::slice::from_ref(&id), "w1", LEASE, at(32))
            .await
            .unwrap();
        assert_eq!(report.lost, [id.as_str()]);
        let again = store.claim("q", 1, "w2", LEASE, at(32)).await.unwrap();
        assert_eq!(again[0].attempts, 2);
    }

    pub async fn expired_last_attempt_fails<S: JobStore>(store: &S) {
        let mut new = job("q", "x");
        new.max_attempts = 2;
        let id = store.enqueue(vec![new], T0).await.unwrap()[0].id.clone();
        store.claim("q", 1, "w", LEASE, T0).await.unwrap();
        assert_eq!(store.recover(at(31)).await.unwrap(), 1);
        store.claim("q", 1, "w", LEASE, at(31)).await.unwrap();
        assert_eq!(store.recover(at(62)).await.unwrap(), 1);
        let job = store.get(&id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.attempts, 2);
        assert_eq!(
            job.error.as_deref(),
            Some("lease expired after the last attempt")
        );
        assert_eq!(job.finished_at, Some(at(62)));
        let outcomes: Vec<_> = job.history.iter().map(|a| (a.attempt, a.outcome)).collect();
        assert_eq!(outcomes, [(1, OutcomeClass::Lost), (2, OutcomeClass::Lost)]);
    }

    pub async fn settle_succeed<S: JobStore>(store: &S) {
        store.enqueue(vec![job("q", "x")], T0).await.unwrap();
        let claimed = store.claim("q", 1, "w", LEASE, T0).await.unwrap().remove(0);
        let result = SettleAction::Succeed {
            result: b"done".to_vec(),
        };
        let stale = store
            .settle(vec![settlement(&claimed, "w", result, at(1))], at(1))
            .await
            .unwrap();
        assert!(stale.is_empty());
        let job = store.get(&claimed.id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.result.as_deref(), Some(&b"done"[..]));
        assert_eq!(job.finished_at, Some(at(1)));
        assert!(job.lease.is_none());
        assert_eq!(job.history.len(), 1);
        assert_eq!(job.history[0], attempt(&claimed, OutcomeClass::Ok, at(1)));
    }

    pub async fn settle_retry_then_fail<S: JobStore>(store: &S) {
        let mut new = job("q", "x");
        new.max_attempts = 2;
        store.enqueue(vec![new], T0).await.unwrap();
        let first = store.claim("q", 1, "w", LEASE, T0).await.unwrap().remove(0);
        let retry = SettleAction::Retry {
            at: at(10),
            error: "flaky".to_owned(),
        };
        store
            .settle(vec![settlement(&first, "w", retry, at(1))], at(1))
            .await
            .unwrap();
        let job = store.get(&first.id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Scheduled);
        assert_eq!((job.run_at, job.attempts), (at(10), 1));
        assert_eq!(job.error.as_deref(), Some("flaky"));
        assert!(
            store
                .claim("q", 1, "w", LEASE, at(9))
                .await
                .unwrap()
                .is_empty()
        );
        let second = store
            .claim("q", 1, "w", LEASE, at(10))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(second.attempts, 2);
        let retry = SettleAction::Retry {
            at: at(20),
            error: "still flaky".to_owned(),
        };
        store
            .settle(vec![settlement(&second, "w", retry, at(11))], at(11))
            .await
            .unwrap();
        let job = store.get(&first.id).await.unwrap().unwrap();
        assert_eq!(
            job.state,
            JobState::Failed,
            "no attempts left turns retry into fail"
        );
        assert_eq!(job.error.as_deref(), Some("still flaky"));
        assert_eq!(job.history.len(), 2);
    }

    pub async fn settle_fail_and_cancel<S: JobStore>(store: &S) {
        store
            .enqueue(vec![job("q", "a"), job("q", "b")], T0)
            .await
            .unwrap();
        let claimed = store.claim("q", 2, "w", LEASE, T0).await.unwrap();
        let fail = SettleAction::Fail {
            error: "bad input".to_owned(),
        };
        let batch = vec![
            settlement(&claimed[0], "w", fail, at(1)),
            settlement(&claimed[1], "w", SettleAction::Cancel, at(1)),
        ];
        assert!(store.settle(batch, at(1)).await.unwrap().is_empty());
        let failed = store.get(&claimed[0].id).await.unwrap().unwrap();
        assert_eq!(failed.state, JobState::Failed);
        assert_eq!(failed.error.as_deref(), Some("bad input"));
        assert_eq!(
            failed.attempts, 1,
            "a fatal error does not use the remaining attempts"
        );
        let cancelled = store.get(&claimed[1].id).await.unwrap().unwrap();
        assert_eq!(cancelled.state, JobState::Cancelled);
        assert_eq!(cancelled.finished_at, Some(at(1)));
        assert_eq!(cancelled.history[0].outcome, OutcomeClass::Cancelled);
    }

    pub async fn settle_release_uncounts<S: JobStore>(store: &S) {
        store
            .enqueue(vec![job("q", "a"), job("q", "b")], T0)
            .await
            .unwrap();
        let claimed = store.claim("q", 2, "w", LEASE, T0).await.unwrap();
        let batch = vec![
            settlement(&claimed[0], "w", SettleAction::Release { at: T0 }, T0),
            settlement(&claimed[1], "w", SettleAction::Release { at: at(5) }, T0),
        ];
        assert!(store.settle(batch, T0).await.unwrap().is_empty());
        let now_ready = store.get(&claimed[0].id).await.unwrap().unwrap();
        assert_eq!(now_ready.state, JobState::Waiting);
        assert_eq!(now_ready.attempts, 0, "a release is not an attempt");
        assert!(now_ready.history.is_empty() && now_ready.lease.is_none());
        let later = store.get(&claimed[1].id).await.unwrap().unwrap();
        assert_eq!((later.state, later.run_at), (JobState::Scheduled, at(5)));
        let again = store.claim("q", 1, "w", LEASE, T0).await.unwrap();
        assert_eq!(again[0].id, claimed[0].id);
        assert_eq!(again[0].attempts, 1);
    }

    /// A parked job waits, uncounted, until `unpark` of its handler on its queue wakes it;
    /// a job released or parked for another handler stays where it is, and a park is
    /// woken once.
    pub async fn parked_jobs_wake_on_load<S: JobStore>(store: &S) {
        let mut other = job("q", "other");
        other.handler = "other".to_owned();
        store
            .enqueue(vec![job("q", "parked"), job("q", "released"), other], T0)
            .await
            .unwrap();
        let claimed = store.claim("q", 3, "w", LEASE, T0).await.unwrap();
        let park = SettleAction::Park { until: at(30) };
        let batch = vec![
            settlement(&claimed[0], "w", park.clone(), T0),
            settlement(&claimed[1], "w", SettleAction::Release { at: at(30) }, T0),
            settlement(&claimed[2], "w", park, T0),
        ];
        assert!(store.settle(batch, T0).await.unwrap().is_empty());
        let parked = store.get(&claimed[0].id).await.unwrap().unwrap();
        assert_eq!((parked.state, parked.run_at), (JobState::Scheduled, at(30)));
        assert_eq!(parked.attempts, 0, "a park is not an attempt");
        assert!(parked.history.is_empty());
        assert_eq!(
            store
                .unpark("echo", &["elsewhere".into()], at(1))
                .await
                .unwrap(),
            0
        );
        assert_eq!(store.unpark("echo", &["q".into()], at(1)).await.unwrap(), 1);
        assert_eq!(store.unpark("echo", &["q".into()], at(1)).await.unwrap(), 0);
        let woken = store.claim("q", 3, "w", LEASE, at(1)).await.unwrap();
        let ids: Vec<_> = woken.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(
            ids,
            vec![claimed[0].id.as_str()],
            "only the parked echo job"
        );
        assert_eq!(woken[0].attempts, 1);
        for id in [&claimed[1].id, &claimed[2].id] {
            let job = store.get(id).await.unwrap().unwrap();
            assert_eq!((job.state, job.run_at), (JobState::Scheduled, at(30)));
        }
        // The woken job parked again, then settled another way: nothing is left to wake.
        let again = vec![settlement(
            &woken[0],
            "w",
            SettleAction::Park { until: at(60) },
            at(1),
        )];
        assert!(store.settle(again, at(1)).await.unwrap().is_empty());
        let reclaimed = store.claim("q", 3, "w", LEASE, at(60)).await.unwrap();
        let ours = reclaimed
            .iter()
            .find(|j| j.id == claimed[0].id)
            .expect("due again");
        let done = SettleAction::Succeed {
            result: b"ok".to_vec(),
        };
        let batch = vec![settlement(ours, "w", done, at(61))];
        assert!(store.settle(batch, at(61)).await.unwrap().is_empty());
        assert_eq!(
            store.unpark("echo", &["q".into()], at(62)).await.unwrap(),
            0
        );
        let done = store.get(&claimed[0].id).await.unwrap().unwrap();
        assert_eq!(done.state, JobState::Succeeded);
    }

    /// The second settlement of a job in one batch finds it settled already: stale.
    pub async fn settled_twice_in_one_batch<S: JobStore>(store: &S) {
        store.enqueue(vec![job("q", "x")], T0).await.unwrap();
        let held = store.claim("q", 1, "a", LEASE, T0).await.unwrap().remove(0);
        let first = SettleAction::Succeed {
            result: b"first".to_vec(),
        };
        let second = SettleAction::Fail {
            error: "second".to_owned(),
        };
        let stale = store
            .settle(
                vec![
                    settlement(&held, "a", first, at(1)),
                    settlement(&held, "a", second, at(1)),
                ],
                at(1),
            )
            .await
            .unwrap();
        assert_eq!(stale, [held.id.as_str()]);
        let job = store.get(&held.id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.result.as_deref(), Some(&b"first"[..]));
        assert_eq!((job.error, job.history.len()), (None, 1));
    }

    pub async fn succeed_and_delete_keeps_nothing<S: JobStore>(store: &S) {
        let mut unique = job("q", "b");
        unique.unique_key = Some("report-7".to_owned());
        store
            .enqueue(vec![job("q", "a"), unique.clone(), job("q", "c")], T0)
            .await
            .unwrap();
        let claimed = store.claim("q", 3, "w", LEASE, T0).await.unwrap();
        let [a, b, c] = &claimed[..] else {
            panic!("claimed {claimed:?}")
        };
        let delete = |job, owner| settlement(job, owner, SettleAction::SucceedAndDelete, at(1));
        let mut stale = store
            .settle(
                vec![
                    delete(a, "w"),
                    delete(b, "w"),
                    delete(c, "x"),
                    delete(a, "w"),
                ],
                at(1),
            )
            .await
            .unwrap();
        stale.sort();
        let mut expected = [a.id.as_str(), c.id.as_str()];
        expected.sort();
        assert_eq!(stale, expected, "c is not x's; a went once");
        assert!(store.get(&a.id).await.unwrap().is_none());
        assert!(store.get(&b.id).await.unwrap().is_none());
        let kept = store.get(&c.id).await.unwrap().unwrap();
        assert_eq!(kept.state, JobState::Active);
        let counts = &store.counts().await.unwrap()[0];
        assert_eq!((counts.active, counts.succeeded), (1, 0));
        let listed = store
            .list(ListFilter::default(), Page::default())
            .await
            .unwrap();
        let ids: Vec<_> = listed.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, [c.id.as_str()]);
        let again = store.enqueue(vec![unique], at(2)).await.unwrap();
        assert!(
            !again[0].existing,
            "the deleted job's unique key was released"
        );
        let stale = store.settle(vec![delete(a, "w")], at(3)).await.unwrap();
        assert_eq!(stale, [a.id.as_str()], "a deleted job is not settled again");
    }

    pub async fn stale_settlement_is_not_applied<S: JobStore>(store: &S) {
        store.enqueue(vec![job("q", "x")], T0).await.unwrap();
        let by_a = store.claim("q", 1, "a", LEASE, T0).await.unwrap().remove(0);
        store.recover(at(31)).await.unwrap();
        let by_b = store
            .claim("q", 1, "b", LEASE, at(31))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(by_a.id, by_b.id);
        let late = SettleAction::Succeed {
            result: b"from a".to_vec(),
        };
        let stale = store
            .settle(vec![settlement(&by_a, "a", late, at(32))], at(32))
            .await
            .unwrap();
        assert_eq!(stale, [by_a.id.as_str()]);
        let job = store.get(&by_a.id).await.unwrap().unwrap();
        assert_eq!(job.state, JobState::Active);
        assert_eq!(job.lease.unwrap().owner, "b");
        assert_eq!(
            job.history.len(),
            1,
            "only the lost record, nothing from a's late settle"
        );
        let from_b = SettleAction::Succeed {
            result: b"from b".to_vec(),
        };
        let stale = store
            .settle(vec![settlement(&by_b, "b", from_b, at(33))], at(33))
            .await
            .unwrap();
        assert!(stale.is_empty());
        let job = store.get(&by_a.id).await.unwrap().unwrap();
        assert_eq!(job.result.as_deref(), Some(&b"from b"[..]));
        let twice = SettleAction::Fail {
            error: "again".to_owned(),
        };
        let stale = store
            .settle(vec![settlement(&by_b, "b", twice, at(34))], at(34))
            .await
            .unwrap();
        assert_eq!(stale.len(), 1, "a finished job cannot be settled twice");
    }

    pub async fn unique_keys<S: JobStore>(store: &S) {
        let keyed = |tag: &str| {
            let mut new = job("q", tag);
            new.unique_key = Some("report-42".to_owned());
            new
        };
        let out = store
            .enqueue(vec![keyed("first"), keyed("dup-in-batch")], T0)
            .await
            .unwrap();
        assert!(!out[0].existing);
        assert!(out[1].existing);
        assert_eq!(out[0].id, out[1].id);
        let again = store.enqueue(vec![keyed("later")], at(1)).await.unwrap();
        assert_eq!(
            (again[0].id.as_str(), again[0].existing),
            (out[0].id.as_str(), true)
        );

        let claimed = store.claim("q", 10, "w", LEASE, at(1)).await.unwrap();
        assert_eq!(claimed.len(), 1, "duplicates were not inserted");
        let while_active = store.enqueue(vec![keyed("active")], at(2)).await.unwrap();
        assert!(while_active[0].existing);
        let done = SettleAction::Succeed { result: Vec::new() };
        store
            .settle(vec![settlement(&claimed[0], "w", done, at(3))], at(3))
            .await
            .unwrap();
        let after = store.enqueue(vec![keyed("after")], at(4)).await.unwrap();
        assert!(!after[0].existing);
        assert_ne!(after[0].id, out[0].id);
    }

    pub async fn pause_and_resume<S: JobStore>(store: &S) {
        store.enqueue(vec![job("q", "x")], T0).await.unwrap();
        store.pause("q").await.unwrap();
        store.pause("q").await.unwrap();
        assert!(
            store
                .claim("q", 10, "w", LEASE, T0)
                .await
                .unwrap()
                .is_empty()
        );
        let counts = store.counts().await.unwrap();
        assert!(
            counts
                .iter()
                .any(|c| c.queue == "q" && c.paused && c.waiting == 1)
        );
        store.pause("idle").await.unwrap();
        let counts = store.counts().await.unwrap();
        assert!(counts.iter().any(|c| c.queue == "idle" && c.paused));
        store.resume("q").await.unwrap();
        assert_eq!(store.claim("q", 10, "w", LEASE, T0).await.unwrap().len(), 1);
        let counts = store.counts().await.unwrap();
        assert!(counts.iter().any(|c| c.queue == "q" && !c.paused));
    }

    pub async fn clear_queue<S: JobStore>(store: &S) {
        let mut delayed = job("q", "scheduled");
        delayed.run_at = Some(at(100));
        store
            .enqueue(
                vec![job("q", "active"), job("q", "w1"), job("q", "w2"), delayed],
                T0,
            )
            .await
            .unwrap();
        store.enqueue(vec![job("other", "keep")], T0).await.unwrap();
        let active = store.claim("q", 1, "w", LEASE, T0).await.unwrap().remove(0);
        assert_eq!(store.clear("q").await.unwrap(), 3);
        let left = store
            .list(ListFilter::default(), Page::default())
            .await
            .unwrap();
        let mut ids: Vec<_> = left.iter().map(|j| j.payload.clone()).collect();
        ids.sort();
        assert_eq!(ids, [b"active".to_vec(), b"keep".to_vec()]);
        assert_eq!(
            store.get(&active.id).await.unwrap().unwrap().state,
            JobState::Active
        );
    }

    /// Enqueues one job in each of `queues` and fails each for good.
    async fn failed_jobs<S: JobStore>(store: &S, queues: &[&str]) -> Vec<String> {
        let mut ids = Vec::new();
        for queue in queues {
            store.enqueue(vec![job(queue, "x")], T0).await.unwrap();
            let claimed = store
                .claim(queue, 1, "w", LEASE, T0)
                .await
                .unwrap()
                .remove(0);
            let fail = SettleAction::Fail {
                error: "boom".to_owned(),
            };
            store
                .settle(vec![settlement(&claimed, "w", fail, T0)], T0)
                .await
                .unwrap();
            ids.push(claimed.id);
        }
        ids
    }

    pub async fn retry_failed_one_and_all<S: JobStore>(store: &S) {
        let ids = failed_jobs(store, &["a", "a", "b", "c"]).await;
        let revived = store
            .retry_failed(RetryTarget::One(ids[0].clone()), at(1))
            .await
            .unwrap();
        assert_eq!(revived, 1);
        let job = store.get(&ids[0]).await.unwrap().unwrap();
        assert_eq!((job.state, job.attempts), (JobState::Waiting, 0));
        assert_eq!(job.history.len(), 1, "history is kept");
        assert!(job.finished_at.is_none());
        let again = store
            .retry_failed(RetryTarget::One(ids[0].clone()), at(1))
            .await;
        assert!(matches!(
            again,
            Err(StoreError::InvalidState {
                state: JobState::Waiting,
                ..
            })
        ));
        let missing = store
            .retry_failed(RetryTarget::One("nope".to_owned()), at(1))
            .await;
        assert!(matches!(missing, Err(StoreError::NotFound(id)) if id == "nope"));
        let in_a = RetryTarget::AllFailed {
            queue: Some("a".to_owned()),
        };
        assert_eq!(store.retry_failed(in_a, at(1)).await.unwrap(), 1);
        assert_eq!(
            store.get(&ids[2]).await.unwrap().unwrap().state,
            JobState::Failed
        );
        let all = RetryTarget::AllFailed { queue: None };
        assert_eq!(store.retry_failed(all, at(1)).await.unwrap(), 2);
        let claimed = store.claim("b", 1, "w", LEASE, at(1)).await.unwrap();
        assert_eq!(
            claimed[0].attempts, 1,
            "a revived job starts counting again"
        );
    }

    pub async fn cancel_by_state<S: JobStore>(store: &S) {
        let out = store
            .enqueue(vec![job("q", "running"), job("q", "waiting")], T0)
            .await
            .unwrap();
        let running = store.claim("q", 1, "w", LEASE, T0).await.unwrap().remove(0);
        assert_eq!(
            store.cancel(&out[1].id, at(1)).await.unwrap(),
            CancelOutcome::Cancelled
        );
        let waiting = store.get(&out[1].id).await.unwrap().unwrap();
        assert_eq!(
            (waiting.state, waiting.finished_at),
            (JobState::Cancelled, Some(at(1)))
        );

        assert_eq!(
            store.cancel(&running.id, at(1)).await.unwrap(),
            CancelOutcome::Requested
        );
        let job = store.get(&running.id).await.unwrap().unwrap();
        assert!(job.cancel_requested);
        assert_eq!(job.state, JobState::Active);
        let report = store
            .renew(std::slice::from_ref(&running.id), "w", LEASE, at(2))
            .await
            .unwrap();
        assert_eq!(report.cancel_requested, [running.id.as_str()]);
        assert!(report.lost.is_empty());
        let retry = SettleAction::Retry {
            at: at(3),
            error: "interrupted".to_owned(),
        };
        store
            .settle(vec![settlement(&running, "w", retry, at(3))], at(3))
            .await
            .unwrap();
        let job = store.get(&running.id).await.unwrap().unwrap();
        assert_eq!(
            job.state,
            JobState::Cancelled,
            "a requested cancel wins over a retry"
        );

        assert_eq!(
            store.cancel(&running.id, at(4)).await.unwrap(),
            CancelOutcome::AlreadyFinished(JobState::Cancelled)
        );
        assert!(matches!(
            store.cancel("nope", at(4)).await,
            Err(StoreError::NotFound(_))
        ));
    }

    pub async fn list_pages_and_filters<S: JobStore>(store: &S) {
        for i in 0..5 {
            store
                .enqueue(vec![job("a", &format!("a{i}"))], at(i))
                .await
                .unwrap();
        }
        store.enqueue(vec![job("b", "b0")], at(10)).await.unwrap();
        store.claim("a", 1, "w", LEASE, at(10)).await.unwrap();
        let tags = |jobs: Vec<kiln::store::Job>| -> Vec<String> {
            jobs.into_iter()
                .map(|j| String::from_utf8(j.payload).unwrap())
                .collect()
        };
        let all = store
            .list(ListFilter::default(), Page::default())
            .await
            .unwrap();
        assert_eq!(
            tags(all),
            ["b0", "a4", "a3", "a2", "a1", "a0"],
            "newest first"
        );
        let page = Page {
            offset: 1,
            limit: 2,
        };
        let in_a = ListFilter {
            queue: Some("a".to_owned()),
            state: None,
        };
        assert_eq!(tags(store.list(in_a, page).await.unwrap()), ["a3", "a2"]);
        let active = ListFilter {
            queue: None,
            state: Some(JobState::Active),
        };
        assert_eq!(
            tags(store.list(active, Page::default()).await.unwrap()),
            ["a0"]
        );
        let waiting_in_a = ListFilter {
            queue: Some("a".to_owned()),
            state: Some(JobState::Waiting),
        };
        let beyond = Page {
            offset: 4,
            limit: 10,
        };
        assert!(store.list(waiting_in_a, beyond).await.unwrap().is_empty());
    }

    pub async fn counts_per_queue<S: JobStore>(store: &S) {
        let mut delayed = job("a", "later");
        delayed.run_at = Some(at(60));
        store
            .enqueue(
                vec![job("a", "1"), job("a", "2"), job("a", "3"), delayed],
                T0,
            )
            .await
            .unwrap();
        store.enqueue(vec![job("b", "1")], T0).await.unwrap();
        let claimed = store.claim("a", 2, "w", LEASE, T0).await.unwrap();
        let done = SettleAction::Succeed { result: Vec::new() };
        store
            .settle(vec![settlement(&claimed[0], "w", done, T0)], T0)
            .await
            .unwrap();
        let counts = store.counts().await.unwrap();
        assert_eq!(counts.len(), 2);
        let a = &counts[0];
        assert_eq!(a.queue, "a");
        assert_eq!(
            (
                a.scheduled,
                a.waiting,
                a.active,
                a.succeeded,
                a.failed,
                a.cancelled
            ),
            (1, 1, 1, 1, 0, 0)
        );
        assert!(!a.paused);
        assert_eq!((counts[1].queue.as_str(), counts[1].waiting), ("b", 1));
    }

    /// Runs one job of `queue` to `action` at `now`.
    async fn finish<S: JobStore>(store: &S, queue: &str, action: SettleAction, now: Timestamp) {
        store.enqueue(vec![job(queue, "x")], now).await.unwrap();
        let claimed = store
            .claim(queue, 1, "w", LEASE, now)
            .await
            .unwrap()
            .remove(0);
        store
            .settle(vec![settlement(&claimed, "w", action, now)], now)
            .await
            .unwrap();
    }

    pub async fn prune_by_count_and_age<S: JobStore>(store: &S) {
        for i in 0..5 {
            let ok = SettleAction::Succeed { result: Vec::new() };
            finish(store, "q", ok, at(i * 100)).await;
            let fail = SettleAction::Fail {
                error: "x".to_owned(),
            };
            finish(store, "q", fail, at(i * 100)).await;
        }
        store.enqueue(vec![job("q", "pending")], T0).await.unwrap();
        let by_count = kiln::store::Retention {
            succeeded: Keep {
                count: 2,
                ..Keep::ALL
            },
            ..Default::default()
        };
        assert_eq!(
            store
                .prune(&RetentionPolicy::uniform(by_count), at(1000))
                .await
                .unwrap(),
            3
        );
        let succeeded = ListFilter {
            queue: None,
            state: Some(JobState::Succeeded),
        };
        let kept = store.list(succeeded, Page::default()).await.unwrap();
        let finished: Vec<_> = kept.iter().map(|j| j.finished_at.unwrap()).collect();
        assert_eq!(
            finished,
            [at(400), at(300)],
            "the most recently finished are kept"
        );

        let by_age = kiln::store::Retention {
            failed: Keep {
                age: Duration::from_secs(250),
                ..Keep::ALL
            },
            ..Default::default()
        };
        assert_eq!(
            store
                .prune(&RetentionPolicy::uniform(by_age), at(500))
                .await
                .unwrap(),
            3,
            "failed at 0, 100, 200"
        );
        let counts = store.counts().await.unwrap();
        assert_eq!(
            (counts[0].succeeded, counts[0].failed, counts[0].waiting),
            (2, 2, 1)
        );
    }

    /// A queue with its own retention is pruned by it; the others by the default, each
    /// keeping its own count.
    pub async fn prune_by_each_queues_retention<S: JobStore>(store: &S) {
        for queue in ["own", "a", "b"] {
            for i in 0..4 {
                let ok = SettleAction::Succeed { result: Vec::new() };
                finish(store, queue, ok, at(i * 100)).await;
            }
        }
        let keep = |n| kiln::store::Retention {
            succeeded: Keep {
                count: n,
                ..Keep::ALL
            },
            ..Default::default()
        };
        let policy = RetentionPolicy {
            default: keep(3),
            queues: [("own".to_owned(), keep(1))].into(),
        };
        assert_eq!(store.prune(&policy, at(1000)).await.unwrap(), 3 + 1 + 1);
        let counts = store.counts().await.unwrap();
        let succeeded: Vec<_> = counts
            .iter()
            .map(|c| (c.queue.as_str(), c.succeeded))
            .collect();
        assert_eq!(succeeded, [("a", 3), ("b", 3), ("own", 1)]);
        let own = ListFilter {
            queue: Some("own".to_owned()),
            state: Some(JobState::Succeeded),
        };
        let kept = store.list(own, Page::default()).await.unwrap();
        assert_eq!(kept[0].finished_at, Some(at(300)), "the newest is kept");
    }

    pub async fn progress_is_visible<S: JobStore>(store: &S) {
        store.enqueue(vec![job("q", "x")], T0).await.unwrap();
        let claimed = store.claim("q", 1, "w", LEASE, T0).await.unwrap().remove(0);
        let progress = Progress {
            percent: 40,
            message: Some("resizing".to_owned()),
        };
        store
            .progress(&claimed.id, "w", progress.clone(), at(1))
            .await
            .unwrap();
        let job = store.get(&claimed.id).await.unwrap().unwrap();
        assert_eq!(job.progress, Some(progress));
        let over = Progress {
            percent: 250,
            message: None,
        };
        store.progress(&claimed.id, "w", over, at(2)).await.unwrap();
        let job = store.get(&claimed.id).await.unwrap().unwrap();
        assert_eq!(job.progress.unwrap().percent, 100);
        let other = Progress {
            percent: 1,
            message: None,
        };
        let denied = store.progress(&claimed.id, "intruder", other, at(2)).await;
        assert!(matches!(denied, Err(StoreError::LeaseNotHeld { .. })));
    }

    pub async fn recover_promotes_due_jobs<S: JobStore>(store: &S) {
        let mut delayed = job("q", "x");
        delayed.run_at = Some(at(10));
        let id = store.enqueue(vec![delayed], T0).await.unwrap()[0]
            .id
            .clone();
        store.recover(at(9)).await.unwrap();
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().state,
            JobState::Scheduled
        );
        store.recover(at(10)).await.unwrap();
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().state,
            JobState::Waiting
        );
    }

    /// Guards the `wait` cases against hanging: a store that never wakes fails the case.
    const HANG_GUARD: Duration = Duration::from_secs(20);

    pub async fn wait_returns_for_waiting_job<S: JobStore>(store: &S) {
        store.enqueue(vec![job("q", "x")], T0).await.unwrap();
        let queues = ["other".to_owned(), "q".to_owned()];
        let waited = tokio::time::timeout(HANG_GUARD, store.wait(&queues, T0, FOREVER));
        waited
            .await
            .expect("wait returns when a job is waiting")
            .unwrap();
    }

    /// Waits with no timeout to speak of.
    const FOREVER: Duration = Duration::from_secs(3600);

    /// A delayed job, so the "a job is waiting" check cannot end `wait`: the wake-up does, or,
    /// if the enqueue won the race with the check, the job falling due a second later.
    /// Waking on it matters: it may be due before the time the idle worker sleeps until.
    pub async fn wait_wakes_on_enqueue<S: JobStore>(store: &S) {
        let queues = ["q".to_owned()];
        let waiter = store.wait(&queues, T0, FOREVER);
        let producer = async {
            tokio::task::yield_now().await;
            store.enqueue(vec![delayed("q", 1)], T0).await.unwrap();
        };
        let (waited, ()) = tokio::join!(tokio::time::timeout(HANG_GUARD, waiter), producer);
        waited.expect("wait wakes on enqueue").unwrap();
    }

    pub async fn wait_returns_when_a_delayed_job_falls_due<S: JobStore>(store: &S) {
        store.enqueue(vec![delayed("q", 1)], T0).await.unwrap();
        let queues = ["q".to_owned()];
        let due = tokio::time::timeout(HANG_GUARD, store.wait(&queues, at(5), FOREVER));
        due.await
            .expect("wait returns at once for a due job")
            .unwrap();
        let soon = tokio::time::timeout(HANG_GUARD, store.wait(&queues, T0, FOREVER));
        soon.await
            .expect("wait returns when the delayed job falls due")
            .unwrap();
    }

    fn delayed(queue: &str, secs: u64) -> NewJob {
        let mut new = job(queue, "later");
        new.run_at = Some(at(secs));
        new
    }

    pub async fn wait_times_out<S: JobStore>(store: &S) {
        store.enqueue(vec![job("paused", "x")], T0).await.unwrap();
        store.pause("paused").await.unwrap();
        let queues = ["q".to_owned(), "paused".to_owned()];
        let waited = tokio::time::timeout(
            HANG_GUARD,
            store.wait(&queues, T0, Duration::from_millis(50)),
        );
        waited.await.expect("wait honours its timeout").unwrap();
    }

    pub async fn next_run_at_skips_paused<S: JobStore>(store: &S) {
        store
            .enqueue(
                vec![delayed("a", 50), delayed("b", 20), delayed("a", 30)],
                T0,
            )
            .await
            .unwrap();
        let both = ["a".to_owned(), "b".to_owned()];
        assert_eq!(store.next_run_at(&both).await.unwrap(), Some(at(20)));
        store.pause("b").await.unwrap();
        assert_eq!(store.next_run_at(&both).await.unwrap(), Some(at(30)));
        assert_eq!(store.next_run_at(&["none".to_owned()]).await.unwrap(), None);
    }
}

/// The SQLite store: the conformance suite plus what only a file store has.
mod embedded {
    use std::path::Path;

    use kiln::store::{AnyStore, Durability, EmbeddedStore};
    use tempfile::TempDir;

    use super::*;

    fn open(path: &Path) -> EmbeddedStore {
        EmbeddedStore::open(path, Durability::Normal).expect("open the store")
    }

    async fn fresh() -> (AnyStore, TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = AnyStore::open_embedded(dir.path().join("kiln.db")).unwrap();
        (store, dir)
    }

    conformance!(fresh());

    #[tokio::test]
    async fn two_handles_share_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let host = open(&dir.path().join("kiln.db"));
        let cli = open(&dir.path().join("kiln.db"));
        let id = cli.enqueue(vec![job("q", "x")], T0).await.unwrap()[0]
            .id
            .clone();
        let claimed = host.claim("q", 10, "host", LEASE, T0).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            cli.cancel(&id, at(1)).await.unwrap(),
            CancelOutcome::Requested
        );
        let report = host
            .renew(std::slice::from_ref(&id), "host", LEASE, at(2))
            .await
            .unwrap();
        assert_eq!(report.cancel_requested, [id]);
    }

    #[tokio::test]
    async fn wait_wakes_on_another_handles_enqueue() {
        let dir = tempfile::tempdir().unwrap();
        let host = open(&dir.path().join("kiln.db"));
        let cli = open(&dir.path().join("kiln.db"));
        let queues = ["q".to_owned()];
        // As in the conformance case: the poll ends the wait, or the job falling due does if
        // the enqueue beat the wait's first check.
        let waiter = host.wait(&queues, T0, Duration::from_secs(3600));
        let producer = async {
            tokio::task::yield_now().await;
            let mut delayed = job("q", "x");
            delayed.run_at = Some(at(1));
            cli.enqueue(vec![delayed], T0).await.unwrap();
        };
        let (waited, ()) = tokio::join!(
            tokio::time::timeout(Duration::from_secs(20), waiter),
            producer
        );
        waited
            .expect("the poll sees the other handle's commit")
            .unwrap();
    }

    #[tokio::test]
    async fn jobs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln.db");
        let (id, claimed_id) = {
            let store = EmbeddedStore::open(&path, Durability::Full).unwrap();
            let out = store
                .enqueue(vec![job("q", "claimed"), job("q", "kept")], T0)
                .await
                .unwrap();
            let claimed = store.claim("q", 1, "dead-host", LEASE, T0).await.unwrap();
            (out[1].id.clone(), claimed[0].id.clone())
        };
        let store = open(&path);
        let kept = store.get(&id).await.unwrap().unwrap();
        assert_eq!(
            (kept.state, kept.payload.as_slice()),
            (JobState::Waiting, &b"kept"[..])
        );
        assert_eq!(
            store.recover(at(31)).await.unwrap(),
            1,
            "the dead host's lease expires"
        );
        let job = store.get(&claimed_id).await.unwrap().unwrap();
        assert_eq!(job.history[0].outcome, OutcomeClass::Lost);
    }

    /// Where `crash_child` writes; set only when `survives_a_killed_process` runs it.
    const CRASH_DB: &str = "KILN_TEST_CRASH_DB";

    /// Child half of `survives_a_killed_process`: enqueues and claims, then dies without
    /// unwinding or closing anything, as under `kill -9`. Ignored so it only runs when the
    /// parent asks for it.
    #[tokio::test]
    #[ignore = "run by survives_a_killed_process in a child process"]
    async fn crash_child() {
        // Under `--include-ignored` without the parent there is nothing to crash into.
        let Some(path) = std::env::var_os(CRASH_DB) else {
            return;
        };
        let store = open(Path::new(&path));
        for _ in 0..10 {
            let batch = (0..100).map(|i| job("q", &i.to_string())).collect();
            store.enqueue(batch, T0).await.unwrap();
        }
        assert_eq!(
            store
                .claim("q", 10, "doomed", LEASE, T0)
                .await
                .unwrap()
                .len(),
            10
        );
        std::process::abort();
    }

    #[tokio::test]
    async fn survives_a_killed_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln.db");
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "store::embedded::crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CRASH_DB, &path)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the child aborts");
        let store = open(&path);
        let counts = store.counts().await.unwrap();
        assert_eq!(
            (counts[0].waiting, counts[0].active),
            (990, 10),
            "every commit survived"
        );
        assert_eq!(store.recover(at(31)).await.unwrap(), 10);
        assert_eq!(
            store
                .claim("q", 2000, "w", LEASE, at(31))
                .await
                .unwrap()
                .len(),
            1000
        );
    }

    #[tokio::test]
    async fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln.db");
        drop(open(&path));
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = EmbeddedStore::open(&path, Durability::Normal)
            .err()
            .unwrap();
        assert!(matches!(
            err,
            StoreError::IncompatibleSchema { found: 99, .. }
        ));
        let message = err.to_string();
        assert!(
            message.contains("kiln.db") && message.contains("99"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn corrupt_rows_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kiln.db");
        let store = open(&path);
        let id = store.enqueue(vec![job("q", "x")], T0).await.unwrap()[0]
            .id
            .clone();
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("UPDATE jobs SET state = 'melted' WHERE id = ?1", [&id])
            .unwrap();
        let err = store.get(&id).await.err().unwrap();
        assert!(
            matches!(err, StoreError::Corrupt { id: ref bad, .. } if *bad == id),
            "{err}"
        );
    }
}
