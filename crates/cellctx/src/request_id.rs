//! Time-ordered request ids.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A new request id: 12 hex digits of milliseconds since the Unix epoch, then 8
/// of a random per-process prefix mixed with a counter, so ids sort by time.
pub fn generate() -> String {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt = process_salt();
    format!("{:012x}{:08x}", ms & 0xffff_ffff_ffff, (salt ^ n) as u32)
}

fn process_salt() -> u64 {
    use std::sync::OnceLock;
    static SALT: OnceLock<u64> = OnceLock::new();
    *SALT.get_or_init(rand::random::<u64>)
}
