//! cellrouter: key -> cell lookup (16,384 slots) against a `HashMap<String, CellId>`
//! user directory (the naive peer), the same lookup while a writer swaps tables
//! continuously (with `ArcSwap` loads and with a `TableCache`), and the routing
//! layer around a no-op service against the bare no-op service (alone, and inside
//! the cellctx scope as in a real stack).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use cellctx::{CellContext, CellId};
use cellrouter::{Cell, CellRouterLayer, RoutingTable, TableCache, TableStore, resolve};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, black_box, criterion_group, criterion_main};
use http::{HeaderValue, Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service, service_fn};

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

fn table(version: u64) -> RoutingTable {
    let cells = (0..8).map(|i| Cell::new(id(&format!("cell-{i}")), id("eu"), format!("http://10.0.0.{i}:8080"))).collect();
    let mut t = RoutingTable::uniform(id("eu"), cells, 16384);
    t.version = version;
    t
}

fn keys() -> Vec<String> {
    (0..1024).map(|i| format!("user-{}", 1_000_000 + i * 7919)).collect()
}

fn ready<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the bench stacks never wait"),
    }
}

/// Benches one lookup through a `TableCache` per iteration, over the 1,024
/// keys in turn (each reads the answer's length).
fn bench_cached(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, cache: &mut TableCache, keys: &[String]) {
    let mut i = 0usize;
    g.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let key = black_box(&keys[i]);
            black_box(resolve(cache.load().unwrap(), key).unwrap().target.as_str().len())
        })
    });
}

/// A thread storing a new table version after each `pause` (none: non-stop)
/// until `stop`; returns how many it stored.
fn swapper(store: &TableStore, stop: &Arc<AtomicBool>, pause: Option<Duration>) -> std::thread::JoinHandle<u64> {
    let (store, stop) = (store.clone(), stop.clone());
    let tables: Vec<RoutingTable> = (2..4).map(table).collect();
    std::thread::spawn(move || {
        let mut v = store.current().map_or(2, |t| t.version() + 1);
        let mut swaps = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut t = tables[(v % 2) as usize].clone();
            t.version = v;
            store.store(t).unwrap();
            v += 1;
            swaps += 1;
            if let Some(p) = pause {
                std::thread::sleep(p);
            }
        }
        swaps
    })
}

fn lookup(c: &mut Criterion) {
    let store = TableStore::with_table(table(1)).unwrap();
    let keys = keys();
    let directory: HashMap<String, CellId> = {
        let t = store.current().unwrap();
        keys.iter().map(|k| (k.clone(), resolve(&t, k).unwrap().target.clone())).collect()
    };
    // Profiling mode: `CELLROUTER_PROFILE=resolve|directory CELLROUTER_N=<n>` runs
    // n lookups and exits (callgrind: instructions / n, minus n = 0).
    if let Ok(which) = std::env::var("CELLROUTER_PROFILE") {
        let held = store.current().unwrap();
        let n: usize = std::env::var("CELLROUTER_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
        for j in 0..n {
            let k = &keys[j & 1023];
            if which == "directory" {
                black_box(directory.get(black_box(k)).unwrap().as_str().len());
            } else {
                black_box(resolve(&held, black_box(k)).unwrap().target.as_str().len());
            }
        }
        std::process::exit(0);
    }
    let mut g = c.benchmark_group("cellrouter/lookup");
    g.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    let mut i = 0usize;
    g.bench_function("store.load + resolve", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let t = store.load();
            let t = t.as_ref().unwrap();
            black_box(resolve(t, black_box(&keys[i])).unwrap().target.as_str().len())
        })
    });
    let mut cache = store.cache();
    bench_cached(&mut g, "store.cache().load + resolve", &mut cache, &keys);
    let held = store.current().unwrap();
    let mut i = 0usize;
    g.bench_function("resolve (table held)", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(resolve(&held, black_box(&keys[i])).unwrap().target.as_str().len())
        })
    });
    let mut i = 0usize;
    g.bench_function("peer: HashMap<String, CellId> directory", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            black_box(directory.get(black_box(&keys[i])).unwrap().as_str().len())
        })
    });
    // Reads while another thread swaps a new table in every millisecond (far
    // more often than a real control plane), then as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = swapper(&store, &stop, Some(Duration::from_millis(1)));
    bench_cached(&mut g, "store.cache().load + resolve, table swapped every 1 ms", &mut cache, &keys);
    stop.store(true, Ordering::Relaxed);
    let swaps = writer.join().unwrap();
    eprintln!("cellrouter bench: {swaps} table swaps during the 1 ms-paced read bench");
    stop.store(false, Ordering::Relaxed);
    let writer = swapper(&store, &stop, None);
    let mut i = 0usize;
    g.bench_function("store.load + resolve, table swapped concurrently", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            let t = store.load();
            let t = t.as_ref().unwrap();
            black_box(resolve(t, black_box(&keys[i])).unwrap().target.as_str().len())
        })
    });
    bench_cached(&mut g, "store.cache().load + resolve, table swapped concurrently", &mut cache, &keys);
    stop.store(true, Ordering::Relaxed);
    let swaps = writer.join().unwrap();
    eprintln!("cellrouter bench: {swaps} table swaps during the concurrent-read bench");
    g.finish();
}

