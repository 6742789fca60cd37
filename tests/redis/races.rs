//! Races on Redis between a decision and its write: a reaper that read an expired lease, a
//! host that renews it or an admin who cancels the job before the reaper writes, and a
//! settlement whose job's record changed since its claim. Every write checks that the lease
//! and the record are still the ones decided on; a changed record is decided again.
//!
//! The reaper races run on a private server whose writes are paused (`CLIENT PAUSE WRITE`)
//! while the reaper reads, so the other write lands between the reaper's read and its write.

use std::time::Duration;

use kiln::store::{
    CancelOutcome, JobState, JobStore, OutcomeClass, Progress, RedisStore, RedisTarget,
    SettleAction,
};

use super::{namespace, open, server};
use crate::redis_server::RedisServer;
use crate::store::{LEASE, T0, at, job, settlement};

/// Runs `write` and then `reaper` (a `recover`) while `server` holds back writes, so
/// `write` lands after the reaper read the expired leases and before the reaper writes. The
/// scripts both run must be loaded already (`load_scripts`): one the server does not know
/// would be loaded after the pause, out of order.
async fn between_read_and_write<A, B>(
    server: &RedisServer,
    write: A,
    reaper: B,
) -> (A::Output, B::Output)
where
    A: std::future::Future + Send + 'static,
    B: std::future::Future + Send + 'static,
    A::Output: Send + 'static,
    B::Output: Send + 'static,
{
    server.cli(&["CLIENT", "PAUSE", "5000", "WRITE"]);
    let write = tokio::spawn(write);
    until_blocked(server, 1).await;
    let reaper = tokio::spawn(reaper);
    until_blocked(server, 2).await;
    server.cli(&["CLIENT", "UNPAUSE"]);
    (write.await.unwrap(), reaper.await.unwrap())
}

/// Waits until `count` clients of `server` wait on a paused write.
async fn until_blocked(server: &RedisServer, count: usize) {
    let wanted = format!("blocked_clients:{count}");
    for _ in 0..1_000 {
        let info = server.cli(&["INFO", "clients"]);
        if info.lines().any(|line| line.trim() == wanted) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{count} clients never waited on a paused write");
}

/// Runs renew, settle and cancel once on a queue of its own, so the server knows the
/// scripts.
async fn load_scripts(store: &RedisStore) {
    let batch = vec![job("warm-up", "a"), job("warm-up", "b")];
    let ids = store.enqueue(batch, T0).await.unwrap();
    let claimed = store.claim("warm-up", 1, "w", LEASE, T0).await.unwrap();
    store
        .renew(std::slice::from_ref(&claimed[0].id), "w", LEASE, T0)
        .await
        .unwrap();
    let done = settlement(&claimed[0], "w", SettleAction::SucceedAndDelete, T0);
    store.settle(vec![done], T0).await.unwrap();
    store.cancel(&ids[1].id, T0).await.unwrap();
}

/// A reaper that read an expired lease does not take the job back when its host renewed
/// the lease before the reaper wrote: the write checks that the lease is still the same
/// expired one, so the renewing host keeps its job. (A private server, since writes pause.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaper_racing_a_renewal_keeps_the_renewed_job() {
    let server = RedisServer::start();
    let target = RedisTarget::server(server.url()).with_namespace(namespace());
    let (host, reaper) = (open(target.clone()).await, open(target).await);
    load_scripts(&host).await;
    let id = host.enqueue(vec![job("q", "x")], T0).await.unwrap()[0]
        .id
        .clone();
    host.claim("q", 1, "w", LEASE, T0).await.unwrap();
    let renew = {
        let (host, ids) = (host.clone(), vec![id.clone()]);
        async move { host.renew(&ids, "w", LEASE, at(29)).await }
    };
    let recover = async move { reaper.recover(at(31)).await };
    let (renewed, recovered) = between_read_and_write(&server, renew, recover).await;
    assert!(
        renewed.unwrap().lost.is_empty(),
        "the host still holds its job"
    );
    assert_eq!(recovered.unwrap(), 0, "the renewed lease is not taken back");
    let kept = host.get(&id).await.unwrap().unwrap();
    assert_eq!((kept.state, kept.attempts), (JobState::Active, 1));
    let lease = kept.lease.unwrap();
    assert_eq!((lease.owner.as_str(), lease.expires_at), ("w", at(59)));
    assert!(kept.history.is_empty(), "no lost attempt is recorded");
}

