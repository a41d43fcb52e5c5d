//! The server: accepts mutually authenticated TLS connections, keeps
//! presence, answers queries and settles payments through the ledger.
//!
//! Each connection runs a read loop that decodes one request per line and
//! hands each to its own task (bounded by the per-connection in-flight
//! limit), so pipelined settlements verify their signatures in parallel on
//! every core; replies go through one writer task per connection, which
//! batches them into as few TLS records as it can. Replies to pipelined
//! requests may come back out of order: clients match them by `id`.

mod channel_expiry;
pub mod cmd;
pub mod pg_presence;
pub mod presence;
pub mod verifier;

use crate::core::limits::REFUSAL_WINDOW_MS;
use crate::core::refusal_budget::RefusalBudget;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use crate::core::keys::SigningKey;
use crate::core::limits::{METRICS_REFRESH_TIMEOUT_MS, PRESENCE_LEASE_MS_DEFAULT};
use crate::ledger::{DbLocation, Ledger, LedgerConfig, LedgerError, LogConfig};
use crate::metrics::http::{Exposition, MetricsError, RenderFuture};
use crate::metrics::ServerMetrics;
use crate::net::revocation::Crl;
use crate::net::session::{accept_loop, refuse, run_session, SessionLimits};
use crate::wire::{ErrorCode, WireError};
use cmd::{dispatch, Caller, Context};
use pg_presence::PgPresence;
use presence::{MemoryPresence, Presence, PresenceError};

/// The server's limits; every one is a flag of `micropay-server`.
pub type ServerLimits = SessionLimits;

/// Everything the server needs, passed explicitly.
pub struct ServerOptions {
    /// TLS configuration (see [`crate::net::tls::server_config`]).
    pub tls: Arc<rustls::ServerConfig>,
    /// The key that signs receipts: the server certificate's key.
    pub signing_key: SigningKey,
    /// Where the ledger lives and what new accounts get.
    pub ledger: LedgerConfig,
    /// Limits.
    pub limits: ServerLimits,
    /// How this server shares presence with others on a PostgreSQL
    /// ledger (unused on SQLite, where presence stays in memory).
    pub presence: PresenceOptions,
    /// Refused payments one payer may have decided per minute
    /// (`--refusals-per-minute`); see [`RefusalBudget`].
    pub refusals_per_minute: u32,
    /// The CRL in force (`--crl`), when there is one: its verifier must
    /// be the one in `tls` (see [`crate::net::tls::server_config_with_crl`]);
    /// the server also checks every request against it and reloads it
    /// on SIGHUP and when its file changes.
    pub crl: Option<Arc<Crl>>,
    /// Most payment signatures checked in one batch
    /// (`--verify-batch-max`); 1 checks each on its connection's task.
    pub verify_batch_max: usize,
}

/// How this server shares a database with others (`--server-id`,
/// `--presence-lease-ms`, `--log-name`).
#[derive(Debug, Clone)]
pub struct PresenceOptions {
    /// This server's name among those sharing the database; must be
    /// unique among them.
    pub server_id: String,
    /// The presence lease, ms.
    pub lease_ms: u64,
    /// The name of this server's log among those sharing the database
    /// (see [`log_origin`]); servers that share a key and a database must
    /// each have their own, kept across restarts. `None`: the key alone
    /// names the log.
    pub log_name: Option<String>,
    /// The keys of the other servers sharing the database
    /// (`--log-peer-cert`), whose logs this server accepts beside its own.
    pub log_peers: Vec<crate::core::keys::VerifyingKey>,
}

impl Default for PresenceOptions {
    /// A random server id and the default lease.
    fn default() -> PresenceOptions {
        PresenceOptions {
            server_id: random_server_id(),
            lease_ms: PRESENCE_LEASE_MS_DEFAULT,
            log_name: None,
            log_peers: Vec::new(),
        }
    }
}

/// `srv-` and 16 random hex digits.
pub fn random_server_id() -> String {
    let id = crate::core::payment::PaymentId::random();
    format!("srv-{}", hex::encode(&id.0[..8]))
}

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The ledger failed to open.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// Shared presence could not be set up.
    #[error("presence: {0}")]
    Presence(#[from] PresenceError),
    /// Binding or accepting failed.
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    /// The metrics listener could not start.
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
}

