//! `serve`: go online and print each payment as it arrives.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use micropay::core::limits::SERVE_EVENTS_MAX;
use micropay::metrics::PeerMetrics;
use micropay::net::session::SessionLimits;
use micropay::person::{self, Person, Reconnect, ServeEvent, ServeOptions};
use micropay::system::terminal::escape;

use crate::Failure;

/// Where and how to serve, from the command line.
pub struct Request {
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--advertise`.
    pub advertise: Option<String>,
    /// `--keepalive-ms`.
    pub keepalive_ms: u64,
    /// `--metrics-listen` and `--metrics-allow-non-loopback`.
    pub metrics: Option<(SocketAddr, bool)>,
    /// `--channels-dir`.
    pub channels_dir: Option<std::path::PathBuf>,
    /// The log state file (next to the certificates, shared with `send`
    /// and `verify-log`).
    pub log_state: std::path::PathBuf,
}

/// Serves until Ctrl-C, reconnecting whenever the server goes away; fails
/// only if the first connection does (or the server refuses us for good).
pub async fn run(
    person: Person,
    server: &str,
    request: Request,
    json: bool,
) -> Result<(), Failure> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(SERVE_EVENTS_MAX);
    let options = ServeOptions {
        listen: request.listen,
        advertise: request.advertise,
        server: server.to_owned(),
        limits: SessionLimits::default(),
        reconnect: Reconnect {
            keepalive_ms: request.keepalive_ms,
            ..Reconnect::default()
        },
        channels_dir: request.channels_dir,
        log_state: Some(request.log_state),
    };
    let metrics = Arc::new(PeerMetrics::new());
    let (stop_metrics, metrics_stopped) = tokio::sync::watch::channel(false);
    if let Some((addr, allow_non_loopback)) = request.metrics {
        let listener = micropay::metrics::http::bind(addr, allow_non_loopback)
            .await
            .map_err(|e| Failure::new(2, "metrics_listen", e.to_string()))?;
        let served = metrics.clone();
        tokio::spawn(micropay::metrics::http::serve(
            listener,
            served,
            metrics_stopped,
        ));
    }
    let printer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            print_event(&event, json);
        }
    });
    let result = person::serve_with_metrics(
        Arc::new(person),
        options,
        metrics,
        tx,
        micropay::system::signal::shutdown_signal(),
    )
    .await;
    let _ = stop_metrics.send(true);
    let _ = printer.await;
    Ok(result?)
}

fn print_event(event: &ServeEvent, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(event) {
            println!("{line}");
        }
    } else {
        println!("{}", describe(event));
    }
    // Scripts read these lines as they happen.
    let _ = std::io::stdout().flush();
}

/// One line for people; everything the payer chose is escaped.
fn describe(event: &ServeEvent) -> String {
    match event {
        ServeEvent::Online {
            listen,
            address,
            replaced,
        } => {
            let took_over = if *replaced {
                "; took over from an earlier serve of yours, which payers no longer reach"
            } else {
                ""
            };
            format!(
                "online as {} (listening on {listen}){took_over}; waiting for payments, Ctrl-C to stop",
                escape(address)
            )
        }
        ServeEvent::Reconnecting {
            reason,
            retry_in_ms,
        } => format!(
            "lost the server ({}); reconnecting in {retry_in_ms} ms; payments are refused until then",
            escape(reason)
        ),
        ServeEvent::Superseded { address } => match address {
            Some(address) => format!(
                "superseded: another serve of yours took over, payers are now sent to {}; this one is no longer advertised",
                escape(address)
            ),
            None => "superseded: the server no longer lists you as online; payers are not sent here".to_owned(),
        },
        ServeEvent::Received {
            payment_id,
            payer,
            amount,
            memo,
            seq,
            replay,
        } => {
            if *replay {
                return format!(
                    "replayed: payment {payment_id} from {} had settled before (seq {seq}); nothing moved",
                    escape(payer)
                );
            }
            let memo = if memo.is_empty() {
                String::new()
            } else {
                format!(" memo: {}", escape(memo))
            };
            format!(
                "received {amount} from {}{memo} (seq {seq}, payment {payment_id})",
                escape(payer)
            )
        }
        ServeEvent::Refused {
            payer,
            code,
            message,
        } => format!(
            "refused a payment from {}: {code}: {}",
            escape(payer),
            escape(message)
        ),
        ServeEvent::Offline {} => "offline".to_owned(),
    }
}
