//! A [`FaultProxy`] in front of every port of every cell: the routing table's
//! endpoints (the controllers' `--endpoints`) point at the proxies, so the
//! gateway's, the probers' and the controllers' links to a cell all pass
//! through it and a partition of the cell is one mode change. The
//! orchestrator's own reads (state, outbox) go to the cell's ports directly.
//! With `DEMO_REDIS_URL` set, one more proxy sits in front of Redis, and the
//! cells are given its address: `redis_down` refuses it. With etcd, one sits
//! in front of the first etcd endpoint for the controllers alone (their link
//! to the table store; the other roles read the table from etcd directly).
//! With the in-process mock broker, each cell reaches Kafka through its own
//! [`KafkaFaultProxy`] (every process of the cell: the relay's and the
//! replicator's links), so a partition of one cell's Kafka link leaves the
//! other cells' up.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use testkit::KafkaFaultProxy;
use testkit::proxy::{FaultProxy, LinkMode};

use crate::error::DemoError;

/// Which of a cell's links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Side {
    /// Everyone's link to the cell (gateway, probers, controllers).
    Front,
    /// The cell's link to Kafka.
    Kafka,
}

/// Every cell's proxies, and the faults in force on each cell's links.
#[derive(Debug, Default)]
pub(crate) struct Proxies {
    by_cell: BTreeMap<String, Vec<FaultProxy>>,
    /// In front of the mock broker, per cell.
    kafka: BTreeMap<String, KafkaFaultProxy>,
    /// Faults (schedule index, mode) in force per cell link; the last one wins.
    active: BTreeMap<(Side, String), Vec<(usize, LinkMode)>>,
    /// In front of Redis, with the URL the cells use.
    redis: Option<(FaultProxy, String)>,
    /// In front of etcd, with the endpoint the controllers use.
    store: Option<(FaultProxy, String)>,
    /// Faults (schedule index, mode) in force on the controllers' store link.
    store_faults: Vec<(usize, LinkMode)>,
}

