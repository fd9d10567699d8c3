//! The demo's YAML configuration (`demo.yaml`, embedded as the default):
//! parsing, validation with clear messages, and the routing table it implies.

use std::collections::HashSet;
use std::time::Duration;

use cellctx::CellId;
use cellrouter::{Cell, CellState, Region, RoutingTable, SlotRange};
use serde::Deserialize;

use crate::error::DemoError;

/// The embedded default configuration.
pub(crate) const DEFAULT_YAML: &str = include_str!("../demo.yaml");

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DemoConfig {
    #[serde(default = "default_slots")]
    pub(crate) slot_count: u32,
    pub(crate) regions: Vec<RegionConfig>,
    pub(crate) cells: Vec<CellConfig>,
    #[serde(default)]
    pub(crate) breaker: Option<serde_yaml::Value>,
    pub(crate) rules: RulesConfig,
    pub(crate) load: LoadConfig,
    /// The gateway's passive outlier detection per cell instance.
    #[serde(default)]
    pub(crate) outlier: cellrouter::outlier::OutlierSpec,
    /// Where the cells' changes come from (`--replication` overrides it).
    #[serde(default)]
    pub(crate) replication: Replication,
    /// The gateway's retries on the failover cell.
    #[serde(default)]
    pub(crate) retry: crate::gateway::RetrySpec,
}

/// Where the cells' CRDT changes are captured from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Replication {
    /// A transactional outbox row beside each business row (`crdt::outbox`).
    #[default]
    Outbox,
    /// The business tables only; a `crdt::binlog::BinlogRelay` per cell reads
    /// the MySQL/MariaDB binary log (`DEMO_DATABASE_URL`, row format).
    Binlog,
}

impl Replication {
    /// The mode's name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Replication::Outbox => "outbox",
            Replication::Binlog => "binlog",
        }
    }

    /// Checks that this build and the cells' database (`DEMO_DATABASE_URL`)
    /// can run the mode: the binlog needs the `binlog` feature and a
    /// MySQL/MariaDB URL.
    pub(crate) fn check(self, database_url: Option<&str>) -> Result<(), DemoError> {
        if self == Replication::Outbox {
            return Ok(());
        }
        if !cfg!(feature = "binlog") {
            return Err(DemoError::BinlogNotBuilt);
        }
        match database_url {
            Some(u) if u.starts_with("mysql://") || u.starts_with("mariadb://") => Ok(()),
            other => Err(DemoError::BinlogNeedsMysql { found: other.map(|u| u.split(':').next().unwrap_or_default().to_string()) }),
        }
    }
}

/// Sets `replication: MODE` in the config file at `path` (the copy the
/// orchestrator hands the cells), so the cells run the `--replication` asked for.
pub(crate) fn set_replication(path: &std::path::Path, mode: Replication) -> Result<(), DemoError> {
    let text = std::fs::read_to_string(path)?;
    let mut doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| invalid(format!("not a demo config: {e}")))?;
    let serde_yaml::Value::Mapping(m) = &mut doc else {
        return Err(invalid("the config is not a YAML mapping"));
    };
    m.insert("replication".into(), mode.as_str().into());
    let text = serde_yaml::to_string(&doc).map_err(|e| invalid(e.to_string()))?;
    DemoConfig::from_yaml(&text)?;
    std::fs::write(path, text)?;
    Ok(())
}

/// The cells' database URL (`DEMO_DATABASE_URL`), when one is set.
pub(crate) fn database_url() -> Option<String> {
    std::env::var("DEMO_DATABASE_URL").ok().filter(|u| !u.is_empty())
}

fn default_slots() -> u32 {
    1024
}

/// One region.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RegionConfig {
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) compliance: Vec<String>,
    #[serde(default)]
    pub(crate) allowed_regions: Vec<String>,
    #[serde(default)]
    pub(crate) datacenter: Option<u32>,
}

/// One cell.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CellConfig {
    pub(crate) id: String,
    pub(crate) region: String,
    #[serde(default = "one")]
    pub(crate) instances: u16,
    #[serde(default)]
    pub(crate) failover: Vec<String>,
    #[serde(default)]
    pub(crate) headroom_rps: f64,
}

