//! Key changes: the statement an owner signs to move an account to a new
//! key (rotation) or to a new certificate for the same key (renewal), and
//! the operator's rebind, which binds an account to a new CA-issued
//! certificate without the old key.
//!
//! A rotation statement is signed by the OLD key (the one the ledger has
//! registered: only its owner can give the account away) and by the NEW
//! key (its owner accepts the account and proves possession). The bytes
//! signed are [`KeyStatement::canonical_bytes`]; JSON is transport only.

use crate::core::keys::{SigningKey, VerifyingKey};
use crate::core::name::Name;
use crate::core::rules::{key_fingerprint, RegisteredKey};

/// Domain-separation tag of a key statement.
pub const ROTATION_TAG: &[u8] = b"micropay/rotate/v1";

/// Longest certificate serial accepted in a statement, in bytes (RFC 5280
/// allows 20 octets; a DER sign byte makes 21).
pub const SERIAL_BYTES_MAX: usize = 21;

/// How an account's key changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyChangeKind {
    /// The key the account was opened with.
    Register,
    /// A new certificate for the same key (only the validity changes).
    Renew,
    /// A new key, signed over by the old one.
    Rotate,
    /// A new key bound by the operator, without the old key.
    Rebind,
}

impl KeyChangeKind {
    /// The stable name stored in the key history.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyChangeKind::Register => "register",
            KeyChangeKind::Renew => "renew",
            KeyChangeKind::Rotate => "rotate",
            KeyChangeKind::Rebind => "rebind",
        }
    }

    /// Parses [`KeyChangeKind::as_str`].
    pub fn parse(s: &str) -> Option<KeyChangeKind> {
        [
            KeyChangeKind::Register,
            KeyChangeKind::Renew,
            KeyChangeKind::Rotate,
            KeyChangeKind::Rebind,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What the owner states: move `name` from `old_key` to `new_key`, whose
/// certificate has `new_not_after_s` and `new_serial`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatement {
    /// The account.
    pub name: Name,
    /// The key the account has now.
    pub old_key: VerifyingKey,
    /// The key it moves to (the same key for a renewal).
    pub new_key: VerifyingKey,
    /// The new certificate's notAfter, unix seconds.
    pub new_not_after_s: u64,
    /// The new certificate's serial, big-endian bytes as encoded.
    pub new_serial: Vec<u8>,
}

/// Why a statement is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// The serial is longer than [`SERIAL_BYTES_MAX`].
    #[error("the certificate serial is longer than {SERIAL_BYTES_MAX} bytes")]
    SerialTooLong,
    /// The old key's signature does not verify.
    #[error("the old key's signature does not verify")]
    BadOldSignature,
    /// The new key's signature does not verify.
    #[error("the new key's signature does not verify")]
    BadNewSignature,
}

impl KeyStatement {
    /// Whether the key stays the same (a renewal).
    pub fn kind(&self) -> KeyChangeKind {
        if self.old_key == self.new_key {
            KeyChangeKind::Renew
        } else {
            KeyChangeKind::Rotate
        }
    }

    /// The bytes both keys sign (layout in `docs/PROTOCOL.md`): the tag
    /// and the name with one-byte lengths, the two SPKIs with two-byte
    /// lengths, notAfter as 8 bytes big-endian, the serial with a one-byte
    /// length.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, StatementError> {
        if self.new_serial.len() > SERIAL_BYTES_MAX {
            return Err(StatementError::SerialTooLong);
        }
        let (old, new) = (self.old_key.spki_der(), self.new_key.spki_der());
        let mut out = Vec::with_capacity(64 + old.len() + new.len() + self.new_serial.len());
        put_u8_len(&mut out, ROTATION_TAG);
        put_u8_len(&mut out, self.name.as_str().as_bytes());
        put_u16_len(&mut out, old);
        put_u16_len(&mut out, new);
        out.extend_from_slice(&self.new_not_after_s.to_be_bytes());
        put_u8_len(&mut out, &self.new_serial);
        Ok(out)
    }

    /// Signs the statement with the old and the new key.
    pub fn sign(
        self,
        old: &SigningKey,
        new: &SigningKey,
    ) -> Result<SignedKeyStatement, StatementError> {
        let bytes = self.canonical_bytes()?;
        Ok(SignedKeyStatement {
            old_signature: old.sign(&bytes),
            new_signature: new.sign(&bytes),
            statement: self,
        })
    }

    /// The key registered after the change.
    pub fn registered_key(&self) -> RegisteredKey {
        RegisteredKey::of(&self.new_key, self.new_not_after_s)
    }
}

/// A statement with both signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedKeyStatement {
    /// What is stated.
    pub statement: KeyStatement,
    /// The old key's signature over the canonical bytes.
    pub old_signature: Vec<u8>,
    /// The new key's signature over the canonical bytes.
    pub new_signature: Vec<u8>,
}

impl SignedKeyStatement {
    /// Checks both signatures: the old one with the statement's old key,
    /// the new one with its new key.
    pub fn verify(&self) -> Result<(), StatementError> {
        let bytes = self.statement.canonical_bytes()?;
        self.statement
            .old_key
            .verify(&bytes, &self.old_signature)
            .map_err(|_| StatementError::BadOldSignature)?;
        self.statement
            .new_key
            .verify(&bytes, &self.new_signature)
            .map_err(|_| StatementError::BadNewSignature)
    }
}

