//! Alerts a pager can receive: drains, failbacks, failed switches, low
//! health scores and replication lag, sent to an Alertmanager-compatible
//! receiver (or any `tower::Service<Vec<Alert>>`).
//!
//! An [`AlertSink`] follows what the SDK already publishes, so nothing in the
//! engine, the switch or the controller waits for it: the engine's decision
//! stream ([`AlertSink::watch_engine`]), the controller's events
//! ([`AlertSink::watch_controller`], feature `sql`) and a health hub's
//! snapshots ([`AlertSink::watch_health`]); replication lag is reported with
//! [`AlertSink::observe_replication_lag`]. Each subscriber only enqueues; one
//! background task per sink sends.
//!
//! | alert (`alertname`) | severity | fires on | resolves on |
//! |---|---|---|---|
//! | `CellDrained` | critical | a drain decision (any reason) | failback complete (`Restored`) |
//! | `CellFailbackPending` | warning | recovered, waiting for manual approval | failback started, complete, or a new drain |
//! | `TrafficSwitchFailed` | critical | a controller switch failed | the next switch of the cell succeeds or finds its change in force |
//! | `CellHealthScoreLow` | warning | score below the threshold (60 by default), every probe reported | score back at or above it, or the cell gone |
//! | `ReplicationLagHigh` | warning | lag above the bound (5 s by default) | lag at or under it |
//!
//! Labels: `alertname`, `severity`, `cell` (and `origin` for replication
//! lag), plus [`AlertConfig::with_label`]'s static labels. Annotations:
//! `summary`, `description` or per-kind values (`score`, `threshold`,
//! `lag_ms`, `bound_ms`), and `resolution` on resolve notifications.
//!
//! # Payload
//!
//! Each request is Alertmanager's v2 `postableAlerts`, a JSON list
//! (`POST /api/v2/alerts`, `Content-Type: application/json`):
//!
//! ```json
//! [{
//!   "labels": {"alertname": "CellDrained", "cell": "eu-1", "severity": "critical", "service": "orders"},
//!   "annotations": {"summary": "cell eu-1 drained: its traffic goes to its failover cells",
//!                   "description": "drained by an operator"},
//!   "startsAt": "2026-12-07T02:30:00.123Z",
//!   "generatorURL": "http://control-plane:8080/plan"
//! }]
//! ```
//!
//! A resolve notification repeats the labels, annotations (plus
//! `resolution`) and `startsAt`, with `"endsAt"` set. `generatorURL` is
//! present when configured.
//!
//! # Delivery
//!
//! - De-duplication by labels: a firing alert is sent once per repeat
//!   interval (default 60 s) however often it fires, and sent again each
//!   interval while it fires (so Alertmanager's `resolve_timeout` does not
//!   end it).
//! - A bounded queue (default 1,024): a failed request puts its batch back
//!   and is retried with back-off (100 ms doubling to 10 s, 10 s per request);
//!   when full, the oldest alert is dropped and counted.
//!
//! # Metrics (meter `failover`)
//!
//! | name | kind | attributes |
//! |---|---|---|
//! | `failover.alerts.sent` | counter | `alertname`, `status` = `firing` \| `resolved` |
//! | `failover.alerts.dropped` | counter | |
//! | `failover.alerts.deduplicated` | counter | `alertname` |
//! | `failover.alerts.send_failures` | counter | |

mod config;
mod events;
#[cfg(feature = "alerts-http")]
mod http;
mod kind;
pub mod metrics;
mod payload;
mod queue;
mod sink;
mod subscribe;

pub use config::{
    AlertConfig, DEFAULT_MAX_REPLICATION_LAG, DEFAULT_QUEUE_CAPACITY, DEFAULT_REPEAT_INTERVAL,
    DEFAULT_SCORE_THRESHOLD,
};
#[cfg(feature = "alerts-http")]
pub use http::AlertmanagerClient;
pub use kind::AlertKind;
pub use payload::{Alert, Labels};
pub use sink::AlertSink;
