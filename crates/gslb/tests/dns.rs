//! The responder on loopback, asked by raw UDP packets and by hickory-resolver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cellrouter::{Balancer, Cell, CellId, CellState, Region, RoutingTable, SlotRange, TableStore};
use gslb::{GslbConfig, RegionRule, Responder, RunningServer, Server};
use health::{FnProbe, HealthHub, ProbeOutcome, ProbeSpec, Scheduler, ScorePolicy};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

fn cell(name: &str, region: &str, endpoint: &str, weight: u32) -> Cell {
    let mut c = Cell::new(id(name), id(region), endpoint);
    c.weight = weight;
    c
}

/// Two regions: eu (eu-1, eu-2) and us (us-1); each region's slots on its first cell.
fn two_region_table(version: u64) -> RoutingTable {
    let slots = |region: &str, c: &str| SlotRange {
        region: id(region),
        start: 0,
        end: 127,
        cell: id(c),
    };
    RoutingTable {
        version,
        slot_count: 128,
        default_region: id("eu"),
        regions: vec![Region::new(id("eu")), Region::new(id("us"))],
        cells: vec![
            cell("eu-1", "eu", "http://192.0.2.1:8080", 100),
            cell("eu-2", "eu", "http://192.0.2.2:8080", 100),
            cell("us-1", "us", "http://198.51.100.1:8080", 100),
        ],
        slots: vec![slots("eu", "eu-1"), slots("us", "us-1")],
        migrations: Vec::new(),
    }
}

fn config() -> GslbConfig {
    GslbConfig::new("example.test", ["api.example.test"])
        .with_region(RegionRule::new("127.0.0.0/8".parse().unwrap(), id("eu")))
        .with_region(RegionRule::new("203.0.113.0/24".parse().unwrap(), id("us")))
}

async fn serve(responder: Responder) -> RunningServer {
    let lo = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    Server::new(responder)
        .with_udp(lo)
        .with_tcp(lo)
        .start()
        .await
        .unwrap()
}

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    next_id: u16,
}

impl Client {
    async fn new(server: SocketAddr) -> Self {
        Client {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            server,
            next_id: 1,
        }
    }

    fn query(&mut self, name: &str, rtype: RecordType, ecs: Option<&str>) -> Message {
        let mut m = Message::new();
        self.next_id = self.next_id.wrapping_add(1);
        m.set_id(self.next_id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if let Some(subnet) = ecs {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.options_mut()
                .insert(EdnsOption::Subnet(subnet.parse::<ClientSubnet>().unwrap()));
            m.set_edns(edns);
        }
        m
    }

    async fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).await.unwrap();
    }

    async fn recv(&self) -> Option<Message> {
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(2), self.sock.recv(&mut buf)).await {
            Ok(Ok(n)) => Some(Message::from_vec(&buf[..n]).unwrap()),
            _ => None,
        }
    }

    async fn ask_msg(&mut self, m: Message) -> Message {
        self.send(&m.to_vec().unwrap()).await;
        let r = self.recv().await.expect("no answer within 2 s");
        assert_eq!(r.id(), m.id());
        assert_eq!(r.message_type(), MessageType::Response);
        r
    }

    async fn ask(&mut self, name: &str, rtype: RecordType, ecs: Option<&str>) -> Message {
        let m = self.query(name, rtype, ecs);
        self.ask_msg(m).await
    }
}

