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
    pub(crate) ids: idgen::Generator,
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
    pub(crate) id: String,
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
    /// Likes `post`.
    pub(crate) async fn like(&self, post: &str) -> Result<Written, DemoError> {
        let id = self.ids.next_id()?.to_string();
        if self.replication == Replication::Binlog {
            let q = format!("INSERT INTO {} (id, post, user_id) VALUES ({})", self.storage.likes, self.storage.ph(3));
            sqlx::query(&q).bind(id.clone()).bind(post.to_string()).bind(user()).execute(self.storage.outbox.pool()).await?;
            return self.written(id, post).await;
        }
        let mut guard = self.replica.lock().await;
        let change = guard.counter_add("post", &likes_key(post), 1)?;
        let liked = guard.or_add("post", &like_ids_key(post), &id)?;
        let mut tx = self.storage.outbox.pool().begin().await?;
        let q = format!("INSERT INTO {} (id, post, user_id) VALUES ({})", self.storage.likes, self.storage.ph(3));
        sqlx::query(&q).bind(id.clone()).bind(post.to_string()).bind(user()).execute(&mut *tx).await?;
        self.storage.outbox.enqueue(&mut tx, &change).await?;
        self.storage.outbox.enqueue(&mut tx, &liked).await?;
        tx.commit().await?;
        guard.commit(&change)?;
        guard.commit(&liked)?;
        drop(guard);
        self.storage.outbox.wake();
        self.invalidate(post).await;
        Ok(Written { id, cell: self.cell.to_string() })
    }

    /// Comments `text` on `post`; the comment id joins the post's OR-set.
    pub(crate) async fn comment(&self, post: &str, text: &str) -> Result<Written, DemoError> {
        let id = self.ids.next_id()?.to_string();
        if self.replication == Replication::Binlog {
            let q = format!("INSERT INTO {} (id, post, user_id, body) VALUES ({})", self.storage.comments, self.storage.ph(4));
            let insert = sqlx::query(&q).bind(id.clone()).bind(post.to_string()).bind(user()).bind(text.to_string());
            insert.execute(self.storage.outbox.pool()).await?;
            return self.written(id, post).await;
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
        tx.commit().await?;
        guard.commit(&change)?;
        drop(guard);
        self.storage.outbox.wake();
        self.invalidate(post).await;
        Ok(Written { id, cell: self.cell.to_string() })
    }

    /// A binlog-mode write's acknowledgement (the row is committed).
    async fn written(&self, id: String, post: &str) -> Result<Written, DemoError> {
        self.invalidate(post).await;
        Ok(Written { id, cell: self.cell.to_string() })
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
        let likes = match self.replica.get(&likes_key(post)).await {
            Some(Value::Counter(c)) => c.value(),
            // binlog mode keeps the likes' ids only
            _ => self.replica.get(&like_ids_key(post)).await.and_then(|v| v.members()).map_or(0, |m| m.len() as i64),
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
