//! `send`: pay a peer directly. Find the payee through the server, dial
//! them with their name as the TLS server name (so the handshake proves
//! who answers), hand them a signed payment and verify the server's
//! receipt they hand back (by its log proof, or without one by the
//! server's signature).

use super::{PeerError, Person};
use std::time::{Duration, Instant};

use crate::core::keys::VerifyingKey;
use crate::core::limits::{
    CONNECT_TIMEOUT_MS_DEFAULT, PAYMENT_LIFETIME_DEFAULT_S, SEND_TIMEOUT_MS_DEFAULT,
    STATUS_AFTER_FAILURE_TIMEOUT_MS,
};
use crate::core::name::Name;
use crate::core::payment::{Payment, PaymentId, Receipt, SignedPayment};
use crate::core::receipt_check::{Evidence, ReceiptError};
use crate::net::link::{CallError, Link};
use crate::system::clock::now_s;
use crate::wire::{
    Balance, ErrorCode, LogProofJson, OnlinePeer, PaymentJson, PaymentStatus, PeerRequest,
    ReceiptJson, ServerRequest, Settled,
};

/// What `send` asks for.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The server, `host:port`.
    pub server: String,
    /// Who to pay.
    pub payee: Name,
    /// How much, minor units.
    pub amount_minor: u64,
    /// Memo.
    pub memo: String,
    /// How long the whole `send` may take, ms: connecting to the server,
    /// locating the payee, dialling them and waiting for the receipt.
    pub timeout_ms: u64,
    /// The payment's lifetime, s (when no `expires_at_s` is given).
    pub lifetime_s: u64,
    /// Retry an earlier payment: its id and expiry. With the same payee,
    /// amount and memo this is the identical payment, so the server
    /// settles it at most once and a retry returns the original receipt.
    pub retry: Option<(PaymentId, u64)>,
    /// The state file of the last checkpoint seen per server: when set
    /// and the server keeps a log, `send` checks after the receipt that
    /// the log only grew since (docs/PROTOCOL.md §11.5).
    pub log_state: Option<std::path::PathBuf>,
}

impl SendOptions {
    /// Options with the default lifetime and a 30 s timeout.
    pub fn new(server: &str, payee: Name, amount_minor: u64) -> SendOptions {
        SendOptions {
            server: server.to_owned(),
            payee,
            amount_minor,
            memo: String::new(),
            timeout_ms: SEND_TIMEOUT_MS_DEFAULT,
            lifetime_s: PAYMENT_LIFETIME_DEFAULT_S,
            retry: None,
            log_state: None,
        }
    }
}

/// A completed `send`.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The verified receipt.
    pub receipt: Receipt,
    /// The server's signature over it, when the reply carried one (only
    /// when it carried no log proof, from a server of this version).
    pub signature: Option<Vec<u8>>,
    /// The receipt's place in the server's log, when the reply had one.
    pub log: Option<LogProofJson>,
    /// What proved the receipt: the log proof, or the signature.
    pub evidence: Evidence,
    /// My balance afterwards.
    pub balance: u64,
    /// Where the payee was reached.
    pub payee_address: String,
}

/// What is left of the time `send` was given.
struct Deadline(Instant);

impl Deadline {
    fn after_ms(ms: u64) -> Deadline {
        Deadline(Instant::now() + Duration::from_millis(ms))
    }

    /// Milliseconds left, at least 1 so that a step fails by timing out
    /// rather than not starting.
    fn left_ms(&self) -> u64 {
        let left = self.0.saturating_duration_since(Instant::now()).as_millis();
        u64::try_from(left).unwrap_or(u64::MAX).max(1)
    }
}

/// Pays a peer directly: find them, dial them as their name, hand them a
/// signed payment, verify the server's receipt they hand back. A payee's
/// word is never taken for a refusal: after any failure once the payee
/// holds the signed payment, the server is asked for its outcome.
pub async fn send(person: &Person, options: &SendOptions) -> Result<Sent, PeerError> {
    let deadline = Deadline::after_ms(options.timeout_ms);
    let mut server = person
        .connect_server_within(
            &options.server,
            deadline.left_ms().min(CONNECT_TIMEOUT_MS_DEFAULT),
        )
        .await?;
    // The key of the certificate carrying the server-role mark, never a
    // person's (connect_server has refused anything else).
    let server_key = server.server_key().map_err(|e| CallError::NotTheServer {
        addr: options.server.clone(),
        reason: e.to_string(),
    })?;
    server.set_request_timeout_ms(deadline.left_ms());
    let located: OnlinePeer = server
        .call(&ServerRequest::Locate {
            name: options.payee.to_string(),
        })
        .await?;
    let signed = sign(person, options)?;
    let mut peer = dial(person, options, &located.address, &deadline).await?;
    peer.set_request_timeout_ms(deadline.left_ms());
    let handed = peer
        .call::<Settled>(&PeerRequest::Pay {
            payment: PaymentJson::from(&signed),
        })
        .await;
    let (receipt, log) = match handed {
        Ok(settled) => (settled.receipt, settled.log),
        Err(payee_error) => {
            server.set_request_timeout_ms(STATUS_AFTER_FAILURE_TIMEOUT_MS);
            outcome_from_server(&server, options, &signed, payee_error).await?
        }
    };
    let (receipt, signature, evidence) =
        check_reply(person, &server_key, &signed, &receipt, log.as_ref())?;
    if let (Evidence::Log(_), Some(state)) = (&evidence, &options.log_state) {
        check_history(&server, state, signed.payment.id).await?;
    }
    server.set_request_timeout_ms(STATUS_AFTER_FAILURE_TIMEOUT_MS);
    let balance: Balance = server.call(&ServerRequest::Balance {}).await?;
    Ok(Sent {
        receipt,
        signature,
        log,
        evidence,
        balance: balance.balance,
        payee_address: located.address,
    })
}

