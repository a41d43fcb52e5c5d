//! Person names: the identity a certificate carries.
//!
//! A name is lowercase `[a-z0-9][a-z0-9-]{0,31}`. It is both the
//! certificate's DNS subjectAltName and the TLS server name a payer dials,
//! so it must also be a name TLS accepts as a DNS name: it may not end in
//! `-` (no DNS label does) and may not look like a number (`42`, `0x1f`),
//! which TLS stacks refuse as server names.
//!
//! Some grammatical names are [reserved](RESERVED_NAMES) for the
//! deployment itself (the CA's and the server's files, the server's host):
//! no person certificate may carry them.

use std::fmt;

use crate::core::limits::NAME_BYTES_MAX;

/// Why a string is not a valid person name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The string is empty.
    #[error("a name may not be empty")]
    Empty,
    /// The string is longer than [`NAME_BYTES_MAX`].
    #[error("a name has at most {NAME_BYTES_MAX} characters, this one has {0}")]
    TooLong(usize),
    /// The first character is not a lowercase letter or digit.
    #[error("a name must start with a lowercase letter or a digit")]
    BadStart,
    /// A character outside `[a-z0-9-]`.
    #[error("a name may contain only lowercase letters, digits and '-', not {0:?}")]
    BadChar(char),
    /// Grammatical, but not usable as a TLS server name.
    #[error("a name may not end in '-' or look like a number (it is dialled as a DNS name)")]
    NotDnsName,
}

/// Names the deployment uses for itself, which no person may have:
/// `ca`, `server` and `crl` are file stems of `micropay-certs` (`ca.pem`,
/// `server.pem`, a future `crl.pem`), `localhost` is the server's default
/// host name. `micropay-certs` also reserves the server's own DNS names
/// (`--server-name`); the server and peers refuse a person certificate
/// with one of these names.
pub const RESERVED_NAMES: &[&str] = &["ca", "server", "crl", "localhost"];

/// Whether `s` is one of the [`RESERVED_NAMES`].
pub fn is_reserved(s: &str) -> bool {
    RESERVED_NAMES.contains(&s)
}

/// A validated person name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// Validates `s` as a person name.
    pub fn parse(s: &str) -> Result<Name, NameError> {
        validate(s)?;
        Ok(Name(s.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks `s` against the name grammar without allocating.
pub fn validate(s: &str) -> Result<(), NameError> {
    let mut chars = s.chars();
    let first = chars.next().ok_or(NameError::Empty)?;
    if s.len() > NAME_BYTES_MAX {
        return Err(NameError::TooLong(s.chars().count()));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(NameError::BadStart);
    }
    for c in chars {
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(NameError::BadChar(c));
        }
    }
    // Payers dial a payee by name, so the name must be a DNS name that
    // rustls accepts as a server name (not an IP address either).
    match rustls::pki_types::ServerName::try_from(s) {
        Ok(rustls::pki_types::ServerName::DnsName(_)) if !s.ends_with('-') => Ok(()),
        _ => Err(NameError::NotDnsName),
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_grammar() {
        for ok in [
            "a",
            "alice",
            "0a",
            "a0",
            "bob-2",
            "a-b",
            "x0x1f",
            &"x".repeat(32),
        ] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(validate(""), Err(NameError::Empty));
        assert_eq!(validate("-a"), Err(NameError::BadStart));
        assert_eq!(validate("Alice"), Err(NameError::BadStart));
        assert_eq!(validate("al_ice"), Err(NameError::BadChar('_')));
        assert_eq!(validate("al.ice"), Err(NameError::BadChar('.')));
        assert_eq!(validate("alicé"), Err(NameError::BadChar('é')));
        assert!(matches!(
            validate(&"x".repeat(33)),
            Err(NameError::TooLong(33))
        ));
        assert!(validate("../etc").is_err());
        for not_dns in ["a-", "0", "42", "0x1f"] {
            assert_eq!(validate(not_dns), Err(NameError::NotDnsName), "{not_dns}");
        }
    }

    #[test]
    fn reserved_names_are_grammatical_but_reserved() {
        for name in RESERVED_NAMES {
            assert!(validate(name).is_ok(), "{name}");
            assert!(is_reserved(name), "{name}");
        }
        assert!(!is_reserved("alice"));
        assert!(!is_reserved("ca-1"));
    }
}
