//! [`ClockSkew`]: what a signer learned of its verifiers' clocks, so a host
//! whose clock is off still signs hops its downstreams accept (the clock-skew
//! correction AWS SDKs apply to SigV4 requests).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Uri};

use crate::sign::unix_secs;

/// The header a service adds to its refusal of a request that came without a
/// valid hop signature (the edge layer strips a signature it refuses, expired
/// or issued in the future included): its clock, in seconds since the Unix
/// epoch ([`clock_value`]). It tells no more than the `Date` header does, but
/// reads the clock the verifier reads ([`cellclock`], offsets included).
pub static CLOCK_HEADER: HeaderName = HeaderName::from_static("x-cell-clock");

/// The [`CLOCK_HEADER`] value for this process now.
pub fn clock_value() -> HeaderValue {
    HeaderValue::from(unix_secs(cellclock::now()))
}

/// The largest correction a signer applies (15 minutes, the skew SigV4
/// accepts): a downstream claiming a clock further off is ignored.
pub const MAX_CORRECTION: Duration = Duration::from_secs(15 * 60);

/// Per downstream authority, the seconds a signer adds to its own clock to
/// match the downstream's, learned from the downstream's refusals of hops
/// that carry its clock ([`observe`](Self::observe)) and read when signing
/// ([`PropagateCellContextLayer::with_clock_skew`](crate::PropagateCellContextLayer::with_clock_skew)).
/// Cheap to clone (one shared table); while nothing was learned, signing
/// reads one atomic flag and no lock.
///
/// ```
/// use cellctx::ClockSkew;
/// use std::time::{Duration, SystemTime};
///
/// let skew = ClockSkew::new();
/// let uri: http::Uri = "http://cell-a:7001/posts/1".parse().unwrap();
/// let now = SystemTime::now();
/// let theirs = now + Duration::from_secs(26);
/// let mut refusal = http::HeaderMap::new();
/// let secs = theirs.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
/// refusal.insert("x-cell-clock", secs.to_string().parse().unwrap());
/// assert!(skew.observe(&uri, &refusal));
/// let corrected = skew.now_for(&uri, SystemTime::now());
/// assert!(corrected.duration_since(now).unwrap() >= Duration::from_secs(25));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClockSkew {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Whether any offset is set (the fast path skips the lock).
    any: AtomicBool,
    /// Seconds to add, per authority (`host:port`; `""` for a URI without one).
    offsets: RwLock<HashMap<String, i64>>,
}

fn authority(uri: &Uri) -> &str {
    uri.authority().map_or("", |a| a.as_str())
}

impl ClockSkew {
    /// An empty table: signing uses the local clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Learns from a downstream's answer to a request sent to `uri`: when it
    /// carries [`CLOCK_HEADER`] (a refusal for want of a valid signature),
    /// records the offset of that clock from this process's. Returns whether
    /// a hop signed now would carry another time than one signed without
    /// the correction or before this answer (the offset is not zero, or it
    /// changed): then the refusal may be for the time, and the caller may
    /// send the request once more, signed anew. A value that does not parse
    /// or lies beyond [`MAX_CORRECTION`] is ignored (`false`).
    pub fn observe(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        let Some(theirs) = headers.get(&CLOCK_HEADER).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok()) else {
            return false;
        };
        let ours = unix_secs(cellclock::now());
        let offset = i64::try_from(theirs).unwrap_or(i64::MAX).saturating_sub(i64::try_from(ours).unwrap_or(i64::MAX));
        if offset.unsigned_abs() > MAX_CORRECTION.as_secs() {
            tracing::warn!(authority = authority(uri), offset, "cellctx: a downstream's clock is off beyond the largest correction; ignored");
            return false;
        }
        let mut offsets = self.inner.offsets.write().unwrap_or_else(PoisonError::into_inner);
        let changed = offsets.insert(authority(uri).to_owned(), offset) != Some(offset);
        if changed {
            tracing::warn!(authority = authority(uri), offset, "cellctx: signing hops with the downstream's clock offset");
        }
        self.inner.any.store(true, Ordering::Release);
        changed || offset != 0
    }

    /// `now` as the downstream at `uri` reads its clock (as last learned).
    pub fn now_for(&self, uri: &Uri, now: SystemTime) -> SystemTime {
        if !self.inner.any.load(Ordering::Acquire) {
            return now;
        }
        let offset = self.inner.offsets.read().unwrap_or_else(PoisonError::into_inner).get(authority(uri)).copied();
        match offset {
            Some(s) if s >= 0 => now + Duration::from_secs(s.unsigned_abs()),
            Some(s) => now.checked_sub(Duration::from_secs(s.unsigned_abs())).unwrap_or(now),
            None => now,
        }
    }
}
