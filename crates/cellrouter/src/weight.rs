//! Dynamic weights from round-trip time, and smooth weighted round robin.
//!
//! `w = base × (1 + a × e^(−b × rtt_ms))` with `a = 0.5`, `b = 0.02` (the seed's
//! formula): a nearby endpoint gets up to 1.5× its base weight, a far one tends
//! to its base weight. A failed endpoint gets 0; a live one never less than
//! `floor × base`, so one slow or lost probe cannot starve a cell.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

/// The seed's `a`.
pub const RTT_A: f64 = 0.5;
/// The seed's `b` (per millisecond).
pub const RTT_B: f64 = 0.02;

/// `base × (1 + 0.5 × e^(−0.02 × rtt_ms))`; a negative or non-finite RTT counts as
/// unknown (the base weight).
///
/// ```
/// use cellrouter::rtt_weight;
/// assert!((rtt_weight(100.0, 0.0) - 150.0).abs() < 1e-9);
/// assert!((rtt_weight(100.0, 50.0) - (100.0 * (1.0 + 0.5 * (-1.0f64).exp()))).abs() < 1e-9);
/// ```
pub fn rtt_weight(base: f64, rtt_ms: f64) -> f64 {
    rtt_weight_with(base, rtt_ms, RTT_A, RTT_B)
}

/// [`rtt_weight`] with explicit `a` and `b`.
pub fn rtt_weight_with(base: f64, rtt_ms: f64, a: f64, b: f64) -> f64 {
    if !rtt_ms.is_finite() || rtt_ms < 0.0 {
        return base;
    }
    base * (1.0 + a * (-b * rtt_ms).exp())
}

/// Parameters of the weight formula and the RTT average.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightParams {
    /// `a` (default 0.5).
    pub a: f64,
    /// `b` per ms (default 0.02).
    pub b: f64,
    /// Smallest weight of a live endpoint, as a fraction of its base (default 0.1).
    pub floor: f64,
    /// EWMA smoothing of observed RTTs, in (0, 1] (default 0.3: new = 0.3 × sample + 0.7 × old).
    pub alpha: f64,
}

impl Default for WeightParams {
    fn default() -> Self {
        WeightParams { a: RTT_A, b: RTT_B, floor: 0.1, alpha: 0.3 }
    }
}

impl WeightParams {
    /// The effective weight of an endpoint.
    pub fn weight(&self, base: f64, rtt_ms: Option<f64>, failed: bool) -> f64 {
        if failed || base <= 0.0 || !base.is_finite() {
            return 0.0;
        }
        let w = match rtt_ms {
            Some(rtt) => rtt_weight_with(base, rtt, self.a, self.b),
            None => base,
        };
        w.max(base * self.floor)
    }
}

struct Entry<K> {
    key: K,
    base: f64,
    rtt: Option<f64>,
    failed: bool,
    weight: i64,
    current: i64,
}

/// Smooth weighted round robin (nginx's algorithm) over keys (endpoints, or
/// cells for unkeyed traffic) whose weights follow [`rtt_weight`] live.
///
/// Each pick adds every weight to its running score, picks the highest and
/// subtracts the total from it: over a cycle each key is picked exactly in
/// proportion to its weight, spread out rather than in bursts. Weights are kept
/// in thousandths. One short mutex section per pick (a handful of entries).
///
/// ```
/// use cellrouter::SmoothWrr;
/// let wrr = SmoothWrr::new();
/// wrr.insert("a", 100.0);
/// wrr.insert("b", 100.0);
/// wrr.set_failed(&"b", true);
/// assert!((0..10).all(|_| wrr.pick() == Some("a")));
/// ```
pub struct SmoothWrr<K> {
    params: WeightParams,
    entries: Mutex<Vec<Entry<K>>>,
}

impl<K: fmt::Debug> fmt::Debug for SmoothWrr<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let mut l = f.debug_list();
        for e in entries.iter() {
            l.entry(&(&e.key, e.weight as f64 / 1000.0));
        }
        l.finish()
    }
}

impl<K: Clone + PartialEq> Default for SmoothWrr<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + PartialEq> SmoothWrr<K> {
    /// An empty picker with the default [`WeightParams`].
    pub fn new() -> Self {
        Self::with_params(WeightParams::default())
    }

    /// An empty picker with explicit parameters.
    pub fn with_params(params: WeightParams) -> Self {
        SmoothWrr { params, entries: Mutex::new(Vec::new()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry<K>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reweigh(params: &WeightParams, e: &mut Entry<K>) {
        e.weight = (params.weight(e.base, e.rtt, e.failed) * 1000.0).round() as i64;
    }

    /// Adds `key` with base weight `base`, or updates its base weight.
    pub fn insert(&self, key: K, base: f64) {
        let mut v = self.lock();
        if let Some(e) = v.iter_mut().find(|e| e.key == key) {
            e.base = base;
            Self::reweigh(&self.params, e);
            return;
        }
        let mut e = Entry { key, base, rtt: None, failed: false, weight: 0, current: 0 };
        Self::reweigh(&self.params, &mut e);
        v.push(e);
    }

    /// Removes `key`.
    pub fn remove(&self, key: &K) {
        self.lock().retain(|e| &e.key != key);
    }

    /// Feeds an observed round-trip time of `key` into its EWMA.
    pub fn observe_rtt(&self, key: &K, rtt: Duration) {
        let ms = rtt.as_secs_f64() * 1000.0;
        let mut v = self.lock();
        if let Some(e) = v.iter_mut().find(|e| &e.key == key) {
            e.rtt = Some(match e.rtt {
                Some(old) => self.params.alpha * ms + (1.0 - self.params.alpha) * old,
                None => ms,
            });
            Self::reweigh(&self.params, e);
        }
    }

    /// Marks `key` failed (weight 0, never picked) or recovered.
    pub fn set_failed(&self, key: &K, failed: bool) {
        let mut v = self.lock();
        if let Some(e) = v.iter_mut().find(|e| &e.key == key) {
            e.failed = failed;
            if failed {
                e.current = 0;
            }
            Self::reweigh(&self.params, e);
        }
    }

    /// The current effective weight of `key`.
    pub fn weight(&self, key: &K) -> Option<f64> {
        self.lock().iter().find(|e| &e.key == key).map(|e| e.weight as f64 / 1000.0)
    }

    /// The RTT average of `key`, in milliseconds.
    pub fn rtt_ms(&self, key: &K) -> Option<f64> {
        self.lock().iter().find(|e| &e.key == key).and_then(|e| e.rtt)
    }

    /// Picks the next key; `None` when every weight is 0.
    pub fn pick(&self) -> Option<K> {
        let mut v = self.lock();
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in 0..v.len() {
            let w = v[i].weight;
            if w <= 0 {
                continue;
            }
            v[i].current += w;
            total += w;
            if best.is_none_or(|b| v[i].current > v[b].current) {
                best = Some(i);
            }
        }
        let b = best?;
        v[b].current -= total;
        Some(v[b].key.clone())
    }

    /// Removes every key `keep` refuses.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&K) -> bool) {
        self.lock().retain(|e| keep(&e.key));
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}
