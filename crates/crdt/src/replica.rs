//! [`Replica`]: one cell's replicated objects, local changes and idempotent
//! application of remote events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cellctx::CellId;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::counter::{PnCounter, PnDelta};
use crate::error::CrdtError;
use crate::hlc::{Clock, Hlc, SiteId, SystemClock, Timestamp};
use crate::lww::{Bias, LwwDelta, LwwElementSet};
use crate::metrics::ReplicaMetrics;
use crate::journal::Record;
use crate::orset::{OrSet, OrSetDelta};
use crate::parked::{DeadLetter, ParkedEvent};
use crate::state::StateStore;
use crate::watermark::Watermarks;

/// Event type of a [`PnCounter`] delta (the outbox `type` column).
pub const TYPE_PN_COUNTER: &str = "crdt.pn_counter";
/// Event type of an [`OrSet`] delta.
pub const TYPE_OR_SET: &str = "crdt.or_set";
/// Event type of an [`LwwElementSet`] delta.
pub const TYPE_LWW_SET: &str = "crdt.lww_set";

/// How many sequence numbers per origin the duplicate filter remembers.
pub const DEDUP_WINDOW: usize = 65_536;

/// A replicated object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// A counter (likes).
    Counter(PnCounter),
    /// An observed-remove set (comments).
    OrSet(OrSet<String>),
    /// A last-writer-wins set (who liked).
    Lww(LwwElementSet<String>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Counter(_) => TYPE_PN_COUNTER,
            Value::OrSet(_) => TYPE_OR_SET,
            Value::Lww(_) => TYPE_LWW_SET,
        }
    }

    /// The counter's value, if this is a counter.
    pub fn as_counter(&self) -> Option<&PnCounter> {
        match self {
            Value::Counter(c) => Some(c),
            _ => None,
        }
    }

    /// The members, if this is a set.
    pub fn members(&self) -> Option<Vec<String>> {
        match self {
            Value::OrSet(s) => Some(s.iter().cloned().collect()),
            Value::Lww(s) => Some(s.iter().cloned().collect()),
            Value::Counter(_) => None,
        }
    }
}

/// A delta of one replicated object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delta {
    /// For a [`PnCounter`].
    Counter(PnDelta),
    /// For an [`OrSet`].
    OrSet(OrSetDelta<String>),
    /// For an [`LwwElementSet`].
    Lww(LwwDelta<String>),
}

impl Delta {
    /// The event type written to the outbox `type` column.
    pub fn event_type(&self) -> &'static str {
        match self {
            Delta::Counter(_) => TYPE_PN_COUNTER,
            Delta::OrSet(_) => TYPE_OR_SET,
            Delta::Lww(_) => TYPE_LWW_SET,
        }
    }
}

/// A local change: what the service writes to the outbox in its transaction,
/// then [`commit`](ReplicaGuard::commit)s locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Kind of aggregate (Debezium `aggregatetype`), e.g. `post`.
    pub aggregate_type: String,
    /// The object id (Debezium `aggregateid`; the Kafka key).
    pub aggregate_id: String,
    /// The cell that made the change.
    pub origin: CellId,
    /// HLC timestamp of the change.
    pub ts: Timestamp,
    /// The delta.
    pub delta: Delta,
}

impl Change {
    /// The encoded delta (the outbox `payload` column).
    pub fn payload(&self) -> Result<Vec<u8>, CrdtError> {
        codec::encode(&self.delta)
    }
}

/// A replicated event as it arrives from another cell (or back from this one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The cell that made the change.
    pub origin: CellId,
    /// The origin's outbox sequence (its outbox row id).
    pub seq: u64,
    /// HLC timestamp of the change.
    pub ts: Timestamp,
    /// The object id.
    pub aggregate_id: String,
    /// The event type ([`TYPE_PN_COUNTER`], [`TYPE_OR_SET`], [`TYPE_LWW_SET`]).
    pub event_type: String,
    /// The encoded delta.
    pub payload: Vec<u8>,
}

/// What [`Replica::apply_event`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The delta was joined into the state.
    Applied,
    /// The (origin, sequence) was seen before (or is parked already); nothing changed.
    Duplicate,
    /// Its HLC time is more than the maximum drift ahead of the local clock:
    /// it waits in the parked set (persisted with the state) and is applied
    /// by [`Replica::retry_parked`] once the local clock is close enough.
    Parked,
}

/// Recently applied sequence numbers of one origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct DedupWindow {
    seen: BTreeSet<u64>,
}

impl DedupWindow {
    /// Records `seq`; false when it was already recorded.
    fn insert(&mut self, seq: u64) -> bool {
        if !self.seen.insert(seq) {
            return false;
        }
        while self.seen.len() > DEDUP_WINDOW {
            self.seen.pop_first();
        }
        true
    }
}

