//! [`ListenerObserver`]: what an accept loop tells whoever watches it (the
//! server's metrics) about connections and TLS handshakes. The listener
//! knows nothing of metrics; it only calls this trait.

/// How a TLS handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandshakeResult {
    /// Completed: the peer presented a certificate the verifier accepted.
    Ok,
    /// Failed: a bad or missing certificate, a foreign CA, not TLS at all.
    Failed,
    /// Not finished within the handshake timeout.
    TimedOut,
}

impl HandshakeResult {
    /// A fixed name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Ok => "ok",
            HandshakeResult::Failed => "failed",
            HandshakeResult::TimedOut => "timed_out",
        }
    }
}

/// Told about the connections of one listener. Every method has an empty
/// default, so an observer implements only what it counts.
pub trait ListenerObserver: Send + Sync + 'static {
    /// A connection was accepted and holds one of the connection slots.
    fn connection_opened(&self) {}
    /// A connection that [`ListenerObserver::connection_opened`] reported
    /// has ended and given its slot back.
    fn connection_closed(&self) {}
    /// A connection was closed at once because every slot was taken.
    fn connection_refused(&self) {}
    /// A TLS handshake ended so.
    fn handshake(&self, _result: HandshakeResult) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoListenerObserver;

impl ListenerObserver for NoListenerObserver {}
