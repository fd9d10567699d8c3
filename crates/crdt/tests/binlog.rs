//! The binlog relay against a private MariaDB with the binary log on (row
//! format, GTIDs; `testkit::MariaDbServer`), publishing to an `rdkafka`
//! MockCluster topic that the crate's `Replicator`s consume.
#![cfg(feature = "binlog")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crdt::binlog::{
    BinlogConfig, BinlogRelay, MARK_REPLICATED_SQL, PositionStore, RowKind, TableMapping,
};
use crdt::kafka::headers as hdr;
use crdt::kafka::{Replicator, ReplicatorHandle};
use crdt::{CrdtError, MemoryStateStore, Replica};
use mysql_async::prelude::Queryable;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{Offset, TopicPartitionList};
use testkit::MariaDbServer;

const CONVERGE: Duration = Duration::from_secs(60);

type Cluster = MockCluster<'static, DefaultProducerContext>;

/// A private binlog server, a schema with the mapped tables, a topic.
struct Env {
    server: MariaDbServer,
    pool: mysql_async::Pool,
    schema: String,
    cluster: Cluster,
    topic: String,
}

impl Env {
    async fn new() -> Env {
        let server = MariaDbServer::start();
        let schema = testkit::unique("cdc").replace('-', "_");
        let pool = mysql_async::Pool::new(mysql_async::Opts::from_url(&server.url()).unwrap());
        let mut conn = pool.get_conn().await.unwrap_or_else(|e| {
            panic!("private MariaDB at {}: {e}\n{}", server.url(), server.log())
        });
        conn.query_drop(format!("CREATE DATABASE {schema}"))
            .await
            .unwrap();
        drop(conn);
        create_tables(&pool, &schema).await;
        let topic = testkit::unique("cdc");
        let cluster = MockCluster::new(3).expect("mock cluster");
        cluster.create_topic(&topic, 3, 1).expect("topic");
        Env {
            server,
            pool,
            schema,
            cluster,
            topic,
        }
    }

