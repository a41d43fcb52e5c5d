//! `handshake`: new mutual-TLS connections per second (each followed by
//! one request), with or without session resumption.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use micropay::core::limits::CONNECT_TIMEOUT_MS_DEFAULT;
use micropay::net::link::{host_of, CallError, Link};
use micropay::net::tls;
use micropay::wire::{Balance, Registered, ServerRequest};
use rustls::ClientConfig;
use tokio::sync::mpsc;

use crate::driver::{finish_report, progress};
use crate::error::{setup, BenchError};
use crate::report::{BenchOptions, Report, Sample};
use crate::server_process::ServerProcess;

/// One connection attempt: its sample and whether it was resumed.
type Attempt = (Sample, bool);

/// `handshake`: new mutual-TLS connections per second, each followed by
/// one `balance` request so that the server has verified the client.
pub async fn run_handshake(
    server: &ServerProcess,
    options: &BenchOptions,
    show_progress: bool,
) -> Result<Report, BenchError> {
    let config = registered_config(server, options.resumption).await?;
    let concurrency = options.connections.max(1);
    let per_task = options.count.div_ceil(concurrency);
    let bar = progress((per_task * concurrency) as u64, show_progress);
    let cpu_before = server.cpu_us();
    let start = Instant::now();
    let measure_from = start + Duration::from_millis(options.warmup_ms);
    let deadline = measure_from + Duration::from_millis(options.duration_ms);
    let (tx, mut rx) = mpsc::unbounded_channel::<Attempt>();
    for _ in 0..concurrency {
        tokio::spawn(connector(
            server.addr.clone(),
            config.clone(),
            per_task,
            deadline,
            tx.clone(),
        ));
    }
    drop(tx);
    let mut samples = Vec::new();
    let mut resumed = 0;
    while let Some((sample, was_resumed)) = rx.recv().await {
        if was_resumed && sample.done >= measure_from {
            resumed += 1;
        }
        samples.push(sample);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let cpu_after = server.cpu_us();
    let mut report = finish_report(
        "handshake",
        server,
        options,
        &samples,
        measure_from,
        cpu_after - cpu_before,
    );
    report.resumed = resumed;
    Ok(report)
}

/// A client configuration for a fresh account, registered once. A fresh
/// account per run: a name is bound to the key it registered with, and
/// every run makes a new key.
async fn registered_config(
    server: &ServerProcess,
    resumption: bool,
) -> Result<Arc<ClientConfig>, BenchError> {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let material = server.material(&format!("shaker{run}"))?;
    let mut config = (*tls::client_config(&material).map_err(setup("client config"))?).clone();
    if !resumption {
        config.resumption = rustls::client::Resumption::disabled();
    }
    let config = Arc::new(config);
    let first = Link::connect(
        &server.addr,
        host_of(&server.addr),
        config.clone(),
        CONNECT_TIMEOUT_MS_DEFAULT,
    )
    .await?;
    let _: Registered = first.call(&ServerRequest::Register {}).await?;
    Ok(config)
}

/// Connects `count` times in a row (until `deadline`), asking the balance
/// on each new connection, and reports every attempt.
async fn connector(
    addr: String,
    config: Arc<ClientConfig>,
    count: usize,
    deadline: Instant,
    tx: mpsc::UnboundedSender<Attempt>,
) {
    let host = host_of(&addr).to_owned();
    for _ in 0..count {
        if Instant::now() > deadline {
            break;
        }
        let began = Instant::now();
        let outcome = async {
            let link =
                Link::connect(&addr, &host, config.clone(), CONNECT_TIMEOUT_MS_DEFAULT).await?;
            let _: Balance = link.call(&ServerRequest::Balance {}).await?;
            Ok::<bool, CallError>(link.resumed())
        }
        .await;
        let done = Instant::now();
        let sample = Sample {
            done,
            latency_us: done.duration_since(began).as_micros() as u64,
            ok: outcome.is_ok(),
        };
        let _ = tx.send((sample, matches!(outcome, Ok(true))));
    }
}
