//! Payments and receipts: their fields, canonical bytes, signing and
//! verification. Pure data and ring; no I/O.
//!
//! Nobody signs JSON. A payment is signed over its canonical bytes, a
//! deterministic encoding that starts with a domain-separation tag and then
//! lists every field in a fixed order with explicit lengths, so that no two
//! different payments share a byte string and no payment signature can be
//! replayed as a receipt or the other way round. `docs/PROTOCOL.md` gives
//! the layout and a test vector that the tests below check.

use crate::core::keys::{BadSignature, SigningKey, VerifyingKey, SIGNATURE_BYTES_MAX};
use crate::core::limits::{MEMO_BYTES_MAX, PAYMENT_LIFETIME_MAX_S};
use crate::core::name::Name;

/// Domain-separation tag at the start of a payment's canonical bytes.
pub const PAYMENT_TAG: &[u8] = b"micropay/payment/v1";
/// Domain-separation tag at the start of a receipt's canonical bytes.
pub const RECEIPT_TAG: &[u8] = b"micropay/receipt/v1";

/// A payment id: 128 random bits chosen by the payer, the idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PaymentId(pub [u8; 16]);

impl PaymentId {
    /// A fresh random id from the system RNG.
    pub fn random() -> PaymentId {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 16];
        if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
            panic!("the system random number generator failed");
        }
        PaymentId(bytes)
    }

    /// Parses 32 lowercase or uppercase hex digits.
    /// Only lowercase is accepted: every id the protocol prints is
    /// lowercase, so one spelling per id keeps comparisons exact.
    pub fn from_hex(s: &str) -> Option<PaymentId> {
        if !is_lower_hex(s) {
            return None;
        }
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(s, &mut bytes).ok()?;
        Some(PaymentId(bytes))
    }

    /// The id as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Whether `s` is made of lowercase hex digits only (the one spelling of
/// hex on the wire: ids, signatures, hashes).
pub fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl std::fmt::Display for PaymentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Why a payment's fields are not acceptable, before any signature check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// Amount zero.
    #[error("the amount must be at least 1")]
    ZeroAmount,
    /// Memo over [`MEMO_BYTES_MAX`].
    #[error("the memo has {0} bytes, the limit is {MEMO_BYTES_MAX}")]
    MemoTooLong(usize),
    /// Payer and payee are the same person.
    #[error("payer and payee must differ")]
    SelfPayment,
    /// The payment is already past its expiry.
    #[error("the payment expired at {expires_at_s}, it is now {now_s}")]
    Expired {
        /// When the payment expired.
        expires_at_s: u64,
        /// The time of the check.
        now_s: u64,
    },
    /// The expiry is further ahead than [`PAYMENT_LIFETIME_MAX_S`].
    #[error("the expiry is more than {PAYMENT_LIFETIME_MAX_S} s ahead")]
    ExpiryTooFar,
    /// A signature longer than any supported algorithm makes.
    #[error("the signature is longer than {SIGNATURE_BYTES_MAX} bytes")]
    SignatureTooLong,
}

/// The fields of a payment, before or without its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// Idempotency key.
    pub id: PaymentId,
    /// Who pays; must be the signer.
    pub payer: Name,
    /// Who is paid.
    pub payee: Name,
    /// Amount in minor units, at least 1.
    pub amount_minor: u64,
    /// Unix seconds after which the payment is refused.
    pub expires_at_s: u64,
    /// Optional note, at most [`MEMO_BYTES_MAX`] bytes of UTF-8.
    pub memo: String,
}

impl Payment {
    /// Checks what can be checked without a clock or a ledger.
    pub fn check_fields(&self) -> Result<(), PaymentError> {
        if self.amount_minor == 0 {
            return Err(PaymentError::ZeroAmount);
        }
        if self.memo.len() > MEMO_BYTES_MAX {
            return Err(PaymentError::MemoTooLong(self.memo.len()));
        }
        if self.payer == self.payee {
            return Err(PaymentError::SelfPayment);
        }
        Ok(())
    }