fn addrs(m: &Message) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn answers_follow_region_mapping_by_source_and_client_subnet() {
    let store = TableStore::with_table(two_region_table(1)).unwrap();
    // The test's resolver (127.0.0.1) is trusted with client-subnet.
    let trusted = config().with_trusted_resolver("127.0.0.1/32".parse().unwrap());
    let server = serve(Responder::builder(trusted, store).build().unwrap()).await;
    let mut c = Client::new(server.udp_addrs()[0]).await;

    // Source 127.0.0.1 maps to eu: only eu cells, alternating by equal weights.
    let mut seen = Vec::new();
    for _ in 0..20 {
        let r = c.ask("api.example.test.", RecordType::A, None).await;
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.authoritative());
        assert_eq!(r.answers().len(), 1);
        assert_eq!(r.answers()[0].ttl(), 5);
        seen.extend(addrs(&r));
    }
    assert!(
        seen.iter()
            .all(|a| *a == ip("192.0.2.1") || *a == ip("192.0.2.2")),
        "{seen:?}"
    );
    assert_eq!(seen.iter().filter(|a| **a == ip("192.0.2.1")).count(), 10);

    // A client subnet inside 203.0.113.0/24 maps to us, whatever the source; the
    // echo carries the matched prefix as scope.
    for _ in 0..5 {
        let r = c
            .ask("API.Example.Test.", RecordType::A, Some("203.0.113.0/24"))
            .await;
        assert_eq!(addrs(&r), vec![ip("198.51.100.1")]);
        assert_eq!(r.answers()[0].name().to_ascii(), "API.Example.Test.");
        let Some(EdnsOption::Subnet(echo)) = r
            .extensions()
            .as_ref()
            .and_then(|e| e.option(EdnsCode::Subnet))
            .cloned()
        else {
            panic!("no client-subnet echo in {r:?}")
        };
        assert_eq!(
            (echo.addr(), echo.source_prefix(), echo.scope_prefix()),
            (ip("203.0.113.0"), 24, 24)
        );
    }

    // A subnet no rule matches (and no default region): any healthy cell.
    let r = c
        .ask("api.example.test.", RecordType::A, Some("192.0.2.0/24"))
        .await;
    assert_eq!(r.answers().len(), 1);

    // Client subnet ignored when disabled: back to the source address (eu).
    let store = TableStore::with_table(two_region_table(1)).unwrap();
    let server2 = serve(
        Responder::builder(config().with_client_subnet(false), store)
            .build()
            .unwrap(),
    )
    .await;
    let mut c2 = Client::new(server2.udp_addrs()[0]).await;
    for _ in 0..4 {
        let r = c2
            .ask("api.example.test.", RecordType::A, Some("203.0.113.0/24"))
            .await;
        assert_ne!(addrs(&r), vec![ip("198.51.100.1")]);
    }
    server.shutdown().await;
    server2.shutdown().await;
}

