//! The process's wall clock, with an offset that can be set per process.
//!
//! Every part of the SDK that reads wall time for a decision reads it here:
//! `idgen`'s system clock (the timestamp bits of ids), `crdt`'s hybrid logical
//! clock (the order of concurrent writes), `failover` (audit instants, intent
//! ages, retention) and `cellctx` (issue and expiry of signed hops). Setting an
//! offset makes the whole process behave as a host whose clock is that far
//! ahead (positive) or behind (negative): the seam a fault campaign uses to
//! skew and step clocks, the same seam production runs through with an offset
//! of zero.
//!
//! The offset is zero until the process sets it, from the
//! [`OFFSET_ENV`] variable ([`init_from_env`]) or at run time
//! ([`set_offset_ms`], [`step_ms`]); library code never reads the environment.
//! A reading costs one relaxed atomic load beside `SystemTime::now()`.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//!
//! // a process started with CELLSDK_CLOCK_OFFSET_MS=30000 calls this first
//! cellclock::set_offset_ms(30_000)?;
//! let skewed = cellclock::now();
//! assert!(skewed >= SystemTime::now() + Duration::from_secs(29));
//!
//! // stepped back by a minute during the run: the clock is now 30 s behind
//! assert_eq!(cellclock::step_ms(-60_000)?, -30_000);
//! assert!(cellclock::now() < SystemTime::now());
//!
//! assert!(cellclock::set_offset_ms(i64::MAX).is_err());
//! cellclock::set_offset_ms(0)?;
//! # Ok::<(), cellclock::Error>(())
//! ```

mod error;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::Error;

/// The environment variable [`init_from_env`] reads: the offset in
/// milliseconds, positive for a clock ahead of true time.
pub const OFFSET_ENV: &str = "CELLSDK_CLOCK_OFFSET_MS";

/// The largest offset either way: one day. Larger is a configuration mistake,
/// not a clock fault.
pub const MAX_OFFSET_MS: i64 = 86_400_000;

static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// The current wall-clock time as this process sees it: the system clock plus
/// the offset.
pub fn now() -> SystemTime {
    shift(SystemTime::now(), OFFSET_MS.load(Ordering::Relaxed))
}

/// [`now`] in milliseconds since the Unix epoch (0 before the epoch).
pub fn now_ms() -> u64 {
    now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The offset in milliseconds (positive: ahead of the system clock).
pub fn offset_ms() -> i64 {
    OFFSET_MS.load(Ordering::Relaxed)
}

/// Sets the offset; readings after this call see it at once (a step, as a
/// misconfigured NTP or a VM restore makes).
pub fn set_offset_ms(offset_ms: i64) -> Result<(), Error> {
    check(offset_ms)?;
    OFFSET_MS.store(offset_ms, Ordering::Relaxed);
    Ok(())
}

/// Moves the offset by `delta_ms` and returns the new offset; the offset is
/// unchanged when the result would be out of range.
pub fn step_ms(delta_ms: i64) -> Result<i64, Error> {
    let mut current = OFFSET_MS.load(Ordering::Relaxed);
    loop {
        let next = current.saturating_add(delta_ms);
        check(next)?;
        match OFFSET_MS.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(next),
            Err(seen) => current = seen,
        }
    }
}

/// Sets the offset from [`OFFSET_ENV`] when it is set and returns the offset
/// in force; an unset or empty variable leaves it as it is.
pub fn init_from_env() -> Result<i64, Error> {
    init_from(std::env::var(OFFSET_ENV).ok().as_deref())
}

fn init_from(value: Option<&str>) -> Result<i64, Error> {
    match value {
        Some(v) if !v.trim().is_empty() => {
            let ms = parse(v)?;
            set_offset_ms(ms)?;
            Ok(ms)
        }
        _ => Ok(offset_ms()),
    }
}

/// Parses an offset as [`OFFSET_ENV`] holds it (`30000`, `-5000`, `+250`).
pub fn parse(value: &str) -> Result<i64, Error> {
    let ms = value
        .trim()
        .parse::<i64>()
        .map_err(|_| Error::InvalidEnv { var: OFFSET_ENV, value: value.to_owned() })?;
    check(ms)?;
    Ok(ms)
}

fn check(offset_ms: i64) -> Result<(), Error> {
    if offset_ms.unsigned_abs() > MAX_OFFSET_MS.unsigned_abs() {
        return Err(Error::OutOfRange { offset_ms, max_ms: MAX_OFFSET_MS });
    }
    Ok(())
}

fn shift(t: SystemTime, offset_ms: i64) -> SystemTime {
    let d = Duration::from_millis(offset_ms.unsigned_abs());
    if offset_ms >= 0 { t.checked_add(d).unwrap_or(t) } else { t.checked_sub(d).unwrap_or(t) }
}

#[cfg(test)]
mod tests;
