//! Identity at the edge: JWT bearer tokens verified against a JWKS decide the
//! user, routing key, tenant and region; client-sent identity headers never do.
#![cfg(feature = "jwt")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellctx::auth::jwt::{HttpJwks, JwkSet, JwksFetch, JwksStore, JwtAuthenticator};
use cellctx::auth::{AnonymousRoute, AnonymousRoutes, EdgeAuth};
use cellctx::{CellContextLayer, ContextError};
use http::{Method, Request, StatusCode};
use support::{AUD, ISS, Issuer, Outcome, claims, jwks, now, run};

fn layer(store: JwksStore) -> CellContextLayer {
    let auth = JwtAuthenticator::try_new(store, [AUD]).unwrap().with_issuer(ISS);
    let anonymous = AnonymousRoutes::new().with(AnonymousRoute::prefix(Some(Method::GET), "/public/").unwrap());
    CellContextLayer::edge().with_authentication(EdgeAuth::new(auth).with_anonymous(anonymous))
}

fn bearer(path: &str, token: &str) -> http::request::Builder {
    Request::get(path).header("authorization", format!("Bearer {token}"))
}

fn assert_401(out: &Outcome, why: &str) {
    assert_eq!(out.status, StatusCode::UNAUTHORIZED, "{why}");
    assert_eq!(out.headers["www-authenticate"], r#"Bearer error="invalid_token""#, "{why}");
    assert!(out.seen.is_none(), "{why}: the handler must not run");
    let problem: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(problem["type"], "urn:cellctx:problem:unauthenticated", "{why}");
}

#[tokio::test]
async fn identity_from_a_valid_jwt_reaches_the_handler_whatever_x_user_id_says() {
    let (ed, rsa, ec) = (Issuer::ed25519("ed-1", 1), Issuer::rsa("rsa-1"), Issuer::ec("ec-1"));
    let layer = layer(JwksStore::from_set(&jwks(&[&ed, &rsa, &ec])));
    for issuer in [&ed, &rsa, &ec] {
        let mut c = claims("alice");
        c["tenant"] = "acme".into();
        let req = bearer("/orders", &issuer.token(&c))
            .header("x-user-id", "victim")
            .header("x-auth-user", "root")
            .header("x-tenant-id", "globex")
            .header("x-cell-id", "eu-9")
            .header("x-cell-hops", "9")
            .header("x-xid", "saga-forged")
            .header("x-cell-sig", "v2;iat=1;exp=2;sig=forged")
            .body(())
            .unwrap();
        let out = run(&layer, req).await;
        assert_eq!(out.status, StatusCode::OK, "{:?}", issuer.alg);
        let seen = out.seen.unwrap();
        let ctx = &seen.ctx;
        assert_eq!(ctx.auth_user.as_deref(), Some("alice"));
        assert_eq!(ctx.routing_key.as_deref(), Some("alice"));
        assert_eq!(ctx.tenant.as_deref(), Some("acme"));
        assert_eq!((ctx.cell(), ctx.xid.as_deref()), (None, None));
        // The headers inside say the same; the client's are gone, and so is the credential.
        assert_eq!(seen.headers["x-user-id"], "alice");
        assert_eq!(seen.headers["x-auth-user"], "alice");
        assert_eq!(seen.headers["x-tenant-id"], "acme");
        for gone in ["x-cell-id", "x-cell-hops", "x-xid", "x-cell-sig", "authorization"] {
            assert!(!seen.headers.contains_key(gone), "{gone}");
        }
        assert_eq!(seen.identity.unwrap().user, "alice");
    }
}

#[tokio::test]
async fn expired_wrong_audience_unknown_key_and_other_bad_tokens_are_401() {
    let (good, stranger) = (Issuer::ed25519("ed-1", 1), Issuer::ed25519("ed-2", 2));
    let rsa = Issuer::rsa("rsa-1");
    let layer = layer(JwksStore::from_set(&jwks(&[&good, &rsa])));
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("alice");
        f(&mut c);
        c
    };
    let cases: Vec<(&str, String)> = vec![
        ("expired", good.token(&with(&|c| c["exp"] = (now() - 120).into()))),
        ("not yet valid", good.token(&with(&|c| c["nbf"] = (now() + 600).into()))),
        ("wrong audience", good.token(&with(&|c| c["aud"] = "billing-api".into()))),
        ("no audience", good.token(&with(&|c| drop(c.as_object_mut().unwrap().remove("aud"))))),
        ("wrong issuer", good.token(&with(&|c| c["iss"] = "https://evil.test".into()))),
        ("no exp", good.token(&with(&|c| drop(c.as_object_mut().unwrap().remove("exp"))))),
        ("unknown kid", stranger.token(&claims("alice"))),
        ("a known kid, another key", stranger.token_with(Some("ed-1"), stranger.alg, &claims("alice"))),
        ("no kid", good.token_with(None, good.alg, &claims("alice"))),
        ("alg other than the key's", good.token_with(Some("rsa-1"), good.alg, &claims("alice"))),
        ("user not a token", good.token(&with(&|c| c["sub"] = "al ice".into()))),
        ("no user", good.token(&with(&|c| drop(c.as_object_mut().unwrap().remove("sub"))))),
        ("home region not a region", good.token(&with(&|c| c["home_region"] = "EU West".into()))),
        ("pinned not a bool", good.token(&with(&|c| c["region_pinned"] = "yes".into()))),
        ("garbage", "not.a.jwt".into()),
        ("alg none", {
            let t = good.token(&claims("alice"));
            let payload = t.split('.').nth(1).unwrap().to_owned();
            format!("eyJhbGciOiJub25lIiwia2lkIjoiZWQtMSJ9.{payload}.")
        }),
        ("tampered payload", {
            let t = good.token(&claims("alice"));
            let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
            // alice's signature over mallory's claims.
            parts[1] = good.token(&claims("mallory")).split('.').nth(1).unwrap().to_owned();
            parts.join(".")
        }),
    ];
    for (why, token) in cases {
        let out = run(&layer, bearer("/orders", &token).header("x-user-id", "alice").body(()).unwrap()).await;
        assert_401(&out, why);
    }
    // No credential at all on a route that needs one.
    let out = run(&layer, Request::get("/orders").header("x-user-id", "alice").body(()).unwrap()).await;
    assert_401(&out, "missing");
    // Another scheme, or two credentials.
    let out = run(&layer, Request::get("/orders").header("authorization", "Basic YTpi").body(()).unwrap()).await;
    assert_401(&out, "basic");
    let t = good.token(&claims("alice"));
    let req = bearer("/orders", &t).header("authorization", format!("Bearer {t}")).body(()).unwrap();
    assert_401(&run(&layer, req).await, "two credentials");
}

