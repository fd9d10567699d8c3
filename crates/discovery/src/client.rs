//! [`CellClient`]: sends each request to an instance of the request's cell,
//! falling back to the failover cells' instances, and carries the context on.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use cellctx::{CellContext, CellId};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower::util::{Oneshot, ServiceExt};
use tower::{BoxError, Service};

use crate::error::Error;
use crate::failover::{DebugFailover, FailoverOrder, NoFailover};
use crate::instance::Instance;
use crate::watcher::Watcher;

/// `X-Cell-ID`, written when the request does not carry it.
const X_CELL_ID: http::HeaderName = http::HeaderName::from_static("x-cell-id");
/// `X-Request-ID`, written when the request does not carry it.
const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// A cell-aware client over a [`Watcher`]'s instances.
///
/// For each request it takes the cell from the request's `Arc<CellContext>`
/// extension, or else from [`cellctx::current()`]; picks a serving instance of
/// that cell by weight (a rotating counter over the cumulative weights, no lock);
/// when the cell has none (or the [`FailoverOrder`] says it is down, e.g. the
/// routing table marks it `Down`), tries the failover cells in order;
/// then calls the endpoint service `make(&instance)` built for that instance
/// (built once per instance and cached).
///
/// It propagates the context: the request gets the `Arc<CellContext>` extension
/// and `X-Cell-ID` / `X-Request-ID` headers when missing (the request's own
/// cell, even when served by a failover cell), and the endpoint's future runs
/// inside [`cellctx::scope`].
///
/// Always ready (like a router); a request with no cell fails with
/// [`Error::NoCell`], one with no instance anywhere with [`Error::NoInstance`].
pub struct CellClient<M, S> {
    watcher: Watcher,
    make: M,
    failover: Arc<dyn FailoverOrder>,
    cache: HashMap<Arc<str>, (Arc<Instance>, S)>,
    cache_version: u64,
    rotor: Arc<AtomicU64>,
}

impl<M, S> CellClient<M, S>
where
    M: Fn(&Instance) -> S,
{
    /// A client over `watcher`'s instances; `make` builds the endpoint service
    /// for one instance (e.g. an HTTP client bound to `instance.address`).
    pub fn new(watcher: Watcher, make: M) -> Self {
        CellClient {
            watcher,
            make,
            failover: Arc::new(NoFailover),
            cache: HashMap::new(),
            cache_version: 0,
            rotor: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Sets the failover order (default [`NoFailover`]).
    pub fn with_failover(mut self, order: impl FailoverOrder) -> Self {
        self.failover = Arc::new(order);
        self
    }

    /// The watcher the instances come from.
    pub fn watcher(&self) -> &Watcher {
        &self.watcher
    }

    /// The instance the next request for `cell` would go to, with its cell
    /// (after failover), without sending anything.
    pub fn route(&self, cell: &CellId) -> Option<Arc<Instance>> {
        let snap = self.watcher.load();
        let n = self.rotor.load(Ordering::Relaxed);
        pick(&snap, &*self.failover, cell, n).map(|(_, i)| i)
    }

    fn endpoint(&mut self, key: Arc<str>, inst: &Arc<Instance>) -> S
    where
        S: Clone,
    {
        if let Some((old, svc)) = self.cache.get(&key)
            && (Arc::ptr_eq(old, inst) || **old == **inst)
        {
            return svc.clone();
        }
        let svc = (self.make)(inst);
        self.cache.insert(key, (inst.clone(), svc.clone()));
        svc
    }
}

fn pick(
    snap: &crate::Snapshot,
    failover: &dyn FailoverOrder,
    cell: &CellId,
    n: u64,
) -> Option<(Arc<str>, Arc<Instance>)> {
    if !failover.is_down(cell)
        && let Some((k, i)) = snap.pick(cell, n)
    {
        return Some((k.clone(), i.clone()));
    }
    failover
        .failover_cells(cell)
        .iter()
        .find_map(|c| snap.pick(c, n).map(|(k, i)| (k.clone(), i.clone())))
}

impl<M: Clone, S: Clone> Clone for CellClient<M, S> {
    fn clone(&self) -> Self {
        CellClient {
            watcher: self.watcher.clone(),
            make: self.make.clone(),
            failover: self.failover.clone(),
            cache: self.cache.clone(),
            cache_version: self.cache_version,
            rotor: self.rotor.clone(),
        }
    }
}

impl<M, S> fmt::Debug for CellClient<M, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CellClient")
            .field("service", &self.watcher.service())
            .field("failover", &DebugFailover(&*self.failover))
            .field("cached_endpoints", &self.cache.len())
            .finish()
    }
}