/// A key change whose proof has been checked, ready for the rules: a
/// rotation or renewal whose two signatures verified, or an operator's
/// rebind to a certificate checked against the CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    kind: KeyChangeKind,
    name: Name,
    /// The key the change starts from (`None` for a rebind, which does
    /// not depend on it).
    old_fingerprint: Option<[u8; 32]>,
    new_key: VerifyingKey,
    new_not_after_s: u64,
    new_serial: Vec<u8>,
    /// The canonical statement bytes (rotation, renewal) or the new
    /// certificate's DER (rebind): what the key history keeps as proof.
    proof: Vec<u8>,
    old_signature: Vec<u8>,
    new_signature: Vec<u8>,
}

impl KeyChange {
    /// A rotation or renewal: both signatures must verify.
    pub fn from_statement(signed: SignedKeyStatement) -> Result<KeyChange, StatementError> {
        signed.verify()?;
        let s = signed.statement;
        Ok(KeyChange {
            kind: s.kind(),
            old_fingerprint: Some(key_fingerprint(&s.old_key)),
            proof: s.canonical_bytes()?,
            name: s.name,
            new_key: s.new_key,
            new_not_after_s: s.new_not_after_s,
            new_serial: s.new_serial,
            old_signature: signed.old_signature,
            new_signature: signed.new_signature,
        })
    }

    /// An operator's rebind of `name` to the key of a certificate (DER
    /// `certificate_der`) that the caller has checked against the CA.
    pub fn rebind(
        name: Name,
        new_key: VerifyingKey,
        new_not_after_s: u64,
        new_serial: Vec<u8>,
        certificate_der: Vec<u8>,
    ) -> Result<KeyChange, StatementError> {
        if new_serial.len() > SERIAL_BYTES_MAX {
            return Err(StatementError::SerialTooLong);
        }
        Ok(KeyChange {
            kind: KeyChangeKind::Rebind,
            name,
            old_fingerprint: None,
            new_key,
            new_not_after_s,
            new_serial,
            proof: certificate_der,
            old_signature: Vec::new(),
            new_signature: Vec::new(),
        })
    }

    /// Rotation, renewal or rebind.
    pub fn kind(&self) -> KeyChangeKind {
        self.kind
    }

    /// The account.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The fingerprint of the key the change starts from, if it names one.
    pub fn old_fingerprint(&self) -> Option<[u8; 32]> {
        self.old_fingerprint
    }

    /// The key after the change.
    pub fn new_key(&self) -> &VerifyingKey {
        &self.new_key
    }

    /// The new certificate's notAfter, unix seconds.
    pub fn new_not_after_s(&self) -> u64 {
        self.new_not_after_s
    }

    /// The new certificate's serial.
    pub fn new_serial(&self) -> &[u8] {
        &self.new_serial
    }

    /// The statement bytes or, for a rebind, the certificate's DER.
    pub fn proof(&self) -> &[u8] {
        &self.proof
    }

    /// The old key's signature (empty for a rebind).
    pub fn old_signature(&self) -> &[u8] {
        &self.old_signature
    }

    /// The new key's signature (empty for a rebind).
    pub fn new_signature(&self) -> &[u8] {
        &self.new_signature
    }

    /// The key registered after the change.
    pub fn registered_key(&self) -> RegisteredKey {
        RegisteredKey::of(&self.new_key, self.new_not_after_s)
    }
}

fn put_u8_len(out: &mut Vec<u8>, bytes: &[u8]) {
    // Tags, names and serials are bounded far below 255 bytes by the
    // callers (the serial by canonical_bytes' own check).
    assert!(bytes.len() <= usize::from(u8::MAX));
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

fn put_u16_len(out: &mut Vec<u8>, bytes: &[u8]) {
    // An SPKI that parsed as Ed25519 or P-256 is under 100 bytes.
    assert!(bytes.len() <= usize::from(u16::MAX));
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::payment::tests::vector_seed;

    /// The test vector of `docs/PROTOCOL.md`: alice moves from the
    /// payment vector's key (seed 00 01 .. 1f) to the key of seed 20 21 ..
    /// 3f, certificate notAfter 1 800 000 000, serial 01 02 03 04.
    #[test]
    fn test_vector_matches_protocol_md() {
        let old = SigningKey::ed25519_from_seed(&vector_seed());
        let mut new_seed = vector_seed();
        for b in &mut new_seed {
            *b += 0x20;
        }
        let new = SigningKey::ed25519_from_seed(&new_seed);
        let statement = KeyStatement {
            name: Name::parse("alice").expect("name"),
            old_key: old.verifying_key().clone(),
            new_key: new.verifying_key().clone(),
            new_not_after_s: 1_800_000_000,
            new_serial: vec![1, 2, 3, 4],
        };
        let bytes = statement.canonical_bytes().expect("bytes");
        let signed = statement.sign(&old, &new).expect("signs");
        let shown = format!(
            "canonical {}\nold_signature {}\nnew_signature {}",
            hex::encode(&bytes),
            hex::encode(&signed.old_signature),
            hex::encode(&signed.new_signature)
        );
        assert_eq!(
            shown, VECTOR,
            "the rotation statement changed: docs/PROTOCOL.md must change with it"
        );
        assert!(signed.verify().is_ok());
    }

    const VECTOR: &str = "canonical 126d6963726f7061792f726f746174652f763105616c696365002c302a300506032b657003210003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8002c302a300506032b657003210029acbae141bccaf0b22e1a94d34d0bc7361e526d0bfe12c89794bc9322966dd7000000006b49d2000401020304
old_signature ed09c1ed8206a87bcdbcea17d476002059fd016d8f9eb0f7d9f73c7b163946cecb5dbd2112ede2fc3e255ebea4b03467e4c9b3fe01fbfeb7c9ca2983a06eb50d
new_signature b0c62c4203226a0dcdf1336cc0007a4d3579ba39c2bf8645ed160da79e5447fb930d5498c8efaf64edb22856884aa97d93a9220408e1579a42492e4e91e6960d";
}
