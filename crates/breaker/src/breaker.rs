//! [`Breaker`]: one circuit breaker's state machine, lock-free.
//!
//! The sliding-window state lives in one packed `AtomicU64`
//! (`generation:24 | half-open successes:16 | half-open in flight:16 | state:8`),
//! so every transition and every half-open permit is a single compare-and-swap:
//! exactly `permitted_calls_in_half_open` trial calls run at once, and a permit
//! of an older generation can never be returned into a newer half-open state.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::broadcast;

use crate::classify::Outcome;
use crate::clock::{SharedClock, nanos};
use crate::config::{AdaptiveConfig, BreakerConfig, Mode, Policy, SlidingWindowConfig};
use crate::error::Error;
use crate::event::{State, Transition};
use crate::metrics::{BreakerMetrics, Instruments};
use crate::wait::{SharedWait, WaitStrategy};
use crate::window::{Snapshot, TimeWindow, Window};

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF: u64 = 2;
const INFLIGHT_SHIFT: u32 = 8;
const SUCC_SHIFT: u32 = 24;
const GEN_SHIFT: u32 = 40;
const F16: u64 = 0xffff;

fn st(w: u64) -> u64 {
    w & 0xff
}
fn inflight(w: u64) -> u64 {
    (w >> INFLIGHT_SHIFT) & F16
}
fn succ(w: u64) -> u64 {
    (w >> SUCC_SHIFT) & F16
}
fn generation(w: u64) -> u64 {
    w >> GEN_SHIFT
}
fn pack(state: u64, inflight: u64, succ: u64, generation: u64) -> u64 {
    state | (inflight << INFLIGHT_SHIFT) | (succ << SUCC_SHIFT) | ((generation & 0xff_ffff) << GEN_SHIFT)
}
fn machine_state(w: u64) -> State {
    match st(w) {
        OPEN => State::Open,
        HALF => State::HalfOpen,
        _ => State::Closed,
    }
}

const M_NORMAL: u8 = 0;
const M_FORCED: u8 = 1;
const M_DISABLED: u8 = 2;
const M_METRICS: u8 = 3;

fn mode_code(m: Mode) -> u8 {
    match m {
        Mode::Normal => M_NORMAL,
        Mode::ForcedOpen => M_FORCED,
        Mode::Disabled => M_DISABLED,
        Mode::MetricsOnly => M_METRICS,
    }
}

/// A random source in `[0, 1)` for the adaptive policy.
pub(crate) type Random = Arc<dyn Fn() -> f64 + Send + Sync>;

/// What every breaker of a registry shares: clock, events, instruments.
pub(crate) struct Shared {
    pub(crate) clock: SharedClock,
    pub(crate) events: broadcast::Sender<Transition>,
    pub(crate) instruments: Instruments,
    pub(crate) wait: Option<SharedWait>,
    pub(crate) random: Option<Random>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("clock", &self.clock).finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Sliding {
    word: AtomicU64,
    window: Window,
    cfg: ArcSwap<SlidingWindowConfig>,
    slow_nanos: AtomicU64,
    slow_is_failure: AtomicBool,
    slow_matters: AtomicBool,
    consecutive: AtomicU32,
    attempts: AtomicU32,
    deadline: AtomicU64,
    deadline_gen: AtomicU64,
    half_since: AtomicU64,
    half_gen: AtomicU64,
}

#[derive(Debug)]
struct Adaptive {
    cfg: ArcSwap<AdaptiveConfig>,
    window: TimeWindow,
    throttling: AtomicBool,
}

#[derive(Debug)]
enum Engine {
    Sliding(Sliding),
    Adaptive(Adaptive),
}

/// One circuit breaker. Cheap to share (`Arc<Breaker>`); every method is
/// lock-free.
///
/// Use it directly with [`Breaker::try_acquire`] and [`Permit::record`], or
/// through [`crate::CircuitBreakerLayer`].
// Aligned so the state read on every call never shares a cache line with the
// `Arc`'s reference counts, which the layer's response futures write.
#[repr(align(128))]
pub struct Breaker {
    name: Arc<str>,
    me: Weak<Breaker>,
    shared: Arc<Shared>,
    mode: AtomicU8,
    engine: Engine,
    metrics: BreakerMetrics,
    last_used: AtomicU64,
    /// The clock's cached cell ([`crate::Clock::cached_cell`]): one relaxed
    /// load per read instead of a dynamic call.
    clock_cell: Option<&'static AtomicU64>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker").field("name", &self.name).field("state", &self.state()).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Untracked,
    Closed(u64),
    HalfOpen(u64),
    Metrics,
    Adaptive,
}

/// Admission to one call. Report how it went with [`Permit::record`];
/// dropping it unrecorded (the caller gave up) gives a half-open trial permit
/// back and counts nothing.
#[must_use = "a permit records nothing unless `record` is called"]
pub struct Permit {
    breaker: Arc<Breaker>,
    kind: Kind,
    start: u64,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").field("breaker", &self.breaker.name).field("kind", &self.kind).finish()
    }
}

