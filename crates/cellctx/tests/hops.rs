//! Signed hops at the edge: bound to the request, bounded in lifetime, used once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime};

use cellctx::{
    CellContext, CellContextLayer, CellId, Clock, ContextError, HeaderNames, HopVerifier, Signer, SigningKey,
    SigningKeys, TokioClock,
};
use http::{HeaderValue, Method, Request};
use support::run;

fn key(b: u8) -> SigningKey {
    SigningKey::try_new([b; 32]).unwrap()
}

fn ctx(request_id: &str) -> CellContext {
    CellContext::new()
        .with_request_id(request_id)
        .unwrap()
        .with_cell(CellId::new("eu-west-1").unwrap())
        .with_tenant("acme")
        .unwrap()
        .with_auth_user("alice")
        .unwrap()
        .with_routing_key("alice")
        .unwrap()
}

/// `ctx` on `method uri`, with its headers and `hops`, signed at `at`.
fn signed(ctx: &CellContext, method: Method, uri: &str, hops: Option<&str>, signer: &Signer, at: SystemTime) -> Request<()> {
    let mut req = Request::builder().method(method).uri(uri).body(()).unwrap();
    cellctx::inject(ctx, &HeaderNames::default(), req.headers_mut()).unwrap();
    if let Some(h) = hops {
        req.headers_mut().insert("x-cell-hops", HeaderValue::from_str(h).unwrap());
    }
    let sig = signer.sign(ctx, &req, at);
    req.headers_mut().insert("x-cell-sig", sig);
    req
}

fn with_sig(mut req: Request<()>, sig: &HeaderValue) -> Request<()> {
    req.headers_mut().insert("x-cell-sig", sig.clone());
    req
}

/// Whether the handler saw the signed (trusted) context.
fn trusted(out: &support::Outcome) -> bool {
    let seen = out.seen.as_ref().unwrap();
    seen.ctx.tenant.as_deref() == Some("acme") && seen.ctx.cell().is_some()
}

#[tokio::test]
async fn a_replayed_signed_hop_is_refused() {
    let layer = CellContextLayer::edge().with_signing_keys(SigningKeys::new(key(1)));
    let req = || signed(&ctx("r-1"), Method::POST, "/orders", None, &Signer::new(key(1)), SystemTime::now());
    let first = run(&layer, req()).await;
    assert!(trusted(&first));
    // The same request, captured and sent again: stripped, through any clone of the layer.
    let again = run(&layer.clone(), req()).await;
    assert!(!trusted(&again));
    let seen = again.seen.unwrap();
    assert_eq!((seen.ctx.cell(), seen.ctx.tenant.as_ref(), seen.ctx.auth_user.as_ref()), (None, None, None));
    // A new request id is a new signature.
    let other = signed(&ctx("r-2"), Method::POST, "/orders", None, &Signer::new(key(1)), SystemTime::now());
    assert!(trusted(&run(&layer, other).await));
}

