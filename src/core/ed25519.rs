//! Ed25519 verification under one acceptance rule, ZIP-215, whether a
//! signature is checked alone or in a batch.
//!
//! RFC 8032 leaves implementations free to differ on edge cases (whether
//! non-canonical point encodings are accepted, whether the verification
//! equation is multiplied by the cofactor), and implementations do differ,
//! so a signature could be valid for one checker and invalid for another.
//! In a ledger that would make validity depend on which code path looked
//! at a payment. ZIP-215 fixes every choice: `S` must be canonical
//! (`S < L`), `A` and `R` may be any encoding that decodes to a curve point
//! (non-canonical ones included), and the check is the cofactored equation
//! `[8][S]B = [8]R + [8][k]A`. With the cofactored equation, batch
//! verification accepts exactly the batches whose every signature single
//! verification accepts (but for a chance of about 2^-128 per batch), which
//! is what lets the server verify in batches. Every signature that ring
//! (RFC 8032 with canonical `R`, cofactorless) accepts is accepted here, so
//! payments settled before this rule still verify. See docs/PROTOCOL.md §4.4.

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_zebra::{batch, Signature, VerificationKey, VerificationKeyBytes};
use ring::rand::{SecureRandom as _, SystemRandom};

use super::keys::BadSignature;

/// Verifies one signature under ZIP-215.
pub fn verify(key: &[u8; 32], message: &[u8], signature: &[u8]) -> Result<(), BadSignature> {
    let signature = parse_signature(signature)?;
    let key = VerificationKey::try_from(*key).map_err(|_| BadSignature)?;
    key.verify(&signature, message).map_err(|_| BadSignature)
}

/// Verifies signatures under ZIP-215, as a batch where that is cheaper,
/// and answers for each in order exactly what [`verify`] would. When the
/// batch equation fails, each signature is checked on its own to find the
/// bad ones, so one bad signature costs its batch a second pass but never
/// changes another's answer.
pub fn verify_batch(items: &[(&[u8; 32], &[u8], &[u8])]) -> Vec<Result<(), BadSignature>> {
    // A batch of one costs more than a single check (the random
    // coefficient and the multiscalar set-up), so small inputs go alone.
    if items.len() < 2 {
        return items.iter().map(|(k, m, s)| verify(k, m, s)).collect();
    }
    let mut answers = vec![Ok(()); items.len()];
    let mut verifier = batch::Verifier::new();
    let mut queued = Vec::with_capacity(items.len());
    for (i, (key, message, signature)) in items.iter().enumerate() {
        // A signature of the wrong length cannot go into a batch; it is
        // refused here exactly as `verify` refuses it.
        match parse_signature(signature) {
            Ok(sig) => {
                let item = batch::Item::from((VerificationKeyBytes::from(**key), sig, message));
                verifier.queue(item.clone());
                queued.push((i, item));
            }
            Err(bad) => answers[i] = Err(bad),
        }
    }
    if verifier.verify(SystemRng).is_err() {
        for (i, item) in queued {
            answers[i] = item.verify_single().map_err(|_| BadSignature);
        }
    }
    answers
}

/// Whether a 32-byte key is fit to register: the canonical encoding of a
/// curve point outside the small-order subgroup. ZIP-215 verification
/// accepts other keys (so a stored one never stops verifying), but a
/// small-order key lets anyone forge signatures that verify under it for
/// many messages, and a non-canonical encoding is a second name for a key
/// with a canonical one; neither has an honest use.
pub fn is_strong_key(key: &[u8; 32]) -> bool {
    let compressed = CompressedEdwardsY(*key);
    match compressed.decompress() {
        Some(point) => point.compress() == compressed && !point.is_small_order(),
        None => false,
    }
}

fn parse_signature(signature: &[u8]) -> Result<Signature, BadSignature> {
    let bytes: &[u8; 64] = signature.try_into().map_err(|_| BadSignature)?;
    Ok(Signature::from_bytes(bytes))
}

/// The operating system's random number generator (through ring), in the
/// shape the batch verifier asks for. Batch verification is sound only if
/// a signer cannot predict the random coefficients, so they come from the
/// system generator and never from a seeded one.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemRng;

impl rand_core::TryRng for SystemRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut bytes = [0u8; 4];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut bytes = [0u8; 8];
        self.try_fill_bytes(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        // As with ECDSA signing: if the system generator fails, nothing
        // else can be trusted either.
        if SystemRandom::new().fill(dst).is_err() {
            panic!("the system random number generator failed");
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for SystemRng {}

#[cfg(test)]
mod tests;