/// The persisted state of a replica: its objects, its duplicate filter, the
/// events parked until the clock allows them, the dead letters, and the
/// watermark tombstones were collected at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    objects: BTreeMap<String, Value>,
    dedup: BTreeMap<String, DedupWindow>,
    last_ts: Timestamp,
    parked: BTreeMap<(String, u64), ParkedEvent>,
    dead: Vec<DeadLetter>,
    floor: Timestamp,
    /// How far the replication topic was consumed into this state.
    consumed: Consumed,
    /// What changed since the last drain, when a replicator persists
    /// incrementally (never persisted itself).
    #[serde(skip)]
    journal: Journal,
}

/// The next offset to read per (topic, partition) of the replication topic,
/// kept in the state those reads produced (its snapshot and log): a replica
/// restored from any snapshot, an old one included, resumes reading right
/// after what that snapshot holds, whatever the consumer group committed
/// since. Bookkeeping, not state: it never makes two stores unequal.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Consumed(BTreeMap<(String, i32), i64>);

impl PartialEq for Consumed {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Consumed {}

impl Consumed {
    fn note(&mut self, topic: &str, partition: i32, next: i64) {
        let at = self.0.entry((topic.to_string(), partition)).or_insert(next);
        *at = (*at).max(next);
    }
}

/// Changes recorded for incremental persistence: bookkeeping, not state, so
/// it never makes two stores unequal.
#[derive(Debug, Clone, Default)]
struct Journal(Option<Vec<Record>>);

impl PartialEq for Journal {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Journal {}

/// The snapshot layout before parked events, dead letters and the store's
/// floor were added: still decoded, so an upgraded cell restores its state.
#[derive(Deserialize)]
struct StoreV1 {
    objects: BTreeMap<String, Value>,
    dedup: BTreeMap<String, DedupWindow>,
    last_ts: Timestamp,
}

impl From<StoreV1> for Store {
    fn from(v: StoreV1) -> Self {
        Store { objects: v.objects, dedup: v.dedup, last_ts: v.last_ts, ..Store::default() }
    }
}

/// The snapshot layout before the consumed offsets were kept in it: still
/// decoded (a replica restored from it resumes from the group's commits).
#[derive(Deserialize)]
struct StoreV2 {
    objects: BTreeMap<String, Value>,
    dedup: BTreeMap<String, DedupWindow>,
    last_ts: Timestamp,
    parked: BTreeMap<(String, u64), ParkedEvent>,
    dead: Vec<DeadLetter>,
    floor: Timestamp,
}

impl From<StoreV2> for Store {
    fn from(v: StoreV2) -> Self {
        Store { objects: v.objects, dedup: v.dedup, last_ts: v.last_ts, parked: v.parked, dead: v.dead, floor: v.floor, ..Store::default() }
    }
}

impl Store {
    /// The object `id`.
    pub fn get(&self, id: &str) -> Option<&Value> {
        self.objects.get(id)
    }

    /// All objects.
    pub fn objects(&self) -> &BTreeMap<String, Value> {
        &self.objects
    }

    /// Events parked until the local clock is within the drift bound of them.
    pub fn parked(&self) -> impl Iterator<Item = &ParkedEvent> + '_ {
        self.parked.values()
    }

    /// Messages that could not be applied (kept for inspection).
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead
    }

    /// The watermark tombstones were last collected at (`Timestamp::ZERO`: never).
    pub fn floor(&self) -> Timestamp {
        self.floor
    }

    fn log(&mut self, record: Record) {
        if let Some(j) = &mut self.journal.0 {
            j.push(record);
        }
    }

    /// Whether changes are being recorded for incremental persistence.
    fn journaling(&self) -> bool {
        self.journal.0.is_some()
    }

    fn fresh_value(&self, delta: &Delta, bias: Bias) -> Value {
        let mut v = match delta {
            Delta::Counter(_) => Value::Counter(PnCounter::new()),
            Delta::OrSet(_) => Value::OrSet(OrSet::new()),
            Delta::Lww(_) => Value::Lww(LwwElementSet::new(bias)),
        };
        // a new object starts at the collected floor: a late add at or below it
        // was collected elsewhere and must not come back here
        if self.floor > Timestamp::ZERO {
            match &mut v {
                Value::Counter(_) => {}
                Value::OrSet(s) => {
                    s.gc(self.floor);
                }
                Value::Lww(s) => {
                    s.gc(self.floor);
                }
            }
        }
        v
    }

    fn apply_delta(&mut self, id: &str, delta: &Delta, bias: Bias) -> Result<(), CrdtError> {
        if !self.objects.contains_key(id) {
            let fresh = self.fresh_value(delta, bias);
            self.objects.insert(id.to_string(), fresh);
        }
        let Some(value) = self.objects.get_mut(id) else {
            return Err(CrdtError::Corrupt(format!("object {id:?} vanished")));
        };
        match (value, delta) {
            (Value::Counter(c), Delta::Counter(d)) => c.apply(d),
            (Value::OrSet(s), Delta::OrSet(d)) => s.apply(d),
            (Value::Lww(s), Delta::Lww(d)) => s.apply(d),
            (v, d) => {
                return Err(CrdtError::KindMismatch {
                    object: id.to_string(),
                    stored: v.kind(),
                    delta: d.event_type(),
                });
            }
        }
        Ok(())
    }

