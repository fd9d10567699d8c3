//! The history the load generator writes and the checker reads: one JSON
//! object per line, every request with its outcome.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::Error;

/// What a write does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteKind {
    /// Adds a comment (an element of a set).
    Comment,
    /// Adds a like (an element of a set, counted).
    Like,
}

/// How a request ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged; for a write, with the id the system gave it and the cell
    /// that served it.
    Ok {
        /// The write's id (empty for a read).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        id: String,
        /// The serving cell, when the response said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cell: Option<String>,
    },
    /// Failed or timed out: a write may or may not have landed.
    Failed {
        /// What the client saw (status or error).
        error: String,
    },
}

/// One request of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The client's request id (unique per request).
    pub req: String,
    /// The home region of the user who sent it.
    pub region: String,
    /// When the response (or the failure) arrived, ms since the Unix epoch
    /// on the load generator's clock.
    pub at_ms: u64,
    /// A write (with its kind and the key it wrote) or `None` for a read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<(WriteKind, String)>,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Record {
    /// Whether the client saw success.
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    /// The id of an acknowledged write.
    pub fn acked_id(&self) -> Option<&str> {
        match (&self.write, &self.outcome) {
            (Some(_), Outcome::Ok { id, .. }) if !id.is_empty() => Some(id),
            _ => None,
        }
    }
}

/// Appends `records` as JSON lines.
pub fn write_jsonl<'a>(mut out: impl Write, records: impl IntoIterator<Item = &'a Record>) -> Result<(), Error> {
    for r in records {
        serde_json::to_writer(&mut out, r).map_err(|e| Error::Io(e.into()))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads a JSON-lines history; blank lines are skipped, anything else that
/// is not a record is an error naming its line.
pub fn read_jsonl(input: impl BufRead) -> Result<Vec<Record>, Error> {
    let mut out = Vec::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(serde_json::from_str(&line).map_err(|source| Error::History { line: i + 1, source })?);
    }
    Ok(out)
}
