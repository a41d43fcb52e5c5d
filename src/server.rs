//! The server: accepts mutually authenticated TLS connections, keeps
//! presence, answers queries and settles payments through the ledger.
//!
//! Each connection runs a read loop that decodes one request per line and
//! hands each to its own task (bounded by the per-connection in-flight
//! limit), so pipelined settlements verify their signatures in parallel on
//! every core; replies go through one writer task per connection, which
//! batches them into as few TLS records as it can. Replies to pipelined
//! requests may come back out of order: clients match them by `id`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use crate::clock::{now_ms, now_s};
use crate::identity::Identity;
use crate::keys::SigningKey;
use crate::ledger::{Ledger, LedgerConfig, LedgerError, Outcome};
use crate::limits::{HISTORY_PAGE_DEFAULT, LIST_ENTRIES_MAX, PAYMENT_LIFETIME_MAX_S};
use crate::name::Name;
use crate::payment::{PaymentId, SignedPayment};
use crate::protocol::{
    to_result_json, Balance, ErrorCode, History, Listing, Online, OnlinePeer, PaymentStatus,
    ReceiptJson, Registered, Request, ResultJson, Settled, WireError,
};
use crate::session::{accept_loop, refuse, run_session, SessionLimits};

/// Longest host name a person may advertise for their peer listener.
pub const ADVERTISED_HOST_BYTES_MAX: usize = 253;

/// The server's limits; every one is a flag of `micropay-server`.
pub type ServerLimits = SessionLimits;

/// Everything the server needs, passed explicitly.
pub struct ServerOptions {
    /// TLS configuration (see [`crate::tls::server_config`]).
    pub tls: Arc<rustls::ServerConfig>,
    /// The key that signs receipts: the server certificate's key.
    pub signing_key: SigningKey,
    /// Where the ledger lives and what new accounts get.
    pub ledger: LedgerConfig,
    /// Limits.
    pub limits: ServerLimits,
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The ledger failed to open.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// Binding or accepting failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
}

struct Presence {
    address: String,
    conn_id: u64,
}

struct Shared {
    tls: Arc<rustls::ServerConfig>,
    ledger: Ledger,
    presence: Mutex<BTreeMap<Name, Presence>>,
    signing_key: SigningKey,
    fingerprint: String,
    limits: ServerLimits,
}

/// What a connection knows about its peer.
struct ConnCtx {
    identity: Identity,
    conn_id: u64,
    peer_ip: IpAddr,
}

/// A server running in the background (tests, benchmarks, the binary).
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// Stops accepting, lets connections finish, closes the ledger.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(ServerError::Io(std::io::Error::other(e.to_string()))),
        }
    }
}

/// Binds `listen` and serves in a background task.
pub async fn spawn(
    listen: SocketAddr,
    options: ServerOptions,
) -> Result<RunningServer, ServerError> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (shutdown, rx) = watch::channel(false);
    let shared = open_shared(options)?;
    let task = tokio::spawn(serve(listener, shared, rx));
    Ok(RunningServer {
        addr,
        shutdown,
        task,
    })
}

/// Serves on `listener` until `shutdown` resolves, then drains and closes
/// the ledger.
pub async fn run(
    listener: TcpListener,
    options: ServerOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    let shared = open_shared(options)?;
    let (tx, rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, shared, rx));
    shutdown.await;
    let _ = tx.send(true);
    server
        .await
        .map_err(|e| ServerError::Io(std::io::Error::other(e.to_string())))?
}

fn open_shared(options: ServerOptions) -> Result<Arc<Shared>, ServerError> {
    let ledger = Ledger::open(&options.ledger)?;
    let fingerprint = options.signing_key.verifying_key().fingerprint();
    Ok(Arc::new(Shared {
        tls: options.tls,
        ledger,
        presence: Mutex::new(BTreeMap::new()),
        signing_key: options.signing_key,
        fingerprint,
        limits: options.limits,
    }))
}

async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let acceptor = TlsAcceptor::from(shared.tls.clone());
    info!(addr = %listener.local_addr()?, "listening");
    let limits = shared.limits;
    let conn_shutdown = shutdown.clone();
    let conn_shared = shared.clone();
    accept_loop(
        listener,
        acceptor,
        limits,
        shutdown,
        move |tls, peer, conn_id| {
            connection(
                conn_shared.clone(),
                tls,
                peer,
                conn_id,
                conn_shutdown.clone(),
            )
        },
    )
    .await;
    info!("connections finished; closing the ledger");
    shared.ledger.close().await;
    info!("ledger closed; bye");
    Ok(())
}