impl Permit {
    /// Records the call's outcome; whether it was slow comes from the time
    /// since the permit was taken.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        let kind = std::mem::replace(&mut self.kind, Kind::Untracked);
        self.breaker.record(kind, self.start, outcome);
    }

    /// The breaker this permit belongs to.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Kind::HalfOpen(g) = self.kind {
            self.breaker.release(g);
        }
    }
}

/// A [`Permit`] that borrows its breaker instead of holding an `Arc` of it
/// (no reference-count traffic per call): from [`Breaker::try_acquire_ref`],
/// for callers that keep the breaker alive around the call themselves.
/// Same semantics as [`Permit`].
#[must_use = "a permit records nothing unless `record` is called"]
pub struct PermitRef<'a> {
    breaker: &'a Breaker,
    kind: Kind,
    start: u64,
}

impl fmt::Debug for PermitRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PermitRef").field("breaker", &self.breaker.name).field("kind", &self.kind).finish()
    }
}

impl<'a> PermitRef<'a> {
    /// Records the call's outcome; whether it was slow comes from the time
    /// since the permit was taken.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        let kind = std::mem::replace(&mut self.kind, Kind::Untracked);
        self.breaker.record(kind, self.start, outcome);
    }

    /// The breaker this permit belongs to.
    pub fn breaker(&self) -> &'a Breaker {
        self.breaker
    }
}

impl Drop for PermitRef<'_> {
    fn drop(&mut self) {
        if let Kind::HalfOpen(g) = self.kind {
            self.breaker.release(g);
        }
    }
}

impl Breaker {
    pub(crate) fn new(name: Arc<str>, cfg: &BreakerConfig, shared: Arc<Shared>) -> Result<Arc<Self>, Error> {
        cfg.validate()?;
        let engine = match &cfg.policy {
            Policy::SlidingWindow(c) => Engine::Sliding(Sliding {
                word: AtomicU64::new(pack(CLOSED, 0, 0, 0)),
                window: Window::new(&c.window),
                slow_nanos: AtomicU64::new(nanos(c.slow_call_duration)),
                slow_is_failure: AtomicBool::new(c.slow_call_is_failure),
                slow_matters: AtomicBool::new(c.slow_call_is_failure || c.slow_call_rate_threshold.is_some()),
                cfg: ArcSwap::from_pointee(c.clone()),
                consecutive: AtomicU32::new(0),
                attempts: AtomicU32::new(0),
                deadline: AtomicU64::new(0),
                deadline_gen: AtomicU64::new(u64::MAX),
                half_since: AtomicU64::new(0),
                half_gen: AtomicU64::new(u64::MAX),
            }),
            Policy::Adaptive(c) => Engine::Adaptive(Adaptive {
                window: TimeWindow::new(c.window, c.buckets),
                cfg: ArcSwap::from_pointee(c.clone()),
                throttling: AtomicBool::new(false),
            }),
        };
        let metrics = BreakerMetrics::new(shared.instruments.clone(), Arc::clone(&name));
        let now = shared.clock.now_nanos();
        let clock_cell = shared.clock.cached_cell();
        let b = Arc::new_cyclic(|me| Breaker {
            clock_cell,
            name,
            me: me.clone(),
            mode: AtomicU8::new(mode_code(cfg.mode)),
            engine,
            metrics,
            last_used: AtomicU64::new(now),
            shared,
        });
        b.metrics.state(b.state_now(now));
        Ok(b)
    }

