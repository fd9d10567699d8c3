//! The layers end to end: two-hop axum and tonic round trips on loopback, the
//! trust boundary, signatures, malformed input, and the header round-trip law.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use cellctx::{
    CellContext, CellContextLayer, CellId, HeaderNames, HintSource, PropagateCellContextLayer, RegionHint, Signer,
    SigningKey, SigningKeys, TrustMode,
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{FutureExt as _, Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use proptest::prelude::*;
use tower::{ServiceBuilder, ServiceExt, service_fn};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn init() {
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
}

fn key(b: u8) -> SigningKey {
    SigningKey::try_new([b; 32]).unwrap()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// B: reports, as JSON, the context it received (from the extension and the task-local scope).
fn service_b() -> Router {
    async fn seen(Extension(ctx): Extension<Arc<CellContext>>, headers: HeaderMap) -> String {
        let current = cellctx::current().expect("scope");
        assert!(Arc::ptr_eq(&ctx, &current));
        serde_json::json!({
            "cell": ctx.cell().map(|c| c.as_str()),
            "tenant": ctx.tenant,
            "auth_user": ctx.auth_user,
            "routing_key": ctx.routing_key,
            "request_id": ctx.request_id,
            "trace_id": ctx.trace_id(),
            "traceparent": ctx.traceparent,
            "baggage_plan": ctx.baggage.get("plan"),
            "sig_header": headers.contains_key("x-cell-sig"),
        })
        .to_string()
    }
    Router::new().route("/seen", get(seen)).layer(CellContextLayer::internal())
}

/// A: calls B through a hyper-util client wrapped in the client layer, optionally
/// inside an OpenTelemetry span of its own, and returns B's body.
fn service_a(b: SocketAddr, layer: CellContextLayer, with_span: bool) -> Router {
    let client = ServiceBuilder::new()
        .layer(PropagateCellContextLayer::new())
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let handler = move || {
        let client = client.clone();
        async move {
            let req = Request::get(format!("http://{b}/seen")).body(Full::new(Bytes::new())).unwrap();
            let call = async { client.oneshot(req).await.unwrap().into_body().collect().await.unwrap().to_bytes() };
            let body = if with_span {
                let tracer = opentelemetry_sdk::trace::SdkTracerProvider::builder().build().tracer("a");
                // The server layer made the caller's trace current: this span continues it.
                let span = tracer.start("a-calls-b");
                let span_id = span.span_context().span_id().to_string();
                let cx = opentelemetry::Context::current_with_span(span);
                let body = call.with_context(cx).await;
                let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                v["a_span_id"] = span_id.into();
                Bytes::from(v.to_string())
            } else {
                call.await
            };
            String::from_utf8(body.to_vec()).unwrap()
        }
    };
    Router::new().route("/a", get(handler)).layer(layer)
}

async fn get_json(addr: SocketAddr, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, serde_json::Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::get(format!("http://{addr}/a"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client.request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn axum_two_hops_carry_cell_tenant_request_id_and_trace() {
    init();
    let b = serve(service_b()).await;
    let a = serve(service_a(b, CellContextLayer::internal(), false)).await;
    let (status, headers, seen) = get_json(a, &[
        ("x-cell-id", "eu-west-1"),
        ("x-tenant-id", "acme"),
        ("x-auth-user", "alice"),
        ("x-request-id", "req-42"),
        ("traceparent", TP),
        ("baggage", "plan=gold"),
    ])
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-request-id"], "req-42");
    assert_eq!(seen["cell"], "eu-west-1");
    assert_eq!(seen["tenant"], "acme");
    assert_eq!(seen["auth_user"], "alice");
    assert_eq!(seen["request_id"], "req-42");
    assert_eq!(seen["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(seen["traceparent"], TP);
    assert_eq!(seen["baggage_plan"], "gold");
}

#[tokio::test]
async fn a_span_at_a_becomes_the_parent_at_b_through_the_propagator() {
    init();
    let b = serve(service_b()).await;
    let a = serve(service_a(b, CellContextLayer::internal(), true)).await;
    let (status, _, seen) = get_json(a, &[("x-cell-id", "eu-west-1"), ("traceparent", TP)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let a_span = seen["a_span_id"].as_str().unwrap();
    assert_ne!(a_span, "00f067aa0ba902b7");
    assert_eq!(seen["traceparent"], format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{a_span}-01"));
}

#[tokio::test]
async fn generated_request_id_is_echoed_and_reaches_b() {
    init();
    let b = serve(service_b()).await;
    let a = serve(service_a(b, CellContextLayer::internal(), false)).await;
    let (status, headers, seen) = get_json(a, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let id = headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 20);
    assert_eq!(seen["request_id"], id);
}

#[tokio::test]
async fn edge_strips_unsigned_internal_headers_across_the_hop() {
    init();
    let b = serve(service_b()).await;
    let edge = CellContextLayer::edge().with_signing_keys(SigningKeys::new(key(1)));
    let a = serve(service_a(b, edge, false)).await;
    let (status, _, seen) = get_json(a, &[
        ("x-cell-id", "eu-west-1"),
        ("x-tenant-id", "acme"),
        ("x-auth-user", "root"),
        ("x-user-id", "u-7"),
        ("x-request-id", "req-1"),
    ])
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["cell"], serde_json::Value::Null);
    assert_eq!(seen["tenant"], serde_json::Value::Null);
    assert_eq!(seen["auth_user"], serde_json::Value::Null);
    assert_eq!(seen["routing_key"], serde_json::Value::Null, "a client does not pick its routing key at the edge");
    assert_eq!(seen["request_id"], "req-1");

    // Signed with the edge's key: trusted, and carried on to B.
    let ctx = CellContext::new()
        .with_cell(CellId::new("eu-west-1").unwrap())
        .with_tenant("acme")
        .unwrap()
        .with_routing_key("u-7")
        .unwrap();
    let sig = Signer::new(key(1)).sign(&ctx, &Request::get("/a").body(()).unwrap(), SystemTime::now());
    let (status, _, seen) = get_json(a, &[
        ("x-request-id", ctx.request_id.as_str()),
        ("x-cell-id", "eu-west-1"),
        ("x-tenant-id", "acme"),
        ("x-user-id", "u-7"),
        ("x-cell-sig", sig.to_str().unwrap()),
    ])
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["cell"], "eu-west-1");
    assert_eq!(seen["tenant"], "acme");
    assert_eq!(seen["sig_header"], false);
}

// ---- tonic ----

#[tokio::test]
async fn tonic_round_trip_through_a_channel() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    init();
    type Seen = (Option<Arc<CellContext>>, Option<Arc<CellContext>>);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = {
        let seen = seen.clone();
        tower::util::MapRequestLayer::new(move |req: Request<tonic::body::Body>| {
            let ext = req.extensions().get::<Arc<CellContext>>().cloned();
            seen.lock().unwrap().push((ext, cellctx::current()));
            req
        })
    };
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(CellContextLayer::internal())
            .layer(record)
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut client = HealthClient::new(ServiceBuilder::new().layer(PropagateCellContextLayer::new()).service(channel));
    let ctx = CellContext::new()
        .with_cell(CellId::new("ap-south-2").unwrap())
        .with_tenant("globex")
        .unwrap()
        .with_request_id("grpc-req-1")
        .unwrap();
    let ctx = ctx.with_traceparent(TP).unwrap();
    let res = cellctx::scope(Arc::new(ctx), client.check(HealthCheckRequest { service: String::new() })).await.unwrap();
    assert_eq!(res.metadata().get("x-request-id").unwrap(), "grpc-req-1");

    let (ext, current) = seen.lock().unwrap().pop().unwrap();
    let (ext, current) = (ext.unwrap(), current.unwrap());
    assert!(Arc::ptr_eq(&ext, &current));
    assert_eq!(ext.cell().unwrap().as_str(), "ap-south-2");
    assert_eq!(ext.tenant.as_deref(), Some("globex"));
    assert_eq!(ext.request_id, "grpc-req-1");
    assert_eq!(ext.trace_id(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));

    // A malformed header on gRPC: INVALID_ARGUMENT naming the header, not an HTTP 400.
    let mut req = tonic::Request::new(HealthCheckRequest { service: String::new() });
    req.metadata_mut().insert("x-cell-id", "Not A Cell".parse().unwrap());
    let status = client.check(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("x-cell-id"), "{}", status.message());
}

// ---- in-process: trust boundary, signatures, malformed input ----

struct Outcome {
    status: StatusCode,
    headers: HeaderMap,
    ctx: Option<Arc<CellContext>>,
    body: Bytes,
}

async fn run(layer: CellContextLayer, req: Request<()>) -> Outcome {
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(|req: Request<()>| async move {
        let ctx = req.extensions().get::<Arc<CellContext>>().cloned().unwrap();
        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
        res.extensions_mut().insert(ctx);
        Ok::<_, Infallible>(res)
    }));
    let res = svc.oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Outcome {
        status: parts.status,
        headers: parts.headers,
        ctx: parts.extensions.get::<Arc<CellContext>>().cloned(),
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn signed_ctx() -> CellContext {
    CellContext::new()
        .with_cell(CellId::new("eu-west-1").unwrap())
        .with_tenant("acme")
        .unwrap()
        .with_auth_user("alice")
        .unwrap()
        .with_xid("saga-9")
        .unwrap()
}

fn request_for(ctx: &CellContext, sig: Option<HeaderValue>) -> Request<()> {
    let mut req = Request::new(());
    cellctx::inject(ctx, &HeaderNames::default(), req.headers_mut()).unwrap();
    if let Some(sig) = sig {
        req.headers_mut().insert("x-cell-sig", sig);
    }
    req
}

/// `ctx` on `GET /`, signed by `signer` as issued at `at`.
fn signed_request(ctx: &CellContext, signer: &Signer, at: SystemTime) -> Request<()> {
    let mut req = request_for(ctx, None);
    let sig = signer.sign(ctx, &req, at);
    req.headers_mut().insert("x-cell-sig", sig);
    req
}

fn meter() -> (opentelemetry_sdk::metrics::SdkMeterProvider, opentelemetry_sdk::metrics::InMemoryMetricExporter) {
    let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(opentelemetry_sdk::metrics::PeriodicReader::builder(exporter.clone()).build())
        .build();
    (provider, exporter)
}

/// The counter's value per `reason` attribute.
fn counts(
    provider: &opentelemetry_sdk::metrics::SdkMeterProvider,
    exporter: &opentelemetry_sdk::metrics::InMemoryMetricExporter,
    name: &str,
) -> std::collections::BTreeMap<String, u64> {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    provider.force_flush().unwrap();
    let mut out = std::collections::BTreeMap::new();
    let all = exporter.get_finished_metrics().unwrap();
    let Some(last) = all.last() else { return out };
    for sm in last.scope_metrics() {
        for m in sm.metrics().filter(|m| m.name() == name) {
            if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                for dp in sum.data_points() {
                    let reason = dp
                        .attributes()
                        .find(|kv| kv.key.as_str() == "reason")
                        .map(|kv| kv.value.to_string())
                        .unwrap_or_default();
                    *out.entry(reason).or_default() += dp.value();
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn signatures_accepted_rejected_and_rotated() {
    use opentelemetry::metrics::MeterProvider as _;
    let (provider, exporter) = meter();
    let old = key(1);
    let new = key(2);
    let edge = CellContextLayer::edge()
        .with_signing_keys(SigningKeys::new(new.clone()).with_previous(old.clone()))
        .with_meter(&provider.meter("test"));
    let ctx = signed_ctx();
    let now = SystemTime::now();
    // Each accepted request needs its own id: a second use of one signature is a replay.
    let fresh = |c: &CellContext| c.clone().with_request_id(cellctx::request_id::generate_token()).unwrap();

    // Current key: accepted, every internal field kept.
    let out = run(edge.clone(), signed_request(&ctx, &Signer::new(new.clone()), now)).await;
    assert_eq!(out.status, StatusCode::OK);
    let seen = out.ctx.unwrap();
    assert_eq!((seen.cell().cloned(), seen.tenant.as_deref()), (ctx.cell().cloned(), Some("acme")));
    assert_eq!((seen.auth_user.as_deref(), seen.xid.as_deref()), (Some("alice"), Some("saga-9")));

    // Previous key: accepted during the rotation.
    let out = run(edge.clone(), signed_request(&fresh(&ctx), &Signer::new(old), now)).await;
    assert_eq!(out.ctx.unwrap().tenant.as_deref(), Some("acme"));

    let stripped = |c: &CellContext| c.cell().is_none() && c.tenant.is_none() && c.auth_user.is_none() && c.xid.is_none();

    // Wrong key.
    let out = run(edge.clone(), signed_request(&fresh(&ctx), &Signer::new(key(3)), now)).await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(stripped(&out.ctx.unwrap()));

    // Tampered: signed for tenant acme, sent as tenant evil.
    let ctx2 = fresh(&ctx);
    let sig = Signer::new(new.clone()).sign(&ctx2, &Request::new(()), now);
    let tampered = ctx2.clone().with_tenant("evil").unwrap();
    let out = run(edge.clone(), request_for(&tampered, Some(sig))).await;
    assert!(stripped(&out.ctx.unwrap()));

    // Expired.
    let out = run(edge.clone(), signed_request(&fresh(&ctx), &Signer::new(new.clone()), now - Duration::from_secs(60))).await;
    assert!(stripped(&out.ctx.unwrap()));

    // Garbage.
    let out = run(edge.clone(), request_for(&ctx, Some(HeaderValue::from_static("v1;exp=1;sig=nope")))).await;
    let seen = out.ctx.unwrap();
    assert!(stripped(&seen));
    assert_eq!(seen.request_id, ctx.request_id, "the request id is not internal");

    // Unsigned.
    let out = run(edge.clone(), request_for(&ctx, None)).await;
    assert!(stripped(&out.ctx.unwrap()));

    let rejected = counts(&provider, &exporter, cellctx::metrics::SIGNATURE_REJECTED);
    let expected: std::collections::BTreeMap<String, u64> = [
        ("signature-mismatch".to_string(), 2),
        ("signature-expired".to_string(), 1),
        ("signature-malformed".to_string(), 1),
    ]
    .into();
    assert_eq!(rejected, expected);
    let stripped_total: u64 = counts(&provider, &exporter, cellctx::metrics::EDGE_STRIPPED).values().sum();
    assert_eq!(stripped_total, 5);

    // Internal mode trusts the same unsigned request.
    let out = run(CellContextLayer::new(TrustMode::Internal), request_for(&ctx, None)).await;
    assert_eq!(out.ctx.unwrap().tenant.as_deref(), Some("acme"));
}

#[tokio::test]
async fn edge_without_keys_strips_even_signed_requests() {
    let ctx = signed_ctx();
    let mut req = signed_request(&ctx, &Signer::new(key(1)), SystemTime::now());
    req.headers_mut().insert("x-region-hint", "eu-west;src=gps".parse().unwrap());
    let out = run(CellContextLayer::edge(), req).await;
    let seen = out.ctx.unwrap();
    assert_eq!(seen.cell(), None);
    assert_eq!(seen.tenant, None);
    assert_eq!(
        seen.region_hint,
        Some(RegionHint { region: CellId::new("eu-west").unwrap(), source: HintSource::Gps })
    );
}

#[tokio::test]
async fn malformed_and_oversized_headers_get_their_status() {
    let long = |n: usize| "a".repeat(n);
    let many_baggage = (0..65).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",");
    let big_baggage = format!("k={}", "v".repeat(8200));
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("x-cell-id", b"EU-WEST".to_vec(), StatusCode::BAD_REQUEST),
        ("x-cell-id", b"eu west".to_vec(), StatusCode::BAD_REQUEST),
        ("x-cell-id", b"".to_vec(), StatusCode::BAD_REQUEST),
        ("x-cell-id", long(33).into_bytes(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ("x-request-id", b"a;b".to_vec(), StatusCode::BAD_REQUEST),
        ("x-request-id", long(129).into_bytes(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ("x-tenant-id", b"acme,globex".to_vec(), StatusCode::BAD_REQUEST),
        ("x-tenant-id", "caf\u{e9}".as_bytes().to_vec(), StatusCode::BAD_REQUEST),
        ("x-tenant-id", long(10_000).into_bytes(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ("x-auth-user", b"al ice".to_vec(), StatusCode::BAD_REQUEST),
        ("x-user-id", b"\xff\xfe".to_vec(), StatusCode::BAD_REQUEST),
        ("x-region-hint", b"eu-west".to_vec(), StatusCode::BAD_REQUEST),
        ("x-region-hint", b"eu-west;src=moon".to_vec(), StatusCode::BAD_REQUEST),
        ("x-region-hint", b"EU;src=gps".to_vec(), StatusCode::BAD_REQUEST),
        ("x-region-hint", format!("{};src=gps", long(60)).into_bytes(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ("x-downgraded", b"maybe".to_vec(), StatusCode::BAD_REQUEST),
        ("x-xid", b"x\ty".to_vec(), StatusCode::BAD_REQUEST),
        ("baggage", b"novalue".to_vec(), StatusCode::BAD_REQUEST),
        ("baggage", b"k=%zz".to_vec(), StatusCode::BAD_REQUEST),
        ("baggage", many_baggage.into_bytes(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        ("baggage", big_baggage.into_bytes(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
    ];
    for (header, value, want) in cases {
        let mut req = Request::new(());
        req.headers_mut().insert(header, HeaderValue::from_bytes(&value).unwrap());
        let out = run(CellContextLayer::internal(), req).await;
        let shown = String::from_utf8_lossy(&value[..value.len().min(24)]).into_owned();
        assert_eq!(out.status, want, "{header}: {shown}");
        assert_eq!(out.headers["content-type"], "application/problem+json");
        let problem: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(problem["status"], want.as_u16());
        assert_eq!(problem["header"].as_str().unwrap().to_ascii_lowercase(), header, "{header}: {shown}");
        let kind = if want == StatusCode::BAD_REQUEST { "malformed-header" } else { "oversized-header" };
        assert_eq!(problem["type"], format!("urn:cellctx:problem:{kind}"));
        assert!(problem["title"].is_string() && problem["detail"].is_string());
    }

    // A repeated header is malformed; the body names it the usual way.
    let mut req = Request::new(());
    req.headers_mut().append("x-cell-id", HeaderValue::from_static("eu-1"));
    req.headers_mut().append("x-cell-id", HeaderValue::from_static("eu-2"));
    req.headers_mut().insert("x-request-id", HeaderValue::from_static("rejected-1"));
    let out = run(CellContextLayer::internal(), req).await;
    assert_eq!(out.status, StatusCode::BAD_REQUEST);
    assert_eq!(out.headers["x-request-id"], "rejected-1", "rejections echo the request id too");
    let problem: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(problem["header"], "X-Cell-ID");

    // W3C: a bad traceparent is ignored (and its tracestate with it), not rejected.
    let mut req = Request::new(());
    req.headers_mut().insert("traceparent", HeaderValue::from_static("00-zz-00-01"));
    req.headers_mut().insert("tracestate", HeaderValue::from_static("a=b"));
    let out = run(CellContextLayer::internal(), req).await;
    assert_eq!(out.status, StatusCode::OK);
    let seen = out.ctx.unwrap();
    assert_eq!((seen.traceparent.as_deref(), seen.tracestate.as_deref()), (None, None));

    // At the edge an unsigned malformed internal header is stripped, not read.
    let mut req = Request::new(());
    req.headers_mut().insert("x-cell-id", HeaderValue::from_static("NOT VALID"));
    assert_eq!(run(CellContextLayer::edge(), req).await.status, StatusCode::OK);
}

#[tokio::test]
async fn client_layer_keeps_explicit_headers_and_prefers_the_extension() {
    let sent: Arc<Mutex<Option<HeaderMap>>> = Arc::default();
    let client = {
        let sent = sent.clone();
        ServiceBuilder::new().layer(PropagateCellContextLayer::new()).service(service_fn(move |req: Request<()>| {
            *sent.lock().unwrap() = Some(req.headers().clone());
            async { Ok::<_, Infallible>(()) }
        }))
    };
    let scoped = Arc::new(signed_ctx());
    let mut explicit = (*scoped).clone().with_tenant("from-extension").unwrap();
    explicit.downgraded = true;

    let mut req = Request::new(());
    req.headers_mut().insert("x-cell-id", HeaderValue::from_static("set-by-caller"));
    req.headers_mut().insert("traceparent", HeaderValue::from_static(TP));
    req.extensions_mut().insert(Arc::new(explicit));
    let mut ctx = (*scoped).clone();
    ctx.traceparent = Some("00-11111111111111111111111111111111-2222222222222222-01".parse().unwrap());
    ctx.tracestate = Some("vendor=x".parse().unwrap());
    cellctx::scope(Arc::new(ctx), client.clone().oneshot(req)).await.unwrap();
    let h = sent.lock().unwrap().take().unwrap();
    assert_eq!(h["x-cell-id"], "set-by-caller");
    assert_eq!(h["x-tenant-id"], "from-extension");
    assert_eq!(h["x-downgraded"], "true");
    assert_eq!(h["traceparent"], TP);
    assert!(!h.contains_key("tracestate"));

    // Outside any scope and without an extension nothing is added.
    client.oneshot(Request::new(())).await.unwrap();
    assert!(sent.lock().unwrap().take().unwrap().is_empty());
}

#[tokio::test]
async fn client_layer_signs_what_it_sends_for_a_downstream_edge() {
    let k = key(9);
    let edge = CellContextLayer::edge().with_signing_keys(SigningKeys::new(k.clone()));
    let downstream = ServiceBuilder::new().layer(edge).service(service_fn(|req: Request<()>| async move {
        let ctx = req.extensions().get::<Arc<CellContext>>().cloned().unwrap();
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(ctx.tenant.as_deref().unwrap_or_default().to_owned()))))
    }));
    let client = ServiceBuilder::new()
        .layer(PropagateCellContextLayer::new().with_signer(Signer::new(k), Duration::from_secs(30)))
        .service(downstream);
    let mut req = Request::new(());
    req.headers_mut().insert("x-tenant-id", HeaderValue::from_static("explicit"));
    let res = cellctx::scope(Arc::new(signed_ctx()), client.oneshot(req)).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "explicit");
}

// ---- the round-trip law ----

fn token() -> impl Strategy<Value = String> {
    "[!#-+\\--:<-~]{1,128}"
}

fn context() -> impl Strategy<Value = CellContext> {
    let ids = (
        "[a-z0-9-]{1,32}",
        token(),
        proptest::option::of(token()),
        proptest::option::of(token()),
        proptest::option::of(token()),
        proptest::option::of(token()),
    );
    let rest = (
        proptest::option::of(("[a-z0-9-]{1,32}", prop_oneof![Just(HintSource::Gps), Just(HintSource::Phone), Just(HintSource::Ip)])),
        any::<bool>(),
        proptest::option::of(("[0-9a-f]{32}", "[0-9a-f]{16}", "[0-9a-f]{2}", proptest::option::of("[a-z]{1,8}=[a-z0-9]{1,8}(,[a-z]{1,8}=[a-z0-9]{1,8}){0,3}"))),
        proptest::collection::vec(("[a-zA-Z0-9!#$%&'*+.^_`|~-]{1,16}", any::<String>()), 0..8),
        proptest::option::of(Just(())),
    );
    (ids, rest).prop_filter_map("valid context", |((cell, rid, tenant, user, key, xid), (hint, down, trace, bag, with_cell))| {
        let mut ctx = CellContext::new().with_request_id(rid).ok()?;
        if with_cell.is_some() {
            ctx = ctx.with_cell(CellId::new(&cell).ok()?);
        }
        ctx.tenant = tenant.map(|v| v.parse().unwrap());
        ctx.auth_user = user.map(|v| v.parse().unwrap());
        ctx.routing_key = key.map(|v| v.parse().unwrap());
        ctx.xid = xid.map(|v| v.parse().unwrap());
        ctx.region_hint = hint.map(|(r, source)| RegionHint { region: CellId::new(&r).unwrap(), source });
        ctx.downgraded = down;
        if let Some((t, s, f, state)) = trace {
            if t.bytes().all(|b| b == b'0') || s.bytes().all(|b| b == b'0') {
                return None;
            }
            ctx.traceparent = Some(format!("00-{t}-{s}-{f}").parse().unwrap());
            ctx.tracestate = state.map(|v| v.parse().unwrap());
        }
        for (k, v) in bag {
            ctx.baggage.insert(k, v).ok()?;
        }
        Some(ctx)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn context_survives_headers_and_back(ctx in context()) {
        let names = HeaderNames::default();
        let mut headers = HeaderMap::new();
        cellctx::inject(&ctx, &names, &mut headers).unwrap();
        let back = cellctx::extract(&headers, &names).unwrap();
        prop_assert_eq!(&back, &ctx);
        // headers -> context -> headers: the same bytes.
        let mut again = HeaderMap::new();
        cellctx::inject(&back, &names, &mut again).unwrap();
        prop_assert_eq!(again, headers);
    }

    /// The client layer fills an empty outgoing map from templates kept across
    /// requests (one layer for every case: shapes come and go, values change):
    /// what it sends is exactly what `inject` writes, and reads back as the context.
    #[test]
    fn client_layer_sends_what_inject_writes(ctx in context()) {
        static CLIENT: std::sync::LazyLock<PropagateCellContextLayer> = std::sync::LazyLock::new(PropagateCellContextLayer::new);
        let sent: Arc<Mutex<Option<HeaderMap>>> = Arc::default();
        let mut client = {
            let sent = sent.clone();
            tower::Layer::layer(&*CLIENT, service_fn(move |req: Request<()>| {
                *sent.lock().unwrap() = Some(req.headers().clone());
                std::future::ready(Ok::<_, Infallible>(()))
            }))
        };
        let mut req = Request::new(());
        req.extensions_mut().insert(Arc::new(ctx.clone()));
        drop(tower::Service::call(&mut client, req));
        let sent = sent.lock().unwrap().take().unwrap();
        let names = HeaderNames::default();
        let mut want = HeaderMap::new();
        cellctx::inject(&ctx, &names, &mut want).unwrap();
        prop_assert_eq!(&sent, &want);
        prop_assert_eq!(sent.len(), want.len());
        prop_assert_eq!(cellctx::extract(&sent, &names).unwrap(), ctx);
    }
}
