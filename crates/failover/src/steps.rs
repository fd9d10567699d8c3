//! The routing-table moves behind [`Change::Ramp`](crate::Change::Ramp),
//! [`Change::Spread`](crate::Change::Spread) and
//! [`Change::Cohort`](crate::Change::Cohort): slot migrations tagged with
//! their purpose (`ramp:<cell>`, `spread:<cell>`, `cohort:<cell>`), so each
//! change finds and replaces its own moves and leaves the others alone.

use std::collections::HashSet;

use cellctx::CellId;
use cellrouter::{CellState, Migration, RoutingTable};

use crate::change::state_name;
use crate::error::Error;

fn tag(kind: &str, cell: &CellId) -> String {
    format!("{kind}:{cell}")
}

fn tagged<'a>(table: &'a RoutingTable, purpose: &'a str) -> impl Iterator<Item = &'a Migration> + 'a {
    table.migrations.iter().filter(move |m| m.purpose.as_deref() == Some(purpose))
}

fn len(start: u32, end: u32) -> u32 {
    end - start + 1
}

/// Removes the ramp and spread moves of `cell`.
pub(crate) fn clear(table: &mut RoutingTable, cell: &CellId) {
    let (r, s) = (tag("ramp", cell), tag("spread", cell));
    table.migrations.retain(|m| m.purpose.as_deref() != Some(r.as_str()) && m.purpose.as_deref() != Some(s.as_str()));
}

/// `cell`'s slot ranges: (region, start, end).
fn ranges_of(table: &RoutingTable, cell: &CellId) -> Vec<(CellId, u32, u32)> {
    table.slots.iter().filter(|r| &r.cell == cell).map(|r| (r.region.clone(), r.start, r.end)).collect()
}

/// Moves the slots `start..=end` of `region` from `from` to `to`, skipping the
/// slots another migration already moves, tagged `purpose`.
fn push_moves(table: &mut RoutingTable, region: &CellId, start: u32, end: u32, from: &CellId, to: &CellId, purpose: &str) {
    let moving: HashSet<u32> =
        table.migrations.iter().filter(|m| &m.region == region).flat_map(|m| m.start.max(start)..=m.end.min(end)).collect();
    let mut run: Option<(u32, u32)> = None;
    let mut out = Vec::new();
    for slot in start..=end {
        if moving.contains(&slot) {
            out.extend(run.take());
            continue;
        }
        run = Some(match run {
            Some((s, _)) => (s, slot),
            None => (slot, slot),
        });
    }
    out.extend(run);
    for (s, e) in out {
        table.migrations.push(Migration::new(region.clone(), s, e, from.clone(), to.clone()).with_purpose(purpose));
    }
}

/// The failback step of `cell` at `permille`: each of its ranges keeps its
/// first `permille` thousandths (rounded up), the rest go to its first active
/// failover target.
pub(crate) fn ramp(table: &mut RoutingTable, cell: &CellId, permille: u16) -> Result<(), Error> {
    if permille >= 1000 {
        return Ok(());
    }
    let target = table
        .cell(cell)
        .and_then(|c| c.failover.iter().find(|f| table.cell(f).is_some_and(|t| t.state == CellState::Active)))
        .cloned()
        .ok_or_else(|| Error::Config(format!("cell {cell}: no active failover target to hold the rest of its ramp")))?;
    let purpose = tag("ramp", cell);
    for (region, start, end) in ranges_of(table, cell) {
        let keep = (u64::from(len(start, end)) * u64::from(permille)).div_ceil(1000) as u32;
        if keep < len(start, end) {
            push_moves(table, &region, start + keep, end, cell, &target, &purpose);
        }
    }
    Ok(())
}

