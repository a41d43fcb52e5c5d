//! `serve`: go online and print each payment as it arrives.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use micropay::core::limits::SERVE_EVENTS_MAX;
use micropay::net::session::SessionLimits;
use micropay::person::{self, Person, ServeEvent, ServeOptions};
use micropay::system::terminal::escape;

use crate::Failure;

/// Serves until Ctrl-C or until the server goes away.
pub async fn run(
    person: Person,
    server: &str,
    listen: SocketAddr,
    advertise: Option<String>,
    json: bool,
) -> Result<(), Failure> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(SERVE_EVENTS_MAX);
    let options = ServeOptions {
        listen,
        advertise,
        server: server.to_owned(),
        limits: SessionLimits::default(),
    };
    let printer = tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            print_event(&event, json);
        }
    });
    let result = person::serve(
        Arc::new(person),
        options,
        tx,
        micropay::system::signal::shutdown_signal(),
    )
    .await;
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
        ServeEvent::Online { listen, address } => format!(
            "online as {} (listening on {listen}); waiting for payments, Ctrl-C to stop",
            escape(address)
        ),
        ServeEvent::Received {
            payment_id,
            payer,
            amount,
            memo,
            seq,
        } => {
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
