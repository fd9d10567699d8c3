//! Table names spliced into statements.

use crate::error::Error;

/// Checks a table name (or table-name prefix) before it is spliced into SQL:
/// 1 to `max_len` bytes of ASCII letters, digits and `_`, not starting with a
/// digit. Such a name needs no quoting on any of the three databases, so
/// nothing a caller passes can change a statement's meaning.
///
/// # Errors
/// [`Error::InvalidIdentifier`] naming the refused name.
pub fn check_identifier(name: &str, max_len: usize) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= max_len
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok { Ok(()) } else { Err(Error::InvalidIdentifier { name: name.to_string(), max_len }) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_names_pass_and_everything_else_is_refused() {
        for ok in ["t", "cell_outbox", "App_1", "_x"] {
            assert_eq!(check_identifier(ok, 60), Ok(()), "{ok}");
        }
        for bad in ["", "1app", "a-b", "a b", "a; DROP TABLE x", "t\"", "é"] {
            assert_eq!(
                check_identifier(bad, 60),
                Err(Error::InvalidIdentifier { name: bad.to_string(), max_len: 60 }),
                "{bad:?}"
            );
        }
        assert!(check_identifier(&"a".repeat(60), 60).is_ok());
        assert!(check_identifier(&"a".repeat(61), 60).is_err());
    }

    proptest! {
        /// Whatever passes holds no byte that could end or quote an identifier.
        #[test]
        fn a_passing_name_holds_only_word_bytes(name in ".{0,70}") {
            if check_identifier(&name, 64).is_ok() {
                prop_assert!(name.len() <= 64);
                prop_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
            }
        }
    }
}
