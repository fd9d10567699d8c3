//! [`PositionStore`]: where a relay's binlog position (and counter totals)
//! live, in a table of a MySQL/MariaDB database the relay is given.

use std::collections::BTreeMap;

use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::counter::PnEntry;
use crate::error::CrdtError;

/// A position in the source's binary log: everything before it was published
/// and acknowledged by Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// Binlog file name (e.g. `binlog.000003`).
    pub file: String,
    /// Offset in the file of the next event to read.
    pub position: u64,
    /// GTID of the last transaction published (`domain-server-seq` on
    /// MariaDB, `uuid:gno` on MySQL), empty before the first.
    pub gtid: String,
}

/// What a relay stores after each acknowledged batch, in one row.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Checkpoint {
    /// The position.
    pub position: BinlogPosition,
    /// Running totals of counter objects at this position (a counter delta
    /// carries the origin's total, so a replay must start from the totals of
    /// the position it replays from).
    pub counters: BTreeMap<String, PnEntry>,
}

/// The position table: one row per relay name (`relay`, `file`, `pos`,
/// `gtid`, `counters`), written in one statement, so position and counter
/// totals never disagree.
#[derive(Debug, Clone)]
pub struct PositionStore {
    pool: mysql_async::Pool,
    table: String,
}

impl PositionStore {
    /// A store in `table` (letters, digits, `_`; at most 60 bytes) of the
    /// database at `url` (`mysql://...`; may be the source server itself).
    ///
    /// # Errors
    /// [`CrdtError::Config`] for a bad table name or URL.
    pub fn try_new(url: &str, table: &str) -> Result<Self, CrdtError> {
        sqldialect::check_identifier(table, crate::outbox::MAX_TABLE_LEN)
            .map_err(|e| crate::outbox::config_error("binlog position table", e))?;
        let opts = mysql_async::Opts::from_url(url)
            .map_err(|e| CrdtError::Config(format!("binlog position url: {e}")))?;
        Ok(PositionStore {
            pool: mysql_async::Pool::new(opts),
            table: table.to_string(),
        })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table if missing.
    pub async fn migrate(&self) -> Result<(), CrdtError> {
        let mut conn = self.pool.get_conn().await?;
        conn.query_drop(format!(
            "CREATE TABLE IF NOT EXISTS {} (relay VARCHAR(128) PRIMARY KEY, file VARCHAR(255) NOT NULL, \
             pos BIGINT UNSIGNED NOT NULL, gtid VARCHAR(255) NOT NULL, counters LONGBLOB NOT NULL)",
            self.table
        ))
        .await?;
        Ok(())
    }

    /// The checkpoint stored for relay `name`, if any.
    ///
    /// # Errors
    /// A database error, or stored counters that do not decode.
    pub async fn load(&self, name: &str) -> Result<Option<Checkpoint>, CrdtError> {
        let mut conn = self.pool.get_conn().await?;
        let row: Option<(String, u64, String, Vec<u8>)> = conn
            .exec_first(
                format!(
                    "SELECT file, pos, gtid, counters FROM {} WHERE relay = ?",
                    self.table
                ),
                (name,),
            )
            .await?;
        let Some((file, position, gtid, counters)) = row else {
            return Ok(None);
        };
        let counters: BTreeMap<String, PnEntry> = codec::decode(&counters)?;
        Ok(Some(Checkpoint {
            position: BinlogPosition {
                file,
                position,
                gtid,
            },
            counters,
        }))
    }

    /// Stores relay `name`'s checkpoint (replacing the previous one).
    pub async fn save(&self, name: &str, checkpoint: &Checkpoint) -> Result<(), CrdtError> {
        let counters = codec::encode(&checkpoint.counters)?;
        let p = &checkpoint.position;
        let mut conn = self.pool.get_conn().await?;
        conn.exec_drop(
            format!(
                "INSERT INTO {} (relay, file, pos, gtid, counters) VALUES (?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE file = VALUES(file), pos = VALUES(pos), gtid = VALUES(gtid), \
                 counters = VALUES(counters)",
                self.table
            ),
            (name, p.file.as_str(), p.position, p.gtid.as_str(), counters),
        )
        .await?;
        Ok(())
    }

    /// Deletes relay `name`'s row (it then starts at the source's current end).
    /// Its counter totals go with it: restart such a relay under a new origin,
    /// or its smaller totals are ignored by replicas that saw the old ones.
    pub async fn reset(&self, name: &str) -> Result<(), CrdtError> {
        let mut conn = self.pool.get_conn().await?;
        conn.exec_drop(
            format!("DELETE FROM {} WHERE relay = ?", self.table),
            (name,),
        )
        .await?;
        Ok(())
    }
}