/// Where the server serves its Prometheus metrics (`--metrics-listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsOptions {
    /// The metrics listener's address.
    pub listen: SocketAddr,
    /// Whether an address other than loopback is allowed
    /// (`--metrics-allow-non-loopback`).
    pub allow_non_loopback: bool,
}

struct Shared {
    tls: Arc<rustls::ServerConfig>,
    cx: Context,
    limits: ServerLimits,
    crl: Option<Arc<Crl>>,
}

/// A server running in the background (tests, benchmarks, the binary).
pub struct RunningServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The metrics listener's bound address, when metrics are served.
    pub metrics_addr: Option<SocketAddr>,
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

/// Binds `listen` and serves in a background task, without a metrics
/// listener.
pub async fn spawn(
    listen: SocketAddr,
    options: ServerOptions,
) -> Result<RunningServer, ServerError> {
    spawn_with(listen, options, None).await
}

/// Binds `listen` (and, if asked, the metrics listener) and serves in a
/// background task.
pub async fn spawn_with(
    listen: SocketAddr,
    options: ServerOptions,
    metrics: Option<MetricsOptions>,
) -> Result<RunningServer, ServerError> {
    let metrics_listener = match metrics {
        Some(m) => Some(crate::metrics::http::bind(m.listen, m.allow_non_loopback).await?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (shutdown, rx) = watch::channel(false);
    let shared = open_shared(options).await?;
    let task = tokio::spawn(serve(listener, metrics_listener, shared, rx));
    Ok(RunningServer {
        addr,
        metrics_addr,
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
    run_with(listener, None, options, shutdown, || Ok(())).await
}

/// Like [`run`], also serving metrics on `metrics_listener` (bound with
/// [`crate::metrics::http::bind`]) when given, and calling `ready` once
/// the ledger is open, just before the first connection is taken: a
/// ready file written then tells a supervisor (or a test) that the server
/// holds its ledger and answers.
pub async fn run_with(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    options: ServerOptions,
    shutdown: impl std::future::Future<Output = ()>,
    ready: impl FnOnce() -> std::io::Result<()>,
) -> Result<(), ServerError> {
    let shared = open_shared(options).await?;
    ready()?;
    let (tx, rx) = watch::channel(false);
    let server = tokio::spawn(serve(listener, metrics_listener, shared, rx));
    shutdown.await;
    let _ = tx.send(true);
    server
        .await
        .map_err(|e| ServerError::Io(std::io::Error::other(e.to_string())))?
}

async fn open_shared(options: ServerOptions) -> Result<Arc<Shared>, ServerError> {
    // Opening may block (connecting to PostgreSQL on the store's own
    // runtime), which is not allowed on this one.
    let config = options.ledger.clone();
    let metrics = Arc::new(ServerMetrics::new());
    let observer = metrics.clone();
    let signing_key = Arc::new(options.signing_key);
    let log = LogConfig {
        origin: log_origin(
            signing_key.verifying_key(),
            options.presence.log_name.as_deref(),
        ),
        peers: options.presence.log_peers.clone(),
        key: signing_key.clone(),
    };
    let ledger =
        tokio::task::spawn_blocking(move || Ledger::open_logged(&config, observer, Some(log)))
            .await
            .map_err(|e| LedgerError::Database(format!("opening the ledger failed: {e}")))??;
    let presence: Box<dyn Presence> = match &options.ledger.location {
        DbLocation::Postgres(url) => {
            let p = &options.presence;
            info!(server_id = %p.server_id, lease_ms = p.lease_ms, "presence shared in PostgreSQL");
            let presence = PgPresence::start(url, &p.server_id, p.lease_ms)?;
            presence.forget_predecessor().await?;
            Box::new(presence)
        }
        DbLocation::Sqlite(_) => Box::new(MemoryPresence::new()),
    };
    let fingerprint = signing_key.verifying_key().fingerprint();
    let revocations = options
        .crl
        .as_ref()
        .map(|crl| crl.revocations())
        .unwrap_or_default();
    Ok(Arc::new(Shared {
        tls: options.tls,
        cx: Context {
            ledger,
            presence,
            signing_key,
            fingerprint,
            refusals: std::sync::Mutex::new(RefusalBudget::new(
                REFUSAL_WINDOW_MS,
                options.refusals_per_minute,
            )),
            revocations,
            metrics,
            verifier: verifier::SignatureVerifier::start(options.verify_batch_max),
        },
        limits: options.limits,
        crl: options.crl,
    }))
}

async fn serve(
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let acceptor = TlsAcceptor::from(shared.tls.clone());
    info!(addr = %listener.local_addr()?, "listening");
    let watcher = shared.crl.clone().map(|crl| {
        info!(path = %crl.path().display(), revoked = crl.revocations().list().len(), "CRL in force");
        tokio::spawn(crl.watch(shutdown.clone()))
    });
    if let Some(metrics_listener) = metrics_listener {
        let scrape = Arc::new(Scrape(shared.clone()));
        tokio::spawn(crate::metrics::http::serve(
            metrics_listener,
            scrape,
            shutdown.clone(),
        ));
    }
    let expiry = tokio::spawn(channel_expiry::run(shared.clone(), shutdown.clone()));
    let limits = shared.limits;
    let observer = Arc::new(shared.cx.metrics.listener());
    let conn_shutdown = shutdown.clone();
    let conn_shared = shared.clone();
    accept_loop(
        listener,
        acceptor,
        limits,
        shutdown,
        observer,
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
    if let Some(watcher) = watcher {
        let _ = watcher.await;
    }
    let _ = expiry.await;
    if let Err(e) = shared.cx.presence.close().await {
        tracing::warn!("withdrawing this server's presence failed: {e}");
    }
    info!("connections finished; closing the ledger");
    shared.cx.ledger.close().await;
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
    let identity = match crate::net::tls::peer_identity(tls.get_ref().1) {
        Ok(identity) => identity,
        Err(e) => {
            let error = WireError::new(ErrorCode::Forbidden, format!("certificate refused: {e}"));
            refuse(&mut tls, error).await;
            return;
        }
    };
    debug!(%peer, name = %identity.name, "connected");
    let caller = Arc::new(Caller {
        identity,
        conn_id,
        peer_ip: peer.ip(),
    });
    let (handler_caller, handler_shared) = (caller.clone(), shared.clone());
    run_session(tls, shared.limits, shutdown, move |request| {
        let (shared, caller) = (handler_shared.clone(), handler_caller.clone());
        async move { dispatch(&shared.cx, &caller, request).await }
    })
    .await;
    let me = &caller.identity.name;
    if let Ok(true) = shared.cx.presence.withdraw(me, caller.conn_id).await {
        info!(name = %me, "offline (disconnected)");
    }
    debug!(name = %me, "disconnected");
}

/// The server's metrics as the metrics listener serves them: the gauges
/// read at scrape time are refreshed first.
struct Scrape(Arc<Shared>);

impl Exposition for Scrape {
    fn render(&self) -> RenderFuture<'_> {
        Box::pin(async move {
            let cx = &self.0.cx;
            cx.metrics.set_ledger_queue_depth(cx.ledger.queue_depth());
            // On PostgreSQL this is a query: bounded, and on failure the
            // gauge keeps its last value rather than failing the scrape.
            let limit = Duration::from_millis(METRICS_REFRESH_TIMEOUT_MS);
            match tokio::time::timeout(limit, cx.presence.roster(0)).await {
                Ok(Ok(roster)) => cx.metrics.set_people_online(roster.total),
                Ok(Err(e)) => debug!("people online not refreshed: {e}"),
                Err(_) => debug!("people online not refreshed: presence did not answer in time"),
            }
            cx.metrics.encode()
        })
    }
}

/// The origin of the log a server keeps: `micropay/` and the first 16 hex
/// digits of its key's fingerprint, then `/` and its log name if it has
/// one; so it stays the same across restarts and differs between servers
/// with their own keys, or with their own names on a shared database.
pub fn log_origin(key: &crate::core::keys::VerifyingKey, log_name: Option<&str>) -> String {
    let fingerprint = key.fingerprint();
    let base = format!("micropay/{}", &fingerprint[..16.min(fingerprint.len())]);
    match log_name {
        Some(name) => format!("{base}/{name}"),
        None => base,
    }
}
