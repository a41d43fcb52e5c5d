//! The JSON forms of payments, receipts and every operation's result.
//! Transport only: signatures cover canonical bytes, never this text.

use serde::{Deserialize, Serialize};

use crate::core::keys::SIGNATURE_BYTES_MAX;
use crate::core::name::Name;
use crate::core::payment::{
    is_lower_hex, Payment, PaymentError, PaymentId, Receipt, SignedPayment, SignedReceipt,
};
use crate::core::receipt_check::LogPlace;
use crate::wire::errors::{ErrorCode, WireError};

/// A payment as JSON. Transport only: the signature covers the canonical
/// bytes, never this text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentJson {
    /// 32 hex digits.
    pub id: String,
    /// Payer's name.
    pub payer: String,
    /// Payee's name.
    pub payee: String,
    /// Minor units, a JSON integer.
    pub amount: u64,
    /// Unix seconds.
    pub expires_at: u64,
    /// Optional memo.
    #[serde(default)]
    pub memo: String,
    /// Hex signature over the canonical bytes.
    pub signature: String,
}

impl From<&SignedPayment> for PaymentJson {
    fn from(s: &SignedPayment) -> PaymentJson {
        PaymentJson {
            id: s.payment.id.to_hex(),
            payer: s.payment.payer.to_string(),
            payee: s.payment.payee.to_string(),
            amount: s.payment.amount_minor,
            expires_at: s.payment.expires_at_s,
            memo: s.payment.memo.clone(),
            signature: hex::encode(&s.signature),
        }
    }
}

/// Decodes lowercase hex; anything else (uppercase included) is `None`.
fn lower_hex_bytes(s: &str) -> Option<Vec<u8>> {
    if !is_lower_hex(s) {
        return None;
    }
    hex::decode(s).ok()
}

impl TryFrom<&PaymentJson> for SignedPayment {
    type Error = WireError;

    /// Decodes and checks every field that needs no clock, key or ledger.
    fn try_from(j: &PaymentJson) -> Result<SignedPayment, WireError> {
        let bad = |m: String| WireError::new(ErrorCode::BadRequest, m);
        let id = PaymentId::from_hex(&j.id)
            .ok_or_else(|| bad("payment id must be 32 lowercase hex digits".into()))?;
        let payer = Name::parse(&j.payer).map_err(|e| bad(format!("payer: {e}")))?;
        let payee = Name::parse(&j.payee).map_err(|e| bad(format!("payee: {e}")))?;
        if j.signature.len() > 2 * SIGNATURE_BYTES_MAX {
            return Err(PaymentError::SignatureTooLong.into());
        }
        let signature = lower_hex_bytes(&j.signature)
            .ok_or_else(|| bad("signature must be lowercase hex".into()))?;
        let payment = Payment {
            id,
            payer,
            payee,
            amount_minor: j.amount,
            expires_at_s: j.expires_at,
            memo: j.memo.clone(),
        };
        payment.check_fields()?;
        Ok(SignedPayment { payment, signature })
    }
}

/// A receipt as JSON. `signature` is present only when the reply carries
/// no log proof (docs/PROTOCOL.md §5): a proof leads to a checkpoint the
/// server signed once for its whole batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptJson {
    /// The payment id, 32 hex digits.
    pub payment_id: String,
    /// Payer's name.
    pub payer: String,
    /// Payee's name.
    pub payee: String,
    /// Minor units.
    pub amount: u64,
    /// Ledger sequence number.
    pub seq: u64,
    /// Unix milliseconds.
    pub settled_at_ms: u64,
    /// SHA-256 of the payment's canonical bytes, hex.
    pub payment_hash: String,
    /// The server's signature over the receipt's canonical bytes, hex;
    /// absent when the reply proves the receipt by the log instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl From<&Receipt> for ReceiptJson {
    /// The unsigned form, for a reply that carries a log proof.
    fn from(r: &Receipt) -> ReceiptJson {
        ReceiptJson {
            payment_id: r.payment_id.to_hex(),
            payer: r.payer.to_string(),
            payee: r.payee.to_string(),
            amount: r.amount_minor,
            seq: r.seq,
            settled_at_ms: r.settled_at_ms,
            payment_hash: hex::encode(r.payment_hash),
            signature: None,
        }
    }
}

