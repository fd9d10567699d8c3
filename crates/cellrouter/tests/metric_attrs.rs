//! Metric attributes never take a value from a request: thousands of forged
//! cell ids, region hints, routing keys, methods and paths leave every
//! `cellrouter` instrument with the same few attribute sets.
//!
//! `cellrouter` records through the global meter, so this binary holds this one
//! test, which installs an in-memory SDK provider before building anything.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use bytes::Bytes;
use cellctx::{CellContextLayer, CellId};
use cellrouter::{Cell, CellRouterLayer, MisroutePolicy, RoutingTable, TableStore};
use http::{Method, Request, Response};
use http_body_util::Empty;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use tower::{ServiceBuilder, ServiceExt};

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

/// Every attribute set of every `cellrouter.*` data point, as sorted `key=value` lists.
fn attribute_sets(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter) -> BTreeSet<String> {
    provider.force_flush().unwrap();
    let mut sets = BTreeSet::new();
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics().filter(|m| m.name().starts_with("cellrouter.")) {
                let mut add = |attrs: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
                    let mut kv: Vec<String> = attrs.map(|kv| format!("{}={}", kv.key, kv.value)).collect();
                    kv.sort();
                    sets.insert(format!("{} {}", m.name(), kv.join(",")));
                };
                match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(s)) => s.data_points().for_each(|dp| add(&mut dp.attributes())),
                    AggregatedMetrics::U64(MetricData::Gauge(g)) => g.data_points().for_each(|dp| add(&mut dp.attributes())),
                    AggregatedMetrics::F64(MetricData::Gauge(g)) => g.data_points().for_each(|dp| add(&mut dp.attributes())),
                    _ => {}
                }
            }
        }
    }
    sets
}

#[tokio::test]
async fn forged_request_values_never_become_attribute_values() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    opentelemetry::global::set_meter_provider(provider.clone());

    let table = RoutingTable::uniform(
        id("eu"),
        vec![Cell::new(id("eu-1"), id("eu"), "http://10.0.0.1:8080"), Cell::new(id("eu-2"), id("eu"), "http://10.0.0.2:8080")],
        1024,
    );
    let store = TableStore::with_table(table).unwrap();
    let mut statuses = BTreeSet::new();
    for policy in [MisroutePolicy::Refuse, MisroutePolicy::Redirect] {
        let svc = ServiceBuilder::new()
            .layer(CellContextLayer::internal())
            .layer(CellRouterLayer::new(store.clone(), id("eu-1")).with_policy(policy).with_hint_region(true))
            .service_fn(|_req: Request<Empty<Bytes>>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Empty::<Bytes>::new()))
            });
        for i in 0..2_000 {
            let method = Method::from_bytes(format!("M{}", i % 97).as_bytes()).unwrap();
            let req = Request::builder()
                .method(if i % 2 == 0 { Method::GET } else { method })
                .uri(format!("/forged/{i}?q={i}"))
                .header("x-cell-id", format!("cell-{i}"))
                .header("x-region-hint", format!("region-{i};src=ip"))
                .header("x-user-id", format!("user-{i}"))
                .header("x-tenant-id", format!("tenant-{i}"))
                .body(Empty::new())
                .unwrap();
            let res = svc.clone().oneshot(req).await.unwrap();
            statuses.insert(res.status().as_u16());
        }
    }

    // Served here, refused and redirected to the key's home: the router ran.
    assert_eq!(statuses, BTreeSet::from([200, 307, 421]));
    let sets = attribute_sets(&provider, &exporter);
    let outcomes = ["local", "forward", "redirect", "refuse", "loop", "unavailable", "forward_error", "forward_timeout"];
    let allowed: BTreeSet<String> = outcomes
        .iter()
        .map(|o| format!("cellrouter.requests outcome={o}"))
        .chain(["cellrouter.table.updates result=applied", "cellrouter.table.updates result=rejected"].map(String::from))
        .chain(["cellrouter.table.version ", "cellrouter.table.staleness "].map(String::from))
        .collect();
    assert!(sets.iter().any(|s| s.starts_with("cellrouter.requests")), "requests were counted: {sets:?}");
    let stray: Vec<&String> = sets.difference(&allowed).collect();
    assert!(stray.is_empty(), "attribute values outside the fixed sets: {stray:?}");
}
