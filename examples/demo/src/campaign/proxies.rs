//! A [`FaultProxy`] in front of every port of every cell: the routing table's
//! endpoints (the controllers' `--endpoints`) point at the proxies, so the
//! gateway's, the probers' and the controllers' links to a cell all pass
//! through it and a partition of the cell is one mode change. The
//! orchestrator's own reads (state, outbox) go to the cell's ports directly.
//! With `DEMO_REDIS_URL` set, one more proxy sits in front of Redis, and the
//! cells are given its address: `redis_down` refuses it. With etcd, one sits
//! in front of the first etcd endpoint for the controllers alone (their link
//! to the table store; the other roles read the table from etcd directly).

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
        Ok(Proxies { by_cell, active: BTreeMap::new(), redis: None, store: None, store_faults: Vec::new() })
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
    }

    fn apply(&self, cell: &str) {
        let mode = self.active.get(cell).and_then(|v| v.last()).map_or(LinkMode::Pass, |(_, m)| *m);
        if let Some(v) = self.by_cell.get(cell) {
            v.iter().for_each(|p| p.set(mode));
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
