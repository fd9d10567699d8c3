//! Byte-class checks eight bytes at a time (SWAR: SIMD within a register),
//! for the token rules every context header is checked against.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Nonzero when some byte of `x` is zero.
#[inline]
fn has_zero(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// Nonzero when some byte of `x` is not a token byte (visible ASCII but `,`
/// and `;`): below `0x21`, at or above `0x7f`, `,` or `;`. Exact as a yes/no
/// answer (the classic bit tricks, valid for these bounds).
#[inline]
fn non_token(x: u64) -> u64 {
    let below = x.wrapping_sub(LO * 0x21) & !x & HI;
    let above = (x.wrapping_add(LO) | x) & HI;
    below | above | has_zero(x ^ (LO * u64::from(b','))) | has_zero(x ^ (LO * u64::from(b';')))
}

/// The first eight bytes of `b` (at least eight long) as a little-endian word:
/// one load, no copy through the stack.
#[inline]
fn load8(b: &[u8]) -> u64 {
    match b.first_chunk::<8>() {
        Some(w) => u64::from_le_bytes(*w),
        None => 0,
    }
}

/// A word holding every byte of `raw` (at most eight long), some of them twice:
/// two overlapping loads of the largest size that fits, never a byte-wise copy
/// (whose narrow stores would stall the wide load that follows). Bytes that
/// `raw` is too short to fill are `pad`'s.
#[inline]
pub(crate) fn short_word(raw: &[u8], pad: u64) -> u64 {
    let n = raw.len();
    match (raw.first_chunk::<4>(), raw.last_chunk::<4>(), raw.first_chunk::<2>(), raw.last_chunk::<2>()) {
        _ if n >= 8 => load8(raw),
        (Some(a), Some(b), _, _) => u64::from(u32::from_le_bytes(*a)) | u64::from(u32::from_le_bytes(*b)) << 32,
        (_, _, Some(a), Some(b)) => {
            (pad & !0xffff_ffff) | u64::from(u16::from_le_bytes(*a)) | u64::from(u16::from_le_bytes(*b)) << 16
        }
        _ => match raw.first() {
            Some(&b) => (pad & !0xff) | u64::from(b),
            None => pad,
        },
    }
}

/// Whether every byte of `raw` is a token byte.
#[inline]
pub(crate) fn all_token_bytes(raw: &[u8]) -> bool {
    const PAD: u64 = LO * b'a' as u64;
    let n = raw.len();
    if n <= 8 {
        return non_token(short_word(raw, PAD)) == 0;
    }
    let mut chunks = raw.chunks_exact(8);
    let mut bad = 0;
    for c in &mut chunks {
        bad |= non_token(load8(c));
    }
    if !chunks.remainder().is_empty() {
        // The last eight bytes, overlapping the chunk before: checked twice, harmless.
        bad |= non_token(load8(&raw[n - 8..]));
    }
    bad == 0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::all_token_bytes;

    /// The rule, one byte at a time: visible ASCII but `,` and `;`.
    fn is_token_byte(b: u8) -> bool {
        (0x21..0x7f).contains(&b) && b != b',' && b != b';'
    }

    #[test]
    fn every_byte_in_every_position() {
        for b in 0..=255u8 {
            for len in 1..=17 {
                for pos in 0..len {
                    let mut v = vec![b'x'; len];
                    v[pos] = b;
                    assert_eq!(all_token_bytes(&v), is_token_byte(b), "byte {b:#04x} at {pos} of {len}");
                }
            }
        }
        assert!(all_token_bytes(b""));
    }

    /// Two byte strings of one length up to 8 are equal exactly when their words are.
    #[test]
    fn short_words_compare_like_the_bytes() {
        use super::short_word;
        for n in 0..=8usize {
            for i in 0..n.max(1) {
                let a: Vec<u8> = (0..n as u8).map(|k| b'a' + k).collect();
                let mut b = a.clone();
                if let Some(x) = b.get_mut(i) {
                    *x ^= 0x20;
                    assert_ne!(short_word(&a, 0), short_word(&b, 0), "length {n}, byte {i} differs");
                }
                assert_eq!(short_word(&a, 0), short_word(&a.clone(), 0));
            }
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_byte_rule(v in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(all_token_bytes(&v), v.iter().all(|&b| is_token_byte(b)));
        }
    }
}
