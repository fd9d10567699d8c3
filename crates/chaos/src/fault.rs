//! The faults a schedule is made of.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::topology::{Link, Process};

/// When, relative to a switch in flight, the leading controller is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchPoint {
    /// After the intent row is written, before the table write.
    AfterIntent,
    /// After the table write, before the row says committed.
    BeforeRecord,
    /// After the switch is recorded.
    AfterCommit,
}

/// What a link does while it is faulted (the proxy's mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LinkFault {
    /// Connections are refused or reset.
    Drop,
    /// Connections are accepted and never answered.
    Blackhole,
    /// Every chunk is held this long, both ways.
    Delay {
        /// Added delay in ms.
        ms: u64,
    },
}

/// One kind of fault, with its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// `kill -9` of one process; it is started again at the heal.
    KillProcess {
        /// Which.
        process: Process,
    },
    /// `kill -9` of every process of a cell; started again at the heal.
    KillCell {
        /// Which cell.
        cell: String,
    },
    /// `kill -9` of the leading controller at a point of the next switch; it
    /// is started again at the heal.
    KillLeader {
        /// Where in the switch.
        point: SwitchPoint,
    },
    /// SIGSTOP, then SIGCONT at the heal: the process comes back with stale
    /// state and old leases.
    Pause {
        /// Which.
        process: Process,
    },
    /// One link cut, blackholed or slowed until the heal.
    Partition {
        /// Which link.
        link: Link,
        /// How.
        fault: LinkFault,
    },
    /// The process's wall clock stepped by `offset_ms` (through its
    /// `cellclock` offset); stepped back to true time at the heal.
    ClockStep {
        /// Which.
        process: Process,
        /// The step, ms (positive: ahead).
        offset_ms: i64,
    },
    /// The Kafka broker down until the heal.
    KafkaDown,
    /// Redis down until the heal.
    RedisDown,
    /// A cell process killed and restarted from an older snapshot of its
    /// replicated state than the one it had.
    StaleRestart {
        /// Which.
        process: Process,
    },
}

impl FaultKind {
    /// A short name of the kind, for counts and reports.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::KillProcess { .. } => "kill_process",
            FaultKind::KillCell { .. } => "kill_cell",
            FaultKind::KillLeader { .. } => "kill_leader",
            FaultKind::Pause { .. } => "pause",
            FaultKind::Partition { .. } => "partition",
            FaultKind::ClockStep { .. } => "clock_step",
            FaultKind::KafkaDown => "kafka_down",
            FaultKind::RedisDown => "redis_down",
            FaultKind::StaleRestart { .. } => "stale_restart",
        }
    }

    /// Every kind's name, in a fixed order.
    pub const NAMES: [&'static str; 9] = [
        "kill_process",
        "kill_cell",
        "kill_leader",
        "pause",
        "partition",
        "clock_step",
        "kafka_down",
        "redis_down",
        "stale_restart",
    ];

    /// The cell this fault takes out of service, if any (all of its
    /// processes, or its only one).
    pub(crate) fn cell_down(&self, processes_per_cell: usize) -> Option<&str> {
        match self {
            FaultKind::KillCell { cell } => Some(cell),
            FaultKind::KillProcess { process: Process::Cell { cell, .. } }
            | FaultKind::StaleRestart { process: Process::Cell { cell, .. } }
            | FaultKind::Pause { process: Process::Cell { cell, .. } }
                if processes_per_cell == 1 =>
            {
                Some(cell)
            }
            _ => None,
        }
    }
}

/// A fault in a schedule: starts `at` after the run starts and heals
/// `lasts` later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Start, from the run's start.
    #[serde(with = "ms")]
    pub at: Duration,
    /// How long until it heals.
    #[serde(with = "ms")]
    pub lasts: Duration,
    /// What.
    #[serde(flatten)]
    pub kind: FaultKind,
}

impl Fault {
    /// When it heals, from the run's start.
    pub fn heals_at(&self) -> Duration {
        self.at + self.lasts
    }
}

/// Durations as whole milliseconds in JSON.
mod ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
