//! `settle`: a payee forwards (or a payer submits) a signed payment.

use tracing::{debug, info};

use super::{reply, Caller, Context};
use crate::core::keys::VerifyingKey;
use crate::core::payment::SignedPayment;
use crate::core::rules::VerifiedPayment;
use crate::wire::{ErrorCode, PaymentJson, ReceiptJson, ResultJson, Settled, WireError};

/// Rule 1 (who may settle) and rule 2 (the signature verifies with the
/// payer's registered key) here, on the connection's task and so on every
/// core; the rest in the ledger's atomic step.
pub async fn run(
    cx: &Context,
    caller: &Caller,
    payment: &PaymentJson,
) -> Result<ResultJson, WireError> {
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
    let settlement = cx.ledger.settle(verified.clone()).await??;
    let signed = verified.signed();
    let p = &signed.payment;
    let receipt = settlement.receipt(signed).sign(&cx.signing_key);
    if settlement.replay {
        debug!(id = %p.id, "replayed settlement answered with its original receipt");
    } else {
        info!(
            seq = settlement.seq, id = %p.id, payer = %p.payer, payee = %p.payee,
            amount = p.amount_minor, by = %me, "settled"
        );
    }
    reply(Settled {
        receipt: ReceiptJson::from(&receipt),
        replay: settlement.replay,
    })
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
    let mut signed = match VerifiedPayment::try_verify(signed, &cached) {
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

fn bad_signature(payer: &crate::core::name::Name) -> WireError {
    WireError::new(
        ErrorCode::BadSignature,
        format!("the signature does not verify with {payer}'s registered key"),
    )
}