/// The spread drain of `cell`: each of its ranges sends consecutive parts of
/// `permille` thousandths (rounded) to each target in order.
pub(crate) fn spread(table: &mut RoutingTable, cell: &CellId, targets: &[(CellId, u16)]) -> Result<(), Error> {
    if targets.iter().map(|(_, p)| u32::from(*p)).sum::<u32>() > 1000 {
        return Err(Error::Config(format!("spread of {cell}: shares above 1000 thousandths")));
    }
    for (t, _) in targets {
        if t == cell || table.cell(t).is_none() {
            return Err(Error::Config(format!("spread of {cell}: bad target {t}")));
        }
    }
    let purpose = tag("spread", cell);
    for (region, start, end) in ranges_of(table, cell) {
        let n = len(start, end);
        let mut at = start;
        for (i, (t, p)) in targets.iter().enumerate() {
            let left = end + 1 - at;
            let take = if i + 1 == targets.len() && targets.iter().map(|(_, p)| u32::from(*p)).sum::<u32>() == 1000 {
                left
            } else {
                ((u64::from(n) * u64::from(*p) + 500) / 1000).min(u64::from(left)) as u32
            };
            if take > 0 {
                push_moves(table, &region, at, at + take - 1, cell, t, &purpose);
                at += take;
            }
        }
    }
    Ok(())
}

/// The cohort of `region` for canary `to`: its first `permille` thousandths
/// of slots (rounded down) move to `to` (except those it owns or another
/// migration moves); 0 removes the cohort.
pub(crate) fn cohort(table: &mut RoutingTable, region: &CellId, permille: u16, to: &CellId) -> Result<(), Error> {
    if !table.regions.iter().any(|r| &r.name == region) {
        return Err(Error::Config(format!("cohort: unknown region {region}")));
    }
    if permille > 1000 {
        return Err(Error::Config(format!("cohort: share {permille} above 1000 thousandths")));
    }
    let purpose = tag("cohort", to);
    table.migrations.retain(|m| !(&m.region == region && m.purpose.as_deref() == Some(purpose.as_str())));
    let n = (u64::from(table.slot_count) * u64::from(permille) / 1000) as u32;
    if n == 0 {
        return Ok(());
    }
    let owned: Vec<(u32, u32, CellId)> = table
        .slots
        .iter()
        .filter(|r| &r.region == region && &r.cell != to && r.start < n)
        .map(|r| (r.start, r.end.min(n - 1), r.cell.clone()))
        .collect();
    for (s, e, from) in owned {
        push_moves(table, region, s, e, &from, to, &purpose);
    }
    Ok(())
}

/// Whether `cell` is part way through its failback ramp (some of its slots
/// still held by its failover target).
pub(crate) fn ramping(table: &RoutingTable, cell: &CellId) -> bool {
    tagged(table, &tag("ramp", cell)).next().is_some()
}

/// `cell`'s state as the audit shows it: `state=…`, plus how many of its
/// slots are home during a ramp (`home_slots=102/1024`) or where a spread
/// drain sends them (`spread=b:614,c:410`).
pub(crate) fn describe(table: &RoutingTable, cell: &CellId) -> String {
    let state = table.cell(cell).map(|c| state_name(c.state)).unwrap_or("unknown");
    let mut out = format!("state={state}");
    let ramp = tag("ramp", cell);
    let moved: u32 = tagged(table, &ramp).map(|m| len(m.start, m.end)).sum();
    if moved > 0 {
        let total: u32 = ranges_of(table, cell).iter().map(|(_, s, e)| len(*s, *e)).sum();
        out.push_str(&format!(" home_slots={}/{total}", total - moved));
    }
    let spread = tag("spread", cell);
    let mut per: Vec<(CellId, u32)> = Vec::new();
    for m in tagged(table, &spread) {
        match per.iter_mut().find(|(c, _)| c == &m.to) {
            Some((_, n)) => *n += len(m.start, m.end),
            None => per.push((m.to.clone(), len(m.start, m.end))),
        }
    }
    if !per.is_empty() {
        let list: Vec<String> = per.iter().map(|(c, n)| format!("{c}:{n}")).collect();
        out.push_str(&format!(" spread={}", list.join(",")));
    }
    out
}

/// The cohort of `region` for `to` as the audit shows it.
pub(crate) fn describe_cohort(table: &RoutingTable, region: &CellId, to: &CellId) -> String {
    let purpose = tag("cohort", to);
    let n: u32 = tagged(table, &purpose).filter(|m| &m.region == region).map(|m| len(m.start, m.end)).sum();
    format!("cohort {region}->{to}: {n} slots")
}
