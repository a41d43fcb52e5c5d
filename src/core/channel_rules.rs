//! The channel rules: whether a channel opens (and how much is held),
//! what a close pays, and when a hold returns to the payer. Pure functions
//! of what the ledger holds, read through [`ChannelView`], and the time,
//! passed in; every ledger backend applies what they decide.

use crate::core::channel::{
    hash_times, BadChainLength, ChannelId, CloseRequest, Commitment, SignedCommitment,
};
use crate::core::keys::{BadSignature, VerifyingKey};
use crate::core::limits::{CHANNEL_CLOSE_GRACE_S, CHANNEL_LIFETIME_MAX_S, CHANNEL_LINKS_MAX};
use crate::core::name::Name;
use crate::core::payment::content_hash;
use crate::core::rules::{key_fingerprint, LedgerView};

/// Why a channel operation is refused: the stable kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelRefusalKind {
    /// Payer and payee are the same person.
    SelfChannel,
    /// Value per link zero, or links zero or above [`CHANNEL_LINKS_MAX`].
    BadTerms,
    /// n × value overflows.
    Overflow,
    /// The channel is past its expiry (for an open), or past expiry and
    /// grace (for a close).
    Expired,
    /// The expiry is more than [`CHANNEL_LIFETIME_MAX_S`] ahead.
    ExpiryTooFar,
    /// The payer has no account.
    UnknownPayer,
    /// The payee has no account.
    UnknownPayee,
    /// The payer's available balance does not cover n × value.
    InsufficientFunds,
    /// The key that signed the commitment is no longer the payer's, or its
    /// certificate expired.
    KeyChanged,
    /// The channel id is already used by a different commitment.
    Conflict,
    /// No channel has this id.
    UnknownChannel,
    /// The closer is not the channel's payee.
    NotPayee,
    /// The claimed index is beyond n.
    BeyondEnd,
    /// The revealed link does not hash to the root in `index` steps.
    BadLink,
    /// The hold already returned to the payer at expiry.
    AlreadyExpired,
    /// An expiry asked for before expiry plus grace, or of a closed channel.
    NotExpirable,
}

impl ChannelRefusalKind {
    /// A stable name, used on the wire and in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelRefusalKind::SelfChannel => "self_channel",
            ChannelRefusalKind::BadTerms => "bad_terms",
            ChannelRefusalKind::Overflow => "overflow",
            ChannelRefusalKind::Expired => "channel_expired",
            ChannelRefusalKind::ExpiryTooFar => "expiry_too_far",
            ChannelRefusalKind::UnknownPayer => "unknown_payer",
            ChannelRefusalKind::UnknownPayee => "unknown_payee",
            ChannelRefusalKind::InsufficientFunds => "insufficient_funds",
            ChannelRefusalKind::KeyChanged => "key_changed",
            ChannelRefusalKind::Conflict => "conflict",
            ChannelRefusalKind::UnknownChannel => "unknown_channel",
            ChannelRefusalKind::NotPayee => "not_payee",
            ChannelRefusalKind::BeyondEnd => "channel_exhausted",
            ChannelRefusalKind::BadLink => "bad_link",
            ChannelRefusalKind::AlreadyExpired => "channel_expired",
            ChannelRefusalKind::NotExpirable => "not_expirable",
        }
    }
}

/// A refused channel operation: its kind and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ChannelRefusal {
    /// The stable kind.
    pub kind: ChannelRefusalKind,
    /// A human message.
    pub message: String,
}

fn refuse<T>(kind: ChannelRefusalKind, message: impl Into<String>) -> Result<T, ChannelRefusal> {
    Err(ChannelRefusal {
        kind,
        message: message.into(),
    })
}

/// A commitment whose signature verified with its payer's registered key;
/// the only way [`decide_open`] accepts one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCommitment {
    signed: SignedCommitment,
    content_hash: [u8; 32],
    key_fingerprint: [u8; 32],
}

impl VerifiedCommitment {
    /// Verifies `signed` with `payer_key` (the payer's registered key).
    pub fn verify(
        signed: SignedCommitment,
        payer_key: &VerifyingKey,
    ) -> Result<VerifiedCommitment, BadSignature> {
        signed.verify(payer_key)?;
        Ok(VerifiedCommitment {
            content_hash: signed.content_hash(),
            key_fingerprint: key_fingerprint(payer_key),
            signed,
        })
    }

    /// The commitment and its signature.
    pub fn signed(&self) -> &SignedCommitment {
        &self.signed
    }

    /// The commitment's fields.
    pub fn commitment(&self) -> &Commitment {
        &self.signed.commitment
    }

    /// SHA-256 of the commitment's canonical bytes.
    pub fn content_hash(&self) -> [u8; 32] {
        self.content_hash
    }
}

/// How a channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelEnd {
    /// Still open: the hold is in place.
    Open,
    /// The payee closed it.
    Closed(CloseOutcome),
    /// The hold returned to the payer at expiry.
    Expired {
        /// The amount returned.
        released_minor: u64,
        /// When, unix ms.
        at_ms: u64,
    },
}

