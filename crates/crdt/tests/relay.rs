//! The outbox relay over an in-process `rdkafka` MockCluster and a SQLite
//! outbox: a batch handed to the producer at once still arrives complete and
//! in outbox order, through produce errors the producer retries.
#![cfg(all(feature = "sql", feature = "kafka"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crdt::kafka::Relay;
use crdt::kafka::headers as hdr;
use crdt::outbox::Outbox;
use crdt::Replica;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

/// Regression for the pipelined relay: it used to await each message's
/// acknowledgement before sending the next (one round trip per change); now a
/// whole batch is in flight at once. 1,200 rows in batches of 1,000, with
/// produce requests failing (retriable) on the way: every row arrives once,
/// in outbox order, and all are marked sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_batch_arrives_complete_and_in_order_through_produce_errors() {
    let topic = testkit::unique("crdt-relay");
    let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(&topic, 1, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::connect(&format!("sqlite://{}/outbox.db?mode=rwc", dir.path().display()), "outbox").await.unwrap();
    outbox.migrate().await.unwrap();
    let replica = Replica::try_new("sh".parse().unwrap(), 1, Duration::from_secs(5)).unwrap();
    const ROWS: usize = 1_200;
    {
        let mut g = replica.lock().await;
        let mut tx = outbox.pool().begin().await.unwrap();
        let mut changes = Vec::new();
        for i in 0..ROWS {
            changes.push(g.counter_add("post", &format!("p{}/likes", i % 7), 1).unwrap());
        }
        // one row alone, the rest in multi-row inserts
        outbox.enqueue(&mut tx, &changes[0]).await.unwrap();
        outbox.enqueue_all(&mut tx, &changes[1..]).await.unwrap();
        tx.commit().await.unwrap();
        for c in &changes {
            g.commit(c).unwrap();
        }
    }
    use RDKafkaRespErr::*;
    cluster.request_errors(RDKafkaApiKey::Produce, &[RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 3]);
    cluster.request_errors(RDKafkaApiKey::Produce, &[RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 2]);

    let relay = Relay::new(outbox.clone(), &bootstrap, &topic).unwrap().with_batch(1_000);
    let mut published = 0;
    while published < ROWS {
        published += relay.run_once().await.unwrap();
    }
    assert_eq!(published, ROWS);
    assert_eq!(outbox.pending_count().await.unwrap(), 0);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", testkit::unique("check"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let mut seqs = Vec::with_capacity(ROWS);
    let mut keys = Vec::with_capacity(ROWS);
    while seqs.len() < ROWS {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.expect("all rows arrive").unwrap();
        let h = m.headers().expect("headers");
        let seq = h.iter().find(|x| x.key == hdr::SEQ).and_then(|x| x.value).expect("seq header");
        seqs.push(std::str::from_utf8(seq).unwrap().parse::<i64>().unwrap());
        keys.push(String::from_utf8(m.key().unwrap().to_vec()).unwrap());
    }
    assert_eq!(seqs, (1..=ROWS as i64).collect::<Vec<_>>(), "every row once, in outbox order");
    // each row holds the change written in its place
    assert_eq!(keys, (0..ROWS).map(|i| format!("p{}/likes", i % 7)).collect::<Vec<_>>());
    // nothing more
    assert!(tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await.is_err());
}
