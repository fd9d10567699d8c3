//! A hostile-request corpus against the edge stack: 10,000 requests from a
//! seeded generator (forged internal and identity headers, forged, replayed,
//! moved, expired, tampered and unbound signatures, bad tokens, oversized and
//! non-UTF-8 values, repeated headers, hop counts, region hints).
//!
//! The generator also writes down, apart from the code under test, which
//! contexts each request may legitimately reach the handler with: the signed
//! context (a fresh, untampered signed hop), the identity of a valid token, or
//! nobody (no credential on an anonymous route). The handler records what it
//! saw; the checker compares. Asserted: no panic, no handler saw a context
//! outside its allowed set (so no client-chosen cell, tenant, user, routing
//! key or hop count), no replayed signature accepted, and every legitimate
//! request without malformed headers served.
#![cfg(feature = "jwt")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use cellctx::auth::jwt::{JwksStore, JwtAuthenticator};
use cellctx::auth::{AnonymousRoute, AnonymousRoutes, EdgeAuth};
use cellctx::{CellContext, CellContextLayer, CellId, HeaderNames, HopVerifier, Signer, SigningKey, SigningKeys};
use http::{HeaderValue, Method, Request, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{AUD, ISS, Issuer, Seen, claims, jwks, now, run};

const SEED: u64 = 0x00C0_FFEE_CE11;
const REQUESTS: usize = 10_000;

/// What a handler may see: the fields an attacker would want to choose.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    cell: Option<String>,
    tenant: Option<String>,
    user: Option<String>,
    key: Option<String>,
    xid: Option<String>,
    downgraded: bool,
    hops: Option<String>,
    hint: Option<String>,
}

impl View {
    fn of(seen: &Seen) -> View {
        let c = &seen.ctx;
        View {
            cell: c.cell().map(|c| c.as_str().to_owned()),
            tenant: c.tenant.as_deref().map(str::to_owned),
            user: c.auth_user.as_deref().map(str::to_owned),
            key: c.routing_key.as_deref().map(str::to_owned),
            xid: c.xid.as_deref().map(str::to_owned),
            downgraded: c.downgraded,
            hops: seen.headers.get("x-cell-hops").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            hint: c.region_hint.as_ref().map(ToString::to_string),
        }
    }
}

struct User {
    name: &'static str,
    tenant: Option<&'static str>,
    home: Option<&'static str>,
    pinned: bool,
}

const USERS: [User; 4] = [
    User { name: "alice", tenant: Some("acme"), home: Some("eu-west"), pinned: false },
    User { name: "bob", tenant: None, home: None, pinned: false },
    User { name: "carol", tenant: Some("initech"), home: Some("eu-central"), pinned: true },
    User { name: "dave", tenant: None, home: None, pinned: true },
];

/// The view a valid token for `u` gives, with the client's (valid) hint.
fn identity_view(u: &User, client_hint: Option<&str>) -> View {
    let hint = match (u.home, u.pinned) {
        (Some(home), _) => Some(format!("{home};src=gps")),
        (None, true) => None,
        (None, false) => client_hint.map(str::to_owned),
    };
    View {
        cell: None,
        tenant: u.tenant.map(str::to_owned),
        user: Some(u.name.into()),
        key: Some(u.name.into()),
        xid: None,
        downgraded: false,
        hops: None,
        hint,
    }
}

fn anonymous_view(client_hint: Option<&str>) -> View {
    View {
        cell: None,
        tenant: None,
        user: None,
        key: None,
        xid: None,
        downgraded: false,
        hops: None,
        hint: client_hint.map(str::to_owned),
    }
}

fn signed_ctx(request_id: &str) -> CellContext {
    CellContext::new()
        .with_request_id(request_id)
        .unwrap()
        .with_cell(CellId::new("eu-1").unwrap())
        .with_tenant("svc-tenant")
        .unwrap()
        .with_auth_user("svc")
        .unwrap()
        .with_routing_key("svc-key")
        .unwrap()
}

fn signed_view(hops: Option<&str>, hint: Option<&str>) -> View {
    View {
        cell: Some("eu-1".into()),
        tenant: Some("svc-tenant".into()),
        user: Some("svc".into()),
        key: Some("svc-key".into()),
        xid: None,
        downgraded: false,
        hops: hops.map(str::to_owned),
        hint: hint.map(str::to_owned),
    }
}

