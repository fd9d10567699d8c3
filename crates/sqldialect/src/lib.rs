//! The SQL that the SDK's durable logs (the `crdt` outbox and state table, the
//! `failover` audit log, the `saga` log) share across the three databases they
//! run on: which database a URL names, bind placeholders, the binary column
//! type, and the check on a table name before it is spliced into a statement.
//!
//! No driver here: the crates that talk to a database build their statements
//! with it and run them through `sqlx`.
//!
//! ```
//! use sqldialect::{Dialect, check_identifier};
//!
//! let d = Dialect::from_url("postgres://postgres@127.0.0.1/test")?;
//! assert_eq!(d, Dialect::Postgres);
//! check_identifier("cell_outbox", 60)?;
//! let sql = format!("INSERT INTO cell_outbox (id, payload) VALUES ({})", d.placeholders(2));
//! assert_eq!(sql, "INSERT INTO cell_outbox (id, payload) VALUES ($1, $2)");
//! assert_eq!(d.numbered("UPDATE t SET a = ? WHERE id = ?"), "UPDATE t SET a = $1 WHERE id = $2");
//!
//! assert!(Dialect::from_url("oracle://db").is_err());
//! assert!(check_identifier("t; DROP TABLE x", 60).is_err());
//! # Ok::<(), sqldialect::Error>(())
//! ```

mod dialect;
mod error;
mod identifier;

pub use dialect::Dialect;
pub use error::Error;
pub use identifier::check_identifier;