#[tokio::test]
async fn a_signature_moved_to_another_path_method_query_or_hop_count_is_refused() {
    let verifier = HopVerifier::new(SigningKeys::new(key(1)));
    let signer = Signer::new(key(1));
    let c = ctx("r-1");
    let original = signed(&c, Method::GET, "/orders?page=1", Some("0"), &signer, SystemTime::now());
    let sig = original.headers()["x-cell-sig"].clone();
    let moved = [
        signed(&c, Method::DELETE, "/orders?page=1", Some("0"), &signer, SystemTime::now()),
        signed(&c, Method::GET, "/admin?page=1", Some("0"), &signer, SystemTime::now()),
        signed(&c, Method::GET, "/orders?page=2", Some("0"), &signer, SystemTime::now()),
        signed(&c, Method::GET, "/orders", Some("0"), &signer, SystemTime::now()),
        signed(&c, Method::GET, "/orders?page=1", Some("7"), &signer, SystemTime::now()),
        signed(&c, Method::GET, "/orders?page=1", None, &signer, SystemTime::now()),
        signed(&ctx("r-2"), Method::GET, "/orders?page=1", Some("0"), &signer, SystemTime::now()),
    ];
    for req in moved {
        let (m, u) = (req.method().clone(), req.uri().clone());
        let got = verifier.verify(&cellctx::extract(req.headers(), &HeaderNames::default()).unwrap(), &req, sig.as_bytes());
        assert!(matches!(got, Err(ContextError::SignatureMismatch { .. })), "{m} {u}: {got:?}");
        // Through the layer too.
        let layer = CellContextLayer::edge().with_hop_verifier(verifier.clone());
        assert!(!trusted(&run(&layer, with_sig(req, &sig)).await), "{m} {u}");
    }
    // Where it was signed for, it verifies (once).
    let layer = CellContextLayer::edge().with_hop_verifier(verifier);
    let out = run(&layer, original).await;
    assert!(trusted(&out));
    assert_eq!(out.seen.unwrap().headers["x-cell-hops"], "0", "a signed hop count is kept");
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_skew_and_expiry_under_paused_time() {
    let clock = TokioClock::new();
    let verifier = HopVerifier::new(SigningKeys::new(key(1)))
        .with_clock(clock)
        .with_max_lifetime(Duration::from_secs(30))
        .with_clock_skew(Duration::from_secs(5));
    let layer = CellContextLayer::edge().with_hop_verifier(verifier.clone());
    let signer = Signer::new(key(1)).with_lifetime(Duration::from_secs(30));
    let t0 = clock.now();
    let at = |n: u32| signed(&ctx(&format!("r-{n}")), Method::GET, "/", None, &signer, t0);

    // Signed at t0 for 30 s: good at +34 s (within the skew), refused at +36 s.
    tokio::time::advance(Duration::from_secs(34)).await;
    assert!(trusted(&run(&layer, at(1)).await));
    tokio::time::advance(Duration::from_secs(2)).await;
    let req = at(2);
    let sig = req.headers()["x-cell-sig"].clone();
    let c = cellctx::extract(req.headers(), &HeaderNames::default()).unwrap();
    assert!(matches!(verifier.verify(&c, &req, sig.as_bytes()), Err(ContextError::SignatureExpired { .. })));
    assert!(!trusted(&run(&layer, at(3)).await));

    // A signer asking for more than the maximum is refused, however fresh.
    let greedy = Signer::new(key(1)).with_lifetime(Duration::from_secs(3600));
    let req = signed(&ctx("r-4"), Method::GET, "/", None, &greedy, clock.now());
    let sig = req.headers()["x-cell-sig"].clone();
    let c = cellctx::extract(req.headers(), &HeaderNames::default()).unwrap();
    assert!(matches!(
        verifier.verify(&c, &req, sig.as_bytes()),
        Err(ContextError::SignatureTooLong { lifetime_secs: 3600, .. })
    ));

    // Issued in the future beyond the skew: refused; within it: accepted.
    let ahead = |s: u64, id: &str| signed(&ctx(id), Method::GET, "/", None, &signer, clock.now() + Duration::from_secs(s));
    assert!(!trusted(&run(&layer, ahead(10, "r-5")).await));
    assert!(trusted(&run(&layer, ahead(4, "r-6")).await));
}

#[tokio::test(start_paused = true)]
async fn a_replay_is_refused_for_the_whole_window_and_the_cache_refuses_when_full() {
    let clock = TokioClock::new();
    // 16 shards, one entry each.
    let verifier = HopVerifier::new(SigningKeys::new(key(1))).with_clock(clock).with_replay_capacity(16);
    let signer = Signer::new(key(1));
    let check = |req: &Request<()>| {
        let c = cellctx::extract(req.headers(), &HeaderNames::default()).unwrap();
        verifier.verify(&c, req, req.headers()["x-cell-sig"].as_bytes())
    };
    let first = signed(&ctx("r-0"), Method::GET, "/", None, &signer, clock.now());
    check(&first).unwrap();
    tokio::time::advance(Duration::from_secs(34)).await;
    assert!(matches!(check(&first), Err(ContextError::SignatureReplayed { .. })), "still within exp + skew");

    // Fill the cache: some signature lands in a full shard and is refused, not let through.
    let mut full = 0;
    for n in 1..200 {
        let req = signed(&ctx(&format!("r-{n}")), Method::GET, "/", None, &signer, clock.now());
        match check(&req) {
            Ok(()) => {}
            Err(ContextError::ReplayCacheFull { .. }) => full += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(full > 0);
    // Once the entries expire there is room again.
    tokio::time::advance(Duration::from_secs(40)).await;
    let req = signed(&ctx("r-late"), Method::GET, "/", None, &signer, clock.now());
    check(&req).unwrap();
}

#[tokio::test]
async fn unbound_v1_signatures_are_refused_unless_opted_in() {
    let c = ctx("r-1");
    let mut req = Request::get("/").body(()).unwrap();
    cellctx::inject(&c, &HeaderNames::default(), req.headers_mut()).unwrap();
    let v1 = Signer::new(key(1)).sign_unbound_v1(&c, SystemTime::now() + Duration::from_secs(60));
    let strict = CellContextLayer::edge().with_signing_keys(SigningKeys::new(key(1)));
    let got = HopVerifier::new(SigningKeys::new(key(1))).verify(&c, &req, v1.as_bytes());
    assert!(matches!(got, Err(ContextError::SignatureUnbound { .. })));
    assert!(!trusted(&run(&strict, with_sig(req.clone(), &v1)).await));
    let rollout =
        CellContextLayer::edge().with_hop_verifier(HopVerifier::new(SigningKeys::new(key(1))).with_accept_unbound_v1(true));
    assert!(trusted(&run(&rollout, with_sig(req, &v1)).await));
}

#[tokio::test]
async fn hop_count_and_routing_key_from_a_client_are_stripped() {
    let layer = CellContextLayer::edge().with_signing_keys(SigningKeys::new(key(1)));
    let req = Request::get("/")
        .header("x-cell-hops", "99")
        .header("x-user-id", "victim")
        .header("x-region-hint", "eu-west;src=gps")
        .body(())
        .unwrap();
    let seen = run(&layer, req).await.seen.unwrap();
    assert!(!seen.headers.contains_key("x-cell-hops"));
    assert_eq!(seen.ctx.routing_key, None);
    assert_eq!(seen.ctx.region_hint.as_ref().unwrap().to_string(), "eu-west;src=gps");
    // Kept only when an operator says so (an edge behind an authenticating proxy).
    let legacy = CellContextLayer::edge().with_client_routing_key(true);
    let req = Request::get("/").header("x-user-id", "u-1").header("x-cell-hops", "3").body(()).unwrap();
    let seen = run(&legacy, req).await.seen.unwrap();
    assert_eq!(seen.ctx.routing_key.as_deref(), Some("u-1"));
    assert!(!seen.headers.contains_key("x-cell-hops"));
}

#[tokio::test]
async fn the_client_layer_signs_what_the_edge_accepts() {
    use tower::{ServiceBuilder, ServiceExt, service_fn};
    let layer = CellContextLayer::edge().with_signing_keys(SigningKeys::new(key(1)));
    let client = ServiceBuilder::new()
        .layer(cellctx::PropagateCellContextLayer::new().with_signer(Signer::new(key(1)), Duration::from_secs(10)))
        .service(service_fn(|req: Request<()>| async move { Ok::<_, std::convert::Infallible>(req) }));
    let out = cellctx::scope(std::sync::Arc::new(ctx("r-1")), client.oneshot(Request::put("http://b/items/7?x=1").body(()).unwrap()))
        .await
        .unwrap();
    assert!(out.headers()["x-cell-sig"].to_str().unwrap().starts_with("v2;"));
    let (mut parts, body) = out.into_parts();
    parts.uri = "/items/7?x=1".parse().unwrap(); // as the server sees it
    assert!(trusted(&run(&layer, Request::from_parts(parts, body)).await));
}

#[tokio::test]
async fn a_bogus_signature_does_not_turn_stripped_headers_into_a_rejection() {
    // Unsigned, a malformed X-Downgraded is stripped; with a bogus signature it
    // must be too (it was answered 400 before: the context was parsed before
    // the signature was checked).
    let layer = CellContextLayer::edge().with_signing_keys(SigningKeys::new(key(1)));
    for sig in [None, Some("v2;iat=1;exp=2;sig=bogus")] {
        let mut req = Request::get("/").header("x-downgraded", "victim").header("x-cell-id", "EU 9").body(()).unwrap();
        if let Some(sig) = sig {
            req.headers_mut().insert("x-cell-sig", HeaderValue::from_static(sig));
        }
        let out = run(&layer, req).await;
        assert_eq!(out.status, http::StatusCode::OK, "{sig:?}");
        let seen = out.seen.unwrap();
        assert_eq!((seen.ctx.cell(), seen.ctx.downgraded), (None, false));
    }
}

/// A verifier whose clock runs `0` ahead of the system's.
#[derive(Debug)]
struct Ahead(Duration);

impl Clock for Ahead {
    fn now(&self) -> SystemTime {
        SystemTime::now() + self.0
    }
}

/// A signer whose clock is 26 s behind its downstream's: the edge layer
/// strips the expired signature, the service refuses the unsigned request
/// with its clock in `x-cell-clock`, the signer learns the offset from it,
/// and the next hop it signs is accepted. Other downstreams keep the local
/// clock; an offset beyond the largest correction is ignored.
#[tokio::test]
async fn a_signer_whose_clock_is_off_learns_the_downstreams_clock_from_its_refusal() {
    use tower::{ServiceBuilder, ServiceExt, service_fn};
    let ahead = Duration::from_secs(26);
    let verifier = HopVerifier::new(SigningKeys::new(key(1))).with_clock(Ahead(ahead));
    let layer = CellContextLayer::edge().with_hop_verifier(verifier);
    // the downstream's service: only a signed (trusted) context is served
    let downstream = ServiceBuilder::new().layer(layer).service(service_fn(move |req: Request<()>| async move {
        let ctx = req.extensions().get::<std::sync::Arc<CellContext>>().cloned().unwrap();
        let mut res = http::Response::new(());
        if ctx.tenant.as_deref() != Some("acme") {
            *res.status_mut() = http::StatusCode::FORBIDDEN;
            let secs = (SystemTime::now() + ahead).duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
            res.headers_mut().insert(&cellctx::CLOCK_HEADER, HeaderValue::from(secs));
        }
        Ok::<_, std::convert::Infallible>(res)
    }));
    let skew = cellctx::ClockSkew::new();
    let client = ServiceBuilder::new()
        .layer(
            cellctx::PropagateCellContextLayer::new()
                .with_signer(Signer::new(key(1)), Duration::from_secs(10))
                .with_clock_skew(skew.clone()),
        )
        .service(service_fn(|req: Request<()>| async move { Ok::<_, std::convert::Infallible>(req) }));
    let target: http::Uri = "http://cell-a:7001/items/7".parse().unwrap();
    let send = |id: &str| {
        let (client, downstream, target, ctx) = (client.clone(), downstream.clone(), target.clone(), ctx(id));
        async move {
            let out = cellctx::scope(std::sync::Arc::new(ctx), client.oneshot(Request::put(target).body(()).unwrap())).await.unwrap();
            let (mut parts, body) = out.into_parts();
            parts.uri = "/items/7".parse().unwrap(); // as the server sees it
            downstream.oneshot(Request::from_parts(parts, body)).await.unwrap()
        }
    };

    let refused = send("r-1").await;
    assert_eq!(refused.status(), http::StatusCode::FORBIDDEN, "an expired signature is stripped");
    assert!(skew.observe(&target, refused.headers()));
    assert_eq!(send("r-2").await.status(), http::StatusCode::OK, "signed with the downstream's clock");
    assert!(!skew.observe(&target, send("r-3").await.headers()), "nothing to learn from a success");
    // another downstream is signed with the local clock still
    let other: http::Uri = "http://cell-b:7001/items/7".parse().unwrap();
    let now = SystemTime::now();
    assert!(skew.now_for(&other, now) == now);
    // a clock further off than the largest correction is ignored
    let ours = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let mut far = http::HeaderMap::new();
    far.insert(&cellctx::CLOCK_HEADER, HeaderValue::from(ours + cellctx::MAX_CORRECTION.as_secs() + 60));
    assert!(!skew.observe(&target, &far));
    assert_eq!(send("r-4").await.status(), http::StatusCode::OK, "the learned offset kept");
    // without the correction the same signer is refused
    let plain = ServiceBuilder::new()
        .layer(cellctx::PropagateCellContextLayer::new().with_signer(Signer::new(key(1)), Duration::from_secs(10)))
        .service(service_fn(|req: Request<()>| async move { Ok::<_, std::convert::Infallible>(req) }));
    let out = cellctx::scope(std::sync::Arc::new(ctx("r-5")), plain.oneshot(Request::put(target.clone()).body(()).unwrap())).await.unwrap();
    let (mut parts, body) = out.into_parts();
    parts.uri = "/items/7".parse().unwrap();
    assert_eq!(downstream.clone().oneshot(Request::from_parts(parts, body)).await.unwrap().status(), http::StatusCode::FORBIDDEN);
}
