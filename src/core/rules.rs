//! The settlement rules: the one place that decides whether money moves.
//!
//! [`decide`] is a pure function of what the ledger holds (read through
//! [`LedgerView`]), a payment whose signature has already been verified
//! ([`VerifiedPayment`]) and the time, passed in. It returns a
//! [`Decision`]: exactly which balances change, or why nothing does. Every
//! ledger backend calls it inside its own atomic step and applies what it
//! says; nothing else decides money. Registration is decided the same way
//! by [`decide_registration`].
//!
//! Refusals are domain values ([`Refusal`]): a stable kind and a human
//! message. The wire layer maps kinds to error codes in one place.

use crate::core::keys::{BadSignature, VerifyingKey};
use crate::core::limits::ACCOUNTS_MAX;
#[cfg(doc)]
use crate::core::limits::{MEMO_BYTES_MAX, PAYMENT_LIFETIME_MAX_S};
use crate::core::name::Name;
use crate::core::payment::{content_hash, Payment, PaymentError, PaymentId, SignedPayment};
use crate::core::rotation::{KeyChange, KeyChangeKind};

/// Why a payment or a registration is refused: the stable kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalKind {
    /// The name already has an account.
    AlreadyRegistered,
    /// The ledger holds [`ACCOUNTS_MAX`] accounts.
    LedgerFull,
    /// The payment id was used before for a different payment.
    Conflict,
    /// The payment is past its expiry.
    Expired,
    /// The expiry is further ahead than [`PAYMENT_LIFETIME_MAX_S`].
    ExpiryTooFar,
    /// The amount is zero.
    ZeroAmount,
    /// The memo is longer than [`MEMO_BYTES_MAX`].
    MemoTooLong,
    /// The signature is longer than any supported algorithm makes.
    SignatureTooLong,
    /// Payer and payee are the same person.
    SelfPayment,
    /// The payer has no account.
    UnknownPayer,
    /// The payee has no account.
    UnknownPayee,
    /// The payer's balance does not cover the amount.
    InsufficientFunds,
    /// The payee's balance would overflow (impossible while the supply is
    /// bounded, refused all the same).
    Overflow,
    /// The key that verified the signature is no longer the payer's.
    KeyChanged,
    /// The certificate of the payer's registered key has expired.
    KeyExpired,
    /// A key change names an account that does not exist.
    NoAccount,
    /// A renewal whose certificate does not end later than the one the
    /// ledger has.
    RenewalNotLater,
}

impl RefusalKind {
    /// Every kind, for tests and for parsing stored refusals.
    pub const ALL: [RefusalKind; 17] = [
        RefusalKind::AlreadyRegistered,
        RefusalKind::LedgerFull,
        RefusalKind::Conflict,
        RefusalKind::Expired,
        RefusalKind::ExpiryTooFar,
        RefusalKind::ZeroAmount,
        RefusalKind::MemoTooLong,
        RefusalKind::SignatureTooLong,
        RefusalKind::SelfPayment,
        RefusalKind::UnknownPayer,
        RefusalKind::UnknownPayee,
        RefusalKind::InsufficientFunds,
        RefusalKind::Overflow,
        RefusalKind::KeyChanged,
        RefusalKind::KeyExpired,
        RefusalKind::NoAccount,
        RefusalKind::RenewalNotLater,
    ];

    /// A stable name, as stored with a recorded refusal.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalKind::AlreadyRegistered => "already_registered",
            RefusalKind::LedgerFull => "ledger_full",
            RefusalKind::Conflict => "conflict",
            RefusalKind::Expired => "expired",
            RefusalKind::ExpiryTooFar => "expiry_too_far",
            RefusalKind::ZeroAmount => "zero_amount",
            RefusalKind::MemoTooLong => "memo_too_long",
            RefusalKind::SignatureTooLong => "signature_too_long",
            RefusalKind::SelfPayment => "self_payment",
            RefusalKind::UnknownPayer => "unknown_payer",
            RefusalKind::UnknownPayee => "unknown_payee",
            RefusalKind::InsufficientFunds => "insufficient_funds",
            RefusalKind::Overflow => "overflow",
            RefusalKind::KeyChanged => "key_changed",
            RefusalKind::KeyExpired => "key_expired",
            RefusalKind::NoAccount => "no_account",
            RefusalKind::RenewalNotLater => "renewal_not_later",
        }
    }

    /// Parses [`RefusalKind::as_str`].
    pub fn parse(s: &str) -> Option<RefusalKind> {
        RefusalKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A refusal: its kind and what happened, for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The stable kind.
    pub kind: RefusalKind,
    /// A human message.
    pub message: String,
}