#[tokio::test]
async fn client_subnet_from_an_untrusted_resolver_is_ignored() {
    // Only 10.53.0.0/24 is trusted; the query comes from 127.0.0.1 (eu) and
    // claims a client in 203.0.113.0/24 (us).
    let store = TableStore::with_table(two_region_table(1)).unwrap();
    let cfg = config().with_trusted_resolver("10.53.0.0/24".parse().unwrap());
    let responder = Responder::builder(cfg, store).build().unwrap();
    let server = serve(responder.clone()).await;
    let mut c = Client::new(server.udp_addrs()[0]).await;
    for _ in 0..10 {
        let r = c
            .ask("api.example.test.", RecordType::A, Some("203.0.113.0/24"))
            .await;
        assert_eq!(r.response_code(), ResponseCode::NoError);
        let got = addrs(&r);
        assert!(
            got == vec![ip("192.0.2.1")] || got == vec![ip("192.0.2.2")],
            "answered by the source address (eu), not the claimed subnet: {got:?}"
        );
        let Some(EdnsOption::Subnet(echo)) = r
            .extensions()
            .as_ref()
            .and_then(|e| e.option(EdnsCode::Subnet))
            .cloned()
        else {
            panic!("no client-subnet echo in {r:?}")
        };
        assert_eq!(
            (echo.addr(), echo.source_prefix(), echo.scope_prefix()),
            (ip("203.0.113.0"), 24, 0),
            "scope 0: the answer does not depend on the claimed subnet"
        );
    }
    assert_eq!(responder.stats().ecs_untrusted, 10);
    server.shutdown().await;

    // The same query from a trusted network is believed: us.
    let store = TableStore::with_table(two_region_table(1)).unwrap();
    let cfg = config()
        .with_trusted_resolver("10.53.0.0/24".parse().unwrap())
        .with_trusted_resolver("127.0.0.0/8".parse().unwrap());
    let responder = Responder::builder(cfg, store).build().unwrap();
    let server = serve(responder.clone()).await;
    let mut c = Client::new(server.udp_addrs()[0]).await;
    for _ in 0..3 {
        let r = c
            .ask("api.example.test.", RecordType::A, Some("203.0.113.0/24"))
            .await;
        assert_eq!(addrs(&r), vec![ip("198.51.100.1")]);
    }
    assert_eq!(responder.stats().ecs_untrusted, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_region_without_a_healthy_cell_falls_back_and_several_addresses_come_region_first() {
    let store = TableStore::with_table(two_region_table(1)).unwrap();
    let mut cfg = config().with_max_answers(3);
    cfg.entry_addresses
        .insert(id("us-1"), vec![ip("198.51.100.1"), ip("2001:db8::1")]);
    let server = serve(Responder::builder(cfg, store.clone()).build().unwrap()).await;
    let mut c = Client::new(server.udp_addrs()[0]).await;

    // eu client, 3 addresses: both eu cells (WRR pick first), then us-1.
    let r = c.ask("api.example.test.", RecordType::A, None).await;
    let got = addrs(&r);
    assert_eq!(got.len(), 3);
    assert!(
        got[..2].contains(&ip("192.0.2.1")) && got[..2].contains(&ip("192.0.2.2")),
        "{got:?}"
    );
    assert_eq!(got[2], ip("198.51.100.1"));

    // AAAA: only us-1 has an IPv6 entry address.
    let r = c.ask("api.example.test.", RecordType::AAAA, None).await;
    assert_eq!(
        addrs(&r),
        vec![IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap())]
    );

    // Both eu cells failed: the eu client gets the us cell.
    store.set_cell_failed(&id("eu-1"), true);
    store.set_cell_failed(&id("eu-2"), true);
    let r = c.ask("api.example.test.", RecordType::A, None).await;
    assert_eq!(addrs(&r), vec![ip("198.51.100.1")]);

    // Nothing healthy at all: SERVFAIL, never a failed cell.
    store.set_cell_failed(&id("us-1"), true);
    let r = c.ask("api.example.test.", RecordType::A, None).await;
    assert_eq!(r.response_code(), ResponseCode::ServFail);
    assert!(r.answers().is_empty());
    assert_eq!(server.responder().stats().servfail, 1);
    server.shutdown().await;

    // With `require_health`, a cell the health stream does not know is not answered.
    let store = TableStore::with_table(two_region_table(1)).unwrap();
    let strict = Responder::builder(config().with_require_health(true), store)
        .with_health(HealthHub::default())
        .build()
        .unwrap();
    let server = serve(strict).await;
    let mut c = Client::new(server.udp_addrs()[0]).await;
    assert_eq!(
        c.ask("api.example.test.", RecordType::A, None)
            .await
            .response_code(),
        ResponseCode::ServFail
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_cell_marked_down_is_excluded_from_the_next_answer() {
    let store = TableStore::with_table(two_region_table(1)).unwrap();
    let hub = HealthHub::try_new(ScorePolicy::default()).unwrap();
    let eu2_up = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&eu2_up);
    let probe = FnProbe::new(move || {
        let up = flag.load(Ordering::SeqCst);
        async move {
            Ok::<_, std::io::Error>(if up {
                ProbeOutcome::up()
            } else {
                ProbeOutcome::down("stopped")
            })
        }
    });
    let probes = Scheduler::try_new(&hub, 4)
        .unwrap()
        .with_probe(
            ProbeSpec::new(id("eu-2"), "gateway", probe).with_interval(Duration::from_millis(20)),
        )
        .unwrap()
        .start();
    let responder = Responder::builder(config(), store.clone())
        .with_health(hub.clone())
        .build()
        .unwrap();
    let server = serve(responder).await;
    let mut c = Client::new(server.udp_addrs()[0]).await;
    // Waits until the health stream says eu-2 is (un)healthy.
    let wait_for = |healthy: bool| {
        let hub = hub.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while hub.cell(&id("eu-2")).is_none_or(|h| h.healthy != healthy) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "eu-2 never became healthy={healthy}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(true).await;

    // 1. Health stream: the prober reports eu-2 down.
    eu2_up.store(false, Ordering::SeqCst);
    wait_for(false).await;
    for _ in 0..10 {
        assert_eq!(
            addrs(&c.ask("api.example.test.", RecordType::A, None).await),
            vec![ip("192.0.2.1")]
        );
    }
    // Back up: answered again (once the sync task has seen the change).
    eu2_up.store(true, Ordering::SeqCst);
    wait_for(true).await;
    let mut back = false;
    for _ in 0..200 {
        if addrs(&c.ask("api.example.test.", RecordType::A, None).await) == vec![ip("192.0.2.2")] {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(back, "eu-2 never answered again after recovering");
    // The health stream's RTT (the in-process probe's p50: well under 1 ms, a few ms
    // on a starved machine) reached the weights: eu-2 weighs up to 100 × 1.5
    // (above 130 for any p50 under 13 ms), eu-1 (no probe) exactly its base 100.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server
        .responder()
        .weight(&id("eu-2"))
        .is_none_or(|w| w < 130.0)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            server.responder().weight(&id("eu-2"))
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.responder().weight(&id("eu-1")), Some(100.0));

    // 2. The router's failed overlay.
    store.set_cell_failed(&id("eu-1"), true);
    for _ in 0..10 {
        assert_eq!(
            addrs(&c.ask("api.example.test.", RecordType::A, None).await),
            vec![ip("192.0.2.2")]
        );
    }
    store.set_cell_failed(&id("eu-1"), false);

    // 3. A new table version drains eu-2.
    let mut t = two_region_table(2);
    t.cell_mut(&id("eu-2")).unwrap().state = CellState::Draining;
    store.store(t).unwrap();
    for _ in 0..10 {
        assert_eq!(
            addrs(&c.ask("api.example.test.", RecordType::A, None).await),
            vec![ip("192.0.2.1")]
        );
    }
    // 4. And one that takes eu-1 down, keeps eu-2 draining and adds a new cell eu-3.
    let mut t = two_region_table(3);
    t.cell_mut(&id("eu-1")).unwrap().state = CellState::Down;
    t.cell_mut(&id("eu-2")).unwrap().state = CellState::Draining;
    t.cells
        .push(cell("eu-3", "eu", "http://192.0.2.3:8080", 100));
    store.store(t).unwrap();
    for _ in 0..10 {
        assert_eq!(
            addrs(&c.ask("api.example.test.", RecordType::A, None).await),
            vec![ip("192.0.2.3")]
        );
    }
    probes.shutdown().await;
    server.shutdown().await;
}

/// Sends `n` queries in batches and counts the first answer's address.
async fn shares(c: &mut Client, n: usize) -> HashMap<IpAddr, usize> {
    let mut counts = HashMap::new();
    let batch = 50;
    let mut done = 0;
    while done < n {
        let k = batch.min(n - done);
        for _ in 0..k {
            let m = c.query("api.example.test.", RecordType::A, None);
            c.send(&m.to_vec().unwrap()).await;
        }
        for _ in 0..k {
            let r = c.recv().await.expect("answer lost");
            *counts.entry(addrs(&r)[0]).or_insert(0) += 1;
        }
        done += k;
    }
    counts
}

#[tokio::test]
async fn answer_shares_over_10000_queries_match_the_weights() {
    let table = RoutingTable::uniform(
        id("eu"),
        vec![
            cell("a", "eu", "http://192.0.2.1:80", 50),
            cell("b", "eu", "http://192.0.2.2:80", 30),
            cell("c", "eu", "http://192.0.2.3:80", 20),
        ],
        128,
    );
    let store = TableStore::with_table(table).unwrap();
    // The balancer the routing layer would use (`CellRouterLayer::with_balancer`).
    let balancer = Arc::new(Balancer::new());
    let responder = Responder::builder(config(), store)
        .with_balancer(Arc::clone(&balancer))
        .build()
        .unwrap();
    let server = serve(responder.clone()).await;
    let mut c = Client::new(server.udp_addrs()[0]).await;

    let check = |counts: &HashMap<IpAddr, usize>, expected: [(&str, f64); 3]| {
        let total: usize = counts.values().sum();
        assert_eq!(total, 10_000);
        for (a, w) in expected {
            let share = *counts.get(&ip(a)).unwrap_or(&0) as f64 / total as f64;
            assert!(
                (share - w).abs() <= 0.02,
                "{a}: share {share:.4}, weight share {w:.4} ({counts:?})"
            );
        }
    };
    check(
        &shares(&mut c, 10_000).await,
        [("192.0.2.1", 0.5), ("192.0.2.2", 0.3), ("192.0.2.3", 0.2)],
    );

    // RTT moves the weights the router's way: c measured close (0 ms, fed to
    // the shared balancer as the routing layer does for a forwarded response)
    // gets 20 × 1.5 = 30, a far away (200 ms, fed through the responder)
    // 50 × (1 + 0.5 e^-4).
    balancer.observe_cell_rtt(&id("c"), Duration::ZERO);
    responder.observe_rtt(&id("a"), Duration::from_millis(200));
    let w = |name: &str| responder.weight(&id(name)).unwrap();
    assert_eq!(
        balancer.cell_weight(Some(&id("eu")), &id("c")),
        Some(w("c"))
    );
    assert!((w("c") - 30.0).abs() < 1e-3, "{}", w("c"));
    assert!((w("a") - cellrouter::rtt_weight(50.0, 200.0)).abs() < 1e-3);
    let total = w("a") + w("b") + w("c");
    let counts = shares(&mut c, 10_000).await;
    check(
        &counts,
        [
            ("192.0.2.1", w("a") / total),
            ("192.0.2.2", w("b") / total),
            ("192.0.2.3", w("c") / total),
        ],
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_names_get_nxdomain_inside_the_zone_and_refused_outside() {
    let store = TableStore::with_table(two_region_table(9)).unwrap();
    let server = serve(Responder::builder(config(), store).build().unwrap()).await;
    let mut c = Client::new(server.udp_addrs()[0]).await;

    let r = c.ask("nope.example.test.", RecordType::A, None).await;
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    assert!(r.authoritative());
    let soa = r
        .name_servers()
        .iter()
        .find_map(|r| r.data().as_soa().cloned())
        .expect("SOA in authority");
    assert_eq!(soa.serial(), 9);
    assert_eq!(soa.minimum(), 5);

    let r = c.ask("www.example.org.", RecordType::A, None).await;
    assert_eq!(r.response_code(), ResponseCode::Refused);
    assert!(r.answers().is_empty());

    // The served name, another type: NOERROR, no data, SOA.
    let r = c.ask("api.example.test.", RecordType::MX, None).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(r.answers().is_empty() && !r.name_servers().is_empty());

    // The apex answers its SOA.
    let r = c.ask("example.test.", RecordType::SOA, None).await;
    assert_eq!(r.answers().len(), 1);

    // Class CH: refused. Opcode STATUS: NOTIMP. Two questions: FORMERR.
    let mut m = c.query("api.example.test.", RecordType::A, None);
    m.queries_mut()[0].set_query_class(DNSClass::CH);
    assert_eq!(c.ask_msg(m).await.response_code(), ResponseCode::Refused);
    let mut m = c.query("api.example.test.", RecordType::A, None);
    m.set_op_code(OpCode::Status);
    assert_eq!(c.ask_msg(m).await.response_code(), ResponseCode::NotImp);
    let mut m = c.query("api.example.test.", RecordType::A, None);
    m.add_query(Query::query(
        Name::from_ascii("x.example.test.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(c.ask_msg(m).await.response_code(), ResponseCode::FormErr);

    let s = server.responder().stats();
    assert_eq!(
        (s.nxdomain, s.refused, s.nodata, s.notimp, s.formerr),
        (1, 2, 1, 1, 1)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn hickory_resolver_over_udp_and_tcp() {
    use hickory_resolver::Resolver;
    use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
    use hickory_resolver::name_server::TokioConnectionProvider;
    use hickory_resolver::proto::xfer::Protocol;

    let store = TableStore::with_table(two_region_table(1)).unwrap();
    let server = serve(Responder::builder(config(), store.clone()).build().unwrap()).await;
    for (addr, proto) in [
        (server.udp_addrs()[0], Protocol::Udp),
        (server.tcp_addrs()[0], Protocol::Tcp),
    ] {
        let mut ns = NameServerConfig::new(addr, proto);
        ns.trust_negative_responses = true;
        let mut opts = ResolverOpts::default();
        opts.cache_size = 0;
        opts.attempts = 1;
        opts.timeout = Duration::from_secs(2);
        let resolver = Resolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], vec![ns]),
            TokioConnectionProvider::default(),
        )
        .with_options(opts)
        .build();
        let mut got = Vec::new();
        for _ in 0..4 {
            let l = resolver.ipv4_lookup("api.example.test.").await.unwrap();
            let ttl = l.as_lookup().record_iter().next().unwrap().ttl();
            assert_eq!(ttl, 5);
            got.extend(l.iter().map(|a| a.0));
        }
        got.sort();
        assert_eq!(
            got,
            vec![
                Ipv4Addr::new(192, 0, 2, 1),
                Ipv4Addr::new(192, 0, 2, 1),
                Ipv4Addr::new(192, 0, 2, 2),
                Ipv4Addr::new(192, 0, 2, 2)
            ],
            "{proto}"
        );
        let e = resolver
            .ipv4_lookup("nope.example.test.")
            .await
            .unwrap_err();
        assert!(e.is_nx_domain(), "{proto}: {e}");
        let e = resolver.ipv4_lookup("www.example.org.").await.unwrap_err();
        assert!(!e.is_nx_domain(), "{proto}: {e}");
    }
    // TCP also excludes a failed cell on the next answer.
    store.set_cell_failed(&id("eu-1"), true);
    let ns = NameServerConfig::new(server.tcp_addrs()[0], Protocol::Tcp);
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    let resolver = Resolver::builder_with_config(
        ResolverConfig::from_parts(None, vec![], vec![ns]),
        TokioConnectionProvider::default(),
    )
    .with_options(opts)
    .build();
    for _ in 0..4 {
        let l = resolver.ipv4_lookup("api.example.test.").await.unwrap();
        assert_eq!(
            l.iter().map(|a| a.0).collect::<Vec<_>>(),
            vec![Ipv4Addr::new(192, 0, 2, 2)]
        );
    }
    server.shutdown().await;
}

fn handled(server: &RunningServer) -> u64 {
    let s = server.responder().stats();
    s.answered + s.nodata + s.nxdomain + s.refused + s.servfail + s.notimp + s.formerr + s.malformed
}

#[tokio::test]
async fn fuzzed_packets_are_dropped_and_counted_and_the_server_keeps_answering() {
    let store = TableStore::with_table(two_region_table(1)).unwrap();
    let server = serve(
        Responder::builder(config().with_max_answers(16), store)
            .build()
            .unwrap(),
    )
    .await;
    let mut c = Client::new(server.udp_addrs()[0]).await;
    let mut rng = StdRng::seed_from_u64(0x6c5b);
    let valid: Vec<Vec<u8>> = [
        c.query("api.example.test.", RecordType::A, None),
        c.query(
            "api.example.test.",
            RecordType::AAAA,
            Some("203.0.113.7/32"),
        ),
        c.query("x.example.test.", RecordType::SOA, None),
    ]
    .iter()
    .map(|m| m.to_vec().unwrap())
    .collect();

    let mut sent = 0u64;
    for i in 0..6000 {
        let pkt: Vec<u8> = match i % 3 {
            // Random bytes of random length.
            0 => (0..rng.random_range(0..600))
                .map(|_| rng.random())
                .collect(),
            // A valid query with a few bytes flipped.
            1 => {
                let mut p = valid[rng.random_range(0..valid.len())].clone();
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..p.len());
                    p[at] = rng.random();
                }
                p
            }
            // A valid query truncated or extended with junk.
            _ => {
                let mut p = valid[rng.random_range(0..valid.len())].clone();
                if rng.random_bool(0.5) {
                    p.truncate(rng.random_range(0..p.len()));
                } else {
                    p.extend((0..rng.random_range(1..40)).map(|_| rng.random::<u8>()));
                }
                p
            }
        };
        c.send(&pkt).await;
        sent += 1;
        if i % 20 == 19 {
            // Pace the flood on the responder's progress so the kernel's socket
            // buffer never drops a packet (every one must be accounted for),
            // and drain whatever came back.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while handled(&server) < sent {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "responder stuck: {:?} after {sent} packets",
                    server.responder().stats()
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            while let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_micros(100), c.sock.recv(&mut [0u8; 4096]))
                    .await
            {}
        }
    }
    // A short packet and a response message are dropped, not answered.
    let mut resp = c.query("api.example.test.", RecordType::A, None);
    resp.set_message_type(MessageType::Response);
    c.send(&resp.to_vec().unwrap()).await;
    c.send(&[1, 2, 3]).await;
    // Let the queue drain, then a valid query is still answered.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(50), c.sock.recv(&mut [0u8; 4096])).await
    {}
    for _ in 0..3 {
        let r = c.ask("api.example.test.", RecordType::A, None).await;
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert_eq!(r.answers().len(), 3);
    }
    let s = server.responder().stats();
    assert!(s.malformed >= 2000, "{s:?}");
    // Every packet was either answered or counted as dropped (plus the 3 checks and 2 extras).
    assert_eq!(handled(&server), sent + 5, "{s:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_count_answers_per_cell_and_region_refusals_and_drops() {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let store = TableStore::with_table(two_region_table(1)).unwrap();
    let cfg = config().with_trusted_resolver("127.0.0.1/32".parse().unwrap());
    let responder = Responder::builder(cfg, store)
        .with_meter(provider.meter("gslb"))
        .build()
        .unwrap();
    let server = serve(responder).await;
    let mut c = Client::new(server.udp_addrs()[0]).await;
    for _ in 0..4 {
        c.ask("api.example.test.", RecordType::A, None).await; // eu-1, eu-2, eu-1, eu-2
    }
    c.ask("api.example.test.", RecordType::A, Some("203.0.113.0/24"))
        .await; // us-1
    c.ask("www.example.org.", RecordType::A, None).await; // refused
    c.ask("gone.example.test.", RecordType::A, None).await; // nxdomain
    c.send(&[0u8; 5]).await; // dropped
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.responder().stats().malformed == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    provider.force_flush().unwrap();
    let all = exporter.get_finished_metrics().unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for sm in all.last().unwrap().scope_metrics() {
        for m in sm.metrics() {
            if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                for dp in sum.data_points() {
                    let mut attrs: Vec<String> = dp
                        .attributes()
                        .map(|kv| format!("{}={}", kv.key, kv.value))
                        .collect();
                    attrs.sort();
                    seen.insert(format!("{} {}", m.name(), attrs.join(",")), dp.value());
                }
            }
        }
    }
    assert_eq!(
        seen.get("gslb.answers cell=eu-1,region=eu"),
        Some(&2),
        "{seen:?}"
    );
    assert_eq!(seen.get("gslb.answers cell=eu-2,region=eu"), Some(&2));
    assert_eq!(seen.get("gslb.answers cell=us-1,region=us"), Some(&1));
    assert_eq!(seen.get("gslb.refusals reason=outside_zone"), Some(&1));
    assert_eq!(seen.get("gslb.responses rcode=noerror"), Some(&5));
    assert_eq!(seen.get("gslb.responses rcode=refused"), Some(&1));
    assert_eq!(seen.get("gslb.responses rcode=nxdomain"), Some(&1));
    assert_eq!(seen.get("gslb.malformed reason=header"), Some(&1));
    server.shutdown().await;
}
