//! Prometheus metrics: what the server counts ([`ServerMetrics`]) and the
//! bounded HTTP listener that serves them ([`http`]).
//!
//! Every label value is one of our own fixed names (an outcome code, a
//! handshake result, the build's version): nothing a peer controls, such
//! as a name, a memo or an address, ever becomes a label, so the metrics
//! listener cannot leak them and a peer cannot grow the label space.
//! The registry and the text encoding are `prometheus-client`'s.

pub mod http;

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::core::limits::GROUP_COMMIT_BATCH_MAX;
use crate::ledger::CommitObserver;
use crate::net::observer::{HandshakeResult, ListenerObserver};
use crate::wire::{ErrorCode, Settled, WireError};

/// The prefix of every metric name.
pub const METRICS_PREFIX: &str = "micropay";

/// How a `settle` request ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementOutcome {
    /// A new payment settled and money moved.
    Settled,
    /// A payment settled before: its original receipt, nothing moved.
    Replay,
    /// Refused or failed, with the error code of the reply.
    Refused(ErrorCode),
}

impl SettlementOutcome {
    /// The outcome of a settle handler's result.
    pub fn of(result: &Result<Settled, WireError>) -> SettlementOutcome {
        match result {
            Ok(settled) if settled.replay => SettlementOutcome::Replay,
            Ok(_) => SettlementOutcome::Settled,
            Err(e) => SettlementOutcome::Refused(e.code),
        }
    }

    /// The label value: `settled`, `replay` or the error code.
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementOutcome::Settled => "settled",
            SettlementOutcome::Replay => "replay",
            SettlementOutcome::Refused(code) => code.as_str(),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// What the server counts. Cheap to update from any task or thread
/// (atomics); encoded on demand by the metrics listener.
pub struct ServerMetrics {
    registry: Registry,
    settlements: Family<OutcomeLabel, Counter>,
    settlement_duration: Histogram,
    commit_batch_commands: Histogram,
    commit_duration: Histogram,
    ledger_queue_depth: Gauge,
    connections_open: Gauge,
    connections_refused: Counter,
    tls_handshakes: Family<ResultLabel, Counter>,
    people_online: Gauge,
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
        let metrics = ServerMetrics {
            registry: Registry::with_prefix(METRICS_PREFIX),
            settlements: Family::default(),
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
            connections_open: Gauge::default(),
            connections_refused: Counter::default(),
            tls_handshakes: Family::default(),
            people_online: Gauge::default(),
        };
        // The usual outcomes appear at zero from the start, so that a
        // dashboard's rates exist before the first payment.
        for outcome in [SettlementOutcome::Settled, SettlementOutcome::Replay] {
            metrics.outcome(outcome);
        }
        for result in [
            HandshakeResult::Ok,
            HandshakeResult::Failed,
            HandshakeResult::TimedOut,
        ] {
            metrics.handshake_counter(result);
        }
        metrics.registered()
    }

    fn registered(mut self) -> ServerMetrics {
        let r = &mut self.registry;
        r.register(
            "settlements",
            "Settle requests answered, by outcome: settled, replay or the error code",
            self.settlements.clone(),
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
            "connections_open",
            "Client connections holding a connection slot",
            self.connections_open.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed at once because every connection slot was taken",
            self.connections_refused.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes by result: ok, failed or timed_out",
            self.tls_handshakes.clone(),
        );
        r.register(
            "people_online",
            "People online (announced with `online`), read at scrape time; on a shared PostgreSQL ledger, across every server",
            self.people_online.clone(),
        );
        r.register(
            "build",
            "The running build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        self
    }

    fn outcome(&self, outcome: SettlementOutcome) -> Counter {
        self.settlements.get_or_create_owned(&OutcomeLabel {
            outcome: outcome.as_str(),
        })
    }

    fn handshake_counter(&self, result: HandshakeResult) -> Counter {
        self.tls_handshakes.get_or_create_owned(&ResultLabel {
            result: result.as_str(),
        })
    }

    /// A settle request ended with `outcome` after `elapsed`.
    pub fn settlement(&self, outcome: SettlementOutcome, elapsed: Duration) {
        self.outcome(outcome).inc();
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
    /// content type is [`TEXT_CONTENT_TYPE`].
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The content type of [`ServerMetrics::encode`]'s text.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

impl CommitObserver for ServerMetrics {
    fn batch_committed(&self, commands: usize, elapsed: Duration) {
        self.commit_batch_commands.observe(commands as f64);
        self.commit_duration.observe(elapsed.as_secs_f64());
    }
}

impl ListenerObserver for ServerMetrics {
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
        self.handshake_counter(result).inc();
    }
}

/// A count as a gauge value, saturating (a count never nears it).
fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// How many power-of-two buckets reach `max`: 1, 2, 4, ... ≥ `max`.
fn batch_buckets(max: usize) -> u16 {
    let bits = usize::BITS - max.max(1).saturating_sub(1).leading_zeros();
    u16::try_from(bits + 1).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let text = metrics.encode().expect("encodes");
        assert!(text.contains("micropay_settlements_total{outcome=\"insufficient_funds\"} 1"));
        assert!(text.contains("micropay_settlements_total{outcome=\"settled\"} 1"));
        assert!(text.contains("micropay_settlements_total{outcome=\"replay\"} 0"));
        assert!(text.contains("micropay_settlement_duration_seconds_count 2"));
        let version = env!("CARGO_PKG_VERSION");
        assert!(text.contains(&format!("micropay_build_info{{version=\"{version}\"}} 1")));
    }
}
