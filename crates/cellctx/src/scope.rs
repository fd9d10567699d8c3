//! The task-local scope that makes the current context readable anywhere in a
//! request's future without threading it through.

use std::future::Future;
use std::sync::Arc;

use crate::context::CellContext;

tokio::task_local! {
    static CURRENT: Arc<CellContext>;
}

/// Runs `fut` with `ctx` as the current context ([`current`] returns it inside).
pub fn scope<F: Future>(ctx: Arc<CellContext>, fut: F) -> tokio::task::futures::TaskLocalFuture<Arc<CellContext>, F> {
    CURRENT.scope(ctx, fut)
}

/// The current request's context, when called inside a [`scope`] (the server layer
/// opens one around each request). Cheap: an `Arc` clone.
pub fn current() -> Option<Arc<CellContext>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Calls `f` with the current context, without cloning it.
pub fn with_current<R>(f: impl FnOnce(Option<&CellContext>) -> R) -> R {
    let mut f = Some(f);
    let res = CURRENT.try_with(|c| f.take().map(|f| f(Some(c))));
    match res {
        Ok(Some(r)) => r,
        _ => match f.take() {
            Some(f) => f(None),
            None => unreachable!("the closure ran inside try_with and returned"),
        },
    }
}

/// Runs the synchronous `f` with `ctx` as the current context (for a service's
/// `call`, so what it does before returning its future sees the context).
pub fn sync_scope<R>(ctx: Arc<CellContext>, f: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(ctx, f)
}
