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
        .route("/api/cells/{id}/pause", post(pause))
        .route("/api/cells/{id}/resume", post(resume))
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

async fn pause(State(state): State<Arc<UiState>>, Path(id): Path<String>) -> Response {
    control(&state, Cells::pause, id).await
}

async fn resume(State(state): State<Arc<UiState>>, Path(id): Path<String>) -> Response {
    control(&state, Cells::resume, id).await
}

async fn stop(State(state): State<Arc<UiState>>) -> Response {
    state.stop.send_replace(true);
    Json(serde_json::json!({ "stopping": true })).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn app() -> (axum::Router, Arc<UiState>) {
        let state =
            Arc::new(UiState { live: std::sync::OnceLock::new(), stop: tokio::sync::watch::Sender::new(false) });
        (router(state.clone()), state)
    }

    async fn call(app: axum::Router, method: &str, uri: &str) -> (StatusCode, String) {
        let req = http::Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn serves_the_page_and_its_files_from_the_binary() {
        let (status, page) = call(app().0, "GET", "/").await;
        assert_eq!(status, StatusCode::OK);
        for file in ["uPlot.iife.min.js", "charts.js", "console.js", "demo.css", "uPlot.min.css"] {
            assert!(page.contains(&format!("/assets/{file}")), "the page loads {file}");
            let (status, body) = call(app().0, "GET", &format!("/assets/{file}")).await;
            assert_eq!(status, StatusCode::OK, "{file}");
            assert!(!body.is_empty(), "{file}");
        }
        assert_eq!(call(app().0, "GET", "/assets/secret.txt").await.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn controls_wait_for_the_run_and_stop_ends_it() {
        let (router, state) = app();
        let (status, body) = call(router.clone(), "POST", "/api/cells/beijing/kill").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(!*state.stop.borrow());
        assert_eq!(call(router, "POST", "/api/stop").await.0, StatusCode::OK);
        assert!(*state.stop.borrow());
    }

    #[test]
    fn refusals_map_to_http_statuses() {
        assert_eq!(refused(&DemoError::UnknownCell("x".into())).status(), StatusCode::NOT_FOUND);
        let twice = DemoError::CellAlready { cell: "x".into(), state: "down" };
        assert_eq!(refused(&twice).status(), StatusCode::CONFLICT);
    }
}