    /// Tombstones stored in all sets (removed tags and removed LWW elements).
    pub fn tombstones(&self) -> usize {
        self.objects
            .values()
            .map(|v| match v {
                Value::Counter(_) => 0,
                Value::OrSet(s) => s.tombstones(),
                Value::Lww(s) => s.tombstones(),
            })
            .sum()
    }

    /// Collects tombstones at or below `watermark` in every set (see
    /// [`Watermarks`](crate::Watermarks)); returns how many were dropped.
    pub fn gc(&mut self, watermark: Timestamp) -> usize {
        if watermark > self.floor {
            self.floor = watermark;
        }
        self.objects
            .values_mut()
            .map(|v| match v {
                Value::Counter(_) => 0,
                Value::OrSet(s) => s.gc(watermark),
                Value::Lww(s) => s.gc(watermark),
            })
            .sum()
    }
}

/// Heartbeat bookkeeping for tombstone collection (not persisted: after a
/// restart collection simply waits for the next heartbeats).
#[derive(Debug, Default)]
struct GcState {
    /// Latest heartbeat timestamp per (origin, partition).
    heartbeats: BTreeMap<(CellId, i32), Timestamp>,
    /// Partition count announced per origin.
    partitions: BTreeMap<CellId, i32>,
    /// Every cell's acknowledged watermark, this one's included.
    acks: Watermarks,
    /// The watermark last collected at.
    collected: Timestamp,
}

/// One cell's replica: its objects behind an async lock, its HLC and its metrics.
///
/// Local writes take the lock with [`lock`](Self::lock), compute a [`Change`],
/// write it to the outbox in the same database transaction as the business row,
/// and [`commit`](ReplicaGuard::commit) it locally once the transaction commits;
/// remote events go through [`apply_event`](Self::apply_event), which never
/// writes to the outbox (so nothing loops back).
#[derive(Debug)]
pub struct Replica {
    cell: CellId,
    state_key: String,
    hlc: Hlc,
    bias: Bias,
    store: tokio::sync::Mutex<Store>,
    metrics: Arc<ReplicaMetrics>,
    cells: Vec<CellId>,
    gc: parking_lot::Mutex<GcState>,
    /// The last timestamp of the restored snapshot, once restored (or recovered
    /// without one: `Timestamp(0)`); own outbox rows after it get replayed.
    restored: parking_lot::Mutex<Option<Timestamp>>,
    /// The smallest HLC time in the parked set (`u64::MAX`: none): this
    /// cell's watermark stays below it until it is applied.
    parked_min: std::sync::atomic::AtomicU64,
    /// See [`Replica::durable_ts`].
    durable: std::sync::atomic::AtomicU64,
}

impl Replica {
    /// A replica for `cell` written by the process `writer`, tolerating
    /// `max_drift` of remote clock skew; LWW sets it creates are add-wins.
    ///
    /// `writer` is this process's id within the cell, unique among the cell's
    /// live processes: its leased `idgen` worker id (`Generator::worker`) is
    /// the natural choice. It makes the replica's site
    /// ([`SiteId::for_writer`]), so two processes of one cell keep separate
    /// counter totals and mint distinct tags. Each process is its own replica:
    /// it keeps its state under its own [`state_key`](Self::state_key) and
    /// needs its own consumer group (every replica must see every event).
    pub fn try_new(cell: CellId, writer: u32, max_drift: Duration) -> Result<Self, CrdtError> {
        Self::with_clock(cell, writer, max_drift, Arc::new(SystemClock))
    }

