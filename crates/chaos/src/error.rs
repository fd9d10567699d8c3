//! The crate's error type.

/// What the campaign's parts refuse.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A topology or schedule setting is out of range.
    #[error("invalid campaign config: {0}")]
    Config(&'static str),
    /// A history line is not a history record.
    #[error("history line {line}: {source}")]
    History {
        /// 1-based line number.
        line: usize,
        /// Why it did not parse.
        #[source]
        source: serde_json::Error,
    },
    /// Writing or reading a history file failed.
    #[error("history i/o: {0}")]
    Io(#[from] std::io::Error),
}
