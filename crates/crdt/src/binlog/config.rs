//! [`BinlogConfig`] and [`TableMapping`]: which tables become which CRDT changes.

use serde::{Deserialize, Serialize};

use crate::error::CrdtError;

/// What a mapped table's rows are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RowKind {
    /// Each row is one element of the LWW set named by the object column
    /// (e.g. `likes(post_id, user_id, ...)`: who liked a post). Insert and
    /// update add the element; delete removes it, and so does a non-zero
    /// `tombstone` column (a soft delete). An update that changes the object
    /// or the element removes the old one.
    LwwSet {
        /// Column holding the element.
        element: String,
        /// Optional soft-delete column: non-zero means removed.
        #[serde(default)]
        tombstone: Option<String>,
    },
    /// Each row carries an amount added to the counter named by the object
    /// column (e.g. `like_events(post_id, delta)`): the counter is the sum of
    /// the column over the table. Insert adds it, delete subtracts it, update
    /// adds the difference.
    Counter {
        /// Column holding the signed amount.
        delta: String,
    },
}

/// One mapped table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMapping {
    /// Database (schema) of the table.
    pub schema: String,
    /// Table name.
    pub table: String,
    /// The Debezium `aggregatetype` the changes carry (e.g. `post`).
    pub aggregate_type: String,
    /// Column holding the object id (the Kafka key).
    pub object: String,
    /// Prefix put before the object id (e.g. `likes:`), default none.
    #[serde(default)]
    pub object_prefix: String,
    /// Optional column with the write's time in ms since the Unix epoch
    /// (an integer): the change's HLC time. Without it the event's time is
    /// used (seconds, then GTID order, then row order).
    #[serde(default)]
    pub lww_column: Option<String>,
    /// What the rows are.
    #[serde(flatten)]
    pub kind: RowKind,
}

impl TableMapping {
    /// `schema.table`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    fn columns(&self) -> Vec<&str> {
        let mut c = vec![self.object.as_str()];
        match &self.kind {
            RowKind::LwwSet { element, tombstone } => {
                c.push(element);
                if let Some(t) = tombstone {
                    c.push(t);
                }
            }
            RowKind::Counter { delta } => c.push(delta),
        }
        if let Some(l) = &self.lww_column {
            c.push(l);
        }
        c
    }
}

/// Configuration of a [`BinlogRelay`](super::BinlogRelay) (serde, e.g. from a
/// config file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogConfig {
    /// The cell id the changes are published as (the `x-crdt-origin` header;
    /// the site of their stamps). If the cell also runs an outbox relay, give
    /// the binlog source its own origin (e.g. `sh-cdc`): sequence numbers of
    /// the two sources are independent.
    pub origin: String,
    /// Name of this relay: the key of its row in the position table.
    pub name: String,
    /// The `server_id` the relay registers with (unique among the source's
    /// replicas and relays).
    pub server_id: u32,
    /// Mapped tables.
    pub tables: Vec<TableMapping>,
    /// Row changes per batch (published, then the position stored), default 500.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_batch() -> usize {
    500
}

impl BinlogConfig {
    /// Validates a configuration.
    ///
    /// # Errors
    /// [`CrdtError::Config`]: an origin that is not a cell id, an empty name,
    /// `server_id` 0, no tables, a table mapped twice, an empty column name.
    pub fn try_new(
        origin: &str,
        name: &str,
        server_id: u32,
        tables: Vec<TableMapping>,
    ) -> Result<Self, CrdtError> {
        let c = BinlogConfig {
            origin: origin.to_string(),
            name: name.to_string(),
            server_id,
            tables,
            batch: 500,
        };
        c.validate()?;
        Ok(c)
    }

    /// Row changes per batch (at least 1).
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Checks a configuration (also one read with serde).
    ///
    /// # Errors
    /// As [`try_new`](Self::try_new).
    pub fn validate(&self) -> Result<(), CrdtError> {
        let bad = |m: String| Err(CrdtError::Config(format!("binlog: {m}")));
        if self.origin.parse::<cellctx::CellId>().is_err() {
            return bad(format!("origin {:?} is not a cell id", self.origin));
        }
        if self.name.is_empty() || self.name.len() > 128 {
            return bad("name must be 1 to 128 bytes".into());
        }
        if self.server_id == 0 {
            return bad("server_id must not be 0".into());
        }
        if self.tables.is_empty() {
            return bad("no tables mapped".into());
        }
        if self.batch == 0 {
            return bad("batch must be at least 1".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.tables {
            if !seen.insert((t.schema.as_str(), t.table.as_str())) {
                return bad(format!("table {} mapped twice", t.qualified()));
            }
            if t.schema.is_empty() || t.table.is_empty() || t.aggregate_type.is_empty() {
                return bad(format!(
                    "table {}: empty schema, table or aggregate type",
                    t.qualified()
                ));
            }
            if t.columns().iter().any(|c| c.is_empty()) {
                return bad(format!("table {}: empty column name", t.qualified()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_deserializes_and_validates() {
        let json = r#"{
            "origin": "sh-cdc", "name": "sh", "server_id": 4001, "batch": 100,
            "tables": [
                {"schema": "shop", "table": "likes", "aggregate_type": "post", "object": "post_id",
                 "object_prefix": "likes:", "kind": "lww_set", "element": "user_id", "tombstone": "deleted"},
                {"schema": "shop", "table": "like_events", "aggregate_type": "post", "object": "post_id",
                 "kind": "counter", "delta": "delta", "lww_column": "at_ms"}
            ]
        }"#;
        let c: BinlogConfig = serde_json::from_str(json).unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.tables[1].kind,
            RowKind::Counter {
                delta: "delta".into()
            }
        );
        assert_eq!(c.tables[1].lww_column.as_deref(), Some("at_ms"));
    }

    #[test]
    fn invalid_configs_are_errors() {
        let t = |schema: &str, table: &str, element: &str| TableMapping {
            schema: schema.into(),
            table: table.into(),
            aggregate_type: "post".into(),
            object: "post_id".into(),
            object_prefix: String::new(),
            lww_column: None,
            kind: RowKind::LwwSet {
                element: element.into(),
                tombstone: None,
            },
        };
        let ok = || vec![t("s", "likes", "user_id")];
        assert!(BinlogConfig::try_new("sh", "r", 7, ok()).is_ok());
        for bad in [
            BinlogConfig::try_new("not a cell!", "r", 7, ok()),
            BinlogConfig::try_new("sh", "", 7, ok()),
            BinlogConfig::try_new("sh", "r", 0, ok()),
            BinlogConfig::try_new("sh", "r", 7, Vec::new()),
            BinlogConfig::try_new(
                "sh",
                "r",
                7,
                vec![t("s", "likes", "u"), t("s", "likes", "v")],
            ),
            BinlogConfig::try_new("sh", "r", 7, vec![t("s", "likes", "")]),
        ] {
            assert!(matches!(bad, Err(CrdtError::Config(_))), "{bad:?}");
        }
    }
}