    /// Like [`try_new`](Self::try_new) with an explicit physical clock.
    pub fn with_clock(cell: CellId, writer: u32, max_drift: Duration, clock: Arc<dyn Clock>) -> Result<Self, CrdtError> {
        let hlc = Hlc::try_new(SiteId::for_writer(&cell, writer), max_drift)?.with_clock(clock);
        let metrics = Arc::new(ReplicaMetrics::new(cell.as_str()));
        Ok(Replica {
            state_key: format!("{cell}/{writer}"),
            cell,
            hlc,
            bias: Bias::AddWins,
            store: tokio::sync::Mutex::new(Store::default()),
            metrics,
            cells: Vec::new(),
            gc: parking_lot::Mutex::new(GcState::default()),
            restored: parking_lot::Mutex::new(None),
            parked_min: std::sync::atomic::AtomicU64::new(u64::MAX),
            durable: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// All the cells that write (this one included): enables tombstone
    /// collection driven by the relays' heartbeats. Without it tombstones are
    /// only collected by an explicit [`ReplicaGuard::gc`].
    pub fn with_cells(mut self, cells: impl IntoIterator<Item = CellId>) -> Self {
        let mut cells: Vec<CellId> = cells.into_iter().collect();
        if !cells.contains(&self.cell) {
            cells.push(self.cell.clone());
        }
        cells.sort();
        cells.dedup();
        self.gc.get_mut().acks = Watermarks::new(cells.iter().cloned());
        self.cells = cells;
        self
    }

    /// A heartbeat timestamp for this cell's relay: taken under the state lock,
    /// so every change stamped before it has committed (or aborted) already.
    pub async fn heartbeat_ts(&self) -> Timestamp {
        let _store = self.store.lock().await;
        self.hlc.now()
    }

    /// This cell's watermark: every write stamped at or below it, from every
    /// cell, has been applied here. `None` until heartbeats from all cells on
    /// all partitions arrived (or without [`with_cells`](Self::with_cells)).
    pub fn local_watermark(&self) -> Option<Timestamp> {
        let gc = self.gc.lock();
        self.local_watermark_of(&gc)
    }

    fn local_watermark_of(&self, gc: &GcState) -> Option<Timestamp> {
        let cells = &self.cells;
        if cells.is_empty() {
            return None;
        }
        // a parked event is not applied yet: the watermark stays below it
        let parked = self.parked_min.load(std::sync::atomic::Ordering::Acquire);
        let mut min: Option<Timestamp> = (parked != u64::MAX).then(|| Timestamp(parked.saturating_sub(1)));
        for origin in cells {
            let n = *gc.partitions.get(origin)?;
            for p in 0..n {
                let h = *gc.heartbeats.get(&(origin.clone(), p))?;
                min = Some(min.map_or(h, |m| m.min(h)));
            }
        }
        min
    }

    /// The watermark every cell has acknowledged (tombstones at or below it are collected).
    pub fn global_watermark(&self) -> Option<Timestamp> {
        self.gc.lock().acks.global()
    }

    /// Records a heartbeat from `origin`'s relay, read from `partition` of
    /// `partitions`: every write of `origin` stamped before `ts` in that
    /// partition precedes it. `ack` is `origin`'s own watermark. When the
    /// watermark all cells acknowledged moves, tombstones at or below it are
    /// collected; returns how many.
    ///
    /// # Errors
    /// [`CrdtError::ClockDrift`] when `ts` is too far ahead (nothing recorded).
    pub async fn on_heartbeat(
        &self,
        origin: &CellId,
        partition: i32,
        partitions: i32,
        ts: Timestamp,
        ack: Option<Timestamp>,
    ) -> Result<usize, CrdtError> {
        self.hlc.update(ts)?;
        let collect_at = {
            let mut gc = self.gc.lock();
            gc.partitions.insert(origin.clone(), partitions);
            let slot = gc.heartbeats.entry((origin.clone(), partition)).or_insert(ts);
            if ts > *slot {
                *slot = ts;
            }
            if let Some(ack) = ack {
                gc.acks.ack(origin, ack);
            }
            if let Some(mine) = self.local_watermark_of(&gc) {
                gc.acks.ack(&self.cell, mine);
            }
            match gc.acks.global() {
                Some(w) if w > gc.collected => {
                    gc.collected = w;
                    Some(w)
                }
                _ => None,
            }
        };
        match collect_at {
            Some(w) => {
                let mut store = self.store.lock().await;
                let n = store.gc(w);
                store.log(Record::Gc(w));
                Ok(n)
            }
            None => Ok(0),
        }
    }

    /// The bias of LWW sets this replica creates (every cell must use the same one).
    pub fn with_bias(mut self, bias: Bias) -> Self {
        self.bias = bias;
        self
    }

    /// The cell.
    pub fn cell(&self) -> &CellId {
        &self.cell
    }

    /// Where this replica's state is kept in a [`StateStore`]: `{cell}/{writer}`,
    /// one per writer, so two processes of a cell never restore each other's
    /// snapshot. (A snapshot saved under the cell id alone, by an older build,
    /// is still restored when nothing is saved under this key.)
    pub fn state_key(&self) -> &str {
        &self.state_key
    }

    /// The clock.
    pub fn hlc(&self) -> &Hlc {
        &self.hlc
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<ReplicaMetrics> {
        &self.metrics
    }

    /// Locks the state for a local write (or a consistent read).
    pub async fn lock(&self) -> ReplicaGuard<'_> {
        ReplicaGuard { replica: self, store: self.store.lock().await }
    }

    /// A copy of object `id`.
    pub async fn get(&self, id: &str) -> Option<Value> {
        self.store.lock().await.get(id).cloned()
    }

    /// The state encoded for persistence.
    pub async fn snapshot(&self) -> Result<Vec<u8>, CrdtError> {
        Ok(self.snapshot_at().await?.0)
    }

    /// The encoded state and the HLC time it covers: every own write stamped
    /// at or before it is in it.
    pub(crate) async fn snapshot_at(&self) -> Result<(Vec<u8>, Timestamp), CrdtError> {
        let mut store = self.store.lock().await;
        store.last_ts = self.hlc.last();
        Ok((codec::encode(&*store)?, store.last_ts))
    }

    /// Saves a snapshot in `state` (emptying its log) and records it as this
    /// replica's durable point ([`durable_ts`](Self::durable_ts)).
    /// Returns the snapshot's size in bytes.
    pub async fn save_to<S: StateStore>(&self, state: &S) -> Result<usize, CrdtError> {
        let (snapshot, ts) = self.snapshot_at().await?;
        state.save(&self.state_key, &snapshot).await?;
        self.note_durable(ts);
        tracing::debug!(cell = %self.cell, bytes = snapshot.len(), "crdt replica snapshot saved");
        Ok(snapshot.len())
    }

    /// The HLC time of the last snapshot saved (or restored): this cell's own
    /// outbox rows stamped at or before it are no longer needed to recover,
    /// so outbox retention may prune them once sent. `Timestamp::ZERO` before
    /// any snapshot.
    pub fn durable_ts(&self) -> Timestamp {
        Timestamp(self.durable.load(std::sync::atomic::Ordering::Acquire))
    }

    fn note_durable(&self, ts: Timestamp) {
        self.durable.fetch_max(ts.0, std::sync::atomic::Ordering::AcqRel);
    }

    /// Replaces the state with a decoded snapshot (a restarted cell), and moves
    /// the clock past the snapshot's last timestamp.
    ///
    /// A snapshot may be older than this cell's last writes (they reached the
    /// outbox, the process died before the next save). Before taking new local
    /// writes, re-apply them: `Outbox::replay_into` or `Replica::recover`
    /// (feature `sql`); see the crate docs, "Restarting a cell".
    pub async fn restore(&self, snapshot: &[u8]) -> Result<(), CrdtError> {
        let mut store = self.store.lock().await;
        self.restore_locked(&mut store, snapshot)
    }

    pub(crate) fn restore_locked(&self, store: &mut Store, snapshot: &[u8]) -> Result<(), CrdtError> {
        let mut restored: Store = match codec::decode(snapshot) {
            Ok(s) => s,
            Err(e) => match codec::decode::<StoreV2>(snapshot) {
                Ok(v2) => Store::from(v2),
                Err(_) => codec::decode::<StoreV1>(snapshot).map(Store::from).map_err(|_| e)?,
            },
        };
        self.hlc.adopt(restored.last_ts);
        *self.restored.lock() = Some(restored.last_ts);
        self.note_durable(restored.last_ts);
        restored.journal = Journal(store.journal.0.take().map(|_| Vec::new()));
        *store = restored;
        self.note_parked(store);
        Ok(())
    }

    /// Restores the state `state` holds for this cell: its snapshot (if any),
    /// then the log of changes appended after it; returns how many log
    /// records were replayed. Afterwards the replica counts as restored.
    ///
    /// # Errors
    /// The store's error, or a snapshot or record that does not decode.
    pub async fn restore_from<S: StateStore>(&self, state: &S) -> Result<usize, CrdtError> {
        let mut store = self.store.lock().await;
        Ok(self.restore_locked_from(&mut store, state).await?.0)
    }

    /// For a replicator starting: restores from `state` unless the replica
    /// was restored already, and starts recording changes, under one lock (no
    /// local write falls between). Returns the log records replayed and the
    /// size of the snapshot restored (`None`: none was restored here, so what
    /// the replica holds may be in no snapshot yet).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) async fn restore_and_journal<S: StateStore>(&self, state: &S) -> Result<(usize, Option<usize>), CrdtError> {
        let mut store = self.store.lock().await;
        let restored = if self.is_restored() { (0, None) } else { self.restore_locked_from(&mut store, state).await? };
        store.journal.0.get_or_insert_with(Vec::new);
        Ok(restored)
    }

    /// Restores the snapshot and log `state` holds; returns the log records
    /// replayed and the snapshot's size, if there was one.
    pub(crate) async fn restore_locked_from<S: StateStore>(
        &self,
        store: &mut Store,
        state: &S,
    ) -> Result<(usize, Option<usize>), CrdtError> {
        let log = state.load_log(&self.state_key).await?;
        // without a snapshot under its own key yet, the base is one saved under
        // the cell id alone (by a build whose state keys were per cell), if any
        let saved = match state.load(&self.state_key).await? {
            Some(saved) => Some(saved),
            None => state.load(self.cell.as_str()).await?,
        };
        if let Some(saved) = &saved {
            self.restore_locked(store, saved)?;
        }
        let records = log.iter().map(|b| codec::decode::<Record>(b)).collect::<Result<Vec<_>, _>>()?;
        self.replay_locked(store, &records)?;
        self.restored.lock().get_or_insert(Timestamp::ZERO);
        Ok((records.len(), saved.map(|s| s.len())))
    }

    /// Whether the state was restored from a snapshot or recovered (then
    /// `kafka::Replicator::start` does not restore it again).
    pub fn is_restored(&self) -> bool {
        self.restored.lock().is_some()
    }

    /// Own outbox rows stamped after this were not in the restored snapshot
    /// (`Timestamp(0)` when nothing was restored: every own row).
    #[cfg_attr(not(any(feature = "sql", feature = "kafka")), allow(dead_code))]
    pub(crate) fn replay_after(&self) -> Timestamp {
        self.restored.lock().unwrap_or_default()
    }

    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn mark_recovered(&self) {
        self.restored.lock().get_or_insert(Timestamp::default());
    }

    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) async fn lock_store(&self) -> tokio::sync::MutexGuard<'_, Store> {
        self.store.lock().await
    }