    /// Checks the expiry against `now_s`: not past, and not too far ahead.
    pub fn check_time(&self, now_s: u64) -> Result<(), PaymentError> {
        if now_s > self.expires_at_s {
            return Err(PaymentError::Expired {
                expires_at_s: self.expires_at_s,
                now_s,
            });
        }
        if self.expires_at_s - now_s > PAYMENT_LIFETIME_MAX_S {
            return Err(PaymentError::ExpiryTooFar);
        }
        Ok(())
    }

    /// The canonical bytes a payer signs (layout in `docs/PROTOCOL.md`).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(1 + PAYMENT_TAG.len() + 16 + 2 + 64 + 16 + 2 + self.memo.len());
        put_short(&mut out, PAYMENT_TAG);
        out.extend_from_slice(&self.id.0);
        put_short(&mut out, self.payer.as_str().as_bytes());
        put_short(&mut out, self.payee.as_str().as_bytes());
        out.extend_from_slice(&self.amount_minor.to_be_bytes());
        out.extend_from_slice(&self.expires_at_s.to_be_bytes());
        let memo = self.memo.as_bytes();
        // check_fields bounds the memo far below u16::MAX; a longer memo
        // would be a bug, not input.
        assert!(memo.len() <= usize::from(u16::MAX));
        out.extend_from_slice(&(memo.len() as u16).to_be_bytes());
        out.extend_from_slice(memo);
        out
    }

    /// Signs the payment with the payer's key.
    pub fn sign(self, key: &SigningKey) -> SignedPayment {
        let signature = key.sign(&self.canonical_bytes());
        SignedPayment {
            payment: self,
            signature,
        }
    }
}

/// A payment with the payer's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPayment {
    /// The signed fields.
    pub payment: Payment,
    /// The payer's signature over [`Payment::canonical_bytes`].
    pub signature: Vec<u8>,
}

impl SignedPayment {
    /// Verifies the signature with the payer's key.
    pub fn verify(&self, payer_key: &VerifyingKey) -> Result<(), BadSignature> {
        if self.signature.len() > SIGNATURE_BYTES_MAX {
            return Err(BadSignature);
        }
        payer_key.verify(&self.payment.canonical_bytes(), &self.signature)
    }

    /// SHA-256 of the canonical bytes: two submissions with the same id are
    /// "the same payment" exactly when these agree.
    pub fn content_hash(&self) -> [u8; 32] {
        content_hash(&self.payment.canonical_bytes())
    }
}

/// SHA-256 of a payment's canonical bytes.
pub fn content_hash(canonical: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// What the server attests about a settled payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The settled payment's id.
    pub payment_id: PaymentId,
    /// Who paid.
    pub payer: Name,
    /// Who was paid.
    pub payee: Name,
    /// Amount moved, minor units.
    pub amount_minor: u64,
    /// Position in the ledger, starting at 1, without gaps.
    pub seq: u64,
    /// When the settlement was decided, unix milliseconds.
    pub settled_at_ms: u64,
    /// SHA-256 of the payment's canonical bytes, binding the receipt to
    /// the exact payment (memo and expiry included).
    pub payment_hash: [u8; 32],
}

impl Receipt {
    /// The canonical bytes the server signs (layout in `docs/PROTOCOL.md`).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + RECEIPT_TAG.len() + 16 + 66 + 24 + 32);
        put_short(&mut out, RECEIPT_TAG);
        out.extend_from_slice(&self.payment_id.0);
        put_short(&mut out, self.payer.as_str().as_bytes());
        put_short(&mut out, self.payee.as_str().as_bytes());
        out.extend_from_slice(&self.amount_minor.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.settled_at_ms.to_be_bytes());
        out.extend_from_slice(&self.payment_hash);
        out
    }

    /// Whether this receipt is for exactly `payment`: same id, parties,
    /// amount and canonical bytes (memo and expiry included).
    pub fn matches(&self, payment: &SignedPayment) -> bool {
        let p = &payment.payment;
        self.payment_id == p.id
            && self.payer == p.payer
            && self.payee == p.payee
            && self.amount_minor == p.amount_minor
            && self.payment_hash == payment.content_hash()
    }

    /// Signs the receipt with the server's key.
    pub fn sign(self, server_key: &SigningKey) -> SignedReceipt {
        let signature = server_key.sign(&self.canonical_bytes());
        SignedReceipt {
            receipt: self,
            signature,
        }
    }
}

