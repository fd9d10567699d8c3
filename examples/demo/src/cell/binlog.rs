//! `--replication binlog`: the cell writes its business tables only, and a
//! `crdt::binlog::BinlogRelay` reads them from the MySQL/MariaDB binary log and
//! publishes each row to the replication topic as the outbox relay would (a
//! like's id joins `like_ids:POST`, a comment's id `comments:POST`, both LWW
//! sets). The relay publishes as `CELL-cdc`: the cell's own replicator applies
//! its writes from the topic like any other cell's.

use std::str::FromStr;

use cellctx::CellId;
use crdt::binlog::{BinlogConfig, BinlogRelay, PositionStore, RowKind, TableMapping};
use sqlx::mysql::MySqlConnectOptions;

use super::storage::Storage;
use crate::error::DemoError;

/// The mapped tables: each row of `likes` and `comments` is one element (its
/// id) of its post's set.
fn mappings(schema: &str, storage: &Storage) -> Vec<TableMapping> {
    let set = |table: &str, prefix: &str| TableMapping {
        schema: schema.to_string(),
        table: table.to_string(),
        aggregate_type: "post".into(),
        object: "post".into(),
        object_prefix: prefix.into(),
        lww_column: None,
        kind: RowKind::LwwSet { element: "id".into(), tombstone: None },
    };
    vec![set(&storage.likes, "like_ids:"), set(&storage.comments, "comments:")]
}

/// Starts the cell's binlog relay on `url` (the cells' MySQL/MariaDB), its
/// position in `{prefix}binlog_positions`. Returns once the relay has read
/// (and stored) its start position, so no write the cell acknowledges after
/// this is missed. Connection and Kafka errors are retried by the relay; one
/// that needs an operator (DDL on a mapped table, a purged binlog, a lost
/// privilege) stops it and is logged, and the cell's writes stay pending
/// (`/admin/status`), never skipped.
pub(crate) async fn start(url: &str, prefix: &str, storage: &Storage, cell: &CellId, kafka: &str, topic: &str) -> Result<(), DemoError> {
    let opts = MySqlConnectOptions::from_str(url)?;
    let schema = opts
        .get_database()
        .ok_or_else(|| DemoError::Config(format!("DEMO_DATABASE_URL {url:?} names no database (…/test)")))?
        .to_string();
    let positions = PositionStore::try_new(url, &format!("{prefix}binlog_positions"))?;
    positions.migrate().await?;
    // a replica id no other relay of this machine takes (one per process)
    let server_id = 1_000_000u32.saturating_add(std::process::id());
    let config = BinlogConfig::try_new(&format!("{cell}-cdc"), &format!("{prefix}binlog"), server_id, mappings(&schema, storage))?;
    let mut relay = BinlogRelay::try_new(config, url, positions, kafka, topic)?;
    // the first batch opens the stream and stores the start position
    relay.run_once().await?;
    let cell = cell.clone();
    tokio::spawn(async move {
        if let Err(e) = relay.run(std::future::pending()).await {
            tracing::error!(cell = %cell, error = %e, "binlog relay stopped: the cell's writes are no longer replicated");
        }
    });
    Ok(())
}
