//! GSLB: an authoritative DNS responder that answers each query with the entry
//! address of the best healthy cell, from the same routing table, weights and
//! health the `cellrouter` and `health` crates compute.
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddr};
//! use cellrouter::{Cell, CellId, RoutingTable, TableStore};
//! use gslb::{GslbConfig, RegionRule, Responder, Server};
//! use hickory_proto::op::{Message, Query};
//! use hickory_proto::rr::{Name, RData, RecordType};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let id = |s: &str| CellId::new(s).unwrap();
//! // The table the router uses (usually fed by a cellrouter source: file, etcd).
//! let store = TableStore::with_table(RoutingTable::uniform(
//!     id("eu"),
//!     vec![Cell::new(id("eu-1"), id("eu"), "http://192.0.2.1:8080"), Cell::new(id("eu-2"), id("eu"), "http://192.0.2.2:8080")],
//!     128,
//! ))?;
//! let config = GslbConfig::new("example.test", ["api.example.test"])
//!     .with_region(RegionRule::new("127.0.0.0/8".parse()?, id("eu")));
//! let responder = Responder::builder(config, store.clone())
//!     // .with_health(hub): the prober's health stream
//!     // .with_balancer(router_layer.balancer().clone()): the router's WRR × RTT state
//!     .build()?;
//! let server = Server::new(responder)
//!     .with_udp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
//!     .with_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
//!     .start()
//!     .await?;
//!
//! // eu-1 is reported down: no answer names it any more.
//! store.set_cell_failed(&id("eu-1"), true);
//! let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! let mut query = Message::new();
//! query.set_id(7).add_query(Query::query(Name::from_ascii("api.example.test.")?, RecordType::A));
//! for _ in 0..4 {
//!     client.send_to(&query.to_vec()?, server.udp_addrs()[0]).await?;
//!     let mut buf = [0u8; 512];
//!     let n = client.recv(&mut buf).await?;
//!     let answer = Message::from_vec(&buf[..n])?;
//!     assert_eq!(answer.answers()[0].data(), &RData::A(Ipv4Addr::new(192, 0, 2, 2).into()));
//!     assert_eq!(answer.answers()[0].ttl(), 5);
//! }
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Where it goes
//!
//! In front of everything: it is the first hop of geo active-active, answering
//! the service name (`api.example.test`) before any HTTP is spoken. Run it in
//! each region's edge (or anywhere with the routing table and the health
//! stream), delegate the zone to it, and keep the TTL short (default 5 s) so
//! clients follow health changes. The `cellrouter` layer then still routes each
//! keyed request to its home cell: DNS only picks a good front door.
//!
//! # Why a library crate
//!
//! The responder is a reusable type, not a binary: it must share the
//! [`cellrouter::TableStore`] and [`health::HealthHub`] *instances* of the
//! process that feeds them (etcd watch, prober), which a separate binary could
//! only do by duplicating that plumbing, and [`Responder`] implements
//! hickory-server's `RequestHandler`, so it can be mounted on any
//! `ServerFuture` (with TLS/DoH listeners, or beside other authorities) as well
//! as run by the ready-made [`Server`].
//!
//! # Answers
//!
//! - Configured names ([`GslbConfig::names`]): `A`/`AAAA` with the entry
//!   addresses of the chosen cells (the IP hosts of the cells' endpoints, or
//!   [`GslbConfig::entry_addresses`]), TTL [`GslbConfig::ttl`], up to
//!   [`GslbConfig::max_answers`] addresses; other types `NOERROR` with no data
//!   and the zone's SOA.
//! - Choice: the client's region (EDNS client-subnet when present and sent by
//!   a resolver inside [`GslbConfig::trusted_resolvers`], else the source
//!   address, mapped by [`RegionMap`]; the echo carries the matched prefix as
//!   scope, or scope 0 when the option was ignored), the cell picked by the router's [`cellrouter::Balancer`]
//!   (smooth weighted round robin over `cell.weight × (1 + 0.5 e^(−0.02 rtt_ms))`;
//!   share the routing layer's with [`ResponderBuilder::with_balancer`] so DNS
//!   and unkeyed HTTP use one state and one RTT average per cell, fed by
//!   forwarded responses, the health stream's probe p50 and
//!   [`Responder::observe_rtt`]); more addresses from the next heaviest cells
//!   of that region, then of others; a region without a healthy cell falls
//!   back to all cells. The health stream's RTTs are fed into the balancer when
//!   [`GslbConfig::health_rtt`] is on (default); turn it off to weigh a shared
//!   balancer by the router's forwarded-response RTTs alone.
//! - Never answered: a cell that is not `active` in the table (draining, down),
//!   one marked failed in the store ([`cellrouter::TableStore::set_cell_failed`])
//!   or unhealthy in the health snapshot. Checked live on each answer; no cell
//!   left is `SERVFAIL`.
//! - Other names inside a zone `NXDOMAIN` (SOA in authority), the zone apex
//!   answers `SOA`; names outside every zone and classes other than `IN` are
//!   `REFUSED`; opcodes other than `QUERY` `NOTIMP`; a message without exactly
//!   one question `FORMERR`.
//! - UDP packets that do not parse and responses sent to us are dropped and
//!   counted, never answered.
//!
//! # Metrics (OpenTelemetry API, meter `gslb`)
//!
//! | name | kind | attributes |
//! |---|---|---|
//! | `gslb.responses` | counter | `rcode` = `noerror` \| `nxdomain` \| `refused` \| `servfail` \| `notimp` \| `formerr` \| `other` |
//! | `gslb.answers` | counter (one per cell answered) | `cell`, `region` (the cell's) |
//! | `gslb.refusals` | counter | `reason` = `outside_zone` \| `class` |
//! | `gslb.malformed` | counter (UDP packets dropped) | `reason` = `header` \| `body` \| `response` |
//! | `gslb.client_subnet.untrusted` | counter (EDNS client-subnet ignored: source not a trusted resolver) | none |
//!
//! The same counts are available without a meter from [`Responder::stats`].

mod config;
mod error;
mod metrics;
mod plan;
mod region_map;
mod responder;
mod server;

pub use config::{DEFAULT_TTL_SECS, GslbConfig, MAX_ANSWERS, MAX_TTL_SECS};
pub use error::GslbError;
pub use metrics::Stats;
pub use region_map::{RegionMap, RegionRule};
pub use responder::{Responder, ResponderBuilder};
pub use server::{RunningServer, Server};

#[cfg(test)]
mod tests;
