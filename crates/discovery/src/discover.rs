//! [`CellDiscover`]: one cell's serving instances as a `tower::discover::Discover`
//! stream of `Change::Insert` / `Change::Remove`, for `tower::balance::p2c`.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cellctx::CellId;
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::WatchStream;
use tower::discover::Change;

use crate::instance::Instance;
use crate::snapshot::Snapshot;
use crate::watcher::Watcher;

/// The serving instances of one cell of a watched service, as a
/// [`tower::discover::Discover`]: `Change::Insert(key, make(&instance))` when an
/// instance appears (or its registration changes), `Change::Remove(key)` when it
/// disappears or starts draining. Keys are the instances' etcd keys.
///
/// `make` turns an [`Instance`] into the endpoint service (a client bound to
/// `instance.address`, usually wrapped in `tower::load::PeakEwma`).
///
/// The stream never fails and never ends: it keeps its watcher (and the
/// watcher's background task) alive while it exists.
pub struct CellDiscover<F, S> {
    cell: CellId,
    rx: WatchStream<Arc<Snapshot>>,
    make: F,
    current: HashMap<Arc<str>, Arc<Instance>>,
    pending: VecDeque<Change<Arc<str>, S>>,
    _watcher: Watcher,
}

// No field is structurally pinned.
impl<F, S> Unpin for CellDiscover<F, S> {}

impl<F, S> fmt::Debug for CellDiscover<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CellDiscover")
            .field("cell", &self.cell)
            .field("instances", &self.current.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl Watcher {
    /// A [`CellDiscover`] over `cell`'s serving instances, with `make` building
    /// each endpoint.
    pub fn discover<F, S>(&self, cell: CellId, make: F) -> CellDiscover<F, S>
    where
        F: FnMut(&Instance) -> S,
    {
        CellDiscover {
            cell,
            rx: WatchStream::new(self.subscribe()),
            make,
            current: HashMap::new(),
            pending: VecDeque::new(),
            _watcher: self.clone(),
        }
    }
}

impl<F, S> CellDiscover<F, S>
where
    F: FnMut(&Instance) -> S,
{
    /// The cell discovered.
    pub fn cell(&self) -> &CellId {
        &self.cell
    }

    /// Number of instances inserted and not removed so far.
    pub fn len(&self) -> usize {
        self.current.len()
    }

    /// Whether no instance is currently inserted.
    pub fn is_empty(&self) -> bool {
        self.current.is_empty()
    }

    fn diff(&mut self, snap: &Snapshot) {
        let desired = snap.serving_arcs(&self.cell);
        let gone: Vec<Arc<str>> = self
            .current
            .keys()
            .filter(|k| !desired.iter().any(|(d, _)| d == *k))
            .cloned()
            .collect();
        for key in gone {
            self.current.remove(&key);
            self.pending.push_back(Change::Remove(key));
        }
        for (key, inst) in desired {
            let same = self.current.get(key).is_some_and(|old| Arc::ptr_eq(old, inst) || **old == **inst);
            if !same {
                self.current.insert(key.clone(), inst.clone());
                let svc = (self.make)(inst);
                self.pending.push_back(Change::Insert(key.clone(), svc));
            }
        }
    }
}

impl<F, S> Stream for CellDiscover<F, S>
where
    F: FnMut(&Instance) -> S,
{
    type Item = Result<Change<Arc<str>, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match this.rx.poll_next_unpin(cx) {
                Poll::Ready(Some(snap)) => this.diff(&snap),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::instance::InstanceState;
    use futures_util::FutureExt;

    fn inst(cell: &str, port: u16) -> Instance {
        Instance::try_new("svc", cell.parse().unwrap(), format!("127.0.0.1:{port}")).unwrap()
    }

    fn drain<F: FnMut(&Instance) -> String>(d: &mut CellDiscover<F, String>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Some(Ok(c))) = d.next().now_or_never() {
            out.push(match c {
                Change::Insert(_, s) => format!("+{s}"),
                Change::Remove(k) => format!("-{}", k.rsplit('/').next().unwrap()),
            });
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn inserts_removes_and_skips_other_cells() {
        let w = Watcher::fixed("svc", [inst("a", 1), inst("a", 2), inst("b", 3)]);
        let mut d = w.discover("a".parse().unwrap(), |i: &Instance| i.address.clone());
        assert_eq!(drain(&mut d), ["+127.0.0.1:1", "+127.0.0.1:2"]);
        assert_eq!(d.len(), 2);
        // nothing new: pending
        assert!(d.next().now_or_never().is_none());

        // instance 2 starts draining, 4 appears, 1 unchanged, cell b changes
        let mut draining = inst("a", 2);
        draining.state = InstanceState::Draining;
        let next: std::collections::BTreeMap<Arc<str>, Arc<Instance>> =
            [inst("a", 1), draining, inst("a", 4), inst("b", 5)]
                .into_iter()
                .map(|i| (Arc::from(i.key(crate::DEFAULT_ROOT)), Arc::new(i)))
                .collect();
        w.shared_send(Snapshot::build(2, next));
        assert_eq!(drain(&mut d), ["+127.0.0.1:4", "-127.0.0.1:2"]);

        // a changed registration is inserted again (replaces the endpoint)
        let reweighted = inst("a", 1).with_weight(7);
        let next: std::collections::BTreeMap<Arc<str>, Arc<Instance>> = [reweighted, inst("a", 4)]
            .into_iter()
            .map(|i| (Arc::from(i.key(crate::DEFAULT_ROOT)), Arc::new(i)))
            .collect();
        w.shared_send(Snapshot::build(3, next));
        assert_eq!(drain(&mut d), ["+127.0.0.1:1"]);
        assert_eq!(d.len(), 2);
    }

    #[tokio::test]
    async fn outlives_the_watcher_handle() {
        let w = Watcher::fixed("svc", [inst("a", 1)]);
        let mut d = w.discover("a".parse().unwrap(), |i: &Instance| i.address.clone());
        assert_eq!(drain(&mut d), ["+127.0.0.1:1"]);
        // the discover keeps the watcher's state alive
        drop(w);
        assert!(d.next().now_or_never().is_none());
    }

    impl Watcher {
        fn shared_send(&self, snap: Snapshot) {
            self.shared_publish(Arc::new(snap));
        }
    }
}
