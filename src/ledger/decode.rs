//! Turning stored values back into domain values, for every backend: a
//! stored value that does not fit is reported as corruption, never a
//! panic.

use crate::core::limits::MEMO_BYTES_MAX;
use crate::core::name::Name;
use crate::core::payment::{Payment, PaymentId, SignedPayment};
use crate::core::rules::{Refusal, RefusalKind};
use crate::ledger::{HistoryRow, LedgerError, Outcome, Settlement};

/// A stored integer that must be non-negative.
pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(v).map_err(|_| LedgerError::Corrupt(format!("negative {what} {v}")))
}

/// A stored SHA-256.
pub(crate) fn hash32(bytes: &[u8]) -> Result<[u8; 32], LedgerError> {
    bytes
        .try_into()
        .map_err(|_| LedgerError::Corrupt(format!("a hash of {} bytes", bytes.len())))
}

/// A stored payment id.
pub(crate) fn payment_id(bytes: &[u8]) -> Result<PaymentId, LedgerError> {
    let id: [u8; 16] = bytes
        .try_into()
        .map_err(|_| LedgerError::Corrupt(format!("a payment id of {} bytes", bytes.len())))?;
    Ok(PaymentId(id))
}

/// A stored refusal.
pub(crate) fn refusal(code: &str, message: String) -> Result<Refusal, LedgerError> {
    let kind = RefusalKind::parse(code)
        .ok_or_else(|| LedgerError::Corrupt(format!("unknown refusal {code:?}")))?;
    Ok(Refusal::new(kind, message))
}

/// A stored name.
pub(crate) fn name(s: &str) -> Result<Name, LedgerError> {
    Name::parse(s).map_err(|e| LedgerError::Corrupt(format!("name {s:?}: {e}")))
}

/// A history row as read, before it is checked.
pub(crate) struct StoredHistory {
    pub(crate) seq: i64,
    pub(crate) id: Vec<u8>,
    pub(crate) payer: String,
    pub(crate) payee: String,
    pub(crate) amount: i64,
    pub(crate) memo: String,
    pub(crate) settled_at_ms: i64,
}

impl StoredHistory {
    /// The checked row.
    pub(crate) fn into_row(self) -> Result<HistoryRow, LedgerError> {
        let seq = self.seq;
        let payment_id = payment_id(&self.id)
            .map_err(|_| LedgerError::Corrupt(format!("payment seq {seq} has a bad id")))?;
        Ok(HistoryRow {
            seq: to_u64(seq, "seq")?,
            payment_id,
            payer: self.payer,
            payee: self.payee,
            amount_minor: to_u64(self.amount, "amount")?,
            memo: self.memo,
            settled_at_ms: to_u64(self.settled_at_ms, "settled_at_ms")?,
        })
    }
}

/// A settled row as read for `status`, before it is checked.
pub(crate) struct StoredSettlement {
    pub(crate) payer: String,
    pub(crate) payee: String,
    pub(crate) amount: i64,
    pub(crate) expires_at: i64,
    pub(crate) memo: String,
    pub(crate) signature: Vec<u8>,
    pub(crate) seq: i64,
    pub(crate) settled_at_ms: i64,
}

impl StoredSettlement {
    /// The outcome of payment `id` this row records.
    pub(crate) fn into_outcome(self, id: PaymentId) -> Result<Outcome, LedgerError> {
        // Canonical bytes hold a memo of at most 64 KiB; a longer one is
        // corruption, reported rather than hashed.
        if self.memo.len() > MEMO_BYTES_MAX {
            return Err(LedgerError::Corrupt(format!(
                "payment seq {} has a memo of {} bytes",
                self.seq,
                self.memo.len()
            )));
        }
        let payment = SignedPayment {
            payment: Payment {
                id,
                payer: name(&self.payer)?,
                payee: name(&self.payee)?,
                amount_minor: to_u64(self.amount, "amount")?,
                expires_at_s: to_u64(self.expires_at, "expires_at")?,
                memo: self.memo,
            },
            signature: self.signature,
        };
        let payment_hash = payment.content_hash();
        Ok(Outcome::Settled(
            Box::new(payment),
            Settlement {
                seq: to_u64(self.seq, "seq")?,
                settled_at_ms: to_u64(self.settled_at_ms, "settled_at_ms")?,
                replay: true,
                payment_hash,
            },
        ))
    }
}

/// A recorded refusal as read for `status`.
pub(crate) fn refused_outcome(
    payer: &str,
    payee: &str,
    code: &str,
    message: String,
) -> Result<Outcome, LedgerError> {
    Ok(Outcome::Refused {
        payer: name(payer)?,
        payee: name(payee)?,
        refusal: refusal(code, message)?,
    })
}
