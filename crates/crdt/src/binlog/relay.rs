//! [`BinlogRelay`]: row events of mapped tables to the replication topic.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, EventData};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest, Conn};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::checks::{self, Statement};
use super::config::BinlogConfig;
use super::mapper::{BoundTable, RowAt, row_changes};
use super::metrics::BinlogMetrics;
use super::position::{BinlogPosition, Checkpoint, PositionStore};
use crate::counter::PnEntry;
use crate::error::CrdtError;
use crate::kafka::Relay;
use crate::outbox::OutboxRow;
use crate::replica::Change;

/// MariaDB's GTID event (`GTID_EVENT`, 0xa2): `seq_no` (u64 LE), `domain_id` (u32 LE), flags.
const MARIADB_GTID_EVENT: u8 = 0xa2;
/// MariaDB's `FL_STANDALONE` GTID flag: a statement without BEGIN/COMMIT (DDL).
const MARIADB_FL_STANDALONE: u8 = 1;
/// MariaDB's `LOG_EVENT_SKIP_REPLICATION_F`: the event was written with
/// `@@skip_replication = 1` (see [`MARK_REPLICATED_SQL`](super::MARK_REPLICATED_SQL)).
const SKIP_REPLICATION_F: u16 = 0x8000;
/// `LOG_EVENT_ARTIFICIAL_F`: made up by the server for the stream, not in the file.
const ARTIFICIAL_F: u16 = 0x20;
/// Bits of a sequence number for the change's index in its transaction.
const INDEX_BITS: u32 = 20;

/// The changes of complete transactions read from the binlog, and the
/// position after the last of them.
#[derive(Debug, Clone, Default)]
pub struct BinlogBatch {
    /// Sequence number (from the transaction's GTID and the change's place in
    /// it) and change, in binlog order.
    pub changes: Vec<(u64, Change)>,
    /// The position after the batch's last transaction.
    pub end: BinlogPosition,
    counters: BTreeMap<String, PnEntry>,
}

/// A transaction being read.
#[derive(Debug)]
struct Tx {
    gtid: String,
    gtid_seq: u64,
    secs: u32,
    skip: bool,
    standalone: bool,
    changes: Vec<(u64, Change)>,
}

/// Reading state: everything but the stream, so events borrow the stream's
/// table maps while this changes.
#[derive(Debug, Default)]
struct Reader {
    tables: Vec<BoundTable>,
    file: String,
    read_pos: BinlogPosition,
    counters: BTreeMap<String, PnEntry>,
    tx: Option<Tx>,
    /// Row events skipped as marked replicated, not yet counted in the metrics.
    skipped: u64,
}

/// Reads a MySQL/MariaDB binlog (row format) and publishes the mapped tables'
/// row changes to the replication topic, exactly as
/// [`Relay`](crate::kafka::Relay) publishes outbox rows; stores its position
/// only after Kafka acknowledged a batch. See the [module docs](super).
pub struct BinlogRelay {
    config: BinlogConfig,
    origin: cellctx::CellId,
    source: mysql_async::Opts,
    positions: PositionStore,
    producer: FutureProducer,
    topic: String,
    send_timeout: Duration,
    idle: Duration,
    linger: Duration,
    max_wait: Duration,
    stream: Option<BinlogStream>,
    reader: Reader,
    committed: Checkpoint,
    fatal: Option<CrdtError>,
    metrics: BinlogMetrics,
}

impl std::fmt::Debug for BinlogRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinlogRelay")
            .field("name", &self.config.name)
            .field("origin", &self.origin)
            .field("topic", &self.topic)
            .field("committed", &self.committed.position)
            .finish_non_exhaustive()
    }
}

impl BinlogRelay {
    /// A relay reading the server at `source_url` (`mysql://user:pass@host:port`;
    /// the user needs `REPLICATION SLAVE, REPLICATION CLIENT` and `SELECT` on
    /// `information_schema`), keeping its position in `positions`, publishing
    /// to `topic` on `bootstrap_servers`. Nothing is read until the first
    /// [`read_batch`](Self::read_batch) or [`run`](Self::run).
    ///
    /// # Errors
    /// [`CrdtError::Config`] for an invalid config, URL or topic; a Kafka error.
    pub fn try_new(
        config: BinlogConfig,
        source_url: &str,
        positions: PositionStore,
        bootstrap_servers: &str,
        topic: &str,
    ) -> Result<Self, CrdtError> {
        config.validate()?;
        let config_name = config.name.clone();
        if topic.is_empty() {
            return Err(CrdtError::Config("empty topic".into()));
        }
        let origin = config
            .origin
            .parse()
            .map_err(|_| CrdtError::Config(format!("binlog: origin {:?}", config.origin)))?;
        let source = mysql_async::Opts::from_url(source_url)
            .map_err(|e| CrdtError::Config(format!("binlog source url: {e}")))?;
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("linger.ms", "0")
            .create()?;
        Ok(BinlogRelay {
            config,
            origin,
            source,
            positions,
            producer,
            topic: topic.to_string(),
            send_timeout: Duration::from_secs(30),
            idle: Duration::from_millis(5),
            linger: Duration::from_millis(10),
            max_wait: Duration::from_millis(200),
            stream: None,
            reader: Reader::default(),
            committed: Checkpoint::default(),
            fatal: None,
            metrics: BinlogMetrics::new(&config_name),
        })
    }

