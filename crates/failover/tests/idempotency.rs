//! Durable deduplication of retried writes (`failover::idempotency`) on
//! SQLite, the shared MariaDB and the shared PostgreSQL: the rows in the
//! cell's own tables decide.
#![cfg(feature = "sql")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use failover::idempotency::{IdempotencyKey, IdempotencyLayer, IdempotencyStore, REPLAYED_HEADER, StoredResponse};
use http_body_util::BodyExt;
use tower::ServiceExt;

#[derive(Clone)]
struct Cell {
    store: IdempotencyStore,
    likes: String,
    fail_first: Arc<AtomicBool>,
    /// The placeholder of the dialect (`$1` or `?`).
    ph: &'static str,
}

/// The write: a row in the business table and the key's response, in one
/// transaction.
async fn like_in_tx(State(c): State<Cell>, Extension(key): Extension<IdempotencyKey>) -> axum::response::Response {
    let id = format!("like-{}", key.key());
    let body = format!("{{\"id\":\"{id}\"}}");
    let mut tx = c.store.pool().begin().await.unwrap();
    let q = format!("INSERT INTO {} (id) VALUES ({})", c.likes, c.ph);
    sqlx::query(&q).bind(id).execute(&mut *tx).await.unwrap();
    let stored = StoredResponse { status: 201, content_type: Some("application/json".into()), body: body.clone().into_bytes() };
    key.record_in(&c.store, &mut tx, &stored).await.unwrap();
    tx.commit().await.unwrap();
    (StatusCode::CREATED, [(http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The same write without recording the key (the layer stores the
/// response); the first call fails with 503 when asked to.
async fn like_plain(State(c): State<Cell>, body: String) -> axum::response::Response {
    if c.fail_first.swap(false, Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    let q = format!("INSERT INTO {} (id) VALUES ({})", c.likes, c.ph);
    sqlx::query(&q).bind(body.clone()).execute(c.store.pool()).await.unwrap();
    (StatusCode::CREATED, body).into_response()
}

fn request(path: &str, key: Option<&str>, body: &str) -> http::Request<axum::body::Body> {
    let mut b = http::Request::post(path);
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    b.body(axum::body::Body::from(body.to_string())).unwrap()
}

async fn send(app: &Router, req: http::Request<axum::body::Body>) -> (StatusCode, bool, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let replayed = resp.headers().get(REPLAYED_HEADER).is_some();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, replayed, String::from_utf8_lossy(&body).into_owned())
}

async fn rows(c: &Cell) -> i64 {
    sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {}", c.likes)).fetch_one(c.store.pool()).await.unwrap()
}

async fn scenario(url: &str) {
    let name = testkit::unique("idem").replace('-', "_");
    let store = IdempotencyStore::connect(url, &format!("{name}_keys"))
        .await
        .unwrap_or_else(|e| panic!("cannot reach {url} (scripts/test starts it): {e}"));
    let likes = format!("{name}_likes");
    sqlx::query(&format!("CREATE TABLE {likes} (id VARCHAR(64) PRIMARY KEY)")).execute(store.pool()).await.unwrap();
    let cell = Cell { store: store.clone(), likes: likes.clone(), fail_first: Arc::new(AtomicBool::new(true)),
        ph: if url.starts_with("postgres") { "$1" } else { "?" },
    };
    let app = Router::new()
        .route("/tx", post(like_in_tx))
        .route("/plain", post(like_plain))
        .with_state(cell.clone())
        .layer(IdempotencyLayer::new(store.clone()));

    // The write lands; its response is lost with the connection (dropped
    // here). The gateway retries with the same key: the stored response
    // comes back, and the cell's table holds one row.
    let first = send(&app, request("/tx", Some("req-1"), "")).await;
    assert_eq!((first.0, first.1), (StatusCode::CREATED, false));
    let again = send(&app, request("/tx", Some("req-1"), "")).await;
    assert_eq!(again, (StatusCode::CREATED, true, first.2.clone()));
    assert_eq!(rows(&cell).await, 1);
    // another key is another write
    send(&app, request("/tx", Some("req-2"), "")).await;
    assert_eq!(rows(&cell).await, 2);

    // A handler that does not record: the layer stores the response after
    // it. A 503 is not stored, so the retry applies the write, once.
    let busy = send(&app, request("/plain", Some("req-3"), "p-3")).await;
    assert_eq!(busy.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rows(&cell).await, 2);
    let ok = send(&app, request("/plain", Some("req-3"), "p-3")).await;
    assert_eq!((ok.0, ok.1), (StatusCode::CREATED, false));
    let dup = send(&app, request("/plain", Some("req-3"), "p-3")).await;
    assert_eq!(dup, (StatusCode::CREATED, true, "p-3".to_string()));
    assert_eq!(rows(&cell).await, 3);
    // without a key nothing is deduplicated
    send(&app, request("/plain", None, "p-4")).await;
    assert_eq!(rows(&cell).await, 4);
    assert_eq!(store.stats().replayed, 2);
    // retention: keys younger than an hour stay, then all three go
    assert_eq!(store.prune(std::time::Duration::from_secs(3600)).await.unwrap(), 0);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(store.prune(std::time::Duration::ZERO).await.unwrap(), 3);
    assert_eq!(store.lookup("req-1").await.unwrap(), None);

    sqlx::query(&format!("DROP TABLE {likes}")).execute(store.pool()).await.unwrap();
    sqlx::query(&format!("DROP TABLE {}", store.table())).execute(store.pool()).await.unwrap();
}

#[tokio::test]
async fn a_write_retried_after_it_landed_is_applied_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(&format!("sqlite://{}?mode=rwc", dir.path().join("cell.db").display())).await;
}

#[tokio::test]
async fn a_write_retried_after_it_landed_is_applied_once_on_mariadb() {
    scenario(&testkit::mysql_url()).await;
}

#[tokio::test]
async fn a_write_retried_after_it_landed_is_applied_once_on_postgres() {
    scenario(&testkit::postgres_url()).await;
}

#[tokio::test]
async fn keys_and_table_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("cell.db").display());
    assert!(IdempotencyStore::connect(&url, "bad name; DROP").await.is_err());
    let store = IdempotencyStore::connect(&url, "keys").await.unwrap();
    let r = StoredResponse { status: 200, content_type: None, body: Vec::new() };
    assert!(store.record(&"k".repeat(300), &r).await.is_err());
    assert!(store.record("k", &r).await.unwrap());
    assert!(!store.record("k", &r).await.unwrap(), "recorded once");
    assert_eq!(store.lookup("k").await.unwrap(), Some(r));
}
