//! `channel`: one payment channel, payer → payee over peer mTLS, the payee
//! (an in-process `serve` with a channel directory) checking every link by
//! hashing forward and writing it to disk before acknowledging it (one
//! write for all the links accepted since the last).
//! Reports links paid per second (`--units` links per message, `--window`
//! messages in flight), and the cost of the open and the close.

use std::sync::Arc;
use std::time::{Duration, Instant};

use micropay::core::limits::{CHANNEL_LINKS_MAX, CONNECT_TIMEOUT_MS_DEFAULT};
use micropay::net::link::Link;
use micropay::net::session::SessionLimits;
use micropay::person::channel_payee::PayeeChannels;
use micropay::person::channel_payer::PayerChannel;
use micropay::person::channel_serve::close_due;
use micropay::person::{self, ServeEvent, ServeOptions};
use micropay::system::clock::now_s;
use tokio::sync::{mpsc, watch};

use crate::driver::{make_people, register_all};
use crate::error::{setup, BenchError};
use crate::report::{BenchOptions, Latency, Report};
use crate::server_process::ServerProcess;

/// Runs the channel benchmark: `options.window` links per message, up to
/// `options.count` links (at most the channel's n) or `options.duration_ms`.
pub async fn run_channel(
    server: &ServerProcess,
    options: &BenchOptions,
) -> Result<Report, BenchError> {
    let units = options.units_per_message.max(1);
    let links = (options.count as u64).clamp(units, CHANNEL_LINKS_MAX);
    let payee = make_people(server, "payee", 1)?.remove(0);
    let payer = make_people(server, "payer", 1)?.remove(0);
    let payee_links = register_all(server, std::slice::from_ref(&payee)).await?;
    let server_links = register_all(server, std::slice::from_ref(&payer)).await?;
    let dir = std::env::temp_dir().join(format!("micropay-bench-channels-{}", std::process::id()));
    let (stop, stop_rx) = watch::channel(false);
    let (address, serving) = start_payee(server, payee.clone(), &dir, stop_rx).await?;
    let payer_dir = dir.join("payer");
    let opened_at = Instant::now();
    let terms = (payee.name.clone(), links, 1, now_s() + 3600);
    let mut channel = PayerChannel::open(&payer, &server_links[0], terms, &payer_dir)
        .await
        .map_err(setup("opening the channel"))?;
    let open_us = opened_at.elapsed().as_micros() as u64;
    let peer = Link::connect(
        &address,
        payee.name.as_str(),
        payer.payer_config(),
        CONNECT_TIMEOUT_MS_DEFAULT,
    )
    .await?;
    channel
        .offer(&peer)
        .await
        .map_err(setup("offering the channel"))?;
    let started = Instant::now();
    let messages = stream(&mut channel, &peer, options, links).await?;
    let measured_s = started.elapsed().as_secs_f64();
    // The payee's serve stops; its channel file holds the last link, which
    // the payee now submits (what serve does before the expiry).
    let _ = stop.send(true);
    let _ = serving.await;
    let held = PayeeChannels::open(&dir.join("payee")).map_err(setup("the payee's channels"))?;
    let held = Arc::new(std::sync::Mutex::new(held));
    let closed_at = Instant::now();
    let closed = close_due(&held, &payee_links[0], u64::MAX).await?;
    let close_us = closed_at.elapsed().as_micros() as u64;
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "channel: {} links in {messages} messages; open {open_us} µs, close {close_us} µs ({closed} closed)",
        channel.paid()
    );
    Ok(Report {
        mode: "channel".into(),
        options: Some(options.clone()),
        ok: channel.paid(),
        ok_total: channel.paid(),
        measured_s,
        throughput_per_s: channel.paid() as f64 / measured_s.max(1e-9),
        latency: Latency {
            p50_us: open_us,
            max_us: close_us,
            ..Latency::default()
        },
        ..Report::default()
    })
}

/// Pays `options.units_per_message` links per message, `options.window`
/// messages in flight, until `links` are paid or the time is up; answers
/// the messages sent.
async fn stream(
    channel: &mut PayerChannel,
    peer: &Link,
    options: &BenchOptions,
    links: u64,
) -> Result<u64, BenchError> {
    let units = options.units_per_message.max(1);
    let deadline = Instant::now() + Duration::from_millis(options.duration_ms.max(1));
    let mut messages = 0u64;
    // Chunks of messages, so that the deadline is checked now and then;
    // each chunk ends with the pipeline drained and the payer's state file
    // written.
    let chunk = (options.window.max(1) as u64).saturating_mul(64);
    while channel.paid() + units <= links && Instant::now() < deadline {
        let now = chunk.min((links - channel.paid()) / units);
        channel
            .pay_pipelined(peer, units, now, options.window)
            .await
            .map_err(setup("paying"))?;
        messages += now;
    }
    Ok(messages)
}

async fn start_payee(
    server: &ServerProcess,
    payee: Arc<micropay::person::Person>,
    dir: &std::path::Path,
    mut stop_rx: watch::Receiver<bool>,
) -> Result<
    (
        String,
        tokio::task::JoinHandle<Result<(), person::PeerError>>,
    ),
    BenchError,
> {
    let (events_tx, mut events_rx) = mpsc::channel(micropay::core::limits::SERVE_EVENTS_MAX);
    let opts = ServeOptions {
        listen: "127.0.0.1:0".parse().map_err(setup("address"))?,
        advertise: None,
        server: server.addr.clone(),
        limits: SessionLimits::default(),
        reconnect: person::Reconnect::default(),
        channels_dir: Some(dir.join("payee")),
        log_state: None,
    };
    let serving = tokio::spawn(person::serve(payee, opts, events_tx, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let address = match tokio::time::timeout(Duration::from_secs(10), events_rx.recv()).await {
        Ok(Some(ServeEvent::Online { listen, .. })) => listen,
        _ => return Err(BenchError::Setup("the payee did not come online".into())),
    };
    tokio::spawn(async move { while events_rx.recv().await.is_some() {} });
    Ok((address, serving))
}
