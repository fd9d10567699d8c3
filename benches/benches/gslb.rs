//! gslb: DNS queries per second answered on loopback UDP, the GSLB responder
//! (WRR × RTT pick from the live table + health check per answer) against
//! hickory-server's own `Catalog` + `InMemoryAuthority` serving one static A
//! record (the peer: a plain authoritative server doing no selection). Same
//! client, same machine, same run: 64 queries in flight over one socket.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cellrouter::{Cell, CellId, RoutingTable, TableStore};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gslb::{GslbConfig, RegionRule, Responder, Server};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::ServerFuture;
use hickory_server::authority::{Catalog, ZoneType};
use hickory_server::store::in_memory::InMemoryAuthority;
use tokio::net::UdpSocket;
use tokio::runtime::Runtime;

const IN_FLIGHT: u64 = 64;

/// Queries that got no answer within 200 ms (reported at the end: a lost
/// query costs 200 ms, so the figures are only meaningful when this is 0).
static LOST: AtomicU64 = AtomicU64::new(0);

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

fn query_bytes() -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(1).add_query(Query::query(
        Name::from_ascii("api.example.test.").unwrap(),
        RecordType::A,
    ));
    m.to_vec().unwrap()
}

/// Sends `n` queries keeping `IN_FLIGHT` outstanding; returns the elapsed time.
async fn drive(sock: &UdpSocket, server: SocketAddr, q: &[u8], n: u64) -> Duration {
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    let mut done = 0u64;
    while sent < n.min(IN_FLIGHT) {
        sock.send_to(q, server).await.unwrap();
        sent += 1;
    }
    while done < n {
        match tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await {
            Ok(r) => {
                r.unwrap();
            }
            Err(_) => {
                LOST.fetch_add(1, Ordering::Relaxed);
            }
        }
        done += 1;
        if sent < n {
            sock.send_to(q, server).await.unwrap();
            sent += 1;
        }
    }
    start.elapsed()
}

async fn start_gslb() -> (gslb::RunningServer, SocketAddr) {
    let cells = (1..=4)
        .map(|i| {
            Cell::new(
                id(&format!("eu-{i}")),
                id("eu"),
                format!("http://192.0.2.{i}:8080"),
            )
        })
        .collect();
    let store = TableStore::with_table(RoutingTable::uniform(id("eu"), cells, 16384)).unwrap();
    let config = GslbConfig::new("example.test", ["api.example.test"])
        .with_region(RegionRule::new("127.0.0.0/8".parse().unwrap(), id("eu")));
    let responder = Responder::builder(config, store).build().unwrap();
    let server = Server::new(responder)
        .with_udp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .start()
        .await
        .unwrap();
    let addr = server.udp_addrs()[0];
    (server, addr)
}

async fn start_catalog() -> (ServerFuture<Catalog>, SocketAddr) {
    let origin = Name::from_ascii("example.test.").unwrap();
    let mut auth = InMemoryAuthority::empty(origin.clone(), ZoneType::Primary, false);
    let soa = SOA::new(
        Name::from_ascii("ns.example.test.").unwrap(),
        Name::from_ascii("hostmaster.example.test.").unwrap(),
        1,
        3600,
        600,
        86400,
        5,
    );
    auth.upsert_mut(Record::from_rdata(origin.clone(), 5, RData::SOA(soa)), 1);
    auth.upsert_mut(
        Record::from_rdata(
            Name::from_ascii("api.example.test.").unwrap(),
            5,
            RData::A(A::new(192, 0, 2, 1)),
        ),
        1,
    );
    let mut catalog = Catalog::new();
    catalog.upsert(LowerName::new(&origin), vec![Arc::new(auth)]);
    let mut server = ServerFuture::new(catalog);
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    server.register_socket(sock);
    (server, addr)
}

fn qps(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (gslb_server, gslb_addr) = rt.block_on(start_gslb());
    let (catalog_server, catalog_addr) = rt.block_on(start_catalog());
    let client = rt.block_on(UdpSocket::bind("127.0.0.1:0")).unwrap();
    let q = query_bytes();

    // Both answer.
    for addr in [gslb_addr, catalog_addr] {
        rt.block_on(async {
            client.send_to(&q, addr).await.unwrap();
            let mut buf = [0u8; 512];
            let n = client.recv(&mut buf).await.unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(m.answers().len(), 1, "{addr}: {m:?}");
        });
    }

    let mut g = c.benchmark_group("gslb/udp_loopback");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    g.throughput(Throughput::Elements(1));
    let run =
        |rt: &Runtime, addr: SocketAddr, iters: u64| rt.block_on(drive(&client, addr, &q, iters));
    g.bench_function("gslb Responder (WRR x RTT, health)", |b| {
        b.iter_custom(|n| run(&rt, gslb_addr, n))
    });
    g.bench_function(
        "peer: hickory Catalog + InMemoryAuthority (static A)",
        |b| b.iter_custom(|n| run(&rt, catalog_addr, n)),
    );
    g.finish();
    eprintln!(
        "gslb bench: {} queries unanswered within 200 ms",
        LOST.load(Ordering::Relaxed)
    );

    rt.block_on(async move {
        gslb_server.shutdown().await;
        let mut catalog_server = catalog_server;
        let _ = catalog_server.shutdown_gracefully().await;
    });
}

criterion_group!(benches, qps);
criterion_main!(benches);
