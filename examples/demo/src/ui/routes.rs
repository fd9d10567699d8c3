//! The console's HTTP routes: the page and its files, the event stream and
//! the controls.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;

use super::{UiState, assets, snapshot};
use crate::cells::Cells;
use crate::error::DemoError;

/// How often the page gets a snapshot.
const TICK: Duration = Duration::from_millis(500);

/// Every route of the console.
pub(super) fn router(state: Arc<UiState>) -> axum::Router {
    axum::Router::new()
        .route("/", get(|| async { Html(assets::INDEX_HTML) }))
        .route("/assets/{name}", get(asset))
        .route("/events", get(events))
        .route("/api/cells/{id}/kill", post(kill))
        .route("/api/cells/{id}/restart", post(restart))
        .route("/api/stop", post(stop))
        .with_state(state)
}

async fn asset(Path(name): Path<String>) -> Response {
    match assets::by_name(&name) {
        Some((ct, body)) => ([(header::CONTENT_TYPE, ct)], body).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A snapshot of the run every [`TICK`], as `data:` JSON lines.
async fn events(State(state): State<Arc<UiState>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stream = futures::stream::unfold((state, tick), |(state, mut tick)| async move {
        tick.tick().await;
        let stopping = *state.stop.borrow();
        let snap = snapshot::take(state.live.get(), stopping).await;
        let event = Event::default().json_data(&snap).unwrap_or_else(|_| Event::default().comment("unserializable"));
        Some((Ok(event), (state, tick)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// An error as the console's controls answer it.
fn refused(e: &DemoError) -> Response {
    let status = match e {
        DemoError::UnknownCell(_) => StatusCode::NOT_FOUND,
        DemoError::CellAlready { .. } => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
}

/// Runs `act` on the live run's cells (503 while the run starts).
async fn control(state: &UiState, act: fn(&mut Cells, &str) -> Result<u64, DemoError>, id: String) -> Response {
    let Some(live) = state.live.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "error": "the run is starting" }))).into_response();
    };
    let cells = live.cells.clone();
    // a kill waits for the process to exit: off the async workers
    let done = tokio::task::spawn_blocking(move || {
        let mut c = cells.lock().map_err(|_| DemoError::Other("cells lock poisoned".into()))?;
        act(&mut c, &id).map(|at| (id, at))
    })
    .await
    .map_err(|e| DemoError::Other(e.to_string()));
    match done.and_then(|r| r) {
        Ok((cell, at_ms)) => Json(serde_json::json!({ "cell": cell, "at_ms": at_ms })).into_response(),
        Err(e) => refused(&e),
    }
}

async fn kill(State(state): State<Arc<UiState>>, Path(id): Path<String>) -> Response {
    control(&state, Cells::kill, id).await
}

async fn restart(State(state): State<Arc<UiState>>, Path(id): Path<String>) -> Response {
    control(&state, Cells::restart, id).await
}

async fn stop(State(state): State<Arc<UiState>>) -> Response {
    state.stop.send_replace(true);
    Json(serde_json::json!({ "stopping": true })).into_response()
}
