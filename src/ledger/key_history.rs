//! The key history, for every backend: the row a key change writes
//! (`KeyRow`, as column values), the row audit reads back before any
//! interpretation ([`StoredKeyChange`]), and the decoded entry the server
//! reads ([`KeyEntry`]).

use crate::core::keys::VerifyingKey;
use crate::core::name::Name;
use crate::core::rotation::{KeyChange, KeyChangeKind};
use crate::ledger::decode::to_u64;
use crate::ledger::LedgerError;

/// One key-history row as column values, ready for either database.
#[derive(Debug, Clone)]
pub(crate) struct KeyRow<'a> {
    pub(crate) name: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) key: &'a [u8],
    pub(crate) not_after_s: i64,
    pub(crate) serial: &'a [u8],
    pub(crate) proof: &'a [u8],
    pub(crate) old_signature: &'a [u8],
    pub(crate) new_signature: &'a [u8],
    pub(crate) at_ms: i64,
    pub(crate) after_seq: i64,
}

/// Certificates and clocks end long before i64 runs out.
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl<'a> KeyRow<'a> {
    /// The row that opens an account's history.
    pub(crate) fn register(
        name: &'a Name,
        key: &'a VerifyingKey,
        not_after_s: u64,
        serial: &'a [u8],
        at_ms: u64,
    ) -> KeyRow<'a> {
        KeyRow {
            name: name.as_str(),
            kind: KeyChangeKind::Register.as_str(),
            key: key.spki_der(),
            not_after_s: big(not_after_s),
            serial,
            proof: &[],
            old_signature: &[],
            new_signature: &[],
            at_ms: big(at_ms),
            after_seq: 0,
        }
    }

    /// The row of a rotation, renewal or rebind decided after payment
    /// `after_seq`.
    pub(crate) fn change(change: &'a KeyChange, after_seq: u64, at_ms: u64) -> KeyRow<'a> {
        KeyRow {
            name: change.name().as_str(),
            kind: change.kind().as_str(),
            key: change.new_key().spki_der(),
            not_after_s: big(change.new_not_after_s()),
            serial: change.new_serial(),
            proof: change.proof(),
            old_signature: change.old_signature(),
            new_signature: change.new_signature(),
            at_ms: big(at_ms),
            after_seq: big(after_seq),
        }
    }
}

/// A key-history row as stored, for audit: it must be able to report
/// rows that do not parse.
#[derive(Debug, Clone)]
pub struct StoredKeyChange {
    /// Position in the history (ascending in decision order).
    pub hseq: i64,
    /// Account name.
    pub name: String,
    /// `register`, `renew`, `rotate` or `rebind`.
    pub kind: String,
    /// The key's SubjectPublicKeyInfo.
    pub key_spki: Vec<u8>,
    /// The certificate's notAfter, unix s.
    pub not_after_s: i64,
    /// The certificate's serial.
    pub serial: Vec<u8>,
    /// The statement's canonical bytes (renew, rotate), the certificate's
    /// DER (rebind), or empty (register).
    pub proof: Vec<u8>,
    /// The old key's signature over the statement.
    pub old_signature: Vec<u8>,
    /// The new key's signature over the statement.
    pub new_signature: Vec<u8>,
    /// When, unix ms.
    pub at_ms: i64,
    /// The last payment seq settled before the change.
    pub after_seq: i64,
}

/// One key an account had, as the server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// How the key came.
    pub kind: KeyChangeKind,
    /// The key.
    pub key: VerifyingKey,
    /// Its certificate's notAfter, unix s.
    pub not_after_s: u64,
    /// Its certificate's serial (empty for accounts registered before the
    /// key history existed).
    pub serial: Vec<u8>,
    /// When it was recorded, unix ms.
    pub at_ms: u64,
    /// The last payment seq settled before it.
    pub after_seq: u64,
}

impl StoredKeyChange {
    /// The decoded entry; a row that does not decode is corruption.
    pub(crate) fn into_entry(self) -> Result<KeyEntry, LedgerError> {
        let hseq = self.hseq;
        let corrupt = |what: &str| LedgerError::Corrupt(format!("key history {hseq}: {what}"));
        Ok(KeyEntry {
            kind: KeyChangeKind::parse(&self.kind).ok_or_else(|| corrupt("unknown kind"))?,
            key: VerifyingKey::from_spki_der(&self.key_spki).map_err(|_| corrupt("bad key"))?,
            not_after_s: to_u64(self.not_after_s, "not_after_s")?,
            serial: self.serial,
            at_ms: to_u64(self.at_ms, "at_ms")?,
            after_seq: to_u64(self.after_seq, "after_seq")?,
        })
    }
}
