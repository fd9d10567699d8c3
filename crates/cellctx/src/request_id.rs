//! Time-ordered request ids.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderValue;

use crate::token::Token;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Length of a generated request id, in bytes.
const LEN: usize = 20;

/// A new request id: 12 hex digits of milliseconds since the Unix epoch, then 8
/// of a random per-process prefix mixed with a counter, so ids sort by time.
pub fn generate() -> String {
    let id = generate_bytes();
    // Lowercase hex digits only: always UTF-8.
    String::from_utf8(id.to_vec()).unwrap_or_default()
}

/// A new request id as a [`Token`] (one copy, no formatting).
pub fn generate_token() -> Token {
    let id = generate_bytes();
    // Lowercase hex digits only: always a valid header value and token. Owned
    // by one shared allocation, so the clones (the request's header, the
    // echo, the context) are reference counts, not copies.
    let value = HeaderValue::from_maybe_shared(Bytes::from_owner(id))
        .unwrap_or_else(|_| HeaderValue::from_static("0"));
    Token::from_checked(value).marked(Token::TOKEN)
}

fn generate_bytes() -> [u8; LEN] {
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    encode(ms, (process_salt() ^ n) as u32)
}

/// `format!("{:012x}{:08x}", ms & 0xffff_ffff_ffff, tail)`, without the formatter.
fn encode(ms: u64, tail: u32) -> [u8; LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // 48 bits of milliseconds then 32 bits of salted counter, big-endian, as hex.
    let v: u128 = (u128::from(ms & 0xffff_ffff_ffff) << 32) | u128::from(tail);
    let mut out = [0u8; LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        let shift = 4 * (LEN - 1 - i);
        *slot = HEX[((v >> shift) & 0xf) as usize];
    }
    out
}

fn process_salt() -> u64 {
    use std::sync::OnceLock;
    static SALT: OnceLock<u64> = OnceLock::new();
    *SALT.get_or_init(rand::random::<u64>)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn same_text_as_the_formatted_id() {
        let id = generate();
        assert_eq!(id.len(), LEN);
        assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
        let ms = u64::from_str_radix(&id[..12], 16).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(now >= ms && now - ms < 60_000, "{id}");
        let token = generate_token();
        let text = token.as_str();
        assert!(text > id.as_str() || text[..12] == id[..12], "time-ordered: {id} then {text}");
    }

    #[test]
    fn encoding_matches_the_formatter() {
        for (ms, tail) in [(0, 0), (0x0193_a1b2_c3d4, 0xe5f6_0718), (u64::MAX, u32::MAX), (0x1_0000_0000_0001, 1)] {
            let want = format!("{:012x}{:08x}", ms & 0xffff_ffff_ffff, tail);
            assert_eq!(std::str::from_utf8(&encode(ms, tail)).unwrap(), want);
        }
    }
}
