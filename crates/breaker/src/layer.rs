//! [`CircuitBreakerLayer`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::Meter;
use tokio::sync::broadcast;
use tower_layer::Layer;

use crate::breaker::{Random, Shared};
use crate::classify::HttpClassifier;
use crate::clock::{Clock, CoarseClock, SharedClock};
use crate::config::{BreakerConfig, BreakersConfig};
use crate::error::Error;
use crate::event::Transition;
use crate::fallback::NoFallback;
use crate::gate::Gate;
use crate::key::{Downstream, KeyExtractor};
use crate::metrics::Instruments;
use crate::registry::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BREAKERS, Registry};
use crate::service::CircuitBreaker;
use crate::wait::{SharedWait, WaitStrategy};

#[derive(Clone)]
struct Settings {
    config: BreakersConfig,
    clock: SharedClock,
    meter: Option<Meter>,
    max: usize,
    idle: Duration,
    wait: Option<SharedWait>,
    random: Option<Random>,
}

/// Applies circuit breakers to a service: one breaker per key (see
/// [`crate::key`]), created on first use from the registry's config; a key that
/// does not depend on the request ([`KeyExtractor::fixed_key`], e.g.
/// [`Downstream`]) has its breaker created when the layer makes a service.
///
/// Configure it fully before layering: every `with_*` setter except
/// [`with_classifier`](Self::with_classifier) and
/// [`with_fallback`](Self::with_fallback) starts a fresh registry. Clones of
/// the layer (and every service it makes) share one registry.
pub struct CircuitBreakerLayer<K: KeyExtractor = Downstream, C = HttpClassifier, F = NoFallback> {
    settings: Settings,
    registry: Arc<Registry<K::Key>>,
    key: K,
    classifier: C,
    fallback: F,
}

impl<K: KeyExtractor, C: Clone, F: Clone> Clone for CircuitBreakerLayer<K, C, F> {
    fn clone(&self) -> Self {
        CircuitBreakerLayer {
            settings: self.settings.clone(),
            registry: Arc::clone(&self.registry),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
            fallback: self.fallback.clone(),
        }
    }
}

impl<K: KeyExtractor + fmt::Debug, C: fmt::Debug, F: fmt::Debug> fmt::Debug for CircuitBreakerLayer<K, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("registry", &self.registry)
            .field("key", &self.key)
            .field("classifier", &self.classifier)
            .field("fallback", &self.fallback)
            .finish()
    }
}

fn build<K: KeyExtractor>(s: &Settings, key: &K) -> Arc<Registry<K::Key>> {
    let meter = s.meter.clone().unwrap_or_else(|| opentelemetry::global::meter("breaker"));
    let (events, _) = broadcast::channel(256);
    let shared = Arc::new(Shared {
        clock: Arc::clone(&s.clock),
        events,
        instruments: Instruments::new(&meter),
        wait: s.wait.clone(),
        random: s.random.clone(),
    });
    Arc::new(Registry::new(s.config.clone(), shared, s.max, s.idle, key.overflow_name()))
}

impl CircuitBreakerLayer {
    /// One breaker named `downstream` with `config` (validated).
    pub fn new(downstream: &str, config: BreakerConfig) -> Result<Self, Error> {
        Self::from_config(downstream, BreakersConfig::uniform(config))
    }

    /// One breaker named `downstream`, its config looked up by that name in
    /// `config` (validated).
    pub fn from_config(downstream: &str, config: BreakersConfig) -> Result<Self, Error> {
        config.validate()?;
        let settings = Settings {
            config,
            clock: Arc::new(CoarseClock::global()),
            meter: None,
            max: DEFAULT_MAX_BREAKERS,
            idle: DEFAULT_IDLE_TIMEOUT,
            wait: None,
            random: None,
        };
        let key = Downstream::new(downstream);
        Ok(CircuitBreakerLayer {
            registry: build(&settings, &key),
            settings,
            key,
            classifier: HttpClassifier,
            fallback: NoFallback,
        })
    }
}

