//! The crate's error.

/// Why a URL or a table name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The URL's scheme names no supported database.
    #[error("unsupported database scheme {scheme:?} (expected mysql, mariadb, postgres, postgresql or sqlite)")]
    UnsupportedScheme {
        /// The scheme as written in the URL.
        scheme: String,
    },
    /// A table name (or prefix) that may not be spliced into SQL.
    #[error("table name {name:?} must be 1 to {max_len} bytes of letters, digits and '_', not starting with a digit")]
    InvalidIdentifier {
        /// The name as given.
        name: String,
        /// The longest name the caller accepts.
        max_len: usize,
    },
}
