//! A pipelined connection to the server, or to a peer: requests carry ids,
//! replies are matched by id, and any number may be in flight at once.
//!
//! One task writes request lines (coalescing what is queued) and one reads
//! reply lines and hands each to the caller waiting on its id.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsConnector;

use crate::core::keys::VerifyingKey;
use crate::core::limits::{
    LINK_QUEUE_REQUESTS_MAX, REPLY_BYTES_MAX, REQUEST_TIMEOUT_MS_DEFAULT, WRITE_COALESCE_BYTES_MAX,
};
use crate::net::identity::{public_key_of_cert, server_key_of_cert, Identity, IdentityError};
use crate::wire::frame::{read_frame, FrameError};
use crate::wire::{encode_body, encode_request_body, ErrorCode, Reply, WireError};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The other side answered with an error.
    #[error("{0}")]
    Refused(#[from] WireError),
    /// The other side's certificate is valid but names someone else: a
    /// different person (or server) answers at this address.
    #[error("cannot connect to {addr}: {reason}")]
    NotThatPeer {
        /// Where.
        addr: String,
        /// The TLS error, naming the expected name.
        reason: String,
    },
    /// The certificate at the server's address chains to the CA and names
    /// the dialled host, but lacks the server-role mark: a person (or a
    /// mis-issued certificate) answers where the server should. Nothing
    /// was sent on the connection.
    #[error("refusing {addr} as the micropay server: {reason}; nothing was sent")]
    NotTheServer {
        /// Where.
        addr: String,
        /// Why, naming the certificate's subject.
        reason: String,
    },
    /// Could not connect, or the TLS handshake failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Where.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The connection closed before the reply came.
    #[error("the connection closed before the reply arrived")]
    Closed,
    /// No reply in time.
    #[error("no reply within {0} ms")]
    Timeout(u64),
}

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// A connection with pipelined requests.
pub struct Link {
    out: mpsc::Sender<Vec<u8>>,
    waiters: Waiters,
    next_id: AtomicU64,
    peer_cert: Vec<u8>,
    request_timeout_ms: u64,
    closed: watch::Receiver<bool>,
    /// Why the other side ended the connection, when it said so (a TLS
    /// `certificate_revoked` alert): what calls get instead of `Closed`.
    ended_by: Arc<Mutex<Option<WireError>>>,
    resumed: bool,
}

impl Link {
    /// Connects to `addr` over TCP, with `server_name` as the TLS server
    /// name (the server's host, or a payee's person name).
    pub async fn connect(
        addr: &str,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
        connect_timeout_ms: u64,
    ) -> Result<Link, CallError> {
        let connect_err = |reason: String| CallError::Connect {
            addr: addr.to_owned(),
            reason,
        };
        let tls = tokio::time::timeout(
            Duration::from_millis(connect_timeout_ms),
            handshake(addr, server_name, config),
        )
        .await
        .map_err(|_| connect_err(format!("timed out after {connect_timeout_ms} ms")))??;
        let peer_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .ok_or_else(|| connect_err("no certificate from the other side".into()))?;
        let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        let (read_half, write_half) = tokio::io::split(tls);
        let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
        let (out, out_rx) = mpsc::channel::<Vec<u8>>(LINK_QUEUE_REQUESTS_MAX);
        tokio::spawn(write_requests(write_half, out_rx));
        let (closed_tx, closed) = watch::channel(false);
        let ended_by = Arc::new(Mutex::new(None));
        tokio::spawn(read_replies(
            read_half,
            waiters.clone(),
            closed_tx,
            ended_by.clone(),
        ));
        Ok(Link {
            out,
            waiters,
            next_id: AtomicU64::new(1),
            peer_cert,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            closed,
            ended_by,
            resumed,
        })
    }

    /// Whether the TLS session was resumed rather than fully negotiated.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// Resolves when the connection has closed.
    pub async fn closed(&self) {
        let mut closed = self.closed.clone();
        let _ = closed.wait_for(|c| *c).await;
    }

    /// Sets how long [`Link::call`] waits for a reply.
    pub fn set_request_timeout_ms(&mut self, ms: u64) {
        self.request_timeout_ms = ms;
    }

    /// The other side's certificate (DER).
    pub fn peer_cert(&self) -> &[u8] {
        &self.peer_cert
    }

    /// The other side's public key, whatever its certificate (use
    /// [`Link::server_key`] for receipts).
    pub fn peer_key(&self) -> Option<VerifyingKey> {
        public_key_of_cert(&self.peer_cert).ok()
    }

