//! Payment signatures checked in batches.
//!
//! Each `settle` runs on its connection's task; instead of checking its
//! signature there, the task hands the payment and the payer's key to a
//! small pool of verifier threads and waits for the answer. A verifier
//! takes whatever payments are waiting (up to the batch limit) and checks
//! their Ed25519 signatures as one batch, which costs less per signature
//! than checking them one by one (docs/BENCHMARKS.md). Batches grow with
//! load by themselves: when payments arrive one at a time, each is
//! checked alone as soon as it arrives, so nothing waits to fill a batch.
//!
//! Batch and single verification accept exactly the same signatures
//! (docs/PROTOCOL.md §4.4), so which path checked a payment never changes
//! whether it is valid.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::core::keys::VerifyingKey;
use crate::core::payment::SignedPayment;
use crate::core::rules::VerifiedPayment;

/// The answer for one payment: verified, or handed back for another key.
pub type Verified = Result<VerifiedPayment, Box<SignedPayment>>;

/// A verifier thread stopped without answering (it panicked): a bug, not
/// a property of the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the signature verifier stopped without answering")]
pub struct VerifierGone;

/// One payment waiting for its signature check.
struct Pending {
    signed: SignedPayment,
    key: Arc<VerifyingKey>,
    reply: oneshot::Sender<Verified>,
}

/// Counts for the log line when the server stops.
#[derive(Debug, Default)]
struct Stats {
    batches: AtomicU64,
    signatures: AtomicU64,
}

/// The handle the connection tasks use; dropping it stops the threads.
pub struct SignatureVerifier {
    /// None when batching is off (`--verify-batch-max 1`) or no thread
    /// could be started: each payment is then checked on its own task.
    tx: Option<mpsc::Sender<Pending>>,
    stats: Arc<Stats>,
}

impl SignatureVerifier {
    /// Starts one verifier thread per core, each checking at most
    /// `batch_max` signatures at once. With `batch_max` of 1 no thread is
    /// started and every payment is checked on its connection's task.
    pub fn start(batch_max: usize) -> SignatureVerifier {
        let stats = Arc::new(Stats::default());
        if batch_max <= 1 {
            return SignatureVerifier { tx: None, stats };
        }
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Room for every worker's next batch and the one after: the
        // connections' in-flight limits bound what can wait here anyway.
        let (tx, rx) = mpsc::channel(batch_max * workers * 2);
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..workers {
            let (rx, stats) = (rx.clone(), stats.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("micropay-verify-{i}"))
                .spawn(move || work(&rx, batch_max, &stats));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!("could not start a signature verifier thread: {e}"),
            }
        }
        let tx = (started > 0).then_some(tx);
        SignatureVerifier { tx, stats }
    }

    /// Checks `signed` against `key`, in a batch with whatever else is
    /// waiting; the same answer as [`VerifiedPayment::try_verify`].
    pub async fn try_verify(
        &self,
        signed: SignedPayment,
        key: Arc<VerifyingKey>,
    ) -> Result<Verified, VerifierGone> {
        let Some(tx) = &self.tx else {
            return Ok(VerifiedPayment::try_verify(signed, &key));
        };
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(p)) = tx.send(Pending { signed, key, reply }).await {
            // Every verifier thread is gone: check it here instead.
            return Ok(VerifiedPayment::try_verify(p.signed, &p.key));
        }
        answer.await.map_err(|_| VerifierGone)
    }
}

impl Drop for SignatureVerifier {
    fn drop(&mut self) {
        let batches = self.stats.batches.load(Ordering::Relaxed);
        let signatures = self.stats.signatures.load(Ordering::Relaxed);
        if batches > 0 {
            tracing::info!(
                batches,
                signatures,
                per_batch = signatures as f64 / batches as f64,
                "signature verifier stopped"
            );
        }
    }
}

/// One verifier thread: takes a batch, checks it, answers, until the
/// handle is dropped.
fn work(rx: &Mutex<mpsc::Receiver<Pending>>, batch_max: usize, stats: &Stats) {
    let mut batch = Vec::with_capacity(batch_max);
    loop {
        {
            // Only one thread waits on the queue at a time; the others
            // are checking their batches meanwhile, so a batch is made of
            // what arrived while they were busy.
            let mut rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            let Some(first) = rx.blocking_recv() else {
                return;
            };
            batch.push(first);
            while batch.len() < batch_max {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .signatures
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let (payments, replies): (Vec<_>, Vec<_>) = batch
            .drain(..)
            .map(|p| ((p.signed, p.key), p.reply))
            .unzip();
        for (reply, answer) in replies
            .into_iter()
            .zip(VerifiedPayment::try_verify_many(payments))
        {
            // A connection that went away no longer wants its answer.
            let _ = reply.send(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::keys::SigningKey;
    use crate::core::name::Name;
    use crate::core::payment::{Payment, PaymentId};

    fn payment(n: u64) -> Payment {
        let name = |s: &str| Name::parse(s).expect("valid name");
        Payment {
            id: PaymentId::random(),
            payer: name("alice"),
            payee: name("bob"),
            amount_minor: n + 1,
            expires_at_s: 1_700_000_120,
            memo: String::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batched_answers_match_single_ones() {
        let alice = SigningKey::ed25519_from_seed(&[1; 32]);
        let key = Arc::new(alice.verifying_key().clone());
        for batch_max in [1, 64] {
            let verifier = Arc::new(SignatureVerifier::start(batch_max));
            let tasks: Vec<_> = (0..200u64)
                .map(|n| {
                    let mut signed = payment(n).sign(&alice);
                    if n % 7 == 3 {
                        signed.signature[10] ^= 1;
                    }
                    let (verifier, key) = (verifier.clone(), key.clone());
                    tokio::spawn(async move {
                        let single = VerifiedPayment::try_verify(signed.clone(), &key).is_ok();
                        let batched = verifier.try_verify(signed, key).await;
                        (n, single, batched.map(|v| v.is_ok()))
                    })
                })
                .collect();
            for task in tasks {
                let (n, single, batched) = task.await.expect("task");
                assert_eq!(batched, Ok(single), "payment {n}, batch_max {batch_max}");
                assert_eq!(single, n % 7 != 3);
            }
        }
    }
}
