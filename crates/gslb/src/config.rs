//! [`GslbConfig`]: zones, names, TTL, answer size and the region map.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use cellrouter::CellId;
use hickory_proto::rr::{LowerName, Name};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::GslbError;
use crate::region_map::{RegionMap, RegionRule};

/// Default TTL of answers, in seconds.
pub const DEFAULT_TTL_SECS: u32 = 5;
/// Largest `max_answers`.
pub const MAX_ANSWERS: usize = 16;
/// Largest TTL accepted (one day).
pub const MAX_TTL_SECS: u32 = 86_400;

fn default_ttl() -> u32 {
    DEFAULT_TTL_SECS
}
fn default_max_answers() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_refresh_ms() -> u64 {
    1000
}

/// What the responder serves. Serde form (YAML or JSON, same field names):
///
/// ```yaml
/// zones: [example.test]          # we are authoritative for these
/// names: [api.example.test]      # answered with cell addresses
/// ttl: 5                         # seconds (default 5)
/// max_answers: 1                 # addresses per answer (1..=16, default 1)
/// client_subnet: true            # use EDNS client-subnet from trusted resolvers (default)
/// trusted_resolvers: [10.53.0.0/24] # resolvers whose client-subnet is believed (default: none)
/// require_health: false          # answer cells the health stream does not know
/// default_region: eu-west        # region of clients no rule matches (default: none, all cells)
/// regions:
///   - { cidr: 10.1.0.0/16, region: eu-west }
///   - { cidr: 10.2.0.0/16, region: us-east }
/// entry_addresses:               # optional per-cell override of the endpoint hosts
///   eu-1: [192.0.2.10]
/// refresh_ms: 1000               # resync of health and weights (default 1 s)
/// health_rtt: true               # feed probe latency (p50) into the RTT weights
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GslbConfig {
    /// Zones we are authoritative for: a name inside one that we do not serve
    /// is `NXDOMAIN`; a name outside all of them is `REFUSED`.
    pub zones: Vec<String>,
    /// Names answered with cell addresses (A and AAAA), each inside a zone.
    pub names: Vec<String>,
    /// TTL of answers, seconds (default 5; also the negative-caching TTL).
    #[serde(default = "default_ttl")]
    pub ttl: u32,
    /// Addresses per answer (default 1): the WRR pick first, then the next best
    /// healthy cells of the client's region, then of the others.
    #[serde(default = "default_max_answers")]
    pub max_answers: usize,
    /// Use the EDNS client-subnet option (RFC 7871) for region mapping when the
    /// query carries one and comes from a [trusted resolver](Self::trusted_resolvers)
    /// (default true); else the source address is used.
    #[serde(default = "yes")]
    pub client_subnet: bool,
    /// Networks of the resolvers whose EDNS client-subnet is believed (default
    /// empty: none). Anyone can put any subnet in a query, so the option is
    /// only honoured from sources inside one of these networks (IPv4-mapped
    /// IPv6 sources match as IPv4); from any other source it is ignored, the
    /// answer is chosen by the source address, and the echo carries scope 0
    /// (the answer does not depend on the client's subnet). Each entry must be
    /// a network address (no host bits set) and narrower than `/0`; the list
    /// must be empty when `client_subnet` is off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_resolvers: Vec<IpNet>,
    /// When true a cell the health stream has no entry for is not answered
    /// (default false: unknown to health checks means "not known bad").
    #[serde(default)]
    pub require_health: bool,
    /// Region of clients no rule matches; `None` (default) picks among all cells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_region: Option<CellId>,
    /// Client network -> region rules (longest prefix wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionRule>,
    /// Per-cell entry addresses, overriding the IP hosts of the cell's endpoints.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entry_addresses: BTreeMap<CellId, Vec<IpAddr>>,
    /// Resync period of health flags and RTTs, milliseconds (default 1000, >= 10).
    #[serde(default = "default_refresh_ms")]
    pub refresh_ms: u64,
    /// Feed each cell's probe latency (lowest p50 of its probes) into the RTT
    /// weights (default true).
    #[serde(default = "yes")]
    pub health_rtt: bool,
}