    /// A standalone breaker (not in a registry) with the default clock and
    /// the global meter; its transitions go to the returned receiver's channel.
    pub fn standalone(
        name: &str,
        cfg: &BreakerConfig,
        clock: SharedClock,
    ) -> Result<(Arc<Self>, broadcast::Receiver<Transition>), Error> {
        let (tx, rx) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            clock,
            events: tx,
            instruments: Instruments::new(&opentelemetry::global::meter("breaker")),
            wait: None,
            random: None,
        });
        Ok((Breaker::new(Arc::from(name), cfg, shared)?, rx))
    }

    /// The clock's time now.
    #[inline]
    fn now(&self) -> u64 {
        match self.clock_cell {
            Some(cell) => cell.load(Relaxed),
            None => self.shared.clock.now_nanos(),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Relaxed)
    }

    /// The operating mode.
    pub fn mode(&self) -> Mode {
        match self.mode.load(Relaxed) {
            M_FORCED => Mode::ForcedOpen,
            M_DISABLED => Mode::Disabled,
            M_METRICS => Mode::MetricsOnly,
            _ => Mode::Normal,
        }
    }

    /// Sets the operating mode (force open, disable, metrics only, back to
    /// normal); publishes the transition when the visible state changes.
    pub fn set_mode(&self, mode: Mode) {
        let now = self.now();
        let before = self.state_now(now);
        self.mode.store(mode_code(mode), SeqCst);
        let after = self.state_now(now);
        if before != after {
            self.publish(before, after, now);
        }
    }

    /// Forces the breaker open: every call is rejected until [`Breaker::set_mode`]
    /// with [`Mode::Normal`].
    pub fn force_open(&self) {
        self.set_mode(Mode::ForcedOpen);
    }

    /// Disables the breaker: every call passes, nothing is recorded.
    pub fn disable(&self) {
        self.set_mode(Mode::Disabled);
    }

    /// Puts the breaker in metrics-only mode.
    pub fn metrics_only(&self) {
        self.set_mode(Mode::MetricsOnly);
    }

    /// Closes the breaker and clears its window.
    pub fn reset(&self) {
        let now = self.now();
        if let Engine::Sliding(s) = &self.engine {
            loop {
                let w = s.word.load(Acquire);
                if st(w) == CLOSED {
                    break;
                }
                if self.close(s, w, now) {
                    break;
                }
            }
            s.window.reset();
            s.consecutive.store(0, Relaxed);
        }
    }

    /// The current state (an open breaker whose wait is over moves to
    /// half-open here).
    pub fn state(&self) -> State {
        self.state_now(self.now())
    }

    fn state_now(&self, now: u64) -> State {
        match self.mode.load(Relaxed) {
            M_FORCED => return State::ForcedOpen,
            M_DISABLED => return State::Disabled,
            M_METRICS => return State::MetricsOnly,
            _ => {}
        }
        match &self.engine {
            Engine::Sliding(s) => {
                let w = s.word.load(Acquire);
                if st(w) == OPEN {
                    self.try_half_open(s, w, now);
                }
                machine_state(s.word.load(Acquire))
            }
            Engine::Adaptive(a) if a.throttling.load(Relaxed) => State::Throttling,
            Engine::Adaptive(_) => State::Closed,
        }
    }

    /// The window's counts now (zeros for the adaptive policy's accepts are
    /// reported as `failures = requests - accepts`).
    pub fn snapshot(&self) -> Snapshot {
        let now = self.now();
        match &self.engine {
            Engine::Sliding(s) => s.window.snapshot(now),
            Engine::Adaptive(a) => {
                let s = a.window.snapshot(now);
                Snapshot { calls: s.calls, failures: s.calls.saturating_sub(s.failures), slow: 0 }
            }
        }
    }

    /// Failures in a row (sliding-window policy).
    pub fn consecutive_failures(&self) -> u32 {
        match &self.engine {
            Engine::Sliding(s) => s.consecutive.load(Relaxed),
            Engine::Adaptive(_) => 0,
        }
    }

    /// The adaptive policy's current drop probability (0 for sliding windows).
    pub fn drop_probability(&self) -> f64 {
        match &self.engine {
            Engine::Adaptive(a) => drop_probability(&a.cfg.load(), a.window.snapshot(self.now())),
            Engine::Sliding(_) => 0.0,
        }
    }

    /// Applies `cfg` in place, keeping the window's counts, when the policy
    /// and window shape are unchanged (`Ok(true)`); `Ok(false)` when a new
    /// breaker is needed (the registry builds it).
    pub fn reconfigure(&self, cfg: &BreakerConfig) -> Result<bool, Error> {
        cfg.validate()?;
        let fits = match (&self.engine, &cfg.policy) {
            (Engine::Sliding(s), Policy::SlidingWindow(c)) => s.window.matches(&c.window),
            (Engine::Adaptive(a), Policy::Adaptive(c)) => {
                let cur = a.cfg.load();
                cur.window == c.window && cur.buckets == c.buckets
            }
            _ => false,
        };
        if !fits {
            return Ok(false);
        }
        match (&self.engine, &cfg.policy) {
            (Engine::Sliding(s), Policy::SlidingWindow(c)) => {
                s.slow_nanos.store(nanos(c.slow_call_duration), Relaxed);
                s.slow_is_failure.store(c.slow_call_is_failure, Relaxed);
                s.slow_matters.store(c.slow_call_is_failure || c.slow_call_rate_threshold.is_some(), Relaxed);
                s.cfg.store(Arc::new(c.clone()));
            }
            (Engine::Adaptive(a), Policy::Adaptive(c)) => a.cfg.store(Arc::new(c.clone())),
            _ => {}
        }
        if self.mode() != cfg.mode {
            self.set_mode(cfg.mode);
        }
        Ok(true)
    }

    /// Asks for admission of one call: a [`Permit`], or [`Error::Open`]
    /// with a retry hint.
    #[inline]
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Error> {
        let (kind, start) = self.admit_call()?;
        Ok(Permit { breaker: Arc::clone(self), kind, start })
    }

    /// Like [`Breaker::try_acquire`], with a permit that borrows the breaker
    /// (no `Arc` traffic): for a call that completes while `self` is borrowed.
    #[inline]
    pub fn try_acquire_ref(&self) -> Result<PermitRef<'_>, Error> {
        let (kind, start) = self.admit_call()?;
        Ok(PermitRef { breaker: self, kind, start })
    }

    #[inline]
    fn admit_call(&self) -> Result<(Kind, u64), Error> {
        let now = self.now();
        if now.wrapping_sub(self.last_used.load(Relaxed)) > 1_000_000 {
            self.last_used.store(now, Relaxed);
        }
        // Fast path: a closed sliding-window breaker admits on one load of
        // its state word.
        if self.mode.load(Relaxed) == M_NORMAL
            && let Engine::Sliding(s) = &self.engine
        {
            let w = s.word.load(Acquire);
            if st(w) == CLOSED {
                return Ok((Kind::Closed(generation(w)), now));
            }
        }
        self.admit_call_slow(now)
    }

    #[cold]
    #[inline(never)]
    fn admit_call_slow(&self, now: u64) -> Result<(Kind, u64), Error> {
        let kind = match self.mode.load(Relaxed) {
            M_NORMAL => match self.admit(now) {
                Ok(k) => k,
                Err(retry_after) => {
                    self.metrics.rejected();
                    return Err(Error::Open { retry_after });
                }
            },
            M_DISABLED => Kind::Untracked,
            M_METRICS => Kind::Metrics,
            _ => {
                self.metrics.rejected();
                return Err(Error::Open { retry_after: self.wait_hint() });
            }
        };
        Ok((kind, now))
    }

    fn wait_hint(&self) -> Duration {
        match &self.engine {
            Engine::Sliding(s) => self.wait_for(s, s.attempts.load(Relaxed)),
            Engine::Adaptive(a) => {
                let c = a.cfg.load();
                c.window / c.buckets.max(1)
            }
        }
    }

    fn wait_for(&self, s: &Sliding, attempt: u32) -> Duration {
        match &self.shared.wait {
            Some(w) => w.wait(attempt),
            None => s.cfg.load().wait.wait(attempt),
        }
    }

    fn admit(&self, now: u64) -> Result<Kind, Duration> {
        let s = match &self.engine {
            Engine::Sliding(s) => s,
            Engine::Adaptive(a) => return self.admit_adaptive(a, now),
        };
        loop {
            let w = s.word.load(Acquire);
            match st(w) {
                CLOSED => return Ok(Kind::Closed(generation(w))),
                OPEN => {
                    if self.try_half_open(s, w, now) {
                        continue;
                    }
                    let g = generation(w);
                    if s.deadline_gen.load(Acquire) == g {
                        return Err(Duration::from_nanos(s.deadline.load(Relaxed).saturating_sub(now)));
                    }
                    return Err(self.wait_for(s, s.attempts.load(Relaxed).saturating_sub(1)));
                }
                _ => {
                    let g = generation(w);
                    let cfg = s.cfg.load();
                    if let Some(max) = cfg.max_wait_in_half_open
                        && s.half_gen.load(Acquire) == g
                        && now.saturating_sub(s.half_since.load(Relaxed)) >= nanos(max)
                    {
                        self.trip(s, w, now);
                        continue;
                    }
                    if inflight(w) >= u64::from(cfg.permitted_calls_in_half_open) {
                        return Err(self.wait_for(s, s.attempts.load(Relaxed)));
                    }
                    let nw = w + (1 << INFLIGHT_SHIFT);
                    if s.word.compare_exchange(w, nw, AcqRel, Acquire).is_ok() {
                        return Ok(Kind::HalfOpen(g));
                    }
                }
            }
        }
    }

    /// Moves open -> half-open when the wait is over; true when the state
    /// word changed (by us or a racing caller).
    fn try_half_open(&self, s: &Sliding, w: u64, now: u64) -> bool {
        let g = generation(w);
        if s.deadline_gen.load(Acquire) != g || now < s.deadline.load(Relaxed) {
            return false;
        }
        let nw = pack(HALF, 0, 0, g + 1);
        match s.word.compare_exchange(w, nw, AcqRel, Acquire) {
            Ok(_) => {
                s.half_since.store(now, Relaxed);
                s.half_gen.store(generation(nw), Release);
                self.publish(State::Open, State::HalfOpen, now);
                true
            }
            Err(_) => true,
        }
    }

    /// Opens from `w` (closed or half-open); false when `w` is stale.
    fn trip(&self, s: &Sliding, w: u64, now: u64) -> bool {
        let nw = pack(OPEN, 0, 0, generation(w) + 1);
        if s.word.compare_exchange(w, nw, AcqRel, Acquire).is_err() {
            return false;
        }
        let attempt = s.attempts.fetch_add(1, Relaxed);
        let wait = self.wait_for(s, attempt);
        s.deadline.store(now.saturating_add(nanos(wait)), Relaxed);
        s.deadline_gen.store(generation(nw), Release);
        s.consecutive.store(0, Relaxed);
        self.publish(machine_state(w), State::Open, now);
        if s.cfg.load().automatic_transition {
            self.schedule_half_open(wait);
        }
        true
    }

    fn close(&self, s: &Sliding, w: u64, now: u64) -> bool {
        let nw = pack(CLOSED, 0, 0, generation(w) + 1);
        if s.word.compare_exchange(w, nw, AcqRel, Acquire).is_err() {
            return false;
        }
        s.window.reset();
        s.consecutive.store(0, Relaxed);
        s.attempts.store(0, Relaxed);
        self.publish(machine_state(w), State::Closed, now);
        true
    }

    fn schedule_half_open(&self, wait: Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let me = self.me.clone();
        rt.spawn(async move {
            tokio::time::sleep(wait).await;
            // A coarse clock may lag the timer by its resolution: retry briefly.
            for _ in 0..20 {
                let Some(b) = me.upgrade() else { return };
                if b.state() != State::Open {
                    return;
                }
                drop(b);
                tokio::time::sleep(crate::clock::COARSE_RESOLUTION).await;
            }
        });
    }

    fn publish(&self, from: State, to: State, now: u64) {
        tracing::info!(breaker = %self.name, %from, %to, "circuit breaker transition");
        self.metrics.transition(from, to);
        let _ = self.shared.events.send(Transition { breaker: Arc::clone(&self.name), from, to, at_nanos: now });
    }

    fn admit_adaptive(&self, a: &Adaptive, now: u64) -> Result<Kind, Duration> {
        let cfg = a.cfg.load();
        let p = drop_probability(&cfg, a.window.snapshot(now));
        let throttling = p > 0.0;
        if a.throttling.load(Relaxed) != throttling && a.throttling.swap(throttling, Relaxed) != throttling {
            let (from, to) = if throttling { (State::Closed, State::Throttling) } else { (State::Throttling, State::Closed) };
            self.publish(from, to, now);
        }
        if throttling {
            let draw = match &self.shared.random {
                Some(r) => r(),
                None => rand::random::<f64>(),
            };
            if draw < p {
                a.window.add(now, 1, 0, 0);
                return Err(cfg.window / cfg.buckets.max(1));
            }
        }
        Ok(Kind::Adaptive)
    }

    #[inline]
    fn record(&self, kind: Kind, start: u64, outcome: Outcome) {
        let now = self.now();
        match (&self.engine, kind) {
            (_, Kind::Untracked) => {}
            (Engine::Adaptive(a), Kind::Adaptive) => {
                self.metrics.call(outcome, false);
                match outcome {
                    Outcome::Success => a.window.add(now, 1, 1, 0),
                    Outcome::Failure => a.window.add(now, 1, 0, 0),
                    Outcome::Ignored => {}
                }
            }
            (Engine::Sliding(s), Kind::Closed(g)) => self.record_closed(s, Some(g), start, now, outcome),
            (Engine::Sliding(s), Kind::Metrics) => self.record_closed(s, None, start, now, outcome),
            (Engine::Sliding(s), Kind::HalfOpen(g)) => self.record_half(s, g, start, now, outcome),
            _ => {}
        }
    }

    #[inline]
    fn record_closed(&self, s: &Sliding, g: Option<u64>, start: u64, now: u64, outcome: Outcome) {
        let slow = now.saturating_sub(start) >= s.slow_nanos.load(Relaxed);
        self.metrics.call(outcome, slow);
        if outcome == Outcome::Ignored {
            return;
        }
        let w = s.word.load(Acquire);
        if let Some(g) = g
            && (st(w) != CLOSED || generation(w) != g)
        {
            return;
        }
        if outcome == Outcome::Success && !slow {
            // Fast path: a plain success is one counter increment.
            s.window.record(now, false, false);
            if s.consecutive.load(Relaxed) != 0 {
                s.consecutive.store(0, Relaxed);
            }
            if g.is_some() && s.window.has_bad(now) {
                self.check_trip(s, w, now, 0);
            }
            return;
        }
        self.record_bad(s, g, w, now, outcome, slow);
    }

    #[inline(never)]
    fn record_bad(&self, s: &Sliding, g: Option<u64>, w: u64, now: u64, outcome: Outcome, slow: bool) {
        let failure = outcome == Outcome::Failure || (slow && s.slow_is_failure.load(Relaxed));
        s.window.record(now, failure, slow);
        let consecutive = if failure {
            s.consecutive.fetch_add(1, Relaxed).saturating_add(1)
        } else {
            if s.consecutive.load(Relaxed) != 0 {
                s.consecutive.store(0, Relaxed);
            }
            0
        };
        if g.is_none() || !(failure || slow || s.window.has_bad(now)) {
            return;
        }
        self.check_trip(s, w, now, consecutive);
    }

    #[cold]
    #[inline(never)]
    fn check_trip(&self, s: &Sliding, w: u64, now: u64, consecutive: u32) {
        if self.mode.load(Relaxed) == M_NORMAL && self.should_trip(s, now, consecutive) {
            self.trip(s, w, now);
        }
    }

    fn should_trip(&self, s: &Sliding, now: u64, consecutive: u32) -> bool {
        let cfg = s.cfg.load();
        if cfg.consecutive_failures.is_some_and(|n| consecutive >= n) {
            return true;
        }
        let snap = s.window.snapshot(now);
        if cfg.failure_count_threshold.is_some_and(|n| snap.failures >= u64::from(n)) {
            return true;
        }
        if snap.calls == 0 || snap.calls < u64::from(cfg.minimum_calls) {
            return false;
        }
        let calls = snap.calls as f64;
        let over = |t: Option<f64>, n: u64| t.is_some_and(|t| n as f64 * 100.0 >= t * calls);
        over(cfg.failure_rate_threshold, snap.failures) || over(cfg.slow_call_rate_threshold, snap.slow)
    }

    fn record_half(&self, s: &Sliding, g: u64, start: u64, now: u64, outcome: Outcome) {
        let slow = now.saturating_sub(start) >= s.slow_nanos.load(Relaxed);
        self.metrics.call(outcome, slow);
        let failed = outcome == Outcome::Failure || (slow && s.slow_matters.load(Relaxed));
        loop {
            let w = s.word.load(Acquire);
            if st(w) != HALF || generation(w) != g {
                return;
            }
            if outcome == Outcome::Ignored {
                if s.word.compare_exchange(w, w - (1 << INFLIGHT_SHIFT), AcqRel, Acquire).is_ok() {
                    return;
                }
                continue;
            }
            if failed {
                if self.trip(s, w, now) {
                    return;
                }
                continue;
            }
            let successes = succ(w) + 1;
            if successes >= u64::from(s.cfg.load().success_threshold) {
                if self.close(s, w, now) {
                    return;
                }
                continue;
            }
            let nw = pack(HALF, inflight(w).saturating_sub(1), successes, g);
            if s.word.compare_exchange(w, nw, AcqRel, Acquire).is_ok() {
                return;
            }
        }
    }

    /// Gives back a half-open permit of generation `g` (caller gave up).
    fn release(&self, g: u64) {
        let Engine::Sliding(s) = &self.engine else { return };
        loop {
            let w = s.word.load(Acquire);
            if st(w) != HALF || generation(w) != g || inflight(w) == 0 {
                return;
            }
            if s.word.compare_exchange(w, w - (1 << INFLIGHT_SHIFT), AcqRel, Acquire).is_ok() {
                return;
            }
        }
    }

    /// Trial calls running now in half-open.
    pub fn half_open_in_flight(&self) -> u32 {
        match &self.engine {
            Engine::Sliding(s) => {
                let w = s.word.load(Acquire);
                if st(w) == HALF { inflight(w) as u32 } else { 0 }
            }
            Engine::Adaptive(_) => 0,
        }
    }
}

