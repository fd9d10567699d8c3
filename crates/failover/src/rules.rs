//! Routing rules in CEL (the expression language of Envoy and Kubernetes),
//! through the `cel-interpreter` crate.
//!
//! A rule set (YAML or JSON) is an ordered list of rules; the first rule whose
//! `when` holds gives the action:
//!
//! ```yaml
//! rules:
//!   - name: canary-header
//!     when: 'request.headers["x-canary"] == "1"'
//!     action: { route_version: v2 }
//!   - name: gray-10-percent-eu
//!     when: 'ctx.user_pct < 10.0 && ctx.region == "eu"'
//!     action: { route_cell: eu-2 }
//!   - name: sick-cell
//!     when: 'health["eu-1"].score < 40'
//!     action: { drain: eu-1 }
//!   - name: half-weight
//!     when: 'request.method == "POST" && request.path.startsWith("/orders")'
//!     action: { weight: { cell: eu-1, weight: 50 } }
//!   - name: no-failback-at-peak
//!     when: 'now.hour >= 18 && now.hour < 22'
//!     action: { block_failback: eu-1 }
//!   - name: hold-eu-2-while-eu-1-is-out
//!     when: '!health["eu-1"].healthy'
//!     action: { hold_drain: eu-2 }
//!   - name: canary-10-percent
//!     action: { cohort: { region: eu, percent: 10, to: eu-canary } }
//! ```
//!
//! Two kinds of actions:
//! - per request (`route_cell`, `route_version`, `weight`): the first rule
//!   that holds for a request ([`RuleEngine::evaluate`]); users matching an
//!   expression (`ctx.user_pct < 10.0`, a header) go to a cell this way
//!   (request paths skip the control actions they get);
//! - control (`drain`, `hold_drain`, `block_failback`, `cohort`): every rule
//!   that holds now, without a request ([`RuleEngine::evaluate_control`]);
//!   the [`Controller`](crate::Controller) (`with_rules`) turns them into
//!   audited routing-table switches: a forced drain, a drain the engine asked
//!   for held back, a failback step held while a window lasts, a share of a
//!   region's slots moved to a canary cell ([`Change::Cohort`](crate::Change::Cohort)).
//!
//! Variables:
//! - `request`: `method`, `path`, `headers` (lower-case names; the first value
//!   of each header);
//! - `ctx`: `region`, `tenant`, `user`, `cell` (strings, `""` when unknown) and
//!   `user_pct`, the user's bucket in `[0, 100)` (`xxh3(user) % 10000 / 100`;
//!   stable per user, so a 10 % split always picks the same users);
//! - `health`: per cell id `{score: int, healthy: bool, error_rate: double}`;
//! - `now`: the UTC time, `{hour: int, minute: int, weekday: int (0 = Monday), unix: int}`.
//!
//! A rule set is checked before it replaces the one in force: every expression
//! must parse and reference only these variables, names must be unique, actions
//! valid. A rejected set leaves the previous one in force
//! ([`RuleEngine::load_str`]). A rule whose expression fails at run time (a
//! missing map key, a type error) does not match, and is counted.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use cel_interpreter::{Context, Program, Value};
use cellctx::{CellContext, CellId};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Variables a rule may reference.
pub const RULE_VARIABLES: [&str; 4] = ["request", "ctx", "health", "now"];

/// What a matching rule does. Written as a map with exactly one key:
/// `{ route_cell: eu-2 }`, `{ route_version: v2 }`, `{ drain: eu-1 }`,
/// `{ weight: { cell: eu-1, weight: 50 } }`, `{ hold_drain: eu-1 }`,
/// `{ block_failback: eu-1 }`, `{ cohort: { region: eu, percent: 10, to: eu-canary } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ActionSpec", into = "ActionSpec")]
pub enum Action {
    /// Send the request to this cell.
    RouteCell(CellId),
    /// Send the request to this service version (canary / gray release).
    RouteVersion(String),
    /// Drain this cell.
    Drain(CellId),
    /// Set this cell's weight.
    Weight {
        /// The cell.
        cell: CellId,
        /// The weight (0..=10000).
        weight: u32,
    },
    /// Do not drain this cell while the rule holds (the engine's drain waits).
    HoldDrain(CellId),
    /// Do not fail this cell back while the rule holds (ramp steps wait).
    BlockFailback(CellId),
    /// Send `percent` % of `region`'s slots to the canary cell `to`.
    Cohort {
        /// The region whose slots move.
        region: CellId,
        /// The share of its slots, 0..=100.
        percent: u8,
        /// The canary cell.
        to: CellId,
    },
}

