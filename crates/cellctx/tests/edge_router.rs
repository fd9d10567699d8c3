//! The edge stack as the README mounts it (context layer, then the cell
//! router): the router routes by the verified identity, and a client's
//! `X-User-ID` or `X-Cell-Hops` neither picks its cell nor forces a 508.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;

use bytes::Bytes;
use cellctx::auth::{EdgeAuth, Identity, RequestHead};
use cellctx::{AuthFailure, CellContextLayer, CellId};
use cellrouter::{Cell, CellRouterLayer, MisroutePolicy, RoutingTable, TableStore};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt, service_fn};

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

/// A user whose home in `store` is `cell`.
fn user_homed_in(store: &TableStore, cell: &str) -> String {
    let table = store.current().unwrap();
    (0..).map(|i| format!("user-{i}")).find(|k| cellrouter::resolve(&table, k).unwrap().home.as_str() == cell).unwrap()
}

#[tokio::test]
async fn the_router_sees_the_verified_user_not_the_clients_headers() {
    let table = RoutingTable::uniform(
        id("eu"),
        vec![Cell::new(id("eu-1"), id("eu"), "http://127.0.0.1:9"), Cell::new(id("eu-2"), id("eu"), "http://127.0.0.1:9")],
        16384,
    );
    let store = TableStore::with_table(table).unwrap();
    let (local_user, remote_user) = (user_homed_in(&store, "eu-1"), user_homed_in(&store, "eu-2"));
    // Bearer tokens naming the user (a stand-in for a verified JWT).
    let auth = |head: &RequestHead<'_>| -> Result<Option<Identity>, AuthFailure> {
        let Some(v) = head.headers.get("authorization") else { return Ok(None) };
        let user = v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ")).ok_or(AuthFailure::Malformed)?;
        Identity::try_new(user).map(Some).map_err(|_| AuthFailure::Malformed)
    };
    let svc = ServiceBuilder::new()
        .layer(CellContextLayer::edge().with_authentication(EdgeAuth::new(auth)))
        .layer(CellRouterLayer::new(store.clone(), id("eu-1")).with_policy(MisroutePolicy::Forward))
        .service(service_fn(|_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"served in eu-1"))))
        }));

    // Verified as a user of eu-1, claiming (X-User-ID) a user of eu-2 and a
    // high hop count: served here, not forwarded, not 508.
    let req = Request::get("/orders")
        .header("authorization", format!("Bearer {local_user}"))
        .header("x-user-id", &remote_user)
        .header("x-cell-hops", "99")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);

    // Verified as a user of eu-2, claiming eu-1's user: refused the shortcut
    // (the router forwards it home; with no peer there, not a 200 from eu-1,
    // and the hop count the client sent does not turn it into a 508).
    let req = Request::get("/orders")
        .header("authorization", format!("Bearer {remote_user}"))
        .header("x-user-id", &local_user)
        .header("x-cell-hops", "99")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_ne!(res.status(), StatusCode::OK);
    assert_ne!(res.status(), StatusCode::LOOP_DETECTED);
}
