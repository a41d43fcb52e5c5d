//! Peer to peer: a payee's listener (`serve`) and a payer's `send`.
//!
//! The payee's listener presents the payee's own certificate and requires
//! the payer's; the payer dials with the payee's name as the TLS server
//! name, so the handshake itself proves each side is who it claims. The
//! payee checks the payment (addressed to me, signed by the payer on the
//! other end of this very connection), forwards it to the server over its
//! own connection and hands the server's signed receipt back.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use crate::core::keys::SigningKey;
use crate::core::limits::PAYMENT_LIFETIME_DEFAULT_S;
use crate::core::name::Name;
use crate::core::payment::{Payment, PaymentId, SignedPayment, SignedReceipt};
use crate::net::identity::Identity;
use crate::net::link::{host_of, CallError, Link, CONNECT_TIMEOUT_MS_DEFAULT};
use crate::net::session::{accept_loop, refuse, run_session, SessionLimits};
use crate::net::tls::{self, Material, TlsError};
use crate::system::clock::now_s;
use crate::wire::{
    Balance, ErrorCode, OnlinePeer, PaymentJson, PeerRequest, ServerRequest, Settled, WireError,
};

/// Why a person's side could not proceed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Certificates or keys could not be loaded.
    #[error("{0}")]
    Tls(#[from] TlsError),
    /// The certificate does not name a person.
    #[error("your certificate is not a person certificate: {0}")]
    Identity(#[from] crate::net::identity::IdentityError),
    /// Talking to the server or a peer failed.
    #[error("{0}")]
    Call(#[from] CallError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// Where.
        addr: String,
        /// Why.
        error: std::io::Error,
    },
    /// The payee took the payment and then went silent or away.
    #[error("{payee} took payment {payment_id} but no receipt came back ({reason}); run `micropay-client status {payment_id}` to find out whether it settled")]
    Vanished {
        /// The payee.
        payee: Name,
        /// The payment, for `status`.
        payment_id: PaymentId,
        /// What happened.
        reason: String,
    },
    /// The listener at the payee's address is not the payee.
    #[error("the listener at {address} is not {payee}'s ({reason}); nothing was paid")]
    WrongListener {
        /// Who was expected.
        payee: Name,
        /// Where.
        address: String,
        /// The TLS error.
        reason: String,
    },
    /// The receipt did not verify against the server's key.
    #[error("the receipt for {0} does not carry a valid server signature for this payment")]
    BadReceipt(PaymentId),
    /// The server connection closed while serving.
    #[error("the server closed the connection")]
    ServerGone,
}

/// One person: name, TLS configurations and signing key.
pub struct Person {
    /// The person's name, from their certificate.
    pub name: Name,
    /// The signing key (the certificate's key).
    pub key: SigningKey,
    client: Arc<rustls::ClientConfig>,
    listener: Arc<rustls::ServerConfig>,
}

impl Person {
    /// Loads a person from PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Person, PeerError> {
        Person::from_material(Material::from_files(ca, cert, key)?)
    }

    /// Builds a person from loaded material.
    pub fn from_material(material: Material) -> Result<Person, PeerError> {
        let leaf = material
            .chain
            .first()
            .ok_or(crate::net::identity::IdentityError::Malformed)?;
        let identity = Identity::from_cert_der(leaf)?;
        Ok(Person {
            name: identity.name,
            key: material.signing_key()?,
            client: tls::client_config(&material)?,
            listener: tls::peer_listener_config(&material)?,
        })
    }

    /// The configuration for dialling a payee (see [`tls::payer_config`]).
    pub fn payer_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// Connects to the server at `addr` (`host:port`).
    pub async fn connect_server(&self, addr: &str) -> Result<Link, CallError> {
        Link::connect(
            addr,
            host_of(addr),
            self.client.clone(),
            CONNECT_TIMEOUT_MS_DEFAULT,
        )
        .await
    }
}

/// What `serve` reports as it runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ServeEvent {
    /// Listening and announced.
    Online {
        /// Local listening address.
        listen: String,
        /// Address the server tells payers.
        address: String,
    },
    /// A payment arrived and settled.
    Received {
        /// Payment id.
        payment_id: String,
        /// Who paid.
        payer: String,
        /// Amount.
        amount: u64,
        /// Memo.
        memo: String,
        /// Ledger seq.
        seq: u64,
    },
    /// A payment was refused (by me or by the server).
    Refused {
        /// Who tried to pay.
        payer: String,
        /// Error code.
        code: ErrorCode,
        /// Why.
        message: String,
    },
    /// Offline, stopping.
    Offline {},
}

/// How `serve` listens.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// `HOST:PORT` (or just `HOST`) to announce instead of the source
    /// address the server sees and the bound port.
    pub advertise: Option<String>,
    /// The server, `host:port`.
    pub server: String,
    /// Limits of the peer listener.
    pub limits: SessionLimits,
}

