//! [`Responder`]: the authoritative answer logic, a hickory-server
//! [`RequestHandler`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use cellrouter::{CellId, CompiledTable, TableStore, WeightParams};
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
/// It reads the routing table from the same [`TableStore`] the `cellrouter`
/// layer routes with, and (optionally) the same [`HealthHub`] the prober
/// publishes to, live: a table update, a [`TableStore::set_cell_failed`] or a
/// health change is seen by the next query. Selection: the client's region (by
/// EDNS client-subnet or source address, through the [`RegionMap`](crate::RegionMap))
/// first, by smooth WRR over `cell.weight × (1 + 0.5 e^(−0.02 rtt))`
/// ([`cellrouter::SmoothWrr`], [`cellrouter::WeightParams`]); a region with no
/// healthy cell falls back to every cell. A cell that is not `active`, reported
/// failed, or unhealthy is never answered; none left is `SERVFAIL`.
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
    params: WeightParams,
    plan: ArcSwapOption<Plan>,
    rebuild: Mutex<()>,
    /// Last RTT average per cell (ms), kept across plan rebuilds.
    rtt: Mutex<HashMap<CellId, f64>>,
    health_version: AtomicU64,
    metrics: Metrics,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("zones", &self.inner.cfg.zones.iter().map(|z| z.name.to_string()).collect::<Vec<_>>())
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
    params: WeightParams,
    meter: Option<Meter>,
}

impl ResponderBuilder {
    /// Reads cell health from `hub` (the stream `health::CellProber` publishes).
    pub fn with_health(mut self, hub: HealthHub) -> Self {
        self.health = Some(hub);
        self
    }

    /// The WRR × RTT weight parameters (default: cellrouter's defaults, the same
    /// the router uses).
    pub fn with_weight_params(mut self, params: WeightParams) -> Self {
        self.params = params;
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
        let p = self.params;
        if !(p.a.is_finite() && p.b.is_finite() && p.floor.is_finite() && p.alpha > 0.0 && p.alpha <= 1.0) {
            return Err(GslbError::config(format!("weight params out of range: {p:?}")));
        }
        let meter = self.meter.unwrap_or_else(|| opentelemetry::global::meter("gslb"));
        let r = Responder {
            inner: Arc::new(Inner {
                cfg,
                store: self.store,
                health: self.health,
                params: p,
                plan: ArcSwapOption::empty(),
                rebuild: Mutex::new(()),
                rtt: Mutex::new(HashMap::new()),
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
        Decision { rcode, authoritative: false, answers: Vec::new(), soa: None, ecs: None }
    }
}

impl Responder {
    /// A builder for a responder serving `config` from the table in `store`.
    pub fn builder(config: GslbConfig, store: TableStore) -> ResponderBuilder {
        ResponderBuilder { config, store, health: None, params: WeightParams::default(), meter: None }
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

    /// Feeds an RTT sample of `cell` into its weight (an EWMA, as the router's
    /// [`cellrouter::SmoothWrr::observe_rtt`]); kept across table updates.
    /// Returns false when the cell is not in the table in force.
    pub fn observe_rtt(&self, cell: &CellId, rtt: Duration) -> bool {
        let Some(plan) = self.current_plan() else { return false };
        let Some(ci) = plan.cell_index(cell) else { return false };
        if let Some(avg) = plan.observe_rtt(ci, rtt) {
            self.inner.rtt.lock().unwrap_or_else(|p| p.into_inner()).insert(cell.clone(), avg);
        }
        true
    }

    /// The current effective A-record weight of `cell` (its base weight × the
    /// RTT factor; 0 while failed, drained or unhealthy as of the last refresh).
    pub fn weight(&self, cell: &CellId) -> Option<f64> {
        let plan = self.current_plan()?;
        let ci = plan.cell_index(cell)?;
        plan.weight(ci, Family::V4).or_else(|| plan.weight(ci, Family::V6))
    }

    /// Counts a packet dropped before it reached the responder (see [`Stats::malformed`]).
    pub(crate) fn dropped(&self, why: Malformed) {
        self.inner.metrics.malformed(why);
    }

    fn health_snapshot(&self) -> Option<Arc<HealthSnapshot>> {
        self.inner.health.as_ref().map(HealthHub::snapshot)
    }

    /// The plan for the table in force, rebuilt when the version changed.
    fn current_plan(&self) -> Option<Arc<Plan>> {
        let table = self.inner.store.current()?;
        Some(self.plan_for(&table))
    }

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
        let rtt = self.inner.rtt.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let plan = Arc::new(Plan::build(table, &self.inner.cfg, self.inner.params, &rtt));
        let health = self.health_snapshot();
        for (ci, c) in plan.cells.iter().enumerate() {
            plan.mark(ci, !eligible(table, health.as_deref(), self.inner.cfg.require_health, &c.id));
        }
        tracing::debug!(version = plan.version, cells = plan.cells.len(), "gslb plan rebuilt");
        self.inner.plan.store(Some(Arc::clone(&plan)));
        plan
    }

    /// Brings the weights up to date with the table, the failed overlay and the
    /// health stream (new RTTs are fed once per health snapshot). The background
    /// task of [`Server`](crate::Server) calls it on every change and every
    /// refresh period; the query path never waits for it (it checks the cells
    /// it answers live).
    pub fn refresh(&self) {
        let Some(table) = self.inner.store.current() else { return };
        let plan = self.plan_for(&table);
        let health = self.health_snapshot();
        let cfg = &self.inner.cfg;
        for (ci, c) in plan.cells.iter().enumerate() {
            plan.mark(ci, !eligible(&table, health.as_deref(), cfg.require_health, &c.id));
        }
        if let Some(h) = health.as_deref()
            && cfg.health_rtt
            && self.inner.health_version.swap(h.version(), Ordering::AcqRel) != h.version()
        {
            let mut rtts = self.inner.rtt.lock().unwrap_or_else(|p| p.into_inner());
            for (ci, c) in plan.cells.iter().enumerate() {
                if let Some(ms) = health_rtt_ms(h, &c.id)
                    && let Some(avg) = plan.observe_rtt(ci, Duration::from_secs_f64(ms / 1000.0))
                {
                    rtts.insert(c.id.clone(), avg);
                }
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
            let rcode = if *name == zone.lower { ResponseCode::NoError } else { ResponseCode::NXDomain };
            return Decision { rcode, authoritative: true, answers: Vec::new(), soa: Some(self.soa(zone, serial)), ecs: None };
        }
        let family = match query.query_type() {
            RecordType::A => Family::V4,
            RecordType::AAAA => Family::V6,
            _ => {
                return Decision { rcode: ResponseCode::NoError, authoritative: true, answers: Vec::new(), soa: Some(self.soa(zone, serial)), ecs: None };
            }
        };
        let Some(table) = table else {
            return Decision::code(ResponseCode::ServFail);
        };
        // Client address: EDNS client-subnet when present and allowed, else the source.
        let ecs = match request.edns().and_then(|e| e.option(EdnsCode::Subnet)) {
            Some(EdnsOption::Subnet(cs)) if cfg.client_subnet && cs.source_prefix() > 0 => Some(*cs),
            _ => None,
        };
        let client: IpAddr = ecs.as_ref().map_or(info.src.ip(), ClientSubnet::addr);
        let plan = self.plan_for(&table);
        let (group, scope) = match cfg.region_map.lookup_index(client) {
            Some((rule, prefix)) => (plan.rule_group.get(rule).copied().flatten(), prefix),
            None => (plan.default_group, 0),
        };
        let ecs = ecs.map(|cs| ClientSubnet::new(cs.addr(), cs.source_prefix(), scope));
        let health = self.health_snapshot();
        let chosen = self.select(&plan, &table, health.as_deref(), family, group);
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
                        answers.push(Record::from_rdata(owner.clone(), cfg.ttl, RData::AAAA(AAAA(*a))));
                    }
                }
            }
        }
        Decision { rcode: ResponseCode::NoError, authoritative: true, answers, soa: None, ecs }
    }

