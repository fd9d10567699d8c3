//! The comments-and-likes logic shared by the HTTP and gRPC front ends: a write
//! is a business row plus an outbox row in one transaction, then a local CRDT
//! commit; reads come from the local replica (through the optional Redis cache,
//! behind a breaker). With `--replication binlog` a write is the business row
//! alone: the cell's binlog relay publishes it, and the replica takes it from
//! the topic like another cell's.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use cellctx::CellId;
use crdt::{Replica, Value};
use serde::Serialize;
use sqlx::Row;

use failover::idempotency::{IdempotencyKey, StoredResponse};

use super::cache::Cache;
use super::storage::Storage;
use crate::config::Replication;
use crate::error::DemoError;

/// One cell's posts.
#[derive(Debug, Clone)]
pub(crate) struct Posts {
    pub(crate) cell: CellId,
    pub(crate) replica: Arc<Replica>,
    pub(crate) storage: Storage,
    pub(crate) ids: super::issued::IssuedIds,
    pub(crate) cache: Option<Cache>,
    /// Where the writes are captured from.
    pub(crate) replication: Replication,
}

/// A post as this cell sees it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub(crate) struct PostView {
    pub(crate) post: String,
    pub(crate) likes: i64,
    pub(crate) comments: Vec<String>,
    pub(crate) cell: String,
}

/// An acknowledged write.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Written {
    /// The write's id in every cell (from its idempotency key when it has one).
    pub(crate) id: String,
    /// The id this process issued for the write (its row's own id here).
    pub(crate) seq: String,
    pub(crate) cell: String,
}

fn likes_key(post: &str) -> String {
    format!("likes:{post}")
}
/// The ids of a post's likes (an OR-set beside the counter): what lets a
/// checker find each acknowledged like by its id, not by a count that a
/// committed but unacknowledged like could make up for.
fn like_ids_key(post: &str) -> String {
    format!("like_ids:{post}")
}
fn comments_key(post: &str) -> String {
    format!("comments:{post}")
}

fn user() -> String {
    cellctx::current().and_then(|c| c.routing_key.as_deref().map(str::to_owned)).unwrap_or_else(|| "anonymous".into())
}

impl Posts {
    /// A write's ids: the id every cell knows it by, derived from its
    /// idempotency key when it has one (the same write applied by two cells
    /// is one OR-set member once they replicate), and a fresh idgen id of
    /// this process (the write's id when it has no key).
    async fn write_ids(&self, key: Option<&IdempotencyKey>) -> Result<(String, String), DemoError> {
        let seq = self.ids.next().await?.to_string();
        Ok(match key {
            Some(k) => (format!("k{:016x}", cellrouter::xxh3(k.key().as_bytes())), seq),
            None => (seq.clone(), seq),
        })
    }

    /// Records the write's answer under its key in the write's transaction.
    async fn record(&self, key: Option<&IdempotencyKey>, tx: &mut sqlx::AnyConnection, w: &Written) -> Result<(), DemoError> {
        if let Some(k) = key {
            let body = serde_json::to_vec(w).map_err(|e| DemoError::Other(e.to_string()))?;
            let resp = StoredResponse { status: 200, content_type: Some("application/json".into()), body };
            k.record_in(&self.storage.idempotency, tx, &resp).await.map_err(|e| DemoError::Other(e.to_string()))?;
        }
        Ok(())
    }