impl From<&SignedReceipt> for ReceiptJson {
    fn from(s: &SignedReceipt) -> ReceiptJson {
        ReceiptJson {
            signature: Some(hex::encode(&s.signature)),
            ..ReceiptJson::from(&s.receipt)
        }
    }
}

impl TryFrom<&ReceiptJson> for Receipt {
    type Error = WireError;

    /// Decodes the attested fields; the signature is not looked at.
    fn try_from(j: &ReceiptJson) -> Result<Receipt, WireError> {
        let bad = |m: &str| WireError::new(ErrorCode::BadRequest, m);
        let mut payment_hash = [0u8; 32];
        if !is_lower_hex(&j.payment_hash) {
            return Err(bad("payment_hash must be 64 lowercase hex digits"));
        }
        hex::decode_to_slice(&j.payment_hash, &mut payment_hash)
            .map_err(|_| bad("payment_hash must be 64 lowercase hex digits"))?;
        Ok(Receipt {
            payment_id: PaymentId::from_hex(&j.payment_id)
                .ok_or_else(|| bad("payment_id must be 32 lowercase hex digits"))?,
            payer: Name::parse(&j.payer).map_err(|_| bad("bad payer name"))?,
            payee: Name::parse(&j.payee).map_err(|_| bad("bad payee name"))?,
            amount_minor: j.amount,
            seq: j.seq,
            settled_at_ms: j.settled_at_ms,
            payment_hash,
        })
    }
}

impl ReceiptJson {
    /// The decoded signature, `None` when the receipt is unsigned.
    pub fn signature_bytes(&self) -> Result<Option<Vec<u8>>, WireError> {
        let Some(signature) = &self.signature else {
            return Ok(None);
        };
        // Bounded before decoding: the text comes from a peer.
        if signature.len() > 2 * SIGNATURE_BYTES_MAX {
            return Err(PaymentError::SignatureTooLong.into());
        }
        lower_hex_bytes(signature)
            .map(Some)
            .ok_or_else(|| WireError::new(ErrorCode::BadRequest, "signature must be lowercase hex"))
    }
}

impl TryFrom<&ReceiptJson> for SignedReceipt {
    type Error = WireError;

    /// A signed receipt; an unsigned one (proven by the log instead) is
    /// refused here.
    fn try_from(j: &ReceiptJson) -> Result<SignedReceipt, WireError> {
        let receipt = Receipt::try_from(j)?;
        let signature = j.signature_bytes()?.ok_or_else(|| {
            WireError::new(
                ErrorCode::BadRequest,
                "the receipt is not signed (its reply proves it by the log)",
            )
        })?;
        Ok(SignedReceipt { receipt, signature })
    }
}

/// `register`: the new account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// Your name.
    pub name: String,
    /// Your opening balance.
    pub balance: u64,
    /// The fingerprint of the key your account is bound to.
    pub key_fingerprint: String,
}

/// `online`: where others will reach you.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Online {
    /// `host:port` as advertised.
    pub address: String,
    /// Whether this replaced a live presence announced by another
    /// connection of the same person (another `serve` took over).
    #[serde(default)]
    pub replaced: bool,
}

/// One person online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlinePeer {
    /// Their name.
    pub name: String,
    /// `host:port` of their peer listener.
    pub address: String,
}

/// `list`: your balance and who is online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Your balance (available: holds excluded).
    pub balance: u64,
    /// Minor units held by your open payment channels as payer.
    #[serde(default)]
    pub held: u64,
    /// SHA-256 fingerprint of the server's receipt-signing key.
    pub server_key_fingerprint: String,
    /// How many people are online.
    pub online_count: usize,
    /// Who is online (at most 1000 entries), sorted by name.
    pub online: Vec<OnlinePeer>,
}

