//! [`CpuProfile`]: a CPU profile endpoint (the `pprof` feature).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use pprof::protos::Message;
use tower_service::Service;

use crate::error::HealthError;
use crate::handlers::HealthBody;

/// Output of a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Flamegraph,
    Pprof,
}

/// `GET /debug/pprof/profile?seconds=N&format=flamegraph|pprof`: samples the
/// process's CPU for N seconds (default 10, at most `max_seconds`) and answers
/// an SVG flamegraph (default) or a gzip-less pprof protobuf
/// (`go tool pprof` reads it).
///
/// Sampling runs on tokio's blocking pool; one profile at a time (a second
/// concurrent request gets a 500 from the profiler). Bad parameters are a 400.
/// Mount it behind authentication: a profile reveals symbol names.
#[derive(Debug, Clone)]
pub struct CpuProfile {
    max_seconds: u64,
    frequency: i32,
}

impl Default for CpuProfile {
    fn default() -> Self {
        CpuProfile { max_seconds: 60, frequency: 99 }
    }
}

impl CpuProfile {
    /// The endpoint with a 60 s cap and 99 Hz sampling.
    pub fn new() -> Self {
        Self::default()
    }

    /// Longest profile allowed (>= 1 s).
    pub fn with_max_seconds(mut self, max: u64) -> Self {
        self.max_seconds = max.max(1);
        self
    }

    /// Sampling frequency in Hz (1..=1000).
    pub fn with_frequency(mut self, hz: i32) -> Self {
        self.frequency = hz.clamp(1, 1000);
        self
    }

    fn parse(&self, query: Option<&str>) -> Result<(Duration, Format), HealthError> {
        let mut secs = 10u64.min(self.max_seconds);
        let mut format = Format::Flamegraph;
        for kv in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "seconds" => {
                    secs = v
                        .parse()
                        .ok()
                        .filter(|s| (1..=self.max_seconds).contains(s))
                        .ok_or_else(|| HealthError::Profile(format!("seconds must be 1..={}", self.max_seconds)))?;
                }
                "format" => {
                    format = match v {
                        "flamegraph" | "svg" => Format::Flamegraph,
                        "pprof" | "proto" => Format::Pprof,
                        _ => return Err(HealthError::Profile("format must be flamegraph or pprof".into())),
                    }
                }
                _ => {}
            }
        }
        Ok((Duration::from_secs(secs), format))
    }
}

fn profile(duration: Duration, frequency: i32, format: Format) -> Result<Vec<u8>, HealthError> {
    let err = |e: pprof::Error| HealthError::Profile(e.to_string());
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(frequency)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(err)?;
    std::thread::sleep(duration);
    let report = guard.report().build().map_err(err)?;
    drop(guard);
    let mut out = Vec::new();
    match format {
        Format::Flamegraph => report.flamegraph(&mut out).map_err(err)?,
        Format::Pprof => {
            let p = report.pprof().map_err(err)?;
            p.encode(&mut out).map_err(|e| HealthError::Profile(e.to_string()))?;
        }
    }
    Ok(out)
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<HealthBody> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// The future of [`CpuProfile`] (not a hot path: boxed).
pub type CpuProfileFuture = Pin<Box<dyn Future<Output = Result<Response<HealthBody>, Infallible>> + Send>>;

impl<B> Service<Request<B>> for CpuProfile {
    type Response = Response<HealthBody>;
    type Error = Infallible;
    type Future = CpuProfileFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let parsed = self.parse(req.uri().query());
        let frequency = self.frequency;
        Box::pin(async move {
            let (duration, format) = match parsed {
                Ok(p) => p,
                Err(e) => return Ok(respond(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", Bytes::from(e.to_string()))),
            };
            let res = tokio::task::spawn_blocking(move || profile(duration, frequency, format)).await;
            Ok(match res {
                Ok(Ok(body)) => {
                    let ct = match format {
                        Format::Flamegraph => "image/svg+xml",
                        Format::Pprof => "application/octet-stream",
                    };
                    respond(StatusCode::OK, ct, Bytes::from(body))
                }
                Ok(Err(e)) => respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", Bytes::from(e.to_string())),
                Err(e) => respond(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", Bytes::from(e.to_string())),
            })
        })
    }
}
