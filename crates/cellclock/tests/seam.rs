//! The seam: with an offset set in this process, every SDK clock that decides
//! something reads the skewed time: `idgen` (id timestamps), the `crdt` HLC,
//! `cellctx`'s hop-signature clock and `failover`'s audit instants. One test
//! (the offset is process-wide; this binary holds nothing else).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cellctx::{CellId, Clock as _};
use cellrouter::{Cell, RoutingTable, TableStore};
use failover::audit::AuditLog;
use failover::{Change, LocalSwitch, SwitchBackend, SwitchOutcome, SwitchRequest};

const SKEW_MS: i64 = 45_000;

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `got` is `want` within a second (the test's own reads take time).
fn near(got: u64, want: u64) -> bool {
    got.abs_diff(want) < 1_000
}

#[tokio::test]
async fn every_sdk_clock_reads_the_process_offset() {
    cellclock::set_offset_ms(SKEW_MS).unwrap();
    let ahead = || wall_ms() + SKEW_MS as u64;

    // idgen: a clock anchored now is ahead, and so are the ids' timestamps
    let layout = idgen::Layout::seed();
    let ids = idgen::Generator::try_new(layout, 1, 3).unwrap();
    let id = ids.next_id().unwrap();
    let stamped = layout.decode(id).timestamp_ms;
    assert!(near(stamped, ahead()), "id timestamp {stamped} vs skewed wall {}", ahead());

    // crdt: the HLC's physical part is ahead
    let hlc = crdt::Hlc::try_new(crdt::SiteId(7), Duration::from_secs(60)).unwrap();
    let ts = hlc.now();
    assert!(near(ts.physical_ms(), ahead()), "hlc {} vs {}", ts.physical_ms(), ahead());

    // cellctx: the clock hop signatures are checked against
    let signing = cellctx::SystemClock.now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(near(signing, ahead()));

    // failover: the audit row's instants
    let (a, b, eu): (CellId, CellId, CellId) = ("a".parse().unwrap(), "b".parse().unwrap(), "eu".parse().unwrap());
    let mut cell_a = Cell::new(a.clone(), eu.clone(), "http://127.0.0.1:1");
    cell_a.failover = vec![b.clone()];
    let table = RoutingTable::uniform(eu.clone(), vec![cell_a, Cell::new(b, eu, "http://127.0.0.1:2")], 64);
    let store = TableStore::with_table(table).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
    let audit = AuditLog::connect(&url, "failover_audit").await.unwrap();
    let switch = LocalSwitch::new(store, audit, idgen::Generator::try_new(layout, 0, 1).unwrap());
    switch.campaign().await.unwrap();
    let SwitchOutcome::Committed(row) = switch.switch(SwitchRequest::new(Change::Drain(a))).await.unwrap() else {
        panic!("the drain did not commit")
    };
    let committed = row.committed_at_ms.unwrap();
    assert!(near(committed, ahead()), "audit committed_at {committed} vs {}", ahead());
    assert!(near(row.intent_at_ms, ahead()));

    // stepped back: a clock stepped behind true time is read as such by the
    // HLC at once (it holds its last timestamp instead of going back) ...
    assert_eq!(cellclock::step_ms(-2 * SKEW_MS).unwrap(), -SKEW_MS);
    let after = hlc.now();
    assert!(after > ts, "the HLC went backwards with the clock");
    assert!(near(after.physical_ms(), ts.physical_ms()), "the HLC held its last physical time");
    // ... while a generator keeps its monotonic anchor (an NTP step does not
    // move ids backwards) and a new one starts behind
    assert!(ids.next_id().unwrap() > id);
    let behind = idgen::Generator::try_new(layout, 1, 4).unwrap().next_id().unwrap();
    assert!(near(layout.decode(behind).timestamp_ms, wall_ms() - SKEW_MS as u64));
    cellclock::set_offset_ms(0).unwrap();
}
