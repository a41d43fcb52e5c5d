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
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, trace, warn};

use crate::core::limits::{DRAIN_TIMEOUT_MS, WRITE_COALESCE_BYTES_MAX};
use crate::wire::frame::{read_frame, FrameError};
use crate::wire::{decode_request, ErrorCode, Reply, ResultJson, WireError};

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
/// handshake within the limit and hands the stream to `on_connection`.
/// Returns once every connection has finished (or the drain timeout).
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: SessionLimits,
    mut shutdown: watch::Receiver<bool>,
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
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn_id = next_conn_id.fetch_add(1, Ordering::Relaxed);
        let acceptor = acceptor.clone();
        let alive = alive_tx.clone();
        let on_connection = on_connection.clone();
        let handshake_timeout = Duration::from_millis(limits.handshake_timeout_ms);
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => on_connection(tls, peer, conn_id).await,
                Ok(Err(e)) => debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => debug!(%peer, "TLS handshake timed out"),
            }
            drop(permit);
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

/// Sends one error line on a fresh stream and closes it (for connections
/// refused after the handshake).
pub async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, error: WireError) {
    let line = Reply::encode::<()>(None, &Err(error));
    let _ = stream.write_all(&line).await;
    let _ = stream.shutdown().await;
}

/// Serves requests on one connection until it closes, idles out, sends an
/// oversized line, or `shutdown` turns true; then lets the requests already
/// read finish and their replies go out.
pub async fn run_session<S, R, H, Fut>(
    stream: S,
    limits: SessionLimits,
    mut shutdown: watch::Receiver<bool>,
    handler: H,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
    R: serde::de::DeserializeOwned + Send + 'static,
    H: Fn(R) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<ResultJson, WireError>> + Send + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(limits.in_flight_max + 1);
    let writer = tokio::spawn(write_loop(write_half, out_rx, limits.idle_timeout_ms));
    let in_flight = Arc::new(Semaphore::new(limits.in_flight_max));
    let mut reader = BufReader::new(read_half);
    let mut line = Vec::new();
    let idle = Duration::from_millis(limits.idle_timeout_ms);
    loop {
        let read = tokio::select! {
            _ = shutdown.changed() => break,
            // The writer gave up (the peer does not read its replies):
            // reading on would only do work whose answers nobody gets.
            _ = out_tx.closed() => {
                debug!("replies cannot be delivered; closing");
                break;
            }
            read = tokio::time::timeout(idle, read_frame(&mut reader, &mut line, limits.frame_bytes_max)) => read,
        };
        match read {
            Err(_) => {
                debug!("idle timeout; closing");
                break;
            }
            Ok(Ok(false)) => break,
            Ok(Err(FrameError::TooLarge(max))) => {
                let error = WireError::new(
                    ErrorCode::TooLarge,
                    format!("a line may have at most {max} bytes; closing"),
                );
                let _ = out_tx.send(Reply::encode::<()>(None, &Err(error))).await;
                break;
            }
            Ok(Err(e)) => {
                debug!("read failed: {e}");
                break;
            }
            Ok(Ok(true)) => {
                trace!(line = %String::from_utf8_lossy(&line), "request");
                let decoded = decode_request::<R>(&line);
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                let (handler, out) = (handler.clone(), out_tx.clone());
                tokio::spawn(async move {
                    let outcome = match decoded.request {
                        Ok(request) => handler(request).await,
                        Err(e) => Err(e),
                    };
                    let reply = Reply::encode(decoded.id, &outcome);
                    trace!(reply = %String::from_utf8_lossy(&reply), "reply");
                    let _ = out.send(reply).await;
                    drop(permit);
                });
            }
        }
    }
    let permits = u32::try_from(limits.in_flight_max).unwrap_or(u32::MAX);
    let _ = in_flight.acquire_many(permits).await;
    drop(out_tx);
    let _ = writer.await;
}

/// Writes reply lines, coalescing whatever is queued into one write.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    idle_timeout_ms: u64,
) {
    let timeout = Duration::from_millis(idle_timeout_ms);
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < WRITE_COALESCE_BYTES_MAX {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        // A peer that stops reading cannot hold this task forever.
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
    }
    let _ = tokio::time::timeout(timeout, writer.shutdown()).await;
}
