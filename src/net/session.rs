//! What the server and a payee's peer listener share: an accept loop with
//! a connection cap and a handshake timeout, and a request/reply loop over
//! one connection with bounded lines, an in-flight limit, an idle timeout
//! and a writer that coalesces replies.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{
    mpsc, watch, Notify, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, OwnedSemaphorePermit, RwLock,
    Semaphore,
};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, trace, warn};

use crate::core::limits::{
    DRAIN_TIMEOUT_MS, REPLY_QUEUE_BYTES_MAX, REPLY_WRITE_TIMEOUT_MS, WRITE_COALESCE_BYTES_MAX,
};
use crate::net::observer::{HandshakeResult, ListenerObserver};
use crate::system::terminal::escape;
use crate::wire::frame::{read_frame, FrameError};
use crate::wire::{decode_request, ErrorCode, Reply, ResultJson, Sequenced, WireError};

/// Limits of one listener and its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// Concurrent connections; more are closed at once.
    pub connections_max: usize,
    /// Requests one connection may have in flight.
    pub in_flight_max: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout_ms: u64,
    /// Time a connection may be silent, take to finish a line, or take to
    /// accept a reply.
    pub idle_timeout_ms: u64,
    /// Longest request line.
    pub frame_bytes_max: usize,
}

impl Default for SessionLimits {
    fn default() -> SessionLimits {
        use crate::core::limits::*;
        SessionLimits {
            connections_max: CONNECTIONS_MAX_DEFAULT,
            in_flight_max: IN_FLIGHT_PER_CONNECTION_DEFAULT,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            frame_bytes_max: FRAME_BYTES_MAX,
        }
    }
}

/// Accepts connections until `shutdown` turns true, completes each TLS
/// handshake within the limit and hands the stream to `on_connection`;
/// tells `observer` about each connection and handshake.
/// Returns once every connection has finished (or the drain timeout).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: SessionLimits,
    mut shutdown: watch::Receiver<bool>,
    observer: Arc<dyn ListenerObserver>,
    on_connection: F,
) where
    F: Fn(TlsStream<tokio::net::TcpStream>, SocketAddr, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let connections = Arc::new(Semaphore::new(limits.connections_max));
    // Every connection task holds a clone; when all are dropped the
    // receiver sees the end, and shutdown knows the connections are done.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let next_conn_id = AtomicU64::new(1);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // rather than spin.
                warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            debug!(%peer, "connection limit reached; closing the new connection");
            observer.connection_refused();
            drop(tcp);
            continue;
        };
        let slot = Slot::taken(permit, observer.clone());
        let _ = tcp.set_nodelay(true);
        let conn_id = next_conn_id.fetch_add(1, Ordering::Relaxed);
        let acceptor = acceptor.clone();
        let alive = alive_tx.clone();
        let on_connection = on_connection.clone();
        let handshake_timeout = Duration::from_millis(limits.handshake_timeout_ms);
        tokio::spawn(async move {
            let handshake = acceptor.accept(tcp);
            if let Some(tls) = handshake_within(handshake, handshake_timeout, &slot, peer).await {
                on_connection(tls, peer, conn_id).await;
            }
            drop(slot);
            drop(alive);
        });
    }
    drop(alive_tx);
    if tokio::time::timeout(Duration::from_millis(DRAIN_TIMEOUT_MS), alive_rx.recv())
        .await
        .is_err()
    {
        warn!("some connections did not finish within {DRAIN_TIMEOUT_MS} ms");
    }
}

/// Completes a TLS handshake within `timeout`, telling the slot's
/// observer how it ended.
/// A certificate from another CA is logged where operators look: it is
/// usually a client pointed at the wrong server, or the wrong CA file.
fn log_handshake_failure(peer: SocketAddr, e: &std::io::Error) {
    if crate::net::tls::is_foreign_ca(e) {
        info!(
            %peer,
            "TLS handshake refused: the client's certificate is not issued by this server's CA ({e})"
        );
    } else if crate::net::tls::refused_by_peer_ca(e) {
        info!(
            %peer,
            "TLS handshake refused by the client: it does not trust this server's certificate, probably because it trusts another deployment's CA ({e})"
        );
    } else {
        debug!(%peer, "TLS handshake failed: {e}");
    }
}

