//! Payment channels as both backends store them: one row per channel in
//! the `channels` table, written at the open and updated once at the
//! close or the expiry. [`StoredChannel`] is the raw row (audit must be
//! able to report rows that do not parse); [`StoredChannel::decode`] turns
//! it back into a [`ChannelRecord`].

use crate::core::channel::{ChannelId, Commitment, Link, SignedCommitment};
use crate::core::channel_rules::{ChannelEnd, ChannelRecord, CloseOutcome};
use crate::core::name::Name;
use crate::ledger::LedgerError;

/// The `state` of an open channel.
pub const STATE_OPEN: &str = "open";
/// The `state` of a channel its payee closed.
pub const STATE_CLOSED: &str = "closed";
/// The `state` of a channel whose hold returned at expiry.
pub const STATE_EXPIRED: &str = "expired";

/// A channel row as stored, before any interpretation.
#[derive(Debug, Clone, Default)]
pub struct StoredChannel {
    /// Channel id bytes.
    pub id: Vec<u8>,
    /// Payer name.
    pub payer: String,
    /// Payee name.
    pub payee: String,
    /// Root `w_0`.
    pub root: Vec<u8>,
    /// Value per link.
    pub value: i64,
    /// n.
    pub links: i64,
    /// Expiry, unix s.
    pub expires_at: i64,
    /// The payer's signature over the commitment.
    pub signature: Vec<u8>,
    /// SHA-256 of the commitment's canonical bytes.
    pub content_hash: Vec<u8>,
    /// The hold placed at the open.
    pub hold: i64,
    /// When it opened, unix ms.
    pub opened_at_ms: i64,
    /// `open`, `closed` or `expired`.
    pub state: String,
    /// Links paid at the close.
    pub close_index: Option<i64>,
    /// The link revealed at the close.
    pub close_link: Option<Vec<u8>>,
    /// Paid to the payee.
    pub paid: Option<i64>,
    /// Returned to the payer (at the close or the expiry).
    pub released: Option<i64>,
    /// When it closed or expired, unix ms.
    pub ended_at_ms: Option<i64>,
    /// SHA-256 of the close request's canonical bytes.
    pub close_hash: Option<Vec<u8>>,
    /// The first millisecond the hold may return to the payer, as stored
    /// (`None` where it is not read); derived from the commitment, so it
    /// is in no log record, and audit checks it against the commitment.
    pub expirable_at_ms: Option<i64>,
}

impl StoredChannel {
    /// The row a channel's open writes (both backends write exactly these
    /// columns at the open; the end columns come at the close or expiry).
    pub fn opened(record: &ChannelRecord) -> StoredChannel {
        let s = &record.signed;
        let k = &s.commitment;
        StoredChannel {
            id: k.id.0.to_vec(),
            payer: k.payer.as_str().to_owned(),
            payee: k.payee.as_str().to_owned(),
            root: k.root.0.to_vec(),
            value: int(k.value_minor),
            links: int(k.links),
            expires_at: int(k.expires_at_s),
            signature: s.signature.clone(),
            content_hash: s.content_hash().to_vec(),
            hold: int(record.hold_minor),
            opened_at_ms: int(record.opened_at_ms),
            state: STATE_OPEN.to_owned(),
            ..StoredChannel::default()
        }
    }
}

fn corrupt(what: &str) -> LedgerError {
    LedgerError::Corrupt(format!("channel row: {what}"))
}

fn unsigned(v: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(v).map_err(|_| corrupt(what))
}

fn bytes<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], LedgerError> {
    v.try_into().map_err(|_| corrupt(what))
}

impl StoredChannel {
    /// The commitment and signature stored in the row.
    pub fn signed(&self) -> Result<SignedCommitment, LedgerError> {
        let name = |s: &str, what| Name::parse(s).map_err(|_| corrupt(what));
        Ok(SignedCommitment {
            commitment: Commitment {
                id: ChannelId(bytes(&self.id, "id")?),
                payer: name(&self.payer, "payer")?,
                payee: name(&self.payee, "payee")?,
                root: Link(bytes(&self.root, "root")?),
                value_minor: unsigned(self.value, "value")?,
                links: unsigned(self.links, "links")?,
                expires_at_s: unsigned(self.expires_at, "expires_at")?,
            },
            signature: self.signature.clone(),
        })
    }

    /// The revealed link of a closed channel.
    pub fn close_link(&self) -> Result<Option<Link>, LedgerError> {
        self.close_link
            .as_deref()
            .map(|l| bytes(l, "close_link").map(Link))
            .transpose()
    }

