//! A [`FaultProxy`] in front of every port of every cell: the routing table's
//! endpoints (the controllers' `--endpoints`) point at the proxies, so the
//! gateway's, the probers' and the controllers' links to a cell all pass
//! through it and a partition of the cell is one mode change. The
//! orchestrator's own reads (state, outbox) go to the cell's ports directly.
//! With `DEMO_REDIS_URL` set, one more proxy sits in front of Redis, and the
//! cells are given its address: `redis_down` refuses it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use testkit::proxy::{FaultProxy, LinkMode};

use crate::error::DemoError;

/// Every cell's proxies, and the faults in force on each cell's link.
#[derive(Debug, Default)]
pub(crate) struct Proxies {
    by_cell: BTreeMap<String, Vec<FaultProxy>>,
    /// Faults (schedule index, mode) in force per cell; the last one wins.
    active: BTreeMap<String, Vec<(usize, LinkMode)>>,
    /// In front of Redis, with the URL the cells use.
    redis: Option<(FaultProxy, String)>,
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
        Ok(Proxies { by_cell, active: BTreeMap::new(), redis: None })
    }

    /// A proxy in front of the Redis of `url` (`redis://host:port[/db]`);
    /// the cells are to use [`Proxies::redis_url`] instead.
    pub(crate) async fn with_redis(mut self, url: &str) -> Result<Self, DemoError> {
        let parsed = url::Url::parse(url).map_err(|e| DemoError::Config(format!("DEMO_REDIS_URL {url:?}: {e}")))?;
        let host = parsed.host_str().ok_or_else(|| DemoError::Config(format!("DEMO_REDIS_URL {url:?}: no host")))?;
        let port = parsed.port().unwrap_or(6379);
        let upstream = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| DemoError::Config(format!("DEMO_REDIS_URL {url:?}: {host} does not resolve")))?;
        let proxy = FaultProxy::start(upstream).await?;
        let mut proxied = parsed.clone();
        proxied.set_host(Some("127.0.0.1")).map_err(|e| DemoError::Config(e.to_string()))?;
        proxied.set_port(Some(proxy.addr().port())).map_err(|()| DemoError::Config(format!("DEMO_REDIS_URL {url:?}: no port")))?;
        self.redis = Some((proxy, proxied.to_string()));
        Ok(self)
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

    /// Puts fault `fault` (`mode`) on `cell`'s link.
    pub(crate) fn fault(&mut self, cell: &str, fault: usize, mode: LinkMode) -> Result<(), DemoError> {
        if !self.by_cell.contains_key(cell) {
            return Err(DemoError::UnknownCell(cell.to_string()));
        }
        self.active.entry(cell.to_string()).or_default().push((fault, mode));
        self.apply(cell);
        Ok(())
    }

    /// Lifts fault `fault` from `cell`'s link (another one in force stays).
    pub(crate) fn heal(&mut self, cell: &str, fault: usize) {
        if let Some(v) = self.active.get_mut(cell) {
            v.retain(|(f, _)| *f != fault);
        }
        self.apply(cell);
    }

    /// Every link back to pass.
    pub(crate) fn heal_all(&mut self) {
        self.active.clear();
        if let Some((p, _)) = &self.redis {
            p.set(LinkMode::Pass);
        }
        for v in self.by_cell.values() {
            v.iter().for_each(|p| p.set(LinkMode::Pass));
        }
    }

    fn apply(&self, cell: &str) {
        let mode = self.active.get(cell).and_then(|v| v.last()).map_or(LinkMode::Pass, |(_, m)| *m);
        if let Some(v) = self.by_cell.get(cell) {
            v.iter().for_each(|p| p.set(mode));
        }
    }
}
