//! Turning one row change of a mapped table into CRDT [`Change`]s.

use std::collections::BTreeMap;

use mysql_async::Value;
use mysql_async::binlog::row::BinlogRow;
use mysql_async::binlog::value::BinlogValue;

use super::config::{RowKind, TableMapping};
use crate::counter::{PnDelta, PnEntry};
use crate::error::CrdtError;
use crate::hlc::{SiteId, Stamp, Timestamp};
use crate::lww::{LwwDelta, LwwEntry};
use crate::replica::{Change, Delta};

/// A mapped table with its column positions (read from `information_schema`).
#[derive(Debug, Clone)]
pub(crate) struct BoundTable {
    pub(crate) mapping: TableMapping,
    object: usize,
    element: usize,
    tombstone: Option<usize>,
    lww: Option<usize>,
}

impl BoundTable {
    /// Binds `mapping` to its columns' 0-based positions.
    pub(crate) fn bind(
        mapping: TableMapping,
        positions: &BTreeMap<String, usize>,
    ) -> Result<Self, CrdtError> {
        let pos = |c: &str| {
            positions
                .get(&c.to_ascii_lowercase())
                .copied()
                .ok_or_else(|| {
                    CrdtError::Config(format!(
                        "binlog: table {} has no column {c:?}",
                        mapping.qualified()
                    ))
                })
        };
        let object = pos(&mapping.object)?;
        let (element, tombstone) = match &mapping.kind {
            RowKind::LwwSet { element, tombstone } => {
                (pos(element)?, tombstone.as_deref().map(pos).transpose()?)
            }
            RowKind::Counter { delta } => (pos(delta)?, None),
        };
        let lww = mapping.lww_column.as_deref().map(pos).transpose()?;
        Ok(BoundTable {
            mapping,
            object,
            element,
            tombstone,
            lww,
        })
    }
}

/// Where a row change sits: its transaction and its place in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowAt {
    /// The transaction's GTID sequence number.
    pub(crate) gtid_seq: u64,
    /// The event's time, seconds since the Unix epoch.
    pub(crate) event_secs: u32,
    /// Changes of the transaction before this one.
    pub(crate) index: u64,
}

fn value<'a>(row: &'a BinlogRow, i: usize, table: &TableMapping) -> Result<&'a Value, CrdtError> {
    match row.as_ref(i) {
        Some(BinlogValue::Value(v)) => Ok(v),
        Some(_) => Err(CrdtError::BinlogRow(format!(
            "{}: column {} is JSON, not a scalar",
            table.qualified(),
            i + 1
        ))),
        None => Err(CrdtError::BinlogRow(format!(
            "{}: column {} is missing from the row image (set binlog_row_image=FULL)",
            table.qualified(),
            i + 1
        ))),
    }
}

fn text(v: &Value, what: &str, table: &TableMapping) -> Result<String, CrdtError> {
    match v {
        Value::Bytes(b) => String::from_utf8(b.clone()).map_err(|_| {
            CrdtError::BinlogRow(format!("{}: {what} is not UTF-8", table.qualified()))
        }),
        Value::Int(i) => Ok(i.to_string()),
        Value::UInt(u) => Ok(u.to_string()),
        _ => Err(CrdtError::BinlogRow(format!(
            "{}: {what} is {v:?}, not text or an integer",
            table.qualified()
        ))),
    }
}

