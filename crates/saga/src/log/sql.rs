//! The log's SQL, per dialect.
//!
//! The statements are the same on the three databases except for placeholders
//! (`?` on MySQL/MariaDB and SQLite, `$n` on PostgreSQL), the large text type
//! (`MEDIUMTEXT` on MySQL, `TEXT` elsewhere) and the index (inline on MySQL, which
//! lacks `CREATE INDEX IF NOT EXISTS`). Times are `BIGINT` milliseconds and every
//! integer is `BIGINT`, so one set of Rust types decodes on all three.

/// The database behind a [`SagaLog`](crate::SagaLog) (shared with the SDK's other durable logs).
pub use sqldialect::Dialect;

/// The longest table prefix.
const MAX_PREFIX_LEN: usize = 32;

/// The statements, built once for a dialect and table prefix.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub(crate) saga_table: String,
    pub(crate) step_table: String,
    pub(crate) create: Vec<String>,
    pub(crate) insert_saga: String,
    pub(crate) insert_step: String,
    pub(crate) acquire: String,
    pub(crate) renew: String,
    pub(crate) set_state: String,
    pub(crate) finish: String,
    pub(crate) release: String,
    pub(crate) update_step: String,
    pub(crate) candidates: String,
    pub(crate) load_saga: String,
    pub(crate) load_steps: String,
    pub(crate) list_stuck: String,
    pub(crate) unstick: String,
    /// Finished sagas last written before a time, oldest first.
    pub(crate) finished_before: String,
    /// Finished sagas past the newest N (LIMIT batch OFFSET keep).
    pub(crate) finished_beyond: String,
    dialect: Dialect,
}

/// The states retention may delete: finished and never touched again on
/// their own (stuck sagas wait for an operator and are kept).
pub(crate) const PRUNABLE: &str = "('committed', 'compensated')";

const SAGA_COLUMNS: &str = "xid, saga_name, input_json, state, step_count, owner_id, lease_until, failed_step, error_text, created_ms, updated_ms";

