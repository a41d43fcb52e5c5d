//! `settle`: a payee forwards (or a payer submits) a signed payment.

use tracing::{debug, info};

use super::{Caller, Context};
use crate::core::payment::SignedPayment;
use crate::core::rules::VerifiedPayment;
use crate::wire::{ErrorCode, PaymentJson, ReceiptJson, Settled, WireError};

/// Rule 1 (who may settle) and rule 2 (the signature verifies with the
/// payer's registered key) here, on the connection's task and so on every
/// core; the rest in the ledger's atomic step.
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
    let payer_key = cx.ledger.key_of(&p.payer).await?.ok_or_else(|| {
        WireError::new(
            ErrorCode::UnknownPayer,
            format!("{} has no account", p.payer),
        )
    })?;
    let verified = VerifiedPayment::verify(signed, &payer_key).map_err(|_| {
        WireError::new(
            ErrorCode::BadSignature,
            format!(
                "the signature does not verify with {}'s registered key",
                payment.payer
            ),
        )
    })?;
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
    Ok(Settled {
        receipt: ReceiptJson::from(&receipt),
        replay: settlement.replay,
    })
}
