//! Error codes and error replies, and the one place where the rules'
//! refusals become codes.

use serde::{Deserialize, Serialize};

use crate::core::payment::PaymentError;
use crate::core::rules::{Refusal, RefusalKind};

/// Stable, machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The caller (or the named person) has no account.
    NotRegistered,
    /// The caller already has an account.
    AlreadyRegistered,
    /// The caller's certificate key differs from the registered key.
    KeyMismatch,
    /// A payment's signature does not verify with the payer's key.
    BadSignature,
    /// The payer's balance does not cover the amount.
    InsufficientFunds,
    /// The payment is past its expiry.
    Expired,
    /// The payment id was used before with different content.
    Conflict,
    /// The payee has no account.
    UnknownPayee,
    /// The payer has no account.
    UnknownPayer,
    /// The payee is not online.
    PayeeOffline,
    /// Payer and payee are the same person.
    SelfPayment,
    /// The caller may not do this (e.g. settle a payment not addressed to it).
    Forbidden,
    /// No such payment (or not one the caller may see).
    NotFound,
    /// The caller's certificate has expired since the connection began.
    CertificateExpired,
    /// The caller's certificate is revoked (listed in the CRL in force);
    /// the connection closes after this reply.
    CertificateRevoked,
    /// The payment's payer's registered key is certified by a revoked
    /// certificate: a stolen key cannot spend through someone else's
    /// connection. Unlike `certificate_revoked` it says nothing about the
    /// caller, whose connection stays open.
    PayerRevoked,
    /// The request is malformed: bad JSON, unknown op, missing or extra
    /// fields, a value out of range.
    BadRequest,
    /// The line is longer than the frame limit; the connection closes.
    TooLarge,
    /// The server is at a limit; try again later.
    Busy,
    /// The server's database cannot be reached; try again later.
    Unavailable,
    /// The server failed; nothing was moved.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotRegistered => "not_registered",
            ErrorCode::AlreadyRegistered => "already_registered",
            ErrorCode::KeyMismatch => "key_mismatch",
            ErrorCode::BadSignature => "bad_signature",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::Expired => "expired",
            ErrorCode::Conflict => "conflict",
            ErrorCode::UnknownPayee => "unknown_payee",
            ErrorCode::UnknownPayer => "unknown_payer",
            ErrorCode::PayeeOffline => "payee_offline",
            ErrorCode::SelfPayment => "self_payment",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::CertificateExpired => "certificate_expired",
            ErrorCode::CertificateRevoked => "certificate_revoked",
            ErrorCode::PayerRevoked => "payer_revoked",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Busy => "busy",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Whether a connection is closed after a reply with this code: the
    /// caller can do nothing more on it.
    pub fn closes_connection(self) -> bool {
        matches!(self, ErrorCode::CertificateRevoked | ErrorCode::TooLarge)
    }

    /// Parses a wire code (for stored rejections).
    pub fn parse(s: &str) -> Option<ErrorCode> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error reply: a code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
#[serde(deny_unknown_fields)]
pub struct WireError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
}

impl WireError {
    /// Builds an error from a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> WireError {
        WireError {
            code,
            message: message.into(),
        }
    }
}

impl From<Refusal> for WireError {
    /// The one place where the rules' refusals become wire codes.
    fn from(r: Refusal) -> WireError {
        let code = match r.kind {
            RefusalKind::AlreadyRegistered => ErrorCode::AlreadyRegistered,
            RefusalKind::LedgerFull => ErrorCode::Busy,
            RefusalKind::Conflict => ErrorCode::Conflict,
            RefusalKind::Expired => ErrorCode::Expired,
            RefusalKind::ExpiryTooFar
            | RefusalKind::ZeroAmount
            | RefusalKind::MemoTooLong
            | RefusalKind::SignatureTooLong => ErrorCode::BadRequest,
            RefusalKind::SelfPayment => ErrorCode::SelfPayment,
            RefusalKind::UnknownPayer => ErrorCode::UnknownPayer,
            RefusalKind::UnknownPayee => ErrorCode::UnknownPayee,
            RefusalKind::InsufficientFunds => ErrorCode::InsufficientFunds,
            RefusalKind::Overflow => ErrorCode::Internal,
            RefusalKind::KeyChanged => ErrorCode::KeyMismatch,
            RefusalKind::KeyExpired => ErrorCode::CertificateExpired,
            RefusalKind::NoAccount => ErrorCode::NotRegistered,
            RefusalKind::RenewalNotLater => ErrorCode::BadRequest,
        };
        WireError::new(code, r.message)
    }
}

impl From<PaymentError> for WireError {
    fn from(e: PaymentError) -> WireError {
        let code = match e {
            PaymentError::Expired { .. } => ErrorCode::Expired,
            PaymentError::SelfPayment => ErrorCode::SelfPayment,
            PaymentError::ZeroAmount
            | PaymentError::MemoTooLong(_)
            | PaymentError::ExpiryTooFar
            | PaymentError::SignatureTooLong => ErrorCode::BadRequest,
        };
        WireError::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_revoked_is_a_stable_code_that_closes_the_connection() {
        let code = ErrorCode::CertificateRevoked;
        assert_eq!(code.as_str(), "certificate_revoked");
        assert_eq!(ErrorCode::parse("certificate_revoked"), Some(code));
        assert!(code.closes_connection());
        assert!(ErrorCode::TooLarge.closes_connection());
        assert!(!ErrorCode::CertificateExpired.closes_connection());
        assert!(!ErrorCode::BadRequest.closes_connection());
    }
}
