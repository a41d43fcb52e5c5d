//! How a client decides that a settle (or status) reply is a genuine
//! receipt for its payment (docs/PROTOCOL.md §5 and §11.4). The server
//! signs a receipt only when it cannot prove the payment is in its log, so
//! a reply stands on one of two pieces of evidence:
//!
//! - a **log proof** (leaf index, inclusion proof, signed checkpoint): the
//!   checkpoint's signature is the server's word, once per batch, and the
//!   proof ties this payment's settlement record to it;
//! - otherwise the server's **signature** over the receipt's canonical
//!   bytes.
//!
//! A reply with neither is refused, and whatever a reply carries must be
//! valid: a bad proof is not rescued by a good signature, nor the reverse.

use crate::core::checkpoint::{Checkpoint, CheckpointCache};
use crate::core::keys::VerifyingKey;
use crate::core::log_proof::{verify_in_log, LogClaim, LogProofError};
use crate::core::payment::{Receipt, SignedPayment};

/// Where a reply says the payment sits in the server's log.
#[derive(Debug, Clone, Copy)]
pub struct LogPlace<'a> {
    /// The payment's leaf index (the server's to give; never derived from
    /// `seq`).
    pub leaf_index: u64,
    /// The RFC 9162 inclusion proof, lowercase hex hashes.
    pub proof: &'a [String],
    /// The signed checkpoint the proof leads to.
    pub checkpoint: &'a str,
}

/// What showed a receipt to be genuine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// The payment is a leaf of this checkpoint, signed by the server.
    Log(Checkpoint),
    /// No proof came with it; the server's signature over the receipt
    /// verifies.
    Signature,
}

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// The receipt's id, parties, amount or payment hash are not those of
    /// the payment.
    #[error("the receipt is not for this payment")]
    NotThisPayment,
    /// The reply carries a signature that does not verify with the
    /// server's key.
    #[error("the receipt's signature does not verify with the server's key")]
    BadSignature,
    /// The reply carries a log proof that does not verify.
    #[error("the receipt's log proof does not verify: {0}")]
    BadLogProof(#[from] LogProofError),
    /// The reply carries neither a log proof nor a signature: nothing
    /// shows that the server settled the payment.
    #[error("the receipt carries neither a log proof nor a server signature")]
    Unproven,
}

/// Checks a receipt for `payment` from the server whose key is `key`: it
/// must be for this payment, and be proven by `place` (checked through
/// `cache`, one signature check per distinct checkpoint) or, without a
/// place, by `signature`. A signature sent next to a proof (servers before
/// this rule signed every receipt) must verify too.
pub fn check_receipt(
    cache: &mut CheckpointCache,
    key: &VerifyingKey,
    payment: &SignedPayment,
    receipt: &Receipt,
    signature: Option<&[u8]>,
    place: Option<LogPlace<'_>>,
) -> Result<Evidence, ReceiptError> {
    if !receipt.matches(payment) {
        return Err(ReceiptError::NotThisPayment);
    }
    let checkpoint = match place {
        Some(place) => {
            let claim = LogClaim {
                seq: receipt.seq,
                settled_at_ms: receipt.settled_at_ms,
                leaf_index: place.leaf_index,
                proof: place.proof,
                checkpoint: place.checkpoint,
            };
            Some(verify_in_log(cache, key, payment, &claim)?)
        }
        None => None,
    };
    if let Some(signature) = signature {
        key.verify(&receipt.canonical_bytes(), signature)
            .map_err(|_| ReceiptError::BadSignature)?;
    }
    match (checkpoint, signature) {
        (Some(checkpoint), _) => Ok(Evidence::Log(checkpoint)),
        (None, Some(_)) => Ok(Evidence::Signature),
        (None, None) => Err(ReceiptError::Unproven),
    }
}

#[cfg(test)]
mod tests;