    /// Re-applies one of this cell's own changes (a replayed outbox row): the
    /// clock moves past its timestamp, the delta is joined (idempotently).
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn apply_own(&self, store: &mut Store, id: &str, ts: Timestamp, delta: &Delta) -> Result<(), CrdtError> {
        self.hlc.adopt(ts);
        store.apply_delta(id, delta, self.bias)
    }

    /// Applies an event idempotently: duplicates (same origin and sequence) are
    /// skipped; an event stamped more than the maximum drift ahead of the local
    /// clock is parked (kept in the state, applied later by
    /// [`retry_parked`](Self::retry_parked)); anything malformed or of the
    /// wrong kind is rejected (counted, never applied: the caller keeps it as a
    /// [`dead_letter`](Self::dead_letter)).
    pub async fn apply_event(&self, ev: &Event) -> Result<Applied, CrdtError> {
        let result = self.apply_event_inner(ev).await;
        match &result {
            Ok(Applied::Applied) => {
                let lag = SystemClock.now_ms().saturating_sub(ev.ts.physical_ms());
                self.metrics.applied(ev.origin.as_str(), lag);
            }
            Ok(Applied::Duplicate) => self.metrics.duplicate(),
            Ok(Applied::Parked) => {}
            Err(e) => {
                tracing::warn!(origin = %ev.origin, seq = ev.seq, object = %ev.aggregate_id, error = %e, "crdt event rejected");
                self.metrics.rejected(reason(e));
            }
        }
        result
    }

