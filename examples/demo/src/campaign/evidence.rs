//! The checker's evidence from a healed run: the load generator's records as
//! a [`chaos::history`], each cell's ids and digest from its state JSON, and
//! whether the controllers' table has it active.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use cellrouter::{CellState, RoutingTable};
use chaos::checker::CellView;
use chaos::history::{Outcome, Record, WriteKind};

use crate::load::{Op, User};

/// The load's records as the checker's history (`t0`: the load's start).
pub(crate) fn history(records: &[crate::load::Record], users: &[User], t0: SystemTime) -> Vec<Record> {
    let t0_ms = t0.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    records
        .iter()
        .enumerate()
        .map(|(n, r)| Record {
            req: format!("req-{n}"),
            region: users.get(r.user).map_or_else(String::new, |u| u.region.clone()),
            at_ms: t0_ms + r.end_ms,
            write: match r.op {
                Op::Like => Some((WriteKind::Like, r.post.clone())),
                Op::Comment => Some((WriteKind::Comment, r.post.clone())),
                Op::Read => None,
            },
            outcome: match r.ok {
                true => Outcome::Ok { id: r.id.clone().unwrap_or_default(), cell: r.served_by.clone() },
                false => Outcome::Failed { error: "failed or timed out".into() },
            },
        })
        .collect()
}

/// Every write id a cell's state JSON holds: each comment's id
/// (`comments:<post>`) and each like's id (`like_ids:<post>`).
pub(crate) fn ids_in(state: &str) -> BTreeSet<String> {
    let state: BTreeMap<String, serde_json::Value> = serde_json::from_str(state).unwrap_or_default();
    state
        .iter()
        .filter(|(k, _)| k.starts_with("comments:") || k.starts_with("like_ids:"))
        .filter_map(|(_, v)| v.as_array())
        .flatten()
        .filter_map(|m| m.as_str().map(String::from))
        .collect()
}

/// Each replica's view (a cell, or a cell's process named `cell/index`):
/// ids and digest from `states` (one that did not answer is absent), active
/// (its cell's) from `table`.
pub(crate) fn views(states: &BTreeMap<String, Option<(String, u64)>>, table: Option<&RoutingTable>) -> BTreeMap<String, CellView> {
    let active = |name: &str| {
        let id = crate::cells::cell_of(name);
        table.is_some_and(|t| t.cells.iter().any(|c| c.id.as_str() == id && c.state == CellState::Active))
    };
    states
        .iter()
        .filter_map(|(id, s)| s.as_ref().map(|(json, digest)| (id.clone(), CellView { ids: ids_in(json), digest: *digest, active: active(id) })))
        .collect()
}