impl Action {
    /// Whether the controller acts on it (rather than the request path).
    pub fn is_control(&self) -> bool {
        matches!(self, Action::Drain(_) | Action::HoldDrain(_) | Action::BlockFailback(_) | Action::Cohort { .. })
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    route_cell: Option<CellId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    route_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    drain: Option<CellId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight: Option<WeightSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hold_drain: Option<CellId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    block_failback: Option<CellId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cohort: Option<CohortSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CohortSpec {
    region: CellId,
    percent: u8,
    to: CellId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightSpec {
    cell: CellId,
    weight: u32,
}

impl TryFrom<ActionSpec> for Action {
    type Error = String;
    fn try_from(a: ActionSpec) -> Result<Self, String> {
        let mut out = Vec::new();
        if let Some(c) = a.route_cell {
            out.push(Action::RouteCell(c));
        }
        if let Some(v) = a.route_version {
            out.push(Action::RouteVersion(v));
        }
        if let Some(c) = a.drain {
            out.push(Action::Drain(c));
        }
        if let Some(w) = a.weight {
            out.push(Action::Weight { cell: w.cell, weight: w.weight });
        }
        if let Some(c) = a.hold_drain {
            out.push(Action::HoldDrain(c));
        }
        if let Some(c) = a.block_failback {
            out.push(Action::BlockFailback(c));
        }
        if let Some(c) = a.cohort {
            out.push(Action::Cohort { region: c.region, percent: c.percent, to: c.to });
        }
        match (out.pop(), out.is_empty()) {
            (Some(a), true) => Ok(a),
            _ => Err("an action needs exactly one of route_cell, route_version, drain, weight, hold_drain, block_failback, cohort".into()),
        }
    }
}

impl From<Action> for ActionSpec {
    fn from(a: Action) -> Self {
        let mut s = ActionSpec::default();
        match a {
            Action::RouteCell(c) => s.route_cell = Some(c),
            Action::RouteVersion(v) => s.route_version = Some(v),
            Action::Drain(c) => s.drain = Some(c),
            Action::Weight { cell, weight } => s.weight = Some(WeightSpec { cell, weight }),
            Action::HoldDrain(c) => s.hold_drain = Some(c),
            Action::BlockFailback(c) => s.block_failback = Some(c),
            Action::Cohort { region, percent, to } => s.cohort = Some(CohortSpec { region, percent, to }),
        }
        s
    }
}

/// One rule as written in a rule set file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique name (reported with every match and in audit rows).
    pub name: String,
    /// A CEL expression evaluating to a bool; absent means always.
    #[serde(default)]
    pub when: Option<String>,
    /// What to do when it holds.
    pub action: Action,
}

/// A rule set file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSetSpec {
    /// Rules, first match wins.
    pub rules: Vec<RuleSpec>,
}

#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    program: Option<Program>,
    action: Action,
    /// Set when evaluating the rule panicked: it is skipped until the next
    /// rule set is loaded.
    disabled: AtomicBool,
}

/// Compiles a CEL expression. cel-parser 0.10 panics (an `unreachable!` in
/// its generated ANTLR visitor) on some truncated inputs such as
/// `request.path ===` (known upstream: cel-rust/cel-rust#194); the panic is caught and reported as a parse error so a
/// bad rule file can never take the process down.
fn compile(src: &str) -> Result<Program, String> {
    match std::panic::catch_unwind(|| Program::compile(src)) {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("cannot parse {src:?} (the CEL parser failed)")),
    }
}

/// A compiled, validated rule set.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    source: RuleSetSpec,
}

