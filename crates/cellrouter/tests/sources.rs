//! Table sources: a file with reload, and etcd (private server, killed and
//! restarted) with last-known-good persistence.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use cellctx::CellId;
#[cfg(feature = "etcd")]
use cellrouter::source::{EtcdSource, publish};
use cellrouter::source::{FileSource, TableSource};
#[cfg(feature = "etcd")]
use cellrouter::resolve;
use cellrouter::{Cell, RoutingTable, TableStore};

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

fn table(version: u64) -> RoutingTable {
    let mut t = RoutingTable::uniform(
        id("eu"),
        vec![Cell::new(id("a"), id("eu"), "http://127.0.0.1:1"), Cell::new(id("b"), id("eu"), "http://127.0.0.1:2")],
        128,
    );
    t.version = version;
    t
}

#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
fn invalid(version: u64) -> RoutingTable {
    let mut t = table(version);
    t.slots.pop(); // slots unassigned
    t
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn file_source_reloads_and_keeps_the_last_good_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("table.yaml");
    std::fs::write(&path, table(1).to_yaml().unwrap()).unwrap();
    let store = TableStore::new();
    let task = tokio::spawn(FileSource::new(&path).with_interval(Duration::from_millis(20)).run(store.clone()));
    wait_for("v1 from file", Duration::from_secs(5), || store.version() == Some(1)).await;

    // corrupt, then invalid: both rejected, v1 stays
    tokio::time::sleep(Duration::from_millis(30)).await;
    std::fs::write(&path, b"version: [oops").unwrap();
    wait_for("corrupt file counted", Duration::from_secs(5), || store.source_error_count() >= 1).await;
    assert_eq!(store.version(), Some(1));
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(&path, invalid(2).to_json().unwrap()).unwrap();
    wait_for("invalid table rejected", Duration::from_secs(5), || store.rejected_count() >= 1).await;
    assert_eq!(store.version(), Some(1));

    std::fs::write(&path, table(3).to_yaml().unwrap()).unwrap();
    wait_for("v3 from file", Duration::from_secs(5), || store.version() == Some(3)).await;
    task.abort();
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_source_follows_survives_outage_and_rejects_bad_pushes() {
    let mut etcd = testkit::EtcdServer::start();
    let key = format!("/test/{}", testkit::unique("cellrouter-table"));
    let dir = tempfile::tempdir().unwrap();
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await.unwrap();
    assert!(publish(&mut client, &key, &table(1)).await.unwrap());

    // Three routers on their own tasks, each with its source and store; the
    // first persists its last-known-good table.
    let lkg = dir.path().join("lkg.json");
    let mut stores = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let store = TableStore::new();
        let mut src = EtcdSource::try_new(vec![etcd.endpoint()])
            .unwrap()
            .with_key(key.clone())
            .with_backoff(Duration::from_millis(50), Duration::from_millis(200))
            .with_progress_interval(Duration::from_millis(200));
        if i == 0 {
            src = src.with_last_known_good(&lkg);
        }
        tasks.push(tokio::spawn(src.run(store.clone())));
        stores.push(store);
    }
    for s in &stores {
        wait_for("v1 from etcd", Duration::from_secs(10), || s.version() == Some(1)).await;
    }

    // v2 reaches every router within 200 ms of the write.
    let mut rxs: Vec<_> = stores.iter().map(TableStore::subscribe).collect();
    let written = Instant::now();
    assert!(publish(&mut client, &key, &table(2)).await.unwrap());
    for rx in rxs.iter_mut() {
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|t| t.as_ref().is_some_and(|t| t.version() == 2)))
            .await
            .unwrap()
            .unwrap();
    }
    let lag = written.elapsed();
    assert!(lag < Duration::from_millis(200), "v2 took {lag:?} to reach all routers");

    // A writer cannot go backwards.
    assert!(publish(&mut client, &key, &table(2)).await.is_err());

    // An invalid table and an empty value: rejected, v2 kept, counted.
    client.put(key.as_str(), invalid(3).to_json().unwrap(), None).await.unwrap();
    for s in &stores {
        wait_for("invalid push rejected", Duration::from_secs(5), || s.rejected_count() >= 1).await;
        assert_eq!(s.version(), Some(2));
    }
    let errors: Vec<u64> = stores.iter().map(TableStore::source_error_count).collect();
    client.put(key.as_str(), Vec::<u8>::new(), None).await.unwrap();
    client.put(key.as_str(), b"{not json".to_vec(), None).await.unwrap();
    for (s, e) in stores.iter().zip(&errors) {
        wait_for("empty and corrupt pushes counted", Duration::from_secs(5), || s.source_error_count() >= e + 2).await;
        assert_eq!(s.version(), Some(2));
    }

    // etcd killed: routers keep v2 and keep resolving; staleness grows.
    etcd.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for s in &stores {
        assert_eq!(s.version(), Some(2));
        let t = s.current().unwrap();
        assert!(resolve(&t, "user-1").is_ok());
        assert!(s.staleness().unwrap() >= Duration::from_millis(500), "{:?}", s.staleness());
    }
    // A restarting service starts from the last-known-good file with etcd down.
    assert_eq!(cellrouter::source::read_file(&lkg).unwrap(), table(2));
    let fresh = TableStore::new();
    let restarted = tokio::spawn(
        EtcdSource::try_new(vec![etcd.endpoint()]).unwrap().with_key(key.clone()).with_last_known_good(&lkg).run(fresh.clone()),
    );
    wait_for("start from last-known-good", Duration::from_secs(5), || fresh.version() == Some(2)).await;

    // etcd back: updates flow again (the sources reconnect on their own).
    etcd.restart();
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await.unwrap();
    assert!(publish(&mut client, &key, &table(4)).await.unwrap());
    for s in stores.iter().chain(std::iter::once(&fresh)) {
        wait_for("v4 after etcd restart", Duration::from_secs(15), || s.version() == Some(4)).await;
    }
    assert_eq!(cellrouter::source::read_file(&lkg).unwrap(), table(4));

    // Compaction of the history under live watchers: updates keep flowing.
    let resp = client.put(key.as_str(), table(5).to_json().unwrap(), None).await.unwrap();
    let rev = resp.header().unwrap().revision();
    client.compact(rev, None).await.unwrap();
    assert!(publish(&mut client, &key, &table(6)).await.unwrap());
    for s in &stores {
        wait_for("v6 after compaction", Duration::from_secs(10), || s.version() == Some(6)).await;
    }
    for t in tasks {
        t.abort();
    }
    restarted.abort();
}