/// Decodes and checks the receipt of `signed`. The payee relays the
/// reply, so nothing in it is taken on its word: its log proof, or without
/// one the server's signature, must verify with the server's key.
fn check_reply(
    person: &Person,
    server_key: &VerifyingKey,
    signed: &SignedPayment,
    json: &ReceiptJson,
    log: Option<&LogProofJson>,
) -> Result<(Receipt, Option<Vec<u8>>, Evidence), PeerError> {
    let id = signed.payment.id;
    let receipt = Receipt::try_from(json).map_err(CallError::Refused)?;
    let signature = json.signature_bytes().map_err(CallError::Refused)?;
    let evidence = person
        .check_receipt(server_key, signed, &receipt, signature.as_deref(), log)
        .map_err(|e| match e {
            ReceiptError::BadLogProof(e) => PeerError::BadLogProof(id, e),
            other => PeerError::BadReceipt(id, other),
        })?;
    Ok((receipt, signature, evidence))
}

/// The signed payment: new, or the identical one again for a retry.
fn sign(person: &Person, options: &SendOptions) -> Result<SignedPayment, PeerError> {
    let (id, expires_at_s) = options.retry.unwrap_or_else(|| {
        (
            PaymentId::random(),
            now_s().saturating_add(options.lifetime_s),
        )
    });
    let payment = Payment {
        id,
        payer: person.name.clone(),
        payee: options.payee.clone(),
        amount_minor: options.amount_minor,
        expires_at_s,
        memo: options.memo.clone(),
    };
    payment
        .check_fields()
        .map_err(|e| CallError::Refused(e.into()))?;
    Ok(payment.sign(&person.key))
}

/// Dials the payee by name; a certificate for another name means someone
/// else answers at that address.
async fn dial(
    person: &Person,
    options: &SendOptions,
    address: &str,
    deadline: &Deadline,
) -> Result<Link, PeerError> {
    let timeout_ms = deadline.left_ms().min(CONNECT_TIMEOUT_MS_DEFAULT);
    Link::connect(
        address,
        options.payee.as_str(),
        person.client.clone(),
        timeout_ms,
    )
    .await
    .map_err(|e| match e {
        CallError::NotThatPeer { reason, .. } => PeerError::WrongListener {
            payee: options.payee.clone(),
            address: address.to_owned(),
            reason,
        },
        CallError::Connect { reason, .. } => PeerError::PayeeUnreachable {
            payee: options.payee.clone(),
            address: address.to_owned(),
            reason,
        },
        other => other.into(),
    })
}

/// After the payee failed to hand back a receipt (or said no), the
/// server's record decides: its receipt, its refusal, or "not known yet".
async fn outcome_from_server(
    server: &Link,
    options: &SendOptions,
    signed: &SignedPayment,
    payee_error: CallError,
) -> Result<(ReceiptJson, Option<LogProofJson>), PeerError> {
    let id = signed.payment.id;
    let unknown = |reason: String| PeerError::OutcomeUnknown {
        payee: options.payee.clone(),
        payment_id: id,
        expires_at_s: signed.payment.expires_at_s,
        reason,
    };
    let status = server
        .call::<PaymentStatus>(&ServerRequest::Status {
            payment_id: id.to_hex(),
        })
        .await;
    match status {
        Ok(PaymentStatus::Settled { receipt, log }) => Ok((receipt, log)),
        Ok(PaymentStatus::Rejected { error }) => Err(CallError::Refused(error).into()),
        Err(CallError::Refused(e)) if e.code == ErrorCode::NotFound => Err(unknown(format!(
            "the payee said: {payee_error}; the server has no record of it yet"
        ))),
        Err(status_error) => Err(unknown(format!(
            "the payee said: {payee_error}; asking the server failed: {status_error}"
        ))),
    }
}

/// Checks that the server's log only grew since this client last saw it.
/// A changed history is an error (the payment did settle); a state file
/// that cannot be used is only a warning, since the payment is done.
async fn check_history(
    server: &Link,
    state: &std::path::Path,
    id: PaymentId,
) -> Result<(), PeerError> {
    use crate::person::log_state::{check_log, LogStateError};
    match check_log(server, state).await {
        Ok(_) => Ok(()),
        Err(e @ LogStateError::HistoryChanged { .. }) => {
            Err(PeerError::LogHistoryChanged(id, e.to_string()))
        }
        Err(e) => {
            tracing::warn!("could not check the server's log history: {e}");
            Ok(())
        }
    }
}