impl RuleSet {
    /// Compiles and checks a rule set.
    pub fn compile(spec: RuleSetSpec) -> Result<Self, Error> {
        let bad = |m: String| Err(Error::InvalidRules(m));
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(spec.rules.len());
        for r in &spec.rules {
            if r.name.is_empty() || !names.insert(r.name.as_str()) {
                return bad(format!("rule name {:?} empty or duplicate", r.name));
            }
            if let Action::Weight { weight, .. } = &r.action
                && *weight > 10_000
            {
                return bad(format!("rule {}: weight {weight} above 10000", r.name));
            }
            if let Action::RouteVersion(v) = &r.action
                && v.is_empty()
            {
                return bad(format!("rule {}: empty version", r.name));
            }
            if let Action::Cohort { percent, .. } = &r.action
                && *percent > 100
            {
                return bad(format!("rule {}: cohort percent {percent} above 100", r.name));
            }
            let program = match &r.when {
                None => None,
                Some(src) => {
                    let p = compile(src).map_err(|e| Error::InvalidRules(format!("rule {}: {e}", r.name)))?;
                    let refs = p.references();
                    if let Some(v) = refs.variables().into_iter().find(|v| !RULE_VARIABLES.contains(v)) {
                        return bad(format!("rule {}: unknown variable {v:?}", r.name));
                    }
                    Some(p)
                }
            };
            rules.push(Rule { name: Arc::from(r.name.as_str()), program, action: r.action.clone(), disabled: AtomicBool::new(false) });
        }
        Ok(RuleSet { rules, source: spec })
    }

    /// Decodes (JSON when it starts with `{`, else YAML) and compiles.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let spec: RuleSetSpec = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| Error::InvalidRules(e.to_string()))?
        } else {
            serde_yaml::from_str(text).map_err(|e| Error::InvalidRules(e.to_string()))?
        };
        Self::compile(spec)
    }

    /// The rule set as written.
    pub fn spec(&self) -> &RuleSetSpec {
        &self.source
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A cell's health as rules see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CellHealthView {
    /// Score 0..=100.
    pub score: u8,
    /// Healthy per the health crate.
    pub healthy: bool,
    /// Passive error rate.
    pub error_rate: f64,
}

/// The request attributes rules see.
#[derive(Debug, Clone, Default)]
pub struct RequestAttrs {
    /// HTTP method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Lower-case header name -> first value.
    pub headers: HashMap<String, String>,
    /// Region (from the context's region hint).
    pub region: String,
    /// Tenant.
    pub tenant: String,
    /// User (auth user, else routing key).
    pub user: String,
    /// The cell serving the request.
    pub cell: String,
}

impl RequestAttrs {
    /// Reads method, path and headers, and the `Arc<CellContext>` the
    /// `cellctx` layer put in the extensions (if any).
    pub fn from_request<B>(req: &http::Request<B>) -> Self {
        let mut headers = HashMap::with_capacity(req.headers().len());
        for (k, v) in req.headers() {
            if let Ok(v) = v.to_str() {
                headers.entry(k.as_str().to_string()).or_insert_with(|| v.to_string());
            }
        }
        let mut attrs = RequestAttrs {
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            headers,
            ..Default::default()
        };
        if let Some(ctx) = req.extensions().get::<Arc<CellContext>>() {
            attrs = attrs.with_context(ctx);
        }
        attrs
    }

    /// Copies region, tenant, user and cell from a context.
    pub fn with_context(mut self, ctx: &CellContext) -> Self {
        self.region = ctx.region_hint.as_ref().map(|h| h.region.to_string()).unwrap_or_default();
        self.tenant = ctx.tenant.as_deref().unwrap_or_default().to_owned();
        self.user = ctx.auth_user.as_deref().or(ctx.routing_key.as_deref()).unwrap_or_default().to_owned();
        self.cell = ctx.cell().map(|c| c.to_string()).unwrap_or_default();
        self
    }
}

/// The user's bucket in `[0, 100)` with two decimals: `xxh3(user) % 10000 / 100`.
pub fn user_pct(user: &str) -> f64 {
    (cellrouter::xxh3(user.as_bytes()) % 10_000) as f64 / 100.0
}

/// The variables of one evaluation.
fn context(req: &RequestAttrs, health: &HashMap<CellId, CellHealthView>) -> Context<'static> {
    let mut ctx = Context::default();
    let headers: HashMap<String, Value> = req.headers.iter().map(|(k, v)| (k.clone(), s(v))).collect();
    let request: HashMap<String, Value> = HashMap::from([
        ("method".to_string(), s(&req.method)),
        ("path".to_string(), s(&req.path)),
        ("headers".to_string(), Value::from(headers)),
    ]);
    let cctx: HashMap<String, Value> = HashMap::from([
        ("region".to_string(), s(&req.region)),
        ("tenant".to_string(), s(&req.tenant)),
        ("user".to_string(), s(&req.user)),
        ("cell".to_string(), s(&req.cell)),
        ("user_pct".to_string(), Value::Float(user_pct(&req.user))),
    ]);
    let h: HashMap<String, Value> = health
        .iter()
        .map(|(c, v)| {
            let m: HashMap<String, Value> = HashMap::from([
                ("score".to_string(), Value::Int(v.score as i64)),
                ("healthy".to_string(), Value::Bool(v.healthy)),
                ("error_rate".to_string(), Value::Float(v.error_rate)),
            ]);
            (c.to_string(), Value::from(m))
        })
        .collect();
    let t = time::OffsetDateTime::now_utc();
    let now: HashMap<String, Value> = HashMap::from([
        ("hour".to_string(), Value::Int(i64::from(t.hour()))),
        ("minute".to_string(), Value::Int(i64::from(t.minute()))),
        ("weekday".to_string(), Value::Int(i64::from(t.weekday().number_days_from_monday()))),
        ("unix".to_string(), Value::Int(t.unix_timestamp())),
    ]);
    ctx.add_variable_from_value("request", request);
    ctx.add_variable_from_value("ctx", cctx);
    ctx.add_variable_from_value("health", h);
    ctx.add_variable_from_value("now", now);
    ctx
}

