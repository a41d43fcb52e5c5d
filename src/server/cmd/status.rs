//! `status`: the recorded outcome of one of the caller's payments.

use super::{reply, Caller, Context};
use crate::core::payment::PaymentId;
use crate::ledger::Outcome;
use crate::wire::{ErrorCode, PaymentStatus, ResultJson, WireError};

/// The receipt of a settled payment or the refusal of a refused one, for
/// its payer or payee only; anyone else hears `not_found`.
pub async fn run(cx: &Context, caller: &Caller, payment_id: &str) -> Result<ResultJson, WireError> {
    let me = &caller.identity.name;
    let id = PaymentId::from_hex(payment_id)
        .ok_or_else(|| WireError::new(ErrorCode::BadRequest, "payment_id must be 32 hex digits"))?;
    let not_found = || WireError::new(ErrorCode::NotFound, format!("no payment {id} of yours"));
    match cx.ledger.outcome(me, id).await?.ok_or_else(not_found)? {
        Outcome::Settled(payment, settlement) => {
            let p = &payment.payment;
            if &p.payer != me && &p.payee != me {
                return Err(not_found());
            }
            let (receipt, log) = super::receipt_reply(cx, settlement.receipt(&payment));
            reply(PaymentStatus::Settled { receipt, log })
        }
        Outcome::Refused {
            payer,
            payee,
            refusal,
        } => {
            if &payer != me && &payee != me {
                return Err(not_found());
            }
            reply(PaymentStatus::Rejected {
                error: WireError::from(refusal),
            })
        }
    }
}
