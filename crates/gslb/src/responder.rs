//! [`Responder`]: the authoritative answer logic, a hickory-server
//! [`RequestHandler`].

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use cellrouter::{Balancer, CellId, CompiledTable, TableStore};
use health::{HealthHub, HealthSnapshot};
use hickory_proto::op::{Edns, Header, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, SOA};
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType};
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use opentelemetry::metrics::Meter;

use crate::config::{Compiled, GslbConfig, Zone};
use crate::error::GslbError;
use crate::metrics::{Malformed, Metrics, Refusal, Stats};
use crate::plan::{Family, Plan, eligible, health_rtt_ms};

/// Largest UDP payload we advertise in EDNS answers (the DNS flag day value).
const EDNS_PAYLOAD: u16 = 1232;

/// The authoritative GSLB responder: answers the configured names with the
/// entry addresses of the best healthy cells.
///
/// One source of truth with the router: it reads the routing table from the
/// same [`TableStore`] the `cellrouter` layer routes with, picks cells with the
/// same [`Balancer`] (share the layer's through
/// [`ResponderBuilder::with_balancer`] and
/// `CellRouterLayer::with_balancer`: one smooth-WRR state and one RTT average
/// per cell, `cell.weight × (1 + 0.5 e^(−0.02 rtt_ms))`), and reads cell health
/// from the [`HealthHub`] the prober publishes to. All live: a table update, a
/// [`TableStore::set_cell_failed`] or a health change is seen by the next query.
///
/// Selection: the client's region (by EDNS client-subnet when a trusted
/// resolver sends it, see [`GslbConfig::trusted_resolvers`], else by source
/// address, through the [`RegionMap`](crate::RegionMap)) first; a region with no
/// healthy cell falls back to every cell. A cell that is not `active`, is
/// reported failed, or is unhealthy is never answered; none left is `SERVFAIL`.
///
/// It implements hickory-server's [`RequestHandler`], so it can be registered on
/// any `ServerFuture`; [`Server`](crate::Server) runs it on UDP and TCP with
/// dropped-packet accounting and its background sync. Cheap to clone.
#[derive(Clone)]
pub struct Responder {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Compiled,
    store: TableStore,
    health: Option<HealthHub>,
    balancer: Arc<Balancer>,
    plan: ArcSwapOption<Plan>,
    rebuild: Mutex<()>,
    health_version: AtomicU64,
    metrics: Metrics,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field(
                "zones",
                &self
                    .inner
                    .cfg
                    .zones
                    .iter()
                    .map(|z| z.name.to_string())
                    .collect::<Vec<_>>(),
            )
            .field("names", &self.inner.cfg.names.len())
            .field("table_version", &self.inner.store.version())
            .field("health", &self.inner.health.is_some())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Builds a [`Responder`]: [`Responder::builder`].
#[derive(Debug)]
pub struct ResponderBuilder {
    config: GslbConfig,
    store: TableStore,
    health: Option<HealthHub>,
    balancer: Option<Arc<Balancer>>,
    meter: Option<Meter>,
}

impl ResponderBuilder {
    /// Reads cell health from `hub` (the stream `health::CellProber` publishes).
    pub fn with_health(mut self, hub: HealthHub) -> Self {
        self.health = Some(hub);
        self
    }

    /// Picks cells with `balancer`: pass the one the routing layer uses
    /// (`CellRouterLayer::balancer()`, or the one given to
    /// `CellRouterLayer::with_balancer`) so that DNS and unkeyed HTTP traffic
    /// share one weighted round robin and one RTT average per cell. Default: a
    /// private `Balancer::new()` (the same formula and defaults).
    pub fn with_balancer(mut self, balancer: Arc<Balancer>) -> Self {
        self.balancer = Some(balancer);
        self
    }

    /// Records metrics on `meter` (default: the global meter `gslb`).
    pub fn with_meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Validates the config and builds the responder.
    pub fn build(self) -> Result<Responder, GslbError> {
        let cfg = self.config.compile()?;
        let meter = self
            .meter
            .unwrap_or_else(|| opentelemetry::global::meter("gslb"));
        let r = Responder {
            inner: Arc::new(Inner {
                cfg,
                store: self.store,
                health: self.health,
                balancer: self.balancer.unwrap_or_else(|| Arc::new(Balancer::new())),
                plan: ArcSwapOption::empty(),
                rebuild: Mutex::new(()),
                health_version: AtomicU64::new(u64::MAX),
                metrics: Metrics::new(&meter),
            }),
        };
        r.refresh();
        Ok(r)
    }
}

/// What to send back for one request.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) rcode: ResponseCode,
    pub(crate) authoritative: bool,
    pub(crate) answers: Vec<Record>,
    pub(crate) soa: Option<Record>,
    pub(crate) ecs: Option<ClientSubnet>,
}

