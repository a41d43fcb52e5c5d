//! Payment-channel messages on the wire: the commitment as JSON, the
//! server's replies to `channel_open` and `channel_close`, the payee's
//! peer operations, and the one place where channel refusals become error
//! codes. Signatures never cover this JSON: the commitment is signed over
//! its canonical bytes (`core::channel`).

use serde::{Deserialize, Serialize};

use crate::core::channel::{ChannelId, Commitment, Link, SignedCommitment};
use crate::core::channel_rules::{ChannelEnd, ChannelRecord, ChannelRefusal, ChannelRefusalKind};
use crate::core::keys::SIGNATURE_BYTES_MAX;
use crate::core::name::Name;
use crate::wire::errors::{ErrorCode, WireError};

/// A signed channel commitment as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitmentJson {
    /// The channel id, 32 lowercase hex digits.
    pub id: String,
    /// Payer's name.
    pub payer: String,
    /// Payee's name.
    pub payee: String,
    /// The root `w_0`, 64 lowercase hex digits.
    pub root: String,
    /// Minor units per link.
    pub value: u64,
    /// n, the number of links.
    pub links: u64,
    /// Unix seconds.
    pub expires_at: u64,
    /// The payer's signature over the canonical bytes, hex.
    pub signature: String,
}

fn bad(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::BadRequest, message)
}

impl From<&SignedCommitment> for CommitmentJson {
    fn from(s: &SignedCommitment) -> CommitmentJson {
        let c = &s.commitment;
        CommitmentJson {
            id: c.id.to_hex(),
            payer: c.payer.to_string(),
            payee: c.payee.to_string(),
            root: c.root.to_hex(),
            value: c.value_minor,
            links: c.links,
            expires_at: c.expires_at_s,
            signature: hex::encode(&s.signature),
        }
    }
}

impl CommitmentJson {
    /// Parses the fields (the signature is checked by whoever holds the
    /// payer's key).
    pub fn parse(&self) -> Result<SignedCommitment, WireError> {
        let name = |s: &str, what: &str| Name::parse(s).map_err(|e| bad(format!("{what}: {e}")));
        if self.signature.len() > 2 * SIGNATURE_BYTES_MAX {
            return Err(bad("the signature is longer than any signature"));
        }
        Ok(SignedCommitment {
            commitment: Commitment {
                id: parse_channel_id(&self.id)?,
                payer: name(&self.payer, "payer")?,
                payee: name(&self.payee, "payee")?,
                root: parse_link(&self.root, "root")?,
                value_minor: self.value,
                links: self.links,
                expires_at_s: self.expires_at,
            },
            signature: hex::decode(&self.signature).map_err(|_| bad("signature must be hex"))?,
        })
    }
}

/// Parses a channel id (32 lowercase hex digits).
pub fn parse_channel_id(s: &str) -> Result<ChannelId, WireError> {
    ChannelId::from_hex(s).ok_or_else(|| bad("channel_id must be 32 lowercase hex digits"))
}

/// Parses a link (64 lowercase hex digits).
pub fn parse_link(s: &str, what: &str) -> Result<Link, WireError> {
    Link::from_hex(s).ok_or_else(|| bad(format!("{what} must be 64 lowercase hex digits")))
}

/// The reply to `channel_open`: the server-signed open receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelOpened {
    /// The channel id.
    pub channel_id: String,
    /// SHA-256 of the commitment's canonical bytes, hex.
    pub commitment_hash: String,
    /// The amount held, links × value.
    pub hold: u64,
    /// When the hold was placed, unix ms.
    pub opened_at_ms: u64,
    /// Whether this repeats an earlier open of the same commitment.
    pub replay: bool,
    /// The server's signature over the open receipt's canonical bytes.
    pub server_signature: String,
}

/// The reply to `channel_close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelClosed {
    /// The channel id.
    pub channel_id: String,
    /// Links paid.
    pub index: u64,
    /// Paid to the payee.
    pub paid: u64,
    /// Returned to the payer.
    pub released: u64,
    /// When the first close was decided, unix ms.
    pub closed_at_ms: u64,
    /// Whether this answers an earlier close (nothing moved now).
    pub replay: bool,
}

/// The payee's answer to `channel_offer` and `channel_pay`: the index it
/// now holds durably.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelAck {
    /// The channel id.
    pub channel_id: String,
    /// The index held (0 right after the offer).
    pub index: u64,
}

/// One payment channel as `history` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelEntry {
    /// The channel id.
    pub channel_id: String,
    /// Who pays.
    pub payer: String,
    /// Who is paid.
    pub payee: String,
    /// n.
    pub links: u64,
    /// Minor units per link.
    pub value: u64,
    /// links × value, held at the open.
    pub hold: u64,
    /// When it opened, unix ms.
    pub opened_at_ms: u64,
    /// Unix seconds.
    pub expires_at: u64,
    /// `open`, `closed` or `expired`.
    pub state: String,
    /// Paid to the payee (closed channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid: Option<u64>,
    /// Returned to the payer (closed or expired channels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<u64>,
    /// When it closed or expired, unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
}

impl From<&ChannelRecord> for ChannelEntry {
    fn from(r: &ChannelRecord) -> ChannelEntry {
        let c = &r.signed.commitment;
        let (state, paid, released, ended_at_ms) = match r.end {
            ChannelEnd::Open => ("open", None, None, None),
            ChannelEnd::Closed(o) => (
                "closed",
                Some(o.paid_minor),
                Some(o.released_minor),
                Some(o.at_ms),
            ),
            ChannelEnd::Expired {
                released_minor,
                at_ms,
            } => ("expired", None, Some(released_minor), Some(at_ms)),
        };
        ChannelEntry {
            channel_id: c.id.to_hex(),
            payer: c.payer.to_string(),
            payee: c.payee.to_string(),
            links: c.links,
            value: c.value_minor,
            hold: r.hold_minor,
            opened_at_ms: r.opened_at_ms,
            expires_at: c.expires_at_s,
            state: state.to_owned(),
            paid,
            released,
            ended_at_ms,
        }
    }
}

impl From<ChannelRefusal> for WireError {
    /// The one place where the channel rules' refusals become wire codes.
    fn from(r: ChannelRefusal) -> WireError {
        let code = match r.kind {
            ChannelRefusalKind::SelfChannel => ErrorCode::SelfPayment,
            ChannelRefusalKind::BadTerms
            | ChannelRefusalKind::Overflow
            | ChannelRefusalKind::ExpiryTooFar
            | ChannelRefusalKind::BeyondEnd
            | ChannelRefusalKind::NotExpirable => ErrorCode::BadRequest,
            ChannelRefusalKind::Expired | ChannelRefusalKind::AlreadyExpired => ErrorCode::Expired,
            ChannelRefusalKind::UnknownPayer => ErrorCode::UnknownPayer,
            ChannelRefusalKind::UnknownPayee => ErrorCode::UnknownPayee,
            ChannelRefusalKind::InsufficientFunds => ErrorCode::InsufficientFunds,
            ChannelRefusalKind::KeyChanged => ErrorCode::KeyMismatch,
            ChannelRefusalKind::Conflict => ErrorCode::Conflict,
            ChannelRefusalKind::UnknownChannel => ErrorCode::NotFound,
            ChannelRefusalKind::NotPayee => ErrorCode::Forbidden,
            ChannelRefusalKind::BadLink => ErrorCode::BadSignature,
        };
        WireError::new(code, r.message)
    }
}
