//! The records of the log: the exact bytes a leaf of the Merkle tree
//! ([`crate::core::merkle`]) hashes. A record starts with a type byte and
//! a domain tag, so that records of different kinds can never be read as
//! one another. Every change of state is a record: settled payments (type
//! 1, here, built from the payment itself), and key-history rows,
//! grants, refusals and channel opens and ends (types 2 to 6, built by
//! `ledger::log_records` from the values the ledger stores, with the
//! [`RecordWriter`] below). All layouts are in docs/PROTOCOL.md §11.1.
//!
//! Settlement record (all integers big-endian; layout in docs/PROTOCOL.md):
//!
//! ```text
//! 0x01                         record type: settlement
//! u8 len || "micropay-log-settlement-v1"
//! u64 seq                      ledger position (leaf index + 1)
//! u64 settled_at_ms            settlement time, unix ms
//! u16 len || payment canonical bytes (what the payer signed)
//! u16 len || payer's signature over them
//! ```

use crate::core::merkle::{leaf_hash, Hash};
use crate::core::payment::SignedPayment;

/// The type byte of a settlement record.
pub const RECORD_SETTLEMENT: u8 = 0x01;
/// The type byte of a key-history record (a registration's key, or a
/// rotation, renewal or rebind).
pub const RECORD_KEY: u8 = 0x02;
/// The type byte of a grant record (an account's opening balance).
pub const RECORD_GRANT: u8 = 0x03;
/// The type byte of a recorded final refusal.
pub const RECORD_REFUSAL: u8 = 0x04;
/// The type byte of a channel open.
pub const RECORD_CHANNEL_OPEN: u8 = 0x05;
/// The type byte of a channel's end (close or expiry).
pub const RECORD_CHANNEL_END: u8 = 0x06;

/// Domain-separation tag of a key-history record.
pub const KEY_RECORD_TAG: &[u8] = b"micropay-log-key-v1";
/// Domain-separation tag of a grant record.
pub const GRANT_RECORD_TAG: &[u8] = b"micropay-log-grant-v1";
/// Domain-separation tag of a refusal record.
pub const REFUSAL_RECORD_TAG: &[u8] = b"micropay-log-refusal-v1";
/// Domain-separation tag of a channel-open record.
pub const CHANNEL_OPEN_RECORD_TAG: &[u8] = b"micropay-log-channel-open-v1";
/// Domain-separation tag of a channel-end record.
pub const CHANNEL_END_RECORD_TAG: &[u8] = b"micropay-log-channel-end-v1";

/// The offset of `seq` in a settlement record: type byte, tag length
/// byte, tag.
const SETTLEMENT_SEQ_AT: usize = 2 + SETTLEMENT_RECORD_TAG.len();

/// Writes a record: the type byte and tag, then fields in order. Every
/// integer is 8 bytes big-endian (stored values are `i64`; the ledger
/// never stores a negative one, and a corrupt negative value simply
/// yields a record no honest write produced); every byte string and text
/// is a u16 length then the bytes; an optional field is `0x00`, or
/// `0x01` then the field.
#[derive(Debug)]
pub struct RecordWriter(Vec<u8>);

impl RecordWriter {
    /// A record of type `kind` with domain tag `tag`.
    pub fn new(kind: u8, tag: &[u8]) -> RecordWriter {
        let mut out = Vec::with_capacity(128);
        out.push(kind);
        put_u8_len(&mut out, tag);
        RecordWriter(out)
    }

    /// An integer field.
    pub fn int(mut self, v: i64) -> RecordWriter {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A byte-string field.
    pub fn bytes(mut self, b: &[u8]) -> RecordWriter {
        put_u16_len(&mut self.0, b);
        self
    }

    /// A text field (UTF-8 bytes).
    pub fn text(self, s: &str) -> RecordWriter {
        self.bytes(s.as_bytes())
    }

    /// An optional integer field.
    pub fn opt_int(mut self, v: Option<i64>) -> RecordWriter {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self = self.int(v);
            }
        }
        self
    }

    /// An optional byte-string field.
    pub fn opt_bytes(mut self, b: Option<&[u8]>) -> RecordWriter {
        match b {
            None => self.0.push(0),
            Some(b) => {
                self.0.push(1);
                self = self.bytes(b);
            }
        }
        self
    }

    /// The record's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.0
    }
}

fn put_u8_len(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u8::try_from(bytes.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

/// The `seq` of a settlement record; `None` for records of other kinds
/// (or too short to be one).
pub fn settlement_seq(record: &[u8]) -> Option<u64> {
    if record.first() != Some(&RECORD_SETTLEMENT) {
        return None;
    }
    let bytes = record.get(SETTLEMENT_SEQ_AT..SETTLEMENT_SEQ_AT + 8)?;
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Domain-separation tag of a settlement record.
pub const SETTLEMENT_RECORD_TAG: &[u8] = b"micropay-log-settlement-v1";

/// The settlement record of `payment`, settled at position `seq` at
/// `settled_at_ms`.
pub fn settlement_record(payment: &SignedPayment, seq: u64, settled_at_ms: u64) -> Vec<u8> {
    settlement_record_raw(
        &payment.payment.canonical_bytes(),
        &payment.signature,
        seq,
        settled_at_ms,
    )
}

/// The settlement record from its parts (as audit reads them back).
pub fn settlement_record_raw(
    canonical: &[u8],
    signature: &[u8],
    seq: u64,
    settled_at_ms: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        2 + SETTLEMENT_RECORD_TAG.len() + 16 + 4 + canonical.len() + signature.len(),
    );
    out.push(RECORD_SETTLEMENT);
    out.push(SETTLEMENT_RECORD_TAG.len() as u8);
    out.extend_from_slice(SETTLEMENT_RECORD_TAG);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&settled_at_ms.to_be_bytes());
    // Canonical bytes are bounded by the memo and name limits and
    // signatures by their algorithm, both far below u16::MAX.
    put_u16_len(&mut out, canonical);
    put_u16_len(&mut out, signature);
    out
}

fn put_u16_len(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every field is bounded far below u16::MAX (names, memos, keys,
    // signatures, certificates within a FRAME_BYTES_MAX request); a longer one
    // could only come from a corrupt row, and is cut rather than panic.
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

/// The leaf hash of `payment`'s settlement record.
pub fn settlement_leaf(payment: &SignedPayment, seq: u64, settled_at_ms: u64) -> Hash {
    leaf_hash(&settlement_record(payment, seq, settled_at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seq_of_a_settlement_record_is_read_back_and_other_kinds_have_none() {
        let record = settlement_record_raw(b"canonical", b"sig", 42, 7);
        assert_eq!(settlement_seq(&record), Some(42));
        assert_eq!(settlement_seq(&record[..SETTLEMENT_SEQ_AT + 4]), None);
        let grant = RecordWriter::new(RECORD_GRANT, GRANT_RECORD_TAG)
            .text("alice")
            .int(100)
            .finish();
        assert_eq!(settlement_seq(&grant), None);
    }

    #[test]
    fn optional_fields_differ_from_present_ones() {
        let none = RecordWriter::new(RECORD_CHANNEL_END, CHANNEL_END_RECORD_TAG)
            .opt_int(None)
            .opt_bytes(None)
            .finish();
        let zero = RecordWriter::new(RECORD_CHANNEL_END, CHANNEL_END_RECORD_TAG)
            .opt_int(Some(0))
            .opt_bytes(Some(b""))
            .finish();
        assert_ne!(none, zero);
        assert_eq!(&none[none.len() - 2..], &[0, 0]);
    }
}
