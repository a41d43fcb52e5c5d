//! Prometheus metrics: what the server counts ([`ServerMetrics`]), what a
//! payee's `serve` counts ([`PeerMetrics`]), the connection counts both
//! share ([`ListenerMetrics`]) and the bounded HTTP listener that serves
//! them ([`http`]).
//!
//! Every label value is one of our own fixed names (an outcome code, a
//! handshake result, the build's version): nothing a peer controls, such
//! as a name, a memo or an address, ever becomes a label, so the metrics
//! listener cannot leak them and a peer cannot grow the label space.
//! The registry and the text encoding are `prometheus-client`'s.

pub mod http;
mod listener;
mod peer;
mod server;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::wire::{ErrorCode, Settled, WireError};

pub use listener::ListenerMetrics;
pub use peer::PeerMetrics;
pub use server::ServerMetrics;

/// The prefix of every metric name.
pub const METRICS_PREFIX: &str = "micropay";

/// The content type of the text the metrics encode to: the Prometheus
/// text format, version 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// How a settlement ended, as counted (by the server for `settle`, by a
/// payee for each payment handed to it).
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

/// A counter per [`SettlementOutcome`], with `settled` and `replay`
/// present at zero from the start, so that a dashboard's rates exist
/// before the first payment.
#[derive(Clone)]
struct OutcomeCounter(Family<OutcomeLabel, Counter>);

impl OutcomeCounter {
    fn new() -> OutcomeCounter {
        let counter = OutcomeCounter(Family::default());
        for outcome in [SettlementOutcome::Settled, SettlementOutcome::Replay] {
            counter.of(outcome);
        }
        counter
    }

    fn of(&self, outcome: SettlementOutcome) -> Counter {
        self.0.get_or_create_owned(&OutcomeLabel {
            outcome: outcome.as_str(),
        })
    }
}

/// Registers `micropay_build_info{version="..."} 1`.
fn register_build_info(registry: &mut Registry) {
    registry.register(
        "build",
        "The running build",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
    );
}

/// Encodes `registry` in the Prometheus text format.
fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

/// A count as a gauge value, saturating (a count never nears it).
fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
