//! Checking that a settled payment is in the server's log: the receipt's
//! leaf index, inclusion proof and signed checkpoint, as a client (payer
//! or payee) checks them, and as anyone can check them offline with the
//! log's public key (docs/PROTOCOL.md, "The log").

use crate::core::checkpoint::{parse, Checkpoint, CheckpointCache, CheckpointError};
use crate::core::keys::VerifyingKey;
use crate::core::limits::PROOF_HASHES_MAX;
use crate::core::log_record::settlement_leaf;
use crate::core::merkle::{verify_inclusion, Hash, ProofError};
use crate::core::payment::SignedPayment;

/// Why a log proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogProofError {
    /// A proof hash is not 64 hex digits, or there are too many.
    #[error("malformed proof hashes")]
    MalformedProof,
    /// The checkpoint is malformed or not the server's.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The proof does not lead to the checkpoint's root.
    #[error("the inclusion proof does not lead to the checkpoint's root: {0}")]
    NotIncluded(ProofError),
}

/// Decodes a list of hex hashes, bounded by [`PROOF_HASHES_MAX`].
pub fn decode_hashes(hashes: &[String]) -> Result<Vec<Hash>, LogProofError> {
    if hashes.len() > PROOF_HASHES_MAX {
        return Err(LogProofError::MalformedProof);
    }
    hashes
        .iter()
        .map(|h| {
            let mut out = [0u8; 32];
            hex::decode_to_slice(h, &mut out).map_err(|_| LogProofError::MalformedProof)?;
            Ok(out)
        })
        .collect()
}

/// What a receipt claims about the log.
#[derive(Debug, Clone, Copy)]
pub struct LogClaim<'a> {
    /// The receipt's seq.
    pub seq: u64,
    /// The receipt's settlement time, unix ms.
    pub settled_at_ms: u64,
    /// The claimed leaf index.
    pub leaf_index: u64,
    /// The inclusion proof, hex.
    pub proof: &'a [String],
    /// The signed checkpoint.
    pub checkpoint: &'a str,
}

/// Verifies that `payment`, settled as `claim` says, is a leaf of the
/// checkpoint `claim.checkpoint` signed by `key` (any origin: the key id
/// binds the origin to the key). Each distinct checkpoint's signature is
/// checked once through `cache`. Returns the checkpoint.
pub fn verify_in_log(
    cache: &mut CheckpointCache,
    key: &VerifyingKey,
    payment: &SignedPayment,
    claim: &LogClaim<'_>,
) -> Result<Checkpoint, LogProofError> {
    // The leaf index is the server's to give: records of every kind share
    // the log, so it is not derived from `seq`; the settlement record binds
    // `seq`, and a wrong index fails the proof.
    let proof = decode_hashes(claim.proof)?;
    let (parsed, _, _) = parse(claim.checkpoint)?;
    let checkpoint = cache.open(claim.checkpoint, &parsed.origin, key)?;
    let leaf = settlement_leaf(payment, claim.seq, claim.settled_at_ms);
    verify_inclusion(
        &leaf,
        claim.leaf_index,
        checkpoint.size,
        &proof,
        &checkpoint.root,
    )
    .map_err(LogProofError::NotIncluded)?;
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::keys::SigningKey;
    use crate::core::merkle::MerkleTree;
    use crate::core::payment::tests::{vector_payment, vector_seed};

    #[test]
    fn a_true_claim_verifies_and_every_altered_claim_fails() {
        let payer = SigningKey::ed25519_from_seed(&vector_seed());
        let server = SigningKey::ed25519_from_seed(&[0x42; 32]);
        let payment = vector_payment().sign(&payer);
        let mut tree = MerkleTree::new();
        for seq in 1..=5u64 {
            tree.push(settlement_leaf(&payment, seq, 1_000 + seq));
        }
        let checkpoint = Checkpoint {
            origin: "micropay/test".into(),
            size: 5,
            root: tree.root(),
        };
        let note = checkpoint.sign(&server);
        let proof: Vec<String> = tree
            .inclusion_proof(2, 5)
            .expect("in range")
            .iter()
            .map(hex::encode)
            .collect();
        let claim = LogClaim {
            seq: 3,
            settled_at_ms: 1_003,
            leaf_index: 2,
            proof: &proof,
            checkpoint: &note,
        };
        let mut cache = CheckpointCache::new(4);
        let vk = server.verifying_key();
        assert_eq!(
            verify_in_log(&mut cache, vk, &payment, &claim),
            Ok(checkpoint)
        );
        let wrong_time = LogClaim {
            settled_at_ms: 1_004,
            ..claim
        };
        assert!(matches!(
            verify_in_log(&mut cache, vk, &payment, &wrong_time),
            Err(LogProofError::NotIncluded(_))
        ));
        let wrong_index = LogClaim {
            leaf_index: 3,
            ..claim
        };
        assert!(verify_in_log(&mut cache, vk, &payment, &wrong_index).is_err());
        let short = LogClaim {
            proof: &proof[1..],
            ..claim
        };
        assert!(verify_in_log(&mut cache, vk, &payment, &short).is_err());
        let bad_hex = vec!["zz".to_string()];
        let bad = LogClaim {
            proof: &bad_hex,
            ..claim
        };
        assert_eq!(
            verify_in_log(&mut cache, vk, &payment, &bad),
            Err(LogProofError::MalformedProof)
        );
        let other = SigningKey::ed25519_from_seed(&[0x43; 32]);
        let mut fresh = CheckpointCache::new(4);
        assert!(matches!(
            verify_in_log(&mut fresh, other.verifying_key(), &payment, &claim),
            Err(LogProofError::Checkpoint(_))
        ));
    }
}
