//! `POST /admin/clock` on every role process, when `DEMO_CLOCK_ADMIN=1` is in
//! its environment (the fault campaign sets it on the processes it starts;
//! a deployment leaves it unset and the route does not exist): the body
//! `{"offset_ms": N}` sets the process's wall-clock offset through
//! [`cellclock::set_offset_ms`], the same clock `CELLSDK_CLOCK_OFFSET_MS`
//! sets at start, which idgen, the HLC and the audit instants read.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The environment variable that mounts the route (`1`).
pub(crate) const ENV: &str = "DEMO_CLOCK_ADMIN";

/// The body of `POST /admin/clock` and of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClockOffset {
    /// Milliseconds ahead of the system clock (negative: behind).
    pub(crate) offset_ms: i64,
}

/// The route when [`ENV`] is `1`, else nothing.
pub(crate) fn router() -> axum::Router {
    match std::env::var(ENV).as_deref() {
        Ok("1") => axum::Router::new().route("/admin/clock", axum::routing::post(set)),
        _ => axum::Router::new(),
    }
}

async fn set(Json(body): Json<ClockOffset>) -> Response {
    match cellclock::set_offset_ms(body.offset_ms) {
        Ok(()) => {
            tracing::warn!(offset_ms = body.offset_ms, "wall clock offset set by /admin/clock");
            Json(ClockOffset { offset_ms: cellclock::offset_ms() }).into_response()
        }
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response(),
    }
}
