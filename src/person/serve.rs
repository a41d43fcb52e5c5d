//! `serve`: a payee online. The listener presents the payee's own
//! certificate and requires the payer's; the payee checks each payment
//! (addressed to me, signed by the payer on the other end of this very
//! connection), forwards it to the server over its own connection and
//! hands the server's signed receipt back.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use super::{PeerError, Person};
use crate::core::payment::{SignedPayment, SignedReceipt};
use crate::net::identity::Identity;
use crate::net::link::{CallError, Link};
use crate::net::session::{accept_loop, refuse, run_session, SessionLimits};
use crate::net::tls;
use crate::wire::{ErrorCode, PeerRequest, ServerRequest, Settled, WireError};

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
    events: mpsc::Sender<ServeEvent>,
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
    let _ = events
        .send(ServeEvent::Online {
            listen: local.to_string(),
            address: online.address,
        })
        .await;

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
    let _ = events.send(ServeEvent::Offline {}).await;
    result
}

struct PayeeCtx {
    person: Arc<Person>,
    server: Arc<Link>,
    events: mpsc::Sender<ServeEvent>,
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
                    let _ = ctx.events.send(event.clone()).await;
                    crate::wire::to_result_json(settled)
                }
                Err(e) => {
                    let _ = ctx
                        .events
                        .send(ServeEvent::Refused {
                            payer: payer.name.to_string(),
                            code: e.code,
                            message: e.message.clone(),
                        })
                        .await;
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