fn layer(c: &mut Criterion) {
    let store = TableStore::with_table(table(1)).unwrap();
    let t = store.current().unwrap();
    // keys whose home is cell-0, so the layer serves them locally
    let keys: Vec<String> = (0..100_000)
        .map(|i| format!("user-{i}"))
        .filter(|k| resolve(&t, k).unwrap().target.as_str() == "cell-0")
        .take(256)
        .collect();
    let values: Vec<HeaderValue> = keys.iter().map(|k| HeaderValue::from_str(k).unwrap()).collect();
    let noop = service_fn(|_req: Request<Empty<Bytes>>| async { Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new())) });
    let mut routed = CellRouterLayer::new(store.clone(), id("cell-0")).layer(noop);
    let mut bare = noop;
    let mut g = c.benchmark_group("cellrouter/layer");
    g.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    let ctxs: Vec<Arc<CellContext>> =
        keys.iter().map(|k| Arc::new(CellContext::new().with_routing_key(k.clone()).unwrap().with_cell(id("cell-0")))).collect();
    let mut i = 0usize;
    g.bench_function("CellRouter(local, key from context) around no-op", |b| {
        b.iter(|| {
            i = (i + 1) & 255;
            let mut req = Request::new(Empty::<Bytes>::new());
            req.extensions_mut().insert(ctxs[i].clone());
            black_box(ready(routed.call(req)).unwrap())
        })
    });
    let mut i = 0usize;
    g.bench_function("CellRouter(local, key from X-User-ID) around no-op", |b| {
        b.iter(|| {
            i = (i + 1) & 255;
            let mut req = Request::new(Empty::<Bytes>::new());
            req.headers_mut().insert("x-user-id", values[i].clone());
            black_box(ready(routed.call(req)).unwrap())
        })
    });
    // As placed in a real stack: after cellctx's server layer, which puts the
    // context in the extensions and opens its task-local scope.
    let mut i = 0usize;
    g.bench_function("CellRouter(local, key from context) inside the cellctx scope", |b| {
        b.iter(|| {
            i = (i + 1) & 255;
            let mut req = Request::new(Empty::<Bytes>::new());
            req.extensions_mut().insert(ctxs[i].clone());
            black_box(ready(cellctx::scope(ctxs[i].clone(), async { routed.call(req).await })).unwrap())
        })
    });
    let mut i = 0usize;
    g.bench_function("peer: bare no-op service inside the cellctx scope", |b| {
        b.iter(|| {
            i = (i + 1) & 255;
            let mut req = Request::new(Empty::<Bytes>::new());
            req.extensions_mut().insert(ctxs[i].clone());
            black_box(ready(cellctx::scope(ctxs[i].clone(), async { bare.call(req).await })).unwrap())
        })
    });
    let mut i = 0usize;
    g.bench_function("peer: bare no-op service", |b| {
        b.iter(|| {
            i = (i + 1) & 255;
            let mut req = Request::new(Empty::<Bytes>::new());
            req.extensions_mut().insert(ctxs[i].clone());
            black_box(ready(bare.call(req)).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, lookup, layer);
criterion_main!(benches);
