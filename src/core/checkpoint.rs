//! Checkpoints: the log's signed tree heads, in the C2SP `tlog-checkpoint`
//! format inside a C2SP `signed-note`. The body is three lines (origin,
//! tree size in decimal, standard base64 of the root hash), then a blank
//! line, then one signature line `— <key name> <base64(key id || sig)>`.
//! The key name is the origin. For an Ed25519 key the key id is the first
//! four bytes of `SHA-256(key name || 0x0A || 0x01 || public key)` and the
//! signature is Ed25519 over the body, as the signed-note spec defines.
//! The spec defines no ECDSA P-256 note key for this use, so a P-256
//! server's key id is the first four bytes of `SHA-256(key name || 0x0A ||
//! 0xFF || "micropay-ecdsa-p256-sha256" || SubjectPublicKeyInfo DER)` and
//! the signature is ASN.1 DER ECDSA P-256 SHA-256 over the body (type 0xFF
//! is the spec's escape for signature types it does not assign).

use std::collections::VecDeque;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use crate::core::keys::{KeyAlgorithm, SigningKey, VerifyingKey};
use crate::core::limits::{CHECKPOINT_NOTE_BYTES_MAX, LOG_ORIGIN_BYTES_MAX};
use crate::core::merkle::Hash;

/// The signature line's leading em dash and space (U+2014, U+0020).
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a checkpoint note was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note is not a well-formed checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// No signature line is by the expected key.
    #[error("the checkpoint is not signed by the log's key")]
    UnknownKey,
    /// The signature by the expected key does not verify.
    #[error("the checkpoint's signature does not verify")]
    BadSignature,
    /// The checkpoint names another log.
    #[error("the checkpoint is of another log")]
    WrongOrigin,
}

/// A tree head: which log, how many leaves, what root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name (first line), e.g. `micropay/server`.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// Root hash of those leaves.
    pub root: Hash,
}

impl Checkpoint {
    /// The note body that is signed: `origin\nsize\nbase64(root)\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// The signed note, signed by `key` under the key name `origin`.
    pub fn sign(&self, key: &SigningKey) -> String {
        let body = self.body();
        let mut blob = key_id(&self.origin, key.verifying_key()).to_vec();
        blob.extend_from_slice(&key.sign(body.as_bytes()));
        format!(
            "{body}\n{SIGNATURE_PREFIX}{} {}\n",
            self.origin,
            B64.encode(blob)
        )
    }
}

/// The signed-note key id of `key` under `name` (see the module text).
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut input = name.as_bytes().to_vec();
    input.push(b'\n');
    match key.algorithm() {
        KeyAlgorithm::Ed25519 => {
            input.push(0x01);
            input.extend_from_slice(ed25519_raw(key));
        }
        KeyAlgorithm::EcdsaP256 => {
            input.push(0xff);
            input.extend_from_slice(b"micropay-ecdsa-p256-sha256");
            input.extend_from_slice(key.spki_der());
        }
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let mut id = [0u8; 4];
    id.copy_from_slice(&digest.as_ref()[..4]);
    id
}

/// The 32 raw bytes of an Ed25519 key: the end of its fixed-layout SPKI.
fn ed25519_raw(key: &VerifyingKey) -> &[u8] {
    let der = key.spki_der();
    &der[der.len().saturating_sub(32)..]
}

/// Parses `note`, checks that it is the checkpoint of `origin` and that
/// its signature by `key` (under the key name `origin`) verifies.
pub fn open(note: &str, origin: &str, key: &VerifyingKey) -> Result<Checkpoint, CheckpointError> {
    let (checkpoint, body, signatures) = parse(note)?;
    if checkpoint.origin != origin {
        return Err(CheckpointError::WrongOrigin);
    }
    let want_id = key_id(origin, key);
    let mut seen = false;
    for line in signatures.lines() {
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(CheckpointError::Malformed("signature line"))?;
        let (name, blob) = rest
            .rsplit_once(' ')
            .ok_or(CheckpointError::Malformed("signature line"))?;
        if name != origin {
            continue;
        }
        let blob = B64
            .decode(blob)
            .map_err(|_| CheckpointError::Malformed("signature base64"))?;
        if blob.len() < 5 || blob[..4] != want_id {
            continue;
        }
        seen = true;
        if key.verify(body.as_bytes(), &blob[4..]).is_ok() {
            return Ok(checkpoint);
        }
    }
    Err(if seen {
        CheckpointError::BadSignature
    } else {
        CheckpointError::UnknownKey
    })
}

