//! Signing and verifying keys.
//!
//! The key pair that authenticates a person's TLS connections also signs
//! their payments, and the server's TLS key signs receipts. Ed25519 is the
//! default; ECDSA P-256 is accepted too. Keys arrive as PKCS#8 (private) or
//! SubjectPublicKeyInfo (public) DER, which is what certificates and PEM
//! files carry.
//!
//! ring signs with both algorithms and verifies P-256. Ed25519 signatures
//! are verified under ZIP-215's rules ([`crate::core::ed25519`]), alone or
//! in batches ([`verify_batch`]), so that whether a signature is valid
//! never depends on which path checked it.

use super::ed25519;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
use x509_parser::oid_registry;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Largest signature any supported algorithm produces (an ASN.1 ECDSA
/// P-256 signature is at most 72 bytes; Ed25519 is 64).
pub const SIGNATURE_BYTES_MAX: usize = 72;

/// The signature algorithms micropay accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// Ed25519 (RFC 8032), the default.
    Ed25519,
    /// ECDSA over P-256 with SHA-256, ASN.1 DER signatures.
    EcdsaP256,
}

impl KeyAlgorithm {
    /// The stable lowercase name used on the command line and in docs.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::Ed25519 => "ed25519",
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
        }
    }
}

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The public key is not valid SubjectPublicKeyInfo DER.
    #[error("the public key is not valid SubjectPublicKeyInfo DER")]
    MalformedPublicKey,
    /// The private key is not PKCS#8 for a supported algorithm.
    #[error("the private key is not a PKCS#8 Ed25519 or ECDSA P-256 key")]
    MalformedPrivateKey,
    /// A key of an algorithm micropay does not accept.
    #[error("unsupported key algorithm (use Ed25519 or ECDSA P-256)")]
    UnsupportedAlgorithm,
    /// An Ed25519 key that is a non-canonical encoding or a point of small
    /// order: refused for a certificate's identity (see
    /// [`VerifyingKey::check_strong`]).
    #[error("the Ed25519 key is a small-order point or a non-canonical encoding")]
    WeakKey,
}

/// A signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the signature does not verify")]
pub struct BadSignature;

/// A public key able to verify signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    algorithm: KeyAlgorithm,
    /// The raw key as ring wants it: 32 bytes for Ed25519, an uncompressed
    /// point for P-256.
    raw: Vec<u8>,
    /// The whole SubjectPublicKeyInfo, which is what the ledger stores and
    /// what a fingerprint hashes.
    spki_der: Vec<u8>,
}

impl VerifyingKey {
    /// Parses a SubjectPublicKeyInfo (as found in a certificate).
    pub fn from_spki_der(der: &[u8]) -> Result<VerifyingKey, KeyError> {
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(der).map_err(|_| KeyError::MalformedPublicKey)?;
        if !rest.is_empty() {
            return Err(KeyError::MalformedPublicKey);
        }
        let oid = &spki.algorithm.algorithm;
        let algorithm = if *oid == oid_registry::OID_SIG_ED25519 {
            KeyAlgorithm::Ed25519
        } else if *oid == oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            if curve != Some(oid_registry::OID_EC_P256) {
                return Err(KeyError::UnsupportedAlgorithm);
            }
            KeyAlgorithm::EcdsaP256
        } else {
            return Err(KeyError::UnsupportedAlgorithm);
        };
        let raw = spki.subject_public_key.data.to_vec();
        let expected_len = match algorithm {
            KeyAlgorithm::Ed25519 => 32,
            KeyAlgorithm::EcdsaP256 => 65,
        };
        if raw.len() != expected_len {
            return Err(KeyError::MalformedPublicKey);
        }
        Ok(VerifyingKey {
            algorithm,
            raw,
            spki_der: der.to_vec(),
        })
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// The SubjectPublicKeyInfo DER this key was read from.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// SHA-256 of the SubjectPublicKeyInfo, lowercase hex: the key's
    /// fingerprint as shown to people.
    pub fn fingerprint(&self) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &self.spki_der))
    }

    /// Verifies `signature` over `message`: Ed25519 under ZIP-215, P-256
    /// with ring.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), BadSignature> {
        match self.algorithm {
            KeyAlgorithm::Ed25519 => ed25519::verify(self.ed25519_raw()?, message, signature),
            KeyAlgorithm::EcdsaP256 => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.raw)
                    .verify(message, signature)
                    .map_err(|_| BadSignature)
            }
        }
    }

    /// Refuses an Ed25519 key that is not the canonical encoding of a
    /// point outside the small-order subgroup. Verification accepts such
    /// keys (ZIP-215 does, so that a stored key never stops verifying),
    /// but a certificate's identity must not carry one: a small-order key
    /// lets anyone forge signatures that verify under it. P-256 keys pass
    /// (ring checks that the point is on the curve when verifying).
    pub fn check_strong(&self) -> Result<(), KeyError> {
        match self.algorithm {
            KeyAlgorithm::Ed25519 => match self.ed25519_raw() {
                Ok(raw) if ed25519::is_strong_key(raw) => Ok(()),
                _ => Err(KeyError::WeakKey),
            },
            KeyAlgorithm::EcdsaP256 => Ok(()),
        }
    }

    /// The 32 raw bytes of an Ed25519 key (`from_spki_der` checked the
    /// length, so the error is never seen).
    fn ed25519_raw(&self) -> Result<&[u8; 32], BadSignature> {
        self.raw.as_slice().try_into().map_err(|_| BadSignature)
    }
}

/// One signature to check in [`verify_batch`]: the key, the message and
/// the signature.
pub type BatchItem<'a> = (&'a VerifyingKey, &'a [u8], &'a [u8]);

