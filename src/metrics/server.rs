//! [`ServerMetrics`]: what `micropay-server` counts.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::{
    encode, gauge_value, register_build_info, ListenerMetrics, OutcomeCounter, SettlementOutcome,
    METRICS_PREFIX,
};
use crate::core::limits::GROUP_COMMIT_BATCH_MAX;
use crate::ledger::CommitObserver;

/// What the server counts. Cheap to update from any task or thread
/// (atomics); encoded on demand by the metrics listener.
pub struct ServerMetrics {
    registry: Registry,
    settlements: OutcomeCounter,
    settlement_duration: Histogram,
    commit_batch_commands: Histogram,
    commit_duration: Histogram,
    ledger_queue_depth: Gauge,
    people_online: Gauge,
    listener: ListenerMetrics,
}

impl Default for ServerMetrics {
    fn default() -> ServerMetrics {
        ServerMetrics::new()
    }
}

impl ServerMetrics {
    /// Every metric at zero, registered under [`METRICS_PREFIX`], with
    /// the build's version in `micropay_build_info`.
    pub fn new() -> ServerMetrics {
        let mut registry = Registry::with_prefix(METRICS_PREFIX);
        let listener = ListenerMetrics::registered(&mut registry);
        let metrics = ServerMetrics {
            registry,
            settlements: OutcomeCounter::new(),
            // 100 µs to about 13 s.
            settlement_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            // 1, 2, 4, ... up to the largest batch the writer makes.
            commit_batch_commands: Histogram::new(exponential_buckets(
                1.0,
                2.0,
                batch_buckets(GROUP_COMMIT_BATCH_MAX),
            )),
            // 50 µs to about 3 s.
            commit_duration: Histogram::new(exponential_buckets(0.00005, 2.0, 17)),
            ledger_queue_depth: Gauge::default(),
            people_online: Gauge::default(),
            listener,
        };
        metrics.registered()
    }

    fn registered(mut self) -> ServerMetrics {
        let r = &mut self.registry;
        r.register(
            "settlements",
            "Settle requests answered, by outcome: settled, replay or the error code",
            self.settlements.0.clone(),
        );
        r.register_with_unit(
            "settlement_duration",
            "Time from a settle request's handling starting to its reply being ready to queue",
            Unit::Seconds,
            self.settlement_duration.clone(),
        );
        r.register(
            "commit_batch_commands",
            "Commands (settlements, registrations) decided in one ledger commit",
            self.commit_batch_commands.clone(),
        );
        r.register_with_unit(
            "commit_duration",
            "Time one ledger commit takes: deciding, writing and syncing a batch",
            Unit::Seconds,
            self.commit_duration.clone(),
        );
        r.register(
            "ledger_queue_depth",
            "Commands waiting for the ledger writer, read at scrape time",
            self.ledger_queue_depth.clone(),
        );
        r.register(
            "people_online",
            "People online (announced with `online`), read at scrape time; on a shared PostgreSQL ledger, across every server",
            self.people_online.clone(),
        );
        register_build_info(r);
        self
    }

    /// The connection counts, to observe the server's listener.
    pub fn listener(&self) -> ListenerMetrics {
        self.listener.clone()
    }

    /// A settle request ended with `outcome` after `elapsed`.
    pub fn settlement(&self, outcome: SettlementOutcome, elapsed: Duration) {
        self.settlements.of(outcome).inc();
        self.settlement_duration.observe(elapsed.as_secs_f64());
    }

    /// Sets the ledger queue depth gauge.
    pub fn set_ledger_queue_depth(&self, commands: usize) {
        self.ledger_queue_depth.set(gauge_value(commands));
    }

    /// Sets the people-online gauge.
    pub fn set_people_online(&self, people: usize) {
        self.people_online.set(gauge_value(people));
    }

    /// Every metric in the Prometheus text format (version 0.0.4), whose
    /// content type is [`super::TEXT_CONTENT_TYPE`].
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        encode(&self.registry)
    }
}

impl CommitObserver for ServerMetrics {
    fn batch_committed(&self, commands: usize, elapsed: Duration) {
        self.commit_batch_commands.observe(commands as f64);
        self.commit_duration.observe(elapsed.as_secs_f64());
    }
}

/// How many power-of-two buckets reach `max`: 1, 2, 4, ... ≥ `max`.
fn batch_buckets(max: usize) -> u16 {
    let bits = usize::BITS - max.max(1).saturating_sub(1).leading_zeros();
    u16::try_from(bits + 1).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::observer::{HandshakeResult, ListenerObserver};
    use crate::wire::ErrorCode;

    #[test]
    fn batch_buckets_reach_the_largest_batch() {
        assert_eq!(batch_buckets(1), 1);
        assert_eq!(batch_buckets(2), 2);
        assert_eq!(batch_buckets(4096), 13);
        assert_eq!(batch_buckets(4097), 14);
        let last = exponential_buckets(1.0, 2.0, batch_buckets(GROUP_COMMIT_BATCH_MAX)).last();
        assert!(last.is_some_and(|b| b >= GROUP_COMMIT_BATCH_MAX as f64));
    }

    #[test]
    fn labels_are_fixed_code_names() {
        let metrics = ServerMetrics::new();
        metrics.settlement(
            SettlementOutcome::Refused(ErrorCode::InsufficientFunds),
            Duration::from_millis(1),
        );
        metrics.settlement(SettlementOutcome::Settled, Duration::from_millis(1));
        metrics.listener().handshake(HandshakeResult::Failed);
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("micropay_settlements_total{outcome=\"insufficient_funds\"} 1"));
        assert!(text.contains("micropay_settlements_total{outcome=\"settled\"} 1"));
        assert!(text.contains("micropay_settlements_total{outcome=\"replay\"} 0"));
        assert!(text.contains("micropay_settlement_duration_seconds_count 2"));
        assert!(text.contains("micropay_tls_handshakes_total{result=\"failed\"} 1"));
        assert!(text.contains("micropay_tls_handshakes_total{result=\"ok\"} 0"));
        let version = env!("CARGO_PKG_VERSION");
        assert!(text.contains(&format!("micropay_build_info{{version=\"{version}\"}} 1")));
    }
}