/// Splits a note into its checkpoint, its body and its signature lines.
pub fn parse(note: &str) -> Result<(Checkpoint, &str, &str), CheckpointError> {
    if note.len() > CHECKPOINT_NOTE_BYTES_MAX {
        return Err(CheckpointError::Malformed("too long"));
    }
    let split = note
        .find("\n\n")
        .ok_or(CheckpointError::Malformed("no signature block"))?;
    let (body, signatures) = (&note[..split + 1], &note[split + 2..]);
    if !signatures.ends_with('\n') || signatures.len() < 2 {
        return Err(CheckpointError::Malformed("signature block"));
    }
    let mut lines = body.lines();
    let origin = lines.next().unwrap_or_default();
    let size = lines.next().unwrap_or_default();
    let root = lines.next().unwrap_or_default();
    if origin.is_empty() || origin.len() > LOG_ORIGIN_BYTES_MAX {
        return Err(CheckpointError::Malformed("origin"));
    }
    let canonical_size = !size.is_empty()
        && size.bytes().all(|b| b.is_ascii_digit())
        && (size == "0" || !size.starts_with('0'));
    let size: u64 = match size.parse() {
        Ok(n) if canonical_size => n,
        _ => return Err(CheckpointError::Malformed("tree size")),
    };
    let root: Hash = B64
        .decode(root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or(CheckpointError::Malformed("root hash"))?;
    let checkpoint = Checkpoint {
        origin: origin.to_string(),
        size,
        root,
    };
    Ok((checkpoint, body, signatures))
}

type CacheKey = (String, String, Vec<u8>);

/// The checkpoints a client has verified, so that the many receipts of
/// one batch cost one signature check; bounded, least recently used first
/// out.
#[derive(Debug)]
pub struct CheckpointCache {
    /// (note, origin, key's SPKI DER) → the checkpoint verified so.
    entries: VecDeque<(CacheKey, Checkpoint)>,
    capacity: usize,
    /// Notes opened by a full check (signature included), for tests and
    /// for the claim that each distinct checkpoint is checked once.
    checked: u64,
}

impl CheckpointCache {
    /// An empty cache of at most `capacity` notes.
    pub fn new(capacity: usize) -> CheckpointCache {
        CheckpointCache {
            entries: VecDeque::with_capacity(capacity),
            capacity: capacity.max(1),
            checked: 0,
        }
    }

    /// Opens `note` as [`open`] does, checking the signature only the
    /// first time a note is seen with this origin and key.
    pub fn open(
        &mut self,
        note: &str,
        origin: &str,
        key: &VerifyingKey,
    ) -> Result<Checkpoint, CheckpointError> {
        let wanted = (note, origin, key.spki_der());
        let hit = self
            .entries
            .iter()
            .position(|((n, o, k), _)| (n.as_str(), o.as_str(), k.as_slice()) == wanted);
        if let Some(entry) = hit.and_then(|i| self.entries.remove(i)) {
            let checkpoint = entry.1.clone();
            self.entries.push_back(entry);
            return Ok(checkpoint);
        }
        self.checked += 1;
        let checkpoint = open(note, origin, key)?;
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        let cache_key = (
            note.to_string(),
            origin.to_string(),
            key.spki_der().to_vec(),
        );
        self.entries.push_back((cache_key, checkpoint.clone()));
        Ok(checkpoint)
    }

    /// How many notes were opened with a full check so far.
    pub fn signatures_checked(&self) -> u64 {
        self.checked
    }

    /// How many notes are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