impl Proxies {
    /// One proxy per `(cell, ports)` port.
    pub(crate) async fn start(ports: &[(String, Vec<u16>)]) -> Result<Self, DemoError> {
        let mut by_cell = BTreeMap::new();
        for (id, ports) in ports {
            let mut v = Vec::new();
            for p in ports {
                v.push(FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], *p))).await?);
            }
            by_cell.insert(id.clone(), v);
        }
        Ok(Proxies { by_cell, ..Proxies::default() })
    }

    /// A Kafka link proxy per cell in front of the brokers of `bootstrap`
    /// (`host:port,...`); each cell is to use [`Proxies::kafka_bootstrap`].
    pub(crate) async fn with_kafka(mut self, bootstrap: &str) -> Result<Self, DemoError> {
        let mut brokers = Vec::new();
        for b in bootstrap.split(',').filter(|b| !b.is_empty()) {
            brokers.push(
                tokio::net::lookup_host(b).await?.next().ok_or_else(|| DemoError::Config(format!("Kafka broker {b:?} does not resolve")))?,
            );
        }
        for cell in self.by_cell.keys() {
            self.kafka.insert(cell.clone(), KafkaFaultProxy::start(&brokers).await?);
        }
        Ok(self)
    }

    /// Each cell's `bootstrap.servers`, when its Kafka link is proxied.
    pub(crate) fn kafka_bootstrap(&self) -> BTreeMap<String, String> {
        self.kafka.iter().map(|(c, p)| (c.clone(), p.bootstrap())).collect()
    }

    /// A proxy in front of the Redis of `url` (`redis://host:port[/db]`);
    /// the cells are to use [`Proxies::redis_url`] instead.
    pub(crate) async fn with_redis(mut self, url: &str) -> Result<Self, DemoError> {
        self.redis = Some(proxy_for(url, 6379).await?);
        Ok(self)
    }

    /// A proxy in front of the etcd endpoint `endpoint` (`http://host:port`);
    /// the controllers are to use [`Proxies::store_endpoint`] instead.
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) async fn with_store(mut self, endpoint: &str) -> Result<Self, DemoError> {
        let (proxy, url) = proxy_for(endpoint, 2379).await?;
        self.store = Some((proxy, url));
        Ok(self)
    }

    /// The etcd endpoint the controllers use, when their link is proxied.
    pub(crate) fn store_endpoint(&self) -> Option<&str> {
        self.store.as_ref().map(|(_, u)| u.as_str())
    }

    /// Puts fault `fault` (`mode`) on the controllers' link to the store, or
    /// (`None`) lifts it.
    pub(crate) fn store_fault(&mut self, fault: usize, mode: Option<LinkMode>) -> Result<(), DemoError> {
        let (proxy, _) = self.store.as_ref().ok_or_else(|| DemoError::Other("the controllers' store is not proxied (no etcd in this run)".into()))?;
        match mode {
            Some(m) => self.store_faults.push((fault, m)),
            None => self.store_faults.retain(|(f, _)| *f != fault),
        }
        proxy.set(self.store_faults.last().map_or(LinkMode::Pass, |(_, m)| *m));
        Ok(())
    }

    /// The Redis URL the cells use, when Redis is proxied.
    pub(crate) fn redis_url(&self) -> Option<&str> {
        self.redis.as_ref().map(|(_, u)| u.as_str())
    }

    /// Refuses (`down`) or passes the Redis link.
    pub(crate) fn redis(&self, down: bool) -> Result<(), DemoError> {
        let (proxy, _) = self.redis.as_ref().ok_or_else(|| DemoError::Other("Redis is not in this run (DEMO_REDIS_URL unset)".into()))?;
        proxy.set(if down { LinkMode::Refuse } else { LinkMode::Pass });
        Ok(())
    }

    /// The URLs the routing table gives for `cell`.
    pub(crate) fn urls(&self, cell: &str) -> Option<Vec<String>> {
        self.by_cell.get(cell).map(|v| v.iter().map(|p| format!("http://{}", p.addr())).collect())
    }

    /// Puts fault `fault` (`mode`) on `cell`'s link `side`.
    pub(crate) fn fault(&mut self, side: Side, cell: &str, fault: usize, mode: LinkMode) -> Result<(), DemoError> {
        if !self.by_cell.contains_key(cell) {
            return Err(DemoError::UnknownCell(cell.to_string()));
        }
        if side == Side::Kafka && !self.kafka.contains_key(cell) {
            return Err(DemoError::Other("no proxy on a cell's Kafka link (KAFKA_BOOTSTRAP names a broker the run does not own)".into()));
        }
        self.active.entry((side, cell.to_string())).or_default().push((fault, mode));
        self.apply(side, cell);
        Ok(())
    }

    /// Lifts fault `fault` from `cell`'s link `side` (another one in force stays).
    pub(crate) fn heal(&mut self, side: Side, cell: &str, fault: usize) {
        if let Some(v) = self.active.get_mut(&(side, cell.to_string())) {
            v.retain(|(f, _)| *f != fault);
        }
        self.apply(side, cell);
    }

    /// Every link back to pass.
    pub(crate) fn heal_all(&mut self) {
        self.active.clear();
        self.store_faults.clear();
        if let Some((p, _)) = &self.store {
            p.set(LinkMode::Pass);
        }
        if let Some((p, _)) = &self.redis {
            p.set(LinkMode::Pass);
        }
        for v in self.by_cell.values() {
            v.iter().for_each(|p| p.set(LinkMode::Pass));
        }
        self.kafka.values().for_each(|p| p.set(LinkMode::Pass));
    }

    fn apply(&self, side: Side, cell: &str) {
        let mode = self.active.get(&(side, cell.to_string())).and_then(|v| v.last()).map_or(LinkMode::Pass, |(_, m)| *m);
        match side {
            Side::Front => self.by_cell.get(cell).into_iter().flatten().for_each(|p| p.set(mode)),
            Side::Kafka => self.kafka.get(cell).into_iter().for_each(|p| p.set(mode)),
        }
    }
}

