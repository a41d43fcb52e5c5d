//! Audit of the key history, for every backend: each stored key change is
//! rebuilt into a [`KeyChange`] (which checks a rotation's or renewal's two
//! signatures over its canonical statement, and a rebind's certificate
//! against the row) so that [`crate::ledger::audit`] can replay it through
//! the rules at its position among the payments.

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::core::keys::VerifyingKey;
use crate::core::name::Name;
use crate::core::rotation::{KeyChange, KeyChangeKind, KeyStatement, SignedKeyStatement};
use crate::ledger::StoredKeyChange;

/// A stored key change, checked as far as it can be without the rest of
/// the history.
pub(crate) enum AuditedRow {
    /// An account's first key.
    Register {
        name: String,
        key: VerifyingKey,
        not_after_s: u64,
    },
    /// A later change, with the key it starts from still to be matched.
    Change {
        change: Box<KeyChange>,
        after_seq: u64,
        at_ms: u64,
    },
}

/// Checks one row; `previous` is the account's key before it (the last
/// row's key, as audit has replayed them). Returns why it is broken.
pub(crate) fn audit_row(
    row: &StoredKeyChange,
    previous: Option<&VerifyingKey>,
) -> Result<AuditedRow, String> {
    let name = Name::parse(&row.name).map_err(|_| "bad account name".to_owned())?;
    let kind =
        KeyChangeKind::parse(&row.kind).ok_or_else(|| format!("unknown kind {:?}", row.kind))?;
    let key =
        VerifyingKey::from_spki_der(&row.key_spki).map_err(|e| format!("unusable key: {e}"))?;
    let not_after_s = u64::try_from(row.not_after_s).map_err(|_| "negative notAfter".to_owned())?;
    let after_seq = u64::try_from(row.after_seq).map_err(|_| "negative after_seq".to_owned())?;
    let at_ms = u64::try_from(row.at_ms).map_err(|_| "negative time".to_owned())?;
    let change = match kind {
        KeyChangeKind::Register => {
            if previous.is_some() {
                return Err("a second registration of the account".into());
            }
            return Ok(AuditedRow::Register {
                name: row.name.clone(),
                key,
                not_after_s,
            });
        }
        KeyChangeKind::Renew | KeyChangeKind::Rotate => {
            let old_key = previous.ok_or("a key change before the account's registration")?;
            statement_change(row, name, old_key.clone(), key, not_after_s)?
        }
        KeyChangeKind::Rebind => {
            if previous.is_none() {
                return Err("a rebind before the account's registration".into());
            }
            rebind_change(row, name, key, not_after_s)?
        }
    };
    if change.kind() != kind {
        return Err(format!(
            "recorded as {} but it is a {}",
            kind.as_str(),
            change.kind().as_str()
        ));
    }
    Ok(AuditedRow::Change {
        change: Box::new(change),
        after_seq,
        at_ms,
    })
}

fn statement_change(
    row: &StoredKeyChange,
    name: Name,
    old_key: VerifyingKey,
    new_key: VerifyingKey,
    new_not_after_s: u64,
) -> Result<KeyChange, String> {
    let statement = KeyStatement {
        name,
        old_key,
        new_key,
        new_not_after_s,
        new_serial: row.serial.clone(),
    };
    let bytes = statement.canonical_bytes().map_err(|e| e.to_string())?;
    if bytes != row.proof {
        return Err("the stored statement does not match the row (or the key before it)".into());
    }
    KeyChange::from_statement(SignedKeyStatement {
        statement,
        old_signature: row.old_signature.clone(),
        new_signature: row.new_signature.clone(),
    })
    .map_err(|e| e.to_string())
}

fn rebind_change(
    row: &StoredKeyChange,
    name: Name,
    key: VerifyingKey,
    not_after_s: u64,
) -> Result<KeyChange, String> {
    let (_, cert) = X509Certificate::from_der(&row.proof)
        .map_err(|_| "the rebind's certificate is not valid X.509".to_owned())?;
    let matches = cert.public_key().raw == key.spki_der()
        && cert.raw_serial() == row.serial.as_slice()
        && cert.validity().not_after.timestamp() == row.not_after_s
        && cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .is_some_and(|san| {
                san.value.general_names.iter().any(|g| {
                    matches!(g, x509_parser::extensions::GeneralName::DNSName(d) if *d == name.as_str())
                })
            });
    if !matches {
        return Err("the rebind's certificate does not match the row".into());
    }
    KeyChange::rebind(
        name,
        key,
        not_after_s,
        row.serial.clone(),
        row.proof.clone(),
    )
    .map_err(|e| e.to_string())
}
