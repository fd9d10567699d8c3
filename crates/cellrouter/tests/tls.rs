//! A forward to a cell over HTTPS: rustls on both ends, a certificate made in
//! the test (rcgen), the forwarder given to the layer with `with_forwarder`.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::Router;
use axum::routing::any;
use bytes::Bytes;
use cellctx::{CellContextLayer, CellId};
use cellrouter::{Cell, CellRouterLayer, ForwardBody, RoutingTable, TableStore, resolve_in};
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

/// What the far cell saw: its name and the context the hop carried.
async fn echo() -> String {
    let ctx = cellctx::current().expect("context in scope");
    format!("served_by=b key={}", ctx.routing_key.as_deref().unwrap_or("-"))
}

#[tokio::test]
async fn a_forward_crosses_to_an_https_cell_through_rustls() {
    let (body, handshakes) = forward_over_tls(None).await;
    assert_eq!(body.0, StatusCode::OK, "{}", body.1);
    assert!(body.1.starts_with("served_by=b key=user-"), "the key crossed the TLS hop: {}", body.1);
    assert_eq!(handshakes, 1, "one TLS handshake at b");
}

/// The far cell trusts a context only from a signed hop (edge mode with the
/// hop keys): the forwarder, wrapped in the signing client layer, signs what
/// the router sends over TLS, and the far side verifies it.
#[tokio::test]
async fn a_signed_hop_over_tls_is_verified_on_the_far_side() {
    let key = || cellctx::SigningKey::try_new([7u8; 32]).unwrap();
    let (signed, _) = forward_over_tls(Some((key(), Some(key())))).await;
    assert_eq!(signed.0, StatusCode::OK, "{}", signed.1);
    assert!(signed.1.starts_with("served_by=b key=user-"), "the verified key reached b: {}", signed.1);
    // unsigned: b strips the stated key and never sees the user
    let (unsigned, _) = forward_over_tls(Some((key(), None))).await;
    assert_eq!(unsigned.1, "served_by=b key=-", "an unsigned hop's context is not trusted");
    // signed with another key: refused the same way
    let wrong = cellctx::SigningKey::try_new([9u8; 32]).unwrap();
    let (forged, _) = forward_over_tls(Some((key(), Some(wrong)))).await;
    assert_eq!(forged.1, "served_by=b key=-", "a hop signed with an unknown key is not trusted");
}

/// Forwards one request for a key of b from a to b over TLS. With
/// `signing = Some((b's key, a's signing key))`, b accepts only signed hops
/// under its key and a signs with its key (if any). Returns b's answer and
/// the handshakes b saw.
async fn forward_over_tls(signing: Option<(cellctx::SigningKey, Option<cellctx::SigningKey>)>) -> ((StatusCode, String), usize) {
    // ring, as the `tls` feature builds (aws-lc-rs would add a heavy C build)
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_der = cert.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());

    // cell b: TLS only, behind the internal context layer and its router
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_url = format!("https://localhost:{}", listener.local_addr().unwrap().port());
    let b = Cell::new(id("b"), id("eu"), b_url.clone()); // not private: only https may reach it
    let a = Cell::new(id("a"), id("eu"), "http://127.0.0.1:1").with_private_link(true);
    let table = RoutingTable::uniform(id("eu"), vec![a, b], 16384);
    let store = TableStore::with_table(table.clone()).unwrap();
    let server_cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let b_context = match &signing {
        Some((b_key, _)) => CellContextLayer::edge().with_signing_keys(cellctx::SigningKeys::new(b_key.clone())),
        None => CellContextLayer::internal(),
    };
    let app = Router::new().route("/{*path}", any(echo)).layer(CellRouterLayer::new(store.clone(), id("b"))).layer(b_context);
    let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, app, done) = (acceptor.clone(), app.clone(), done.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
        }
    });

    // cell a: a forwarder over rustls that trusts the test certificate
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client_cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(client_cfg).https_only().enable_http1().build();
    let client: Client<_, ForwardBody> = Client::builder(TokioExecutor::new()).build(https);
    let a_router = match signing.and_then(|(_, a_key)| a_key) {
        // the signing client layer around the forwarder: it signs exactly what crosses the link
        Some(a_key) => CellRouterLayer::new(store, id("a")).with_forwarder(
            tower::ServiceBuilder::new()
                .layer(cellctx::PropagateCellContextLayer::new().with_signer(cellctx::Signer::new(a_key), std::time::Duration::from_secs(10)))
                .service(client),
        ),
        None => CellRouterLayer::new(store, id("a")).with_forwarder(client),
    };
    let svc = tower::ServiceBuilder::new().layer(CellContextLayer::internal()).layer(a_router).service(
        tower::service_fn(|_req: http::Request<axum::body::Body>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(axum::body::Body::from("served_by=a")))
        }),
    );

    let compiled = table.compile().unwrap();
    let key = (0..100_000).map(|i| format!("user-{i}")).find(|k| resolve_in(&compiled, &id("eu"), k).unwrap().home.as_str() == "b").unwrap();
    let req = http::Request::get("/posts/1").header("x-user-id", &key).body(axum::body::Body::new(Empty::<Bytes>::new())).unwrap();
    let resp = tower::ServiceExt::oneshot(svc, req).await.unwrap();
    let status = resp.status();
    let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    ((status, body), handshakes.load(std::sync::atomic::Ordering::SeqCst))
}