/// What a close did: the first outcome, answered to every later close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseOutcome {
    /// Links paid.
    pub index: u64,
    /// index × value, moved to the payee.
    pub paid_minor: u64,
    /// The rest of the hold, returned to the payer.
    pub released_minor: u64,
    /// When, unix ms.
    pub at_ms: u64,
    /// SHA-256 of the close request's canonical bytes.
    pub close_hash: [u8; 32],
}

/// A channel as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    /// The commitment and its signature.
    pub signed: SignedCommitment,
    /// The hold placed at the open, n × value.
    pub hold_minor: u64,
    /// When it opened, unix ms.
    pub opened_at_ms: u64,
    /// Its state.
    pub end: ChannelEnd,
}

/// What the channel rules read from a ledger, besides balances and keys.
pub trait ChannelView: LedgerView {
    /// The channel `id`, if it was ever opened.
    fn channel(&self, id: &ChannelId) -> Option<ChannelRecord>;
}

/// The decision about an open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenDecision {
    /// Place the hold: the payer's available balance becomes
    /// `payer_after_minor`.
    Open {
        /// n × value.
        hold_minor: u64,
        /// The payer's available balance afterwards.
        payer_after_minor: u64,
    },
    /// The same commitment opened before: answer with that open.
    Replay(Box<ChannelRecord>),
}

/// Checks what a commitment says against `now_s`, without a ledger:
/// payer ≠ payee, value ≥ 1, 1 ≤ n ≤ [`CHANNEL_LINKS_MAX`], n × value does
/// not overflow, and the expiry is ahead but at most
/// [`CHANNEL_LIFETIME_MAX_S`] away. Returns n × value.
pub fn check_terms(c: &Commitment, now_s: u64) -> Result<u64, ChannelRefusal> {
    if c.payer == c.payee {
        return refuse(
            ChannelRefusalKind::SelfChannel,
            "payer and payee must differ",
        );
    }
    if c.value_minor == 0 || c.links == 0 || c.links > CHANNEL_LINKS_MAX {
        return refuse(
            ChannelRefusalKind::BadTerms,
            format!(
                "a channel has a value of at least 1 and 1 to {CHANNEL_LINKS_MAX} links; {}",
                BadChainLength(c.links)
            ),
        );
    }
    let Some(hold) = c.hold_minor() else {
        return refuse(ChannelRefusalKind::Overflow, "links × value overflows");
    };
    if now_s >= c.expires_at_s {
        return refuse(
            ChannelRefusalKind::Expired,
            format!(
                "the channel expires at {}, it is now {now_s}",
                c.expires_at_s
            ),
        );
    }
    if c.expires_at_s - now_s > CHANNEL_LIFETIME_MAX_S {
        return refuse(
            ChannelRefusalKind::ExpiryTooFar,
            format!("a channel may last at most {CHANNEL_LIFETIME_MAX_S} s"),
        );
    }
    Ok(hold)
}

/// Decides an open at `now_ms`: the same commitment seen before is a
/// replay, a different one under the same id a conflict; then the terms
/// ([`check_terms`]), the signing key still the payer's and unexpired,
/// both accounts existing, and the payer's available balance covering
/// n × value.
pub fn decide_open(
    view: &impl ChannelView,
    verified: &VerifiedCommitment,
    now_ms: u64,
) -> Result<OpenDecision, ChannelRefusal> {
    let c = verified.commitment();
    if let Some(record) = view.channel(&c.id) {
        if record.signed.content_hash() != verified.content_hash {
            return refuse(
                ChannelRefusalKind::Conflict,
                format!("channel id {} is used by another commitment", c.id),
            );
        }
        return Ok(OpenDecision::Replay(Box::new(record)));
    }
    let now_s = now_ms / 1000;
    let hold_minor = check_terms(c, now_s)?;
    let Some(available) = view.balance_minor(&c.payer) else {
        return refuse(
            ChannelRefusalKind::UnknownPayer,
            format!("{} has no account", c.payer),
        );
    };
    if view.balance_minor(&c.payee).is_none() {
        return refuse(
            ChannelRefusalKind::UnknownPayee,
            format!("{} has no account", c.payee),
        );
    }
    let key_ok = view
        .registered_key(&c.payer)
        .is_some_and(|k| k.fingerprint == verified.key_fingerprint && now_s <= k.not_after_s);
    if !key_ok {
        return refuse(
            ChannelRefusalKind::KeyChanged,
            format!("the key that signed is no longer {}'s valid key", c.payer),
        );
    }
    let Some(payer_after_minor) = available.checked_sub(hold_minor) else {
        return refuse(
            ChannelRefusalKind::InsufficientFunds,
            format!(
                "{}'s available balance does not cover {hold_minor}",
                c.payer
            ),
        );
    };
    Ok(OpenDecision::Open {
        hold_minor,
        payer_after_minor,
    })
}

/// The decision about a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseDecision {
    /// Pay and release: the outcome, and the available balances of payee
    /// and payer afterwards.
    Close {
        /// What moves.
        outcome: CloseOutcome,
        /// The payee's available balance afterwards.
        payee_after_minor: u64,
        /// The payer's available balance afterwards.
        payer_after_minor: u64,
    },
    /// Closed before: answer with the first outcome, nothing moves.
    Replay(CloseOutcome),
}