    async fn apply_event_inner(&self, ev: &Event) -> Result<Applied, CrdtError> {
        let delta = decode_event(ev)?;
        let mut store = self.store.lock().await;
        let key = (ev.origin.as_str().to_string(), ev.seq);
        if store.dedup.get(&key.0).is_some_and(|w| w.seen.contains(&ev.seq)) || store.parked.contains_key(&key) {
            return Ok(Applied::Duplicate);
        }
        if let Err(e) = self.hlc.update(ev.ts) {
            // a clock far ahead (here or there) delays the event, never loses it
            tracing::warn!(origin = %ev.origin, seq = ev.seq, object = %ev.aggregate_id, error = %e, "crdt event parked");
            let parked = ParkedEvent { event: ev.clone(), reason: e.to_string() };
            store.parked.insert(key, parked.clone());
            store.log(Record::Parked(parked));
            self.note_parked(&store);
            self.metrics.parked();
            return Ok(Applied::Parked);
        }
        store.apply_delta(&ev.aggregate_id, &delta, self.bias)?;
        store.dedup.entry(key.0).or_default().insert(ev.seq);
        store.log(Record::Applied(ev.clone()));
        Ok(Applied::Applied)
    }

    /// Applies the parked events the local clock now allows (their HLC time
    /// within the maximum drift of the wall clock), oldest first; returns how
    /// many were applied. A parked event that turns out not to apply (its
    /// object has another kind) becomes a dead letter.
    pub async fn retry_parked(&self) -> usize {
        let mut store = self.store.lock().await;
        if store.parked.is_empty() {
            return 0;
        }
        let mut ready: Vec<ParkedEvent> = Vec::new();
        for p in store.parked.values() {
            if self.hlc.update(p.event.ts).is_ok() {
                ready.push(p.clone());
            }
        }
        ready.sort_by_key(|p| p.event.ts);
        let mut applied = 0;
        for p in ready {
            let ev = p.event;
            let key = (ev.origin.as_str().to_string(), ev.seq);
            store.parked.remove(&key);
            let result = decode_event(&ev).and_then(|d| store.apply_delta(&ev.aggregate_id, &d, self.bias));
            match result {
                Ok(()) => {
                    store.dedup.entry(key.0).or_default().insert(ev.seq);
                    let lag = SystemClock.now_ms().saturating_sub(ev.ts.physical_ms());
                    self.metrics.applied(ev.origin.as_str(), lag);
                    store.log(Record::Applied(ev));
                    applied += 1;
                }
                Err(e) => {
                    tracing::warn!(origin = %ev.origin, seq = ev.seq, error = %e, "parked crdt event is a dead letter");
                    self.metrics.rejected(reason(&e));
                    let dead = DeadLetter {
                        source: format!("parked {}#{}", ev.origin, ev.seq),
                        key: Some(ev.aggregate_id.clone().into_bytes()),
                        headers: Vec::new(),
                        payload: ev.payload.clone(),
                        error: e.to_string(),
                        reason: reason(&e).to_string(),
                    };
                    store.log(Record::Unparked(key.0, key.1));
                    store.dead.push(dead.clone());
                    store.log(Record::Dead(dead));
                }
            }
        }
        self.note_parked(&store);
        applied
    }

    /// Keeps a message that can never be applied as it stands (see
    /// [`DeadLetter`]) in the persisted state, for inspection.
    pub async fn dead_letter(&self, dead: DeadLetter) {
        let mut store = self.store.lock().await;
        store.dead.push(dead.clone());
        store.log(Record::Dead(dead));
    }

    /// The events parked until the local clock allows them.
    pub async fn parked(&self) -> Vec<ParkedEvent> {
        self.store.lock().await.parked.values().cloned().collect()
    }