async fn handshake_within(
    handshake: tokio_rustls::Accept<tokio::net::TcpStream>,
    timeout: Duration,
    slot: &Slot,
    peer: SocketAddr,
) -> Option<TlsStream<tokio::net::TcpStream>> {
    let (result, tls) = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(tls)) => (HandshakeResult::Ok, Some(tls)),
        Ok(Err(e)) => {
            log_handshake_failure(peer, &e);
            (HandshakeResult::Failed, None)
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            (HandshakeResult::TimedOut, None)
        }
    };
    slot.observer.handshake(result);
    tls
}

/// One taken connection slot: gives the slot back and reports the
/// connection closed when dropped, even if the connection's task panics.
struct Slot {
    _permit: OwnedSemaphorePermit,
    observer: Arc<dyn ListenerObserver>,
}

impl Slot {
    fn taken(permit: OwnedSemaphorePermit, observer: Arc<dyn ListenerObserver>) -> Slot {
        observer.connection_opened();
        Slot {
            _permit: permit,
            observer,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.observer.connection_closed();
    }
}

/// Sends one error line on a fresh stream and closes it (for connections
/// refused after the handshake).
pub async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, error: WireError) {
    let line = Reply::encode::<()>(None, &Err(error));
    let _ = stream.write_all(&line).await;
    let _ = stream.shutdown().await;
}

/// A reply on its way out, holding its share of the connection's reply
/// byte budget until it is written.
struct Outgoing {
    line: Vec<u8>,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// What one connection's request tasks share.
struct Conn<H> {
    handler: H,
    out: mpsc::Sender<Outgoing>,
    in_flight: Arc<Semaphore>,
    reply_bytes: Arc<Semaphore>,
    order: Arc<RwLock<()>>,
    /// Notified when a reply's code closes the connection
    /// ([`ErrorCode::closes_connection`]): the read loop stops reading.
    closing: Notify,
}

impl<H> Conn<H> {
    /// Resolves when reading on is pointless, saying why.
    async fn ended(&self) -> &'static str {
        tokio::select! {
            // A reply closed the connection (say, certificate_revoked):
            // its line is queued; stop reading and let it go out.
            _ = self.closing.notified() => "a reply closes the connection",
            // The writer gave up (the peer does not read its replies):
            // reading on would only do work whose answers nobody gets.
            _ = self.out.closed() => "replies cannot be delivered",
        }
    }
}