    /// The row as a [`ChannelRecord`].
    pub fn decode(&self) -> Result<ChannelRecord, LedgerError> {
        let field = |v: Option<i64>, what| unsigned(v.ok_or_else(|| corrupt(what))?, what);
        let end = match self.state.as_str() {
            STATE_OPEN => ChannelEnd::Open,
            STATE_CLOSED => ChannelEnd::Closed(CloseOutcome {
                index: field(self.close_index, "close_index")?,
                paid_minor: field(self.paid, "paid")?,
                released_minor: field(self.released, "released")?,
                at_ms: field(self.ended_at_ms, "ended_at_ms")?,
                close_hash: bytes(
                    self.close_hash
                        .as_deref()
                        .ok_or_else(|| corrupt("close_hash"))?,
                    "close_hash",
                )?,
            }),
            STATE_EXPIRED => ChannelEnd::Expired {
                released_minor: field(self.released, "released")?,
                at_ms: field(self.ended_at_ms, "ended_at_ms")?,
            },
            _ => return Err(corrupt("unknown state")),
        };
        Ok(ChannelRecord {
            signed: self.signed()?,
            hold_minor: unsigned(self.hold, "hold")?,
            opened_at_ms: unsigned(self.opened_at_ms, "opened_at_ms")?,
            end,
        })
    }
}

/// A value stored as a signed 64-bit integer: every amount and time is
/// far below `i64::MAX` (the supply is bounded), so a larger one is a bug
/// the database reports rather than a silent wrap.
pub fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// What a checked channel row did to balances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMoves {
    /// The payer's name.
    pub payer: String,
    /// The payee's name.
    pub payee: String,
    /// The payer's net change of available balance (minus the hold, plus
    /// what came back).
    pub payer_delta: i128,
    /// The payee's gain.
    pub payee_delta: i128,
    /// What is still held (the hold of an open channel, else 0).
    pub held: u128,
}

/// Audits one channel row: it decodes, its content hash is its
/// commitment's, the payer signed it with one of `payer_keys` (every key
/// the payer's account ever had), its terms are valid and its hold is
/// n × value; a close reveals a link that hashes to the root in exactly
/// `index` ≤ n steps and pays index × value, releasing the rest; an expiry
/// returns the whole hold, and only after expiry plus grace. Returns what
/// the row moved, or every violation found.
pub fn audit_row(
    row: &StoredChannel,
    payer_keys: &[crate::core::keys::VerifyingKey],
) -> Result<ChannelMoves, Vec<String>> {
    let shown = hex::encode(&row.id);
    let record = row
        .decode()
        .map_err(|e| vec![format!("channel {shown}: {e}")])?;
    let c = &record.signed.commitment;
    let mut violations = Vec::new();
    let mut violate = |what: &str| violations.push(format!("channel {shown}: {what}"));
    if record.signed.content_hash()[..] != row.content_hash[..] {
        violate("content hash does not match the commitment");
    }
    if !payer_keys.iter().any(|k| record.signed.verify(k).is_ok()) {
        violate("the commitment's signature does not verify with any key of the payer");
    }
    if c.payer == c.payee || c.value_minor == 0 || c.links == 0 {
        violate("invalid terms");
    }
    let due_ms = int(crate::core::channel_rules::expirable_from_ms(c));
    if row.expirable_at_ms.is_some_and(|stored| stored != due_ms) {
        violate("the stored expiry instant is not the commitment's expiry plus grace");
    }
    if c.links > crate::core::limits::CHANNEL_LINKS_MAX {
        violate("more links than the limit");
    } else if c.hold_minor() != Some(record.hold_minor) {
        violate("the hold is not links × value");
    }
    let hold = i128::from(record.hold_minor);
    let (payer_delta, payee_delta, held) = match record.end {
        ChannelEnd::Open => (-hold, 0, record.hold_minor),
        ChannelEnd::Closed(outcome) => {
            audit_close(row, &record, &outcome, &mut violate);
            (
                -i128::from(outcome.paid_minor),
                i128::from(outcome.paid_minor),
                0,
            )
        }
        ChannelEnd::Expired {
            released_minor,
            at_ms,
        } => {
            if released_minor != record.hold_minor {
                violate("an expiry released other than the hold");
            }
            if at_ms < crate::core::channel_rules::expirable_from_ms(c) {
                violate("expired before expiry plus grace");
            }
            (i128::from(released_minor) - hold, 0, 0)
        }
    };
    if !violations.is_empty() {
        return Err(violations);
    }
    Ok(ChannelMoves {
        payer: row.payer.clone(),
        payee: row.payee.clone(),
        payer_delta,
        payee_delta,
        held: u128::from(held),
    })
}

fn audit_close(
    row: &StoredChannel,
    record: &ChannelRecord,
    outcome: &CloseOutcome,
    violate: &mut impl FnMut(&str),
) {
    let c = &record.signed.commitment;
    let Ok(Some(link)) = row.close_link() else {
        violate("a close without its link");
        return;
    };
    if outcome.index > c.links {
        violate("a close beyond n");
        return;
    }
    if crate::core::channel::hash_times(&c.id, &link, outcome.index) != c.root {
        violate("the close's link does not hash to the root");
    }
    let close = crate::core::channel::CloseRequest {
        id: c.id,
        index: outcome.index,
        link,
    };
    if crate::core::payment::content_hash(&close.canonical_bytes()) != outcome.close_hash {
        violate("the close hash does not match the close");
    }
    let paid = outcome.index.checked_mul(c.value_minor);
    let total = outcome.paid_minor.checked_add(outcome.released_minor);
    if paid != Some(outcome.paid_minor) || total != Some(record.hold_minor) {
        violate("the close did not pay index × value and release the rest");
    }
}