impl<K: KeyExtractor, C, F> CircuitBreakerLayer<K, C, F> {
    fn rebuilt(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        f(&mut self.settings);
        self.registry = build(&self.settings, &self.key);
        self
    }

    /// Chooses breakers by `key` ([`crate::key::ByMethod`], [`crate::key::ByRoute`],
    /// [`crate::key::KeyFn`], ...).
    pub fn with_key<K2: KeyExtractor>(self, key: K2) -> CircuitBreakerLayer<K2, C, F> {
        CircuitBreakerLayer {
            registry: build(&self.settings, &key),
            settings: self.settings,
            key,
            classifier: self.classifier,
            fallback: self.fallback,
        }
    }

    /// Classifies outcomes with `classifier` (a [`crate::Classify`] or a closure).
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<K, C2, F> {
        CircuitBreakerLayer {
            settings: self.settings,
            registry: self.registry,
            key: self.key,
            classifier,
            fallback: self.fallback,
        }
    }

    /// Answers rejected calls with `fallback` (e.g. a [`crate::fallback::MethodFallback`]).
    pub fn with_fallback<F2>(self, fallback: F2) -> CircuitBreakerLayer<K, C, F2> {
        CircuitBreakerLayer {
            settings: self.settings,
            registry: self.registry,
            key: self.key,
            classifier: self.classifier,
            fallback,
        }
    }

    /// Reads time from `clock` (default: [`CoarseClock::global`]).
    pub fn with_clock(self, clock: impl Clock) -> Self {
        self.rebuilt(|s| s.clock = Arc::new(clock))
    }

    /// Records metrics with `meter` (default: the global meter `breaker`).
    pub fn with_meter(self, meter: Meter) -> Self {
        self.rebuilt(|s| s.meter = Some(meter))
    }

    /// Keeps at most `max` keyed breakers (default [`DEFAULT_MAX_BREAKERS`];
    /// 0 counts as 1); once full, new keys share one overflow breaker (see
    /// [`Registry`]).
    pub fn with_max_breakers(self, max: usize) -> Self {
        self.rebuilt(|s| s.max = max)
    }

    /// Lets closed breakers unused for `idle` be evicted (default [`DEFAULT_IDLE_TIMEOUT`]).
    pub fn with_idle_timeout(self, idle: Duration) -> Self {
        self.rebuilt(|s| s.idle = idle)
    }

    /// Computes the wait in open with `wait` for every breaker, instead of
    /// each config's `wait`.
    pub fn with_wait_strategy(self, wait: impl WaitStrategy) -> Self {
        self.rebuilt(|s| s.wait = Some(Arc::new(wait)))
    }

    /// Draws the adaptive policy's random numbers (in `[0, 1)`) from `random`
    /// (default: `rand::random`); for deterministic tests.
    pub fn with_random(self, random: impl Fn() -> f64 + Send + Sync + 'static) -> Self {
        self.rebuilt(|s| s.random = Some(Arc::new(random)))
    }

    /// The registry shared by every service this layer makes.
    pub fn registry(&self) -> &Arc<Registry<K::Key>> {
        &self.registry
    }

    /// The admission of the services this layer makes, without a service: for
    /// a service that fuses the breaker with other layers (it calls
    /// [`Gate::admit`], then records with [`Gate::classifier`]).
    pub fn gate(&self) -> Gate<K, C, F>
    where
        C: Clone,
        F: Clone,
    {
        Gate::new(Arc::clone(&self.registry), self.key.clone(), self.classifier.clone(), self.fallback.clone())
    }

    /// Transitions of every breaker of this layer.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.registry.subscribe()
    }
}

impl<S, K: KeyExtractor, C: Clone, F: Clone> Layer<S> for CircuitBreakerLayer<K, C, F> {
    type Service = CircuitBreaker<S, K, C, F>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.gate())
    }
}
