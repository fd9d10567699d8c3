//! Unit tests: config validation, endpoint parsing, region-map laws.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::time::Duration;

use cellrouter::CellId;
use ipnet::IpNet;
use proptest::prelude::*;

use crate::plan::endpoint_ip;
use crate::{GslbConfig, GslbError, RegionMap, RegionRule};

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

#[test]
fn config_defaults_and_rejections() {
    let c = GslbConfig::new("example.test", ["api.example.test"]);
    assert_eq!(c.ttl, 5);
    assert_eq!(c.max_answers, 1);
    c.validate().unwrap();
    let bad = |c: GslbConfig| c.validate().unwrap_err();
    assert!(matches!(
        bad(c.clone().with_max_answers(0)),
        GslbError::InvalidConfig(_)
    ));
    assert!(matches!(
        bad(c.clone().with_max_answers(17)),
        GslbError::InvalidConfig(_)
    ));
    assert!(matches!(
        bad(c.clone().with_ttl(Duration::from_secs(86_401))),
        GslbError::InvalidConfig(_)
    ));
    assert!(matches!(
        bad(c.clone().with_refresh(Duration::from_millis(1))),
        GslbError::InvalidConfig(_)
    ));
    assert!(matches!(
        bad(GslbConfig::new("example.test", ["api.example.org"])),
        GslbError::InvalidName { .. }
    ));
    assert!(matches!(
        bad(GslbConfig::new("example.test", Vec::<String>::new())),
        GslbError::InvalidConfig(_)
    ));
    assert!(matches!(
        bad(GslbConfig::new("", ["api.example.test"])),
        GslbError::InvalidName { .. }
    ));
    assert!(matches!(
        bad(GslbConfig::new(".", ["api.example.test"])),
        GslbError::InvalidName { .. }
    ));
    assert!(matches!(
        bad(GslbConfig::new("exa mple..test", ["api.example.test"])),
        GslbError::InvalidName { .. }
    ));
    assert!(matches!(
        bad(c.clone().with_entry_addresses(id("a"), vec![])),
        GslbError::InvalidConfig(_)
    ));
    // A second zone makes a name in it valid.
    GslbConfig::new("example.test", ["api.example.org"])
        .with_zone("example.org")
        .validate()
        .unwrap();
}

#[test]
fn trusted_resolvers_are_validated() {
    let c = GslbConfig::new("example.test", ["api.example.test"]);
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    let bad = |c: GslbConfig| match c.validate() {
        Err(GslbError::InvalidConfig(msg)) => msg,
        other => panic!("expected a config error, got {other:?}"),
    };
    c.clone()
        .with_trusted_resolver(net("10.53.0.0/24"))
        .with_trusted_resolver(net("2001:db8::/32"))
        .with_trusted_resolver(net("192.0.2.53/32"))
        .validate()
        .unwrap();
    let msg = bad(c.clone().with_trusted_resolver(net("10.53.0.1/24")));
    assert!(
        msg.contains("host bits") && msg.contains("10.53.0.0/24"),
        "{msg}"
    );
    let msg = bad(c.clone().with_trusted_resolver(net("0.0.0.0/0")));
    assert!(msg.contains("every source"), "{msg}");
    assert!(bad(c.clone().with_trusted_resolver(net("::/0"))).contains("every source"));
    let msg = bad(c
        .clone()
        .with_trusted_resolver(net("10.53.0.0/24"))
        .with_trusted_resolver(net("10.53.0.0/24")));
    assert!(msg.contains("twice"), "{msg}");
    let msg = bad(c
        .clone()
        .with_client_subnet(false)
        .with_trusted_resolver(net("10.53.0.0/24")));
    assert!(msg.contains("client_subnet"), "{msg}");
    // From YAML: a list of CIDRs; a malformed one does not parse.
    let yaml = "zones: [example.test]\nnames: [api.example.test]\ntrusted_resolvers: [10.53.0.0/24, '2001:db8::/32']\n";
    let c: GslbConfig = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(
        c.trusted_resolvers,
        vec![net("10.53.0.0/24"), net("2001:db8::/32")]
    );
    c.validate().unwrap();
    let yaml =
        "zones: [example.test]\nnames: [api.example.test]\ntrusted_resolvers: [10.53.0.0/33]\n";
    assert!(serde_yaml::from_str::<GslbConfig>(yaml).is_err());
}

