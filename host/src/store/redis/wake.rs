//! Wake-ups: idle hosts do not poll. Scripts that add or requeue a job publish the queue's
//! name on `<namespace>:wake`; one dedicated RESP3 connection per store handle is subscribed
//! to it, and `wait` blocks until a message names one of its queues.
//!
//! On a cluster the subscription goes to the first node that answers: classic pub/sub
//! messages reach every node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::aio::ConnectionManager;
use redis::{IntoConnectionInfo, PushInfo, PushKind, Value};
use tokio::sync::Notify;

use super::conn::{RedisTarget, manager_config};
use super::{backend, bad_reply, lock};
use crate::store::StoreResult;

/// Who is blocked in `wait`, per queue. Each waiter owns a `Notify`; a wake-up for a queue
/// calls `notify_one` on every waiter registered for it, which stores a permit if the waiter
/// has not started awaiting yet, so a wake-up between registering and awaiting is not lost.
#[derive(Default)]
pub(super) struct Wakers {
    by_queue: Mutex<HashMap<String, Vec<Arc<Notify>>>>,
}

impl Wakers {
    fn register(&self, queues: &[String], waiter: &Arc<Notify>) {
        let mut map = lock(&self.by_queue);
        for queue in queues {
            map.entry(queue.clone())
                .or_default()
                .push(Arc::clone(waiter));
        }
    }

    fn unregister(&self, queues: &[String], waiter: &Arc<Notify>) {
        let mut map = lock(&self.by_queue);
        for queue in queues {
            if let Some(list) = map.get_mut(queue) {
                list.retain(|other| !Arc::ptr_eq(other, waiter));
                if list.is_empty() {
                    map.remove(queue);
                }
            }
        }
    }

    fn wake(&self, queue: &str) {
        let map = lock(&self.by_queue);
        for waiter in map.get(queue).into_iter().flatten() {
            waiter.notify_one();
        }
    }

    /// After the subscription dropped, wake everyone: messages may have been missed.
    fn wake_all(&self) {
        let map = lock(&self.by_queue);
        for waiter in map.values().flatten() {
            waiter.notify_one();
        }
    }

    /// Handles one message pushed on the wake subscription.
    fn on_push(&self, push: PushInfo) {
        match push.kind {
            PushKind::Message => {
                if let Some(Value::BulkString(queue)) = push.data.get(1) {
                    self.wake(&String::from_utf8_lossy(queue));
                }
            }
            PushKind::Disconnection | PushKind::Subscribe => self.wake_all(),
            _ => {}
        }
    }
}

/// A waiter registered for some queues; unregisters when `wait` returns or is dropped.
pub(super) struct Registration<'a> {
    wakers: &'a Wakers,
    queues: &'a [String],
    pub(super) waiter: Arc<Notify>,
}

impl<'a> Registration<'a> {
    pub(super) fn new(wakers: &'a Wakers, queues: &'a [String]) -> Self {
        let waiter = Arc::new(Notify::new());
        wakers.register(queues, &waiter);
        Registration {
            wakers,
            queues,
            waiter,
        }
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.wakers.unregister(self.queues, &self.waiter);
    }
}

/// Opens the wake subscription on the first node that answers. Classic pub/sub messages
/// reach every node of a cluster, so any node will do.
pub(super) async fn subscribe(
    target: &RedisTarget,
    wakers: &Arc<Wakers>,
) -> StoreResult<ConnectionManager> {
    let channel = format!("{}:wake", target.namespace);
    let mut last_error = None;
    for url in target.urls() {
        let wakers = Arc::clone(wakers);
        let sender = move |push: PushInfo| -> Result<(), std::convert::Infallible> {
            wakers.on_push(push);
            Ok(())
        };
        let attempt = async {
            let info = url.as_str().into_connection_info()?;
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            let client = target.client(info.set_redis_settings(settings))?;
            let config = manager_config(target.patience)
                .set_push_sender(sender)
                .set_automatic_resubscription();
            let mut manager = ConnectionManager::new_with_config(client, config).await?;
            manager.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(manager)
        };
        match attempt.await {
            Ok(manager) => return Ok(manager),
            Err(e) => last_error = Some(e),
        }
    }
    let context = format!("subscribe to `{channel}`");
    Err(match last_error {
        Some(e) => backend(context)(e),
        None => bad_reply(&context, "no redis node urls configured"),
    })
}