/// `balance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Your name.
    pub name: String,
    /// Your balance in minor units (available: holds excluded).
    pub balance: u64,
    /// Minor units held by your open payment channels as payer.
    #[serde(default)]
    pub held: u64,
}

/// One settled payment as history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Ledger sequence number.
    pub seq: u64,
    /// Payment id.
    pub payment_id: String,
    /// Who paid.
    pub payer: String,
    /// Who was paid.
    pub payee: String,
    /// Minor units.
    pub amount: u64,
    /// Memo.
    pub memo: String,
    /// Unix milliseconds.
    pub settled_at_ms: u64,
}

/// `history`: a page, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The entries.
    pub entries: Vec<HistoryEntry>,
    /// Pass as `before_seq` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before_seq: Option<u64>,
    /// The caller's balance, read in the same snapshot as `entries`: on a
    /// page asked without `before_seq` it is the balance after the newest
    /// entry, the anchor of a statement's running balance. Absent when
    /// the caller has no account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<u64>,
    /// On the first page (no `before_seq`): the caller's newest payment
    /// channels, as payer or payee, with their opens and closes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<crate::wire::channel::ChannelEntry>,
}

/// `status`: a payment's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Settled; here is the receipt.
    Settled {
        /// The receipt: signed only when `log` is absent.
        receipt: ReceiptJson,
        /// The log's proof that the payment is in its tree, when the
        /// server keeps a log.
        #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
        log: Option<LogProofJson>,
    },
    /// Refused for good; the same payment will always be refused so.
    Rejected {
        /// Why.
        error: WireError,
    },
}

/// `settle` and `pay`: the receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// The receipt: signed only when `log` is absent.
    pub receipt: ReceiptJson,
    /// Whether this payment had settled before: the receipt is the
    /// original one and nothing moved now.
    #[serde(default)]
    pub replay: bool,
    /// The log's proof that the payment is in its tree, when the server
    /// keeps a log.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub log: Option<LogProofJson>,
}

/// A settled payment's place in the log (docs/PROTOCOL.md, "The log"):
/// its leaf, the inclusion proof and the signed checkpoint it leads to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogProofJson {
    /// The payment's leaf index, as the server gives it (records of other
    /// kinds share the log: not derived from `seq`).
    pub leaf_index: u64,
    /// The RFC 9162 inclusion proof, lowercase hex hashes, leaf side first.
    pub inclusion_proof: Vec<String>,
    /// The checkpoint (a C2SP signed note) whose root the proof reaches.
    pub checkpoint: String,
}

impl LogProofJson {
    /// The place this proof claims, as [`crate::core::receipt_check`]
    /// checks it.
    pub fn place(&self) -> LogPlace<'_> {
        LogPlace {
            leaf_index: self.leaf_index,
            proof: &self.inclusion_proof,
            checkpoint: &self.checkpoint,
        }
    }
}

/// `checkpoint`: the log's latest signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointJson {
    /// The signed note.
    pub checkpoint: String,
}

/// `consistency`: the proof that the tree of `from_size` leaves is a
/// prefix of the tree of `to_size` leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyJson {
    /// The older size.
    pub from_size: u64,
    /// The newer size.
    pub to_size: u64,
    /// The RFC 9162 consistency proof, lowercase hex hashes.
    pub proof: Vec<String>,
}

/// `rotate`: the key the account is bound to now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rotated {
    /// Your name.
    pub name: String,
    /// `rotate` (a new key) or `renew` (the same key, a later notAfter).
    pub kind: String,
    /// The fingerprint of the key your account is bound to now.
    pub key_fingerprint: String,
    /// Until when (unix s) payments signed with it settle.
    pub not_after: u64,
}