async fn connection(
    shared: Arc<Shared>,
    mut tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    conn_id: u64,
    shutdown: watch::Receiver<bool>,
) {
    let identity = match crate::tls::peer_identity(tls.get_ref().1) {
        Ok(identity) => identity,
        Err(e) => {
            let error = WireError::new(ErrorCode::Forbidden, format!("certificate refused: {e}"));
            refuse(&mut tls, error).await;
            return;
        }
    };
    debug!(%peer, name = %identity.name, "connected");
    let ctx = Arc::new(ConnCtx {
        identity,
        conn_id,
        peer_ip: peer.ip(),
    });
    let handler_ctx = ctx.clone();
    let handler_shared = shared.clone();
    run_session(tls, shared.limits, shutdown, move |request| {
        let (shared, ctx) = (handler_shared.clone(), handler_ctx.clone());
        async move { handle(&shared, &ctx, request).await }
    })
    .await;
    let removed = {
        let mut presence = lock(&shared.presence);
        match presence.get(&ctx.identity.name) {
            Some(p) if p.conn_id == ctx.conn_id => {
                presence.remove(&ctx.identity.name);
                true
            }
            _ => false,
        }
    };
    if removed {
        info!(name = %ctx.identity.name, "offline (disconnected)");
        log_presence(&shared);
    }
    debug!(name = %ctx.identity.name, "disconnected");
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere; the map is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log_presence(shared: &Shared) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let presence = lock(&shared.presence);
        let online: Vec<String> = presence
            .iter()
            .map(|(n, p)| format!("{n}@{}", p.address))
            .collect();
        debug!(count = online.len(), online = ?online, "online list changed");
    }
}