/// Decides a close by `closer` at `now_ms`: the channel exists and
/// `closer` is its payee; a closed channel answers its first outcome; an
/// expired one is refused; otherwise the close must come by expiry plus
/// [`CHANNEL_CLOSE_GRACE_S`], claim at most n links, and its link must hash
/// to the root in exactly `index` steps. Pays index × value to the payee
/// and returns the rest of the hold to the payer.
pub fn decide_close(
    view: &impl ChannelView,
    close: &CloseRequest,
    closer: &Name,
    now_ms: u64,
) -> Result<CloseDecision, ChannelRefusal> {
    let Some(record) = view.channel(&close.id) else {
        return refuse(
            ChannelRefusalKind::UnknownChannel,
            format!("no channel {}", close.id),
        );
    };
    let c = &record.signed.commitment;
    if *closer != c.payee {
        return refuse(
            ChannelRefusalKind::NotPayee,
            format!("only {} may close channel {}", c.payee, c.id),
        );
    }
    match record.end {
        ChannelEnd::Closed(outcome) => return Ok(CloseDecision::Replay(outcome)),
        ChannelEnd::Expired { .. } => {
            return refuse(
                ChannelRefusalKind::AlreadyExpired,
                format!(
                    "channel {} expired; its hold went back to {}",
                    c.id, c.payer
                ),
            )
        }
        ChannelEnd::Open => {}
    }
    if now_ms / 1000 > c.expires_at_s.saturating_add(CHANNEL_CLOSE_GRACE_S) {
        return refuse(
            ChannelRefusalKind::Expired,
            format!("channel {} expired at {}", c.id, c.expires_at_s),
        );
    }
    if close.index > c.links {
        return refuse(
            ChannelRefusalKind::BeyondEnd,
            format!(
                "channel {} has {} links, not {}",
                c.id, c.links, close.index
            ),
        );
    }
    if hash_times(&c.id, &close.link, close.index) != c.root {
        return refuse(
            ChannelRefusalKind::BadLink,
            format!("the link does not hash to channel {}'s root", c.id),
        );
    }
    settle_close(view, &record, close, now_ms)
}

fn settle_close(
    view: &impl ChannelView,
    record: &ChannelRecord,
    close: &CloseRequest,
    now_ms: u64,
) -> Result<CloseDecision, ChannelRefusal> {
    let c = &record.signed.commitment;
    let overflow = || ChannelRefusal {
        kind: ChannelRefusalKind::Overflow,
        message: "balance overflow".to_owned(),
    };
    // index ≤ n, so index × value ≤ n × value = hold: neither overflows.
    let paid_minor = close
        .index
        .checked_mul(c.value_minor)
        .ok_or_else(overflow)?;
    let released_minor = record
        .hold_minor
        .checked_sub(paid_minor)
        .ok_or_else(overflow)?;
    let payee_after_minor = view
        .balance_minor(&c.payee)
        .and_then(|b| b.checked_add(paid_minor))
        .ok_or_else(overflow)?;
    let payer_after_minor = view
        .balance_minor(&c.payer)
        .and_then(|b| b.checked_add(released_minor))
        .ok_or_else(overflow)?;
    Ok(CloseDecision::Close {
        outcome: CloseOutcome {
            index: close.index,
            paid_minor,
            released_minor,
            at_ms: now_ms,
            close_hash: content_hash(&close.canonical_bytes()),
        },
        payee_after_minor,
        payer_after_minor,
    })
}

/// When an open channel's hold may return to its payer: the first
/// millisecond after expiry plus [`CHANNEL_CLOSE_GRACE_S`].
pub fn expirable_from_ms(c: &Commitment) -> u64 {
    c.expires_at_s
        .saturating_add(CHANNEL_CLOSE_GRACE_S)
        .saturating_add(1)
        .saturating_mul(1000)
}

/// Decides the expiry of channel `id` at `now_ms`: it must be open and
/// past expiry plus grace. Returns the amount released and the payer's
/// available balance afterwards.
pub fn decide_expire(
    view: &impl ChannelView,
    id: &ChannelId,
    now_ms: u64,
) -> Result<(u64, u64), ChannelRefusal> {
    let Some(record) = view.channel(id) else {
        return refuse(
            ChannelRefusalKind::UnknownChannel,
            format!("no channel {id}"),
        );
    };
    let c = &record.signed.commitment;
    if record.end != ChannelEnd::Open || now_ms < expirable_from_ms(c) {
        return refuse(
            ChannelRefusalKind::NotExpirable,
            format!("channel {id} is closed or not yet past expiry and grace"),
        );
    }
    let payer_after_minor = view
        .balance_minor(&c.payer)
        .and_then(|b| b.checked_add(record.hold_minor))
        .ok_or(ChannelRefusal {
            kind: ChannelRefusalKind::Overflow,
            message: "balance overflow".to_owned(),
        })?;
    Ok((record.hold_minor, payer_after_minor))
}

#[cfg(test)]
mod tests;
