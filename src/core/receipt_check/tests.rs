//! Replies built by hand: each kind of evidence, and each way a reply can
//! fail to be a receipt.

use super::*;
use crate::core::checkpoint::Checkpoint;
use crate::core::keys::SigningKey;
use crate::core::log_record::settlement_leaf;
use crate::core::merkle::MerkleTree;
use crate::core::payment::tests::{vector_payment, vector_seed};

/// A reply as a server with a log makes it: the payment settled as seq 3,
/// leaf 4 of 6 (leaves of other records around it), and its checkpoint.
struct Reply {
    server: SigningKey,
    payment: SignedPayment,
    receipt: Receipt,
    proof: Vec<String>,
    note: String,
}

const LEAF: u64 = 4;

fn reply() -> Reply {
    let payer = SigningKey::ed25519_from_seed(&vector_seed());
    let server = SigningKey::ed25519_from_seed(&[0x42; 32]);
    let payment = vector_payment().sign(&payer);
    let receipt = Receipt {
        payment_id: payment.payment.id,
        payer: payment.payment.payer.clone(),
        payee: payment.payment.payee.clone(),
        amount_minor: payment.payment.amount_minor,
        seq: 3,
        settled_at_ms: 1_799_999_000_123,
        payment_hash: payment.content_hash(),
    };
    let mut tree = MerkleTree::new();
    for i in 0..6u64 {
        if i == LEAF {
            tree.push(settlement_leaf(&payment, 3, receipt.settled_at_ms));
        } else {
            // Not settlement leaves: the index is not seq - 1.
            tree.push([i as u8; 32]);
        }
    }
    let proof = tree
        .inclusion_proof(LEAF, 6)
        .expect("in range")
        .iter()
        .map(hex::encode)
        .collect();
    let note = Checkpoint {
        origin: "micropay/test".into(),
        size: 6,
        root: tree.root(),
    }
    .sign(&server);
    Reply {
        server,
        payment,
        receipt,
        proof,
        note,
    }
}

impl Reply {
    fn place(&self) -> LogPlace<'_> {
        LogPlace {
            leaf_index: LEAF,
            proof: &self.proof,
            checkpoint: &self.note,
        }
    }

    fn signature(&self) -> Vec<u8> {
        self.receipt.clone().sign(&self.server).signature
    }

    fn check(
        &self,
        signature: Option<&[u8]>,
        place: Option<LogPlace<'_>>,
    ) -> Result<Evidence, ReceiptError> {
        let mut cache = CheckpointCache::new(4);
        let key = self.server.verifying_key();
        check_receipt(
            &mut cache,
            key,
            &self.payment,
            &self.receipt,
            signature,
            place,
        )
    }
}

#[test]
fn an_unsigned_receipt_with_a_valid_proof_is_accepted_by_the_proof() {
    let r = reply();
    match r.check(None, Some(r.place())) {
        Ok(Evidence::Log(checkpoint)) => assert_eq!(checkpoint.size, 6),
        other => panic!("expected the log's evidence, got {other:?}"),
    }
}

#[test]
fn a_signed_receipt_without_a_proof_is_accepted_by_its_signature() {
    let r = reply();
    let signature = r.signature();
    assert_eq!(r.check(Some(&signature), None), Ok(Evidence::Signature));
}

#[test]
fn a_reply_with_neither_proof_nor_signature_is_refused() {
    let r = reply();
    assert_eq!(r.check(None, None), Err(ReceiptError::Unproven));
}

#[test]
fn a_reply_whose_proof_is_altered_is_refused() {
    let r = reply();
    let signature = r.signature();
    let mut hashes = r.proof.clone();
    let mut first = hex::decode(&hashes[0]).expect("hex");
    first[0] ^= 1;
    hashes[0] = hex::encode(first);
    let altered = [
        LogPlace {
            proof: &hashes,
            ..r.place()
        },
        LogPlace {
            leaf_index: LEAF - 1,
            ..r.place()
        },
        LogPlace {
            proof: &r.proof[1..],
            ..r.place()
        },
    ];
    for place in altered {
        assert!(matches!(
            r.check(None, Some(place)),
            Err(ReceiptError::BadLogProof(LogProofError::NotIncluded(_)))
        ));
        // A valid signature does not rescue a bad proof.
        assert!(matches!(
            r.check(Some(&signature), Some(place)),
            Err(ReceiptError::BadLogProof(_))
        ));
    }
    let forged_note = r.note.replacen("\n6\n", "\n7\n", 1);
    let forged = LogPlace {
        checkpoint: &forged_note,
        ..r.place()
    };
    assert!(matches!(
        r.check(None, Some(forged)),
        Err(ReceiptError::BadLogProof(LogProofError::Checkpoint(_)))
    ));
}

#[test]
fn a_changed_receipt_field_fails_the_proof_or_the_match() {
    let r = reply();
    let mut later = reply();
    later.receipt.settled_at_ms += 1;
    assert!(matches!(
        later.check(None, Some(r.place())),
        Err(ReceiptError::BadLogProof(_))
    ));
    let mut more = reply();
    more.receipt.amount_minor += 1;
    assert_eq!(
        more.check(None, Some(r.place())),
        Err(ReceiptError::NotThisPayment)
    );
}

#[test]
fn a_bad_signature_is_refused_with_or_without_a_proof() {
    let r = reply();
    let mut signature = r.signature();
    signature[0] ^= 1;
    assert_eq!(
        r.check(Some(&signature), None),
        Err(ReceiptError::BadSignature)
    );
    assert_eq!(
        r.check(Some(&signature), Some(r.place())),
        Err(ReceiptError::BadSignature)
    );
    let other = SigningKey::ed25519_from_seed(&[0x43; 32]);
    let foreign = r.receipt.clone().sign(&other).signature;
    assert_eq!(
        r.check(Some(&foreign), None),
        Err(ReceiptError::BadSignature)
    );
}

#[test]
fn a_signed_receipt_with_a_valid_proof_is_accepted_by_the_proof() {
    let r = reply();
    let signature = r.signature();
    assert!(matches!(
        r.check(Some(&signature), Some(r.place())),
        Ok(Evidence::Log(_))
    ));
}
