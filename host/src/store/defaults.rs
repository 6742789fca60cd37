//! [`JobDefaults`]: what a job record left without a `priority` or `max_attempts` takes.
//! An outside producer writing to the Redis store need not copy these from the config (the
//! README's producer contract lets it leave them empty); the host resolves them from its
//! config when it first makes such a job ready, and every reader shows the same values.
//! Built once from the config (`Config::job_defaults`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::job::DEFAULT_MAX_ATTEMPTS;

/// The config's answers for jobs whose producer left `priority` or `max_attempts` out:
/// `queues.NAME.priority`, and `max_attempts` resolved handler > queue > `[defaults]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDefaults {
    /// `queues.NAME.priority` of each configured queue; any other queue has 0.
    pub queue_priority: BTreeMap<String, i32>,
    /// `max_attempts` of each configured queue (its own key, else `[defaults]`).
    pub queue_max_attempts: BTreeMap<String, u32>,
    /// `max_attempts` set on a handler's table, which wins over its queue's.
    pub handler_max_attempts: BTreeMap<String, u32>,
    /// `[defaults] max_attempts`, for a queue the config does not name.
    pub max_attempts: u32,
}

impl Default for JobDefaults {
    /// No config: priority 0 and `DEFAULT_MAX_ATTEMPTS`, as `NewJob::new` gives.
    fn default() -> Self {
        JobDefaults {
            queue_priority: BTreeMap::new(),
            queue_max_attempts: BTreeMap::new(),
            handler_max_attempts: BTreeMap::new(),
            max_attempts: DEFAULT_MAX_ATTEMPTS,
        }
    }
}

/// One queue's defaults as the Redis scripts receive them (a JSON argument).
#[derive(Serialize)]
struct QueueDefaults<'a> {
    priority: i32,
    max_attempts: u32,
    handlers: &'a BTreeMap<String, u32>,
}

impl JobDefaults {
    /// The priority a job of `queue` gets when its record has none.
    pub fn priority(&self, queue: &str) -> i32 {
        self.queue_priority.get(queue).copied().unwrap_or(0)
    }

    /// The attempts a job of `handler` on `queue` gets when its record has none.
    pub fn max_attempts(&self, handler: &str, queue: &str) -> u32 {
        self.handler_max_attempts
            .get(handler)
            .or_else(|| self.queue_max_attempts.get(queue))
            .copied()
            .unwrap_or(self.max_attempts)
    }

    /// `queue`'s defaults as JSON: `{"priority", "max_attempts", "handlers": {name: n}}`,
    /// what lib.lua's `fill_defaults` reads.
    pub fn queue_json(&self, queue: &str) -> String {
        let max_attempts = self
            .queue_max_attempts
            .get(queue)
            .copied()
            .unwrap_or(self.max_attempts);
        let defaults = QueueDefaults {
            priority: self.priority(queue),
            max_attempts,
            handlers: &self.handler_max_attempts,
        };
        serde_json::to_string(&defaults).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::JobDefaults;

    #[test]
    fn a_handlers_attempts_win_over_its_queues() {
        let mut defaults = JobDefaults::default();
        defaults.queue_priority.insert("mail".into(), 7);
        defaults.queue_max_attempts.insert("mail".into(), 5);
        defaults.handler_max_attempts.insert("send".into(), 1);
        assert_eq!(defaults.priority("mail"), 7);
        assert_eq!(defaults.priority("other"), 0);
        assert_eq!(defaults.max_attempts("send", "mail"), 1);
        assert_eq!(defaults.max_attempts("resize", "mail"), 5);
        assert_eq!(defaults.max_attempts("resize", "other"), 3);
        assert_eq!(
            defaults.queue_json("mail"),
            r#"{"priority":7,"max_attempts":5,"handlers":{"send":1}}"#
        );
    }
}