/// A request's place in its connection's order.
/// Held until the request's handler has finished.
enum Turn {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

/// Serves requests on one connection until it closes, idles out, sends an
/// oversized line, gets a reply that closes the connection
/// ([`ErrorCode::closes_connection`]), or `shutdown` turns true; then lets
/// the requests already read finish and their replies go out.
///
/// Memory is bounded per connection: at most `in_flight_max` requests run
/// at once, a barrier request (every `history` page among them) runs
/// alone, and replies waiting to be written hold at most
/// [`REPLY_QUEUE_BYTES_MAX`] bytes; a peer that does not read stalls its
/// own connection, never the server.
pub async fn run_session<S, R, H, Fut>(
    stream: S,
    limits: SessionLimits,
    mut shutdown: watch::Receiver<bool>,
    handler: H,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
    R: serde::de::DeserializeOwned + Sequenced + Send + 'static,
    H: Fn(R) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<ResultJson, WireError>> + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let (out, out_rx) = mpsc::channel::<Outgoing>(limits.in_flight_max + 1);
    let write_timeout_ms = limits.idle_timeout_ms.min(REPLY_WRITE_TIMEOUT_MS);
    let writer = tokio::spawn(write_loop(write_half, out_rx, write_timeout_ms));
    let conn = Arc::new(Conn {
        handler,
        out,
        in_flight: Arc::new(Semaphore::new(limits.in_flight_max)),
        reply_bytes: Arc::new(Semaphore::new(REPLY_QUEUE_BYTES_MAX)),
        order: Arc::new(RwLock::new(())),
        closing: Notify::new(),
    });
    let mut reader = BufReader::new(read_half);
    let mut line = Vec::new();
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    loop {
        let read = tokio::select! {
            _ = shutdown.changed() => break,
            why = conn.ended() => {
                debug!("{why}; closing");
                break;
            }
            read = tokio::time::timeout(idle, read_frame(&mut reader, &mut line, limits.frame_bytes_max)) => read,
        };
        let more = match read {
            Err(_) => {
                debug!("idle timeout; closing");
                false
            }
            Ok(Ok(false)) => false,
            Ok(Err(FrameError::TooLarge(max))) => {
                let error = WireError::new(
                    ErrorCode::TooLarge,
                    format!("a line may have at most {max} bytes; closing"),
                );
                let line = Reply::encode::<()>(None, &Err(error));
                let _ = conn.out.send(Outgoing { line, _bytes: None }).await;
                false
            }
            Ok(Err(e)) => {
                debug!("read failed: {e}");
                false
            }
            Ok(Ok(true)) => start_request::<R, H, Fut>(&conn, &line).await,
        };
        if !more {
            break;
        }
    }
    let permits = u32::try_from(limits.in_flight_max).unwrap_or(u32::MAX);
    let _ = conn.in_flight.acquire_many(permits).await;
    drop(conn);
    let _ = writer.await;
}

/// Decodes one line, waits for the request's turn and runs it on its own
/// task. Returns false when the connection is going away.
async fn start_request<R, H, Fut>(conn: &Arc<Conn<H>>, line: &[u8]) -> bool
where
    R: serde::de::DeserializeOwned + Sequenced + Send + 'static,
    H: Fn(R) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<ResultJson, WireError>> + Send + 'static,
{
    trace!(line = %escape(&String::from_utf8_lossy(line)), "request");
    let decoded = decode_request::<R>(line);
    // Turns are taken here, in arrival order (the lock is fair): a
    // barrier waits for every earlier request, and later ones for it.
    let barrier = matches!(&decoded.request, Ok(r) if r.is_barrier());
    let turn = if barrier {
        Turn::Exclusive(conn.order.clone().write_owned().await)
    } else {
        Turn::Shared(conn.order.clone().read_owned().await)
    };
    let Ok(permit) = conn.in_flight.clone().acquire_owned().await else {
        return false;
    };
    // The handler is called here, in arrival order, and only its future
    // runs on its own task: whatever a handler does before its first
    // await (a payee accepting a channel link in memory) happens in the
    // order the requests came, while the replies may still complete out
    // of order.
    let work = decoded.request.map(|request| (conn.handler)(request));
    let conn = conn.clone();
    tokio::spawn(async move {
        let outcome = match work {
            Ok(work) => work.await,
            Err(e) => Err(e),
        };
        let line = Reply::encode(decoded.id, &outcome);
        let closes = matches!(&outcome, Err(e) if e.code.closes_connection());
        trace!(reply = %escape(&String::from_utf8_lossy(&line)), "reply");
        // A reply larger than the whole budget takes all of it.
        let share = u32::try_from(line.len().min(REPLY_QUEUE_BYTES_MAX)).unwrap_or(u32::MAX);
        if let Ok(bytes) = conn.reply_bytes.clone().acquire_many_owned(share).await {
            let _ = conn
                .out
                .send(Outgoing {
                    line,
                    _bytes: Some(bytes),
                })
                .await;
        }
        if closes {
            // notify_one keeps the wake-up if the read loop is not
            // waiting right now.
            conn.closing.notify_one();
        }
        // The turn ends once the reply is queued, so a barrier's large
        // reply waits for the budget before the next request may start:
        // one such reply per connection waits, never hundreds.
        drop(turn);
        drop(permit);
    });
    true
}

/// Writes reply lines, coalescing whatever is queued into one write.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<Outgoing>,
    write_timeout_ms: u64,
) {
    let timeout = Duration::from_millis(write_timeout_ms);
    let mut buf = Vec::new();
    let mut held = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first.line);
        held.push(first);
        while buf.len() < WRITE_COALESCE_BYTES_MAX {
            match rx.try_recv() {
                Ok(more) => {
                    buf.extend_from_slice(&more.line);
                    held.push(more);
                }
                Err(_) => break,
            }
        }
        // A peer that stops reading cannot hold this task forever: the
        // whole write must finish in time, however slowly it reads.
        let write = async {
            writer.write_all(&buf).await?;
            writer.flush().await
        };
        if !matches!(tokio::time::timeout(timeout, write).await, Ok(Ok(()))) {
            // Drain so that senders are not blocked on a dead connection.
            rx.close();
            while rx.recv().await.is_some() {}
            return;
        }
        // Written: give the bytes back to the budget.
        held.clear();
    }
    let _ = tokio::time::timeout(timeout, writer.shutdown()).await;
}
