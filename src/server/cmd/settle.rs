//! `settle`: a payee forwards (or a payer submits) a signed payment.

use tracing::{debug, info};

use crate::core::keys::VerifyingKey;
use crate::core::limits::REFUSAL_WINDOW_MS;
use crate::core::name::Name;
use crate::core::refusal_budget::RefusalBudget;
use crate::system::clock::now_ms;

use super::{Caller, Context};
use crate::core::payment::SignedPayment;
use crate::core::rules::VerifiedPayment;
use crate::wire::{ErrorCode, PaymentJson, Settled, WireError};

/// Rule 1 (who may settle) and rule 2 (the signature verifies with the
/// payer's registered key) here, rule 2 in batches on the verifier threads
/// (one per core, [`crate::server::verifier`]); the rest in the ledger's
/// atomic step.
pub async fn run(
    cx: &Context,
    caller: &Caller,
    payment: &PaymentJson,
) -> Result<Settled, WireError> {
    let me = &caller.identity.name;
    let signed = SignedPayment::try_from(payment)?;
    let p = &signed.payment;
    if &p.payee != me && &p.payer != me {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            format!(
                "{me} may not settle a payment from {} to {}",
                p.payer, p.payee
            ),
        ));
    }
    let verified = verify(cx, signed).await?;
    let payer = verified.signed().payment.payer.clone();
    refuse_revoked_payer(cx, &payer).await?;
    admit_refusals(cx, &payer)?;
    let settlement = match cx.ledger.settle(verified.clone()).await? {
        Ok(settlement) => settlement,
        Err(refusal) => {
            budget(cx).charge(&payer, now_ms());
            return Err(refusal.into());
        }
    };
    let signed = verified.signed();
    let p = &signed.payment;
    let (receipt, log) = super::receipt_reply(cx, settlement.receipt(signed));
    if settlement.replay {
        debug!(id = %p.id, "replayed settlement answered with its original receipt");
    } else {
        info!(
            seq = settlement.seq, id = %p.id, payer = %p.payer, payee = %p.payee,
            amount = p.amount_minor, by = %me, "settled"
        );
    }
    Ok(Settled {
        receipt,
        replay: settlement.replay,
        log,
    })
}

fn budget(cx: &Context) -> std::sync::MutexGuard<'_, RefusalBudget> {
    // The budget holds counts only; a panic elsewhere cannot leave it in a
    // state worth refusing service over.
    cx.refusals.lock().unwrap_or_else(|p| p.into_inner())
}

/// Refuses to decide anything more for a payer whose refusals in this
/// window reached the budget: nothing is decided, so nothing is recorded.
fn admit_refusals(cx: &Context, payer: &Name) -> Result<(), WireError> {
    match budget(cx).wait_ms(payer, now_ms()) {
        None => Ok(()),
        Some(wait_ms) => Err(WireError::new(
            ErrorCode::Busy,
            format!(
                "{payer} has had too many payments refused within {} s; \
                 nothing was decided, retry in {} s",
                REFUSAL_WINDOW_MS / 1000,
                wait_ms.div_ceil(1000)
            ),
        )),
    }
}

/// Rule 2: the signature verifies with the payer's registered key. When
/// it does not with the cached key, the key is re-read from the store
/// (another server may have rotated it), and then the payer's former keys
/// are tried: a payment signed with a key the payer has since rotated
/// away goes to the ledger, whose rules refuse it as `key_mismatch` (and
/// record that), or answer a replay of one that settled before the
/// rotation with its original receipt.
async fn verify(cx: &Context, signed: SignedPayment) -> Result<VerifiedPayment, WireError> {
    let payer = signed.payment.payer.clone();
    let unknown = || WireError::new(ErrorCode::UnknownPayer, format!("{payer} has no account"));
    let cached = cx.ledger.key_of(&payer).await?.ok_or_else(unknown)?;
    // The common case, the payer's current key, goes through the batching
    // verifier; the rare retries below check one key at a time, under the
    // same acceptance rule.
    let first =
        cx.verifier.try_verify(signed, cached).await.map_err(|e| {
            WireError::new(ErrorCode::Internal, format!("{e}; nothing was decided"))
        })?;
    let mut signed = match first {
        Ok(verified) => return Ok(verified),
        Err(signed) => *signed,
    };
    let current = cx.ledger.refresh_key(&payer).await?.ok_or_else(unknown)?;
    let mut candidates: Vec<VerifyingKey> = vec![(*current).clone()];
    candidates.extend(
        cx.ledger
            .key_history(&payer)
            .await?
            .into_iter()
            .rev()
            .map(|entry| entry.key),
    );
    candidates.dedup();
    for key in &candidates {
        signed = match VerifiedPayment::try_verify(signed, key) {
            Ok(verified) => return Ok(verified),
            Err(signed) => *signed,
        };
    }
    Err(bad_signature(&payer))
}

fn bad_signature(payer: &Name) -> WireError {
    WireError::new(
        ErrorCode::BadSignature,
        format!("the signature does not verify with {payer}'s registered key"),
    )
}

/// A payment whose payer's registered key is certified by a revoked
/// certificate is refused, whoever forwards it: revocation must stop a
/// stolen key, not only its owner's connections. The CRL is runtime state,
/// not ledger state, so this is checked here rather than in the rules and
/// the refusal is not recorded (it stays true while the CRL lists the
/// certificate; after a rotation or rebind the old key fails as
/// `key_mismatch`). With no revocations in force this costs nothing;
/// otherwise one read of the payer's current key entry.
async fn refuse_revoked_payer(cx: &Context, payer: &Name) -> Result<(), WireError> {
    if cx.revocations.list().is_empty() {
        return Ok(());
    }
    let Some(entry) = cx.ledger.current_key(payer).await? else {
        return Ok(());
    };
    if !entry.serial.is_empty() && cx.revocations.is_revoked(&entry.serial) {
        info!(payer = %payer, serial = %hex::encode(&entry.serial), "refused a payment signed with a revoked certificate's key");
        return Err(WireError::new(
            ErrorCode::PayerRevoked,
            format!(
                "{payer}'s certificate (serial {}) is revoked: payments signed with its key are refused; nothing moved",
                hex::encode(&entry.serial)
            ),
        ));
    }
    Ok(())
}