    /// The receipt key: the other side's public key, only if its
    /// certificate carries the server-role mark
    /// ([`crate::net::identity::SERVER_ROLE_POLICY`]).
    pub fn server_key(&self) -> Result<VerifyingKey, IdentityError> {
        server_key_of_cert(&self.peer_cert)
    }

    /// The other side as a person (for peers).
    pub fn peer_identity(&self) -> Option<Identity> {
        Identity::from_cert_der(&self.peer_cert).ok()
    }

    /// What a call on a closed link fails with: the other side's reason
    /// when it gave one, else [`CallError::Closed`].
    fn closed_error(&self) -> CallError {
        match lock(&self.ended_by).clone() {
            Some(refusal) => CallError::Refused(refusal),
            None => CallError::Closed,
        }
    }

    /// Sends a request and waits for its result.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: &impl serde::Serialize,
    ) -> Result<T, CallError> {
        let rx = self.send(request).await?;
        self.reply_within(rx).await
    }

    /// Waits, at most the request timeout, for the reply of a request sent
    /// with [`Link::send`] or [`Link::send_body`], and decodes its result.
    pub async fn reply_within<T: serde::de::DeserializeOwned>(
        &self,
        rx: oneshot::Receiver<Reply>,
    ) -> Result<T, CallError> {
        let timeout = self.request_timeout_ms;
        let reply = tokio::time::timeout(Duration::from_millis(timeout), rx)
            .await
            .map_err(|_| CallError::Timeout(timeout))?
            .map_err(|_| self.closed_error())?;
        Ok(reply.into_result()?)
    }

    /// Sends a request; the receiver yields its reply (pipelining: send
    /// many, then await them).
    pub async fn send(
        &self,
        request: &impl serde::Serialize,
    ) -> Result<oneshot::Receiver<Reply>, CallError> {
        self.send_body(&encode_body(request)).await
    }

    /// Sends a request encoded ahead with [`encode_body`].
    pub async fn send_body(&self, body: &[u8]) -> Result<oneshot::Receiver<Reply>, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.waiters).insert(id, tx);
        // The reader has stopped: no reply can ever come for this id.
        if *self.closed.borrow() {
            lock(&self.waiters).remove(&id);
            return Err(self.closed_error());
        }
        if self.out.send(encode_request_body(id, body)).await.is_err() {
            lock(&self.waiters).remove(&id);
            return Err(CallError::Closed);
        }
        Ok(rx)
    }
}

type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// TCP connect and TLS handshake; a certificate for another name is told
/// apart from every other failure.
async fn handshake(
    addr: &str,
    server_name: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsStream, CallError> {
    let connect_err = |reason: String| CallError::Connect {
        addr: addr.to_owned(),
        reason,
    };
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| connect_err(format!("bad server name {server_name:?}: {e}")))?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            let reason = if crate::net::tls::is_foreign_ca(&e) {
                format!(
                    "TLS: the certificate at {addr} is not issued by the CA you trust \
                     (your --ca / ca.pem): it belongs to another micropay deployment, \
                     or your CA file is not this deployment's ({e})"
                )
            } else {
                format!("TLS: {e}")
            };
            if is_wrong_name(&e) {
                CallError::NotThatPeer {
                    addr: addr.to_owned(),
                    reason,
                }
            } else {
                connect_err(reason)
            }
        })
}

/// Whether a handshake failed because the certificate names someone else.
fn is_wrong_name(e: &std::io::Error) -> bool {
    use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
    let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    matches!(
        rustls_error,
        Some(rustls::Error::InvalidCertificate(
            NotValidForName | NotValidForNameContext { .. }
        ))
    )
}

/// Writes request lines, coalescing whatever is queued into one write.
async fn write_requests(
    mut write_half: tokio::io::WriteHalf<TlsStream>,
    mut out_rx: mpsc::Receiver<Vec<u8>>,
) {
    let mut buf = Vec::new();
    while let Some(first) = out_rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < WRITE_COALESCE_BYTES_MAX {
            match out_rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if write_half.write_all(&buf).await.is_err() || write_half.flush().await.is_err() {
            break;
        }
    }
    let _ = write_half.shutdown().await;
}

