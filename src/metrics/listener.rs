//! [`ListenerMetrics`]: the connection counts of one TLS listener (the
//! server's, or a payee's peer listener), fed through
//! [`ListenerObserver`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::net::observer::{HandshakeResult, ListenerObserver};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Connections open and refused, and TLS handshakes by result.
#[derive(Clone)]
pub struct ListenerMetrics {
    connections_open: Gauge,
    connections_refused: Counter,
    tls_handshakes: Family<ResultLabel, Counter>,
}

impl ListenerMetrics {
    /// Every count at zero, every handshake result present, registered
    /// in `registry` as `connections_open`, `connections_refused` and
    /// `tls_handshakes` (under the registry's prefix).
    pub fn registered(registry: &mut Registry) -> ListenerMetrics {
        let metrics = ListenerMetrics {
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            tls_handshakes: Family::default(),
        };
        for result in [
            HandshakeResult::Ok,
            HandshakeResult::Failed,
            HandshakeResult::TimedOut,
        ] {
            metrics.handshakes(result);
        }
        registry.register(
            "connections_open",
            "Connections holding a connection slot",
            metrics.connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once because every connection slot was taken",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes by result: ok, failed or timed_out",
            metrics.tls_handshakes.clone(),
        );
        metrics
    }

    fn handshakes(&self, result: HandshakeResult) -> Counter {
        self.tls_handshakes.get_or_create_owned(&ResultLabel {
            result: result.as_str(),
        })
    }
}

impl ListenerObserver for ListenerMetrics {
    fn connection_opened(&self) {
        self.connections_open.inc();
    }

    fn connection_closed(&self) {
        self.connections_open.dec();
    }

    fn connection_refused(&self) {
        self.connections_refused.inc();
    }

    fn handshake(&self, result: HandshakeResult) {
        self.handshakes(result).inc();
    }
}
