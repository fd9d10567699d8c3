//! [`Registry`]: breakers by key, created on first use, bounded in number,
//! evicted when idle, reconfigurable live.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::broadcast;

use crate::breaker::{Breaker, Shared};
use crate::clock::nanos;
use crate::config::BreakersConfig;
use crate::error::Error;
use crate::event::Transition;

/// Default cap on the number of breakers in a registry.
pub const DEFAULT_MAX_BREAKERS: usize = 1024;
/// Default idle time after which a breaker may be evicted.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Breakers keyed by `K`.
///
/// Lookups of existing breakers are lock-free (an `ArcSwap` of the map);
/// creating one (first use of a key) takes a mutex and republishes the map.
/// When the cap is reached, idle breakers are evicted first, then the least
/// recently used.
pub struct Registry<K> {
    map: ArcSwap<HashMap<K, Arc<Breaker>>>,
    epoch: AtomicU64,
    write: Mutex<()>,
    config: ArcSwap<BreakersConfig>,
    shared: Arc<Shared>,
    max: usize,
    idle: u64,
}

impl<K> fmt::Debug for Registry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("breakers", &self.map.load().len()).field("max", &self.max).finish()
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Registry<K> {
    pub(crate) fn new(config: BreakersConfig, shared: Arc<Shared>, max: usize, idle: Duration) -> Self {
        Registry {
            map: ArcSwap::from_pointee(HashMap::new()),
            epoch: AtomicU64::new(0),
            write: Mutex::new(()),
            config: ArcSwap::from_pointee(config),
            shared,
            max: max.max(1),
            idle: nanos(idle),
        }
    }

    /// Bumped on every change of the map (services cache their last breaker
    /// against it).
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn publish(&self, next: HashMap<K, Arc<Breaker>>) {
        self.map.store(Arc::new(next));
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The breaker of `key`, if it exists.
    pub fn get(&self, key: &K) -> Option<Arc<Breaker>> {
        self.map.load().get(key).cloned()
    }

    /// The breaker named `name`, if it exists.
    pub fn by_name(&self, name: &str) -> Option<Arc<Breaker>> {
        self.map.load().values().find(|b| b.name() == name).cloned()
    }

    /// Every breaker.
    pub fn breakers(&self) -> Vec<Arc<Breaker>> {
        self.map.load().values().cloned().collect()
    }

    /// Number of breakers.
    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.load().is_empty()
    }

    /// Transitions of every breaker of this registry.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.shared.events.subscribe()
    }

    /// The current config.
    pub fn config(&self) -> Arc<BreakersConfig> {
        self.config.load_full()
    }

    /// The breaker of `key`, created (named by `name`) on first use.
    #[inline]
    pub(crate) fn get_or_create(&self, key: &K, name: impl FnOnce(&K) -> String) -> Result<Arc<Breaker>, Error> {
        if let Some(b) = self.map.load().get(key) {
            return Ok(Arc::clone(b));
        }
        self.create(key, name)
    }

    #[cold]
    fn create(&self, key: &K, name: impl FnOnce(&K) -> String) -> Result<Arc<Breaker>, Error> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.map.load_full();
        if let Some(b) = cur.get(key) {
            return Ok(Arc::clone(b));
        }
        let name_str = name(key);
        let name: Arc<str> = Arc::from(name_str.as_str());
        let cfg = self.config.load();
        let breaker = Breaker::new(name, cfg.for_name(&name_str), Arc::clone(&self.shared))?;
        let mut next: HashMap<K, Arc<Breaker>> = (*cur).clone();
        if next.len() >= self.max {
            let now = self.shared.clock.now_nanos();
            next.retain(|_, b| now.saturating_sub(b.last_used()) < self.idle);
            if next.len() >= self.max {
                let lru = next.iter().min_by_key(|(_, b)| b.last_used()).map(|(k, _)| k.clone());
                if let Some(k) = lru {
                    next.remove(&k);
                }
            }
        }
        next.insert(key.clone(), Arc::clone(&breaker));
        self.publish(next);
        Ok(breaker)
    }

    /// Removes breakers unused for longer than the idle timeout; returns how
    /// many were removed.
    pub fn evict_idle(&self) -> usize {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.shared.clock.now_nanos();
        let mut next: HashMap<K, Arc<Breaker>> = (*self.map.load_full()).clone();
        let before = next.len();
        next.retain(|_, b| now.saturating_sub(b.last_used()) < self.idle);
        let removed = before - next.len();
        if removed > 0 {
            self.publish(next);
        }
        removed
    }

    /// Applies a new config live. Breakers whose policy and window shape are
    /// unchanged keep their state and counts; the others are replaced by
    /// fresh ones. Invalid config is an error and changes nothing.
    pub fn reconfigure(&self, config: BreakersConfig) -> Result<(), Error> {
        config.validate()?;
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut next: HashMap<K, Arc<Breaker>> = (*self.map.load_full()).clone();
        for b in next.values_mut() {
            let cfg = config.for_name(b.name());
            if !b.reconfigure(cfg)? {
                *b = Breaker::new(Arc::clone(b.name_arc()), cfg, Arc::clone(&self.shared))?;
            }
        }
        self.config.store(Arc::new(config));
        self.publish(next);
        Ok(())
    }
}
