//! Checks before and while streaming: row format, privileges, purged
//! positions, DDL on mapped tables; server errors mapped to typed errors.

use std::collections::BTreeMap;

use mysql_async::Conn;
use mysql_async::prelude::Queryable;

use super::config::TableMapping;
use super::position::BinlogPosition;
use crate::error::CrdtError;

/// `ER_SPECIFIC_ACCESS_DENIED_ERROR`, `ER_DBACCESS_DENIED_ERROR`, `ER_ACCESS_DENIED_ERROR`, `ER_TABLEACCESS_DENIED_ERROR`.
const ACCESS_DENIED: [u16; 4] = [1227, 1044, 1045, 1142];
/// `ER_MASTER_FATAL_ERROR_READING_BINLOG` (e.g. the requested file was purged).
const FATAL_READING_BINLOG: u16 = 1236;

/// Maps a server error to a typed error: missing privileges, purged logs.
pub(crate) fn classify(e: mysql_async::Error, at: &BinlogPosition) -> CrdtError {
    if let mysql_async::Error::Server(s) = &e {
        if ACCESS_DENIED.contains(&s.code) {
            return CrdtError::BinlogPrivilege {
                detail: s.message.clone(),
            };
        }
        if s.code == FATAL_READING_BINLOG {
            return CrdtError::BinlogPurged {
                file: at.file.clone(),
                position: at.position,
            };
        }
    }
    CrdtError::Mysql(e)
}

/// Checks the server logs rows (`log_bin` on, `binlog_format=ROW`).
pub(crate) async fn check_format(conn: &mut Conn) -> Result<(), CrdtError> {
    let (log_bin, format): (i64, String) = conn
        .query_first("SELECT @@GLOBAL.log_bin, @@GLOBAL.binlog_format")
        .await?
        .ok_or_else(|| CrdtError::BinlogFormat {
            found: "unknown".into(),
        })?;
    if log_bin == 0 {
        return Err(CrdtError::BinlogFormat {
            found: "OFF (log_bin is disabled)".into(),
        });
    }
    if !format.eq_ignore_ascii_case("ROW") {
        return Err(CrdtError::BinlogFormat { found: format });
    }
    Ok(())
}

/// The binlog files the server still has (needs REPLICATION CLIENT).
pub(crate) async fn binary_logs(conn: &mut Conn) -> Result<Vec<String>, CrdtError> {
    let rows: Vec<mysql_async::Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(|e| classify(e, &BinlogPosition::default()))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.get::<String, _>(0))
        .collect())
}

/// The server's current end of log (needs REPLICATION CLIENT).
pub(crate) async fn current_end(conn: &mut Conn) -> Result<BinlogPosition, CrdtError> {
    let row: Option<mysql_async::Row> = conn
        .query_first("SHOW MASTER STATUS")
        .await
        .map_err(|e| classify(e, &BinlogPosition::default()))?;
    let row = row.ok_or_else(|| CrdtError::BinlogFormat {
        found: "OFF (no master status)".into(),
    })?;
    let file: String = row
        .get(0)
        .ok_or_else(|| CrdtError::BinlogRow("SHOW MASTER STATUS: no file".into()))?;
    let position: u64 = row
        .get(1)
        .ok_or_else(|| CrdtError::BinlogRow("SHOW MASTER STATUS: no position".into()))?;
    Ok(BinlogPosition {
        file,
        position,
        gtid: String::new(),
    })
}

/// Errors when `at.file` is no longer among the server's binlogs.
pub(crate) fn check_not_purged(logs: &[String], at: &BinlogPosition) -> Result<(), CrdtError> {
    if logs.contains(&at.file) {
        Ok(())
    } else {
        Err(CrdtError::BinlogPurged {
            file: at.file.clone(),
            position: at.position,
        })
    }
}

/// 0-based positions of `table`'s columns, by lower-case name.
pub(crate) async fn column_positions(
    conn: &mut Conn,
    table: &TableMapping,
) -> Result<BTreeMap<String, usize>, CrdtError> {
    let rows: Vec<(String, u64)> = conn
        .exec(
            "SELECT COLUMN_NAME, ORDINAL_POSITION FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (table.schema.as_str(), table.table.as_str()),
        )
        .await?;
    if rows.is_empty() {
        return Err(CrdtError::Config(format!(
            "binlog: table {} not found",
            table.qualified()
        )));
    }
    Ok(rows
        .into_iter()
        .map(|(name, pos)| {
            (
                name.to_ascii_lowercase(),
                usize::try_from(pos.saturating_sub(1)).unwrap_or(usize::MAX),
            )
        })
        .collect())
}

