//! State machine of both policies on tokio's paused clock, through the
//! breaker itself and through the layer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use breaker::{
    AdaptiveConfig, Breaker, BreakerConfig, BreakersConfig, CircuitBreakerLayer, Error, Mode, Outcome, SlidingWindowConfig,
    State, TokioClock, Transition, WaitConfig, WindowConfig,
};
use http::{Request, Response, StatusCode};
use tokio::sync::broadcast;
use tokio::time::advance;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const S: Duration = Duration::from_secs(1);

fn sliding(f: impl FnOnce(&mut SlidingWindowConfig)) -> BreakerConfig {
    let mut c = SlidingWindowConfig {
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 4,
        failure_rate_threshold: Some(50.0),
        wait: WaitConfig::Fixed { wait: 10 * S },
        permitted_calls_in_half_open: 2,
        success_threshold: 2,
        automatic_transition: false,
        ..Default::default()
    };
    f(&mut c);
    BreakerConfig::sliding(c)
}

fn standalone(cfg: BreakerConfig) -> (Arc<Breaker>, broadcast::Receiver<Transition>) {
    Breaker::standalone("b", &cfg, Arc::new(TokioClock::new())).unwrap()
}

fn call(b: &Arc<Breaker>, o: Outcome) {
    b.try_acquire().unwrap().record(o);
}