/// A receipt with the server's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    /// The attested fields.
    pub receipt: Receipt,
    /// The server's signature over [`Receipt::canonical_bytes`].
    pub signature: Vec<u8>,
}

impl SignedReceipt {
    /// Verifies the server's signature.
    pub fn verify(&self, server_key: &VerifyingKey) -> Result<(), BadSignature> {
        server_key.verify(&self.receipt.canonical_bytes(), &self.signature)
    }

    /// Whether this receipt is for exactly `payment` ([`Receipt::matches`]).
    pub fn matches(&self, payment: &SignedPayment) -> bool {
        self.receipt.matches(payment)
    }
}

/// Appends a field of at most 255 bytes with a one-byte length prefix.
fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    // Names and tags are at most 32 bytes by construction.
    assert!(bytes.len() <= usize::from(u8::MAX));
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).expect("test names are valid")
    }

    /// The test vector of `docs/PROTOCOL.md`.
    pub(crate) fn vector_payment() -> Payment {
        Payment {
            id: PaymentId([
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff,
            ]),
            payer: name("alice"),
            payee: name("bob"),
            amount_minor: 250,
            expires_at_s: 1_800_000_000,
            memo: "lunch".to_owned(),
        }
    }

    pub(crate) fn vector_seed() -> [u8; 32] {
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = i as u8;
        }
        seed
    }

    #[test]
    fn test_vector_matches_protocol_md() {
        let key = SigningKey::ed25519_from_seed(&vector_seed());
        let payment = vector_payment();
        assert_eq!(
            hex::encode(payment.canonical_bytes()),
            VECTOR_CANONICAL_HEX,
            "canonical bytes changed: docs/PROTOCOL.md must change with them"
        );
        let signed = payment.sign(&key);
        assert_eq!(hex::encode(&signed.signature), VECTOR_SIGNATURE_HEX);
        assert_eq!(
            hex::encode(&key.verifying_key().spki_der()[12..]),
            VECTOR_PUBLIC_KEY_HEX
        );
        assert!(signed.verify(key.verifying_key()).is_ok());
    }

    /// The receipt test vector of docs/PROTOCOL.md §5: the §4.3 payment
    /// settled as seq 1 at 1 799 999 000 123 ms, signed by a server whose
    /// Ed25519 seed is 32 bytes of 0x42.
    fn vector_receipt() -> Receipt {
        let payment = vector_payment();
        Receipt {
            payment_id: payment.id,
            payer: payment.payer.clone(),
            payee: payment.payee.clone(),
            amount_minor: payment.amount_minor,
            seq: 1,
            settled_at_ms: 1_799_999_000_123,
            payment_hash: content_hash(&payment.canonical_bytes()),
        }
    }

    #[test]
    fn receipt_test_vector_matches_protocol_md() {
        let server = SigningKey::ed25519_from_seed(&[0x42; 32]);
        let receipt = vector_receipt();
        let got = (
            hex::encode(&server.verifying_key().spki_der()[12..]),
            hex::encode(receipt.payment_hash),
            hex::encode(receipt.canonical_bytes()),
        );
        let signed = receipt.sign(&server);
        assert_eq!(got.0, RECEIPT_VECTOR_SERVER_KEY_HEX);
        assert_eq!(got.1, RECEIPT_VECTOR_PAYMENT_HASH_HEX);
        assert_eq!(got.2, RECEIPT_VECTOR_CANONICAL_HEX);
        assert_eq!(hex::encode(&signed.signature), RECEIPT_VECTOR_SIGNATURE_HEX);
        assert!(signed.verify(server.verifying_key()).is_ok());
    }

    const RECEIPT_VECTOR_SERVER_KEY_HEX: &str =
        "2152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12";
    const RECEIPT_VECTOR_PAYMENT_HASH_HEX: &str =
        "53e330fd3463e4cbf3aa7e93831566472cda1dfc7d846cd030211e8cf45a58ae";
    const RECEIPT_VECTOR_CANONICAL_HEX: &str = "136d6963726f7061792f726563656970742f7631\
00112233445566778899aabbccddeeff05616c69636503626f6200000000000000fa0000000000000001\
000001a3184d0e3b53e330fd3463e4cbf3aa7e93831566472cda1dfc7d846cd030211e8cf45a58ae";
    const RECEIPT_VECTOR_SIGNATURE_HEX: &str =
        "74e91b66b832bc5484cb311bf2264401de298c8fb4821749f400f8a85ef9c787\
18159dddfddda45713e92a3d5d3040e79678911efa782ffe1b339df2962d6602";

    pub(crate) const VECTOR_CANONICAL_HEX: &str = "136d6963726f7061792f7061796d656e742f7631\
00112233445566778899aabbccddeeff05616c69636503626f6200000000000000fa000000006b49d20000056c756e6368";
    pub(crate) const VECTOR_SIGNATURE_HEX: &str = "6d7285abe2f8feb493443f4aac7e5b29c8e8fb6c8e5e7686bc93790a1cdc4b80507c59e6bb55c226db69c8bdb445dd3aecf622d9be4b93ea09428350d5eec508";
    pub(crate) const VECTOR_PUBLIC_KEY_HEX: &str =
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";

    #[test]
    fn every_field_is_signed() {
        let key = SigningKey::ed25519_from_seed(&[9; 32]);
        let signed = vector_payment().sign(&key);
        let mut variants = Vec::new();
        let mut p = signed.clone();
        p.payment.id.0[15] ^= 1;
        variants.push(p);
        let mut p = signed.clone();
        p.payment.payer = name("alicf");
        variants.push(p);
        let mut p = signed.clone();
        p.payment.payee = name("bob2");
        variants.push(p);
        let mut p = signed.clone();
        p.payment.amount_minor += 1;
        variants.push(p);
        let mut p = signed.clone();
        p.payment.expires_at_s += 1;
        variants.push(p);
        let mut p = signed.clone();
        p.payment.memo.push('!');
        variants.push(p);
        for changed in variants {
            assert!(changed.verify(key.verifying_key()).is_err(), "{changed:?}");
        }
        assert!(signed.verify(key.verifying_key()).is_ok());
    }

    #[test]
    fn field_checks() {
        let mut p = vector_payment();
        assert!(p.check_fields().is_ok());
        p.amount_minor = 0;
        assert_eq!(p.check_fields(), Err(PaymentError::ZeroAmount));
        let mut p = vector_payment();
        p.memo = "x".repeat(MEMO_BYTES_MAX + 1);
        assert!(matches!(
            p.check_fields(),
            Err(PaymentError::MemoTooLong(_))
        ));
        let mut p = vector_payment();
        p.payee = p.payer.clone();
        assert_eq!(p.check_fields(), Err(PaymentError::SelfPayment));
        let p = vector_payment();
        assert!(p.check_time(p.expires_at_s).is_ok());
        assert!(matches!(
            p.check_time(p.expires_at_s + 1),
            Err(PaymentError::Expired { .. })
        ));
        assert_eq!(p.check_time(0), Err(PaymentError::ExpiryTooFar));
    }

    #[test]
    fn receipts_verify_and_bind_to_the_payment() {
        let server = SigningKey::ed25519_from_seed(&[3; 32]);
        let payer = SigningKey::ed25519_from_seed(&[4; 32]);
        let signed = vector_payment().sign(&payer);
        let receipt = Receipt {
            payment_id: signed.payment.id,
            payer: signed.payment.payer.clone(),
            payee: signed.payment.payee.clone(),
            amount_minor: signed.payment.amount_minor,
            seq: 1,
            settled_at_ms: 5,
            payment_hash: signed.content_hash(),
        }
        .sign(&server);
        assert!(receipt.verify(server.verifying_key()).is_ok());
        assert!(receipt.matches(&signed));
        assert!(receipt.verify(payer.verifying_key()).is_err());
        let mut forged = receipt.clone();
        forged.receipt.amount_minor += 1;
        assert!(forged.verify(server.verifying_key()).is_err());
        // A payment signature is never a valid receipt signature: the tags differ.
        assert_ne!(
            &signed.payment.canonical_bytes()[..20],
            &receipt.receipt.canonical_bytes()[..20]
        );
    }
}
