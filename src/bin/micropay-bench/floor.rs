//! The crypto floor: what Ed25519 alone allows on this machine, signing
//! with ring and verifying one signature at a time under ZIP-215 (what
//! `VerifyingKey::verify` does). The server verifies in batches under
//! load, which costs less per signature (`micropay-bench verify`), so the
//! floor is a conservative one.

use std::time::{Duration, Instant};

use micropay::core::keys::SigningKey;
use serde::Serialize;

/// The crypto floor measured on this machine.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CryptoFloor {
    /// Ed25519 verifications (single, ZIP-215) per second on one core.
    pub verify_per_s_core: f64,
    /// ring's Ed25519 verifications per second on one core: V, the unit
    /// issue 13 states its targets in (ring verified payments before
    /// ZIP-215 and batching).
    pub ring_verify_per_s_core: f64,
    /// ring's Ed25519 signatures per second on one core.
    pub sign_per_s_core: f64,
    /// Cores available.
    pub cores: usize,
    /// Settlements per second if each cost exactly one verify (the
    /// payment's signature), on all cores: with the log, a receipt carries
    /// a proof instead of a signature, and the one checkpoint signature per
    /// commit batch (and each client's one check of it) is shared by the
    /// batch, so the floor leaves it out.
    pub settle_floor_per_s: f64,
    /// End-to-end payments per second if each cost what the p2p path
    /// must spend on crypto per payment: the payer signs, the payee
    /// verifies, the server verifies (checkpoints again shared by a batch).
    pub p2p_floor_per_s: f64,
}

/// Measures the Ed25519 sign and single-verify rates on one core.
pub fn measure_crypto_floor(budget_ms: u64) -> CryptoFloor {
    let key = SigningKey::ed25519_from_seed(&[42; 32]);
    let public = key.verifying_key().clone();
    let message = [7u8; 80];
    let half = Duration::from_millis(budget_ms.max(2) / 2);
    let start = Instant::now();
    let mut signs = 0u64;
    let mut sig = Vec::new();
    while start.elapsed() < half {
        sig = key.sign(&message);
        signs += 1;
    }
    let sign_per_s_core = signs as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut verifies = 0u64;
    while start.elapsed() < half {
        let ok = public.verify(&message, &sig).is_ok();
        assert!(ok, "a fresh signature must verify");
        verifies += 1;
    }
    let verify_per_s_core = verifies as f64 / start.elapsed().as_secs_f64();
    let ring_verify_per_s_core = ring_verify_rate(public.spki_der(), &message, &sig, half);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let settle_cost_s = 1.0 / verify_per_s_core;
    let p2p_cost_s = 2.0 / verify_per_s_core + 1.0 / sign_per_s_core;
    CryptoFloor {
        verify_per_s_core,
        ring_verify_per_s_core,
        sign_per_s_core,
        cores,
        settle_floor_per_s: cores as f64 / settle_cost_s,
        p2p_floor_per_s: cores as f64 / p2p_cost_s,
    }
}

/// ring's single Ed25519 verifications per second on one core, for `half`.
fn ring_verify_rate(spki_der: &[u8], message: &[u8], sig: &[u8], half: Duration) -> f64 {
    // An Ed25519 SubjectPublicKeyInfo ends with the 32-byte key.
    let raw = &spki_der[spki_der.len().saturating_sub(32)..];
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, raw);
    let start = Instant::now();
    let mut verifies = 0u64;
    while start.elapsed() < half {
        let ok = key.verify(message, sig).is_ok();
        assert!(ok, "ring verifies a fresh signature");
        verifies += 1;
    }
    verifies as f64 / start.elapsed().as_secs_f64()
}