    /// How long [`read_batch`](Self::read_batch), once it holds a change,
    /// waits for the next event before returning a partial batch (default 5 ms).
    pub fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// How long [`read_batch`](Self::read_batch) holds a batch's first change
    /// while more keep arriving (default 10 ms): bounds the lag a steady
    /// stream of writes adds.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// How long [`read_batch`](Self::read_batch) waits for a first change of a
    /// mapped table before returning an empty batch (default 200 ms).
    pub fn with_max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The relay's metrics.
    pub fn metrics(&self) -> &BinlogMetrics {
        &self.metrics
    }

    /// The position store.
    pub fn positions(&self) -> &PositionStore {
        &self.positions
    }

    /// The last stored position (after the stream was opened).
    pub fn committed(&self) -> &BinlogPosition {
        &self.committed.position
    }

    /// Forgets the stream and the reading state: the next read starts again
    /// from the stored position.
    fn reset(&mut self) {
        self.stream = None;
        self.reader = Reader::default();
    }

    async fn open(&mut self) -> Result<(), CrdtError> {
        if self.stream.is_some() {
            return Ok(());
        }
        let at_start = BinlogPosition::default();
        let mut conn = Conn::new(self.source.clone())
            .await
            .map_err(|e| checks::classify(e, &at_start))?;
        checks::check_format(&mut conn).await?;
        let logs = checks::binary_logs(&mut conn).await?;
        let checkpoint = match self.positions.load(&self.config.name).await? {
            Some(c) => c,
            None => {
                // a new relay starts at the current end; stored at once, so a
                // crash before the first batch does not skip what follows
                let c = Checkpoint {
                    position: checks::current_end(&mut conn).await?,
                    counters: BTreeMap::new(),
                };
                self.positions.save(&self.config.name, &c).await?;
                c
            }
        };
        checks::check_not_purged(&logs, &checkpoint.position)?;
        let mut tables = Vec::with_capacity(self.config.tables.len());
        for t in &self.config.tables {
            let positions = checks::column_positions(&mut conn, t).await?;
            tables.push(BoundTable::bind(t.clone(), &positions)?);
        }
        // MariaDB sends its GTID events only to replicas announcing GTID support
        conn.query_drop("SET @mariadb_slave_capability = 4").await?;
        let p = checkpoint.position.clone();
        let request = BinlogStreamRequest::new(self.config.server_id)
            .with_filename(p.file.as_bytes())
            .with_pos(p.position);
        let stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| checks::classify(e, &p))?;
        self.reader = Reader {
            tables,
            file: p.file.clone(),
            read_pos: p.clone(),
            counters: checkpoint.counters.clone(),
            tx: None,
            skipped: 0,
        };
        tracing::info!(relay = %self.config.name, file = %p.file, position = p.position, "binlog relay streaming");
        self.committed = checkpoint;
        self.stream = Some(stream);
        Ok(())
    }

    /// Reads complete transactions until the batch holds `batch` changes, no
    /// event arrived for the idle time, the first change was held for the
    /// linger time, or (with no change read) the max wait
    /// passed. Nothing is published or stored.
    ///
    /// # Errors
    /// [`CrdtError::BinlogFormat`], [`CrdtError::BinlogPrivilege`],
    /// [`CrdtError::BinlogPurged`], [`CrdtError::BinlogDdl`],
    /// [`CrdtError::BinlogRow`] (a row of a mapped table that does not map):
    /// nothing after the last complete transaction before it is returned, and
    /// the next read starts again from the stored position. A DDL or format
    /// error met after some transactions comes with the next call, once the
    /// transactions before it were returned. Connection errors likewise.
    pub async fn read_batch(&mut self) -> Result<BinlogBatch, CrdtError> {
        if let Some(e) = self.fatal.take() {
            self.reset();
            return Err(e);
        }
        if let Err(e) = self.open().await {
            self.reset();
            return Err(e);
        }
        let mut batch = BinlogBatch {
            changes: Vec::new(),
            end: self.reader.read_pos.clone(),
            counters: self.reader.counters.clone(),
        };
        // when the batch's first change was read (transactions without
        // changes of mapped tables hold nothing back)
        let mut first: Option<tokio::time::Instant> = None;
        let started = tokio::time::Instant::now();
        while let Some(stream) = self.stream.as_mut() {
            let wait = match (&self.reader.tx, first) {
                (Some(_), _) => None,
                (None, None) => {
                    let left = self.max_wait.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    Some(left)
                }
                (None, Some(at)) => {
                    let left = self.linger.saturating_sub(at.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    Some(self.idle.min(left))
                }
            };
            let next = match wait {
                None => stream.next().await,
                Some(d) => match tokio::time::timeout(d, stream.next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                },
            };
            let event = match next {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => return Err(self.fail(checks::classify(e, &batch.end), &batch)),
                None => {
                    // the server closed the stream: reconnect from the stored position
                    let closed =
                        mysql_async::Error::Driver(mysql_async::DriverError::ConnectionClosed);
                    return Err(self.fail(CrdtError::Mysql(closed), &batch));
                }
            };
            let Some(stream) = self.stream.as_ref() else {
                break;
            };
            let handled = self.reader.handle(&event, stream, &self.origin);
            self.metrics
                .skipped(std::mem::take(&mut self.reader.skipped));
            match handled {
                Ok(Some(done)) => {
                    if !done.is_empty() {
                        first.get_or_insert_with(tokio::time::Instant::now);
                    }
                    batch.changes.extend(done);
                    batch.end = self.reader.read_pos.clone();
                    batch.counters.clone_from(&self.reader.counters);
                    if batch.changes.len() >= self.config.batch {
                        break;
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    if batch.end != self.committed.position {
                        // return what precedes the error; the error comes next
                        self.fatal = Some(e);
                        return Ok(batch);
                    }
                    return Err(self.fail(e, &batch));
                }
            }
        }
        Ok(batch)
    }

    fn fail(&mut self, e: CrdtError, batch: &BinlogBatch) -> CrdtError {
        tracing::warn!(relay = %self.config.name, file = %batch.end.file, position = batch.end.position, error = %e, "binlog relay stopped reading");
        self.reset();
        e
    }

    /// Publishes a batch's changes in order, each as the outbox relay publishes
    /// a row (key = object id, payload = the encoded delta, the same headers;
    /// the sequence number is derived from the GTID). Returns how many were
    /// acknowledged; stops at the first failed send.
    pub async fn publish(&self, batch: &BinlogBatch) -> Result<usize, CrdtError> {
        for (n, (seq, change)) in batch.changes.iter().enumerate() {
            let row = OutboxRow {
                id: i64::try_from(*seq)
                    .map_err(|_| CrdtError::BinlogRow(format!("sequence {seq} out of range")))?,
                aggregate_type: change.aggregate_type.clone(),
                aggregate_id: change.aggregate_id.clone(),
                event_type: change.delta.event_type().to_string(),
                payload: change.payload()?,
                origin: change.origin.as_str().to_string(),
                hlc: change.ts,
                context: BTreeMap::new(),
            };
            let record = FutureRecord::to(&self.topic)
                .key(row.aggregate_id.as_bytes())
                .payload(&row.payload)
                .headers(Relay::headers(&row));
            if let Err((e, _)) = self.producer.send(record, self.send_timeout).await {
                tracing::warn!(relay = %self.config.name, published = n, error = %e, "binlog relay publish failed");
                return Err(e.into());
            }
        }
        self.metrics.published(batch.changes.len() as u64);
        Ok(batch.changes.len())
    }

    /// Stores the position after `batch` (and the counter totals there). Call
    /// it only once [`publish`](Self::publish) returned for the whole batch.
    pub async fn commit(&mut self, batch: &BinlogBatch) -> Result<(), CrdtError> {
        let checkpoint = Checkpoint {
            position: batch.end.clone(),
            counters: batch.counters.clone(),
        };
        self.positions.save(&self.config.name, &checkpoint).await?;
        self.committed = checkpoint;
        Ok(())
    }

    /// One round: read a batch, publish it, store its end. The position is
    /// stored when the batch had changes, or moved to another binlog file (the
    /// position table's own writes would otherwise keep it busy). Returns how
    /// many changes were published. On error the next round starts again from
    /// the stored position.
    pub async fn run_once(&mut self) -> Result<usize, CrdtError> {
        let batch = match self.read_batch().await {
            Ok(b) => b,
            Err(e) => {
                self.metrics.error(reason(&e));
                return Err(e);
            }
        };
        let result = async {
            let n = self.publish(&batch).await?;
            if n > 0 || batch.end.file != self.committed.position.file {
                self.commit(&batch).await?;
            }
            Ok(n)
        }
        .await;
        if let Err(e) = &result {
            self.metrics.error(reason(e));
            self.reset();
        }
        result
    }

    /// Continues after a [`CrdtError::BinlogDdl`] once the mapping was checked
    /// against the new table definition: stores the position just after the
    /// DDL statement (the changes before it were published and stored by
    /// [`run`](Self::run)); the next read re-reads the column positions.
    ///
    /// # Errors
    /// [`CrdtError::Config`] when `error` is not a DDL error; a database error.
    pub async fn skip_ddl(&mut self, error: &CrdtError) -> Result<(), CrdtError> {
        let CrdtError::BinlogDdl { file, position, .. } = error else {
            return Err(CrdtError::Config(
                "skip_ddl needs the BinlogDdl error".into(),
            ));
        };
        let mut checkpoint = self
            .positions
            .load(&self.config.name)
            .await?
            .unwrap_or_default();
        checkpoint.position = BinlogPosition {
            file: file.clone(),
            position: *position,
            gtid: checkpoint.position.gtid,
        };
        self.positions.save(&self.config.name, &checkpoint).await?;
        self.reset();
        self.fatal = None;
        Ok(())
    }

    /// Runs rounds until `shutdown` completes (then `Ok`) or an error that
    /// needs an operator: [`CrdtError::BinlogFormat`],
    /// [`CrdtError::BinlogPrivilege`], [`CrdtError::BinlogPurged`],
    /// [`CrdtError::BinlogDdl`], [`CrdtError::BinlogRow`],
    /// [`CrdtError::Config`]. Other errors (connections, Kafka) are logged and
    /// retried from the stored position.
    pub async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), CrdtError> {
        tokio::pin!(shutdown);
        loop {
            let wait = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                r = self.run_once() => match r {
                    Ok(_) => Duration::ZERO,
                    Err(e) if needs_operator(&e) => {
                        tracing::error!(relay = %self.config.name, error = %e, "binlog relay stopped");
                        return Err(e);
                    }
                    Err(e) => {
                        tracing::warn!(relay = %self.config.name, error = %e, "binlog relay round failed; retrying");
                        Duration::from_millis(200)
                    }
                },
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

fn reason(e: &CrdtError) -> &'static str {
    match e {
        CrdtError::BinlogFormat { .. } => "format",
        CrdtError::BinlogPrivilege { .. } => "privilege",
        CrdtError::BinlogPurged { .. } => "purged",
        CrdtError::BinlogDdl { .. } => "ddl",
        CrdtError::BinlogRow(_) => "row",
        CrdtError::Config(_) => "config",
        _ => "transient",
    }
}

fn needs_operator(e: &CrdtError) -> bool {
    matches!(
        e,
        CrdtError::BinlogFormat { .. }
            | CrdtError::BinlogPrivilege { .. }
            | CrdtError::BinlogPurged { .. }
            | CrdtError::BinlogDdl { .. }
            | CrdtError::BinlogRow(_)
            | CrdtError::Config(_)
    )
}

impl Reader {
    fn begin(&mut self, gtid: String, gtid_seq: u64, secs: u32, skip: bool, standalone: bool) {
        self.tx = Some(Tx {
            gtid,
            gtid_seq,
            secs,
            skip,
            standalone,
            changes: Vec::new(),
        });
    }

    fn end(&mut self, log_pos: u32) -> Option<Vec<(u64, Change)>> {
        let tx = self.tx.take()?;
        self.read_pos = BinlogPosition {
            file: self.file.clone(),
            position: u64::from(log_pos),
            gtid: tx.gtid,
        };
        Some(tx.changes)
    }

    /// Handles one event; the changes of a transaction when it completes.
    fn handle(
        &mut self,
        event: &Event,
        stream: &BinlogStream,
        origin: &cellctx::CellId,
    ) -> Result<Option<Vec<(u64, Change)>>, CrdtError> {
        let header = event.header();
        let skip = header.flags_raw() & SKIP_REPLICATION_F != 0;
        if header.event_type_raw() == MARIADB_GTID_EVENT {
            let d = event.data();
            let (Some(seq), Some(domain), Some(flags)) = (d.get(0..8), d.get(8..12), d.get(12))
            else {
                return Err(CrdtError::BinlogRow("short MariaDB GTID event".into()));
            };
            let seq = u64::from_le_bytes(seq.try_into().unwrap_or([0; 8]));
            let domain = u32::from_le_bytes(domain.try_into().unwrap_or([0; 4]));
            let gtid = format!("{domain}-{}-{seq}", header.server_id());
            self.begin(
                gtid,
                seq,
                header.timestamp(),
                skip,
                flags & MARIADB_FL_STANDALONE != 0,
            );
            return Ok(None);
        }
        let data = event
            .read_data()
            .map_err(|e| CrdtError::BinlogRow(format!("unreadable event: {e}")))?;
        match data {
            Some(EventData::RotateEvent(r)) => {
                // the artificial rotate that opens a stream precedes the format
                // description, so its name still carries the checksum: the file
                // is the one requested anyway
                if header.flags_raw() & ARTIFICIAL_F == 0 && header.log_pos() != 0 {
                    self.file = r.name().into_owned();
                }
                Ok(None)
            }
            Some(EventData::GtidEvent(g)) => {
                let sid: String = g.sid().iter().map(|b| format!("{b:02x}")).collect();
                // MySQL: a DML transaction opens with BEGIN; without one the
                // next statement (DDL) is the whole transaction
                self.begin(
                    format!("{sid}:{}", g.gno()),
                    g.gno(),
                    header.timestamp(),
                    skip,
                    true,
                );
                Ok(None)
            }
            Some(EventData::XidEvent(_)) => Ok(self.end(header.log_pos())),
            Some(EventData::QueryEvent(q)) => {
                let sql = q.query();
                let trimmed = sql.trim();
                if trimmed.eq_ignore_ascii_case("BEGIN") {
                    if let Some(tx) = self.tx.as_mut() {
                        tx.standalone = false;
                    }
                    return Ok(None);
                }
                if trimmed.eq_ignore_ascii_case("COMMIT") {
                    return Ok(self.end(header.log_pos()));
                }
                match checks::statement(
                    &sql,
                    &q.schema(),
                    &self
                        .tables
                        .iter()
                        .map(|t| t.mapping.clone())
                        .collect::<Vec<_>>(),
                ) {
                    Statement::Ddl(table) => {
                        return Err(CrdtError::BinlogDdl {
                            table,
                            statement: trimmed.chars().take(200).collect(),
                            file: self.file.clone(),
                            position: u64::from(header.log_pos()),
                        });
                    }
                    Statement::Dml(table) if !self.tx.as_ref().is_some_and(|t| t.skip) => {
                        return Err(CrdtError::BinlogFormat {
                            found: format!(
                                "STATEMENT for a write to {table} (a session logged it as a statement)"
                            ),
                        });
                    }
                    _ => {}
                }
                if self.tx.as_ref().is_some_and(|t| t.standalone) {
                    return Ok(self.end(header.log_pos()));
                }
                Ok(None)
            }
            Some(EventData::RowsEvent(rows)) => {
                let Some(tx) = self.tx.as_mut() else {
                    return Err(CrdtError::BinlogRow(
                        "a row event outside a GTID transaction (enable GTIDs)".into(),
                    ));
                };
                let tme = stream.get_tme(rows.table_id()).ok_or_else(|| {
                    CrdtError::BinlogRow(format!("no table map for table id {}", rows.table_id()))
                })?;
                let (db, name) = (tme.database_name(), tme.table_name());
                let Some(table) = self
                    .tables
                    .iter()
                    .find(|t| t.mapping.schema == db && t.mapping.table == name)
                else {
                    return Ok(None);
                };
                if tx.skip || skip {
                    self.skipped += 1;
                    return Ok(None);
                }
                for row in rows.rows(tme) {
                    let (before, after) =
                        row.map_err(|e| CrdtError::BinlogRow(format!("{db}.{name}: {e}")))?;
                    let index = tx.changes.len() as u64;
                    let at = RowAt {
                        gtid_seq: tx.gtid_seq,
                        event_secs: tx.secs,
                        index,
                    };
                    for change in row_changes(
                        table,
                        before.as_ref(),
                        after.as_ref(),
                        at,
                        origin,
                        &mut self.counters,
                    )? {
                        let index = tx.changes.len() as u64;
                        if index >= 1 << INDEX_BITS || tx.gtid_seq >= 1 << (63 - INDEX_BITS) {
                            return Err(CrdtError::BinlogRow(format!(
                                "transaction {} too large to number",
                                tx.gtid
                            )));
                        }
                        tx.changes
                            .push(((tx.gtid_seq << INDEX_BITS) | index, change));
                    }
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}