fn retry_after(b: &Arc<Breaker>) -> Duration {
    match b.try_acquire() {
        Err(Error::Open { retry_after }) => retry_after,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn transitions(rx: &mut broadcast::Receiver<Transition>) -> Vec<(State, State)> {
    let mut v = Vec::new();
    while let Ok(t) = rx.try_recv() {
        v.push((t.from, t.to));
    }
    v
}

fn open(b: &Arc<Breaker>) {
    for _ in 0..4 {
        call(b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn closed_to_open_on_failure_rate_after_minimum_calls() {
    let (b, mut rx) = standalone(sliding(|_| {}));
    call(&b, Outcome::Failure);
    call(&b, Outcome::Failure);
    call(&b, Outcome::Failure);
    // 3 of 3 failed, but the minimum is 4 calls.
    assert_eq!(b.state(), State::Closed);
    call(&b, Outcome::Success);
    // 3 of 4 = 75 % >= 50 %: open, and the success is what tipped it.
    assert_eq!(b.state(), State::Open);
    assert_eq!(transitions(&mut rx), vec![(State::Closed, State::Open)]);
    assert_eq!(retry_after(&b), 10 * S);
}

#[tokio::test(start_paused = true)]
async fn below_threshold_stays_closed() {
    let (b, _rx) = standalone(sliding(|_| {}));
    for i in 0..20 {
        call(&b, if i % 3 == 2 { Outcome::Failure } else { Outcome::Success });
    }
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn open_to_half_open_after_the_wait_then_closed_after_successes() {
    let (b, mut rx) = standalone(sliding(|_| {}));
    open(&b);
    advance(4 * S).await;
    assert_eq!(retry_after(&b), 6 * S);
    advance(6 * S - Duration::from_millis(1)).await;
    assert!(b.try_acquire().is_err());
    advance(Duration::from_millis(1)).await;
    let p1 = b.try_acquire().unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    p1.record(Outcome::Success);
    assert_eq!(b.state(), State::HalfOpen);
    call(&b, Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        transitions(&mut rx),
        vec![(State::Closed, State::Open), (State::Open, State::HalfOpen), (State::HalfOpen, State::Closed)]
    );
    // The window starts empty after closing.
    assert_eq!(b.snapshot().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn half_open_failure_reopens_with_backoff() {
    let cfg = sliding(|c| {
        c.wait = WaitConfig::Exponential { initial: 2 * S, multiplier: 3.0, max: 10 * S, jitter: 0.0 };
    });
    let (b, mut rx) = standalone(cfg);
    open(&b);
    assert_eq!(retry_after(&b), 2 * S);
    advance(2 * S).await;
    call(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
    assert_eq!(retry_after(&b), 6 * S);
    advance(6 * S).await;
    call(&b, Outcome::Failure);
    assert_eq!(retry_after(&b), 10 * S, "capped");
    assert_eq!(
        transitions(&mut rx),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Open),
        ]
    );
    // Closing resets the attempt count.
    advance(10 * S).await;
    call(&b, Outcome::Success);
    call(&b, Outcome::Success);
    assert_eq!(b.state(), State::Closed);
    open(&b);
    assert_eq!(retry_after(&b), 2 * S);
}

#[tokio::test(start_paused = true)]
async fn custom_wait_function() {
    let layer = CircuitBreakerLayer::new("f", sliding(|_| {}))
        .unwrap()
        .with_clock(TokioClock::new())
        .with_wait_strategy(|attempt: u32| Duration::from_millis(700 + u64::from(attempt)));
    let mut svc = layer.layer(service_fn(|_: Request<()>| async {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        Ok::<_, BoxError>(r)
    }));
    for _ in 0..4 {
        svc.ready().await.unwrap().call(Request::new(())).await.unwrap();
    }
    let err = svc.ready().await.unwrap().call(Request::new(())).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Error>().unwrap().retry_after(), Some(Duration::from_millis(700)));
}

#[tokio::test(start_paused = true)]
async fn automatic_transition_by_timer() {
    let (b, mut rx) = standalone(sliding(|c| c.automatic_transition = true));
    open(&b);
    assert_eq!(rx.recv().await.unwrap().to, State::Open);
    // No call and no state read: the timer moves it.
    let t = rx.recv().await.unwrap();
    assert_eq!((t.from, t.to), (State::Open, State::HalfOpen));
    assert_eq!(t.at_nanos, 10_000_000_000);
}

#[tokio::test(start_paused = true)]
async fn max_wait_in_half_open_reopens() {
    let (b, mut rx) = standalone(sliding(|c| c.max_wait_in_half_open = Some(3 * S)));
    open(&b);
    advance(10 * S).await;
    let held = b.try_acquire().unwrap();
    assert_eq!(b.state(), State::HalfOpen);
    advance(3 * S).await;
    assert!(b.try_acquire().is_err());
    assert_eq!(b.state(), State::Open);
    // The stale permit neither closes nor corrupts the next half-open.
    held.record(Outcome::Success);
    assert_eq!(b.state(), State::Open);
    let t = transitions(&mut rx);
    assert_eq!(t.last(), Some(&(State::HalfOpen, State::Open)));
}

#[tokio::test(start_paused = true)]
async fn half_open_permits_are_exact_and_given_back_on_drop() {
    let (b, _rx) = standalone(sliding(|_| {}));
    open(&b);
    advance(10 * S).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err(), "only 2 permits");
    assert_eq!(b.half_open_in_flight(), 2);
    drop(p1); // the caller gave up
    assert_eq!(b.half_open_in_flight(), 1);
    assert_eq!(b.state(), State::HalfOpen);
    let p3 = b.try_acquire().unwrap();
    // Ignored outcomes give the permit back and count nothing.
    p2.record(Outcome::Ignored);
    p3.record(Outcome::Ignored);
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.half_open_in_flight(), 0);
    call(&b, Outcome::Success);
    call(&b, Outcome::Success);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_the_slow_rate() {
    let (b, mut rx) = standalone(sliding(|c| {
        c.failure_rate_threshold = None;
        c.slow_call_rate_threshold = Some(50.0);
        c.slow_call_duration = 2 * S;
    }));
    for _ in 0..3 {
        let p = b.try_acquire().unwrap();
        advance(S).await;
        p.record(Outcome::Success);
    }
    assert_eq!(b.snapshot().slow, 0);
    let p = b.try_acquire().unwrap();
    advance(2 * S).await;
    p.record(Outcome::Success);
    assert_eq!(b.snapshot().slow, 1);
    assert_eq!(b.state(), State::Closed, "1 slow of 4 is 25 %");
    for _ in 0..2 {
        let p = b.try_acquire().unwrap();
        advance(3 * S).await;
        p.record(Outcome::Success);
    }
    // 3 slow of 6 = 50 %.
    assert_eq!(b.state(), State::Open);
    assert_eq!(transitions(&mut rx), vec![(State::Closed, State::Open)]);
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_and_absolute_count() {
    let (b, _rx) = standalone(sliding(|c| {
        c.failure_rate_threshold = None;
        c.minimum_calls = 100;
        c.consecutive_failures = Some(3);
    }));
    call(&b, Outcome::Failure);
    call(&b, Outcome::Failure);
    call(&b, Outcome::Success);
    assert_eq!(b.consecutive_failures(), 0);
    call(&b, Outcome::Failure);
    call(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Closed);
    call(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open);

    let (b, _rx) = standalone(sliding(|c| {
        c.failure_rate_threshold = None;
        c.minimum_calls = 100;
        c.failure_count_threshold = Some(3);
    }));
    for _ in 0..2 {
        call(&b, Outcome::Failure);
        call(&b, Outcome::Success);
    }
    assert_eq!(b.state(), State::Closed);
    call(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open, "3 failures in the window, whatever the rate");
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_failures_and_keeps_edge_bursts() {
    let cfg = sliding(|c| {
        c.window = WindowConfig::Time { duration: 10 * S, buckets: 10 };
        c.minimum_calls = 6;
    });
    let (b, _rx) = standalone(cfg.clone());
    for _ in 0..3 {
        call(&b, Outcome::Failure);
    }
    advance(10 * S).await;
    for _ in 0..3 {
        call(&b, Outcome::Failure);
    }
    // The first three left the window: 3 calls < minimum 6.
    assert_eq!(b.snapshot().calls, 3);
    assert_eq!(b.state(), State::Closed);

    // A burst straddling a bucket edge is counted whole.
    let (b, _rx) = standalone(cfg);
    advance(Duration::from_millis(950)).await;
    for _ in 0..3 {
        call(&b, Outcome::Failure);
    }
    advance(Duration::from_millis(100)).await;
    for _ in 0..2 {
        call(&b, Outcome::Failure);
    }
    assert_eq!(b.state(), State::Closed);
    call(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn modes_force_open_disable_and_metrics_only() {
    let (b, mut rx) = standalone(sliding(|_| {}));
    b.force_open();
    assert!(b.try_acquire().is_err());
    assert_eq!(b.state(), State::ForcedOpen);
    b.disable();
    for _ in 0..10 {
        call(&b, Outcome::Failure);
    }
    assert_eq!(b.snapshot().calls, 0, "disabled records nothing");
    b.metrics_only();
    for _ in 0..10 {
        call(&b, Outcome::Failure);
    }
    assert_eq!(b.snapshot().failures, 10, "metrics-only records");
    assert_eq!(b.state(), State::MetricsOnly, "and never trips");
    b.set_mode(Mode::Normal);
    assert_eq!(b.state(), State::Closed);
    call(&b, Outcome::Failure);
    assert_eq!(b.state(), State::Open, "the recorded window applies once normal");
    assert_eq!(
        transitions(&mut rx),
        vec![
            (State::Closed, State::ForcedOpen),
            (State::ForcedOpen, State::Disabled),
            (State::Disabled, State::MetricsOnly),
            (State::MetricsOnly, State::Closed),
            (State::Closed, State::Open),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn adaptive_throttling_follows_the_sre_formula() {
    let layer = CircuitBreakerLayer::new(
        "ad",
        BreakerConfig::adaptive(AdaptiveConfig { k: 2.0, window: 10 * S, buckets: 10, protection: 0 }),
    )
    .unwrap()
    .with_clock(TokioClock::new())
    .with_random(|| 0.5);
    let mut events = layer.subscribe();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let f = Arc::clone(&fail);
    let mut svc = layer.layer(service_fn(move |_: Request<()>| {
        let mut r = Response::new(());
        if f.load(Ordering::SeqCst) {
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        }
        async move { Ok::<_, BoxError>(r) }
    }));
    let mut go = async || svc.ready().await.unwrap().call(Request::new(())).await;
    for _ in 0..10 {
        go().await.unwrap();
    }
    let b = layer.registry().by_name("ad").unwrap();
    assert_eq!(b.drop_probability(), 0.0);
    fail.store(true, Ordering::SeqCst);
    // requests=10+n, accepts=10: p = (10+n-20)/(11+n) exceeds 0.5 from n = 32 on.
    let mut rejected_at = None;
    for n in 1..=40 {
        let res = go().await;
        if res.is_err() {
            rejected_at = Some(n);
            break;
        }
    }
    assert_eq!(rejected_at, Some(33), "p = (42 - 20) / 43 > 0.5 after 32 failures");
    assert_eq!(b.state(), State::Throttling);
    // The window rolls: nothing left, p = 0, closed again.
    advance(10 * S).await;
    fail.store(false, Ordering::SeqCst);
    go().await.unwrap();
    assert_eq!(b.state(), State::Closed);
    let mut seen = Vec::new();
    while let Ok(t) = events.try_recv() {
        seen.push((t.from, t.to));
    }
    assert_eq!(seen, vec![(State::Closed, State::Throttling), (State::Throttling, State::Closed)]);
}

#[tokio::test(start_paused = true)]
async fn live_reconfig_keeps_counts() {
    let layer = CircuitBreakerLayer::new("r", sliding(|c| c.failure_rate_threshold = Some(90.0)))
        .unwrap()
        .with_clock(TokioClock::new());
    let reg = Arc::clone(layer.registry());
    let mut svc = layer.layer(service_fn(|req: Request<u16>| {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(*req.body()).unwrap();
        async move { Ok::<_, BoxError>(r) }
    }));
    for code in [500, 500, 200, 200, 200] {
        svc.ready().await.unwrap().call(Request::new(code)).await.unwrap();
    }
    let b = reg.by_name("r").unwrap();
    assert_eq!((b.snapshot().calls, b.snapshot().failures), (5, 2));
    // Same window shape: same breaker, same counts, new threshold.
    reg.reconfigure(BreakersConfig::uniform(sliding(|c| c.failure_rate_threshold = Some(50.0)))).unwrap();
    let b2 = reg.by_name("r").unwrap();
    assert!(Arc::ptr_eq(&b, &b2));
    assert_eq!((b2.snapshot().calls, b2.snapshot().failures), (5, 2));
    svc.ready().await.unwrap().call(Request::new(500)).await.unwrap();
    assert_eq!(b2.state(), State::Open, "3 of 6 = 50 % under the new threshold");
    // Invalid config is an error and changes nothing.
    let bad = BreakersConfig::uniform(sliding(|c| c.failure_rate_threshold = Some(150.0)));
    assert!(matches!(reg.reconfigure(bad), Err(Error::InvalidConfig { field: "failure_rate_threshold", .. })));
    assert_eq!(reg.config().default, sliding(|c| c.failure_rate_threshold = Some(50.0)));
    // A new window shape builds a new breaker.
    reg.reconfigure(BreakersConfig::uniform(sliding(|c| c.window = WindowConfig::Count { size: 5 }))).unwrap();
    let b3 = reg.by_name("r").unwrap();
    assert!(!Arc::ptr_eq(&b2, &b3));
    assert_eq!(b3.state(), State::Closed);
    let res = svc.ready().await.unwrap().call(Request::new(200)).await;
    assert!(res.is_ok(), "the service picked up the new breaker");
}

#[tokio::test(start_paused = true)]
async fn four_xx_is_ignored_and_classifier_can_override() {
    let handler = service_fn(|req: Request<u16>| {
        let mut r = Response::new(());
        *r.status_mut() = StatusCode::from_u16(*req.body()).unwrap();
        async move { Ok::<_, BoxError>(r) }
    });
    let layer = CircuitBreakerLayer::new("c", sliding(|_| {})).unwrap().with_clock(TokioClock::new());
    let mut svc = layer.layer(handler);
    for _ in 0..10 {
        svc.ready().await.unwrap().call(Request::new(404)).await.unwrap();
    }
    let b = layer.registry().by_name("c").unwrap();
    assert_eq!(b.snapshot().calls, 0);
    assert_eq!(b.state(), State::Closed);

    let layer = CircuitBreakerLayer::new("c2", sliding(|_| {}))
        .unwrap()
        .with_clock(TokioClock::new())
        .with_classifier(|res: Result<&Response<()>, &BoxError>| match res {
            Ok(r) if r.status() == StatusCode::NOT_FOUND => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        });
    let mut svc = layer.layer(handler);
    for _ in 0..4 {
        svc.ready().await.unwrap().call(Request::new(404)).await.unwrap();
    }
    assert_eq!(layer.registry().by_name("c2").unwrap().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_n_of_100_concurrent_callers() {
    const N: u32 = 5;
    let layer = CircuitBreakerLayer::new(
        "hc",
        sliding(|c| {
            c.permitted_calls_in_half_open = N;
            c.success_threshold = N;
        }),
    )
    .unwrap()
    .with_clock(TokioClock::new());
    let entered = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (e, g, f) = (Arc::clone(&entered), Arc::clone(&gate), Arc::clone(&fail));
    let svc = ServiceBuilder::new().layer(layer.clone()).service(service_fn(move |_: Request<()>| {
        let (e, g, f) = (Arc::clone(&e), Arc::clone(&g), Arc::clone(&f));
        async move {
            let mut r = Response::new(());
            if f.load(Ordering::SeqCst) {
                *r.status_mut() = StatusCode::BAD_GATEWAY;
                return Ok::<_, BoxError>(r);
            }
            e.fetch_add(1, Ordering::SeqCst);
            g.acquire().await.unwrap().forget();
            Ok(r)
        }
    }));
    for _ in 0..4 {
        svc.clone().oneshot(Request::new(())).await.unwrap();
    }
    let b = layer.registry().by_name("hc").unwrap();
    assert_eq!(b.state(), State::Open);
    fail.store(false, Ordering::SeqCst);
    advance(10 * S).await;

    let tasks: Vec<_> = (0..100).map(|_| tokio::spawn(svc.clone().oneshot(Request::new(())))).collect();
    while tasks.iter().filter(|t| t.is_finished()).count() < 100 - N as usize {
        tokio::task::yield_now().await;
    }
    assert_eq!(entered.load(Ordering::SeqCst), N as usize);
    assert_eq!(b.half_open_in_flight(), N);
    gate.add_permits(N as usize);
    let mut ok = 0;
    let mut rejected = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(matches!(e.downcast_ref::<Error>(), Some(Error::Open { .. })));
                rejected += 1;
            }
        }
    }
    assert_eq!((ok, rejected), (N, 100 - N));
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn cancelled_trial_call_does_not_close_or_leak() {
    let layer = CircuitBreakerLayer::new("cx", sliding(|c| c.permitted_calls_in_half_open = 1))
        .unwrap()
        .with_clock(TokioClock::new());
    let b = {
        let svc = layer.layer(service_fn(|_: Request<()>| async {
            let mut r = Response::new(());
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            Ok::<_, BoxError>(r)
        }));
        for _ in 0..4 {
            svc.clone().oneshot(Request::new(())).await.unwrap();
        }
        layer.registry().by_name("cx").unwrap()
    };
    advance(10 * S).await;
    let mut svc = layer.layer(service_fn(|_: Request<()>| async {
        std::future::pending::<()>().await;
        Ok::<_, BoxError>(Response::new(()))
    }));
    let fut = svc.ready().await.unwrap().call(Request::new(()));
    assert_eq!(b.half_open_in_flight(), 1);
    let timed_out = tokio::time::timeout(S, fut).await;
    assert!(timed_out.is_err());
    assert_eq!(b.half_open_in_flight(), 0, "the permit came back");
    assert_eq!(b.state(), State::HalfOpen, "a cancelled call closes nothing");
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_the_inner_readiness_and_rejection_keeps_it() {
    let layer = CircuitBreakerLayer::new("m", sliding(|c| c.consecutive_failures = Some(1)))
        .unwrap()
        .with_clock(TokioClock::new());
    let (mut svc, mut handle) = tower_test::mock::spawn_layer::<Request<()>, Response<()>, _>(layer.clone());
    handle.allow(0);
    assert!(svc.poll_ready().is_pending());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(Request::new(()));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("boom");
    assert!(fut.await.is_err());
    let b = layer.registry().by_name("m").unwrap();
    assert_eq!(b.state(), State::Open);

    // Open: the call is rejected without reaching the mock, and the mock's
    // readiness (one more allowed call) is still there afterwards.
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let err = svc.call(Request::new(())).await.unwrap_err();
    assert!(matches!(err.downcast_ref::<Error>(), Some(Error::Open { .. })));
    assert!(handle.poll_request().is_pending(), "nothing reached the inner service");
    advance(10 * S).await;
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(Request::new(()));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(()));
    fut.await.unwrap();
    assert_eq!(b.state(), State::HalfOpen);
}

#[test]
fn invalid_config_is_an_error() {
    let bad = [
        sliding(|c| c.minimum_calls = 0),
        sliding(|c| c.window = WindowConfig::Count { size: 0 }),
        sliding(|c| c.window = WindowConfig::Time { duration: Duration::from_millis(5), buckets: 10 }),
        sliding(|c| c.permitted_calls_in_half_open = 0),
        sliding(|c| c.slow_call_rate_threshold = Some(0.0)),
        sliding(|c| c.wait = WaitConfig::Exponential { initial: S, multiplier: 0.5, max: S, jitter: 0.0 }),
        BreakerConfig::adaptive(AdaptiveConfig { k: 0.0, ..Default::default() }),
    ];
    for cfg in bad {
        assert!(matches!(CircuitBreakerLayer::new("x", cfg.clone()), Err(Error::InvalidConfig { .. })), "{cfg:?}");
    }
    assert!(matches!(BreakersConfig::from_yaml("default: { mode: sideways }"), Err(Error::Parse(_))));
}