fn drop_probability(cfg: &AdaptiveConfig, s: Snapshot) -> f64 {
    let requests = s.calls as f64;
    let accepts = s.failures as f64;
    ((requests - f64::from(cfg.protection) - cfg.k * accepts) / (requests + 1.0)).max(0.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::{WaitConfig, WindowConfig};

    const S: Duration = Duration::from_secs(1);

    fn breaker(window: WindowConfig, clock: &ManualClock) -> Arc<Breaker> {
        let cfg = BreakerConfig::sliding(SlidingWindowConfig {
            window,
            minimum_calls: 4,
            failure_rate_threshold: Some(50.0),
            wait: WaitConfig::Fixed { wait: 10 * S },
            permitted_calls_in_half_open: 2,
            success_threshold: 2,
            automatic_transition: false,
            ..Default::default()
        });
        Breaker::standalone("unit", &cfg, Arc::new(clock.clone())).unwrap().0
    }

    // The success fast path still trips when a success brings the window to
    // its minimum calls with the failure rate over the threshold.
    #[test]
    fn a_success_completing_the_minimum_trips_on_both_windows() {
        for window in [WindowConfig::Count { size: 10 }, WindowConfig::Time { duration: 10 * S, buckets: 10 }] {
            let clock = ManualClock::new();
            let b = breaker(window, &clock);
            for o in [Outcome::Failure, Outcome::Failure, Outcome::Success] {
                b.try_acquire_ref().unwrap().record(o);
                assert_eq!(b.state(), State::Closed);
            }
            b.try_acquire_ref().unwrap().record(Outcome::Success);
            assert_eq!(b.state(), State::Open, "{window:?}");
            assert_eq!(b.snapshot(), Snapshot { calls: 4, failures: 2, slow: 0 });
        }
    }

    #[test]
    fn successes_alone_never_trip_and_are_counted() {
        let clock = ManualClock::new();
        let b = breaker(WindowConfig::Time { duration: 10 * S, buckets: 10 }, &clock);
        for _ in 0..100 {
            b.try_acquire_ref().unwrap().record(Outcome::Success);
        }
        assert_eq!(b.snapshot(), Snapshot { calls: 100, failures: 0, slow: 0 });
        clock.advance(11 * S);
        assert_eq!(b.snapshot(), Snapshot::default(), "the buckets rotated out");
        b.try_acquire_ref().unwrap().record(Outcome::Success);
        assert_eq!(b.snapshot().calls, 1);
        assert_eq!(b.state(), State::Closed);
    }

    #[test]
    fn borrowed_permits_hold_and_give_back_half_open_slots() {
        let clock = ManualClock::new();
        let b = breaker(WindowConfig::Count { size: 10 }, &clock);
        for _ in 0..4 {
            b.try_acquire_ref().unwrap().record(Outcome::Failure);
        }
        assert!(matches!(b.try_acquire_ref(), Err(Error::Open { .. })));
        clock.advance(10 * S);
        let p1 = b.try_acquire_ref().unwrap();
        let p2 = b.try_acquire_ref().unwrap();
        assert!(b.try_acquire_ref().is_err(), "only 2 permits");
        assert!(b.try_acquire().is_err(), "shared with owned permits");
        drop(p1);
        assert_eq!(b.half_open_in_flight(), 1);
        let p3 = b.try_acquire().unwrap();
        p2.record(Outcome::Success);
        assert_eq!(b.state(), State::HalfOpen);
        p3.record(Outcome::Success);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.half_open_in_flight(), 0);
    }
}