impl<M, S, B> Service<http::Request<B>> for CellClient<M, S>
where
    M: Fn(&Instance) -> S,
    S: Service<http::Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<Oneshot<S, http::Request<B>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let ctx = req.extensions().get::<Arc<CellContext>>().cloned().or_else(cellctx::current);
        let Some((ctx, cell)) = ctx.and_then(|c| c.cell().cloned().map(|cell| (c, cell))) else {
            return ResponseFuture::failed(Error::NoCell);
        };
        let snap = self.watcher.load();
        if snap.version() != self.cache_version {
            self.cache.retain(|k, (i, _)| snap.get(k).is_some_and(|now| now == &**i));
            self.cache_version = snap.version();
        }
        let n = self.rotor.fetch_add(1, Ordering::Relaxed);
        let Some((key, inst)) = pick(&snap, &*self.failover, &cell, n) else {
            let service = self.watcher.service().to_string();
            return ResponseFuture::failed(Error::NoInstance { service, cell });
        };
        drop(snap);
        let svc = self.endpoint(key, &inst);

        let headers = req.headers_mut();
        if !headers.contains_key(X_CELL_ID)
            && let Ok(v) = http::HeaderValue::from_str(cell.as_str())
        {
            headers.insert(X_CELL_ID, v);
        }
        if !headers.contains_key(X_REQUEST_ID)
            && !ctx.request_id.is_empty()
            && let Ok(v) = http::HeaderValue::from_str(&ctx.request_id)
        {
            headers.insert(X_REQUEST_ID, v);
        }
        if req.extensions().get::<Arc<CellContext>>().is_none() {
            req.extensions_mut().insert(ctx.clone());
        }
        ResponseFuture { kind: Kind::Call { fut: cellctx::scope(ctx, svc.oneshot(req)) } }
    }
}

pin_project! {
    /// The response future of [`CellClient`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Call { #[pin] fut: TaskLocalFuture<Arc<CellContext>, F> },
        Failed { error: Option<Error> },
    }
}