    /// The dead letters kept so far.
    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.store.lock().await.dead.clone()
    }

    fn note_parked(&self, store: &Store) {
        let min = store.parked.values().map(|p| p.event.ts.0).min().unwrap_or(u64::MAX);
        self.parked_min.store(min, std::sync::atomic::Ordering::Release);
    }

    /// The changes recorded since the last call, and the HLC time they cover:
    /// taken under the state lock, so every local write stamped at or before
    /// it was committed (and recorded) or aborted.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) async fn take_journal(&self) -> (Vec<Record>, Timestamp) {
        let mut store = self.store.lock().await;
        let records = store.journal.0.as_mut().map(std::mem::take).unwrap_or_default();
        (records, self.hlc.last())
    }

    /// Records that everything up to `ts` is persisted (a log append that
    /// holds every change taken with it).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) fn note_persisted(&self, ts: Timestamp) {
        self.note_durable(ts);
    }

    /// Puts back changes taken with [`take_journal`](Self::take_journal) that
    /// could not be persisted, ahead of the ones recorded since.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) async fn unjournal(&self, mut records: Vec<Record>) {
        let mut store = self.store.lock().await;
        if let Some(j) = &mut store.journal.0 {
            records.append(j);
            *j = records;
        }
    }

    /// The next offset to read per (topic, partition), as the state holds
    /// it (empty before a replicator consumed anything into it).
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) async fn consumed(&self) -> BTreeMap<(String, i32), i64> {
        self.store.lock().await.consumed.0.clone()
    }

    /// Records that the state now holds what was read up to `next` (per
    /// topic and partition, the next offset to read), in the journal too, so
    /// it is persisted with the changes those reads made.
    #[cfg_attr(not(feature = "kafka"), allow(dead_code))]
    pub(crate) async fn note_consumed(&self, next: &BTreeMap<(String, i32), i64>) {
        if next.is_empty() {
            return;
        }
        let mut store = self.store.lock().await;
        for ((topic, partition), n) in next {
            store.consumed.note(topic, *partition, *n);
        }
        store.log(Record::Consumed(next.iter().map(|((t, p), n)| (t.clone(), *p, *n)).collect()));
    }

    /// Replays persisted records over the restored snapshot.
    pub(crate) fn replay_locked(&self, store: &mut Store, records: &[Record]) -> Result<(), CrdtError> {
        for r in records {
            match r {
                Record::Applied(ev) => {
                    let key = (ev.origin.as_str().to_string(), ev.seq);
                    store.parked.remove(&key);
                    if store.dedup.get(&key.0).is_some_and(|w| w.seen.contains(&ev.seq)) {
                        continue;
                    }
                    self.hlc.adopt(ev.ts);
                    let delta = decode_event(ev)?;
                    store.apply_delta(&ev.aggregate_id, &delta, self.bias)?;
                    store.dedup.entry(key.0).or_default().insert(ev.seq);
                }
                Record::Parked(p) => {
                    store.parked.insert((p.event.origin.as_str().to_string(), p.event.seq), p.clone());
                }
                Record::Unparked(origin, seq) => {
                    store.parked.remove(&(origin.clone(), *seq));
                }
                Record::Dead(d) => store.dead.push(d.clone()),
                Record::Gc(w) => {
                    store.gc(*w);
                }
                Record::Local { object, ts, delta } => {
                    self.hlc.adopt(*ts);
                    store.apply_delta(object, delta, self.bias)?;
                }
                Record::Consumed(offsets) => {
                    for (topic, partition, next) in offsets {
                        store.consumed.note(topic, *partition, *next);
                    }
                }
            }
        }
        self.note_parked(store);
        Ok(())
    }
}

/// Decodes an event's delta and checks it against its type header.
fn decode_event(ev: &Event) -> Result<Delta, CrdtError> {
    let delta: Delta = codec::decode(&ev.payload)?;
    if delta.event_type() != ev.event_type {
        return Err(CrdtError::Corrupt(format!("type header {:?} but payload is {}", ev.event_type, delta.event_type())));
    }
    Ok(delta)
}

/// The metric `reason` of an error.
pub(crate) fn reason(e: &CrdtError) -> &'static str {
    match e {
        CrdtError::ClockDrift { .. } => "clock_drift",
        CrdtError::UnknownVersion(_) => "unknown_version",
        CrdtError::KindMismatch { .. } => "kind_mismatch",
        _ => "corrupt",
    }
}

/// The locked state of a [`Replica`], for local writes.
#[derive(Debug)]
pub struct ReplicaGuard<'a> {
    replica: &'a Replica,
    store: tokio::sync::MutexGuard<'a, Store>,
}