#[test]
fn trusted_resolvers_match_sources_by_network() {
    let c = GslbConfig::new("example.test", ["api.example.test"])
        .with_trusted_resolver("10.53.0.0/24".parse().unwrap())
        .with_trusted_resolver("2001:db8::/32".parse().unwrap())
        .compile()
        .unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(c.trusts(ip("10.53.0.9")));
    assert!(
        c.trusts(ip("::ffff:10.53.0.9")),
        "IPv4-mapped sources match as IPv4"
    );
    assert!(c.trusts(ip("2001:db8::53")));
    assert!(!c.trusts(ip("10.53.1.9")));
    assert!(!c.trusts(ip("127.0.0.1")));
    let none = GslbConfig::new("example.test", ["api.example.test"])
        .compile()
        .unwrap();
    assert!(
        !none.trusts(ip("127.0.0.1")),
        "nobody is trusted by default"
    );
}

#[test]
fn config_from_yaml() {
    let yaml = "zones: [example.test]\nnames: [api.example.test]\nttl: 10\nmax_answers: 2\n\
                regions:\n  - { cidr: 10.1.0.0/16, region: eu }\nentry_addresses:\n  eu-1: [192.0.2.10]\n";
    let c: GslbConfig = serde_yaml::from_str(yaml).unwrap();
    assert_eq!(c.ttl, 10);
    assert_eq!(c.max_answers, 2);
    assert!(c.client_subnet && c.health_rtt && !c.require_health);
    assert_eq!(
        c.regions,
        vec![RegionRule::new("10.1.0.0/16".parse().unwrap(), id("eu"))]
    );
    c.validate().unwrap();
    assert!(
        serde_yaml::from_str::<GslbConfig>("zones: [a.test]\nnames: [b.a.test]\nbogus: 1\n")
            .is_err()
    );
}

#[test]
fn endpoint_hosts() {
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert_eq!(endpoint_ip("http://10.0.0.1:8080"), ip("10.0.0.1"));
    assert_eq!(endpoint_ip("https://10.0.0.1"), ip("10.0.0.1"));
    assert_eq!(endpoint_ip("http://[2001:db8::1]:443/x"), ip("2001:db8::1"));
    assert_eq!(
        endpoint_ip("http://user@192.0.2.1:80/path?q"),
        ip("192.0.2.1")
    );
    assert_eq!(endpoint_ip("http://gw.example.test:8080"), None);
    assert_eq!(endpoint_ip("http://[nonsense]:80"), None);
    assert_eq!(endpoint_ip(""), None);
}

#[test]
fn mapped_ipv6_source_matches_ipv4_rules() {
    let m = RegionMap::new(vec![RegionRule::new(
        "10.0.0.0/8".parse().unwrap(),
        id("eu"),
    )]);
    assert_eq!(
        m.lookup("::ffff:10.1.2.3".parse().unwrap()),
        Some((&id("eu"), 8))
    );
    // Host bits in a rule are ignored.
    let m = RegionMap::new(vec![RegionRule::new(
        "10.1.2.3/16".parse().unwrap(),
        id("eu"),
    )]);
    assert_eq!(
        m.lookup("10.1.200.1".parse().unwrap()),
        Some((&id("eu"), 16))
    );
}

fn arb_v4_net() -> impl Strategy<Value = IpNet> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, p)| IpNet::new(IpAddr::V4(a.into()), p).unwrap().trunc())
}

proptest! {
    /// The matched rule contains the address and no longer rule does; no
    /// match means no rule contains it.
    #[test]
    fn longest_prefix_wins(nets in proptest::collection::vec(arb_v4_net(), 0..12), addr in any::<u32>()) {
        let rules: Vec<RegionRule> = nets.iter().enumerate().map(|(i, n)| RegionRule::new(*n, id(&format!("r{i}")))).collect();
        let map = RegionMap::new(rules.clone());
        let addr = IpAddr::V4(addr.into());
        let best = rules.iter().filter(|r| r.cidr.contains(&addr)).map(|r| r.cidr.prefix_len()).max();
        match map.lookup(addr) {
            Some((region, len)) => {
                prop_assert_eq!(Some(len), best);
                let rule = rules.iter().find(|r| &r.region == region).unwrap();
                prop_assert!(rule.cidr.contains(&addr));
                // Among equal prefixes, the first written wins.
                let first = rules.iter().find(|r| r.cidr.contains(&addr) && r.cidr.prefix_len() == len).unwrap();
                prop_assert_eq!(&first.region, region);
            }
            None => prop_assert!(best.is_none()),
        }
    }
}