impl<F> ResponseFuture<F> {
    fn failed(error: Error) -> Self {
        ResponseFuture { kind: Kind::Failed { error: Some(error) } }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Call { .. } => f.write_str("ResponseFuture::Call"),
            Kind::Failed { error } => f.debug_tuple("ResponseFuture::Failed").field(error).finish(),
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Call { fut } => fut.poll(cx).map_err(Into::into),
            KindProj::Failed { error } => {
                let e = error.take().unwrap_or(Error::Stream("response future polled after completion".into()));
                Poll::Ready(Err(e.into()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cellrouter::{Cell, CellState, RoutingTable, TableStore};

    fn id(s: &str) -> CellId {
        s.parse().unwrap()
    }

    fn inst(c: &str, port: u16) -> Instance {
        Instance::try_new("svc", id(c), format!("127.0.0.1:{port}")).unwrap()
    }

    type Endpoint = tower::util::BoxCloneSyncService<http::Request<()>, String, BoxError>;

    fn client(w: Watcher, order: impl FailoverOrder) -> CellClient<impl Fn(&Instance) -> Endpoint, Endpoint> {
        CellClient::new(w, |i: &Instance| {
            let addr = i.address.clone();
            tower::util::BoxCloneSyncService::new(tower::service_fn(move |r: http::Request<()>| {
                let addr = addr.clone();
                let cell = r.headers().get("x-cell-id").map(|v| v.to_str().unwrap_or("").to_string());
                async move { Ok::<_, BoxError>(format!("{addr} {}", cell.unwrap_or_default())) }
            }))
        })
        .with_failover(order)
    }

    async fn send<M, S>(c: &mut CellClient<M, S>, cell: &str) -> Result<String, BoxError>
    where
        M: Fn(&Instance) -> S,
        S: Service<http::Request<()>, Response = String> + Clone,
        S::Error: Into<BoxError>,
    {
        let mut req = http::Request::new(());
        req.extensions_mut().insert(Arc::new(CellContext::new().with_cell(id(cell))));
        c.ready().await?.call(req).await
    }

    #[tokio::test]
    async fn follows_the_routing_table() {
        let mut a = Cell::new(id("a"), id("eu"), "http://127.0.0.1:1");
        a.failover = vec![id("b"), id("c")];
        let b = Cell::new(id("b"), id("eu"), "http://127.0.0.1:2");
        let c = Cell::new(id("c"), id("eu"), "http://127.0.0.1:3");
        let store = TableStore::with_table(RoutingTable::uniform(id("eu"), vec![a, b, c], 128)).unwrap();
        let w = Watcher::fixed("svc", [inst("a", 1), inst("b", 2), inst("c", 3)]);
        let mut cc = client(w, store.clone());

        // home cell up and served
        assert_eq!(send(&mut cc, "a").await.unwrap(), "127.0.0.1:1 a");
        // home reported failed by health checks: first failover cell
        store.set_cell_failed(&id("a"), true);
        assert_eq!(send(&mut cc, "a").await.unwrap(), "127.0.0.1:2 a");
        // first failover cell failed too: the next one
        store.set_cell_failed(&id("b"), true);
        assert_eq!(send(&mut cc, "a").await.unwrap(), "127.0.0.1:3 a");
        // the next one marked down in a new table version: nothing left
        let mut t = store.current().unwrap().table().clone();
        t.version += 1;
        t.cell_mut(&id("c")).unwrap().state = CellState::Down;
        store.store(t).unwrap();
        let err = send(&mut cc, "a").await.unwrap_err();
        assert!(matches!(err.downcast_ref::<Error>(), Some(Error::NoInstance { .. })), "{err}");
        // recovered
        store.set_cell_failed(&id("a"), false);
        assert_eq!(send(&mut cc, "a").await.unwrap(), "127.0.0.1:1 a");
        // a cell the table does not know: no failover
        assert!(send(&mut cc, "zz").await.is_err());
    }

    #[tokio::test]
    async fn falls_over_only_when_the_cell_has_no_serving_instance() {
        let w = Watcher::fixed("svc", [inst("a", 1), inst("b", 2), inst("c", 3).with_weight(0)]);
        let order = |c: &CellId| match c.as_str() {
            "c" | "d" => vec![id("b")],
            _ => vec![],
        };
        let mut cc = client(w, order);
        assert_eq!(send(&mut cc, "a").await.unwrap(), "127.0.0.1:1 a");
        // weight 0 serves nothing; an unknown cell neither
        assert_eq!(send(&mut cc, "c").await.unwrap(), "127.0.0.1:2 c");
        assert_eq!(send(&mut cc, "d").await.unwrap(), "127.0.0.1:2 d");
        assert_eq!(cc.route(&id("c")).unwrap().cell, id("b"));
        // no cell: typed error
        let err = cc.ready().await.unwrap().call(http::Request::new(())).await.unwrap_err();
        assert!(matches!(err.downcast_ref::<Error>(), Some(Error::NoCell)), "{err}");
    }

    #[tokio::test]
    async fn endpoints_are_built_once_per_instance() {
        let made = Arc::new(AtomicU64::new(0));
        let m = made.clone();
        let w = Watcher::fixed("svc", [inst("a", 1), inst("a", 2)]);
        let mut cc = CellClient::new(w, move |_: &Instance| {
            m.fetch_add(1, Ordering::Relaxed);
            tower::service_fn(|_: http::Request<()>| async { Ok::<_, BoxError>(()) })
        });
        for _ in 0..20 {
            let mut req = http::Request::new(());
            req.extensions_mut().insert(Arc::new(CellContext::new().with_cell(id("a"))));
            cc.ready().await.unwrap().call(req).await.unwrap();
        }
        assert_eq!(made.load(Ordering::Relaxed), 2);
    }
}
