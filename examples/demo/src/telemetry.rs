//! The demo's metrics: the OpenTelemetry SDK the crates report to, read out as
//! Prometheus text at `/metrics` (and pushed over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set), plus the HTTP server metrics of the
//! OpenTelemetry semantic conventions (`http.server.request.duration` with
//! `http.route`, `http.response.status_code` and the serving `cell`).
//!
//! The SDK crates use the `opentelemetry` API only; this application picks the
//! exporters, so [`init`] runs first thing in every process (instruments made
//! before the global provider is set would record nowhere).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry::KeyValue;
use opentelemetry_instrumentation_tower::{
    HTTPMetricsLayer, HTTPMetricsLayerBuilder, NoOpExtractor, RequestAttributeExtractor, ResponseAttributeExtractor,
};
use opentelemetry_prometheus_text_exporter::PrometheusExporter;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use crate::error::DemoError;

/// Header a cell answers with (`cell::http::SERVED_BY`), read for the `cell` attribute.
const SERVED_BY: &str = "x-served-by";

/// Histogram bounds in seconds: the semantic conventions' defaults with a finer
/// low end, since a loopback request takes about a millisecond.
const DURATION_BOUNDS: [f64; 15] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The process's meter provider and its Prometheus reader.
#[derive(Clone)]
pub(crate) struct Telemetry {
    prometheus: PrometheusExporter,
    provider: SdkMeterProvider,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

/// The process's telemetry, once [`init`] ran.
static TELEMETRY: std::sync::OnceLock<Telemetry> = std::sync::OnceLock::new();

/// Installs the global meter provider of a demo process (`role`: `cell` or
/// `orchestrator`; `cell`: the cell id of a cell process). Later calls keep
/// the first provider.
pub(crate) fn init(role: &str, cell: Option<&str>) -> Result<&'static Telemetry, DemoError> {
    if let Some(t) = TELEMETRY.get() {
        return Ok(t);
    }
    // scope info on: every series carries `otel_scope_name` (`demo.gateway`, `demo.cell`, `crdt`, ...)
    let prometheus = PrometheusExporter::builder().build();
    let mut resource = Resource::builder().with_service_name("cellsdk-demo").with_attribute(KeyValue::new("demo.role", role.to_string()));
    if let Some(c) = cell {
        resource = resource.with_attribute(KeyValue::new("cell", c.to_string()));
    }
    let mut builder = SdkMeterProvider::builder().with_resource(resource.build()).with_reader(prometheus.clone());
    if std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|v| !v.is_empty()) {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .build()
            .map_err(|e| DemoError::Config(format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}")))?;
        builder = builder.with_reader(PeriodicReader::builder(exporter).with_interval(Duration::from_secs(5)).build());
    }
    let provider = builder.build();
    opentelemetry::global::set_meter_provider(provider.clone());
    Ok(TELEMETRY.get_or_init(|| Telemetry { prometheus, provider }))
}

/// `GET /metrics` of this process (empty until [`init`] ran).
pub(crate) fn router() -> axum::Router {
    match TELEMETRY.get() {
        Some(t) => t.router(),
        None => axum::Router::new(),
    }
}

/// Serves `GET /metrics` on `addr` (the orchestrator's admin listener); returns its URL.
pub(crate) async fn serve(addr: std::net::SocketAddr) -> Result<String, DemoError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let url = format!("http://{}/metrics", listener.local_addr()?);
    let app = router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

impl Telemetry {
    /// The current metrics as Prometheus text (exposition format 0.0.4).
    pub(crate) fn render(&self) -> Response {
        let mut out = Vec::with_capacity(16 * 1024);
        match self.prometheus.export(&mut out) {
            Ok(()) => {
                let mut r = out.into_response();
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
                r
            }
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}")).into_response(),
        }
    }

    /// Flushes pushed metrics (OTLP) before the process exits.
    pub(crate) fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "meter provider shutdown");
        }
    }

    /// An axum router serving `GET /metrics`.
    pub(crate) fn router(&self) -> axum::Router {
        let t = self.clone();
        axum::Router::new().route("/metrics", axum::routing::get(move || std::future::ready(t.render())))
    }
}

/// A cell's HTTP server metrics: every request is the cell's own, so `cell`
/// is fixed. Mounted with `Router::layer` (after routing), where axum's
/// `MatchedPath` gives `http.route`.
pub(crate) fn cell_http_layer(cell: &str) -> Result<HTTPMetricsLayer<FixedCell, NoOpExtractor>, DemoError> {
    HTTPMetricsLayerBuilder::builder()
        .with_meter(opentelemetry::global::meter("demo.cell"))
        .with_request_duration_bounds(DURATION_BOUNDS.to_vec())
        .with_request_extractor::<_, axum::body::Body>(FixedCell(KeyValue::new("cell", cell.to_string())))
        .build()
        .map_err(|e| DemoError::Other(format!("http metrics: {e:?}")))
}

/// The gateway's HTTP server metrics: `cell` is the cell that served the
/// request (its `x-served-by` answer, one of `cells`), `none` when no cell did.
pub(crate) fn gateway_http_layer(cells: Vec<String>) -> Result<HTTPMetricsLayer<NoOpExtractor, ServedBy>, DemoError> {
    HTTPMetricsLayerBuilder::builder()
        .with_meter(opentelemetry::global::meter("demo.gateway"))
        .with_request_duration_bounds(DURATION_BOUNDS.to_vec())
        .with_response_extractor::<_, axum::body::Body>(ServedBy { cells: cells.into() })
        .build()
        .map_err(|e| DemoError::Other(format!("http metrics: {e:?}")))
}

/// A fixed `cell` attribute on every request.
#[derive(Clone, Debug)]
pub(crate) struct FixedCell(KeyValue);

impl<B> RequestAttributeExtractor<B> for FixedCell {
    fn extract_attributes(&self, _req: &http::Request<B>) -> Vec<KeyValue> {
        vec![self.0.clone()]
    }
}

/// The `cell` attribute of a gateway response: the serving cell when it is a
/// known one (so the value set is bounded by the config), else `none`.
#[derive(Clone, Debug)]
pub(crate) struct ServedBy {
    cells: std::sync::Arc<[String]>,
}

impl<B> ResponseAttributeExtractor<B> for ServedBy {
    fn extract_attributes(&self, res: &http::Response<B>) -> Vec<KeyValue> {
        let served = res.headers().get(SERVED_BY).and_then(|v| v.to_str().ok());
        let cell = served.and_then(|s| self.cells.iter().find(|c| c.as_str() == s)).map_or_else(|| "none".to_string(), Clone::clone);
        vec![KeyValue::new("cell", cell)]
    }
}