    fn bootstrap(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    async fn exec(&self, sql: &str) {
        let mut conn = self.pool.get_conn().await.unwrap();
        conn.query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn positions(&self) -> PositionStore {
        PositionStore::try_new(
            &format!("{}/{}", self.server.url(), self.schema),
            "cdc_positions",
        )
        .unwrap()
    }

    async fn relay(
        &self,
        name: &str,
        origin: &str,
        schema: &str,
        source_url: &str,
        batch: usize,
    ) -> BinlogRelay {
        let positions = self.positions();
        positions.migrate().await.unwrap();
        let config = BinlogConfig::try_new(
            origin,
            name,
            1000 + self.server.server_id(),
            mappings(schema),
        )
        .unwrap()
        .with_batch(batch);
        BinlogRelay::try_new(
            config,
            source_url,
            positions,
            &self.bootstrap(),
            &self.topic,
        )
        .unwrap()
        .with_max_wait(Duration::from_millis(50))
    }

    async fn cell(&self, name: &str) -> (Arc<Replica>, ReplicatorHandle) {
        let replica =
            Arc::new(Replica::try_new(name.parse().unwrap(), 0, Duration::from_secs(5)).unwrap());
        let group = testkit::unique(&format!("cdc-{name}"));
        let r = Replicator::start(
            replica.clone(),
            &self.bootstrap(),
            &self.topic,
            &group,
            MemoryStateStore::new(),
        )
        .await
        .unwrap();
        (replica, r.spawn())
    }
}

async fn create_tables(pool: &mysql_async::Pool, schema: &str) {
    let mut conn = pool.get_conn().await.unwrap();
    conn.query_drop(format!(
        "CREATE TABLE {schema}.likes (post_id VARCHAR(64) NOT NULL, user_id VARCHAR(64) NOT NULL, \
         deleted TINYINT NOT NULL DEFAULT 0, PRIMARY KEY (post_id, user_id)) ENGINE=InnoDB"
    ))
    .await
    .unwrap();
    conn.query_drop(format!(
        "CREATE TABLE {schema}.like_events (id BIGINT AUTO_INCREMENT PRIMARY KEY, post_id VARCHAR(64) NOT NULL, \
         delta INT NOT NULL) ENGINE=InnoDB"
    ))
    .await
    .unwrap();
}

/// `likes` rows are LWW-set elements (`likes:<post>`), `like_events` rows
/// counter amounts (`count:<post>`).
fn mappings(schema: &str) -> Vec<TableMapping> {
    vec![
        TableMapping {
            schema: schema.to_string(),
            table: "likes".into(),
            aggregate_type: "post".into(),
            object: "post_id".into(),
            object_prefix: "likes:".into(),
            lww_column: None,
            kind: RowKind::LwwSet {
                element: "user_id".into(),
                tombstone: Some("deleted".into()),
            },
        },
        TableMapping {
            schema: schema.to_string(),
            table: "like_events".into(),
            aggregate_type: "post".into(),
            object: "post_id".into(),
            object_prefix: "count:".into(),
            lww_column: None,
            kind: RowKind::Counter {
                delta: "delta".into(),
            },
        },
    ]
}

/// The replicated objects the tables of `schema` say there should be.
async fn expected(
    pool: &mysql_async::Pool,
    schema: &str,
) -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, i64>) {
    let mut conn = pool.get_conn().await.unwrap();
    let likes: Vec<(String, String)> = conn
        .query(format!(
            "SELECT post_id, user_id FROM {schema}.likes WHERE deleted = 0"
        ))
        .await
        .unwrap();
    let mut sets: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (p, u) in likes {
        sets.entry(format!("likes:{p}")).or_default().insert(u);
    }
    let sums: Vec<(String, i64)> = conn
        .query(format!(
            "SELECT post_id, CAST(SUM(delta) AS SIGNED) FROM {schema}.like_events GROUP BY post_id"
        ))
        .await
        .unwrap();
    (
        sets,
        sums.into_iter()
            .map(|(p, s)| (format!("count:{p}"), s))
            .collect(),
    )
}

async fn replica_view(r: &Replica) -> (BTreeMap<String, BTreeSet<String>>, BTreeMap<String, i64>) {
    let guard = r.lock().await;
    let mut sets = BTreeMap::new();
    let mut counters = BTreeMap::new();
    for (id, v) in guard.store().objects() {
        if let Some(c) = v.as_counter() {
            counters.insert(id.clone(), c.value());
        } else if let Some(m) = v.members()
            && !m.is_empty()
        {
            sets.insert(id.clone(), m.into_iter().collect::<BTreeSet<_>>());
        }
    }
    (sets, counters)
}

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs rounds until `f` holds (the relay's task stays in the test).
async fn pump_until<F, Fut>(relay: &mut BinlogRelay, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        relay
            .run_once()
            .await
            .unwrap_or_else(|e| panic!("relay round while waiting for {what}: {e}"));
    }
}

/// Every message on the topic: (origin, sequence, key, payload).
fn topic_messages(bootstrap: &str, topic: &str) -> Vec<(String, u64, String, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", testkit::unique("cdc-count"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    let mut total = 0i64;
    for p in 0..parts {
        let (lo, hi) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        total += hi - lo;
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    while (out.len() as i64) < total {
        let Some(m) = consumer.poll(Duration::from_secs(10)) else {
            panic!("topic ended early: {} of {total}", out.len())
        };
        let m = m.unwrap();
        let ev = hdr::event_from_message(&m).unwrap();
        out.push((
            ev.origin.to_string(),
            ev.seq,
            ev.aggregate_id,
            m.payload().unwrap_or_default().to_vec(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inserts_updates_and_deletes_replicate_to_other_cells_and_converge() {
    let env = Env::new().await;
    let mut relay = env
        .relay("sh-cdc", "sh", &env.schema, &env.server.url(), 500)
        .await;
    // opens the stream and stores the starting position before any write
    relay.run_once().await.unwrap();
    let (fra, _h1) = env.cell("fra").await;
    let (sv, _h2) = env.cell("sv").await;
    let s = &env.schema;
    env.exec(&format!(
        "INSERT INTO {s}.likes (post_id, user_id) VALUES ('p1','u1'), ('p1','u2'), ('p2','u1')"
    ))
    .await;
    env.exec(&format!("INSERT INTO {s}.like_events (post_id, delta) VALUES ('p1', 1), ('p1', 1), ('p1', 1), ('p2', 1)")).await;
    env.exec(&format!(
        "UPDATE {s}.like_events SET delta = 5 WHERE id = 2"
    ))
    .await;
    env.exec(&format!("DELETE FROM {s}.like_events WHERE id = 3"))
        .await;
    env.exec(&format!(
        "INSERT INTO {s}.like_events (post_id, delta) VALUES ('p2', -1)"
    ))
    .await;
    env.exec(&format!(
        "UPDATE {s}.likes SET deleted = 1 WHERE post_id = 'p1' AND user_id = 'u2'"
    ))
    .await;
    env.exec(&format!("DELETE FROM {s}.likes WHERE post_id = 'p2'"))
        .await;
    env.exec(&format!(
        "UPDATE {s}.likes SET user_id = 'u3' WHERE post_id = 'p1' AND user_id = 'u1'"
    ))
    .await;
    let want = expected(&env.pool, s).await;
    assert_eq!(
        want.0,
        BTreeMap::from([("likes:p1".to_string(), BTreeSet::from(["u3".to_string()]))])
    );
    assert_eq!(
        want.1,
        BTreeMap::from([("count:p1".to_string(), 6), ("count:p2".to_string(), 0)])
    );
    let (a, b, w) = (fra.clone(), sv.clone(), want.clone());
    pump_until(
        &mut relay,
        "fra and sv to hold the tables' state",
        move || {
            let (a, b, w) = (a.clone(), b.clone(), w.clone());
            async move { replica_view(&a).await == w && replica_view(&b).await == w }
        },
    )
    .await;
    assert_eq!(fra.metrics().stats().rejected, 0);
    // the messages look exactly like outbox relay messages: origin, sequence, key
    let msgs = topic_messages(&env.bootstrap(), &env.topic);
    assert!(msgs.iter().all(|(o, ..)| o == "sh"));
    assert_eq!(relay.metrics().stats().published, msgs.len() as u64);
    let seqs: BTreeSet<u64> = msgs.iter().map(|m| m.1).collect();
    assert_eq!(seqs.len(), msgs.len(), "every change has its own sequence");
    assert!(
        msgs.iter()
            .all(|(_, _, k, _)| k.starts_with("likes:") || k.starts_with("count:"))
    );
    // the stored position is the relay's last
    let stored = env.positions().load("sh-cdc").await.unwrap().unwrap();
    assert_eq!(&stored.position, relay.committed());
    env.exec(&format!("DROP DATABASE {s}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_kafka_acked_but_before_the_position_was_stored_replays_without_loss_or_visible_duplicates()
 {
    let env = Env::new().await;
    let s = env.schema.clone();
    // batches fill up to 3 whatever the machine's load (all rows are written
    // before the relay reads them)
    let mut relay = env
        .relay("sh-cdc", "sh", &s, &env.server.url(), 3)
        .await
        .with_idle(Duration::from_secs(30))
        .with_linger(Duration::from_secs(30));
    relay.run_once().await.unwrap();
    let (fra, _h) = env.cell("fra").await;
    for i in 0..6 {
        env.exec(&format!(
            "INSERT INTO {s}.like_events (post_id, delta) VALUES ('p1', {})",
            i + 1
        ))
        .await;
        env.exec(&format!(
            "INSERT INTO {s}.likes (post_id, user_id) VALUES ('p1', 'u{i}')"
        ))
        .await;
    }
    // first batch: published and stored
    assert_eq!(relay.run_once().await.unwrap(), 3);
    let stored_before = relay.committed().clone();
    // second batch: Kafka acknowledges it, then the relay dies before storing
    let batch = relay.read_batch().await.unwrap();
    assert_eq!(batch.changes.len(), 3);
    assert_eq!(relay.publish(&batch).await.unwrap(), 3);
    drop(relay);
    assert_eq!(
        env.positions()
            .load("sh-cdc")
            .await
            .unwrap()
            .unwrap()
            .position,
        stored_before
    );
    env.exec(&format!(
        "INSERT INTO {s}.like_events (post_id, delta) VALUES ('p1', 100)"
    ))
    .await;
    let want = expected(&env.pool, &s).await;
    // a restarted relay replays from the stored position
    let mut relay = env.relay("sh-cdc", "sh", &s, &env.server.url(), 3).await;
    let (f, w) = (fra.clone(), want.clone());
    pump_until(
        &mut relay,
        "fra to hold the tables' state after the restart",
        move || {
            let (f, w) = (f.clone(), w.clone());
            async move { replica_view(&f).await == w }
        },
    )
    .await;
    assert_eq!(want.1["count:p1"], 1 + 2 + 3 + 4 + 5 + 6 + 100);
    // the second batch is on the topic twice, byte for byte; the replica skipped the copies
    let msgs = topic_messages(&env.bootstrap(), &env.topic);
    let mut by_seq: BTreeMap<u64, Vec<&Vec<u8>>> = BTreeMap::new();
    for (_, seq, _, payload) in &msgs {
        by_seq.entry(*seq).or_default().push(payload);
    }
    let dup: Vec<_> = by_seq.values().filter(|v| v.len() > 1).collect();
    assert_eq!(
        dup.len(),
        3,
        "the acknowledged, unstored batch is published again"
    );
    assert!(
        dup.iter().all(|v| v.iter().all(|p| *p == v[0])),
        "a replayed change is identical"
    );
    assert_eq!(by_seq.len(), 13, "12 rows and 1 after the crash, none lost");
    assert_eq!(fra.metrics().stats().duplicates, 3);
    env.exec(&format!("DROP DATABASE {s}")).await;
}

/// Writes a replica's LWW sets into `schema.likes` as a cell's applier does,
/// with its writes marked so the binlog relay does not publish them again.
async fn apply_to_tables(pool: &mysql_async::Pool, schema: &str, replica: &Replica) {
    let (sets, _) = replica_view(replica).await;
    let mut conn = pool.get_conn().await.unwrap();
    conn.query_drop(MARK_REPLICATED_SQL).await.unwrap();
    let mut tx = conn
        .start_transaction(mysql_async::TxOpts::default())
        .await
        .unwrap();
    for (object, members) in sets {
        let post = object.trim_start_matches("likes:");
        for user in members {
            tx.exec_drop(
                format!("INSERT INTO {schema}.likes (post_id, user_id) VALUES (?, ?) ON DUPLICATE KEY UPDATE deleted = 0"),
                (post, user.as_str()),
            )
            .await
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
    // a pooled connection must not keep the mark
    conn.query_drop("SET SESSION skip_replication = 0")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cells_writing_into_each_others_tables_converge_without_echo() {
    let env = Env::new().await;
    let a = env.schema.clone();
    let b = testkit::unique("cdcb").replace('-', "_");
    env.exec(&format!("CREATE DATABASE {b}")).await;
    create_tables(&env.pool, &b).await;
    let url = env.server.url();
    let mut relay_a = env.relay("sh-cdc", "sh", &a, &url, 500).await;
    let mut relay_b = env.relay("fra-cdc", "fra", &b, &url, 500).await;
    relay_a.run_once().await.unwrap();
    relay_b.run_once().await.unwrap();
    let (sh, _h1) = env.cell("sh").await;
    let (fra, _h2) = env.cell("fra").await;
    let stop = tokio::sync::watch::channel(false);
    let run = |mut relay: BinlogRelay, mut rx: tokio::sync::watch::Receiver<bool>| {
        tokio::spawn(async move {
            relay
                .run(async move {
                    while !*rx.borrow_and_update() {
                        let _ = rx.changed().await;
                    }
                })
                .await
                .unwrap();
            relay
        })
    };
    let ta = run(relay_a, stop.0.subscribe());
    let tb = run(relay_b, stop.0.subscribe());

    env.exec(&format!(
        "INSERT INTO {a}.likes (post_id, user_id) VALUES ('p1', 'ua')"
    ))
    .await;
    env.exec(&format!(
        "INSERT INTO {b}.likes (post_id, user_id) VALUES ('p1', 'ub')"
    ))
    .await;
    let both = BTreeSet::from(["ua".to_string(), "ub".to_string()]);
    let (x, y, w) = (sh.clone(), fra.clone(), both.clone());
    wait_until("both cells to hold both likes", move || {
        let (x, y, w) = (x.clone(), y.clone(), w.clone());
        async move {
            replica_view(&x).await.0.get("likes:p1") == Some(&w)
                && replica_view(&y).await.0.get("likes:p1") == Some(&w)
        }
    })
    .await;
    // each cell's applier writes what it received into its own tables
    apply_to_tables(&env.pool, &a, &sh).await;
    apply_to_tables(&env.pool, &b, &fra).await;
    let rows = |s: String| {
        let pool = env.pool.clone();
        async move {
            let mut c = pool.get_conn().await.unwrap();
            let v: Vec<String> = c
                .query(format!("SELECT user_id FROM {s}.likes ORDER BY user_id"))
                .await
                .unwrap();
            v
        }
    };
    assert_eq!(rows(a.clone()).await, vec!["ua", "ub"]);
    assert_eq!(rows(b.clone()).await, vec!["ua", "ub"]);
    // a later write in each cell: once both arrived, both relays read past the applied rows
    env.exec(&format!(
        "INSERT INTO {a}.likes (post_id, user_id) VALUES ('p2', 'sa')"
    ))
    .await;
    env.exec(&format!(
        "INSERT INTO {b}.likes (post_id, user_id) VALUES ('p2', 'sb')"
    ))
    .await;
    let p2 = BTreeSet::from(["sa".to_string(), "sb".to_string()]);
    let (x, y, w) = (sh.clone(), fra.clone(), p2.clone());
    wait_until("both cells to hold the later likes", move || {
        let (x, y, w) = (x.clone(), y.clone(), w.clone());
        async move {
            replica_view(&x).await.0.get("likes:p2") == Some(&w)
                && replica_view(&y).await.0.get("likes:p2") == Some(&w)
        }
    })
    .await;
    stop.0.send_replace(true);
    let (relay_a, relay_b) = (ta.await.unwrap(), tb.await.unwrap());
    // each relay saw the other cell's applied row and skipped it
    assert_eq!(relay_a.metrics().stats().skipped_replicated, 1);
    assert_eq!(relay_b.metrics().stats().skipped_replicated, 1);
    assert_eq!(relay_a.metrics().stats().published, 2);
    let msgs = topic_messages(&env.bootstrap(), &env.topic);
    let mut by_origin: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (origin, _, key, _) in msgs {
        by_origin.entry(origin).or_default().push(key);
    }
    for v in by_origin.values_mut() {
        v.sort();
    }
    assert_eq!(
        by_origin,
        BTreeMap::from([
            (
                "fra".to_string(),
                vec!["likes:p1".to_string(), "likes:p2".to_string()]
            ),
            (
                "sh".to_string(),
                vec!["likes:p1".to_string(), "likes:p2".to_string()]
            ),
        ]),
        "only the users' own writes were published: no echo of applied rows"
    );
    assert_eq!(replica_view(&sh).await, replica_view(&fra).await);
    env.exec(&format!("DROP DATABASE {a}")).await;
    env.exec(&format!("DROP DATABASE {b}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_on_a_mapped_table_is_a_typed_error_and_skip_ddl_continues_after_it() {
    let env = Env::new().await;
    let s = env.schema.clone();
    let mut relay = env.relay("sh-cdc", "sh", &s, &env.server.url(), 500).await;
    relay.run_once().await.unwrap();
    let (fra, _h) = env.cell("fra").await;
    env.exec(&format!(
        "INSERT INTO {s}.likes (post_id, user_id) VALUES ('p1', 'u1')"
    ))
    .await;
    env.exec(&format!(
        "ALTER TABLE {s}.likes ADD COLUMN note VARCHAR(10) NULL"
    ))
    .await;
    env.exec(&format!(
        "INSERT INTO {s}.likes (post_id, user_id, note) VALUES ('p1', 'u2', 'x')"
    ))
    .await;
    // the insert before the DDL is published and stored, then the DDL stops the relay
    let err = loop {
        match relay.run_once().await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    match &err {
        CrdtError::BinlogDdl {
            table, statement, ..
        } => {
            assert_eq!(table, &format!("{s}.likes"));
            assert!(
                statement.to_ascii_uppercase().starts_with("ALTER TABLE"),
                "{statement}"
            );
        }
        e => panic!("expected BinlogDdl, got {e:?}"),
    }
    assert!(err.to_string().contains("skip_ddl"), "{err}");
    // retrying without acknowledging the DDL stops again: nothing is skipped
    let again = loop {
        match relay.run_once().await {
            Ok(0) => continue,
            Ok(n) => panic!("published {n} changes past an unacknowledged DDL"),
            Err(e) => break e,
        }
    };
    assert!(matches!(again, CrdtError::BinlogDdl { .. }), "{again:?}");
    let f = fra.clone();
    wait_until("the like before the DDL", move || {
        let f = f.clone();
        async move {
            replica_view(&f)
                .await
                .0
                .get("likes:p1")
                .is_some_and(|m| m.contains("u1"))
        }
    })
    .await;
    assert!(!replica_view(&fra).await.0["likes:p1"].contains("u2"));
    // the operator checked the mapping: continue after the DDL, with the new column layout
    relay.skip_ddl(&err).await.unwrap();
    let f = fra.clone();
    pump_until(&mut relay, "the like after the DDL", move || {
        let f = f.clone();
        async move {
            replica_view(&f)
                .await
                .0
                .get("likes:p1")
                .is_some_and(|m| m.contains("u2"))
        }
    })
    .await;
    env.exec(&format!("DROP DATABASE {s}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binlog_purged_past_the_stored_position_is_a_typed_error() {
    let env = Env::new().await;
    let s = env.schema.clone();
    let mut relay = env.relay("sh-cdc", "sh", &s, &env.server.url(), 500).await;
    relay.run_once().await.unwrap();
    let stored = relay.committed().clone();
    drop(relay);
    env.exec(&format!(
        "INSERT INTO {s}.likes (post_id, user_id) VALUES ('p1', 'lost')"
    ))
    .await;
    // the server keeps a file while a dump thread or its binlog checkpoint
    // still uses it: rotate and purge until the stored file is gone
    let pool = env.pool.clone();
    let gone = stored.file.clone();
    wait_until("the stored binlog file to be purged", move || {
        let (pool, gone) = (pool.clone(), gone.clone());
        async move {
            let mut conn = pool.get_conn().await.unwrap();
            conn.query_drop("FLUSH BINARY LOGS").await.unwrap();
            let row: mysql_async::Row = conn
                .query_first("SHOW MASTER STATUS")
                .await
                .unwrap()
                .unwrap();
            let file: String = row.get(0).unwrap();
            conn.query_drop(format!("PURGE BINARY LOGS TO '{file}'"))
                .await
                .unwrap();
            let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await.unwrap();
            !logs
                .iter()
                .any(|r| r.get::<String, _>(0).as_deref() == Some(gone.as_str()))
        }
    })
    .await;
    let mut relay = env.relay("sh-cdc", "sh", &s, &env.server.url(), 500).await;
    match relay.run_once().await {
        Err(CrdtError::BinlogPurged { file, position }) => {
            assert_eq!((file, position), (stored.file, stored.position));
        }
        other => panic!("expected BinlogPurged, got {other:?}"),
    }
    env.exec(&format!("DROP DATABASE {s}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_row_binlog_format_is_a_typed_error() {
    let env = Env::new().await;
    let s = env.schema.clone();
    let mut relay = env.relay("sh-cdc", "sh", &s, &env.server.url(), 500).await;
    relay.run_once().await.unwrap();
    // a session that logs its writes as statements: the relay stops at it
    let mut conn = env.pool.get_conn().await.unwrap();
    conn.query_drop("SET SESSION binlog_format = 'STATEMENT'")
        .await
        .unwrap();
    conn.query_drop(format!(
        "INSERT INTO {s}.likes (post_id, user_id) VALUES ('p1', 'u1')"
    ))
    .await
    .unwrap();
    conn.query_drop("SET SESSION binlog_format = 'ROW'")
        .await
        .unwrap();
    let err = loop {
        match relay.run_once().await {
            Ok(0) => continue,
            Ok(n) => panic!("published {n} changes from a statement-logged write"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(&err, CrdtError::BinlogFormat { found } if found.contains("STATEMENT")),
        "{err:?}"
    );
    drop(relay);
    // the server's format: a (re)starting relay refuses it
    conn.query_drop("SET GLOBAL binlog_format = 'STATEMENT'")
        .await
        .unwrap();
    let mut relay = env.relay("sv-cdc", "sv", &s, &env.server.url(), 500).await;
    match relay.run_once().await {
        Err(CrdtError::BinlogFormat { found }) => assert_eq!(found, "STATEMENT"),
        other => panic!("expected BinlogFormat, got {other:?}"),
    }
    conn.query_drop("SET GLOBAL binlog_format = 'ROW'")
        .await
        .unwrap();
    env.exec(&format!("DROP DATABASE {s}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_replication_privileges_is_a_typed_error() {
    let env = Env::new().await;
    let s = env.schema.clone();
    let user = testkit::unique("cdc").replace('-', "_");
    let user = &user[..user.len().min(32)];
    env.exec(&format!("CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'"))
        .await;
    env.exec(&format!("GRANT SELECT ON *.* TO '{user}'@'%'"))
        .await;
    let url = format!("mysql://{user}:pw@{}", env.server.addr());
    let mut relay = env.relay("sh-cdc", "sh", &s, &url, 500).await;
    match relay.run_once().await {
        Err(e @ CrdtError::BinlogPrivilege { .. }) => {
            assert!(e.to_string().contains("REPLICATION SLAVE"), "{e}")
        }
        other => panic!("expected BinlogPrivilege, got {other:?}"),
    }
    // REPLICATION CLIENT alone reads the log list but may not stream it
    env.exec(&format!("GRANT REPLICATION CLIENT ON *.* TO '{user}'@'%'")).await;
    match relay.run_once().await {
        Err(e @ CrdtError::BinlogPrivilege { .. }) => {
            assert!(e.to_string().contains("GRANT REPLICATION SLAVE"), "{e}")
        }
        other => panic!("expected BinlogPrivilege for the dump, got {other:?}"),
    }
    // with both grants the same user streams
    env.exec(&format!(
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'"
    ))
    .await;
    relay.run_once().await.unwrap();
    env.exec(&format!("DROP USER '{user}'@'%'")).await;
    env.exec(&format!("DROP DATABASE {s}")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_lww_column_orders_writes_by_the_rows_own_time() {
    let env = Env::new().await;
    let s = env.schema.clone();
    env.exec(&format!(
        "CREATE TABLE {s}.follows (user_id VARCHAR(64) NOT NULL, target VARCHAR(64) NOT NULL, \
         deleted TINYINT NOT NULL DEFAULT 0, at_ms BIGINT NOT NULL, PRIMARY KEY (user_id, target))"
    ))
    .await;
    let mapping = TableMapping {
        schema: s.clone(),
        table: "follows".into(),
        aggregate_type: "user".into(),
        object: "user_id".into(),
        object_prefix: "follows:".into(),
        lww_column: Some("at_ms".into()),
        kind: RowKind::LwwSet {
            element: "target".into(),
            tombstone: Some("deleted".into()),
        },
    };
    let positions = env.positions();
    positions.migrate().await.unwrap();
    let config = BinlogConfig::try_new(
        "sh",
        "sh-follows",
        2000 + env.server.server_id(),
        vec![mapping],
    )
    .unwrap();
    let mut relay = BinlogRelay::try_new(
        config,
        &env.server.url(),
        positions,
        &env.bootstrap(),
        &env.topic,
    )
    .unwrap()
    .with_max_wait(Duration::from_millis(50));
    relay.run_once().await.unwrap();
    let (fra, _h) = env.cell("fra").await;
    let now = 1_700_000_000_000u64;
    // b: followed at t, unfollowed by a write stamped earlier (a late, stale
    // write from elsewhere): the follow stands. c: unfollowed later: gone.
    env.exec(&format!(
        "INSERT INTO {s}.follows VALUES ('u1', 'b', 0, {}), ('u1', 'c', 0, {})",
        now + 2000,
        now + 2000
    ))
    .await;
    env.exec(&format!(
        "UPDATE {s}.follows SET deleted = 1, at_ms = {} WHERE target = 'b'",
        now + 1000
    ))
    .await;
    env.exec(&format!(
        "UPDATE {s}.follows SET deleted = 1, at_ms = {} WHERE target = 'c'",
        now + 3000
    ))
    .await;
    let f = fra.clone();
    pump_until(&mut relay, "the follows to arrive", move || {
        let f = f.clone();
        async move { f.metrics().stats().applied >= 4 }
    })
    .await;
    let view = replica_view(&fra).await;
    assert_eq!(
        view.0.get("follows:u1"),
        Some(&BTreeSet::from(["b".to_string()]))
    );
    let msgs = topic_messages(&env.bootstrap(), &env.topic);
    assert_eq!(msgs.len(), 4);
    env.exec(&format!("DROP DATABASE {s}")).await;
}