impl Refusal {
    /// A refusal of `kind` saying `message`.
    pub fn new(kind: RefusalKind, message: impl Into<String>) -> Refusal {
        Refusal {
            kind,
            message: message.into(),
        }
    }
}

/// A payment whose signature verified with its payer's registered key.
/// The only way to make one is [`VerifiedPayment::verify`], so [`decide`]
/// can never see an unverified payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPayment {
    signed: SignedPayment,
    content_hash: [u8; 32],
    key_fingerprint: [u8; 32],
}

impl VerifiedPayment {
    /// Verifies `signed` with `payer_key` (the payer's registered key).
    pub fn verify(
        signed: SignedPayment,
        payer_key: &VerifyingKey,
    ) -> Result<VerifiedPayment, BadSignature> {
        signed.verify(payer_key)?;
        Ok(VerifiedPayment {
            content_hash: content_hash(&signed.payment.canonical_bytes()),
            key_fingerprint: key_fingerprint(payer_key),
            signed,
        })
    }

    /// [`VerifiedPayment::verify`] that hands the payment back when the
    /// signature does not verify, so another key can be tried without a
    /// copy (boxed: the failure path is rare, the success path stays
    /// small).
    pub fn try_verify(
        signed: SignedPayment,
        key: &VerifyingKey,
    ) -> Result<VerifiedPayment, Box<SignedPayment>> {
        if signed.verify(key).is_err() {
            return Err(Box::new(signed));
        }
        Ok(VerifiedPayment {
            content_hash: content_hash(&signed.payment.canonical_bytes()),
            key_fingerprint: key_fingerprint(key),
            signed,
        })
    }

    /// [`VerifiedPayment::try_verify`] for many payments at once, each
    /// with its own key: Ed25519 signatures are checked in one batch
    /// ([`crate::core::keys::verify_batch`]), which answers for each
    /// exactly what checking it alone would.
    pub fn try_verify_many<K: std::borrow::Borrow<VerifyingKey>>(
        payments: Vec<(SignedPayment, K)>,
    ) -> Vec<Result<VerifiedPayment, Box<SignedPayment>>> {
        let canonical: Vec<Vec<u8>> = payments
            .iter()
            .map(|(signed, _)| signed.payment.canonical_bytes())
            .collect();
        let items: Vec<crate::core::keys::BatchItem<'_>> = payments
            .iter()
            .zip(&canonical)
            .map(|((signed, key), bytes)| {
                (key.borrow(), bytes.as_slice(), signed.signature.as_slice())
            })
            .collect();
        let answers = crate::core::keys::verify_batch(&items);
        payments
            .into_iter()
            .zip(canonical)
            .zip(answers)
            .map(|(((signed, key), bytes), answer)| match answer {
                Ok(()) => Ok(VerifiedPayment {
                    content_hash: content_hash(&bytes),
                    key_fingerprint: key_fingerprint(key.borrow()),
                    signed,
                }),
                Err(_) => Err(Box::new(signed)),
            })
            .collect()
    }

    /// The payment and its signature.
    pub fn signed(&self) -> &SignedPayment {
        &self.signed
    }

    /// SHA-256 of the payment's canonical bytes.
    pub fn content_hash(&self) -> [u8; 32] {
        self.content_hash
    }

    /// SHA-256 of the key that verified the signature.
    pub fn key_fingerprint(&self) -> [u8; 32] {
        self.key_fingerprint
    }
}

/// SHA-256 of a key's SubjectPublicKeyInfo, as raw bytes.
pub fn key_fingerprint(key: &VerifyingKey) -> [u8; 32] {
    content_hash(key.spki_der())
}

/// What was decided before about a payment id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prior {
    /// SHA-256 of the canonical bytes of the payment decided then.
    pub content_hash: [u8; 32],
    /// What was decided.
    pub outcome: PriorOutcome,
}