    /// The cells to answer, best first: a WRR pick in the client's group (else
    /// among all cells), then the next best eligible cells until enough addresses.
    fn select(&self, plan: &Plan, table: &CompiledTable, health: Option<&HealthSnapshot>, f: Family, group: Option<usize>) -> Vec<usize> {
        let cfg = &self.inner.cfg;
        let all = plan.all_group();
        let groups = &plan.groups[f as usize];
        let mut out: Vec<usize> = Vec::with_capacity(cfg.max_answers.min(4));
        let mut addrs = 0usize;
        let ok = |ci: usize| eligible(table, health, cfg.require_health, &plan.cells[ci].id);
        for g in [group, Some(all)].into_iter().flatten() {
            let Some(group) = groups.get(g) else { continue };
            if out.is_empty() {
                for _ in 0..group.members.len() {
                    let Some(ci) = group.wrr.pick() else { break };
                    let ci = ci as usize;
                    if ok(ci) {
                        out.push(ci);
                        addrs += plan.cells[ci].count(f);
                        break;
                    }
                    // The background refresh has not seen it yet: stop picking it now.
                    plan.mark(ci, true);
                }
            }
            for &ci in &group.members {
                if addrs >= cfg.max_answers {
                    return out;
                }
                let ci = ci as usize;
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
        let soa = SOA::new(zone.soa_mname.clone(), zone.soa_rname.clone(), serial, 3600, 600, 86_400, ttl);
        Record::from_rdata(zone.name.clone(), ttl, RData::SOA(soa))
    }
}

#[async_trait::async_trait]
impl RequestHandler for Responder {
    async fn handle_request<R: ResponseHandler>(&self, request: &Request, mut response_handle: R) -> ResponseInfo {
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
        let response = builder.build(header, d.answers.iter(), std::iter::empty(), d.soa.iter(), std::iter::empty());
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
    pub(crate) fn parse(&self, bytes: &[u8], src: std::net::SocketAddr, protocol: hickory_proto::xfer::Protocol) -> Option<Request> {
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