fn int(v: &Value, what: &str, table: &TableMapping) -> Result<i64, CrdtError> {
    let bad = || {
        CrdtError::BinlogRow(format!(
            "{}: {what} is {v:?}, not an integer",
            table.qualified()
        ))
    };
    match v {
        Value::Int(i) => Ok(*i),
        Value::UInt(u) => i64::try_from(*u).map_err(|_| bad()),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// The counter writer id of a binlog relay (see [`SiteId::for_writer`]).
pub(crate) const BINLOG_WRITER: u32 = u32::MAX;

/// The changes one row event makes (`before` for update/delete, `after` for
/// insert/update); counter totals in `counters` advance.
pub(crate) fn row_changes(
    t: &BoundTable,
    before: Option<&BinlogRow>,
    after: Option<&BinlogRow>,
    at: RowAt,
    origin: &cellctx::CellId,
    counters: &mut BTreeMap<String, PnEntry>,
) -> Result<Vec<Change>, CrdtError> {
    let m = &t.mapping;
    // one writer per binlog relay: a writer id no process's leased worker id
    // takes (worker ids are small), so its counter site never collides with one
    let site = SiteId::for_writer(origin, BINLOG_WRITER);
    let object = |row: &BinlogRow| -> Result<String, CrdtError> {
        Ok(format!(
            "{}{}",
            m.object_prefix,
            text(value(row, t.object, m)?, "object", m)?
        ))
    };
    let ts_of = |row: &BinlogRow, index: u64| -> Result<Timestamp, CrdtError> {
        match t.lww {
            Some(i) => {
                let ms = int(value(row, i, m)?, "lww column", m)?;
                let ms = u64::try_from(ms).map_err(|_| {
                    CrdtError::BinlogRow(format!("{}: negative lww time", m.qualified()))
                })?;
                Ok(Timestamp::new(ms, 0))
            }
            None => {
                let logical = ((at.gtid_seq & 0x3ff) << 6) | index.min(63);
                Ok(Timestamp::new(
                    u64::from(at.event_secs) * 1000,
                    u16::try_from(logical).unwrap_or(u16::MAX),
                ))
            }
        }
    };
    let change = |object: String, ts: Timestamp, delta: Delta| Change {
        aggregate_type: m.aggregate_type.clone(),
        aggregate_id: object,
        origin: origin.clone(),
        ts,
        delta,
    };
    let mut out = Vec::new();
    match &m.kind {
        RowKind::LwwSet { .. } => {
            let key = |row: &BinlogRow| -> Result<(String, String), CrdtError> {
                Ok((object(row)?, text(value(row, t.element, m)?, "element", m)?))
            };
            let removed = |row: &BinlogRow| -> Result<bool, CrdtError> {
                match t.tombstone {
                    Some(i) => match value(row, i, m)? {
                        Value::NULL => Ok(false),
                        v => Ok(int(v, "tombstone", m)? != 0),
                    },
                    None => Ok(false),
                }
            };
            let old = before.map(key).transpose()?;
            let new = after
                .map(|r| Ok::<_, CrdtError>((key(r)?, removed(r)?)))
                .transpose()?;
            let row_for_ts = after.or(before);
            if let Some((obj, elem)) = &old
                && new
                    .as_ref()
                    .is_none_or(|(k, _)| k != &(obj.clone(), elem.clone()))
                && let Some(row) = row_for_ts
            {
                // delete, or an update that moved the element
                let ts = ts_of(row, at.index + out.len() as u64)?;
                let e = LwwEntry {
                    add: None,
                    remove: Some(Stamp::new(ts, site)),
                };
                out.push(change(
                    obj.clone(),
                    ts,
                    Delta::Lww(LwwDelta {
                        entries: vec![(elem.clone(), e)],
                    }),
                ));
            }
            if let (Some(((obj, elem), gone)), Some(row)) = (new, after) {
                let ts = ts_of(row, at.index + out.len() as u64)?;
                let stamp = Some(Stamp::new(ts, site));
                let e = if gone {
                    LwwEntry {
                        add: None,
                        remove: stamp,
                    }
                } else {
                    LwwEntry {
                        add: stamp,
                        remove: None,
                    }
                };
                out.push(change(
                    obj,
                    ts,
                    Delta::Lww(LwwDelta {
                        entries: vec![(elem, e)],
                    }),
                ));
            }
        }
        RowKind::Counter { .. } => {
            let amount = |row: &BinlogRow| -> Result<(String, i64), CrdtError> {
                Ok((object(row)?, int(value(row, t.element, m)?, "delta", m)?))
            };
            let mut moves: Vec<(String, i64)> = Vec::new();
            if let Some(r) = before {
                let (o, d) = amount(r)?;
                moves.push((o, d.checked_neg().unwrap_or(i64::MAX)));
            }
            if let Some(r) = after {
                let (o, d) = amount(r)?;
                match moves.first_mut() {
                    Some((prev, dd)) if *prev == o => *dd = dd.saturating_add(d),
                    _ => moves.push((o, d)),
                }
            }
            let row_for_ts = after.or(before);
            for (obj, by) in moves {
                let Some(row) = row_for_ts else { break };
                if by == 0 {
                    continue;
                }
                let ts = ts_of(row, at.index + out.len() as u64)?;
                let e = counters
                    .entry(obj.clone())
                    .or_insert(PnEntry { site, p: 0, n: 0 });
                e.site = site;
                if by > 0 {
                    e.p = e.p.saturating_add(by.unsigned_abs());
                } else {
                    e.n = e.n.saturating_add(by.unsigned_abs());
                }
                let delta = Delta::Counter(PnDelta { entries: vec![*e] });
                out.push(change(obj, ts, delta));
            }
        }
    }
    Ok(out)
}
