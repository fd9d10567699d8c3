//! Snowflake-style 64-bit ids with a logical clock and leased worker ids.
//!
//! ```
//! use idgen::{Generator, Layout};
//!
//! // The seed layout: 41-bit ms timestamp | 3-bit datacenter | 5-bit logical
//! // clock | 10-bit worker | 5-bit sequence.
//! let layout = Layout::seed();
//! let ids = Generator::try_new(layout, 2, 7)?; // in production: WorkerLease
//! let id = ids.next_id()?;
//!
//! let parts = layout.decode(id);
//! assert_eq!(parts.datacenter, 2); // the id's home region
//! assert_eq!(parts.worker, 7);
//! assert_eq!(layout.encode(&parts)?, id.get());
//! assert_eq!(id.to_string().parse::<idgen::Id>()?, id);
//! # Ok::<(), idgen::Error>(())
//! ```
//!
//! # Where it goes
//!
//! Not a tower layer: a building block for handlers and other SDK crates
//! (saga ids, outbox keys, request ids). Create one [`Generator`] per process
//! and id space (clones share its state), from a [`WorkerLease`] so worker ids
//! are never configured by hand. Routers read the home region of an entity from
//! its id: `layout.decode(id).datacenter`.
//!
//! # Guarantees
//!
//! - **Unique and strictly increasing per generator**, across threads, with no
//!   mutex: one atomic state word advanced by compare-and-swap.
//! - **1,024 ids per millisecond per worker** with the seed layout: when the
//!   sequence runs out inside a millisecond the logical clock advances; when
//!   both are used up, [`Generator::next_id`] waits for the next millisecond
//!   and [`Generator::try_next_id`] returns [`Error::WouldBlock`].
//! - **Clock steps back**: the generator keeps the last timestamp and keeps
//!   counting (sequence, then logical clock) instead of issuing a duplicate; a
//!   step back beyond the bound (default 1 s) is
//!   [`Error::ClockMovedBackwards`], never a duplicate.
//! - **Time** comes from [`SystemClock`]: a monotonic clock anchored to the
//!   wall clock at start, so an NTP step does not move ids backwards; a
//!   measured offset ([`SystemClock::set_offset_ms`], [`OffsetSource`]) is
//!   paid down gradually (slewed), never stepped. By default a reading is one
//!   atomic load of a process-wide coarse clock (refreshed every 100 µs by one
//!   shared thread, started lazily, parked when unused; direct reads if it
//!   cannot start); the generator reads the clock directly only when a
//!   millisecond is used up or a reading looks behind ([`Clock::now_ms_fresh`]),
//!   so the coarse clock's lag never costs throughput at the ceiling.
//!   [`SystemClock::direct`] opts out. [`CachedClock`] wraps any other clock
//!   the same way; [`ManualClock`] is for tests.
//! - **Leased worker ids** (features `redis`, `etcd`, `sql`): `WorkerLease::redis`,
//!   `WorkerLease::etcd` and `WorkerLease::sql` (a table in the service's own
//!   database, expiry judged by the database's clock) take a free worker id
//!   under a TTL, renew it every third of the TTL and release it on drop. A generator whose lease expired
//!   or was lost refuses to issue ([`Error::LeaseExpired`],
//!   [`Error::LeaseLost`]). The lease record keeps a high-water mark and a new
//!   holder starts above it, so a restarted process whose clock rolled back,
//!   or a new holder whose clock is behind, never reissues an old id.
//!
//! # Sync or async: which call to use
//!
//! | caller | call | at the ceiling or on a clock step back (within the bound) |
//! |---|---|---|
//! | plain threads, `spawn_blocking` | [`Generator::next_id`] | spins/sleeps the thread (under 1 ms at the ceiling, up to the bound on a step back) |
//! | async code on a tokio runtime (feature `async`) | `Generator::next_id_async` | awaits `tokio::time::sleep` until the clock passes the held millisecond; other tasks run meanwhile |
//! | anyone who must never wait | [`Generator::try_next_id`] | [`Error::WouldBlock`] |
//!
//! Never call [`Generator::next_id`] on a tokio worker thread: a burst that
//! uses up a millisecond, or a clock step back, would stall every task of that
//! worker. `next_id_async` fails without waiting when the clock is behind by
//! more than the bound ([`Error::ClockMovedBackwards`]) or the lease is gone,
//! and with [`Error::ClockStalled`] when the clock does not move at all.
//!
//! # Layouts
//!
//! [`Layout`] widths must add up to 64 bits (full `u64`), 63 bits (ids stay
//! positive as `i64`) or 53 bits (ids stay exact in a JavaScript `Number`).
//! Presets: [`Layout::seed`] (41/3/5/10/5, 64 bits), [`Layout::twitter`]
//! (41/5/5/12, 63 bits, no logical clock), [`Layout::js_safe`] (41/3/2/5/2,
//! 53 bits). The epoch defaults to 2020-01-01 UTC. In JSON, [`Id`] is written
//! as a string; [`serde_str`] does the same for plain `u64` fields.
//!
//! # Metrics and logs
//!
//! The crate records no metric instruments (the hot path is one atomic load of
//! the coarse clock and one compare-and-swap); lease events (leased, renewal
//! failed, lost, released) are logged with `tracing` under the `idgen` target.
//!
//! # Cargo features
//!
//! - `async`: `Generator::next_id_async` (tokio timer; enabled by `redis`, `etcd` and `sql`).
//! - `redis`: [`WorkerLease`] over Redis (`SET NX PX` + Lua scripts).
//! - `etcd`: [`WorkerLease`] over etcd (lease + create-if-absent transaction).
//! - `sql`: [`WorkerLease`] over a SQL table (`SqlLeases`: MySQL/MariaDB,
//!   PostgreSQL or SQLite through `sqlx::Any`; a compare-and-set per step).

mod clock;
mod error;
mod generator;
mod id;
mod layout;
#[cfg(any(feature = "redis", feature = "etcd", feature = "sql"))]
mod lease;
mod lease_state;
mod state;
#[cfg(feature = "async")]
mod wait;

pub use clock::{
    COARSE_CLOCK_PERIOD, CachedClock, Clock, DEFAULT_CACHE_PERIOD, DEFAULT_SLEW_PPM, ManualClock, OffsetSource,
    SystemClock,
};
pub use error::Error;
pub use generator::{DEFAULT_MAX_BEHIND, Generator, GeneratorBuilder};
pub use id::{Id, serde_str};
pub use layout::{ALLOWED_TOTAL_BITS, DEFAULT_EPOCH_MS, IdParts, Layout, LayoutConfig};
#[cfg(any(feature = "redis", feature = "etcd", feature = "sql"))]
pub use lease::{DEFAULT_LEASE_TTL, LeaseOptions, WorkerLease};
#[cfg(feature = "sql")]
pub use lease::SqlLeases;
/// The SQL dialect of a [`SqlLeases`] table.
#[cfg(feature = "sql")]
pub use sqldialect::Dialect as SqlDialect;