/// Splits SQL into lower-case identifier tokens (backquotes and dots separate).
fn tokens(sql: &str) -> Vec<String> {
    sql.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .filter(|t| !t.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// What a statement logged as a query event is, for mapped tables.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Statement {
    /// Changes the definition (or all rows) of the mapped table.
    Ddl(String),
    /// Writes rows of the mapped table as a statement (not row events).
    Dml(String),
    /// Anything else.
    Other,
}

/// Classifies a query event's statement run in `schema` against the mapped tables.
pub(crate) fn statement(sql: &str, schema: &str, tables: &[TableMapping]) -> Statement {
    let toks = tokens(sql);
    let Some(first) = toks.first() else {
        return Statement::Other;
    };
    let ddl = matches!(
        first.as_str(),
        "alter" | "drop" | "rename" | "truncate" | "create"
    );
    let dml = matches!(first.as_str(), "insert" | "update" | "delete" | "replace");
    if !ddl && !dml {
        return Statement::Other;
    }
    let schema = schema.to_ascii_lowercase();
    for t in tables {
        let (s, n) = (t.schema.to_ascii_lowercase(), t.table.to_ascii_lowercase());
        let hit =
            toks.windows(2).any(|w| w[0] == s && w[1] == n) || (schema == s && toks.contains(&n));
        if hit {
            return if ddl {
                Statement::Ddl(t.qualified())
            } else {
                Statement::Dml(t.qualified())
            };
        }
    }
    Statement::Other
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::binlog::config::RowKind;

    fn likes() -> Vec<TableMapping> {
        vec![TableMapping {
            schema: "shop".into(),
            table: "likes".into(),
            aggregate_type: "post".into(),
            object: "post_id".into(),
            object_prefix: String::new(),
            lww_column: None,
            kind: RowKind::LwwSet {
                element: "user_id".into(),
                tombstone: None,
            },
        }]
    }

    #[test]
    fn ddl_and_statement_writes_on_mapped_tables_are_recognised() {
        let t = likes();
        let ddl = |sql: &str, schema: &str| statement(sql, schema, &t);
        assert_eq!(
            ddl("ALTER TABLE likes ADD c INT", "shop"),
            Statement::Ddl("shop.likes".into())
        );
        assert_eq!(
            ddl("alter table `shop`.`likes` drop c", "other"),
            Statement::Ddl("shop.likes".into())
        );
        assert_eq!(
            ddl("TRUNCATE likes", "shop"),
            Statement::Ddl("shop.likes".into())
        );
        assert_eq!(
            ddl("RENAME TABLE likes TO old_likes", "shop"),
            Statement::Ddl("shop.likes".into())
        );
        assert_eq!(
            ddl("INSERT INTO shop.likes VALUES ('p', 'u')", "x"),
            Statement::Dml("shop.likes".into())
        );
        // other tables, other schemas, non-writes
        assert_eq!(
            ddl("ALTER TABLE likes_archive ADD c INT", "shop"),
            Statement::Other
        );
        assert_eq!(
            ddl("ALTER TABLE likes ADD c INT", "other"),
            Statement::Other
        );
        assert_eq!(ddl("SELECT * FROM likes", "shop"), Statement::Other);
        assert_eq!(ddl("BEGIN", "shop"), Statement::Other);
        assert_eq!(ddl("", "shop"), Statement::Other);
    }

    #[test]
    fn purged_is_judged_by_the_stored_file() {
        let logs = vec!["binlog.000002".to_string(), "binlog.000003".to_string()];
        let at = |f: &str| BinlogPosition {
            file: f.into(),
            position: 4,
            gtid: String::new(),
        };
        assert!(check_not_purged(&logs, &at("binlog.000002")).is_ok());
        assert!(matches!(
            check_not_purged(&logs, &at("binlog.000001")),
            Err(CrdtError::BinlogPurged { position: 4, .. })
        ));
    }
}