impl Statements {
    pub(crate) fn new(dialect: Dialect, prefix: &str) -> Self {
        let s = format!("{prefix}saga_log");
        let t = format!("{prefix}saga_step");
        let big = if dialect == Dialect::MySql {
            "MEDIUMTEXT"
        } else {
            "TEXT"
        };
        let inline_index = if dialect == Dialect::MySql {
            format!(",\n  INDEX {s}_state (state),\n  INDEX {s}_finished (state, updated_ms)")
        } else {
            String::new()
        };
        let mut create = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {s} (
  xid VARCHAR(64) NOT NULL PRIMARY KEY,
  saga_name VARCHAR(64) NOT NULL,
  input_json {big} NOT NULL,
  state VARCHAR(16) NOT NULL,
  step_count BIGINT NOT NULL,
  owner_id VARCHAR(128) NULL,
  lease_until BIGINT NOT NULL,
  lease_seq BIGINT NOT NULL,
  failed_step BIGINT NULL,
  error_text {big} NULL,
  created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL{inline_index}
)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
  xid VARCHAR(64) NOT NULL,
  step_idx BIGINT NOT NULL,
  step_name VARCHAR(64) NOT NULL,
  state VARCHAR(16) NOT NULL,
  attempts BIGINT NOT NULL,
  output_json {big} NULL,
  error_text {big} NULL,
  updated_ms BIGINT NOT NULL,
  PRIMARY KEY (xid, step_idx)
)"
            ),
        ];
        if dialect != Dialect::MySql {
            create.push(format!(
                "CREATE INDEX IF NOT EXISTS {s}_state ON {s} (state)"
            ));
            create.push(format!(
                "CREATE INDEX IF NOT EXISTS {s}_finished ON {s} (state, updated_ms)"
            ));
        }
        let live = "('running', 'compensating')";
        let p = |sql: String| dialect.numbered(&sql);
        Statements {
            create,
            insert_saga: p(format!(
                "INSERT INTO {s} (xid, saga_name, input_json, state, step_count, owner_id, lease_until, lease_seq, failed_step, error_text, created_ms, updated_ms) \
                 VALUES (?, ?, ?, 'running', ?, ?, ?, 0, NULL, NULL, ?, ?)"
            )),
            insert_step: p(format!(
                "INSERT INTO {t} (xid, step_idx, step_name, state, attempts, output_json, error_text, updated_ms) \
                 VALUES (?, ?, ?, 'pending', 0, NULL, NULL, ?)"
            )),
            acquire: p(format!(
                "UPDATE {s} SET owner_id = ?, lease_until = ?, lease_seq = lease_seq + 1 \
                 WHERE xid = ? AND state IN {live} AND (owner_id IS NULL OR owner_id = ? OR lease_until < ?)"
            )),
            renew: p(format!(
                "UPDATE {s} SET lease_until = ?, lease_seq = lease_seq + 1 WHERE xid = ? AND owner_id = ?"
            )),
            set_state: p(format!(
                "UPDATE {s} SET state = ?, failed_step = ?, error_text = ?, lease_until = ?, lease_seq = lease_seq + 1, updated_ms = ? \
                 WHERE xid = ? AND owner_id = ?"
            )),
            finish: p(format!(
                "UPDATE {s} SET state = ?, owner_id = NULL, lease_until = 0, lease_seq = lease_seq + 1, updated_ms = ? \
                 WHERE xid = ? AND owner_id = ?"
            )),
            release: p(format!(
                "UPDATE {s} SET owner_id = NULL, lease_until = 0, lease_seq = lease_seq + 1 WHERE xid = ? AND owner_id = ?"
            )),
            update_step: p(format!(
                "UPDATE {t} SET state = ?, attempts = ?, output_json = ?, error_text = ?, updated_ms = ? WHERE xid = ? AND step_idx = ?"
            )),
            candidates: p(format!(
                "SELECT xid FROM {s} WHERE state IN {live} AND (owner_id IS NULL OR owner_id = ? OR lease_until < ?) \
                 ORDER BY created_ms LIMIT ?"
            )),
            load_saga: p(format!("SELECT {SAGA_COLUMNS} FROM {s} WHERE xid = ?")),
            load_steps: p(format!(
                "SELECT step_idx, step_name, state, attempts, output_json, error_text FROM {t} WHERE xid = ? ORDER BY step_idx"
            )),
            list_stuck: format!("SELECT xid FROM {s} WHERE state = 'stuck' ORDER BY created_ms"),
            unstick: p(format!(
                "UPDATE {s} SET state = 'compensating', owner_id = ?, lease_until = ?, lease_seq = lease_seq + 1, \
                 updated_ms = ? WHERE xid = ? AND state = 'stuck'"
            )),
            finished_before: p(format!(
                "SELECT xid FROM {s} WHERE state IN {PRUNABLE} AND updated_ms < ? ORDER BY updated_ms, xid LIMIT ?"
            )),
            finished_beyond: p(format!(
                "SELECT xid FROM {s} WHERE state IN {PRUNABLE} ORDER BY updated_ms DESC, xid DESC LIMIT ? OFFSET ?"
            )),
            saga_table: s,
            step_table: t,
            dialect,
        }
    }

    /// Deletes the step rows of `n` sagas (`xid IN (...)`).
    pub(crate) fn delete_steps(&self, n: usize) -> String {
        format!("DELETE FROM {} WHERE xid IN ({})", self.step_table, self.dialect.placeholders(n))
    }

    /// Deletes `n` saga rows, if they are still finished.
    pub(crate) fn delete_sagas(&self, n: usize) -> String {
        format!(
            "DELETE FROM {} WHERE state IN {PRUNABLE} AND xid IN ({})",
            self.saga_table,
            self.dialect.placeholders(n)
        )
    }
}

/// Validates a table prefix: empty, or at most 32 bytes of letters, digits
/// and `_`, not starting with a digit.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), crate::Error> {
    if prefix.is_empty() {
        return Ok(());
    }
    sqldialect::check_identifier(prefix, MAX_PREFIX_LEN)
        .map_err(|e| crate::Error::InvalidConfig(format!("table prefix: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn postgres_gets_numbered_placeholders() {
        let st = Statements::new(Dialect::Postgres, "x_");
        assert_eq!(
            st.renew,
            "UPDATE x_saga_log SET lease_until = $1, lease_seq = lease_seq + 1 WHERE xid = $2 AND owner_id = $3"
        );
        let my = Statements::new(Dialect::MySql, "");
        assert_eq!(
            my.renew,
            "UPDATE saga_log SET lease_until = ?, lease_seq = lease_seq + 1 WHERE xid = ? AND owner_id = ?"
        );
        assert!(my.create[0].contains("INDEX saga_log_state (state)"));
        assert!(my.create[0].contains("INDEX saga_log_finished (state, updated_ms)"));
        assert_eq!(my.create.len(), 2);
        assert_eq!(st.create.len(), 4);
        assert_eq!(
            st.delete_sagas(2),
            "DELETE FROM x_saga_log WHERE state IN ('committed', 'compensated') AND xid IN ($1, $2)"
        );
        assert_eq!(my.delete_steps(3), "DELETE FROM saga_step WHERE xid IN (?, ?, ?)");
    }

    #[test]
    fn prefix_is_validated() {
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("app_1_").is_ok());
        assert!(validate_prefix("1app").is_err());
        assert!(validate_prefix("a-b").is_err());
        assert!(validate_prefix("a; DROP TABLE x").is_err());
        assert!(validate_prefix(&"a".repeat(33)).is_err());
    }
}
