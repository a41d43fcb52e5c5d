//! The server: accepts mutually authenticated TLS connections, keeps
//! presence, answers queries and settles payments through the ledger.
//!
//! Each connection runs a read loop that decodes one request per line and
//! hands each to its own task (bounded by the per-connection in-flight
//! limit), so pipelined settlements verify their signatures in parallel on
//! every core; replies go through one writer task per connection, which
//! batches them into as few TLS records as it can. Replies to pipelined
//! requests may come back out of order: clients match them by `id`.

pub mod cmd;
pub mod presence;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info};

use crate::core::keys::SigningKey;
use crate::ledger::{Ledger, LedgerConfig, LedgerError};
use crate::net::session::{accept_loop, refuse, run_session, SessionLimits};
use crate::wire::{ErrorCode, WireError};
use cmd::{dispatch, Caller, Context};
use presence::MemoryPresence;

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

struct Shared {
    tls: Arc<rustls::ServerConfig>,
    cx: Context,
    limits: ServerLimits,
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
        cx: Context {
            ledger,
            presence: Box::new(MemoryPresence::new()),
            signing_key: options.signing_key,
            fingerprint,
        },
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