/// A proxy in front of the server of `url` (its port, or `default_port`),
/// and the same URL pointing at the proxy.
async fn proxy_for(url: &str, default_port: u16) -> Result<(FaultProxy, String), DemoError> {
    let parsed = url::Url::parse(url).map_err(|e| DemoError::Config(format!("{url:?}: {e}")))?;
    let host = parsed.host_str().ok_or_else(|| DemoError::Config(format!("{url:?}: no host")))?;
    let port = parsed.port().unwrap_or(default_port);
    let upstream =
        tokio::net::lookup_host((host, port)).await?.next().ok_or_else(|| DemoError::Config(format!("{url:?}: {host} does not resolve")))?;
    let proxy = FaultProxy::start(upstream).await?;
    let mut proxied = parsed.clone();
    proxied.set_host(Some("127.0.0.1")).map_err(|e| DemoError::Config(e.to_string()))?;
    proxied.set_port(Some(proxy.addr().port())).map_err(|()| DemoError::Config(format!("{url:?}: no port")))?;
    // `Url` writes a bare authority with a trailing `/`
    let text = proxied.to_string();
    let text = if parsed.path() == "/" || parsed.path().is_empty() { text.trim_end_matches('/').to_string() } else { text };
    Ok((proxy, text))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;

    use super::*;

    /// The brokers a client bootstrapped at `bootstrap` is told of, as
    /// `host:port` (an error when it hears nothing within `wait`).
    async fn brokers_seen(bootstrap: String, wait: Duration) -> Result<Vec<String>, String> {
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().map_err(|e| e.to_string())?;
            let md = c.fetch_metadata(None, wait).map_err(|e| e.to_string())?;
            Ok(md.brokers().iter().map(|b| format!("{}:{}", b.host(), b.port())).collect())
        })
        .await
        .unwrap()
    }

    /// librdkafka's own Metadata bytes, through a cell's Kafka link proxy:
    /// the broker it learns of is the proxy, so all its traffic stays on
    /// the link; the link blackholed answers nothing while another cell's
    /// link and a direct client still work; healed, it answers again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cells_kafka_link_is_proxied_to_every_broker_and_cut_alone() {
        let mock = MockCluster::new(1).unwrap();
        let direct = mock.bootstrap_servers();
        let ports = vec![("beijing".to_string(), vec![]), ("shanghai".to_string(), vec![])];
        let mut proxies = Proxies::start(&ports).await.unwrap().with_kafka(&direct).await.unwrap();
        let boot = proxies.kafka_bootstrap();
        let (beijing, shanghai) = (boot["beijing"].clone(), boot["shanghai"].clone());
        assert_ne!(beijing, shanghai, "a proxy per cell");

        let wait = Duration::from_secs(5);
        assert_eq!(brokers_seen(beijing.clone(), wait).await.unwrap(), vec![beijing.clone()], "the advertised broker is rewritten to the proxy");
        assert_eq!(brokers_seen(direct.clone(), wait).await.unwrap(), vec![direct.clone()], "a direct client sees the broker itself");

        proxies.fault(Side::Kafka, "beijing", 0, LinkMode::Blackhole).unwrap();
        let cut = brokers_seen(beijing.clone(), Duration::from_millis(1500)).await;
        assert!(cut.is_err(), "a blackholed link answers nothing: {cut:?}");
        assert_eq!(brokers_seen(shanghai.clone(), wait).await.unwrap(), vec![shanghai.clone()], "another cell's link stays up");
        assert_eq!(brokers_seen(direct.clone(), wait).await.unwrap(), vec![direct]);
        assert!(proxies.fault(Side::Kafka, "nowhere", 1, LinkMode::Blackhole).is_err(), "an unknown cell is an error");

        proxies.fault(Side::Kafka, "shanghai", 2, LinkMode::Refuse).unwrap();
        let refused = brokers_seen(shanghai.clone(), Duration::from_millis(1500)).await;
        assert!(refused.is_err(), "a dropped link closes every connection: {refused:?}");

        proxies.heal(Side::Kafka, "beijing", 0);
        proxies.heal_all();
        assert_eq!(brokers_seen(beijing.clone(), wait).await.unwrap(), vec![beijing]);
        assert_eq!(brokers_seen(shanghai.clone(), wait).await.unwrap(), vec![shanghai]);
    }
}
