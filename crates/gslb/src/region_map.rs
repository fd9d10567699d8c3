//! [`RegionMap`]: client address -> region, by longest CIDR prefix.

use std::net::IpAddr;

use cellrouter::CellId;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One line of the region map: clients inside `cidr` belong to `region`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionRule {
    /// The client network (`10.1.0.0/16`, `2001:db8::/32`).
    pub cidr: IpNet,
    /// The region (a region name of the routing table).
    pub region: CellId,
}

impl RegionRule {
    /// Clients inside `cidr` belong to `region`.
    pub fn new(cidr: IpNet, region: CellId) -> Self {
        RegionRule { cidr, region }
    }
}

/// Client address -> region, longest prefix first.
///
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket
/// reports) are matched as IPv4.
///
/// ```
/// use gslb::{RegionMap, RegionRule};
/// use cellrouter::CellId;
/// let id = |s: &str| CellId::new(s).unwrap();
/// let map = RegionMap::new(vec![
///     RegionRule::new("10.0.0.0/8".parse().unwrap(), id("eu")),
///     RegionRule::new("10.9.0.0/16".parse().unwrap(), id("us")),
/// ]);
/// assert_eq!(map.lookup("10.9.1.1".parse().unwrap()).map(|(r, _)| r.as_str()), Some("us"));
/// assert_eq!(map.lookup("10.1.1.1".parse().unwrap()), Some((&id("eu"), 8)));
/// assert_eq!(map.lookup("192.0.2.1".parse().unwrap()), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RegionMap {
    /// Sorted by prefix length, longest first (ties keep the written order).
    rules: Vec<RegionRule>,
}

impl RegionMap {
    /// A map from rules (in any order; the longest matching prefix wins, and
    /// among equal prefixes the first written).
    pub fn new(rules: Vec<RegionRule>) -> Self {
        let mut rules: Vec<RegionRule> = rules
            .into_iter()
            .map(|r| RegionRule {
                cidr: r.cidr.trunc(),
                region: r.region,
            })
            .collect();
        rules.sort_by_key(|r| std::cmp::Reverse(r.cidr.prefix_len()));
        RegionMap { rules }
    }

    /// The region of `addr` and the prefix length of the rule that matched.
    pub fn lookup(&self, addr: IpAddr) -> Option<(&CellId, u8)> {
        let addr = addr.to_canonical();
        self.rules
            .iter()
            .find(|r| r.cidr.contains(&addr))
            .map(|r| (&r.region, r.cidr.prefix_len()))
    }

    /// The rules, longest prefix first.
    pub fn rules(&self) -> &[RegionRule] {
        &self.rules
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}