/// Tokens minted once: valid ones per user, and bad ones.
struct Tokens {
    valid: Vec<(usize, String)>,
    bad: Vec<String>,
}

fn tokens(ed: &Issuer, rsa: &Issuer, ec: &Issuer, attacker: &Issuer) -> Tokens {
    let mut valid = Vec::new();
    for (i, u) in USERS.iter().enumerate() {
        let mut c = claims(u.name);
        if let Some(t) = u.tenant {
            c["tenant"] = t.into();
        }
        if let Some(h) = u.home {
            c["home_region"] = h.into();
        }
        c["region_pinned"] = u.pinned.into();
        for issuer in [ed, ed, ed, ed, rsa, ec] {
            valid.push((i, issuer.token(&c)));
        }
    }
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims("alice");
        f(&mut c);
        c
    };
    let good = ed.token(&claims("alice"));
    let payload_of = |t: &str| t.split('.').nth(1).unwrap().to_owned();
    let bad = vec![
        ed.token(&with(&|c| c["exp"] = (now() - 3600).into())),
        ed.token(&with(&|c| c["aud"] = "other-api".into())),
        ed.token(&with(&|c| c["iss"] = "https://evil.test".into())),
        ed.token(&with(&|c| c["nbf"] = (now() + 3600).into())),
        attacker.token(&claims("alice")),
        attacker.token_with(Some("ed-1"), attacker.alg, &claims("alice")),
        ed.token_with(None, ed.alg, &claims("alice")),
        ed.token_with(Some("rsa-1"), ed.alg, &claims("alice")),
        format!("eyJhbGciOiJub25lIiwia2lkIjoiZWQtMSJ9.{}.", payload_of(&good)),
        {
            let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
            parts[1] = payload_of(&ed.token(&claims("victim")));
            parts.join(".")
        },
        ed.token(&with(&|c| c["sub"] = "has space".into())),
        ed.token(&with(&|c| c["home_region"] = 7.into())),
        "a.b.c".into(),
        "....".into(),
    ];
    Tokens { valid, bad }
}

/// One generated request and what the oracle allows for it.
struct Case {
    req: Request<()>,
    allowed: Vec<View>,
    /// A value somewhere may make the stack answer 400/431 (or a signature path
    /// read it): then being refused is fine.
    may_reject: bool,
    replay: bool,
}

const PATHS: [(&str, bool); 8] = [
    ("/orders", false),
    ("/orders/7?expand=items", false),
    ("/public/posts", true),
    ("/public/posts?page=2", true),
    ("/public/../orders", false),
    ("/public/%2e%2e/orders", false),
    ("//public/posts", false),
    ("/admin", false),
];

const FORGEABLE: [&str; 7] = ["x-user-id", "x-tenant-id", "x-auth-user", "x-cell-id", "x-xid", "x-downgraded", "x-cell-hops"];

fn forged_value(rng: &mut StdRng) -> (HeaderValue, bool) {
    match rng.random_range(0..8) {
        0 => (HeaderValue::from_static("victim"), false),
        1 => (HeaderValue::from_static("eu-9"), false),
        2 => (HeaderValue::from_static("true"), false),
        3 => (HeaderValue::from_static("4294967296"), false),
        4 => (HeaderValue::from_static("0"), false),
        5 => (HeaderValue::try_from("a".repeat(rng.random_range(129..4000))).unwrap(), true),
        6 => (HeaderValue::from_bytes(&[0xff, 0xfe, b'x']).unwrap(), true),
        _ => (HeaderValue::from_static("a,b;c"), true),
    }
}

struct Generator {
    rng: StdRng,
    tokens: Tokens,
    signer: Signer,
    wrong_signer: Signer,
    /// Clean signed requests already sent (to replay), and their signatures (to move).
    sent_signed: Vec<Request<()>>,
    n: usize,
}