impl ReplicaGuard<'_> {
    fn change(&self, aggregate_type: &str, id: &str, ts: Timestamp, delta: Delta) -> Change {
        Change {
            aggregate_type: aggregate_type.to_string(),
            aggregate_id: id.to_string(),
            origin: self.replica.cell.clone(),
            ts,
            delta,
        }
    }

    fn check_kind(&self, id: &str, kind: &'static str) -> Result<(), CrdtError> {
        match self.store.get(id) {
            Some(v) if v.kind() != kind => {
                Err(CrdtError::KindMismatch { object: id.to_string(), stored: v.kind(), delta: kind })
            }
            _ => Ok(()),
        }
    }

    /// A change adding `by` (negative to subtract) to counter `id`; not applied
    /// until [`commit`](Self::commit).
    pub fn counter_add(&mut self, aggregate_type: &str, id: &str, by: i64) -> Result<Change, CrdtError> {
        self.check_kind(id, TYPE_PN_COUNTER)?;
        let stamp = self.replica.hlc.stamp();
        let delta = match self.store.get(id) {
            Some(Value::Counter(c)) => c.add_delta(stamp.site, by),
            _ => PnCounter::new().add_delta(stamp.site, by),
        };
        Ok(self.change(aggregate_type, id, stamp.ts, Delta::Counter(delta)))
    }

    /// A change adding `elem` to OR-set `id`.
    pub fn or_add(&mut self, aggregate_type: &str, id: &str, elem: &str) -> Result<Change, CrdtError> {
        self.check_kind(id, TYPE_OR_SET)?;
        let stamp = self.replica.hlc.stamp();
        let delta = match self.store.get(id) {
            Some(Value::OrSet(s)) => s.add_delta(elem.to_string(), stamp),
            _ => OrSet::new().add_delta(elem.to_string(), stamp),
        };
        Ok(self.change(aggregate_type, id, stamp.ts, Delta::OrSet(delta)))
    }

    /// A change removing `elem` (as observed here) from OR-set `id`.
    pub fn or_remove(&mut self, aggregate_type: &str, id: &str, elem: &str) -> Result<Change, CrdtError> {
        self.check_kind(id, TYPE_OR_SET)?;
        let ts = self.replica.hlc.now();
        let delta = match self.store.get(id) {
            Some(Value::OrSet(s)) => s.remove_delta(&elem.to_string()),
            _ => OrSetDelta { entries: Vec::new() },
        };
        Ok(self.change(aggregate_type, id, ts, Delta::OrSet(delta)))
    }

    /// A change adding `elem` to LWW set `id`.
    pub fn lww_add(&mut self, aggregate_type: &str, id: &str, elem: &str) -> Result<Change, CrdtError> {
        self.check_kind(id, TYPE_LWW_SET)?;
        let stamp = self.replica.hlc.stamp();
        let e = crate::lww::LwwEntry { add: Some(stamp), remove: None };
        Ok(self.change(aggregate_type, id, stamp.ts, Delta::Lww(LwwDelta { entries: vec![(elem.to_string(), e)] })))
    }

    /// A change removing `elem` from LWW set `id`.
    pub fn lww_remove(&mut self, aggregate_type: &str, id: &str, elem: &str) -> Result<Change, CrdtError> {
        self.check_kind(id, TYPE_LWW_SET)?;
        let stamp = self.replica.hlc.stamp();
        let e = crate::lww::LwwEntry { add: None, remove: Some(stamp) };
        Ok(self.change(aggregate_type, id, stamp.ts, Delta::Lww(LwwDelta { entries: vec![(elem.to_string(), e)] })))
    }

    /// Applies a change locally (after its transaction committed). Idempotent.
    pub fn commit(&mut self, change: &Change) -> Result<(), CrdtError> {
        let bias = self.replica.bias;
        self.store.apply_delta(&change.aggregate_id, &change.delta, bias)?;
        if self.store.journaling() {
            self.store.log(Record::Local { object: change.aggregate_id.clone(), ts: change.ts, delta: change.delta.clone() });
        }
        Ok(())
    }

    /// The locked state.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Collects tombstones at or below `watermark` (see [`Store::gc`]).
    pub fn gc(&mut self, watermark: Timestamp) -> usize {
        let n = self.store.gc(watermark);
        self.store.log(Record::Gc(watermark));
        n
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn replica() -> Replica {
        Replica::try_new("fra".parse().unwrap(), 1, Duration::from_secs(5)).unwrap()
    }

    /// A snapshot in the layout before the consumed offsets were kept (the
    /// same fields, in order, without them) still restores, with no offsets.
    #[tokio::test]
    async fn a_snapshot_from_before_the_offsets_were_kept_restores() {
        let r = replica();
        {
            let mut g = r.lock().await;
            let c = g.or_add("post", "p/comments", "hello").unwrap();
            g.commit(&c).unwrap();
        }
        r.note_consumed(&BTreeMap::from([(("t".to_string(), 0), 7)])).await;
        let s = r.store.lock().await.clone();
        let v2 = codec::encode(&(&s.objects, &s.dedup, s.last_ts, &s.parked, &s.dead, s.floor)).unwrap();
        let back = replica();
        back.restore(&v2).await.unwrap();
        assert_eq!(back.get("p/comments").await, r.get("p/comments").await);
        assert!(back.consumed().await.is_empty());
        // the current layout keeps them
        let now = replica();
        now.restore(&r.snapshot().await.unwrap()).await.unwrap();
        assert_eq!(now.consumed().await, BTreeMap::from([(("t".to_string(), 0), 7)]));
    }
}