fn one() -> u16 {
    1
}

/// The failover controller's rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RulesConfig {
    pub(crate) trip_error_rate: f64,
    pub(crate) trip_window_ms: u64,
    pub(crate) recover_error_rate: f64,
    pub(crate) recover_window_ms: u64,
    pub(crate) min_dwell_ms: u64,
    pub(crate) min_samples: u64,
    pub(crate) max_drained: usize,
    pub(crate) probers: usize,
    pub(crate) prober_quorum: usize,
    pub(crate) probe_interval_ms: u64,
    pub(crate) probe_timeout_ms: u64,
    pub(crate) stale_after_ms: u64,
    pub(crate) tick_ms: u64,
    pub(crate) failback: Vec<(u64, f64)>,
}

/// The simulated users.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoadConfig {
    pub(crate) users_per_region: u32,
    pub(crate) like_percent: u32,
    pub(crate) comment_percent: u32,
    pub(crate) request_timeout_ms: u64,
}

fn invalid(msg: impl Into<String>) -> DemoError {
    DemoError::Config(msg.into())
}

fn cell_id(what: &str, s: &str) -> Result<CellId, DemoError> {
    CellId::new(s).map_err(|e| invalid(format!("{what} {s:?}: {e}")))
}

impl DemoConfig {
    /// Parses and validates a YAML document.
    pub(crate) fn from_yaml(text: &str) -> Result<Self, DemoError> {
        let cfg: DemoConfig = serde_yaml::from_str(text).map_err(|e| invalid(format!("not a demo config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads `path`, or the embedded default.
    pub(crate) fn load(path: Option<&std::path::Path>) -> Result<Self, DemoError> {
        match path {
            None => Self::from_yaml(DEFAULT_YAML),
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| invalid(format!("cannot read {}: {e}", p.display())))?;
                Self::from_yaml(&text)
            }
        }
    }

    fn validate(&self) -> Result<(), DemoError> {
        self.outlier()?;
        if self.cells.is_empty() {
            return Err(invalid("cells: at least one cell is needed"));
        }
        let regions: HashSet<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
        if regions.len() != self.regions.len() {
            return Err(invalid("regions: a region is listed twice"));
        }
        for r in &self.regions {
            cell_id("region", &r.name)?;
            for a in &r.allowed_regions {
                if !regions.contains(a.as_str()) {
                    return Err(invalid(format!("region {}: allowed region {a:?} is not a region", r.name)));
                }
            }
        }
        let ids: HashSet<&str> = self.cells.iter().map(|c| c.id.as_str()).collect();
        if ids.len() != self.cells.len() {
            return Err(invalid("cells: a cell id is listed twice"));
        }
        for c in &self.cells {
            cell_id("cell", &c.id)?;
            if !regions.contains(c.region.as_str()) {
                return Err(invalid(format!("cell {}: region {:?} is not in regions", c.id, c.region)));
            }
            if c.instances == 0 || c.instances > 8 {
                return Err(invalid(format!("cell {}: instances must be 1..=8, not {}", c.id, c.instances)));
            }
            if !(c.headroom_rps >= 0.0 && c.headroom_rps.is_finite()) {
                return Err(invalid(format!("cell {}: headroom_rps must be >= 0", c.id)));
            }
            for f in &c.failover {
                if !ids.contains(f.as_str()) || f == &c.id {
                    return Err(invalid(format!("cell {}: failover target {f:?} is not another cell", c.id)));
                }
            }
        }
        for r in &self.regions {
            if !self.cells.iter().any(|c| c.region == r.name) {
                return Err(invalid(format!("region {}: no cell serves it", r.name)));
            }
        }
        let l = &self.load;
        if l.users_per_region == 0 {
            return Err(invalid("load.users_per_region must be > 0"));
        }
        if l.like_percent + l.comment_percent > 100 {
            return Err(invalid("load: like_percent + comment_percent must be <= 100"));
        }
        if l.request_timeout_ms == 0 {
            return Err(invalid("load.request_timeout_ms must be > 0"));
        }
        let rt = &self.retry;
        if rt.first_byte_ms == 0 || !(0.0..=100.0).contains(&rt.budget_percent) || rt.max_retries > 3 {
            return Err(invalid("retry: first_byte_ms > 0, budget_percent in 0..=100, max_retries <= 3"));
        }
        let r = &self.rules;
        if r.probers == 0 || r.prober_quorum == 0 || r.prober_quorum > r.probers {
            return Err(invalid("rules: need 1 <= prober_quorum <= probers"));
        }
        if r.probe_interval_ms == 0 || r.probe_timeout_ms == 0 || r.tick_ms == 0 {
            return Err(invalid("rules: probe_interval_ms, probe_timeout_ms and tick_ms must be > 0"));
        }
        // the remaining checks are the SDK's own validators
        self.routing_table(&|_, i| format!("http://127.0.0.1:{}", 1 + u32::from(i)))?;
        self.decision_config()?;
        self.breakers()?;
        Ok(())
    }

    /// The breaker configuration of the gateway's per-cell breakers.
    pub(crate) fn breakers(&self) -> Result<breaker::BreakersConfig, DemoError> {
        match &self.breaker {
            None => Ok(breaker::BreakersConfig::default()),
            Some(v) => {
                let text = serde_yaml::to_string(v).map_err(|e| invalid(format!("breaker: {e}")))?;
                breaker::BreakersConfig::from_yaml(&text).map_err(|e| invalid(format!("breaker: {e}")))
            }
        }
    }

    /// The gateway's outlier detection.
    pub(crate) fn outlier(&self) -> Result<cellrouter::outlier::OutlierConfig, DemoError> {
        cellrouter::outlier::OutlierConfig::try_from(self.outlier.clone()).map_err(|e| invalid(format!("outlier: {e}")))
    }

    /// The decision engine's configuration.
    pub(crate) fn decision_config(&self) -> Result<failover::DecisionConfig, DemoError> {
        let r = &self.rules;
        let ms = Duration::from_millis;
        let curve = failover::RampCurve::try_new(r.failback.iter().map(|&(o, s)| (ms(o), s)).collect())
            .map_err(|e| invalid(format!("rules.failback: {e}")))?;
        let cfg = failover::DecisionConfig::new()
            .with_trip(r.trip_error_rate, ms(r.trip_window_ms))
            .with_recover(r.recover_error_rate, ms(r.recover_window_ms))
            .with_min_dwell(ms(r.min_dwell_ms))
            .with_min_samples(r.min_samples)
            .with_max_drained(r.max_drained)
            .with_probers(r.prober_quorum, ms(r.stale_after_ms))
            .with_failback(failover::Failback::Ramp(curve));
        cfg.validate().map_err(|e| invalid(format!("rules: {e}")))?;
        Ok(cfg)
    }

    /// The routing table (version 1): every region's slots on the first cell
    /// of that region, each cell's endpoints from `endpoints(cell, instance)`.
    pub(crate) fn routing_table(&self, endpoints: &dyn Fn(&str, u16) -> String) -> Result<RoutingTable, DemoError> {
        self.routing_table_with(&|c| (0..c.instances).map(|i| endpoints(&c.id, i)).collect())
    }

    /// The routing table (version 1) with each cell's endpoints from
    /// `endpoints(cell)` (as many as the cell's processes listen on).
    pub(crate) fn routing_table_with(&self, endpoints: &dyn Fn(&CellConfig) -> Vec<String>) -> Result<RoutingTable, DemoError> {
        let mut regions = Vec::new();
        for r in &self.regions {
            let mut region = Region::new(cell_id("region", &r.name)?);
            region.compliance = r.compliance.clone();
            region.allowed_regions = r.allowed_regions.iter().map(|a| cell_id("region", a)).collect::<Result<_, _>>()?;
            region.datacenter = r.datacenter;
            regions.push(region);
        }
        let mut cells = Vec::new();
        for c in &self.cells {
            cells.push(Cell {
                id: cell_id("cell", &c.id)?,
                region: cell_id("region", &c.region)?,
                endpoints: endpoints(c),
                weight: 100,
                state: CellState::Active,
                failover: c.failover.iter().map(|f| cell_id("cell", f)).collect::<Result<_, _>>()?,
                // the demo's cells run on loopback
                private_link: true,
            });
        }
        let mut slots = Vec::new();
        for r in &self.regions {
            // validated above: every region has a cell
            if let Some(c) = self.cells.iter().find(|c| c.region == r.name) {
                slots.push(SlotRange {
                    region: cell_id("region", &r.name)?,
                    start: 0,
                    end: self.slot_count.saturating_sub(1),
                    cell: cell_id("cell", &c.id)?,
                });
            }
        }
        let table = RoutingTable {
            version: 1,
            slot_count: self.slot_count,
            default_region: cell_id("region", &self.regions[0].name)?,
            regions,
            cells,
            slots,
            migrations: Vec::new(),
        };
        table.validate().map_err(|e| invalid(format!("routing table: {e}")))?;
        Ok(table)
    }

    /// The cell ids in file order.
    pub(crate) fn cell_ids(&self) -> Vec<String> {
        self.cells.iter().map(|c| c.id.clone()).collect()
    }

    /// The config of cell `id`.
    pub(crate) fn cell(&self, id: &str) -> Option<&CellConfig> {
        self.cells.iter().find(|c| c.id == id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn binlog_replication_without_a_mysql_database_is_a_typed_error() {
        assert!(Replication::Outbox.check(None).is_ok());
        if cfg!(feature = "binlog") {
            assert!(matches!(Replication::Binlog.check(None), Err(DemoError::BinlogNeedsMysql { found: None })));
            let pg = Replication::Binlog.check(Some("postgres://u@h/db"));
            assert!(matches!(&pg, Err(DemoError::BinlogNeedsMysql { found: Some(s) }) if s == "postgres"), "{pg:?}");
            assert!(pg.unwrap_err().to_string().contains("DEMO_DATABASE_URL"));
            assert!(Replication::Binlog.check(Some("mysql://root@127.0.0.1:3306/test")).is_ok());
        } else {
            assert!(matches!(Replication::Binlog.check(Some("mysql://root@h/db")), Err(DemoError::BinlogNotBuilt)));
        }
    }

    #[test]
    fn set_replication_overrides_the_file_the_cells_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.yaml");
        std::fs::write(&path, DEFAULT_YAML).unwrap();
        assert_eq!(DemoConfig::load(Some(&path)).unwrap().replication, Replication::Outbox);
        set_replication(&path, Replication::Binlog).unwrap();
        assert_eq!(DemoConfig::load(Some(&path)).unwrap().replication, Replication::Binlog);
    }

    #[test]
    fn the_embedded_default_is_valid() {
        let cfg = DemoConfig::from_yaml(DEFAULT_YAML).unwrap();
        assert_eq!(cfg.cell_ids(), ["beijing", "shanghai", "shenzhen"]);
        let t = cfg.routing_table(&|c, i| format!("http://{c}-{i}")).unwrap();
        assert_eq!(t.cells[0].endpoints.len(), 2);
    }

    #[test]
    fn errors_name_the_bad_field() {
        let bad = DEFAULT_YAML.replace("failover: [shanghai]", "failover: [atlantis]");
        let e = DemoConfig::from_yaml(&bad).unwrap_err().to_string();
        assert!(e.contains("cell beijing: failover target \"atlantis\""), "{e}");
        let bad = DEFAULT_YAML.replace("prober_quorum: 2", "prober_quorum: 3");
        assert!(DemoConfig::from_yaml(&bad).unwrap_err().to_string().contains("prober_quorum"));
        let bad = DEFAULT_YAML.replace("failure_rate_threshold: 50", "failure_rate_threshold: 500");
        assert!(DemoConfig::from_yaml(&bad).unwrap_err().to_string().contains("breaker"));
        let bad = DEFAULT_YAML.replace("allowed_regions: [shanghai, shenzhen]", "allowed_regions: [mars]");
        assert!(DemoConfig::from_yaml(&bad).unwrap_err().to_string().contains("mars"));
        assert!(DemoConfig::from_yaml("cells: 3").unwrap_err().to_string().contains("not a demo config"));
    }
}
