//! [`Registry`]: breakers by key, created on first use, bounded in number
//! (new keys share one overflow breaker when full), evicted when idle and
//! closed, reconfigurable live.

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
use crate::event::{State, Transition};

/// Default cap on the number of breakers in a registry.
pub const DEFAULT_MAX_BREAKERS: usize = 1024;
/// Default idle time after which a breaker may be evicted.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How soon a full registry holding non-closed breakers looks again for
/// evictable ones (nanoseconds).
const EVICTION_RECHECK: u64 = 1_000_000_000;

/// Breakers keyed by `K`.
///
/// Lookups of existing breakers are lock-free (an `ArcSwap` of the map);
/// creating one (first use of a key) takes a mutex and republishes the map.
///
/// # When full
///
/// The registry holds at most `max` keyed breakers
/// ([`CircuitBreakerLayer::with_max_breakers`](crate::CircuitBreakerLayer::with_max_breakers),
/// default [`DEFAULT_MAX_BREAKERS`]) plus one overflow breaker. A new key
/// arriving when it is full first evicts the closed breakers unused for the
/// idle timeout; if none is, the key gets no breaker of its own: its calls
/// go through the shared overflow breaker (named by
/// [`KeyExtractor::overflow_name`](crate::key::KeyExtractor::overflow_name)),
/// until room is made. A breaker in use, open, half-open, forced open or
/// throttling, or put in another mode than its config's by hand, is never
/// evicted, so a flood of new keys can neither reset an open breaker nor push
/// out a live one, and the breakers' metric attributes stay bounded by
/// `max + 1` names.
pub struct Registry<K> {
    map: ArcSwap<HashMap<K, Arc<Breaker>>>,
    overflow: ArcSwap<Option<Arc<Breaker>>>,
    overflow_name: Arc<str>,
    /// Clock time before which no breaker can have become evictable (a hint
    /// that lets a full registry send new keys to the overflow breaker
    /// without the write lock).
    no_eviction_before: AtomicU64,
    epoch: AtomicU64,
    write: Mutex<()>,
    overflow_write: Mutex<()>,
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
    pub(crate) fn new(
        config: BreakersConfig,
        shared: Arc<Shared>,
        max: usize,
        idle: Duration,
        overflow_name: String,
    ) -> Self {
        Registry {
            map: ArcSwap::from_pointee(HashMap::new()),
            overflow: ArcSwap::from_pointee(None),
            overflow_name: Arc::from(overflow_name),
            no_eviction_before: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            write: Mutex::new(()),
            overflow_write: Mutex::new(()),
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

    /// The breaker named `name` (the overflow breaker included), if it exists.
    pub fn by_name(&self, name: &str) -> Option<Arc<Breaker>> {
        self.map.load().values().find(|b| b.name() == name).cloned().or_else(|| self.overflow().filter(|b| b.name() == name))
    }

    /// Every breaker, the overflow breaker included (last).
    pub fn breakers(&self) -> Vec<Arc<Breaker>> {
        let mut all: Vec<_> = self.map.load().values().cloned().collect();
        all.extend(self.overflow());
        all
    }

    /// The overflow breaker, once a key has had to use it.
    pub fn overflow(&self) -> Option<Arc<Breaker>> {
        (**self.overflow.load()).clone()
    }

    /// The cap on keyed breakers.
    pub fn max_breakers(&self) -> usize {
        self.max
    }

    /// Number of keyed breakers (at most [`max_breakers`](Self::max_breakers);
    /// the overflow breaker is not counted).
    pub fn len(&self) -> usize {
        self.map.load().len()
    }

    /// Whether there are no keyed breakers.
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

    /// The breaker of `key`, created (named by `name`) on first use; the
    /// overflow breaker when the registry is full (see [`Registry`]).
    #[inline]
    pub(crate) fn get_or_create(&self, key: &K, name: impl FnOnce(&K) -> String) -> Result<Arc<Breaker>, Error> {
        let map = self.map.load();
        if let Some(b) = map.get(key) {
            return Ok(Arc::clone(b));
        }
        if map.len() >= self.max && self.shared.clock.now_nanos() < self.no_eviction_before.load(Ordering::Acquire) {
            return self.overflow_breaker();
        }
        drop(map);
        self.create(key, name)
    }

    #[cold]
    fn create(&self, key: &K, name: impl FnOnce(&K) -> String) -> Result<Arc<Breaker>, Error> {
        let guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.map.load_full();
        if let Some(b) = cur.get(key) {
            return Ok(Arc::clone(b));
        }
        let mut next: HashMap<K, Arc<Breaker>> = if cur.len() >= self.max {
            let now = self.shared.clock.now_nanos();
            let (kept, hint) = self.without_evictable(&cur, now);
            self.no_eviction_before.store(hint, Ordering::Release);
            match kept {
                Some(kept) if kept.len() < self.max => kept,
                _ => {
                    drop(guard);
                    return self.overflow_breaker();
                }
            }
        } else {
            (*cur).clone()
        };
        let name_str = name(key);
        let cfg = self.config.load();
        let breaker = Breaker::new(Arc::from(name_str.as_str()), cfg.for_name(&name_str), Arc::clone(&self.shared))?;
        next.insert(key.clone(), Arc::clone(&breaker));
        self.publish(next);
        Ok(breaker)
    }

    /// `map` without its evictable breakers (at rest and unused for the idle
    /// timeout), or `None` when there are none; and the earliest time at
    /// which one of the rest could become evictable.
    fn without_evictable(&self, map: &HashMap<K, Arc<Breaker>>, now: u64) -> (Option<HashMap<K, Arc<Breaker>>>, u64) {
        let config = self.config.load();
        let mut hint = u64::MAX;
        let mut kept = HashMap::with_capacity(map.len());
        for (k, b) in map {
            let at_rest = self.at_rest(b, &config);
            if at_rest && now.saturating_sub(b.last_used()) >= self.idle {
                continue;
            }
            hint = hint.min(if at_rest {
                b.last_used().saturating_add(self.idle)
            } else {
                // An open breaker may close at any time: look again soon.
                now.saturating_add(self.idle.min(EVICTION_RECHECK))
            });
            kept.insert(k.clone(), Arc::clone(b));
        }
        if kept.len() == map.len() {
            return (None, hint);
        }
        (Some(kept), hint)
    }

    /// Whether evicting `b` loses nothing a fresh breaker would not have: it
    /// is closed (or disabled, or metrics only, as its config says; never
    /// open, half-open, forced open or throttling, and never in a mode set by
    /// hand).
    fn at_rest(&self, b: &Breaker, config: &BreakersConfig) -> bool {
        match b.state() {
            State::Closed | State::Disabled | State::MetricsOnly => b.mode() == config.for_name(b.name()).mode,
            _ => false,
        }
    }

    /// The overflow breaker, created on first use.
    #[cold]
    fn overflow_breaker(&self) -> Result<Arc<Breaker>, Error> {
        if let Some(b) = &**self.overflow.load() {
            return Ok(Arc::clone(b));
        }
        let _guard = self.overflow_write.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = &**self.overflow.load() {
            return Ok(Arc::clone(b));
        }
        let cfg = self.config.load();
        let breaker = Breaker::new(Arc::clone(&self.overflow_name), cfg.for_name(&self.overflow_name), Arc::clone(&self.shared))?;
        tracing::warn!(breaker = %self.overflow_name, max = self.max, "breaker registry full; new keys share the overflow breaker");
        self.overflow.store(Arc::new(Some(Arc::clone(&breaker))));
        Ok(breaker)
    }

    /// Removes the closed breakers unused for longer than the idle timeout
    /// (never an open or half-open one, see [`Registry`]); returns how many
    /// were removed.
    pub fn evict_idle(&self) -> usize {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.shared.clock.now_nanos();
        let cur = self.map.load_full();
        let (kept, hint) = self.without_evictable(&cur, now);
        self.no_eviction_before.store(hint, Ordering::Release);
        match kept {
            Some(next) => {
                let removed = cur.len() - next.len();
                self.publish(next);
                removed
            }
            None => 0,
        }
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
        {
            let _overflow = self.overflow_write.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(b) = self.overflow() {
                let cfg = config.for_name(b.name());
                if !b.reconfigure(cfg)? {
                    let fresh = Breaker::new(Arc::clone(b.name_arc()), cfg, Arc::clone(&self.shared))?;
                    self.overflow.store(Arc::new(Some(fresh)));
                }
            }
        }
        self.config.store(Arc::new(config));
        self.publish(next);
        Ok(())
    }
}
