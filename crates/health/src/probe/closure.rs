//! [`FnProbe`]: a probe from a closure.

use std::fmt;
use std::future::Future;

use super::{Probe, ProbeFuture, ProbeKind, ProbeOutcome};

/// A probe made from an async closure, for anything without a built-in probe
/// (a local cache's hit ratio, a feature flag, a disk).
///
/// The closure returns `Ok(outcome)` or `Err(e)`; an error is a failed run
/// whose message is `e`'s `Display`.
///
/// ```
/// use health::{FnProbe, ProbeOutcome};
/// let hits = 0.97;
/// let probe = FnProbe::new(move || async move {
///     Ok::<_, std::io::Error>(ProbeOutcome::up().with_hit_ratio(hits))
/// });
/// # let _ = probe;
/// ```
pub struct FnProbe<F> {
    f: F,
    kind: ProbeKind,
}

impl<F> FnProbe<F> {
    /// Wraps `f` as a [`ProbeKind::Custom`] probe.
    pub fn new(f: F) -> Self {
        FnProbe { f, kind: ProbeKind::Custom }
    }

    /// Reports another kind (which also picks the schedule defaults).
    pub fn with_kind(mut self, kind: ProbeKind) -> Self {
        self.kind = kind;
        self
    }
}

impl<F> fmt::Debug for FnProbe<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnProbe").field("kind", &self.kind).finish_non_exhaustive()
    }
}

impl<F, Fut, E> Probe for FnProbe<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<ProbeOutcome, E>> + Send + 'static,
    E: fmt::Display + 'static,
{
    fn kind(&self) -> ProbeKind {
        self.kind
    }

    fn check(&self) -> ProbeFuture<'_> {
        let fut = (self.f)();
        Box::pin(async move {
            match fut.await {
                Ok(o) => o,
                Err(e) => ProbeOutcome::down(e),
            }
        })
    }
}