#[tokio::test]
async fn grpc_requests_get_unauthenticated() {
    let layer = layer(JwksStore::from_set(&jwks(&[&Issuer::ed25519("ed-1", 1)])));
    let req = Request::post("/orders.Orders/Get").header("content-type", "application/grpc").body(()).unwrap();
    let out = run(&layer, req).await;
    assert_eq!(out.headers["grpc-status"], "16");
    assert!(out.seen.is_none());
}

#[tokio::test]
async fn anonymous_routes_carry_no_user_and_still_refuse_bad_tokens() {
    let good = Issuer::ed25519("ed-1", 1);
    let layer = layer(JwksStore::from_set(&jwks(&[&good])));
    let req = Request::get("/public/posts?page=2")
        .header("x-user-id", "victim")
        .header("x-tenant-id", "globex")
        .header("x-region-hint", "ap-south;src=gps")
        .body(())
        .unwrap();
    let out = run(&layer, req).await;
    assert_eq!(out.status, StatusCode::OK);
    let seen = out.seen.unwrap();
    assert_eq!((seen.ctx.routing_key.as_ref(), seen.ctx.auth_user.as_ref(), seen.ctx.tenant.as_ref()), (None, None, None));
    assert!(seen.identity.is_none());
    assert_eq!(seen.ctx.region_hint.as_ref().unwrap().to_string(), "ap-south;src=gps", "no home region: the hint is used");
    // A valid token on an anonymous route is still an identity.
    let out = run(&layer, bearer("/public/posts", &good.token(&claims("bob"))).body(()).unwrap()).await;
    assert_eq!(out.seen.unwrap().ctx.routing_key.as_deref(), Some("bob"));
    // A bad one is a 401 there too; other methods and traversal are not anonymous.
    let expired = good.token(&serde_json::json!({"sub": "bob", "aud": AUD, "iss": ISS, "exp": now() - 600}));
    assert_401(&run(&layer, bearer("/public/posts", &expired).body(()).unwrap()).await, "expired on public");
    assert_401(&run(&layer, Request::post("/public/posts").body(()).unwrap()).await, "POST on public");
    assert_401(&run(&layer, Request::get("/public/../orders").body(()).unwrap()).await, "traversal");
}