/// The compaction path: a source resuming from a revision that etcd has since
/// compacted gets a "compacted" watch answer and must re-read the key; events
/// after the re-read flow as usual.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_source_rereads_after_its_start_revision_was_compacted() {
    let etcd = testkit::EtcdServer::start();
    let key = format!("/test/{}", testkit::unique("cellrouter-compact"));
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await.unwrap();
    let r1 = client.put(key.as_str(), table(1).to_json().unwrap(), None).await.unwrap().header().unwrap().revision();
    client.put(key.as_str(), table(2).to_json().unwrap(), None).await.unwrap();
    let r3 = client.put(key.as_str(), table(3).to_json().unwrap(), None).await.unwrap().header().unwrap().revision();
    client.compact(r3, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    // The history from r1 + 1 is gone: a plain watch from there is refused as compacted.
    let (_w, mut stream) =
        client.watch(key.as_str(), Some(etcd_client::WatchOptions::new().with_start_revision(r1 + 1))).await.unwrap().split();
    let mut compacted = 0;
    for _ in 0..3 {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap().unwrap();
        assert!(msg.events().is_empty(), "compacted events were delivered");
        if msg.compact_revision() > 0 {
            compacted = msg.compact_revision();
            break;
        }
    }
    assert_eq!(compacted, r3);

    // A router that last saw v1 (revision r1) resumes from r1 + 1.
    let store = TableStore::with_table(table(1)).unwrap();
    let task = tokio::spawn(
        EtcdSource::try_new(vec![etcd.endpoint()])
            .unwrap()
            .with_key(key.clone())
            .with_start_revision(r1 + 1)
            .with_backoff(Duration::from_millis(50), Duration::from_millis(200))
            .with_progress_interval(Duration::from_millis(200))
            .run(store.clone()),
    );
    wait_for("v3 re-read after compaction", Duration::from_secs(10), || store.version() == Some(3)).await;
    assert_eq!(store.compaction_count(), 1);
    assert_eq!(store.source_error_count(), 0, "recovered through an error, not the compaction path");
    assert_eq!(store.applied_count(), 2, "v2 was compacted away: only v1 and the re-read v3 were applied");
    // The watch resumed after the re-read: later writes arrive.
    assert!(publish(&mut client, &key, &table(4)).await.unwrap());
    wait_for("v4 after the re-read", Duration::from_secs(10), || store.version() == Some(4)).await;
    assert_eq!(store.compaction_count(), 1);

    // Without compaction, resuming replays the missed events in order.
    let replay = TableStore::with_table(table(1)).unwrap();
    let mut seen = replay.subscribe();
    let task2 = tokio::spawn(
        EtcdSource::try_new(vec![etcd.endpoint()]).unwrap().with_key(key.clone()).with_start_revision(r3 + 1).run(replay.clone()),
    );
    tokio::time::timeout(Duration::from_secs(10), seen.wait_for(|t| t.as_ref().is_some_and(|t| t.version() == 4))).await.unwrap().unwrap();
    assert_eq!((replay.compaction_count(), replay.applied_count()), (0, 2));
    task.abort();
    task2.abort();
}
