//! `p2p`: the whole path. Payers sign and send to payees' peer listeners,
//! payees forward, the server settles, payers verify receipts.

use std::sync::Arc;
use std::time::Duration;

use micropay::core::keys::VerifyingKey;
use micropay::core::limits::CONNECT_TIMEOUT_MS_DEFAULT;
use micropay::core::name::Name;
use micropay::core::payment::{Payment, PaymentId, Receipt, SignedPayment};
use micropay::net::link::Link;
use micropay::net::session::SessionLimits;
use micropay::person::{self, Person, ServeEvent, ServeOptions};
use micropay::system::clock::now_s;
use micropay::wire::{encode_body, PaymentJson, PeerRequest, Reply, Settled, WireError};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::driver::{drive, finish_report, make_people, progress, register_all, Job};
use crate::error::{setup, BenchError};
use crate::report::{BenchOptions, Report};
use crate::server_process::ServerProcess;

/// Payees' listeners running in this process, and how to stop them.
struct Payees {
    /// Each payee's listening address, in payee order.
    addresses: Vec<String>,
    stop: watch::Sender<bool>,
    serving: Vec<JoinHandle<Result<(), person::PeerError>>>,
}

impl Payees {
    /// Stops every listener and waits for them.
    async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.serving {
            let _ = task.await;
        }
    }
}

/// `p2p`: payers sign and pay payees' listeners; payees forward; the
/// server settles; payers verify each receipt.
pub async fn run_p2p(
    server: &ServerProcess,
    options: &BenchOptions,
    show_progress: bool,
) -> Result<Report, BenchError> {
    let payee_count = options.accounts.clamp(1, 64);
    let payer_count = options.connections.max(1);
    let payees = make_people(server, "payee", payee_count)?;
    let payers = make_people(server, "payer", payer_count)?;
    let _payee_links = register_all(server, &payees).await?;
    let payer_links = register_all(server, &payers).await?;
    let server_key: VerifyingKey = payer_links
        .first()
        .and_then(|l| l.peer_key())
        .ok_or_else(|| BenchError::Setup("no server key".into()))?;
    let listeners = start_payees(server, &payees).await?;
    let links = connect_payers(&payers, &payees, &listeners.addresses).await?;

    let per_payer = options.count.div_ceil(payer_count);
    let bar = progress((per_payer * payer_count) as u64, show_progress);
    let server_key = Arc::new(server_key);
    let sources = links
        .into_iter()
        .map(|(link, payer, payee)| {
            let source = payer_source(payer, payee, per_payer, server_key.clone());
            (link, source)
        })
        .collect();
    let cpu_before = server.cpu_us();
    let (samples, measure_from) = drive(sources, options, &bar).await;
    bar.finish_and_clear();
    let cpu_after = server.cpu_us();
    listeners.stop().await;
    Ok(finish_report(
        "p2p",
        server,
        options,
        &samples,
        measure_from,
        cpu_after - cpu_before,
    ))
}

/// Starts each payee's peer listener in this process and waits until it
/// is online.
async fn start_payees(
    server: &ServerProcess,
    payees: &[Arc<Person>],
) -> Result<Payees, BenchError> {
    let (stop, stop_rx) = watch::channel(false);
    let mut addresses = Vec::new();
    let mut serving = Vec::new();
    for payee in payees {
        let (events_tx, mut events_rx) = mpsc::channel(micropay::core::limits::SERVE_EVENTS_MAX);
        let mut stop_rx = stop_rx.clone();
        let opts = ServeOptions {
            listen: "127.0.0.1:0".parse().map_err(setup("address"))?,
            advertise: None,
            server: server.addr.clone(),
            limits: SessionLimits::default(),
            reconnect: person::Reconnect::default(),
            channels_dir: None,
            log_state: None,
        };
        serving.push(tokio::spawn(person::serve(
            payee.clone(),
            opts,
            events_tx,
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        )));
        // The first event is Online with the listening address; later
        // events are drained so the channel does not grow.
        let address = match tokio::time::timeout(Duration::from_secs(10), events_rx.recv()).await {
            Ok(Some(ServeEvent::Online { listen, .. })) => listen,
            _ => return Err(BenchError::Setup("a payee did not come online".into())),
        };
        tokio::spawn(async move { while events_rx.recv().await.is_some() {} });
        addresses.push(address);
    }
    Ok(Payees {
        addresses,
        stop,
        serving,
    })
}

/// Each payer holds one connection to one payee's listener.
async fn connect_payers(
    payers: &[Arc<Person>],
    payees: &[Arc<Person>],
    addresses: &[String],
) -> Result<Vec<(Arc<Link>, Arc<Person>, Name)>, BenchError> {
    let mut links = Vec::new();
    for (i, payer) in payers.iter().enumerate() {
        let payee = &payees[i % payees.len()];
        let link = Link::connect(
            &addresses[i % payees.len()],
            payee.name.as_str(),
            payer.payer_config(),
            CONNECT_TIMEOUT_MS_DEFAULT,
        )
        .await?;
        links.push((Arc::new(link), payer.clone(), payee.name.clone()));
    }
    Ok(links)
}

/// `count` payments from `payer` to `payee`, each signed in the timed
/// path, as a real payer does, and judged as `send` judges a receipt: by
/// its log proof (one checkpoint signature per batch, through the payer's
/// cache), or without one by the server's signature.
fn payer_source(
    payer: Arc<Person>,
    payee: Name,
    count: usize,
    server_key: Arc<VerifyingKey>,
) -> impl FnMut() -> Option<Job> + Send + 'static {
    let mut left = count;
    move || {
        left = left.checked_sub(1)?;
        let signed = Payment {
            id: PaymentId::random(),
            payer: payer.name.clone(),
            payee: payee.clone(),
            amount_minor: 1,
            expires_at_s: now_s() + 600,
            memo: String::new(),
        }
        .sign(&payer.key);
        let body = encode_body(&PeerRequest::Pay {
            payment: PaymentJson::from(&signed),
        });
        let server_key = server_key.clone();
        let payer = payer.clone();
        let judge: Box<dyn FnOnce(Reply) -> bool + Send> = Box::new(move |r: Reply| {
            receipt_ok(&payer, r.into_result::<Settled>(), &signed, &server_key)
        });
        Some((body, judge))
    }
}

fn receipt_ok(
    payer: &Person,
    settled: Result<Settled, WireError>,
    signed: &SignedPayment,
    server_key: &VerifyingKey,
) -> bool {
    let Ok(settled) = settled else {
        return false;
    };
    let (Ok(receipt), Ok(signature)) = (
        Receipt::try_from(&settled.receipt),
        settled.receipt.signature_bytes(),
    ) else {
        return false;
    };
    payer
        .check_receipt(
            server_key,
            signed,
            &receipt,
            signature.as_deref(),
            settled.log.as_ref(),
        )
        .is_ok()
}
