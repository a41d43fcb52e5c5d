//! `send`: pay a peer directly. Find the payee through the server, dial
//! them with their name as the TLS server name (so the handshake proves
//! who answers), hand them a signed payment and verify the server's
//! receipt they hand back.

use super::{PeerError, Person};
use crate::core::limits::{
    CONNECT_TIMEOUT_MS_DEFAULT, PAYMENT_LIFETIME_DEFAULT_S, SEND_TIMEOUT_MS_DEFAULT,
};
use crate::core::name::Name;
use crate::core::payment::{Payment, PaymentId, SignedReceipt};
use crate::net::link::{CallError, Link};
use crate::system::clock::now_s;
use crate::wire::{Balance, OnlinePeer, PaymentJson, PeerRequest, ServerRequest, Settled};

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
    /// How long to wait for the receipt, ms.
    pub timeout_ms: u64,
    /// The payment's lifetime, s.
    pub lifetime_s: u64,
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
        }
    }
}

/// A completed `send`.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The verified receipt.
    pub receipt: SignedReceipt,
    /// My balance afterwards.
    pub balance: u64,
    /// Where the payee was reached.
    pub payee_address: String,
}

/// Pays a peer directly: find them, dial them as their name, hand them a
/// signed payment, verify the server's receipt they hand back.
pub async fn send(person: &Person, options: &SendOptions) -> Result<Sent, PeerError> {
    let server = person.connect_server(&options.server).await?;
    // The key of the certificate carrying the server-role mark, never a
    // person's (connect_server has refused anything else).
    let server_key = server.server_key().ok();
    let located: OnlinePeer = server
        .call(&ServerRequest::Locate {
            name: options.payee.to_string(),
        })
        .await?;
    let payment = Payment {
        id: PaymentId::random(),
        payer: person.name.clone(),
        payee: options.payee.clone(),
        amount_minor: options.amount_minor,
        expires_at_s: now_s().saturating_add(options.lifetime_s),
        memo: options.memo.clone(),
    };
    payment
        .check_fields()
        .map_err(|e| CallError::Refused(e.into()))?;
    let signed = payment.sign(&person.key);
    let mut peer = Link::connect(
        &located.address,
        options.payee.as_str(),
        person.client.clone(),
        options.timeout_ms.min(CONNECT_TIMEOUT_MS_DEFAULT),
    )
    .await
    .map_err(|e| match e {
        // A certificate for another name: someone else answers there.
        CallError::NotThatPeer { reason, .. } => PeerError::WrongListener {
            payee: options.payee.clone(),
            address: located.address.clone(),
            reason,
        },
        other => other.into(),
    })?;
    peer.set_request_timeout_ms(options.timeout_ms);
    let settled: Settled = match peer
        .call(&PeerRequest::Pay {
            payment: PaymentJson::from(&signed),
        })
        .await
    {
        Ok(settled) => settled,
        Err(CallError::Refused(w)) => return Err(CallError::Refused(w).into()),
        Err(other) => {
            return Err(PeerError::Vanished {
                payee: options.payee.clone(),
                payment_id: signed.payment.id,
                reason: other.to_string(),
            })
        }
    };
    let receipt = SignedReceipt::try_from(&settled.receipt).map_err(CallError::Refused)?;
    let genuine = server_key
        .as_ref()
        .is_some_and(|k| receipt.verify(k).is_ok() && receipt.matches(&signed));
    if !genuine {
        return Err(PeerError::BadReceipt(signed.payment.id));
    }
    let balance: Balance = server.call(&ServerRequest::Balance {}).await?;
    Ok(Sent {
        receipt,
        balance: balance.balance,
        payee_address: located.address,
    })
}