/// Verifies many signatures and answers for each, in order, exactly what
/// [`VerifyingKey::verify`] would. Ed25519 signatures are checked together
/// in one batch (and each on its own only if the batch fails, to find the
/// bad ones); P-256 signatures one at a time, as ECDSA has no batch check.
pub fn verify_batch(items: &[BatchItem<'_>]) -> Vec<Result<(), BadSignature>> {
    let mut answers = vec![Ok(()); items.len()];
    let mut ed_index = Vec::with_capacity(items.len());
    let mut ed_items = Vec::with_capacity(items.len());
    for (i, (key, message, signature)) in items.iter().enumerate() {
        match (key.algorithm, key.ed25519_raw()) {
            (KeyAlgorithm::Ed25519, Ok(raw)) => {
                ed_index.push(i);
                ed_items.push((raw, *message, *signature));
            }
            _ => answers[i] = key.verify(message, signature),
        }
    }
    for (i, answer) in ed_index.into_iter().zip(ed25519::verify_batch(&ed_items)) {
        answers[i] = answer;
    }
    answers
}

enum SigningInner {
    Ed25519(Ed25519KeyPair),
    EcdsaP256(EcdsaKeyPair, SystemRandom),
}

/// A private key able to sign payments or receipts.
pub struct SigningKey {
    inner: SigningInner,
    verifying: VerifyingKey,
}

impl std::fmt::Debug for SigningKey {
    // Never print private material, not even by accident in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.verifying.algorithm)
            .field("fingerprint", &self.verifying.fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 DER private key (Ed25519 or ECDSA P-256).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, KeyError> {
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let verifying = VerifyingKey {
                algorithm: KeyAlgorithm::Ed25519,
                raw: pair.public_key().as_ref().to_vec(),
                spki_der: ed25519_spki(pair.public_key().as_ref()),
            };
            return Ok(SigningKey {
                inner: SigningInner::Ed25519(pair),
                verifying,
            });
        }
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, der, &rng)
            .map_err(|_| KeyError::MalformedPrivateKey)?;
        let raw = pair.public_key().as_ref().to_vec();
        let verifying = VerifyingKey {
            algorithm: KeyAlgorithm::EcdsaP256,
            spki_der: p256_spki(&raw),
            raw,
        };
        Ok(SigningKey {
            inner: SigningInner::EcdsaP256(pair, rng),
            verifying,
        })
    }

    /// An Ed25519 key from a 32-byte seed; for test vectors and tests.
    pub fn ed25519_from_seed(seed: &[u8; 32]) -> SigningKey {
        // A 32-byte seed is always a valid Ed25519 private key.
        let pair = match Ed25519KeyPair::from_seed_unchecked(seed) {
            Ok(pair) => pair,
            Err(_) => unreachable!("every 32-byte seed is a valid Ed25519 key"),
        };
        let verifying = VerifyingKey {
            algorithm: KeyAlgorithm::Ed25519,
            raw: pair.public_key().as_ref().to_vec(),
            spki_der: ed25519_spki(pair.public_key().as_ref()),
        };
        SigningKey {
            inner: SigningInner::Ed25519(pair),
            verifying,
        }
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.inner {
            SigningInner::Ed25519(pair) => pair.sign(message).as_ref().to_vec(),
            SigningInner::EcdsaP256(pair, rng) => match pair.sign(rng, message) {
                Ok(sig) => sig.as_ref().to_vec(),
                // ring fails here only if the system RNG fails, after
                // which nothing else can be trusted either.
                Err(_) => panic!("the system random number generator failed"),
            },
        }
    }

    /// The matching public key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }
}

/// The DER SubjectPublicKeyInfo of a raw Ed25519 key: a fixed 12-byte
/// prefix (RFC 8410) followed by the 32 key bytes.
fn ed25519_spki(raw: &[u8]) -> Vec<u8> {
    const PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(raw);
    der
}

/// The DER SubjectPublicKeyInfo of an uncompressed P-256 point: a fixed
/// 26-byte prefix (RFC 5480) followed by the 65 point bytes.
fn p256_spki(raw: &[u8]) -> Vec<u8> {
    const PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let mut der = PREFIX.to_vec();
    der.extend_from_slice(raw);
    der
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_sign_verify_and_spki_round_trip() {
        let key = SigningKey::ed25519_from_seed(&[7; 32]);
        let sig = key.sign(b"hello");
        let public = VerifyingKey::from_spki_der(key.verifying_key().spki_der())
            .expect("our own SPKI parses");
        assert_eq!(&public, key.verifying_key());
        assert!(public.verify(b"hello", &sig).is_ok());
        assert_eq!(public.verify(b"hellO", &sig), Err(BadSignature));
        assert_eq!(public.fingerprint().len(), 64);
    }

    #[test]
    fn p256_from_generated_pkcs8() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("keygen");
        let key = SigningKey::from_pkcs8_der(pkcs8.as_ref()).expect("parse");
        assert_eq!(key.verifying_key().algorithm(), KeyAlgorithm::EcdsaP256);
        let public =
            VerifyingKey::from_spki_der(key.verifying_key().spki_der()).expect("SPKI parses");
        let sig = key.sign(b"m");
        assert!(sig.len() <= SIGNATURE_BYTES_MAX);
        assert!(public.verify(b"m", &sig).is_ok());
    }

    #[test]
    fn garbage_keys_are_errors() {
        assert!(VerifyingKey::from_spki_der(b"nonsense").is_err());
        assert!(SigningKey::from_pkcs8_der(b"nonsense").is_err());
    }
}
