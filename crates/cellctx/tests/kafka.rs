//! The Kafka carrier through a real (in-process) Kafka protocol broker.
#![cfg(feature = "kafka")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cellctx::kafka::{KafkaHeaderExtractor, KafkaHeaderInjector, extract_kafka, extract_message, inject_kafka};
use cellctx::{CellContext, CellId, ContextError, HeaderNames, HintSource, RegionHint};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TraceContextExt as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn full_context() -> CellContext {
    let mut ctx = CellContext::new()
        .with_cell(CellId::new("eu-west-1").unwrap())
        .with_tenant("acme")
        .unwrap()
        .with_auth_user("alice")
        .unwrap()
        .with_routing_key("u-42")
        .unwrap()
        .with_xid("saga-7")
        .unwrap()
        .with_region_hint(RegionHint { region: CellId::new("eu-west").unwrap(), source: HintSource::Phone })
        .with_traceparent(TP)
        .unwrap();
    ctx.tracestate = Some("vendor=abc".parse().unwrap());
    ctx.downgraded = true;
    ctx.baggage.insert("plan", "gold, yearly").unwrap();
    ctx
}

#[tokio::test]
async fn context_round_trips_through_a_mock_cluster_topic() {
    let cluster = MockCluster::new(1).unwrap();
    let topic = format!("cellctx-{}-{}", std::process::id(), rand_suffix());
    cluster.create_topic(&topic, 1, 1).unwrap();
    let bootstrap = cluster.bootstrap_servers();

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap();
    let names = HeaderNames::default();
    let ctx = full_context();
    // An application header stays; a stale context header is replaced, not repeated.
    let app = OwnedHeaders::new()
        .insert(Header { key: "app-kind", value: Some("order") })
        .insert(Header { key: "x-cell-id", value: Some("stale") });
    let headers = inject_kafka(&ctx, &names, app).unwrap();
    producer
        .send(FutureRecord::to(&topic).key("k1").payload("order-1").headers(headers), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("{topic}-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await.expect("a message").unwrap();

    assert_eq!(msg.payload(), Some(&b"order-1"[..]));
    let got = extract_message(&msg, &names).unwrap();
    assert_eq!(got, ctx);
    let h = msg.headers().unwrap();
    let app_kind = h.iter().find(|h| h.key == "app-kind").and_then(|h| h.value);
    assert_eq!(app_kind, Some(&b"order"[..]));
    assert_eq!(h.iter().filter(|h| h.key == "x-cell-id").count(), 1);
}

#[test]
fn trace_context_rides_through_the_propagator_on_kafka_headers() {
    let propagator = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    opentelemetry::global::set_text_map_propagator(propagator.clone());
    let ctx = full_context();
    // Producer: inject the context's OpenTelemetry context through the propagator API.
    let remote = ctx.otel_context();
    let mut injector = KafkaHeaderInjector::new();
    propagator.inject_context(&remote, &mut injector);
    let headers = injector.into_inner();
    // Consumer: extract it again.
    let cx = propagator.extract(&KafkaHeaderExtractor(&headers));
    let sc = cx.span().span_context().clone();
    assert!(sc.is_remote());
    assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
    assert_eq!(sc.trace_state().header(), "vendor=abc");
    // The raw carrier reads the same trace back.
    let direct = propagator.extract(&KafkaHeaderExtractor(&inject_kafka(&ctx, &HeaderNames::default(), OwnedHeaders::new()).unwrap()));
    assert_eq!(direct.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(direct.span().span_context().span_id().to_string(), "00f067aa0ba902b7");
}

#[test]
fn bad_kafka_headers_are_typed_errors() {
    let names = HeaderNames::default();
    let repeated = OwnedHeaders::new()
        .insert(Header { key: "x-tenant-id", value: Some("a") })
        .insert(Header { key: "x-tenant-id", value: Some("b") });
    assert!(matches!(extract_kafka(&repeated, &names), Err(ContextError::Malformed { .. })));
    let long = "x".repeat(200);
    let oversized = OwnedHeaders::new().insert(Header { key: "x-tenant-id", value: Some(long.as_str()) });
    assert!(matches!(extract_kafka(&oversized, &names), Err(ContextError::Oversized { .. })));
    let binary = OwnedHeaders::new().insert(Header { key: "x-cell-id", value: Some(&[0xffu8, 0x00][..]) });
    assert!(matches!(extract_kafka(&binary, &names), Err(ContextError::Malformed { .. })));
    // No headers at all: an empty context with a fresh request id.
    let empty = extract_kafka(&OwnedHeaders::new(), &names).unwrap();
    assert!(empty.cell().is_none() && !empty.request_id.is_empty());
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}
