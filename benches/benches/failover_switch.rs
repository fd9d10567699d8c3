//! failover: the time from the etcd write of a switch to every router (a
//! `cellrouter::TableStore` fed by its own `EtcdSource` watch) running the new
//! table, on loopback with 8 routers and a private etcd. Target: <= 200 ms.
//!
//! - `atomic switch write -> 8 routers applied`: the compare-on-revision
//!   transaction of `AtomicSwitch::write_table` (table + marker, guarded by the
//!   lock key) until all 8 stores report the new version.
//! - `whole switch (lock+intent+txn+commit row) -> 8 routers applied`: the full
//!   `AtomicSwitch::switch` (lease, lock, SQLite intent row, txn, commit row,
//!   unlock) until all stores run the table.
//! - peer: `cellrouter::source::publish -> 8 routers applied`: a bare
//!   compare-on-revision put of the table, no lock and no audit.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use cellctx::CellId;
use cellrouter::source::{EtcdSource, TableSource};
use cellrouter::{Cell, RoutingTable, TableStore};
use criterion::{Criterion, criterion_group, criterion_main};
use failover::audit::AuditLog;
use failover::switch::{AtomicSwitch, Change, SwitchRequest};

const ROUTERS: usize = 8;

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

fn table() -> RoutingTable {
    let cells = (0..8)
        .map(|i| {
            let mut c = Cell::new(id(&format!("cell-{i}")), id("eu"), format!("http://10.0.0.{i}:8080"));
            c.failover = vec![id(&format!("cell-{}", (i + 1) % 8))];
            c
        })
        .collect();
    RoutingTable::uniform(id("eu"), cells, 16384)
}

async fn all_at(stores: &[TableStore], version: u64) {
    for s in stores {
        let mut rx = s.subscribe();
        while s.version().is_none_or(|v| v < version) {
            rx.changed().await.unwrap();
        }
    }
}

fn switch_to_routers(c: &mut Criterion) {
    let etcd = testkit::EtcdServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let key = format!("/{}/table", testkit::unique("bench-fo"));
    let db = std::env::temp_dir().join(format!("{}.db", testkit::unique("bench-fo-audit")));
    let (switch, stores, mut client) = rt.block_on(async {
        let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await.unwrap();
        client.put(key.as_str(), cellrouter::source::encode(&table()).unwrap(), None).await.unwrap();
        let stores: Vec<TableStore> = (0..ROUTERS).map(|_| TableStore::new()).collect();
        for s in &stores {
            let src = EtcdSource::try_new(vec![etcd.endpoint()]).unwrap().with_key(key.clone());
            tokio::spawn(src.run(s.clone()));
        }
        all_at(&stores, 1).await;
        let audit = AuditLog::connect(&format!("sqlite://{}?mode=rwc", db.display()), "audit").await.unwrap();
        let ids = idgen::Generator::try_new(idgen::Layout::seed(), 1, 1).unwrap();
        let switch = AtomicSwitch::connect(&[etcd.endpoint()], audit, ids)
            .await
            .unwrap()
            .with_table_key(key.clone())
            .with_prefix(format!("/{}", testkit::unique("bench-fo-sw")));
        (switch, stores, client)
    });
    let mut g = c.benchmark_group("failover/switch");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    let mut flip = false;
    let mut next_change = move || {
        flip = !flip;
        if flip { Change::Drain(id("cell-3")) } else { Change::Failback(id("cell-3")) }
    };
    g.bench_function(format!("atomic switch write -> {ROUTERS} routers applied"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let lock = switch.lock("cell-3").await.unwrap();
                    let p = switch.prepare(&lock, &SwitchRequest::new(next_change())).await.unwrap().unwrap();
                    let v = p.record().version_after;
                    let t0 = Instant::now();
                    switch.write_table(&lock, &p).await.unwrap();
                    all_at(&stores, v).await;
                    total += t0.elapsed();
                    lock.release().await.unwrap();
                }
                total
            })
        })
    });
    g.bench_function(format!("whole switch (lock+intent+txn+commit row) -> {ROUTERS} routers applied"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let out = switch.switch(SwitchRequest::new(next_change())).await.unwrap();
                    let failover::switch::SwitchOutcome::Committed(rec) = out else { panic!("no change") };
                    all_at(&stores, rec.version_after).await;
                    total += t0.elapsed();
                }
                total
            })
        })
    });
    g.bench_function(format!("peer: cellrouter::source::publish -> {ROUTERS} routers applied"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let r = client.get(key.as_str(), None).await.unwrap();
                    let mut t = cellrouter::source::decode(r.kvs()[0].value()).unwrap();
                    t.version += 1;
                    let t0 = Instant::now();
                    assert!(cellrouter::source::publish(&mut client, &key, &t).await.unwrap());
                    all_at(&stores, t.version).await;
                    total += t0.elapsed();
                }
                total
            })
        })
    });
    g.finish();
    // Worst case over 200 switches, each write to all 8 routers applied.
    let worst = rt.block_on(async {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for _ in 0..200 {
            let lock = switch.lock("cell-3").await.unwrap();
            let p = switch.prepare(&lock, &SwitchRequest::new(next_change())).await.unwrap().unwrap();
            let v = p.record().version_after;
            let t0 = Instant::now();
            switch.write_table(&lock, &p).await.unwrap();
            all_at(&stores, v).await;
            h.record(t0.elapsed().as_micros() as u64).unwrap();
            lock.release().await.unwrap();
        }
        h
    });
    println!(
        "failover/switch write -> {ROUTERS} routers applied over 200 switches: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target <= 200 ms)",
        worst.value_at_quantile(0.5) as f64 / 1000.0,
        worst.value_at_quantile(0.99) as f64 / 1000.0,
        worst.max() as f64 / 1000.0
    );
    drop(rt);
    let _ = std::fs::remove_file(db);
}

criterion_group!(benches, switch_to_routers);
criterion_main!(benches);