impl Decision {
    fn code(rcode: ResponseCode) -> Self {
        Decision {
            rcode,
            authoritative: false,
            answers: Vec::new(),
            soa: None,
            ecs: None,
        }
    }
}

impl Responder {
    /// A builder for a responder serving `config` from the table in `store`.
    pub fn builder(config: GslbConfig, store: TableStore) -> ResponderBuilder {
        ResponderBuilder {
            config,
            store,
            health: None,
            balancer: None,
            meter: None,
        }
    }

    /// The table store read on every query.
    pub fn store(&self) -> &TableStore {
        &self.inner.store
    }

    /// The TTL of answers.
    pub fn ttl(&self) -> Duration {
        Duration::from_secs(u64::from(self.inner.cfg.ttl))
    }

    /// Counters since the responder was built.
    pub fn stats(&self) -> Stats {
        self.inner.metrics.stats()
    }

    /// The resync period of the background task.
    pub fn refresh_interval(&self) -> Duration {
        self.inner.cfg.refresh
    }

    /// The balancer cells are picked with.
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.inner.balancer
    }

    /// Feeds an RTT sample of `cell` into its weight (the balancer's EWMA, as
    /// the routing layer does for every forwarded response).
    pub fn observe_rtt(&self, cell: &CellId, rtt: Duration) {
        self.inner.balancer.observe_cell_rtt(cell, rtt);
    }

    /// The current weight of `cell` within its region (capacity weight × RTT
    /// factor; 0 while drained or reported failed), `None` before the first
    /// answer for that region.
    pub fn weight(&self, cell: &CellId) -> Option<f64> {
        let table = self.inner.store.current()?;
        let region = &table.cell(cell)?.region;
        self.inner.balancer.cell_weight(Some(region), cell)
    }

    /// Counts a packet dropped before it reached the responder (see [`Stats::malformed`]).
    pub(crate) fn dropped(&self, why: Malformed) {
        self.inner.metrics.malformed(why);
    }

    fn health_snapshot(&self) -> Option<Arc<HealthSnapshot>> {
        self.inner.health.as_ref().map(HealthHub::snapshot)
    }

    /// The plan for `table`, rebuilt when the version changed.
    fn plan_for(&self, table: &Arc<CompiledTable>) -> Arc<Plan> {
        if let Some(p) = self.inner.plan.load_full()
            && p.version == table.version()
        {
            return p;
        }
        let _g = self.inner.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = self.inner.plan.load_full()
            && p.version == table.version()
        {
            return p;
        }
        let plan = Arc::new(Plan::build(table, &self.inner.cfg));
        tracing::debug!(
            version = plan.version,
            cells = plan.cells.len(),
            "gslb plan rebuilt"
        );
        self.inner.plan.store(Some(Arc::clone(&plan)));
        plan
    }

    /// Rebuilds the address plan when the table version changed and feeds the
    /// health stream's RTTs (lowest probe p50 per cell, once per snapshot, when
    /// [`GslbConfig::health_rtt`] is on) into the balancer. The background task
    /// of [`Server`](crate::Server) calls it on every change and every refresh
    /// period; the query path never waits for it (it checks health and the
    /// table live).
    pub fn refresh(&self) {
        let Some(table) = self.inner.store.current() else {
            return;
        };
        let plan = self.plan_for(&table);
        if !self.inner.cfg.health_rtt {
            return;
        }
        let Some(h) = self.health_snapshot() else {
            return;
        };
        if self
            .inner
            .health_version
            .swap(h.version(), Ordering::AcqRel)
            == h.version()
        {
            return;
        }
        for c in &plan.cells {
            if let Some(ms) = health_rtt_ms(&h, &c.id) {
                self.inner
                    .balancer
                    .observe_cell_rtt(&c.id, Duration::from_secs_f64(ms / 1000.0));
            }
        }
    }

    /// Runs [`refresh`](Self::refresh) on every table update, every health
    /// change and every refresh period, until the returned task is aborted (or
    /// the table store and health hub are gone).
    pub fn spawn_sync(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tables = this.inner.store.subscribe();
            let mut health = this.inner.health.as_ref().map(HealthHub::subscribe);
            let mut tick = tokio::time::interval(this.inner.cfg.refresh);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    r = tables.changed() => if r.is_err() { break },
                    r = async { match health.as_mut() { Some(h) => h.changed().await, None => std::future::pending().await } } => {
                        if r.is_err() { health = None; }
                    }
                    _ = tick.tick() => {}
                }
                this.refresh();
            }
        })
    }

    /// Decides the answer to one request (no I/O).
    pub(crate) fn decide(&self, request: &Request) -> Decision {
        let m = &self.inner.metrics;
        let cfg = &self.inner.cfg;
        if request.op_code() != OpCode::Query {
            return Decision::code(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            return Decision::code(ResponseCode::FormErr);
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN {
            m.refusal(Refusal::Class);
            return Decision::code(ResponseCode::Refused);
        }
        let name: &LowerName = query.name();
        let Some(zone) = cfg.zone_of(name) else {
            m.refusal(Refusal::OutsideZone);
            return Decision::code(ResponseCode::Refused);
        };
        let table = self.inner.store.current();
        let serial = table.as_ref().map_or(0, |t| t.version() as u32);
        if !cfg.names.contains(name) {
            if *name == zone.lower && query.query_type() == RecordType::SOA {
                let mut d = Decision::code(ResponseCode::NoError);
                d.authoritative = true;
                d.answers.push(self.soa(zone, serial));
                return d;
            }
            let rcode = if *name == zone.lower {
                ResponseCode::NoError
            } else {
                ResponseCode::NXDomain
            };
            return Decision {
                rcode,
                authoritative: true,
                answers: Vec::new(),
                soa: Some(self.soa(zone, serial)),
                ecs: None,
            };
        }
        let family = match query.query_type() {
            RecordType::A => Family::V4,
            RecordType::AAAA => Family::V6,
            _ => {
                return Decision {
                    rcode: ResponseCode::NoError,
                    authoritative: true,
                    answers: Vec::new(),
                    soa: Some(self.soa(zone, serial)),
                    ecs: None,
                };
            }
        };
        let Some(table) = table else {
            return Decision::code(ResponseCode::ServFail);
        };
        // Client address: EDNS client-subnet when present, allowed and sent by
        // a trusted resolver, else the source.
        let (ecs, untrusted) = match request.edns().and_then(|e| e.option(EdnsCode::Subnet)) {
            Some(EdnsOption::Subnet(cs)) if cfg.client_subnet && cs.source_prefix() > 0 => {
                if cfg.trusts(info.src.ip()) {
                    (Some(*cs), None)
                } else {
                    m.ecs_untrusted();
                    (None, Some(*cs))
                }
            }
            _ => (None, None),
        };
        let client: IpAddr = ecs.as_ref().map_or(info.src.ip(), ClientSubnet::addr);
        let plan = self.plan_for(&table);
        let (region, scope) = match cfg.region_map.lookup(client) {
            Some((region, prefix)) => (Some(region), prefix),
            None => (cfg.default_region.as_ref(), 0),
        };
        let region = region.filter(|r| plan.has_region(r));
        // An ignored option is echoed with scope 0: the answer holds for any
        // client subnet of that resolver (RFC 7871 section 7.2.1).
        let ecs = match (ecs, untrusted) {
            (Some(cs), _) => Some(ClientSubnet::new(cs.addr(), cs.source_prefix(), scope)),
            (None, Some(cs)) => Some(ClientSubnet::new(cs.addr(), cs.source_prefix(), 0)),
            (None, None) => None,
        };
        let health = self.health_snapshot();
        let chosen = self.select(&plan, &table, health.as_deref(), family, region);
        if chosen.is_empty() {
            tracing::warn!(%client, "no healthy cell to answer");
            let mut d = Decision::code(ResponseCode::ServFail);
            d.ecs = ecs;
            return d;
        }
        let owner = query.original().name().clone();
        let mut answers = Vec::with_capacity(cfg.max_answers);
        'cells: for &ci in &chosen {
            let cell = &plan.cells[ci];
            m.answers.add(1, &cell.attrs);
            match family {
                Family::V4 => {
                    for a in &cell.v4 {
                        if answers.len() == cfg.max_answers {
                            break 'cells;
                        }
                        answers.push(Record::from_rdata(owner.clone(), cfg.ttl, RData::A(A(*a))));
                    }
                }
                Family::V6 => {
                    for a in &cell.v6 {
                        if answers.len() == cfg.max_answers {
                            break 'cells;
                        }
                        answers.push(Record::from_rdata(
                            owner.clone(),
                            cfg.ttl,
                            RData::AAAA(AAAA(*a)),
                        ));
                    }
                }
            }
        }
        Decision {
            rcode: ResponseCode::NoError,
            authoritative: true,
            answers,
            soa: None,
            ecs,
        }
    }

    /// The cells to answer, best first: the balancer's pick in the client's
    /// region (else among all cells), then the next heaviest eligible cells
    /// until enough addresses.
    fn select(
        &self,
        plan: &Plan,
        table: &CompiledTable,
        health: Option<&HealthSnapshot>,
        f: Family,
        region: Option<&CellId>,
    ) -> Vec<usize> {
        let cfg = &self.inner.cfg;
        let mut out: Vec<usize> = Vec::with_capacity(cfg.max_answers.min(4));
        let mut addrs = 0usize;
        let ok = |ci: usize| {
            plan.cells[ci].count(f) > 0
                && eligible(table, health, cfg.require_health, &plan.cells[ci].id)
        };
        let scopes: [Option<Option<&CellId>>; 2] = [region.map(Some), Some(None)];
        for scope in scopes.into_iter().flatten() {
            let members = plan.members(scope);
            if out.is_empty() {
                // The balancer skips drained and failed cells itself; a pick that
                // is unhealthy or has no address of this family is skipped here.
                for _ in 0..=members.len() {
                    let Some(id) = self.inner.balancer.pick_cell(table, scope) else {
                        break;
                    };
                    if let Some(ci) = plan.cell_index(&id)
                        && ok(ci)
                    {
                        out.push(ci);
                        addrs += plan.cells[ci].count(f);
                        break;
                    }
                }
            }
            for &ci in members {
                if addrs >= cfg.max_answers {
                    return out;
                }
                if !out.contains(&ci) && ok(ci) {
                    out.push(ci);
                    addrs += plan.cells[ci].count(f);
                }
            }
            if addrs >= cfg.max_answers {
                break;
            }
        }
        out
    }

    fn soa(&self, zone: &Zone, serial: u32) -> Record {
        let ttl = self.inner.cfg.ttl;
        let soa = SOA::new(
            zone.soa_mname.clone(),
            zone.soa_rname.clone(),
            serial,
            3600,
            600,
            86_400,
            ttl,
        );
        Record::from_rdata(zone.name.clone(), ttl, RData::SOA(soa))
    }
}