/// Checks that the caller may act: certificate still valid, and (when
/// registered) the same key as the account.
fn gate(shared: &Shared, ctx: &ConnCtx, must_be_registered: bool) -> Result<(), WireError> {
    if !ctx.identity.valid_at(now_s()) {
        return Err(WireError::new(
            ErrorCode::CertificateExpired,
            "your certificate has expired; get a new one and reconnect",
        ));
    }
    match shared.ledger.key_of(&ctx.identity.name) {
        Some(key) if *key != ctx.identity.key => Err(WireError::new(
            ErrorCode::KeyMismatch,
            format!(
                "{} is registered with key {}, but this certificate has key {}",
                ctx.identity.name,
                key.fingerprint(),
                ctx.identity.key.fingerprint()
            ),
        )),
        Some(_) => Ok(()),
        None if must_be_registered => Err(WireError::new(
            ErrorCode::NotRegistered,
            format!("{} has no account; register first", ctx.identity.name),
        )),
        None => Ok(()),
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<ResultJson, WireError> {
    to_result_json(&v)
}

async fn handle(shared: &Shared, ctx: &ConnCtx, request: Request) -> Result<ResultJson, WireError> {
    let me = &ctx.identity.name;
    gate(shared, ctx, !matches!(request, Request::Register {}))?;
    match request {
        Request::Register {} => {
            let account = shared
                .ledger
                .register(me.clone(), ctx.identity.key.clone())
                .await?;
            info!(name = %me, balance = account.balance, "registered");
            to_value(Registered {
                name: me.to_string(),
                balance: account.balance,
                key_fingerprint: ctx.identity.key.fingerprint(),
            })
        }
        Request::Online { port, address } => {
            if port == 0 {
                return Err(WireError::new(
                    ErrorCode::BadRequest,
                    "port must be 1..65535",
                ));
            }
            let address = advertised_address(address.as_deref(), ctx.peer_ip, port)?;
            lock(&shared.presence).insert(
                me.clone(),
                Presence {
                    address: address.clone(),
                    conn_id: ctx.conn_id,
                },
            );
            info!(name = %me, %address, "online");
            log_presence(shared);
            to_value(Online { address })
        }
        Request::Offline {} => {
            // Only the presence this connection announced: a newer `online`
            // of the same person from another connection stays.
            let was = {
                let mut presence = lock(&shared.presence);
                match presence.get(me) {
                    Some(p) if p.conn_id == ctx.conn_id => presence.remove(me).is_some(),
                    _ => false,
                }
            };
            if was {
                info!(name = %me, "offline");
                log_presence(shared);
            }
            to_value(serde_json::json!({ "was_online": was }))
        }
        Request::List {} => {
            let balance = shared.ledger.balance(me).await?.unwrap_or(0);
            let presence = lock(&shared.presence);
            let online = presence
                .iter()
                .take(LIST_ENTRIES_MAX)
                .map(|(name, p)| OnlinePeer {
                    name: name.to_string(),
                    address: p.address.clone(),
                })
                .collect();
            to_value(Listing {
                balance,
                server_key_fingerprint: shared.fingerprint.clone(),
                online_count: presence.len(),
                online,
            })
        }
        Request::Locate { name } => {
            let name = Name::parse(&name)
                .map_err(|e| WireError::new(ErrorCode::BadRequest, format!("name: {e}")))?;
            if let Some(p) = lock(&shared.presence).get(&name) {
                return to_value(OnlinePeer {
                    name: name.to_string(),
                    address: p.address.clone(),
                });
            }
            if shared.ledger.is_registered(&name) {
                Err(WireError::new(
                    ErrorCode::PayeeOffline,
                    format!("{name} is not online"),
                ))
            } else {
                Err(WireError::new(
                    ErrorCode::UnknownPayee,
                    format!("{name} has no account"),
                ))
            }
        }
        Request::Balance {} => {
            let balance = shared.ledger.balance(me).await?.unwrap_or(0);
            to_value(Balance {
                name: me.to_string(),
                balance,
            })
        }
        Request::History { limit, before_seq } => {
            let limit = limit.unwrap_or(HISTORY_PAGE_DEFAULT);
            let entries = shared.ledger.history(me, limit, before_seq).await?;
            let next_before_seq = if entries.len() as u32 >= limit.max(1) {
                entries.last().map(|e| e.seq)
            } else {
                None
            };
            to_value(History {
                entries,
                next_before_seq,
            })
        }
        Request::Status { payment_id } => {
            let id = PaymentId::from_hex(&payment_id).ok_or_else(|| {
                WireError::new(ErrorCode::BadRequest, "payment_id must be 32 hex digits")
            })?;
            let not_found =
                || WireError::new(ErrorCode::NotFound, format!("no payment {id} of yours"));
            match shared.ledger.outcome(id).await?.ok_or_else(not_found)? {
                Outcome::Settled(payment, settlement) => {
                    let p = &payment.payment;
                    if &p.payer != me && &p.payee != me {
                        return Err(not_found());
                    }
                    let receipt = settlement.receipt(&payment).sign(&shared.signing_key);
                    to_value(PaymentStatus::Settled {
                        receipt: ReceiptJson::from(&receipt),
                    })
                }
                Outcome::Rejected {
                    payer,
                    payee,
                    error,
                } => {
                    if payer != me.as_str() && payee != me.as_str() {
                        return Err(not_found());
                    }
                    to_value(PaymentStatus::Rejected { error })
                }
            }
        }
        Request::Settle { payment } => settle(shared, ctx, &payment).await,
        Request::Pay { .. } => Err(WireError::new(
            ErrorCode::BadRequest,
            "pay is sent to a peer; the server takes settle",
        )),
    }
}

async fn settle(
    shared: &Shared,
    ctx: &ConnCtx,
    payment: &crate::protocol::PaymentJson,
) -> Result<ResultJson, WireError> {
    let me = &ctx.identity.name;
    let signed = SignedPayment::try_from(payment)?;
    let p = &signed.payment;
    // Rule 1: only the payee (forwarding) or the payer (submitting
    // directly) may settle a payment.
    if &p.payee != me && &p.payer != me {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            format!(
                "{me} may not settle a payment from {} to {}",
                p.payer, p.payee
            ),
        ));
    }
    if p.expires_at_s > now_s().saturating_add(PAYMENT_LIFETIME_MAX_S) {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            format!("expires_at may be at most {PAYMENT_LIFETIME_MAX_S} s ahead"),
        ));
    }
    // Rule 2: the payer's registered key, not whatever the payee says.
    let payer_key = shared.ledger.key_of(&p.payer).ok_or_else(|| {
        WireError::new(
            ErrorCode::UnknownPayer,
            format!("{} has no account", p.payer),
        )
    })?;
    signed.verify(&payer_key).map_err(|_| {
        WireError::new(
            ErrorCode::BadSignature,
            format!(
                "the signature does not verify with {}'s registered key",
                p.payer
            ),
        )
    })?;
    // Rules 3 to 5, atomically, in the writer.
    let settlement = shared.ledger.settle(signed.clone()).await?;
    let receipt = settlement.receipt(&signed).sign(&shared.signing_key);
    if settlement.replay {
        debug!(id = %p.id, "replayed settlement answered with its original receipt");
    } else {
        info!(
            seq = settlement.seq, id = %p.id, payer = %p.payer, payee = %p.payee,
            amount = p.amount_minor, by = %me, at_ms = now_ms(), "settled"
        );
    }
    to_value(Settled {
        receipt: ReceiptJson::from(&receipt),
    })
}

/// The address others will dial: the given host (validated) or the
/// connection's source IP, with the port.
fn advertised_address(host: Option<&str>, peer_ip: IpAddr, port: u16) -> Result<String, WireError> {
    let Some(host) = host else {
        return Ok(SocketAddr::new(peer_ip, port).to_string());
    };
    if let Ok(ip) = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, port).to_string());
    }
    let valid = !host.is_empty()
        && host.len() <= ADVERTISED_HOST_BYTES_MAX
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            "address must be an IP address or a DNS host name",
        ));
    }
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses() {
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(advertised_address(None, ip, 9).expect("ok"), "10.1.2.3:9");
        assert_eq!(
            advertised_address(Some("::1"), ip, 9).expect("ok"),
            "[::1]:9"
        );
        assert_eq!(
            advertised_address(Some("pay.example"), ip, 9).expect("ok"),
            "pay.example:9"
        );
        assert!(advertised_address(Some("a b"), ip, 9).is_err());
        assert!(advertised_address(Some(""), ip, 9).is_err());
        assert!(advertised_address(Some(&"a".repeat(300)), ip, 9).is_err());
    }
}