/// A reaper whose job's record changed between its read and its write (an admin requested a
/// cancel) decides again on the new record: the lost job is cancelled, not requeued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaper_decides_again_when_the_record_changed() {
    let server = RedisServer::start();
    let target = RedisTarget::server(server.url()).with_namespace(namespace());
    let (admin, reaper) = (open(target.clone()).await, open(target).await);
    load_scripts(&admin).await;
    let id = admin.enqueue(vec![job("q", "x")], T0).await.unwrap()[0]
        .id
        .clone();
    admin.claim("q", 1, "w", LEASE, T0).await.unwrap();
    let cancel = {
        let (admin, id) = (admin.clone(), id.clone());
        async move { admin.cancel(&id, at(31)).await }
    };
    let recover = async move { reaper.recover(at(31)).await };
    let (cancelled, recovered) = between_read_and_write(&server, cancel, recover).await;
    assert_eq!(cancelled.unwrap(), CancelOutcome::Requested);
    assert_eq!(recovered.unwrap(), 1);
    let job = admin.get(&id).await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Cancelled, 1));
    let outcomes: Vec<_> = job.history.iter().map(|a| a.outcome).collect();
    assert_eq!(outcomes, [OutcomeClass::Lost]);
}

/// A settlement is decided on the record its claim read; when the record changed before the
/// settlement is written (progress, a cancel request), it is decided again on the new
/// record, in the same `settle` call: a retry or a release of a job whose cancel was
/// requested cancels it, and every job keeps its progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_decides_again_when_the_record_changed() {
    let server = server();
    let store = open(RedisTarget::server(server.url()).with_namespace(namespace())).await;
    let batch =
        ["retry-cancelled", "release-cancelled", "retry", "succeed"].map(|tag| job("q", tag));
    store.enqueue(batch.to_vec(), T0).await.unwrap();
    let claimed = store.claim("q", 4, "w", LEASE, T0).await.unwrap();
    let halfway = || Progress {
        percent: 50,
        message: Some("half".to_owned()),
    };
    for job in &claimed {
        store
            .progress(&job.id, "w", halfway(), at(1))
            .await
            .unwrap();
    }
    for job in &claimed[..2] {
        assert_eq!(
            store.cancel(&job.id, at(2)).await.unwrap(),
            CancelOutcome::Requested
        );
    }
    let retry = || SettleAction::Retry {
        at: at(10),
        error: "flaky".to_owned(),
    };
    let actions = [
        retry(),
        SettleAction::Release { at: at(3) },
        retry(),
        SettleAction::Succeed {
            result: b"done".to_vec(),
        },
    ];
    let batch = claimed
        .iter()
        .zip(actions)
        .map(|(job, action)| settlement(job, "w", action, at(3)))
        .collect();
    assert!(store.settle(batch, at(3)).await.unwrap().is_empty());
    let mut ends = Vec::new();
    for job in &claimed {
        let end = store.get(&job.id).await.unwrap().unwrap();
        assert_eq!(end.progress, Some(halfway()), "{:?}", end.payload);
        ends.push((end.state, end.attempts, end.history.len(), end.error));
    }
    assert_eq!(
        ends,
        [
            (JobState::Cancelled, 1, 1, None),
            (JobState::Cancelled, 1, 0, None),
            (JobState::Scheduled, 1, 1, Some("flaky".to_owned())),
            (JobState::Succeeded, 1, 1, None),
        ]
    );
}
