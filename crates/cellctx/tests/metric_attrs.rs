//! Metric attributes never take a value from a request: thousands of forged,
//! malformed and oversized context headers (and headers no one configured)
//! leave every `cellctx` instrument with attribute values from fixed sets: a
//! reason from a closed list and the name of a configured header.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::convert::Infallible;

use cellctx::CellContextLayer;
use http::{HeaderValue, Request, Response};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// Every `(instrument, key, value)` of every `cellctx.*` data point.
fn attributes(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter) -> BTreeSet<(String, String, String)> {
    provider.force_flush().unwrap();
    let mut out = BTreeSet::new();
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name().starts_with("cellctx.")) {
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                    for dp in sum.data_points() {
                        for kv in dp.attributes() {
                            out.insert((m.name().to_owned(), kv.key.to_string(), kv.value.to_string()));
                        }
                    }
                }
            }
        }
    }
    out
}

async fn send(layer: CellContextLayer, req: Request<()>) {
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_req: Request<()>| async { Ok::<_, Infallible>(Response::new(())) }));
    svc.oneshot(req).await.unwrap();
}

#[tokio::test]
async fn forged_header_values_never_become_attribute_values() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    let meter = provider.meter("test");
    let internal = CellContextLayer::internal().with_meter(&meter);
    let edge = CellContextLayer::edge().with_meter(&meter);
    let headers = ["x-cell-id", "x-request-id", "x-tenant-id", "x-auth-user", "x-user-id", "x-region-hint", "x-xid", "x-cell-sig"];
    for i in 0..3_000usize {
        let name = headers[i % headers.len()];
        let value = match i % 3 {
            // Spaces and brackets, no token: malformed.
            0 => HeaderValue::from_str(&format!("forged {i} <>")).unwrap(),
            // Not ASCII: malformed.
            1 => HeaderValue::from_bytes(format!("forg\u{e9}d-{i}").as_bytes()).unwrap(),
            // Far too long: oversized.
            _ => HeaderValue::from_str(&format!("{i}-{}", "x".repeat(9_000))).unwrap(),
        };
        let mut req = Request::new(());
        req.headers_mut().insert(name, value.clone());
        req.headers_mut().insert(format!("x-forged-{i}").parse::<http::HeaderName>().unwrap(), value);
        req.headers_mut().insert("traceparent", HeaderValue::from_str(&format!("00-{i}-zz")).unwrap());
        send(internal.clone(), req).await;
        // At the edge: internal headers and a forged signature, unsigned by any key.
        let mut req = Request::new(());
        req.headers_mut().insert("x-cell-id", HeaderValue::from_str(&format!("cell-{i}")).unwrap());
        req.headers_mut().insert("x-cell-sig", HeaderValue::from_str(&format!("v1.{i}.forged")).unwrap());
        send(edge.clone(), req).await;
    }

    let attrs = attributes(&provider, &exporter);
    let has = |m: &str, v: &str| attrs.iter().any(|(mm, _, vv)| mm == m && vv == v);
    assert!(has("cellctx.header.rejected", "malformed") && has("cellctx.header.rejected", "oversized"), "{attrs:?}");
    assert!(has("cellctx.header.rejected", "x-cell-id"), "{attrs:?}");
    assert!(has("cellctx.signature.rejected", "no-keys"), "{attrs:?}");
    let reasons: BTreeSet<&str> = [
        "malformed",
        "oversized",
        "signature-malformed",
        "signature-mismatch",
        "signature-expired",
        "no-keys",
        "invalid-key",
    ]
    .into();
    let configured: BTreeSet<&str> = headers.iter().copied().chain(["traceparent", "tracestate", "baggage", ""]).collect();
    for (metric, key, value) in &attrs {
        match key.as_str() {
            "reason" => assert!(reasons.contains(value.as_str()), "{metric} reason={value}"),
            "header" => assert!(configured.contains(value.as_str()), "{metric} header={value}"),
            other => panic!("{metric}: unexpected attribute {other}={value}"),
        }
    }
    assert!(attrs.len() <= reasons.len() + configured.len(), "{attrs:?}");
}