fn s(v: &str) -> Value {
    Value::String(Arc::new(v.to_string()))
}

/// A rule that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    /// The rule's name.
    pub rule: Arc<str>,
    /// Its action.
    pub action: Action,
}

/// The rule set in force, hot-swappable: readers never wait, a rejected set
/// leaves the previous one in force. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RuleEngine {
    inner: Arc<EngineInner>,
}

#[derive(Debug)]
struct EngineInner {
    current: ArcSwap<RuleSet>,
    loaded: AtomicU64,
    rejected: AtomicU64,
    eval_errors: AtomicU64,
    reloads: opentelemetry::metrics::Counter<u64>,
    disabled: opentelemetry::metrics::Counter<u64>,
}

impl Default for RuleEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl RuleEngine {
    /// An engine with an empty rule set (nothing matches).
    pub fn new() -> Self {
        let reloads = opentelemetry::global::meter("failover")
            .u64_counter("failover.rules.reloads")
            .with_description("Rule set loads")
            .build();
        RuleEngine {
            inner: Arc::new(EngineInner {
                current: ArcSwap::from_pointee(RuleSet::default()),
                loaded: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                eval_errors: AtomicU64::new(0),
                reloads,
                disabled: opentelemetry::global::meter("failover")
                    .u64_counter("failover.rules.disabled")
                    .with_description("Rules disabled because their evaluation panicked")
                    .build(),
            }),
        }
    }

    /// Parses, checks and installs a rule set; on error the set in force stays.
    pub fn load_str(&self, text: &str) -> Result<(), Error> {
        self.install(RuleSet::parse(text))
    }

    /// Checks and installs a rule set; on error the set in force stays.
    pub fn load(&self, spec: RuleSetSpec) -> Result<(), Error> {
        self.install(RuleSet::compile(spec))
    }