impl GslbConfig {
    /// A config serving `names` inside `zone`, with the defaults.
    pub fn new<I, S>(zone: impl Into<String>, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        GslbConfig {
            zones: vec![zone.into()],
            names: names.into_iter().map(Into::into).collect(),
            ttl: DEFAULT_TTL_SECS,
            max_answers: 1,
            client_subnet: true,
            trusted_resolvers: Vec::new(),
            require_health: false,
            default_region: None,
            regions: Vec::new(),
            entry_addresses: BTreeMap::new(),
            refresh_ms: default_refresh_ms(),
            health_rtt: true,
        }
    }

    /// Adds a zone.
    pub fn with_zone(mut self, zone: impl Into<String>) -> Self {
        self.zones.push(zone.into());
        self
    }

    /// Sets the TTL (whole seconds; default 5 s).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX);
        self
    }

    /// Sets the number of addresses per answer (1..=16).
    pub fn with_max_answers(mut self, n: usize) -> Self {
        self.max_answers = n;
        self
    }

    /// Adds a region rule.
    pub fn with_region(mut self, rule: RegionRule) -> Self {
        self.regions.push(rule);
        self
    }

    /// Sets the region of unmatched clients.
    pub fn with_default_region(mut self, region: CellId) -> Self {
        self.default_region = Some(region);
        self
    }

    /// Uses (or ignores) EDNS client-subnet.
    pub fn with_client_subnet(mut self, on: bool) -> Self {
        self.client_subnet = on;
        self
    }

    /// Believes EDNS client-subnet from resolvers inside `net` (see
    /// [`trusted_resolvers`](Self::trusted_resolvers)).
    pub fn with_trusted_resolver(mut self, net: IpNet) -> Self {
        self.trusted_resolvers.push(net);
        self
    }

    /// Requires a health entry for a cell to be answered.
    pub fn with_require_health(mut self, on: bool) -> Self {
        self.require_health = on;
        self
    }

    /// Overrides the entry addresses of `cell`.
    pub fn with_entry_addresses(mut self, cell: CellId, addrs: Vec<IpAddr>) -> Self {
        self.entry_addresses.insert(cell, addrs);
        self
    }

    /// Sets the resync period.
    pub fn with_refresh(mut self, every: Duration) -> Self {
        self.refresh_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// Feeds (or not) probe latencies into the RTT weights.
    pub fn with_health_rtt(mut self, on: bool) -> Self {
        self.health_rtt = on;
        self
    }

    /// Checks every field; what [`Responder`](crate::Responder) runs.
    pub fn validate(&self) -> Result<(), GslbError> {
        self.compile().map(|_| ())
    }

    pub(crate) fn compile(&self) -> Result<Compiled, GslbError> {
        if self.zones.is_empty() {
            return Err(GslbError::config("zones: at least one zone"));
        }
        if self.names.is_empty() {
            return Err(GslbError::config("names: at least one name"));
        }
        if self.max_answers == 0 || self.max_answers > MAX_ANSWERS {
            return Err(GslbError::config(format!(
                "max_answers {} out of 1..={MAX_ANSWERS}",
                self.max_answers
            )));
        }
        if self.ttl > MAX_TTL_SECS {
            return Err(GslbError::config(format!(
                "ttl {} s above {MAX_TTL_SECS} s",
                self.ttl
            )));
        }
        if self.refresh_ms < 10 {
            return Err(GslbError::config(format!(
                "refresh_ms {} below 10",
                self.refresh_ms
            )));
        }
        validate_trusted(&self.trusted_resolvers, self.client_subnet)?;
        for (cell, addrs) in &self.entry_addresses {
            if addrs.is_empty() {
                return Err(GslbError::config(format!(
                    "entry_addresses.{cell}: empty list"
                )));
            }
        }
        let mut zones = Vec::with_capacity(self.zones.len());
        for z in &self.zones {
            let name = fqdn(z)?;
            zones.push(Zone {
                lower: LowerName::new(&name),
                soa_mname: child("ns", &name)?,
                soa_rname: child("hostmaster", &name)?,
                name,
            });
        }
        let mut names = HashSet::with_capacity(self.names.len());
        for n in &self.names {
            let name = fqdn(n)?;
            let lower = LowerName::new(&name);
            if !zones.iter().any(|z| z.lower.zone_of(&lower)) {
                return Err(GslbError::InvalidName {
                    name: n.clone(),
                    reason: "not inside any configured zone".into(),
                });
            }
            names.insert(lower);
        }
        Ok(Compiled {
            zones,
            names,
            ttl: self.ttl,
            max_answers: self.max_answers,
            client_subnet: self.client_subnet,
            trusted_resolvers: self.trusted_resolvers.clone(),
            require_health: self.require_health,
            default_region: self.default_region.clone(),
            region_map: RegionMap::new(self.regions.clone()),
            entry_addresses: self.entry_addresses.clone(),
            refresh: Duration::from_millis(self.refresh_ms),
            health_rtt: self.health_rtt,
        })
    }
}