/// The outcome recorded for an earlier payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriorOutcome {
    /// It settled at `seq`.
    Settled {
        /// Ledger position.
        seq: u64,
        /// When, unix ms.
        settled_at_ms: u64,
    },
    /// It was refused for good.
    Refused(Refusal),
}

/// A registered key as the rules see it: which key, and until when the
/// certificate it came with is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisteredKey {
    /// SHA-256 of the key's SubjectPublicKeyInfo.
    pub fingerprint: [u8; 32],
    /// The certificate's notAfter, unix seconds: a payment signed with
    /// this key settles only up to then, so a stolen key stops spending
    /// when its certificate expires.
    pub not_after_s: u64,
}

impl RegisteredKey {
    /// `key`, registered with a certificate valid until `not_after_s`.
    pub fn of(key: &VerifyingKey, not_after_s: u64) -> RegisteredKey {
        RegisteredKey {
            fingerprint: key_fingerprint(key),
            not_after_s,
        }
    }
}

/// What [`decide`] needs to read from a ledger.
pub trait LedgerView {
    /// The balance of `name`, or `None` when `name` has no account.
    fn balance_minor(&self, name: &Name) -> Option<u64>;
    /// `name`'s registered key, or `None` without an account.
    fn registered_key(&self, name: &Name) -> Option<RegisteredKey>;
    /// How many accounts exist.
    fn accounts(&self) -> u64;
    /// The earlier decision about payment `id` of `payer`, if any.
    fn prior(&self, payer: &Name, id: &PaymentId) -> Option<Prior>;
}

/// Money moving from payer to payee: the balances after the move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Minor units moved.
    pub amount_minor: u64,
    /// The payer's balance afterwards.
    pub payer_after_minor: u64,
    /// The payee's balance afterwards.
    pub payee_after_minor: u64,
}

/// The decision about one verified payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Settle: apply the transfer and record the payment.
    Settle(Transfer),
    /// Seen before with the same content: answer with the original
    /// outcome; nothing moves and nothing is recorded.
    Replay(PriorOutcome),
    /// Refuse for good: record the refusal; nothing moves.
    Refuse(Refusal),
}

impl From<PaymentError> for Refusal {
    fn from(e: PaymentError) -> Refusal {
        let kind = match e {
            PaymentError::ZeroAmount => RefusalKind::ZeroAmount,
            PaymentError::MemoTooLong(_) => RefusalKind::MemoTooLong,
            PaymentError::SignatureTooLong => RefusalKind::SignatureTooLong,
            PaymentError::SelfPayment => RefusalKind::SelfPayment,
            PaymentError::Expired { .. } => RefusalKind::Expired,
            PaymentError::ExpiryTooFar => RefusalKind::ExpiryTooFar,
        };
        Refusal::new(kind, e.to_string())
    }
}

/// Checks the payment's fields and its expiry against `now_ms`. A payment
/// expiring at second `E` is good through the last millisecond of that
/// second (`E * 1000 + 999`) and expired from `(E + 1) * 1000` on; it may
/// expire at most [`PAYMENT_LIFETIME_MAX_S`] seconds after the current
/// second.
pub fn check_payment(payment: &Payment, now_ms: u64) -> Result<(), Refusal> {
    payment.check_fields()?;
    payment.check_time(now_ms / 1000)?;
    Ok(())
}

/// Decides one verified payment at `now_ms`:
///
/// 1. an id seen before returns its original outcome when the content is
///    the same, and is a conflict otherwise;
/// 2. the key that verified the signature must still be the payer's;
/// 3. amount ≥ 1, memo in bounds, payer ≠ payee, not expired, expiry not
///    too far ahead;
/// 4. both have accounts, the payer's balance covers the amount, and the
///    payee's balance does not overflow.
pub fn decide(view: &impl LedgerView, payment: &VerifiedPayment, now_ms: u64) -> Decision {
    let p = &payment.signed.payment;
    if let Some(prior) = view.prior(&p.payer, &p.id) {
        if prior.content_hash != payment.content_hash {
            return Decision::Refuse(conflict(&p.id));
        }
        return Decision::Replay(prior.outcome);
    }
    match transfer(view, payment, now_ms) {
        Ok(transfer) => Decision::Settle(transfer),
        Err(refusal) => Decision::Refuse(refusal),
    }
}

