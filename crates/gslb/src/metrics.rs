//! Instruments (OpenTelemetry API, meter `gslb`) and plain counters.

use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::ResponseCode;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};

/// Why a packet was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// Shorter than a DNS header.
    Header,
    /// The header parsed, the rest did not.
    Body,
    /// A response (QR=1) sent to us: never answered (reflection).
    Response,
}

impl Malformed {
    fn idx(self) -> usize {
        match self {
            Malformed::Header => 0,
            Malformed::Body => 1,
            Malformed::Response => 2,
        }
    }
}

/// Why a query was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The name is outside every configured zone.
    OutsideZone,
    /// A class other than IN.
    Class,
}

pub(crate) struct Metrics {
    responses: Counter<u64>,
    pub(crate) answers: Counter<u64>,
    refusals: Counter<u64>,
    malformed: Counter<u64>,
    ecs_untrusted: Counter<u64>,
    rcode_attrs: [[KeyValue; 1]; 7],
    refusal_attrs: [[KeyValue; 1]; 2],
    malformed_attrs: [[KeyValue; 1]; 3],
    counts: Counts,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("stats", &self.stats())
            .finish()
    }
}

#[derive(Default)]
struct Counts {
    noerror: AtomicU64,
    nodata: AtomicU64,
    nxdomain: AtomicU64,
    refused: AtomicU64,
    servfail: AtomicU64,
    notimp: AtomicU64,
    formerr: AtomicU64,
    malformed: AtomicU64,
    ecs_untrusted: AtomicU64,
}

/// Counters since the responder was built (the same events as the metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Answers carrying at least one address.
    pub answered: u64,
    /// `NOERROR` without an address (a served name, another record type).
    pub nodata: u64,
    /// `NXDOMAIN` (inside our zones, not a served name).
    pub nxdomain: u64,
    /// `REFUSED` (outside our zones, or not class IN).
    pub refused: u64,
    /// `SERVFAIL` (no healthy cell, or no table yet).
    pub servfail: u64,
    /// `NOTIMP` (an opcode other than QUERY).
    pub notimp: u64,
    /// `FORMERR` (a parseable message without exactly one question).
    pub formerr: u64,
    /// Packets dropped unanswered: unparseable, or a response sent to us.
    pub malformed: u64,
    /// Queries whose EDNS client-subnet was ignored because their source is
    /// not a trusted resolver ([`GslbConfig::trusted_resolvers`](crate::GslbConfig::trusted_resolvers)).
    pub ecs_untrusted: u64,
}

fn rcode_idx(r: ResponseCode) -> usize {
    match r {
        ResponseCode::NoError => 0,
        ResponseCode::NXDomain => 1,
        ResponseCode::Refused => 2,
        ResponseCode::ServFail => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::FormErr => 5,
        _ => 6,
    }
}

impl Metrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        let kv = |k: &'static str, v: &'static str| [KeyValue::new(k, v)];
        Metrics {
            responses: meter
                .u64_counter("gslb.responses")
                .with_description("DNS responses sent, by response code")
                .build(),
            answers: meter
                .u64_counter("gslb.answers")
                .with_description("Cells answered, by cell and the cell's region")
                .build(),
            refusals: meter
                .u64_counter("gslb.refusals")
                .with_description("Queries refused, by reason")
                .build(),
            malformed: meter
                .u64_counter("gslb.malformed")
                .with_description("Packets dropped unanswered, by reason")
                .build(),
            ecs_untrusted: meter
                .u64_counter("gslb.client_subnet.untrusted")
                .with_description(
                    "EDNS client-subnet options ignored: the source is not a trusted resolver",
                )
                .build(),
            rcode_attrs: [
                kv("rcode", "noerror"),
                kv("rcode", "nxdomain"),
                kv("rcode", "refused"),
                kv("rcode", "servfail"),
                kv("rcode", "notimp"),
                kv("rcode", "formerr"),
                kv("rcode", "other"),
            ],
            refusal_attrs: [kv("reason", "outside_zone"), kv("reason", "class")],
            malformed_attrs: [
                kv("reason", "header"),
                kv("reason", "body"),
                kv("reason", "response"),
            ],
            counts: Counts::default(),
        }
    }

    pub(crate) fn response(&self, rcode: ResponseCode, addresses: usize) {
        self.responses.add(1, &self.rcode_attrs[rcode_idx(rcode)]);
        let c = &self.counts;
        let counter = match rcode {
            ResponseCode::NoError if addresses > 0 => &c.noerror,
            ResponseCode::NoError => &c.nodata,
            ResponseCode::NXDomain => &c.nxdomain,
            ResponseCode::Refused => &c.refused,
            ResponseCode::ServFail => &c.servfail,
            ResponseCode::NotImp => &c.notimp,
            ResponseCode::FormErr => &c.formerr,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refusal(&self, why: Refusal) {
        let i = match why {
            Refusal::OutsideZone => 0,
            Refusal::Class => 1,
        };
        self.refusals.add(1, &self.refusal_attrs[i]);
    }

    pub(crate) fn malformed(&self, why: Malformed) {
        self.malformed.add(1, &self.malformed_attrs[why.idx()]);
        self.counts.malformed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn ecs_untrusted(&self) {
        self.ecs_untrusted.add(1, &[]);
        self.counts.ecs_untrusted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = &self.counts;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            answered: l(&c.noerror),
            nodata: l(&c.nodata),
            nxdomain: l(&c.nxdomain),
            refused: l(&c.refused),
            servfail: l(&c.servfail),
            notimp: l(&c.notimp),
            formerr: l(&c.formerr),
            malformed: l(&c.malformed),
            ecs_untrusted: l(&c.ecs_untrusted),
        }
    }
}
