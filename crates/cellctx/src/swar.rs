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

/// Whether every byte of `raw` is a token byte.
#[inline]
pub(crate) fn all_token_bytes(raw: &[u8]) -> bool {
    let mut chunks = raw.chunks_exact(8);
    let mut bad = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        bad |= non_token(u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Padded with a token byte.
        let mut w = [b'a'; 8];
        w[..rest.len()].copy_from_slice(rest);
        bad |= non_token(u64::from_le_bytes(w));
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

    proptest! {
        #[test]
        fn agrees_with_the_byte_rule(v in proptest::collection::vec(any::<u8>(), 0..40)) {
            prop_assert_eq!(all_token_bytes(&v), v.iter().all(|&b| is_token_byte(b)));
        }
    }
}
