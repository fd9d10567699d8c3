//! What the campaign can hit: the processes of each role and the links
//! between them.

use serde::{Deserialize, Serialize};

use crate::Error;

/// One process of the run, named by role and index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Process {
    /// Process `index` of cell `cell`.
    Cell {
        /// The cell.
        cell: String,
        /// Which of the cell's processes.
        index: usize,
    },
    /// The edge gateway.
    Gateway,
    /// Controller `index` (one leads at a time).
    Controller {
        /// Which controller.
        index: usize,
    },
    /// The prober of cell `cell`.
    Prober {
        /// The cell it probes.
        cell: String,
    },
}

/// A link the harness owns a proxy on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "link", rename_all = "snake_case")]
pub enum Link {
    /// Gateway to a cell's instances.
    GatewayCell {
        /// The cell.
        cell: String,
    },
    /// A cell's processes to the Kafka broker.
    CellKafka {
        /// The cell.
        cell: String,
    },
    /// The controllers to the table store (etcd, or the run's store).
    ControllerStore,
    /// A prober to its cell.
    ProberCell {
        /// The cell.
        cell: String,
    },
}

/// The run's shape: which processes and links a schedule may fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    cells: Vec<String>,
    processes_per_cell: usize,
    controllers: usize,
    redis: bool,
}

impl Topology {
    /// `cells` (at least 2, distinct) with `processes_per_cell` processes each
    /// (at least 1) and `controllers` controllers (at least 1).
    pub fn try_new(cells: Vec<String>, processes_per_cell: usize, controllers: usize) -> Result<Self, Error> {
        if cells.len() < 2 {
            return Err(Error::Config("a campaign needs at least 2 cells"));
        }
        let mut sorted = cells.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != cells.len() {
            return Err(Error::Config("cell names must be distinct"));
        }
        if processes_per_cell == 0 || controllers == 0 {
            return Err(Error::Config("every cell needs a process and the run a controller"));
        }
        Ok(Topology { cells, processes_per_cell, controllers, redis: false })
    }

    /// Whether the cells use a Redis cache the schedule may take down.
    pub fn with_redis(mut self, redis: bool) -> Self {
        self.redis = redis;
        self
    }

    /// The cells, in the order given.
    pub fn cells(&self) -> &[String] {
        &self.cells
    }

    /// Processes per cell.
    pub fn processes_per_cell(&self) -> usize {
        self.processes_per_cell
    }

    /// Controller processes.
    pub fn controllers(&self) -> usize {
        self.controllers
    }

    /// Whether Redis is in the run.
    pub fn redis(&self) -> bool {
        self.redis
    }

    /// Every process of the run.
    pub fn processes(&self) -> Vec<Process> {
        let mut out: Vec<Process> = self
            .cells
            .iter()
            .flat_map(|c| (0..self.processes_per_cell).map(move |index| Process::Cell { cell: c.clone(), index }))
            .collect();
        out.push(Process::Gateway);
        out.extend((0..self.controllers).map(|index| Process::Controller { index }));
        out.extend(self.cells.iter().map(|c| Process::Prober { cell: c.clone() }));
        out
    }

    /// Every link the harness proxies.
    pub fn links(&self) -> Vec<Link> {
        let mut out = Vec::new();
        for c in &self.cells {
            out.push(Link::GatewayCell { cell: c.clone() });
            out.push(Link::CellKafka { cell: c.clone() });
            out.push(Link::ProberCell { cell: c.clone() });
        }
        out.push(Link::ControllerStore);
        out
    }
}
