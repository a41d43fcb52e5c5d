//! Ed25519 verification paths on one core: ring's single verification
//! against ed25519-zebra's (ZIP-215) single and batch verification, the
//! figures behind the batch-verification choice in docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use ed25519_zebra::batch;
use ed25519_zebra::{Signature, VerificationKey, VerificationKeyBytes};
use micropay::core::ed25519::SystemRng;
use micropay::core::keys::SigningKey;
use serde::Serialize;

/// The batch sizes measured.
pub const BATCH_SIZES: [usize; 5] = [1, 8, 32, 64, 256];

/// Verifications per second on one core by each path.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct VerifyRates {
    /// ring, one signature at a time.
    pub ring_single_per_s: f64,
    /// ed25519-zebra, one signature at a time.
    pub zebra_single_per_s: f64,
    /// ed25519-zebra's batch verifier: (batch size, signatures per second).
    pub zebra_batch_per_s: Vec<(usize, f64)>,
}

/// One signed message: raw key, signature, message.
struct Sample {
    key: [u8; 32],
    signature: [u8; 64],
    message: Vec<u8>,
}

/// Distinct keys and messages, as a server sees from distinct payers.
fn samples(n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let key = SigningKey::ed25519_from_seed(&seed);
            let message =
                format!("payment {i} of the measurement, about eighty bytes long....").into_bytes();
            let sig = key.sign(&message);
            Sample {
                key: key.verifying_key().spki_der()[12..]
                    .try_into()
                    .expect("32-byte Ed25519 key"),
                signature: sig.try_into().expect("64-byte Ed25519 signature"),
                message,
            }
        })
        .collect()
}

/// This thread's time on a CPU so far, from /proc/thread-self/schedstat
/// (its first field, in ns). The machine is shared with other builds, so
/// wall-clock rates would measure the neighbours as much as the code.
fn thread_cpu() -> Duration {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// Runs `round` (which verifies `per_round` signatures) for about
/// `budget` of this thread's CPU time; returns signatures per CPU second.
fn rate(budget: Duration, per_round: usize, mut round: impl FnMut()) -> f64 {
    round(); // warm caches and lazily built tables
    let start = thread_cpu();
    let wall = Instant::now();
    let mut rounds = 0u64;
    // Bounded in wall time too, in case the CPU time cannot be read.
    // Reading the clock costs a few µs, so it is read once per chunk of
    // at least 256 signatures, never once per signature.
    let chunk = 256usize.div_ceil(per_round) as u64;
    while thread_cpu() - start < budget && wall.elapsed() < budget * 20 {
        for _ in 0..chunk {
            round();
        }
        rounds += chunk;
    }
    let spent = match thread_cpu() - start {
        d if d.is_zero() => wall.elapsed(),
        d => d,
    };
    (rounds * per_round as u64) as f64 / spent.as_secs_f64()
}

/// Measures each path for about `budget_ms` per figure.
pub fn measure_verify_paths(budget_ms: u64) -> VerifyRates {
    let budget = Duration::from_millis(budget_ms);
    let all = samples(256);
    let ring_keys: Vec<_> = all
        .iter()
        .map(|s| ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, s.key))
        .collect();
    let mut i = 0;
    let ring_single_per_s = rate(budget, 1, || {
        let s = &all[i % all.len()];
        let ok = ring_keys[i % all.len()]
            .verify(&s.message, &s.signature)
            .is_ok();
        assert!(ok, "ring must accept a fresh signature");
        i += 1;
    });
    let zebra_single_per_s = rate(budget, 1, || {
        let s = &all[i % all.len()];
        // The key is parsed each time, as the server would for a key it
        // holds only as bytes.
        let key = VerificationKey::try_from(s.key).expect("valid key");
        let ok = key
            .verify(&Signature::from_bytes(&s.signature), &s.message)
            .is_ok();
        assert!(ok, "zebra must accept a fresh signature");
        i += 1;
    });
    let zebra_batch_per_s = BATCH_SIZES
        .iter()
        .map(|&n| {
            let per_s = rate(budget, n, || {
                let mut verifier = batch::Verifier::new();
                for s in &all[..n] {
                    let item = (
                        VerificationKeyBytes::from(s.key),
                        Signature::from_bytes(&s.signature),
                        &s.message,
                    );
                    verifier.queue(item);
                }
                let ok = verifier.verify(SystemRng).is_ok();
                assert!(ok, "a batch of fresh signatures must verify");
            });
            (n, per_s)
        })
        .collect();
    VerifyRates {
        ring_single_per_s,
        zebra_single_per_s,
        zebra_batch_per_s,
    }
}