#[async_trait::async_trait]
impl RequestHandler for Responder {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let d = self.decide(request);
        self.inner.metrics.response(d.rcode, d.answers.len());
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(d.authoritative);
        header.set_recursion_available(false);
        header.set_response_code(d.rcode);
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if request.edns().is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            if let Some(cs) = d.ecs {
                edns.options_mut().insert(EdnsOption::Subnet(cs));
            }
            builder.edns(edns);
        }
        let response = builder.build(
            header,
            d.answers.iter(),
            std::iter::empty(),
            d.soa.iter(),
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, src = %request.src(), "failed to send a DNS response");
                let mut h = Header::response_from_request(request.header());
                h.set_response_code(ResponseCode::ServFail);
                h.into()
            }
        }
    }
}

impl Responder {
    /// Handles raw bytes (UDP): `None` when the packet is dropped (and counted).
    pub(crate) fn parse(
        &self,
        bytes: &[u8],
        src: std::net::SocketAddr,
        protocol: hickory_proto::xfer::Protocol,
    ) -> Option<Request> {
        use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
        use hickory_server::authority::MessageRequest;
        if bytes.len() < 12 {
            self.dropped(Malformed::Header);
            return None;
        }
        let mut decoder = BinDecoder::new(bytes);
        match MessageRequest::read(&mut decoder) {
            Ok(m) if m.message_type() == hickory_proto::op::MessageType::Response => {
                self.dropped(Malformed::Response);
                None
            }
            Ok(m) => Some(Request::new(m, src, protocol)),
            Err(_) => {
                self.dropped(Malformed::Body);
                None
            }
        }
    }
}