fn transfer(
    view: &impl LedgerView,
    payment: &VerifiedPayment,
    now_ms: u64,
) -> Result<Transfer, Refusal> {
    let p = &payment.signed.payment;
    check_payment(p, now_ms)?;
    let no_account = |kind, name: &Name| Refusal::new(kind, format!("{name} has no account"));
    let payer_balance = view
        .balance_minor(&p.payer)
        .ok_or_else(|| no_account(RefusalKind::UnknownPayer, &p.payer))?;
    let payee_balance = view
        .balance_minor(&p.payee)
        .ok_or_else(|| no_account(RefusalKind::UnknownPayee, &p.payee))?;
    let key = view
        .registered_key(&p.payer)
        .filter(|k| k.fingerprint == payment.key_fingerprint)
        .ok_or_else(|| {
            Refusal::new(
                RefusalKind::KeyChanged,
                format!("{}'s key changed before the payment settled", p.payer),
            )
        })?;
    if now_ms / 1000 > key.not_after_s {
        return Err(Refusal::new(
            RefusalKind::KeyExpired,
            format!(
                "{}'s certificate expired at {} (unix s); its key spends nothing more",
                p.payer, key.not_after_s
            ),
        ));
    }
    let payer_after_minor = payer_balance.checked_sub(p.amount_minor).ok_or_else(|| {
        Refusal::new(
            RefusalKind::InsufficientFunds,
            format!(
                // The payee forwards the payment and sees this message:
                // it must not learn the payer's balance.
                "{}'s balance does not cover {}",
                p.payer, p.amount_minor
            ),
        )
    })?;
    let payee_after_minor = payee_balance
        .checked_add(p.amount_minor)
        .ok_or_else(|| Refusal::new(RefusalKind::Overflow, "balance overflow"))?;
    Ok(Transfer {
        amount_minor: p.amount_minor,
        payer_after_minor,
        payee_after_minor,
    })
}

fn conflict(id: &PaymentId) -> Refusal {
    Refusal::new(
        RefusalKind::Conflict,
        format!("payment id {id} was already used for a different payment"),
    )
}

/// Decides a registration of `name`: refused when the name has an
/// account or the ledger is full; otherwise the account opens with
/// `grant_minor`.
pub fn decide_registration(view: &impl LedgerView, name: &Name) -> Result<(), Refusal> {
    if view.balance_minor(name).is_some() {
        return Err(Refusal::new(
            RefusalKind::AlreadyRegistered,
            format!("{name} already has an account"),
        ));
    }
    if view.accounts() >= ACCOUNTS_MAX {
        return Err(Refusal::new(
            RefusalKind::LedgerFull,
            "the ledger holds the maximum number of accounts",
        ));
    }
    Ok(())
}

/// Decides a key change of an account at `now_ms`, in the writer's order:
///
/// 1. the account exists;
/// 2. a rotation or renewal starts from the key registered now (of two
///    racing rotations signed by the same old key, the second finds the
///    key already changed: `KeyChanged`); a rebind starts from any key;
/// 3. the new certificate has not expired;
/// 4. a renewal's certificate ends later than the registered one.
///
/// Returns the key registered afterwards.
pub fn decide_key_change(
    view: &impl LedgerView,
    change: &KeyChange,
    now_ms: u64,
) -> Result<RegisteredKey, Refusal> {
    let name = change.name();
    let current = view
        .registered_key(name)
        .ok_or_else(|| Refusal::new(RefusalKind::NoAccount, format!("{name} has no account")))?;
    if let Some(old) = change.old_fingerprint() {
        if old != current.fingerprint {
            return Err(Refusal::new(
                RefusalKind::KeyChanged,
                format!("the statement's old key is no longer {name}'s registered key"),
            ));
        }
    }
    if now_ms / 1000 > change.new_not_after_s() {
        return Err(Refusal::new(
            RefusalKind::KeyExpired,
            format!(
                "the new certificate expired at {} (unix s)",
                change.new_not_after_s()
            ),
        ));
    }
    if change.kind() == KeyChangeKind::Renew && change.new_not_after_s() <= current.not_after_s {
        return Err(Refusal::new(
            RefusalKind::RenewalNotLater,
            format!(
                "the new certificate ends at {} (unix s), not later than the registered one ({})",
                change.new_not_after_s(),
                current.not_after_s
            ),
        ));
    }
    Ok(change.registered_key())
}