    /// Loads a rule set file.
    pub fn load_file(&self, path: &Path) -> Result<(), Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source });
        match text {
            Ok(t) => self.load_str(&t),
            Err(e) => {
                let _ = self.install(Err(Error::InvalidRules(e.to_string())));
                Err(e)
            }
        }
    }

    fn install(&self, set: Result<RuleSet, Error>) -> Result<(), Error> {
        match set {
            Ok(set) => {
                tracing::info!(rules = set.len(), "rule set loaded");
                self.inner.current.store(Arc::new(set));
                self.inner.loaded.fetch_add(1, Ordering::Relaxed);
                self.inner.reloads.add(1, &[opentelemetry::KeyValue::new("result", "loaded")]);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "rule set rejected; keeping the set in force");
                self.inner.rejected.fetch_add(1, Ordering::Relaxed);
                self.inner.reloads.add(1, &[opentelemetry::KeyValue::new("result", "rejected")]);
                Err(e)
            }
        }
    }

    /// The rule set in force.
    pub fn current(&self) -> Arc<RuleSet> {
        self.inner.current.load_full()
    }

    /// Rule sets loaded / rejected so far, and run-time evaluation errors.
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.inner.loaded.load(Ordering::Relaxed),
            self.inner.rejected.load(Ordering::Relaxed),
            self.inner.eval_errors.load(Ordering::Relaxed),
        )
    }

    /// Names of the rules disabled because their evaluation panicked (until the
    /// next rule set is loaded).
    pub fn disabled(&self) -> Vec<String> {
        self.inner.current.load().rules.iter().filter(|r| r.disabled.load(Ordering::Relaxed)).map(|r| r.name.to_string()).collect()
    }

    /// The first rule that holds for `req` and `health`; a rule whose
    /// evaluation panics is disabled (see [`disabled`](Self::disabled)) and
    /// the next rules are tried.
    pub fn evaluate(&self, req: &RequestAttrs, health: &HashMap<CellId, CellHealthView>) -> Option<RuleMatch> {
        let set = self.inner.current.load();
        if set.rules.is_empty() {
            return None;
        }
        let ctx = context(req, health);
        set.rules.iter().find(|r| self.holds(r, &ctx)).map(|r| RuleMatch { rule: r.name.clone(), action: r.action.clone() })
    }

    /// Every control rule (see [`Action::is_control`]) that holds now for
    /// `health`, in order; `request` and `ctx` are empty. Panicking rules are
    /// disabled as in [`evaluate`](Self::evaluate).
    pub fn evaluate_control(&self, health: &HashMap<CellId, CellHealthView>) -> Vec<RuleMatch> {
        let set = self.inner.current.load();
        if !set.rules.iter().any(|r| r.action.is_control()) {
            return Vec::new();
        }
        let ctx = context(&RequestAttrs::default(), health);
        set.rules
            .iter()
            .filter(|r| r.action.is_control())
            .filter(|r| self.holds(r, &ctx))
            .map(|r| RuleMatch { rule: r.name.clone(), action: r.action.clone() })
            .collect()
    }

    /// Whether `r` holds in `ctx`; contains a panicking evaluation.
    fn holds(&self, r: &Rule, ctx: &Context) -> bool {
        if r.disabled.load(Ordering::Relaxed) {
            return false;
        }
        match &r.program {
            None => true,
            // cel-interpreter 0.10 panics on some evaluations (e.g. negating
            // i64::MIN in a build with overflow checks): the panic is contained,
            // the rule disabled until the next load, and the engine goes on
            Some(p) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.execute(ctx))) {
                Ok(Ok(Value::Bool(b))) => b,
                Ok(Ok(other)) => {
                    self.eval_error(&r.name, &format!("not a bool: {other:?}"));
                    false
                }
                Ok(Err(e)) => {
                    self.eval_error(&r.name, &e.to_string());
                    false
                }
                Err(_) => {
                    r.disabled.store(true, Ordering::Relaxed);
                    self.inner.eval_errors.fetch_add(1, Ordering::Relaxed);
                    self.inner.disabled.add(1, &[]);
                    tracing::error!(rule = %r.name, "rule evaluation panicked: rule disabled until the rule set is reloaded");
                    false
                }
            },
        }
    }

    fn eval_error(&self, rule: &str, msg: &str) {
        self.inner.eval_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(rule, error = msg, "rule did not evaluate; treated as no match");
    }

    /// Re-reads `path` every `interval` when its modification time or size
    /// changes (run it in its own task). Rejected sets are logged and counted.
    pub async fn watch_file(self, path: PathBuf, interval: Duration) {
        let mut last = None;
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let stamp = std::fs::metadata(&path).ok().and_then(|m| Some((m.modified().ok()?, m.len())));
            if stamp.is_some() && stamp == last {
                continue;
            }
            last = stamp;
            if let Err(e) = self.load_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "rule file not applied");
            }
        }
    }

    /// Loads the rule set stored at `key` in etcd, then follows every change
    /// (run it in its own task). Reconnects after errors.
    #[cfg(feature = "etcd")]
    pub async fn watch_etcd(self, endpoints: Vec<String>, key: String) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if let Err(e) = self.etcd_session(&endpoints, &key).await {
                tracing::warn!(error = %e, "etcd rule watch failed; keeping the rule set in force");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    #[cfg(feature = "etcd")]
    async fn etcd_session(&self, endpoints: &[String], key: &str) -> Result<(), Error> {
        use etcd_client::{Client, EventType, WatchOptions};
        let mut client = Client::connect(endpoints, None).await?;
        let resp = client.get(key, None).await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        if let Some(kv) = resp.kvs().first() {
            let _ = self.load_str(&String::from_utf8_lossy(kv.value()));
        }
        let mut stream = client.watch(key, Some(WatchOptions::new().with_start_revision(rev + 1))).await?;
        while let Some(msg) = stream.message().await? {
            for ev in msg.events() {
                if let (EventType::Put, Some(kv)) = (ev.event_type(), ev.kv()) {
                    let _ = self.load_str(&String::from_utf8_lossy(kv.value()));
                }
            }
        }
        Err(Error::Config("etcd watch stream closed".into()))
    }
}
