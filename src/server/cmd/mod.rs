//! One handler per server operation, in the manner of mini-redis's
//! `cmd/`: each file parses its request's fields, checks its rules and
//! builds its reply. [`dispatch`] checks that the caller may act at all
//! and routes the request.

mod balance;
mod channel;
mod history;
mod list;
mod locate;
mod log;
mod offline;
mod online;
mod register;
mod rotate;
mod settle;
mod status;

use crate::core::refusal_budget::RefusalBudget;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::core::keys::SigningKey;
use crate::ledger::{Ledger, LedgerError};
use crate::metrics::{ServerMetrics, SettlementOutcome};
use crate::net::identity::Identity;
use crate::net::revocation::Revocations;
use crate::server::presence::{Presence, PresenceError};
use crate::system::clock::now_s;
use crate::wire::{to_result_json, ErrorCode, ResultJson, ServerRequest, WireError};

/// What every handler may use: the ledger, presence and the receipt key.
pub struct Context {
    /// The ledger.
    pub ledger: Ledger,
    /// Who is online.
    pub presence: Box<dyn Presence>,
    /// The key that signs receipts and the log's checkpoints.
    pub signing_key: Arc<SigningKey>,
    /// Its fingerprint, as `list` shows it.
    pub fingerprint: String,
    /// Refusals each payer may have decided per window.
    pub refusals: std::sync::Mutex<RefusalBudget>,
    /// The certificates revoked by the CRL in force (none without
    /// `--crl`), checked at every request.
    pub revocations: Revocations,
    /// What the server counts.
    pub metrics: Arc<ServerMetrics>,
    /// Checks payment signatures in batches.
    pub verifier: crate::server::verifier::SignatureVerifier,
}

/// What a connection knows about its peer.
pub struct Caller {
    /// The verified certificate's identity.
    pub identity: Identity,
    /// This connection, for presence.
    pub conn_id: u64,
    /// The source address.
    pub peer_ip: IpAddr,
}

impl From<LedgerError> for WireError {
    /// How the ledger's failures (not the rules' refusals) reach callers.
    fn from(e: LedgerError) -> WireError {
        match e {
            LedgerError::Busy | LedgerError::Stopped => {
                WireError::new(ErrorCode::Busy, e.to_string())
            }
            LedgerError::Unavailable(_) => WireError::new(
                ErrorCode::Unavailable,
                "the ledger's database is unavailable; nothing was moved by this request unless its status says so; retry shortly",
            ),
            other => WireError::new(ErrorCode::Internal, format!("ledger: {other}")),
        }
    }
}

impl From<PresenceError> for WireError {
    fn from(e: PresenceError) -> WireError {
        match e {
            PresenceError::Unavailable(_) => WireError::new(
                ErrorCode::Unavailable,
                "presence is unavailable (its database cannot be reached); retry shortly",
            ),
        }
    }
}

/// The refusal of a revoked certificate (the connection then closes).
pub fn revoked(identity: &Identity) -> WireError {
    WireError::new(
        ErrorCode::CertificateRevoked,
        format!(
            "your certificate (serial {}) is revoked; this connection closes; get a new certificate",
            identity.serial_hex()
        ),
    )
}

/// Serializes a handler's result.
fn reply<T: serde::Serialize>(v: T) -> Result<ResultJson, WireError> {
    to_result_json(&v)
}

