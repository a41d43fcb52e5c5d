//! Where a ledger lives: an SQLite file or a PostgreSQL database, parsed
//! from one string (`--db`, `MICROPAY_DB`) in one place. A PostgreSQL URL
//! may hold a password: [`DbLocation`]'s `Display` and `Debug` never show
//! it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the ledger lives.
#[derive(Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// An SQLite file (the zero-setup default).
    Sqlite(PathBuf),
    /// A PostgreSQL database, as a `postgres://` or `postgresql://` URL.
    Postgres(String),
}

/// Why a `--db` value is not a usable location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbLocationError {
    /// The value is empty.
    #[error("the database location is empty")]
    Empty,
    /// A PostgreSQL URL that does not parse (shown without its password).
    #[error("{0} is not a valid PostgreSQL URL")]
    BadUrl(String),
    /// A PostgreSQL URL whose TLS parameters (`sslmode`, `sslrootcert`)
    /// are unusable (shown without its password), and why.
    #[error("{0}: {1}")]
    BadTls(String, String),
}

impl DbLocation {
    /// Parses an SQLite path or a `postgres://`/`postgresql://` URL.
    pub fn parse(s: &str) -> Result<DbLocation, DbLocationError> {
        if s.is_empty() {
            return Err(DbLocationError::Empty);
        }
        let Some(scheme_end) = postgres_scheme_end(s) else {
            return Ok(DbLocation::Sqlite(PathBuf::from(s)));
        };
        // The scheme is case-insensitive; the client library wants it
        // in lowercase.
        let url = format!(
            "{}{}",
            s[..scheme_end].to_ascii_lowercase(),
            &s[scheme_end..]
        );
        // The TLS parameters tokio-postgres does not know (`verify-full`,
        // `sslrootcert`) are checked and taken out first; the root
        // certificate file is read only when the database is opened.
        let parsed = crate::ledger::postgres::tls::split_tls_params(&url)
            .map_err(|e| DbLocationError::BadTls(redact_url(s), e.to_string()))?;
        match tokio_postgres::Config::from_str(&parsed.url) {
            Ok(_) => Ok(DbLocation::Postgres(url)),
            Err(_) => Err(DbLocationError::BadUrl(redact_url(s))),
        }
    }

    /// The SQLite path, if this is one.
    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        match self {
            DbLocation::Sqlite(path) => Some(path),
            DbLocation::Postgres(_) => None,
        }
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self, DbLocation::Postgres(_))
    }
}

impl FromStr for DbLocation {
    type Err = DbLocationError;

    fn from_str(s: &str) -> Result<DbLocation, DbLocationError> {
        DbLocation::parse(s)
    }
}

impl From<PathBuf> for DbLocation {
    fn from(path: PathBuf) -> DbLocation {
        DbLocation::Sqlite(path)
    }
}

impl fmt::Display for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbLocation::Sqlite(path) => write!(f, "{}", path.display()),
            DbLocation::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbLocation::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            DbLocation::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
        }
    }
}

/// Where the scheme of a `postgres://` or `postgresql://` URL ends.
fn postgres_scheme_end(s: &str) -> Option<usize> {
    ["postgres://", "postgresql://"]
        .into_iter()
        .find_map(|scheme| {
            s.get(..scheme.len())
                .filter(|head| head.eq_ignore_ascii_case(scheme))
                .map(|_| scheme.len())
        })
}

/// `url` with the password (between `user:` and `@` in the authority, or
/// a `password=` query parameter) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let (head, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{host}", &userinfo[..colon]),
                None => authority.to_owned(),
            }
        }
        None => authority.to_owned(),
    };
    format!("{head}{authority}{}", redact_query(tail))
}

fn redact_query(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_owned();
    };
    let (path, query) = tail.split_at(q + 1);
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{path}{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_urls_parse_to_their_backend() {
        assert_eq!(
            DbLocation::parse("micropay.db"),
            Ok(DbLocation::Sqlite("micropay.db".into()))
        );
        for url in [
            "postgres://u:p@127.0.0.1:5432/db",
            "postgresql://u@localhost/db",
            "POSTGRES://h/db",
        ] {
            assert!(
                DbLocation::parse(url).expect("parses").is_postgres(),
                "{url}"
            );
        }
        assert_eq!(DbLocation::parse(""), Err(DbLocationError::Empty));
    }

    #[test]
    fn passwords_are_never_shown() {
        let url = "postgres://alice:s3cret@127.0.0.1:5432/db?password=s3cret&sslmode=disable";
        let loc = DbLocation::parse(url).expect("parses");
        for shown in [loc.to_string(), format!("{loc:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("alice:***@127.0.0.1:5432/db"), "{shown}");
        }
        assert_eq!(
            redact_url("postgres://bob@h/db"),
            "postgres://bob@h/db",
            "no password, nothing to hide"
        );
        let bad = DbLocation::parse("postgres://alice:s3cret@h:notaport/db");
        let Err(e) = bad else {
            panic!("a bad port must not parse")
        };
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
