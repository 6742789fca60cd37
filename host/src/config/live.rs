//! The running host's current configuration, which a reload swaps whole.
//!
//! Every part that reads the config (the worker per attempt and per claim round, the
//! scheduler per pass, the operations layer per request) asks [`LiveConfig::current`] when
//! it needs a value, so a reloaded config takes effect at the next such point; what is
//! already running keeps the settings it started with. Parts that must react to a change
//! (the claim loops, the scheduler's sleep) [`LiveConfig::subscribe`].

use std::sync::Arc;

use tokio::sync::watch;

use super::Config;

/// A shared, swappable [`Config`]. Cheap to clone; every clone sees the same current one.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// A watch channel rather than a lock: readers take the current `Arc` without waiting on
    /// a writer, and subscribers are woken by a swap.
    sender: Arc<watch::Sender<Arc<Config>>>,
}

impl LiveConfig {
    pub fn new(config: Arc<Config>) -> Self {
        LiveConfig {
            sender: Arc::new(watch::Sender::new(config)),
        }
    }

    /// The configuration in force now.
    pub fn current(&self) -> Arc<Config> {
        self.sender.borrow().clone()
    }

    /// Replaces the configuration; subscribers see the change.
    pub fn replace(&self, config: Arc<Config>) {
        self.sender.send_replace(config);
    }

    /// A receiver that is told of every later [`LiveConfig::replace`].
    pub fn subscribe(&self) -> watch::Receiver<Arc<Config>> {
        self.sender.subscribe()
    }
}

impl From<Arc<Config>> for LiveConfig {
    fn from(config: Arc<Config>) -> Self {
        LiveConfig::new(config)
    }
}

impl From<Config> for LiveConfig {
    fn from(config: Config) -> Self {
        LiveConfig::new(Arc::new(config))
    }
}
