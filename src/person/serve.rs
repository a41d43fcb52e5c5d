//! `serve`: a payee online. The listener presents the payee's own
//! certificate and requires the payer's; the payee checks each payment
//! (addressed to me, signed by the payer on the other end of this very
//! connection), forwards it to the server over its own connection and
//! hands the server's signed receipt back.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use super::channel_payee::PayeeChannels;
use super::channel_serve;
use super::channel_writer::ChannelWriter;
use super::{PeerError, Person};
use crate::core::limits::{
    SERVE_KEEPALIVE_MS_DEFAULT, SERVE_KEEPALIVE_MS_MIN, SERVE_RECONNECT_MS_MAX,
    SERVE_RECONNECT_MS_MIN,
};
use crate::core::payment::{Receipt, SignedPayment};
use crate::metrics::{PeerMetrics, SettlementOutcome};
use crate::net::identity::Identity;
use crate::net::link::{CallError, Link};
use crate::net::revocation::Revocations;
use crate::net::session::{accept_loop, refuse, run_session, SessionLimits};
use crate::net::tls;
use crate::wire::{ErrorCode, OnlinePeer, PeerRequest, ServerRequest, Settled, WireError};

/// What `serve` reports as it runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ServeEvent {
    /// Listening and announced (again, after a reconnection).
    Online {
        /// Local listening address.
        listen: String,
        /// Address the server tells payers.
        address: String,
        /// Whether this announcement took over from another `serve` of
        /// the same person, which is no longer advertised.
        replaced: bool,
    },
    /// The server connection was lost; payments are refused with
    /// `unavailable` until it is back.
    Reconnecting {
        /// What happened to the connection (or the last attempt).
        reason: String,
        /// How long until the next attempt, ms.
        retry_in_ms: u64,
    },
    /// Another `serve` of the same person took over: payers are no
    /// longer sent here. Reported once per connection.
    Superseded {
        /// Where payers are sent now, if anywhere.
        address: Option<String>,
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
        /// The same payment again: it settled before and nothing moved
        /// now (a payer's retry, or a replay).
        replay: bool,
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

/// How `serve` keeps its server connection alive and gets it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// Interval of the keep-alive request, ms (at least
    /// [`SERVE_KEEPALIVE_MS_MIN`]).
    pub keepalive_ms: u64,
    /// First wait before reconnecting, ms; doubles on each failure.
    pub backoff_min_ms: u64,
    /// Longest wait between attempts, ms.
    pub backoff_max_ms: u64,
}

impl Default for Reconnect {
    /// The limits in [`crate::core::limits`].
    fn default() -> Reconnect {
        Reconnect {
            keepalive_ms: SERVE_KEEPALIVE_MS_DEFAULT,
            backoff_min_ms: SERVE_RECONNECT_MS_MIN,
            backoff_max_ms: SERVE_RECONNECT_MS_MAX,
        }
    }
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
    /// Keep-alive and reconnection.
    pub reconnect: Reconnect,
    /// Where the payment channels offered to me are kept (one file per
    /// channel); `None`: channel offers are refused.
    pub channels_dir: Option<std::path::PathBuf>,
    /// The state file of the last checkpoint seen from each server's log
    /// (the one `send` and `verify-log` keep): at every connection to the
    /// server, `serve` checks that the log extends what it saw and stops
    /// with [`PeerError::ServerHistoryChanged`] if it does not. `None`:
    /// no check.
    pub log_state: Option<std::path::PathBuf>,
}

/// What `serve` announces: the same listener after every reconnection.
struct Announce {
    server: String,
    host: Option<String>,
    port: u16,
    listen: String,
}