#[tokio::test]
async fn home_region_and_pinning_decide_the_region_hint() {
    let good = Issuer::ed25519("ed-1", 1);
    let layer = layer(JwksStore::from_set(&jwks(&[&good])));
    let hint_for = |c: serde_json::Value| {
        let layer = layer.clone();
        let token = good.token(&c);
        async move {
            let req = bearer("/orders", &token).header("x-region-hint", "ap-south;src=gps").body(()).unwrap();
            let seen = run(&layer, req).await.seen.unwrap();
            (seen.ctx.region_hint.as_ref().map(ToString::to_string), seen.headers.get("x-region-hint").cloned())
        }
    };
    let mut home = claims("alice");
    home["home_region"] = "eu-west".into();
    let (hint, header) = hint_for(home).await;
    assert_eq!(hint.as_deref(), Some("eu-west;src=gps"), "the registered home wins over the client's hint");
    assert_eq!(header.unwrap(), "eu-west;src=gps");
    let mut pinned = claims("carol");
    pinned["region_pinned"] = true.into();
    assert_eq!(hint_for(pinned).await, (None, None), "a pinned user's region is never the client's pick");
    assert_eq!(hint_for(claims("bob")).await.0.as_deref(), Some("ap-south;src=gps"), "no home: the client's hint");
}

#[tokio::test(start_paused = true)]
async fn jwks_rotation_by_kid_through_the_background_refresh() {
    let (k1, k2) = (Issuer::ed25519("k1", 1), Issuer::ed25519("k2", 2));
    let published = Arc::new(Mutex::new(jwks(&[&k1])));
    let source = {
        let published = Arc::clone(&published);
        move || {
            let set = published.lock().unwrap().clone();
            async move { Ok::<_, ContextError>(set) }
        }
    };
    let store = JwksStore::empty();
    let task = store.spawn_refresh(source, Duration::from_secs(300));
    let layer = layer(store.clone());
    let status = |issuer: &Issuer| {
        let layer = layer.clone();
        let token = issuer.token(&claims("alice"));
        async move { run(&layer, bearer("/orders", &token).body(()).unwrap()).await.status }
    };

    tokio::time::sleep(Duration::from_secs(1)).await; // the first fetch
    assert_eq!(store.kids(), ["k1"]);
    assert_eq!(status(&k1).await, StatusCode::OK);
    assert_eq!(status(&k2).await, StatusCode::UNAUTHORIZED, "k2 not published yet");

    // The issuer adds k2 and retires k1: nothing changes until the next refresh.
    *published.lock().unwrap() = jwks(&[&k2]);
    assert_eq!(status(&k2).await, StatusCode::UNAUTHORIZED);
    tokio::time::sleep(Duration::from_secs(300)).await;
    assert_eq!(store.kids(), ["k2"]);
    assert_eq!(status(&k2).await, StatusCode::OK, "a new kid is accepted after the refresh");
    assert_eq!(status(&k1).await, StatusCode::UNAUTHORIZED, "a removed kid is refused");

    // A failed fetch keeps the last keys.
    let failing = JwksStore::from_set(&jwks(&[&k1]));
    let err = failing.refresh(&|| async { Err::<JwkSet, _>(ContextError::InvalidAuthConfig("down".into())) }).await;
    assert!(err.is_err());
    assert_eq!(failing.kids(), ["k1"]);
    task.abort();
}