impl Generator {
    fn case(&mut self) -> Case {
        self.n += 1;
        let rng = &mut self.rng;
        if !self.sent_signed.is_empty() && rng.random_bool(0.08) {
            // A captured signed request, sent again byte for byte.
            let i = rng.random_range(0..self.sent_signed.len());
            let req = clone(&self.sent_signed[i]);
            let mut case = self.oracle(req, false, None, false);
            case.replay = true;
            return case;
        }
        let method = [Method::GET, Method::GET, Method::POST, Method::DELETE, Method::PUT][rng.random_range(0..5)].clone();
        let (path, public) = PATHS[rng.random_range(0..PATHS.len())];
        let public = public && method == Method::GET;
        let mut req = Request::builder().method(method).uri(path).body(()).unwrap();
        let mut may_reject = false;

        // The credential.
        let mut valid_user = None;
        match rng.random_range(0..20) {
            0..=5 => {}
            6..=12 => {
                let (u, t) = &self.tokens.valid[rng.random_range(0..self.tokens.valid.len())];
                valid_user = Some(*u);
                req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            13..=17 => {
                let t = &self.tokens.bad[rng.random_range(0..self.tokens.bad.len())];
                req.headers_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            18 => {
                let (_, t) = &self.tokens.valid[0];
                let v: HeaderValue = format!("Bearer {t}").parse().unwrap();
                req.headers_mut().append("authorization", v.clone());
                req.headers_mut().append("authorization", v);
            }
            _ => {
                let v = if rng.random_bool(0.5) {
                    HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap()
                } else {
                    HeaderValue::try_from(format!("Bearer {}", "A".repeat(9000))).unwrap()
                };
                req.headers_mut().insert("authorization", v);
            }
        }
        let has_credential = req.headers().contains_key("authorization");

        // Client-stated headers a client may send.
        let mut client_hint = None;
        if rng.random_bool(0.4) {
            match rng.random_range(0..4) {
                0 => client_hint = Some("ap-south;src=gps"),
                1 => client_hint = Some("eu-west;src=ip"),
                2 => {
                    req.headers_mut().insert("x-region-hint", HeaderValue::from_static("mars"));
                    may_reject = true;
                }
                _ => {
                    req.headers_mut().append("x-region-hint", HeaderValue::from_static("eu-west;src=gps"));
                    req.headers_mut().append("x-region-hint", HeaderValue::from_static("ap-south;src=gps"));
                    may_reject = true;
                }
            }
            if let Some(h) = client_hint {
                req.headers_mut().insert("x-region-hint", HeaderValue::from_static(h));
            }
        }

        // The signature.
        let sig_mode = rng.random_range(0..20);
        let request_id = format!("hostile-{}", self.n);
        let hops = rng.random_bool(0.3).then(|| ["0", "1", "2"][rng.random_range(0..3)]);
        let mut clean_signed = false;
        if sig_mode < 9 {
            // The signer signs what it sends, the client's hint included.
            let mut ctx = signed_ctx(&request_id);
            if let Some(h) = client_hint {
                ctx = ctx.with_region_hint(h.parse().unwrap());
            }
            cellctx::inject(&ctx, &HeaderNames::default(), req.headers_mut()).unwrap();
            if let Some(h) = hops {
                req.headers_mut().insert("x-cell-hops", HeaderValue::from_static(h));
            }
            let now = std::time::SystemTime::now();
            let sig = match sig_mode {
                0..=3 => self.signer.sign(&ctx, &req, now),
                4 => self.signer.sign(&ctx, &req, now - std::time::Duration::from_secs(120)), // expired
                5 => self.wrong_signer.sign(&ctx, &req, now),
                6 => self.signer.sign_unbound_v1(&ctx, now + std::time::Duration::from_secs(20)),
                7 => match self.sent_signed.last() {
                    // Moved from another request.
                    Some(prev) => prev.headers()["x-cell-sig"].clone(),
                    None => HeaderValue::from_static("v2;iat=1;exp=2;sig=x"),
                },
                _ => {
                    // Tampered: one character of the MAC changed.
                    let s = self.signer.sign(&ctx, &req, now).to_str().unwrap().to_owned();
                    let mut b = s.into_bytes();
                    let last = b.len() - 1;
                    b[last] = if b[last] == b'A' { b'B' } else { b'A' };
                    HeaderValue::from_bytes(&b).unwrap()
                }
            };
            req.headers_mut().insert("x-cell-sig", sig);
            if sig_mode == 3 {
                // Signed, then one signed field changed to another value.
                match rng.random_range(0..4) {
                    0 => req.headers_mut().insert("x-tenant-id", HeaderValue::from_static("victim")),
                    1 => req.headers_mut().insert("x-cell-id", HeaderValue::from_static("eu-9")),
                    2 => req.headers_mut().insert("x-cell-hops", HeaderValue::from_static("7")),
                    _ => req.headers_mut().insert("x-user-id", HeaderValue::from_static("victim")),
                };
            }
            clean_signed = sig_mode <= 2 && !may_reject;
        } else if sig_mode == 9 {
            req.headers_mut().insert("x-cell-sig", HeaderValue::from_static("v2;iat=99999999999;exp=99999999999;sig=AAAA"));
        } else if sig_mode == 10 {
            req.headers_mut().append("x-cell-sig", HeaderValue::from_static("v2;iat=1;exp=2;sig=a"));
            req.headers_mut().append("x-cell-sig", HeaderValue::from_static("v2;iat=1;exp=2;sig=b"));
        }

        // A malformed request id (on a signed request it also breaks the binding).
        if rng.random_bool(0.05) {
            req.headers_mut().insert("x-request-id", HeaderValue::from_bytes(b"bad id\xff").unwrap());
            may_reject = true;
            clean_signed = false;
        }

        // Forged internal and identity headers on requests that are not clean
        // signed hops.
        if !clean_signed {
            for name in FORGEABLE {
                if rng.random_bool(0.3) {
                    let (v, _malformed) = forged_value(rng);
                    if rng.random_bool(0.1) {
                        req.headers_mut().append(name, v.clone());
                        req.headers_mut().append(name, v);
                    } else {
                        req.headers_mut().insert(name, v);
                    }
                }
            }
        }
        let case = self.oracle(req, clean_signed, valid_user, public && !has_credential);
        let case = Case { may_reject: case.may_reject || may_reject, ..case };
        let case = Case { allowed: with_hint(case.allowed, client_hint), ..case };
        if clean_signed {
            self.sent_signed.push(clone(&case.req));
        }
        case
    }

    fn oracle(&self, req: Request<()>, clean_signed: bool, valid_user: Option<usize>, anonymous: bool) -> Case {
        let hops = req.headers().get("x-cell-hops").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let hint = req.headers().get("x-region-hint").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut allowed = Vec::new();
        if clean_signed {
            allowed.push(signed_view(hops.as_deref(), hint.as_deref()));
        }
        // Replays: recompute from the captured request.
        let (user, anon) = if valid_user.is_none() && !clean_signed && !anonymous {
            replay_credential(&self.tokens, &req)
        } else {
            (valid_user, anonymous)
        };
        if let Some(u) = user {
            allowed.push(identity_view(&USERS[u], hint.as_deref()));
        }
        if anon {
            allowed.push(anonymous_view(hint.as_deref()));
        }
        Case { req, allowed, may_reject: false, replay: false }
    }
}

/// For a replayed request: the user of its token if valid, and whether it is
/// anonymous (read from the captured request, which the generator built).
fn replay_credential(tokens: &Tokens, req: &Request<()>) -> (Option<usize>, bool) {
    let auth = req.headers().get_all("authorization").iter().collect::<Vec<_>>();
    let public = req.method() == Method::GET && PATHS.iter().any(|(p, public)| *public && req.uri() == *p);
    match auth.as_slice() {
        [] => (None, public),
        [one] => {
            let t = one.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")).unwrap_or("");
            (tokens.valid.iter().find(|(_, v)| v == t).map(|(u, _)| *u), false)
        }
        _ => (None, false),
    }
}

/// The allowed views with the client's hint set as the generator sent it.
fn with_hint(allowed: Vec<View>, client_hint: Option<&str>) -> Vec<View> {
    allowed
        .into_iter()
        .map(|mut v| {
            if v.cell.is_none() && v.user.is_none() {
                v.hint = client_hint.map(str::to_owned);
            }
            v
        })
        .collect()
}

fn clone(req: &Request<()>) -> Request<()> {
    let mut out = Request::builder().method(req.method().clone()).uri(req.uri().clone()).body(()).unwrap();
    *out.headers_mut() = req.headers().clone();
    out
}

#[tokio::test]
async fn ten_thousand_hostile_requests() {
    println!("hostile corpus seed: {SEED:#x}");
    let (ed, rsa, ec, attacker) = (Issuer::ed25519("ed-1", 1), Issuer::rsa("rsa-1"), Issuer::ec("ec-1"), Issuer::ed25519("ed-x", 66));
    let store = JwksStore::from_set(&jwks(&[&ed, &rsa, &ec]));
    let auth = JwtAuthenticator::try_new(store, [AUD]).unwrap().with_issuer(ISS);
    let anonymous = AnonymousRoutes::new().with(AnonymousRoute::prefix(Some(Method::GET), "/public/").unwrap());
    let key = SigningKey::try_new([1u8; 32]).unwrap();
    let layer = CellContextLayer::edge()
        .with_hop_verifier(HopVerifier::new(SigningKeys::new(key.clone())))
        .with_authentication(EdgeAuth::new(auth).with_anonymous(anonymous));
    // Malformed forged internal headers never make a refusal: they are stripped
    // whether or not a (bogus) signature comes along.
    let mut generator = Generator {
        rng: StdRng::seed_from_u64(SEED),
        tokens: tokens(&ed, &rsa, &ec, &attacker),
        signer: Signer::new(key),
        wrong_signer: Signer::new(SigningKey::try_new([2u8; 32]).unwrap()),
        sent_signed: Vec::new(),
        n: 0,
    };

    let (mut panics, mut escapes, mut replays_accepted, mut wrongly_refused) = (0, Vec::new(), 0, Vec::new());
    let (mut served, mut trusted, mut identified, mut replays) = (0, 0, 0, 0);
    for i in 0..REQUESTS {
        let case = generator.case();
        let layer = layer.clone();
        let desc = format!("#{i} {} {} {:?}", case.req.method(), case.req.uri(), case.req.headers());
        let joined = tokio::spawn(async move { run(&layer, case.req).await }).await;
        let out = match joined {
            Ok(out) => out,
            Err(e) if e.is_panic() => {
                panics += 1;
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        replays += usize::from(case.replay);
        match &out.seen {
            Some(seen) => {
                served += 1;
                let view = View::of(seen);
                // The headers inside agree with the context.
                let header_key = seen.headers.get("x-user-id").map(|v| v.to_str().unwrap().to_owned());
                if !case.allowed.contains(&view) || header_key != view.key {
                    escapes.push(format!("{desc}\n  saw {view:?}\n  allowed {:?}", case.allowed));
                }
                trusted += usize::from(view.cell.is_some());
                identified += usize::from(seen.identity.is_some());
                if case.replay && view.cell.is_some() {
                    replays_accepted += 1;
                }
                assert_eq!(out.status, StatusCode::OK);
            }
            None => {
                assert!(
                    [StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE]
                        .contains(&out.status),
                    "{desc}: {}",
                    out.status
                );
                if out.status == StatusCode::UNAUTHORIZED {
                    assert_eq!(out.headers["www-authenticate"], r#"Bearer error="invalid_token""#);
                }
                if !case.allowed.is_empty() && !case.may_reject {
                    wrongly_refused.push(format!("{desc}: {} {:?}", out.status, out.body));
                }
            }
        }
    }
    println!("served {served}, signed-trusted {trusted}, identified {identified}, replays sent {replays}");
    assert_eq!(panics, 0, "panics");
    assert!(escapes.is_empty(), "{} requests reached the handler with a context they may not choose:\n{}", escapes.len(), escapes[..escapes.len().min(5)].join("\n"));
    assert_eq!(replays_accepted, 0, "replays accepted");
    assert!(wrongly_refused.is_empty(), "{} legitimate requests refused:\n{}", wrongly_refused.len(), wrongly_refused[..wrongly_refused.len().min(5)].join("\n"));
    // The corpus exercised every path.
    assert!(served > 2_000 && trusted > 300 && identified > 1_500 && replays > 300, "coverage");
}