/// Reads reply lines and hands each to the caller waiting on its id.
async fn read_replies(
    read_half: tokio::io::ReadHalf<TlsStream>,
    waiters: Waiters,
    closed_tx: watch::Sender<bool>,
    ended_by: Arc<Mutex<Option<WireError>>>,
) {
    let mut reader = BufReader::new(read_half);
    let mut line = Vec::new();
    loop {
        let reply = match read_frame(&mut reader, &mut line, REPLY_BYTES_MAX).await {
            Ok(true) => match Reply::decode(&line) {
                Ok(reply) => reply,
                Err(_) => continue,
            },
            Ok(false) => break,
            Err(e) => {
                if let Some(refusal) = refused_by_alert(&e) {
                    *lock(&ended_by) = Some(refusal.clone());
                    answer_all(&waiters, &refused(refusal));
                }
                break;
            }
        };
        let waiter = reply.id.and_then(|id| lock(&waiters).remove(&id));
        match waiter {
            Some(tx) => {
                let _ = tx.send(reply);
            }
            // A reply without an id answers the whole connection
            // (too_large, a refused certificate): give it to every waiter.
            None if reply.id.is_none() => answer_all(&waiters, &reply),
            None => {}
        }
    }
    // Mark the link closed first, so that `send` (which checks after
    // registering its waiter) never leaves a waiter behind; then dropping
    // the senders wakes every waiter with Closed.
    let _ = closed_tx.send(true);
    lock(&waiters).clear();
}

/// Gives `reply` to every waiter.
fn answer_all(waiters: &Waiters, reply: &Reply) {
    for (_, tx) in lock(waiters).drain() {
        let _ = tx.send(reply.clone());
    }
}

/// When the other side ended the connection with TLS's
/// `certificate_revoked` alert (its CRL lists our certificate; in TLS 1.3
/// a client learns of it only when it reads), the refusal that says so,
/// so that callers see `certificate_revoked` rather than a closed
/// connection.
fn refused_by_alert(e: &FrameError) -> Option<WireError> {
    let FrameError::Io(io) = e else {
        return None;
    };
    // In TLS 1.3 the other side checks our certificate after our
    // handshake has finished, so its refusal arrives as an alert on the
    // first read: say why in words rather than "closed".
    if crate::net::tls::refused_by_peer_ca(io) {
        return Some(WireError::new(
            ErrorCode::Forbidden,
            format!(
                "the other side refused your certificate: it is not issued by the CA \
                 it trusts (a certificate of another micropay deployment?) ({io})"
            ),
        ));
    }
    let alert = io.get_ref()?.downcast_ref::<rustls::Error>()?;
    if !matches!(
        alert,
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked)
    ) {
        return None;
    }
    Some(WireError::new(
        ErrorCode::CertificateRevoked,
        "the other side refused our certificate at the handshake: it is revoked (TLS alert certificate_revoked)",
    ))
}

/// A reply carrying `error` for every waiter.
fn refused(error: WireError) -> Reply {
    Reply {
        id: None,
        ok: false,
        result: None,
        error: Some(error),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a `HOST:PORT` address given on a command line is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// No `:PORT` at the end.
    #[error("{0:?} has no port: write HOST:PORT, e.g. 127.0.0.1:7443 or [::1]:7443")]
    MissingPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("{0:?}: the port must be a number from 1 to 65535")]
    BadPort(String),
    /// Nothing before the colon.
    #[error("{0:?} has no host: write HOST:PORT")]
    MissingHost(String),
}

/// Checks that `addr` is `HOST:PORT` (an IPv6 host in brackets) before
/// anything is dialled, so that a typo is a usage error rather than a
/// failed connection.
pub fn check_host_port(addr: &str) -> Result<(), AddrError> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(AddrError::MissingPort(addr.to_owned()));
    };
    // `::1` alone splits inside the IPv6 address: a bare IPv6 address
    // without brackets has no port.
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(AddrError::MissingPort(addr.to_owned()));
    }
    if host.is_empty() || host == "[]" {
        return Err(AddrError::MissingHost(addr.to_owned()));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(AddrError::BadPort(addr.to_owned())),
    }
}

/// Splits `host:port` into the host to use as TLS server name.
pub fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    }
}

/// Parses an address, for error messages that name it.
pub fn parse_socket_addr(addr: &str) -> Option<SocketAddr> {
    addr.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        for ok in [
            "127.0.0.1:7443",
            "[::1]:7443",
            "server.example:1",
            "localhost:65535",
        ] {
            assert_eq!(check_host_port(ok), Ok(()), "{ok}");
        }
        for (bad, want) in [
            ("127.0.0.1", AddrError::MissingPort("127.0.0.1".into())),
            ("::1", AddrError::MissingPort("::1".into())),
            (":7443", AddrError::MissingHost(":7443".into())),
            ("host:0", AddrError::BadPort("host:0".into())),
            ("host:http", AddrError::BadPort("host:http".into())),
            ("host:65536", AddrError::BadPort("host:65536".into())),
        ] {
            assert_eq!(check_host_port(bad), Err(want), "{bad}");
        }
    }
}