fn validate_trusted(nets: &[IpNet], client_subnet: bool) -> Result<(), GslbError> {
    if !client_subnet && !nets.is_empty() {
        return Err(GslbError::config(
            "trusted_resolvers: set while client_subnet is off (nothing would use them)",
        ));
    }
    for (i, net) in nets.iter().enumerate() {
        if net.prefix_len() == 0 {
            return Err(GslbError::config(format!(
                "trusted_resolvers[{i}]: {net} trusts every source; list the resolvers' networks"
            )));
        }
        if net.trunc() != *net {
            return Err(GslbError::config(format!(
                "trusted_resolvers[{i}]: {net} has host bits set (the network is {})",
                net.trunc()
            )));
        }
        if nets[..i].contains(net) {
            return Err(GslbError::config(format!(
                "trusted_resolvers[{i}]: {net} is listed twice"
            )));
        }
    }
    Ok(())
}

fn fqdn(s: &str) -> Result<Name, GslbError> {
    let bad = |reason: String| GslbError::InvalidName {
        name: s.to_owned(),
        reason,
    };
    if s.trim().is_empty() {
        return Err(bad("empty".into()));
    }
    let mut name = Name::from_ascii(s).map_err(|e| bad(e.to_string()))?;
    if name.is_root() {
        return Err(bad("the root zone is not served".into()));
    }
    name.set_fqdn(true);
    Ok(name)
}

fn child(label: &str, parent: &Name) -> Result<Name, GslbError> {
    Name::from_ascii(label)
        .and_then(|l| l.append_domain(parent))
        .map_err(|e| GslbError::InvalidName {
            name: format!("{label}.{parent}"),
            reason: e.to_string(),
        })
}

/// A configured zone with its SOA names.
#[derive(Debug, Clone)]
pub(crate) struct Zone {
    pub(crate) name: Name,
    pub(crate) lower: LowerName,
    pub(crate) soa_mname: Name,
    pub(crate) soa_rname: Name,
}

/// The validated config.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) zones: Vec<Zone>,
    pub(crate) names: HashSet<LowerName>,
    pub(crate) ttl: u32,
    pub(crate) max_answers: usize,
    pub(crate) client_subnet: bool,
    pub(crate) trusted_resolvers: Vec<IpNet>,
    pub(crate) require_health: bool,
    pub(crate) default_region: Option<CellId>,
    pub(crate) region_map: RegionMap,
    pub(crate) entry_addresses: BTreeMap<CellId, Vec<IpAddr>>,
    pub(crate) refresh: Duration,
    pub(crate) health_rtt: bool,
}

impl Compiled {
    /// Whether EDNS client-subnet from `src` is believed.
    pub(crate) fn trusts(&self, src: IpAddr) -> bool {
        let src = src.to_canonical();
        self.trusted_resolvers.iter().any(|n| n.contains(&src))
    }

    /// The configured zone `name` falls in (the longest one).
    pub(crate) fn zone_of(&self, name: &LowerName) -> Option<&Zone> {
        self.zones
            .iter()
            .filter(|z| z.lower.zone_of(name))
            .max_by_key(|z| z.lower.num_labels())
    }
}