/// Goes online and accepts payments until `shutdown` resolves, then
/// goes offline. The server connection is kept alive and, when lost,
/// re-established with bounded exponential backoff; only the first
/// connection failing (or the server refusing us for good) ends `serve`
/// with an error.
pub async fn serve(
    person: Arc<Person>,
    options: ServeOptions,
    events: mpsc::Sender<ServeEvent>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PeerError> {
    let metrics = Arc::new(PeerMetrics::new());
    serve_with_metrics(person, options, metrics, events, shutdown).await
}

/// [`serve`], counting payments and peer connections in `metrics`.
pub async fn serve_with_metrics(
    person: Arc<Person>,
    options: ServeOptions,
    metrics: Arc<PeerMetrics>,
    events: mpsc::Sender<ServeEvent>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PeerError> {
    let listen_err = |error| PeerError::Listen {
        addr: options.listen.to_string(),
        error,
    };
    let listener = TcpListener::bind(options.listen)
        .await
        .map_err(listen_err)?;
    let local = listener.local_addr().map_err(listen_err)?;
    let (host, port) = advertised(options.advertise.as_deref(), local.port());
    let announce = Announce {
        server: options.server.clone(),
        host,
        port,
        listen: local.to_string(),
    };
    let ctx = payee_ctx(&person, &options, events.clone(), metrics.clone())?;
    let first = go_online(&ctx, &announce).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let watcher = person
        .crl
        .clone()
        .map(|crl| tokio::spawn(crl.watch(stop_rx.clone())));
    let acceptor = TlsAcceptor::from(person.listener.clone());
    let channel_tasks = ChannelTasks::start(&ctx, &stop_rx);
    let conn_stop = stop_rx.clone();
    let limits = options.limits;
    let accept_ctx = ctx.clone();
    let accepting = tokio::spawn(accept_loop(
        listener,
        acceptor,
        limits,
        stop_rx,
        Arc::new(metrics.listener()),
        move |tls, peer, _| {
            payer_connection(accept_ctx.clone(), tls, peer, limits, conn_stop.clone())
        },
    ));
    tokio::pin!(shutdown);
    let result = supervise(&ctx, &announce, options.reconnect, first, &mut shutdown).await;
    let _ = stop_tx.send(true);
    let _ = accepting.await;
    channel_tasks.stop().await;
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    if let (Ok(()), Some(server)) = (&result, ctx.current()) {
        let _: Result<serde_json::Value, _> = server.call(&ServerRequest::Offline {}).await;
    }
    let _ = events.send(ServeEvent::Offline {}).await;
    result
}

/// The tasks `serve` runs for payment channels, when it keeps them: the
/// link writer and the close-before-expiry task.
struct ChannelTasks {
    writer_stop: watch::Sender<bool>,
    writer: Option<tokio::task::JoinHandle<()>>,
    closer: Option<tokio::task::JoinHandle<()>>,
}

impl ChannelTasks {
    /// Starts both; the closer stops with `stop`, the writer only in
    /// [`ChannelTasks::stop`].
    fn start(ctx: &Arc<PayeeCtx>, stop: &watch::Receiver<bool>) -> ChannelTasks {
        let closer = ctx.channels.clone().map(|writer| {
            let server_ctx = ctx.clone();
            tokio::spawn(channel_serve::close_before_expiry(
                writer,
                move || server_ctx.current(),
                stop.clone(),
            ))
        });
        let (writer_stop, writer_stopped) = watch::channel(false);
        let writer = ctx
            .channels
            .clone()
            .map(|writer| tokio::spawn(writer.run(writer_stopped)));
        ChannelTasks {
            writer_stop,
            writer,
            closer,
        }
    }

    /// Waits for both. Called once the connections are done, so that the
    /// links they accepted are written and acknowledged before the writer
    /// stops.
    async fn stop(self) {
        let _ = self.writer_stop.send(true);
        for task in [self.writer, self.closer].into_iter().flatten() {
            let _ = task.await;
        }
    }
}

/// The payee's shared state: the channel directory (loaded when given),
/// the CRL in force, the server connection (none yet), events, metrics.
fn payee_ctx(
    person: &Arc<Person>,
    options: &ServeOptions,
    events: mpsc::Sender<ServeEvent>,
    metrics: Arc<PeerMetrics>,
) -> Result<Arc<PayeeCtx>, PeerError> {
    let channels = match &options.channels_dir {
        Some(dir) => Some(ChannelWriter::new(Arc::new(Mutex::new(
            PayeeChannels::open(dir).map_err(PeerError::Channels)?,
        )))),
        None => None,
    };
    Ok(Arc::new(PayeeCtx {
        log_state: options.log_state.clone(),
        channels,
        revocations: person
            .crl
            .as_ref()
            .map(|crl| crl.revocations())
            .unwrap_or_default(),
        person: person.clone(),
        server: Mutex::new(None),
        events,
        metrics,
    }))
}

/// The host and port to announce: `--advertise HOST:PORT`, `HOST` (with
/// the bound port) or, by default, no host (the server uses the source
/// address it sees) and the bound port.
fn advertised(advertise: Option<&str>, bound: u16) -> (Option<String>, u16) {
    let Some(adv) = advertise else {
        return (None, bound);
    };
    match adv
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
    {
        Some((h, p)) => (
            Some(h.trim_start_matches('[').trim_end_matches(']').to_owned()),
            p,
        ),
        None => (Some(adv.to_owned()), bound),
    }
}

/// A live server connection and the address it announced.
struct Session {
    link: Arc<Link>,
    address: String,
}

/// Connects, announces the listener, makes the connection the one
/// payments are forwarded over and reports `Online`.
async fn go_online(ctx: &PayeeCtx, announce: &Announce) -> Result<Session, PeerError> {
    let link = Arc::new(ctx.person.connect_server(&announce.server).await?);
    if let Some(state) = &ctx.log_state {
        check_server_history(&link, state).await?;
    }
    let online: crate::wire::Online = link
        .call(&ServerRequest::Online {
            port: announce.port,
            address: announce.host.clone(),
        })
        .await?;
    info!(address = %online.address, replaced = online.replaced, "online");
    ctx.set_server(Some(link.clone()));
    ctx.emit(ServeEvent::Online {
        listen: announce.listen.clone(),
        address: online.address.clone(),
        replaced: online.replaced,
    })
    .await;
    Ok(Session {
        link,
        address: online.address,
    })
}

/// Checks that the server's log extends the checkpoint remembered in
/// `state`: a server whose history changed (rewritten, rolled back or
/// forked) is not served. A state file that cannot be used is only a
/// warning.
async fn check_server_history(link: &Link, state: &std::path::Path) -> Result<(), PeerError> {
    use crate::person::log_state::{check_log, LogStateError};
    match check_log(link, state).await {
        Ok(_) => Ok(()),
        Err(e @ LogStateError::HistoryChanged { .. }) => {
            Err(PeerError::ServerHistoryChanged(e.to_string()))
        }
        // A ledger without any settled payment has no checkpoint yet.
        Err(LogStateError::Call(CallError::Refused(w))) if w.code == ErrorCode::NotFound => {
            tracing::debug!("the server's log has no checkpoint yet");
            Ok(())
        }
        Err(e) => {
            tracing::warn!("could not check the server's log history: {e}");
            Ok(())
        }
    }
}

/// Keeps the server connection alive and replaces it when it is lost,
/// until `shutdown` resolves (`Ok`) or reconnecting fails for good.
async fn supervise<S: Future<Output = ()>>(
    ctx: &PayeeCtx,
    announce: &Announce,
    reconnect: Reconnect,
    mut session: Session,
    shutdown: &mut std::pin::Pin<&mut S>,
) -> Result<(), PeerError> {
    let every = reconnect.keepalive_ms.max(SERVE_KEEPALIVE_MS_MIN);
    loop {
        let reason = tokio::select! {
            _ = shutdown.as_mut() => return Ok(()),
            reason = keep_alive(ctx, &session, every) => reason,
        };
        ctx.set_server(None);
        info!(%reason, "lost the server; reconnecting");
        session = tokio::select! {
            _ = shutdown.as_mut() => return Ok(()),
            got = reestablish(ctx, announce, reconnect, reason) => got?,
        };
    }
}

/// Sends a keep-alive (`locate` of myself) every `every_ms` until the
/// connection is lost; returns why. Reports `Superseded` once if the
/// server sends payers elsewhere.
async fn keep_alive(ctx: &PayeeCtx, session: &Session, every_ms: u64) -> String {
    let every = Duration::from_millis(every_ms);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let me = ctx.person.name.to_string();
    let mut superseded = false;
    loop {
        tokio::select! {
            _ = session.link.closed() => return "the server closed the connection".to_owned(),
            _ = ticks.tick() => {}
        }
        let found: Result<OnlinePeer, CallError> = session
            .link
            .call(&ServerRequest::Locate { name: me.clone() })
            .await;
        let elsewhere = match found {
            Ok(peer) if peer.address == session.address => continue,
            Ok(peer) => Some(peer.address),
            Err(CallError::Refused(w)) if w.code == ErrorCode::PayeeOffline => None,
            // Another refusal (say, shared presence unavailable): the
            // connection itself is alive.
            Err(CallError::Refused(_)) => continue,
            Err(e) => return e.to_string(),
        };
        if !superseded {
            superseded = true;
            info!(address = ?elsewhere, "superseded by another serve");
            ctx.emit(ServeEvent::Superseded { address: elsewhere })
                .await;
        }
    }
}

/// Reconnects with bounded exponential backoff, reporting each wait;
/// gives up only on a refusal that retrying cannot fix.
async fn reestablish(
    ctx: &PayeeCtx,
    announce: &Announce,
    reconnect: Reconnect,
    mut reason: String,
) -> Result<Session, PeerError> {
    let max = reconnect.backoff_max_ms.max(1);
    let mut delay = reconnect.backoff_min_ms.clamp(1, max);
    loop {
        ctx.emit(ServeEvent::Reconnecting {
            reason: reason.clone(),
            retry_in_ms: delay,
        })
        .await;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        match go_online(ctx, announce).await {
            Ok(session) => return Ok(session),
            Err(e) if is_final(&e) => return Err(e),
            Err(e) => reason = e.to_string(),
        }
        delay = delay.saturating_mul(2).min(max);
    }
}

/// Whether a failed reconnection is worth retrying: connection trouble
/// and a busy or unavailable server are; a certificate that is not the
/// server's or any other refusal is not.
fn is_final(e: &PeerError) -> bool {
    match e {
        PeerError::Call(CallError::Refused(w)) => {
            !matches!(w.code, ErrorCode::Busy | ErrorCode::Unavailable)
        }
        PeerError::Call(CallError::NotTheServer { .. }) => true,
        PeerError::Call(_) => false,
        _ => true,
    }
}

struct PayeeCtx {
    person: Arc<Person>,
    /// Where the last checkpoint seen is remembered, when checked.
    log_state: Option<std::path::PathBuf>,
    /// The channels offered to me and their link writer, when `serve`
    /// keeps them.
    channels: Option<Arc<ChannelWriter>>,
    /// What the CRL in force revokes (nothing without one).
    revocations: Revocations,
    /// The server connection payments go over; `None` while reconnecting.
    server: Mutex<Option<Arc<Link>>>,
    events: mpsc::Sender<ServeEvent>,
    metrics: Arc<PeerMetrics>,
}

impl PayeeCtx {
    fn current(&self) -> Option<Arc<Link>> {
        self.server
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_server(&self, link: Option<Arc<Link>>) {
        self.metrics.set_server_connected(link.is_some());
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = link;
    }

    async fn emit(&self, event: ServeEvent) {
        let _ = self.events.send(event).await;
    }
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
        // run_session calls this closure in the order requests arrive, and
        // a channel link is accepted here, before the first await: the
        // links a payer pipelines extend each other in the order sent.
        let link = accept_channel_link(&ctx, &payer, &request);
        async move {
            if let Some(accepted) = link {
                let writer = ctx
                    .channels
                    .as_ref()
                    .ok_or_else(|| WireError::new(ErrorCode::Internal, "no channel writer"))?;
                let ack = channel_serve::acknowledge(writer, accepted?).await?;
                return crate::wire::to_result_json(&ack);
            }
            if !matches!(request, PeerRequest::Pay { .. }) {
                return channel_request(&ctx, &payer, request).await;
            }
            let outcome = take_payment(&ctx, &payer, request).await;
            ctx.metrics.payment(match &outcome {
                Ok((settled, _)) if settled.replay => SettlementOutcome::Replay,
                Ok(_) => SettlementOutcome::Settled,
                Err(e) => SettlementOutcome::Refused(e.code),
            });
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

/// Accepts a `channel_pay` in memory (`None` for every other request).
fn accept_channel_link(
    ctx: &PayeeCtx,
    payer: &Identity,
    request: &PeerRequest,
) -> Option<Result<channel_serve::AcceptedLink, WireError>> {
    let PeerRequest::ChannelPay {
        channel_id,
        index,
        link,
    } = request
    else {
        return None;
    };
    Some(check_not_revoked(ctx, payer).and_then(|()| {
        let writer = channels_of(ctx)?;
        channel_serve::accept_link(writer, (channel_id, *index, link))
    }))
}

fn channels_of(ctx: &PayeeCtx) -> Result<&ChannelWriter, WireError> {
    ctx.channels.as_deref().ok_or_else(|| {
        WireError::new(
            ErrorCode::Forbidden,
            format!("{} does not take payment channels here", ctx.person.name),
        )
    })
}

/// Answers a channel offer or payment, when this `serve` keeps channels.
async fn channel_request(
    ctx: &PayeeCtx,
    payer: &Identity,
    request: PeerRequest,
) -> Result<crate::wire::ResultJson, WireError> {
    check_not_revoked(ctx, payer)?;
    let writer = channels_of(ctx)?;
    let me = &ctx.person.name;
    let ack = channel_serve::handle(writer, me, payer, ctx.current(), request).await?;
    crate::wire::to_result_json(&ack)
}

/// Checks a payment handed to me and forwards it to the server.
async fn take_payment(
    ctx: &PayeeCtx,
    payer: &Identity,
    request: PeerRequest,
) -> Result<(Settled, ServeEvent), WireError> {
    let PeerRequest::Pay { payment } = request else {
        return Err(WireError::new(ErrorCode::BadRequest, "not a payment"));
    };
    check_not_revoked(ctx, payer)?;
    let signed = SignedPayment::try_from(&payment)?;
    check_handed(ctx, payer, &signed)?;
    let p = &signed.payment;
    let me = &ctx.person.name;
    let away = |why: String| {
        WireError::new(
            ErrorCode::Unavailable,
            format!("{me} cannot reach the server ({why}); nothing was paid, try again shortly"),
        )
    };
    let server = ctx
        .current()
        .ok_or_else(|| away("reconnecting".to_owned()))?;
    let settled: Settled = server
        .call(&ServerRequest::Settle { payment })
        .await
        .map_err(|e| match e {
            CallError::Refused(w) => w,
            other => away(other.to_string()),
        })?;
    let receipt = check_receipt(ctx, &server, &signed, &settled)?;
    info!(payer = %p.payer, amount = p.amount_minor, seq = receipt.seq, "received");
    let event = ServeEvent::Received {
        payment_id: p.id.to_hex(),
        payer: p.payer.to_string(),
        amount: p.amount_minor,
        memo: p.memo.clone(),
        seq: receipt.seq,
        replay: settled.replay,
    };
    Ok((settled, event))
}

/// Refuses a payer whose certificate the CRL in force revokes (the
/// connection then closes). A resumed session or a connection opened
/// before the revocation was not checked against it at its handshake.
fn check_not_revoked(ctx: &PayeeCtx, payer: &Identity) -> Result<(), WireError> {
    if ctx.revocations.is_revoked(&payer.serial) {
        return Err(WireError::new(
            ErrorCode::CertificateRevoked,
            format!(
                "your certificate (serial {}) is revoked; this connection closes",
                payer.serial_hex()
            ),
        ));
    }
    Ok(())
}

/// Checks a payment handed to me before it goes to the server: it is
/// addressed to me and signed by the payer on the other end of this
/// very connection.
fn check_handed(ctx: &PayeeCtx, payer: &Identity, signed: &SignedPayment) -> Result<(), WireError> {
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
    })
}

/// The payee's check of the server's reply for a payment it settled, as
/// every client checks it (docs/PROTOCOL.md §5): for this payment, and
/// proven by its log proof (each distinct checkpoint's signature checked
/// once), or without one by the server's signature. A reply with neither
/// is refused, so the payer is never handed a receipt nobody can check.
fn check_receipt(
    ctx: &PayeeCtx,
    server: &Link,
    signed: &SignedPayment,
    settled: &Settled,
) -> Result<Receipt, WireError> {
    let receipt = Receipt::try_from(&settled.receipt)?;
    let signature = settled.receipt.signature_bytes()?;
    let bad = |why: String| {
        WireError::new(
            ErrorCode::Internal,
            format!("the server's receipt is refused: {why}"),
        )
    };
    let key = server.server_key().map_err(|e| bad(e.to_string()))?;
    ctx.person
        .check_receipt(
            &key,
            signed,
            &receipt,
            signature.as_deref(),
            settled.log.as_ref(),
        )
        .map_err(|e| bad(e.to_string()))?;
    Ok(receipt)
}
