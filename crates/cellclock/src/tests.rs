#![allow(clippy::unwrap_used)]

use super::*;
use proptest::prelude::*;

// The offset is process-global: tests that set it run in this one test so
// they do not race each other.
#[test]
fn offset_moves_every_reading_and_is_bounded() {
    set_offset_ms(0).unwrap();
    let base = SystemTime::now();
    set_offset_ms(30_000).unwrap();
    let ahead = now();
    assert!(ahead.duration_since(base).unwrap() >= Duration::from_millis(29_900));
    assert!(now_ms() >= base.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 + 29_900);

    assert_eq!(step_ms(-60_000).unwrap(), -30_000);
    let behind = now();
    assert!(base.duration_since(behind).unwrap() >= Duration::from_millis(29_000));

    // out of range either way: refused, offset unchanged
    assert_eq!(set_offset_ms(MAX_OFFSET_MS + 1), Err(Error::OutOfRange { offset_ms: MAX_OFFSET_MS + 1, max_ms: MAX_OFFSET_MS }));
    assert!(step_ms(-MAX_OFFSET_MS).is_err());
    assert!(step_ms(i64::MIN).is_err());
    assert_eq!(offset_ms(), -30_000);

    // the environment's value: unset or empty leaves it, set replaces it,
    // garbage is an error that leaves it
    assert_eq!(init_from(None).unwrap(), -30_000);
    assert_eq!(init_from(Some(" ")).unwrap(), -30_000);
    assert_eq!(init_from(Some("+2500")).unwrap(), 2_500);
    assert_eq!(offset_ms(), 2_500);
    assert!(matches!(init_from(Some("30s")), Err(Error::InvalidEnv { .. })));
    assert_eq!(offset_ms(), 2_500);
    set_offset_ms(0).unwrap();
}

proptest! {
    #[test]
    fn parse_accepts_exactly_the_bounded_integers(ms in any::<i64>()) {
        let parsed = parse(&ms.to_string());
        if ms.unsigned_abs() <= MAX_OFFSET_MS.unsigned_abs() {
            prop_assert_eq!(parsed, Ok(ms));
        } else {
            prop_assert!(matches!(parsed, Err(Error::OutOfRange { .. })), "{:?}", parsed);
        }
    }

    #[test]
    fn shift_is_exact(offset in -MAX_OFFSET_MS..=MAX_OFFSET_MS) {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let shifted = shift(t, offset);
        let diff = if offset >= 0 { shifted.duration_since(t).unwrap() } else { t.duration_since(shifted).unwrap() };
        prop_assert_eq!(diff.as_millis() as u64, offset.unsigned_abs());
    }
}