/// Goes online and accepts payments until `shutdown` resolves (or the
/// server goes away), then goes offline.
pub async fn serve(
    person: Arc<Person>,
    options: ServeOptions,
    events: mpsc::UnboundedSender<ServeEvent>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PeerError> {
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(|error| PeerError::Listen {
            addr: options.listen.to_string(),
            error,
        })?;
    let local = listener.local_addr().map_err(|error| PeerError::Listen {
        addr: options.listen.to_string(),
        error,
    })?;
    let server = Arc::new(person.connect_server(&options.server).await?);
    let (host, port) = match &options.advertise {
        None => (None, local.port()),
        Some(adv) => match adv
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        {
            Some((h, p)) => (
                Some(h.trim_start_matches('[').trim_end_matches(']').to_owned()),
                p,
            ),
            None => (Some(adv.clone()), local.port()),
        },
    };
    let online: crate::wire::Online = server
        .call(&ServerRequest::Online {
            port,
            address: host,
        })
        .await?;
    info!(address = %online.address, "online");
    let _ = events.send(ServeEvent::Online {
        listen: local.to_string(),
        address: online.address,
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let acceptor = TlsAcceptor::from(person.listener.clone());
    let ctx = Arc::new(PayeeCtx {
        person: person.clone(),
        server: server.clone(),
        events: events.clone(),
    });
    let conn_stop = stop_rx.clone();
    let limits = options.limits;
    let accepting = tokio::spawn(accept_loop(
        listener,
        acceptor,
        limits,
        stop_rx,
        move |tls, peer, _| payer_connection(ctx.clone(), tls, peer, limits, conn_stop.clone()),
    ));
    let result = tokio::select! {
        _ = shutdown => Ok(()),
        _ = server.closed() => Err(PeerError::ServerGone),
    };
    let _ = stop_tx.send(true);
    let _ = accepting.await;
    if result.is_ok() {
        let _: Result<serde_json::Value, _> = server.call(&ServerRequest::Offline {}).await;
    }
    let _ = events.send(ServeEvent::Offline {});
    result
}

struct PayeeCtx {
    person: Arc<Person>,
    server: Arc<Link>,
    events: mpsc::UnboundedSender<ServeEvent>,
}

async fn payer_connection(
    ctx: Arc<PayeeCtx>,
    mut tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    limits: SessionLimits,
    shutdown: watch::Receiver<bool>,
) {
    let payer = match tls::peer_identity(tls.get_ref().1) {
        Ok(identity) => Arc::new(identity),
        Err(e) => {
            refuse(
                &mut tls,
                WireError::new(ErrorCode::Forbidden, format!("certificate refused: {e}")),
            )
            .await;
            return;
        }
    };
    debug!(%peer, payer = %payer.name, "payer connected");
    run_session(tls, limits, shutdown, move |request| {
        let (ctx, payer) = (ctx.clone(), payer.clone());
        async move {
            let outcome = take_payment(&ctx, &payer, request).await;
            match &outcome {
                Ok((settled, event)) => {
                    let _ = ctx.events.send(event.clone());
                    crate::wire::to_result_json(settled)
                }
                Err(e) => {
                    let _ = ctx.events.send(ServeEvent::Refused {
                        payer: payer.name.to_string(),
                        code: e.code,
                        message: e.message.clone(),
                    });
                    Err(e.clone())
                }
            }
        }
    })
    .await;
}

/// Checks a payment handed to me and forwards it to the server.
async fn take_payment(
    ctx: &PayeeCtx,
    payer: &Identity,
    request: PeerRequest,
) -> Result<(Settled, ServeEvent), WireError> {
    let PeerRequest::Pay { payment } = request;
    let signed = SignedPayment::try_from(&payment)?;
    let p = &signed.payment;
    let me = &ctx.person.name;
    if &p.payee != me {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            format!("this is {me}'s listener; the payment is for {}", p.payee),
        ));
    }
    if p.payer != payer.name {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            format!(
                "you are {}, but the payment is from {}",
                payer.name, p.payer
            ),
        ));
    }
    signed.verify(&payer.key).map_err(|_| {
        WireError::new(
            ErrorCode::BadSignature,
            format!(
                "the signature does not verify with {}'s certificate key",
                payer.name
            ),
        )
    })?;
    let settled: Settled = ctx
        .server
        .call(&ServerRequest::Settle { payment })
        .await
        .map_err(|e| match e {
            CallError::Refused(w) => w,
            other => WireError::new(ErrorCode::Busy, format!("cannot reach the server: {other}")),
        })?;
    // The receipt came over my own authenticated server connection, and
    // the payer verifies its signature; checking that it is for this
    // payment is enough here and saves a signature check per payment.
    let receipt = SignedReceipt::try_from(&settled.receipt)?;
    if !receipt.matches(&signed) {
        return Err(WireError::new(
            ErrorCode::Internal,
            "the server's receipt is for a different payment",
        ));
    }
    info!(payer = %p.payer, amount = p.amount_minor, seq = receipt.receipt.seq, "received");
    let event = ServeEvent::Received {
        payment_id: p.id.to_hex(),
        payer: p.payer.to_string(),
        amount: p.amount_minor,
        memo: p.memo.clone(),
        seq: receipt.receipt.seq,
    };
    Ok((settled, event))
}

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
            timeout_ms: 30_000,
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
    let server_key = server.peer_key();
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
        CallError::Connect { reason, .. } if reason.contains("not valid for name") => {
            PeerError::WrongListener {
                payee: options.payee.clone(),
                address: located.address.clone(),
                reason,
            }
        }
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