    /// Binlog mode: the business row and the write's key in one transaction,
    /// nothing else (the cell's binlog relay publishes the row).
    async fn write_row<'q>(
        &self,
        insert: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
        key: Option<&IdempotencyKey>,
        written: Written,
        post: &str,
    ) -> Result<Written, DemoError> {
        let mut tx = self.storage.outbox.pool().begin().await?;
        insert.execute(&mut *tx).await?;
        self.record(key, &mut tx, &written).await?;
        tx.commit().await?;
        self.invalidate(post).await;
        Ok(written)
    }

    /// Likes `post`, once per idempotency key.
    pub(crate) async fn like(&self, post: &str, key: Option<&IdempotencyKey>) -> Result<Written, DemoError> {
        let (id, seq) = self.write_ids(key).await?;
        let written = Written { id: id.clone(), seq, cell: self.cell.to_string() };
        if self.replication == Replication::Binlog {
            let q = format!("INSERT INTO {} (id, post, user_id) VALUES ({})", self.storage.likes, self.storage.ph(3));
            let insert = sqlx::query(&q).bind(id.clone()).bind(post.to_string()).bind(user());
            return self.write_row(insert, key, written, post).await;
        }
        let mut guard = self.replica.lock().await;
        let change = guard.counter_add("post", &likes_key(post), 1)?;
        let liked = guard.or_add("post", &like_ids_key(post), &id)?;
        let mut tx = self.storage.outbox.pool().begin().await?;
        let q = format!("INSERT INTO {} (id, post, user_id) VALUES ({})", self.storage.likes, self.storage.ph(3));
        sqlx::query(&q).bind(id.clone()).bind(post.to_string()).bind(user()).execute(&mut *tx).await?;
        self.storage.outbox.enqueue(&mut tx, &change).await?;
        self.storage.outbox.enqueue(&mut tx, &liked).await?;
        self.record(key, &mut tx, &written).await?;
        tx.commit().await?;
        guard.commit(&change)?;
        guard.commit(&liked)?;
        drop(guard);
        self.storage.outbox.wake();
        self.invalidate(post).await;
        Ok(written)
    }

    /// Comments `text` on `post`, once per idempotency key; the comment id
    /// joins the post's OR-set.
    pub(crate) async fn comment(&self, post: &str, text: &str, key: Option<&IdempotencyKey>) -> Result<Written, DemoError> {
        let (id, seq) = self.write_ids(key).await?;
        let written = Written { id: id.clone(), seq, cell: self.cell.to_string() };
        if self.replication == Replication::Binlog {
            let q = format!("INSERT INTO {} (id, post, user_id, body) VALUES ({})", self.storage.comments, self.storage.ph(4));
            let insert = sqlx::query(&q).bind(id.clone()).bind(post.to_string()).bind(user()).bind(text.to_string());
            return self.write_row(insert, key, written, post).await;
        }
        let mut guard = self.replica.lock().await;
        let change = guard.or_add("post", &comments_key(post), &id)?;
        let mut tx = self.storage.outbox.pool().begin().await?;
        let q = format!("INSERT INTO {} (id, post, user_id, body) VALUES ({})", self.storage.comments, self.storage.ph(4));
        sqlx::query(&q)
            .bind(id.clone())
            .bind(post.to_string())
            .bind(user())
            .bind(text.to_string())
            .execute(&mut *tx)
            .await?;
        self.storage.outbox.enqueue(&mut tx, &change).await?;
        self.record(key, &mut tx, &written).await?;
        tx.commit().await?;
        guard.commit(&change)?;
        drop(guard);
        self.storage.outbox.wake();
        self.invalidate(post).await;
        Ok(written)
    }

    /// Binlog mode: this cell's rows (likes and comments) its replica does not
    /// hold yet, i.e. not yet relayed from the binlog and applied back; 0 in
    /// outbox mode.
    pub(crate) async fn pending_binlog(&self) -> Result<i64, DemoError> {
        if self.replication != Replication::Binlog {
            return Ok(0);
        }
        let mut pending = 0;
        for (table, key) in [(&self.storage.likes, like_ids_key as fn(&str) -> String), (&self.storage.comments, comments_key)] {
            let rows = sqlx::query(&format!("SELECT id, post FROM {table}")).fetch_all(self.storage.outbox.pool()).await?;
            let mut by_set: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in rows {
                by_set.entry(key(&r.try_get::<String, _>(1)?)).or_default().push(r.try_get(0)?);
            }
            for (set, ids) in by_set {
                let held = self.replica.get(&set).await.and_then(|v| v.members()).unwrap_or_default();
                pending += ids.iter().filter(|id| !held.contains(id)).count() as i64;
            }
        }
        Ok(pending)
    }

    async fn invalidate(&self, post: &str) {
        if let Some(c) = &self.cache {
            c.invalidate(post).await;
        }
    }

    /// Reads `post` (cache first when configured).
    pub(crate) async fn get(&self, post: &str) -> PostView {
        if let Some(c) = &self.cache
            && let Some(v) = c.get(post).await
        {
            return v;
        }
        // the likes are the like ids (a like applied by two cells under one
        // key is one id); the counter is what a client without keys would read
        let likes = match self.replica.get(&like_ids_key(post)).await.and_then(|v| v.members()) {
            Some(ids) => ids.len() as i64,
            None => match self.replica.get(&likes_key(post)).await {
                Some(Value::Counter(c)) => c.value(),
                _ => 0,
            },
        };
        let mut comments = self.replica.get(&comments_key(post)).await.and_then(|v| v.members()).unwrap_or_default();
        comments.sort();
        let view = PostView { post: post.to_string(), likes, comments, cell: self.cell.to_string() };
        if let Some(c) = &self.cache {
            c.put(&view).await;
        }
        view
    }

    /// The whole replicated state as JSON (objects sorted, set members sorted)
    /// and a digest of it.
    pub(crate) async fn state(&self) -> (String, u64) {
        let guard = self.replica.lock().await;
        let mut out = BTreeMap::new();
        for (id, v) in guard.store().objects() {
            let j = match v {
                Value::Counter(c) => serde_json::json!(c.value()),
                other => {
                    let mut m = other.members().unwrap_or_default();
                    m.sort();
                    serde_json::json!(m)
                }
            };
            out.insert(id.clone(), j);
        }
        drop(guard);
        let json = serde_json::to_string(&out).unwrap_or_default();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        json.hash(&mut h);
        (json, h.finish())
    }
}
