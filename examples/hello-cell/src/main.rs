//! hello-cell: two axum services on loopback proving that the cell context
//! crosses a hop.
//!
//! Service A faces clients ([`cellctx::TrustMode::Edge`]): it strips internal headers
//! unless they are signed, and calls service B through a hyper-util client
//! wrapped in [`PropagateCellContextLayer`]. Service B ([`cellctx::TrustMode::Internal`])
//! prints the context it received and returns it as JSON.
//!
//! `cargo run -p hello-cell` sends a few requests to A (a signed context, the same
//! context unsigned, a malformed header), prints what B saw, and exits 0.
//! `cargo run -p hello-cell -- --serve` keeps both services running (ctrl-c stops).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::routing::get;
use axum::{Extension, Router};
use cellctx::{
    CellContext, CellContextLayer, CellId, HintSource, PropagateCellContextLayer, RegionHint, Signer, SigningKey,
    SigningKeys,
};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The demo's shared signing key. A real deployment loads it from a secret store.
const DEMO_KEY: &[u8] = b"hello-cell demo key, not a secret";

fn describe(ctx: &CellContext) -> serde_json::Value {
    serde_json::json!({
        "cell": ctx.cell().map(CellId::as_str),
        "tenant": ctx.tenant,
        "auth_user": ctx.auth_user,
        "routing_key": ctx.routing_key,
        "region_hint": ctx.region_hint.as_ref().map(ToString::to_string),
        "request_id": ctx.request_id,
        "trace_id": ctx.trace_id(),
    })
}

/// B: prints and returns the context it received.
fn service_b() -> Router {
    async fn hello(Extension(ctx): Extension<Arc<CellContext>>) -> String {
        let seen = describe(&ctx);
        println!("  B received: {seen}");
        seen.to_string()
    }
    Router::new().route("/hello", get(hello)).layer(CellContextLayer::internal())
}

/// A: the edge; calls B with the current context through the client layer.
fn service_a(b: SocketAddr, keys: SigningKeys) -> Router {
    let client = ServiceBuilder::new()
        .layer(PropagateCellContextLayer::new())
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let handler = move || {
        let client = client.clone();
        async move {
            let req = Request::get(format!("http://{b}/hello")).body(Full::default()).map_err(internal)?;
            let res = client.oneshot(req).await.map_err(internal)?;
            let body = res.into_body().collect().await.map_err(internal)?.to_bytes();
            Ok::<_, (StatusCode, String)>(String::from_utf8_lossy(&body).into_owned())
        }
    };
    Router::new().route("/", get(handler)).layer(CellContextLayer::edge().with_signing_keys(keys))
}

fn internal(e: impl std::fmt::Display) -> (StatusCode, String) {
    (StatusCode::BAD_GATEWAY, e.to_string())
}

async fn serve(app: Router) -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("server on {addr} stopped: {e}");
        }
    });
    Ok(addr)
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    a: SocketAddr,
    title: &str,
    headers: &[(&str, String)],
) -> Result<StatusCode, BoxError> {
    println!("\n{title}");
    let mut req = Request::get(format!("http://{a}/"));
    for (k, v) in headers {
        println!("  -> {k}: {v}");
        req = req.header(*k, v.as_str());
    }
    let res = client.request(req.body(Full::default())?).await?;
    let status = res.status();
    let echoed = res.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned();
    let body = res.into_body().collect().await?.to_bytes();
    println!("  <- {status} (x-request-id: {echoed}) {}", String::from_utf8_lossy(&body));
    Ok(status)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let serve_forever = std::env::args().any(|a| a == "--serve");

    let key = SigningKey::try_new(DEMO_KEY)?;
    let b = serve(service_b()).await?;
    let a = serve(service_a(b, SigningKeys::new(key.clone()))).await?;
    println!("service A (edge)     on http://{a}/");
    println!("service B (internal) on http://{b}/hello");

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let ctx = CellContext::new()
        .with_cell(CellId::new("eu-west-1")?)
        .with_tenant("acme")?
        .with_auth_user("alice")?
        .with_routing_key("user-42")?
        .with_region_hint(RegionHint { region: CellId::new("eu-west")?, source: HintSource::Gps })
        .with_request_id("hello-1")?;
    // A v2 signature is bound to this request (GET /, request id hello-1) and lives 30 s.
    let sig = Signer::new(key).sign(&ctx, &Request::get("/").body(())?, SystemTime::now());
    let context_headers = vec![
        ("x-cell-id", "eu-west-1".to_owned()),
        ("x-tenant-id", "acme".to_owned()),
        ("x-auth-user", "alice".to_owned()),
        ("x-user-id", "user-42".to_owned()),
        ("x-region-hint", "eu-west;src=gps".to_owned()),
        ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
    ];

    let mut signed = context_headers.clone();
    signed.push(("x-request-id", "hello-1".to_owned()));
    signed.push(("x-cell-sig", sig.to_str()?.to_owned()));
    let s1 = send(&client, a, "1. signed context: A trusts it and B sees all of it", &signed).await?;

    let mut unsigned = context_headers;
    unsigned.push(("x-request-id", "hello-2".to_owned()));
    let s2 = send(&client, a, "2. same context, unsigned: A strips cell, tenant, user and routing key", &unsigned).await?;

    let s3 = send(&client, a, "3. no context at all: A generates a request id", &[]).await?;

    let bad = vec![("x-request-id", "not a token".to_owned())];
    let s4 = send(&client, a, "4. malformed header: 400 with a problem body, B never called", &bad).await?;

    let expected = [StatusCode::OK, StatusCode::OK, StatusCode::OK, StatusCode::BAD_REQUEST];
    if [s1, s2, s3, s4] != expected {
        return Err(format!("unexpected statuses {:?}", [s1, s2, s3, s4]).into());
    }
    if serve_forever {
        println!("\nserving; ctrl-c to stop");
        tokio::signal::ctrl_c().await?;
    }
    Ok(())
}
