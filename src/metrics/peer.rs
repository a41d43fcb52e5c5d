//! [`PeerMetrics`]: what a payee's `micropay-client serve` counts, under
//! `micropay_serve_*`.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::http::{Exposition, RenderFuture};
use super::{
    encode, register_build_info, ListenerMetrics, OutcomeCounter, SettlementOutcome, METRICS_PREFIX,
};

/// What `serve` counts: payments handed to it by outcome, whether it is
/// connected to the server, and its peer listener's connections.
pub struct PeerMetrics {
    registry: Registry,
    payments: OutcomeCounter,
    server_connected: Gauge,
    listener: ListenerMetrics,
}

impl Default for PeerMetrics {
    fn default() -> PeerMetrics {
        PeerMetrics::new()
    }
}

impl PeerMetrics {
    /// Every metric at zero: `micropay_serve_payments_total{outcome}`,
    /// `micropay_serve_server_connected`, the peer listener's
    /// `micropay_serve_connections_open`, `..._connections_refused_total`,
    /// `..._tls_handshakes_total{result}`, and `micropay_build_info`.
    pub fn new() -> PeerMetrics {
        let mut registry = Registry::with_prefix(METRICS_PREFIX);
        register_build_info(&mut registry);
        let serve = registry.sub_registry_with_prefix("serve");
        let listener = ListenerMetrics::registered(serve);
        let payments = OutcomeCounter::new();
        serve.register(
            "payments",
            "Payments handed to this payee, by outcome: settled, replay or the error code",
            payments.0.clone(),
        );
        let server_connected = Gauge::default();
        serve.register(
            "server_connected",
            "1 while connected to the server (payments can settle), 0 while reconnecting",
            server_connected.clone(),
        );
        PeerMetrics {
            registry,
            payments,
            server_connected,
            listener,
        }
    }

    /// The peer listener's connection counts.
    pub fn listener(&self) -> ListenerMetrics {
        self.listener.clone()
    }

    /// A payment handed to this payee ended with `outcome`.
    pub fn payment(&self, outcome: SettlementOutcome) {
        self.payments.of(outcome).inc();
    }

    /// Whether the server connection is up.
    pub fn set_server_connected(&self, connected: bool) {
        self.server_connected.set(i64::from(connected));
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        encode(&self.registry)
    }
}

impl Exposition for PeerMetrics {
    fn render(&self) -> RenderFuture<'_> {
        Box::pin(std::future::ready(self.encode()))
    }
}