/// Checks the caller and runs the request's handler. Every `settle` is
/// counted by outcome and timed, including those the gate refuses.
pub async fn dispatch(
    cx: &Context,
    caller: &Caller,
    request: ServerRequest,
) -> Result<ResultJson, WireError> {
    let may = match request {
        ServerRequest::Register {} => May::Unregistered,
        // The point of `rotate` is a certificate whose key is not the
        // registered one; it proves the registered key itself.
        ServerRequest::Rotate { .. } => May::OtherKey,
        _ => May::RegisteredKeyOnly,
    };
    let settling = matches!(request, ServerRequest::Settle { .. });
    // Only a settlement is timed.
    let started = settling.then(Instant::now);
    let gated = gate(cx, caller, may).await;
    if !settling {
        gated.clone()?;
    }
    match request {
        ServerRequest::Register {} => register::run(cx, caller).await,
        ServerRequest::Online { port, address } => {
            online::run(cx, caller, port, address.as_deref()).await
        }
        ServerRequest::Offline {} => offline::run(cx, caller).await,
        ServerRequest::List {} => list::run(cx, caller).await,
        ServerRequest::Locate { name } => locate::run(cx, &name).await,
        ServerRequest::Balance {} => balance::run(cx, caller).await,
        ServerRequest::History { limit, before_seq } => {
            history::run(cx, caller, limit, before_seq).await
        }
        ServerRequest::Status { payment_id } => status::run(cx, caller, &payment_id).await,
        ServerRequest::Settle { payment } => {
            let settled = match gated {
                Ok(()) => settle::run(cx, caller, &payment).await,
                Err(e) => Err(e),
            };
            let outcome = SettlementOutcome::of(&settled);
            let elapsed = started.map(|t| t.elapsed()).unwrap_or_default();
            cx.metrics.settlement(outcome, elapsed);
            reply(settled?)
        }
        ServerRequest::Rotate {
            old_signature,
            new_signature,
        } => rotate::run(cx, caller, &old_signature, &new_signature).await,
        ServerRequest::ChannelOpen { commitment } => channel::open(cx, caller, &commitment).await,
        ServerRequest::ChannelClose {
            channel_id,
            index,
            link,
        } => channel::close(cx, caller, (&channel_id, index, &link)).await,
        ServerRequest::Checkpoint {} => log::checkpoint(cx),
        ServerRequest::Consistency { from_size, to_size } => {
            log::consistency(cx, from_size, to_size)
        }
    }
}

/// Who may make a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum May {
    /// Anyone with a valid certificate (`register`).
    Unregistered,
    /// An account holder, whatever key the certificate has (`rotate`).
    OtherKey,
    /// An account holder whose certificate has the registered key.
    RegisteredKeyOnly,
}

/// Checks that the caller may act: certificate not revoked and still
/// valid, and (when registered) the same key as the account. On a
/// mismatch the key is re-read from the store before refusing: with
/// several servers on one database another server may have rotated it.
async fn gate(cx: &Context, caller: &Caller, may: May) -> Result<(), WireError> {
    let identity = &caller.identity;
    // Checked here, not only at the handshake: a resumed TLS session or a
    // connection opened before the revocation carries no new check.
    if cx.revocations.is_revoked(&identity.serial) {
        tracing::info!(name = %identity.name, serial = %identity.serial_hex(), "refused a revoked certificate; closing its connection");
        return Err(revoked(identity));
    }
    if !identity.valid_at(now_s()) {
        return Err(WireError::new(
            ErrorCode::CertificateExpired,
            "your certificate has expired; get a new one and reconnect",
        ));
    }
    let mut key = cx.ledger.key_of(&identity.name).await?;
    if key.as_ref().is_some_and(|k| **k != identity.key) {
        key = cx.ledger.refresh_key(&identity.name).await?;
    }
    match key {
        Some(_) if may == May::OtherKey => Ok(()),
        Some(key) if *key != identity.key => Err(WireError::new(
            ErrorCode::KeyMismatch,
            format!(
                "{} is registered with key {}, but this certificate has key {}",
                identity.name,
                key.fingerprint(),
                identity.key.fingerprint()
            ),
        )),
        Some(_) => Ok(()),
        None if may != May::Unregistered => Err(WireError::new(
            ErrorCode::NotRegistered,
            format!("{} has no account; register first", identity.name),
        )),
        None => Ok(()),
    }
}

/// A settled payment's receipt and its log proof. The receipt is signed
/// only when there is no proof (no log, or a payment this server's tree
/// does not hold): the proof's checkpoint is signed once per batch, so a
/// per-payment signature would be redundant work on the hot path
/// (docs/PROTOCOL.md §5).
fn receipt_reply(
    cx: &Context,
    receipt: crate::core::payment::Receipt,
) -> (crate::wire::ReceiptJson, Option<crate::wire::LogProofJson>) {
    match log_proof(cx, receipt.seq) {
        Some(log) => (crate::wire::ReceiptJson::from(&receipt), Some(log)),
        None => {
            let signed = receipt.sign(&cx.signing_key);
            (crate::wire::ReceiptJson::from(&signed), None)
        }
    }
}

/// The log's proof for payment `seq` under the latest checkpoint (none
/// when the server keeps no log or the payment is not yet under one).
fn log_proof(cx: &Context, seq: u64) -> Option<crate::wire::LogProofJson> {
    let proof = cx.ledger.log().inclusion(seq)?;
    Some(crate::wire::LogProofJson {
        leaf_index: proof.leaf_index,
        inclusion_proof: proof.proof.iter().map(hex::encode).collect(),
        checkpoint: proof.checkpoint,
    })
}
