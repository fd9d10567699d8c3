//! Placement of a routing key on a slot.
//!
//! `slot = xxh3_64(utf8 bytes of key, seed 0) % N`: XXH3 64-bit is specified
//! and implemented in most languages, so any service can compute a user's slot.
//!
//! Test vectors (N = 16384 and N = 128):
//!
//! ```
//! use cellrouter::{slot_of, xxh3};
//! assert_eq!(xxh3(b""), 0x2d06800538d394c2);
//! assert_eq!(slot_of("", 16384), 5314);
//! assert_eq!(slot_of("", 128), 66);
//! assert_eq!(slot_of("user-1", 16384), (xxh3(b"user-1") % 16384) as u32);
//! ```

use md5::{Digest, Md5};

/// XXH3 64-bit of `bytes` with seed 0.
#[inline]
pub fn xxh3(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The slot of `key` among `n_slots`: `xxh3_64(utf8 bytes of key, seed 0) %
/// n_slots` (0 when `n_slots` is 0). XXH3 64-bit is specified and implemented in
/// most languages, so any service can compute a user's slot.
///
/// Test vectors: `xxh3_64("") = 0x2d06800538d394c2`, so `slot_of("", 16384) = 5314`
/// and `slot_of("", 128) = 66`.
///
/// ```
/// use cellrouter::{slot_of, xxh3};
/// assert_eq!(xxh3(b""), 0x2d06800538d394c2);
/// assert_eq!(slot_of("", 16384), 5314);
/// assert_eq!(slot_of("", 128), 66);
/// ```
#[inline]
pub fn slot_of(key: &str, n_slots: u32) -> u32 {
    if n_slots == 0 {
        return 0;
    }
    (xxh3(key.as_bytes()) % n_slots as u64) as u32
}

/// The seed's placement, for compatibility:
/// `int(md5(f"{user_id}_{region_hint}").hexdigest()[:4], 16) % n_slots`.
///
/// ```
/// // python3 -c 'import hashlib;print(int(hashlib.md5(b"42_eu").hexdigest()[:4],16)%128)'
/// assert_eq!(cellrouter::slot_of_md5("42", "eu", 128), 0x7276 % 128);
/// ```
pub fn slot_of_md5(user_id: &str, region_hint: &str, n_slots: u32) -> u32 {
    if n_slots == 0 {
        return 0;
    }
    let mut h = Md5::new();
    h.update(user_id.as_bytes());
    h.update(b"_");
    h.update(region_hint.as_bytes());
    let d = h.finalize();
    let first4 = u32::from(d[0]) << 8 | u32::from(d[1]);
    first4 % n_slots
}