#[tokio::test]
async fn jwks_is_fetched_over_http() {
    let k1 = Issuer::rsa("rsa-1");
    let body = serde_json::to_string(&jwks(&[&k1])).unwrap();
    let app = axum::Router::new()
        .route("/jwks.json", axum::routing::get(move || async move { body }))
        .route("/down", axum::routing::get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "no") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let set = HttpJwks::new(format!("http://{addr}/jwks.json").parse().unwrap()).fetch().await.unwrap();
    let store = JwksStore::empty();
    store.replace(&set);
    assert_eq!(store.kids(), ["rsa-1"]);
    let out = run(&layer(store.clone()), bearer("/orders", &k1.token(&claims("alice"))).body(()).unwrap()).await;
    assert_eq!(out.status, StatusCode::OK);

    let down = HttpJwks::new(format!("http://{addr}/down").parse().unwrap());
    assert!(store.refresh(&down).await.is_err());
    assert_eq!(store.kids(), ["rsa-1"], "kept on failure");
}

#[test]
fn an_authenticator_needs_an_audience() {
    assert!(matches!(
        JwtAuthenticator::try_new(JwksStore::empty(), Vec::<String>::new()),
        Err(ContextError::InvalidAuthConfig(_))
    ));
    assert!(JwtAuthenticator::try_new(JwksStore::empty(), [""]).is_err());
}

#[tokio::test]
async fn refusals_are_counted_by_reason() {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    let exporter = opentelemetry_sdk::metrics::InMemoryMetricExporter::default();
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(opentelemetry_sdk::metrics::PeriodicReader::builder(exporter.clone()).build())
        .build();
    let (good, stranger) = (Issuer::ed25519("ed-1", 1), Issuer::ed25519("ed-2", 2));
    let layer = layer(JwksStore::from_set(&jwks(&[&good]))).with_meter(&provider.meter("test"));
    let expired = good.token(&serde_json::json!({"sub": "a", "aud": AUD, "iss": ISS, "exp": now() - 600}));
    for req in [
        Request::get("/orders").body(()).unwrap(),
        Request::get("/orders").body(()).unwrap(),
        bearer("/orders", &expired).body(()).unwrap(),
        bearer("/orders", &stranger.token(&claims("a"))).body(()).unwrap(),
        bearer("/orders", &good.token(&claims("a"))).body(()).unwrap(),
    ] {
        run(&layer, req).await;
    }
    provider.force_flush().unwrap();
    let mut got = std::collections::BTreeMap::new();
    for rm in exporter.get_finished_metrics().unwrap() {
        for m in rm.scope_metrics().flat_map(|s| s.metrics()).filter(|m| m.name() == cellctx::auth::AUTH_REJECTED) {
            if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                for p in sum.data_points() {
                    let reason = p.attributes().find(|kv| kv.key.as_str() == "reason").unwrap().value.to_string();
                    got.insert(reason, p.value());
                }
            }
        }
    }
    let want: std::collections::BTreeMap<String, u64> =
        [("missing".into(), 2), ("expired".into(), 1), ("unknown-key".into(), 1)].into();
    assert_eq!(got, want);
}
