//! Simulated users of every region: each request goes through the gateway with
//! the user's id and region hint; every outcome is recorded (acknowledged
//! writes with their ids, the cell that served it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rand::Rng;

use crate::gateway::HttpClient;
use crate::stats::Stats;

/// A simulated user.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) key: String,
    pub(crate) region: String,
    /// Home cell in the initial table.
    pub(crate) home: String,
    /// The home cell's first failover target.
    pub(crate) failover: Option<String>,
    /// The user's token from the run's identity provider: the gateway routes
    /// by it (the user id in it), never by what the client states.
    pub(crate) token: String,
}

/// What a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Like,
    Comment,
    Read,
}

/// One request's record.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) user: usize,
    pub(crate) op: Op,
    pub(crate) post: String,
    /// ms since the run started.
    pub(crate) start_ms: u64,
    pub(crate) end_ms: u64,
    pub(crate) ok: bool,
    pub(crate) served_by: Option<String>,
    /// The write's id (acknowledged writes only).
    pub(crate) id: Option<String>,
}

/// The load generator's shared state.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    pub(crate) users: Arc<Vec<User>>,
    pub(crate) records: Arc<Mutex<Vec<Record>>>,
    /// Per-second counters (fed with every record).
    pub(crate) stats: Stats,
    pub(crate) t0: Instant,
}

fn ms_since(t0: Instant) -> u64 {
    t0.elapsed().as_millis() as u64
}

impl Load {
    /// Sends `rps` requests a second to `gateway` until `stop` fires; waits for
    /// the requests in flight.
    pub(crate) async fn run(
        &self,
        client: HttpClient,
        gateway: String,
        rps: u32,
        mix: (u32, u32),
        timeout: Duration,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rps.max(1))));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut inflight = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            let (user, op, post) = {
                let mut rng = rand::rng();
                let user = rng.random_range(0..self.users.len());
                let roll = rng.random_range(0..100);
                let op = if roll < mix.0 { Op::Like } else if roll < mix.0 + mix.1 { Op::Comment } else { Op::Read };
                (user, op, format!("post-{}", rng.random_range(0..16)))
            };
            let this = self.clone();
            let client = client.clone();
            let gateway = gateway.clone();
            inflight.spawn(async move { this.one(&client, &gateway, user, op, post, timeout).await });
            while inflight.try_join_next().is_some() {}
        }
        while inflight.join_next().await.is_some() {}
    }

    async fn one(&self, client: &HttpClient, gateway: &str, user: usize, op: Op, post: String, timeout: Duration) {
        let u = &self.users[user];
        let (method, path, body) = match op {
            Op::Like => (http::Method::POST, format!("/posts/{post}/like"), Bytes::new()),
            Op::Comment => (http::Method::POST, format!("/posts/{post}/comments"), Bytes::from(format!("hello from {}", u.key))),
            Op::Read => (http::Method::GET, format!("/posts/{post}"), Bytes::new()),
        };
        let started = Instant::now();
        let start_ms = ms_since(self.t0);
        let req = http::Request::builder()
            .method(method)
            .uri(format!("{gateway}{path}"))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", u.token))
            .header("x-region-hint", format!("{};src=gps", u.region))
            .body(Full::new(body));
        let mut rec = Record { user, op, post, start_ms, end_ms: 0, ok: false, served_by: None, id: None };
        if let Ok(req) = req {
            let r = tokio::time::timeout(timeout, async {
                let resp = client.request(req).await.ok()?;
                let status = resp.status();
                let served = resp.headers().get(crate::cell::http::SERVED_BY).and_then(|v| v.to_str().ok()).map(String::from);
                let body = resp.into_body().collect().await.ok()?.to_bytes();
                Some((status, served, body))
            })
            .await;
            if let Ok(Some((status, served, body))) = r {
                rec.served_by = served;
                rec.ok = status.is_success();
                if rec.ok && op != Op::Read {
                    rec.id = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|j| j["id"].as_str().map(String::from));
                    rec.ok = rec.id.is_some();
                }
            }
        }
        rec.end_ms = ms_since(self.t0);
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.record(rec.end_ms, rec.ok, rec.served_by.as_deref(), &u.home, latency_us);
        if let Ok(mut v) = self.records.lock() {
            v.push(rec);
        }
    }

    /// Requests done so far.
    pub(crate) fn done(&self) -> usize {
        self.records.lock().map(|v| v.len()).unwrap_or(0)
    }
}
