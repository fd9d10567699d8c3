//! Which database a statement is for, and the parts of SQL that differ.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::error::Error;

/// The SQL dialect of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// MySQL or MariaDB.
    MySql,
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

impl Dialect {
    /// The dialect of a connection URL: `mysql:`, `mariadb:`, `postgres:`,
    /// `postgresql:` or `sqlite:` (scheme case ignored).
    ///
    /// # Errors
    /// [`Error::UnsupportedScheme`] for any other scheme.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        let scheme = url.split_once(':').map_or(url, |(s, _)| s);
        match scheme.to_ascii_lowercase().as_str() {
            "mysql" | "mariadb" => Ok(Dialect::MySql),
            "postgres" | "postgresql" => Ok(Dialect::Postgres),
            "sqlite" => Ok(Dialect::Sqlite),
            _ => Err(Error::UnsupportedScheme { scheme: scheme.to_string() }),
        }
    }

    /// The `i`-th bind placeholder (1-based): `$i` on PostgreSQL, `?` elsewhere.
    pub fn placeholder(self, i: usize) -> Cow<'static, str> {
        match self {
            Dialect::Postgres => Cow::Owned(format!("${i}")),
            Dialect::MySql | Dialect::Sqlite => Cow::Borrowed("?"),
        }
    }

    /// `n` placeholders separated by `, ` (a `VALUES` list).
    pub fn placeholders(self, n: usize) -> String {
        let mut out = String::with_capacity(n * 4);
        for i in 1..=n {
            if i > 1 {
                out.push_str(", ");
            }
            out.push_str(&self.placeholder(i));
        }
        out
    }

    /// A statement written with `?` placeholders, numbered `$1, $2, ...` in
    /// order on PostgreSQL and returned unchanged elsewhere. The statement must
    /// hold no `?` inside a string literal.
    pub fn numbered(self, sql: &str) -> String {
        if self != Dialect::Postgres {
            return sql.to_string();
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                let _ = write!(out, "${n}");
            } else {
                out.push(c);
            }
        }
        out
    }

    /// The column type of an opaque byte string of any length.
    pub fn blob_type(self) -> &'static str {
        match self {
            Dialect::MySql => "LONGBLOB",
            Dialect::Postgres => "BYTEA",
            Dialect::Sqlite => "BLOB",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_scheme_and_a_refusal() {
        let cases = [
            ("mysql://root@127.0.0.1/test", Dialect::MySql),
            ("mariadb://root@127.0.0.1/test", Dialect::MySql),
            ("postgres://postgres@127.0.0.1/test", Dialect::Postgres),
            ("postgresql://postgres@127.0.0.1/test", Dialect::Postgres),
            ("sqlite::memory:", Dialect::Sqlite),
            ("SQLite://x.db", Dialect::Sqlite),
        ];
        for (url, d) in cases {
            assert_eq!(Dialect::from_url(url), Ok(d), "{url}");
        }
        assert_eq!(Dialect::from_url("oracle://db"), Err(Error::UnsupportedScheme { scheme: "oracle".into() }));
        assert_eq!(Dialect::from_url("no-scheme"), Err(Error::UnsupportedScheme { scheme: "no-scheme".into() }));
    }

    #[test]
    fn placeholders_per_dialect() {
        assert_eq!(Dialect::Postgres.placeholders(3), "$1, $2, $3");
        assert_eq!(Dialect::MySql.placeholders(3), "?, ?, ?");
        assert_eq!(Dialect::Sqlite.placeholders(1), "?");
        assert_eq!(Dialect::Sqlite.placeholders(0), "");
        assert_eq!(Dialect::Postgres.placeholder(12), "$12");
        assert_eq!(Dialect::MySql.placeholder(12), "?");
    }

    #[test]
    fn numbering_rewrites_only_for_postgres() {
        let sql = "UPDATE t SET a = ?, b = ? WHERE id = ?";
        assert_eq!(Dialect::Postgres.numbered(sql), "UPDATE t SET a = $1, b = $2 WHERE id = $3");
        assert_eq!(Dialect::MySql.numbered(sql), sql);
        assert_eq!(Dialect::Sqlite.numbered(sql), sql);
    }

    #[test]
    fn blob_types() {
        assert_eq!(Dialect::MySql.blob_type(), "LONGBLOB");
        assert_eq!(Dialect::Postgres.blob_type(), "BYTEA");
        assert_eq!(Dialect::Sqlite.blob_type(), "BLOB");
    }
}
