//! The records of the log: the exact bytes a leaf of the Merkle tree
//! ([`crate::core::merkle`]) hashes. A record starts with a type byte, so
//! that records of different kinds can never be read as one another; this
//! version logs settled payments (type 1).
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
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes[..usize::from(len)]);
}

/// The leaf hash of `payment`'s settlement record.
pub fn settlement_leaf(payment: &SignedPayment, seq: u64, settled_at_ms: u64) -> Hash {
    leaf_hash(&settlement_record(payment, seq, settled_at_ms))
}
