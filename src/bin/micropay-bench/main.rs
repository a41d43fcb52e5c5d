//! micropay-bench: drives a real micropay-server over mutual TLS with
//! real signatures and reports throughput, latency, server CPU and memory
//! next to the crypto floor measured in the same run.
//!
//! It starts a real `micropay-server` process (on certificates and a
//! database of its own, in a temporary directory) and reports the
//! server's CPU per operation and peak memory from /proc. With
//! `--db postgres://...` the ledger is a fresh database on that
//! PostgreSQL server, and `--servers N` starts N servers on it, the
//! bench's connections spread round-robin over them.
//!
//! Modes (one module each):
//! - `settle`: server capacity. K payee connections forward payments that
//!   were signed before the clock started, pipelined.
//! - `p2p`: the whole path. Payers sign and send to payees' peer
//!   listeners, payees forward, the server settles, payers verify receipts.
//! - `handshake`: new mutual-TLS connections per second (each followed by
//!   one request), with or without session resumption.
//! - `floor`: only the crypto floor, no server.
//! - `verify`: Ed25519 verification paths (ring single, ed25519-zebra
//!   single and batch) on one core, no server.
//!
//! The rest: `server_process` (the server child and its /proc figures),
//! `pki` (its certificates, made with `micropay::certs`), `driver` (the
//! pipelined send loop), `report` (figures and the table), `error`.

mod channel;
mod database;
mod driver;
mod error;
mod floor;
mod handshake;
mod p2p;
mod pki;
mod report;
mod server_process;
mod settle;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use micropay::ledger::DbLocation;

use report::{print_table, BenchOptions, Report};
use server_process::ServerProcess;

/// Measure micropay on this machine.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "Measure micropay on this machine: settlement and peer-to-peer throughput and latency against a real server, handshakes, and the crypto floor"
)]
struct Args {
    /// Most operations to run.
    #[arg(long, global = true)]
    count: Option<usize>,
    /// Most seconds to measure (after warm-up).
    #[arg(long, global = true, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up, not measured.
    #[arg(long, global = true, default_value_t = 1.0)]
    warmup: f64,
    /// Connections: payee links (settle), payers (p2p), concurrent
    /// connectors (handshake).
    #[arg(long, global = true)]
    connections: Option<usize>,
    /// Requests in flight per connection.
    #[arg(long, global = true)]
    window: Option<usize>,
    /// Offered load in operations per second (default: as fast as the
    /// window allows).
    #[arg(long, global = true)]
    rate: Option<f64>,
    /// Accounts (settle: all accounts; p2p: payees).
    #[arg(long, global = true)]
    accounts: Option<usize>,
    /// The server binary (default: micropay-server next to this program).
    #[arg(long, global = true)]
    server_bin: Option<PathBuf>,
    /// The ledger: `postgres://...` settles into a fresh database made for
    /// the run on that server (its role must be allowed to create
    /// databases; the database is dropped afterwards); an SQLite path or
    /// nothing uses a fresh SQLite file.
    #[arg(long, global = true, value_parser = DbLocation::parse)]
    db: Option<DbLocation>,
    /// Server processes sharing the ledger (more than 1 needs PostgreSQL).
    #[arg(long, global = true, default_value_t = 1)]
    servers: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug, Clone, Copy)]
enum Mode {
    /// Server capacity: payee connections forward pre-signed payments, pipelined.
    Settle,
    /// The whole path: payers → payees' listeners → server → receipts back.
    P2p,
    /// New mutual-TLS connections per second.
    Handshake {
        /// Disable TLS session resumption.
        #[arg(long)]
        no_resumption: bool,
    },
    /// Only the crypto floor (no server).
    Floor,
    /// Ed25519 verification on one core: ring single, ed25519-zebra single
    /// and batch (no server).
    Verify,
    /// One payment channel, payer → payee over peer mTLS: links paid per
    /// second, the payee checking and storing each (--units links per
    /// message, --window messages in flight, --count links at most), and
    /// the open and close cost.
    Channel {
        /// Links each message pays.
        #[arg(long, default_value_t = 1)]
        units: u64,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("micropay-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Default (connections, window, accounts, count) of each mode.
fn defaults(mode: Mode) -> (usize, usize, usize, usize) {
    match mode {
        Mode::Settle | Mode::Floor | Mode::Verify => (4, 128, 64, 300_000),
        Mode::P2p => (8, 32, 2, 200_000),
        Mode::Handshake { .. } => (4, 1, 1, 20_000),
        Mode::Channel { .. } => (1, 256, 2, 1_000_000),
    }
}

fn options(args: &Args) -> BenchOptions {
    let (connections, window, accounts, count) = defaults(args.mode);
    BenchOptions {
        count: args.count.unwrap_or(count),
        duration_ms: (args.duration * 1000.0) as u64,
        warmup_ms: (args.warmup * 1000.0) as u64,
        connections: args.connections.unwrap_or(connections),
        window: args.window.unwrap_or(window),
        accounts: args.accounts.unwrap_or(accounts),
        resumption: !matches!(
            args.mode,
            Mode::Handshake {
                no_resumption: true
            }
        ),
        units_per_message: match args.mode {
            Mode::Channel { units } => units.max(1),
            _ => 1,
        },
        rate_per_s: args.rate,
        servers: args.servers,
        ledger: match &args.db {
            Some(DbLocation::Postgres(_)) => "postgres".into(),
            _ => "sqlite".into(),
        },
    }
}

fn run(args: &Args) -> Result<()> {
    let options = options(args);
    if let Mode::Verify = args.mode {
        return run_verify();
    }
    eprintln!("measuring the crypto floor ...");
    let floor = floor::measure_crypto_floor(1000);
    let mut report = if let Mode::Floor = args.mode {
        Report {
            mode: "floor".into(),
            ..Report::default()
        }
    } else {
        run_against_server(args, &options)?
    };
    report.ratio_to_floor = match report.mode.as_str() {
        "settle" => report.throughput_per_s / floor.settle_floor_per_s,
        "p2p" => report.throughput_per_s / floor.p2p_floor_per_s,
        _ => 0.0,
    };
    report.verify_per_core = floor.ring_verify_per_s_core;
    report.server_cpu_per_op_us = report.server_cpu_us_per_op;
    report.throughput_per_verify_per_core = report.throughput_per_s / report.verify_per_core;
    report.server_cpu_per_op_in_verifies =
        report.server_cpu_per_op_us * report.verify_per_core / 1e6;
    report.floor = floor;
    print_table(&report);
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).context("encoding JSON")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    anyhow::ensure!(
        report.mode == "floor" || report.mode == "handshake" || report.audit_clean,
        "the ledger audit failed after the run: {:?}",
        report.audit_violations
    );
    Ok(())
}

/// Prints the Ed25519 verification rates of each path, one core.
fn run_verify() -> Result<()> {
    let rates = verify::measure_verify_paths(1000);
    let per_us = |per_s: f64| 1e6 / per_s;
    println!("path                 sigs/s   µs/sig  vs ring");
    let ring = rates.ring_single_per_s;
    let row = |name: &str, per_s: f64| {
        println!(
            "{name:<18} {per_s:>8.0} {:>8.1} {:>7.2}x",
            per_us(per_s),
            per_s / ring
        );
    };
    row("ring single", ring);
    row("zebra single", rates.zebra_single_per_s);
    for (n, per_s) in &rates.zebra_batch_per_s {
        row(&format!("zebra batch {n}"), *per_s);
    }
    Ok(())
}

/// Starts a server, runs the mode against it, stops it and audits its
/// ledger.
fn run_against_server(args: &Args, options: &BenchOptions) -> Result<Report> {
    let server_bin = match &args.server_bin {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("locating this program")?
            .with_file_name("micropay-server"),
    };
    let server = ServerProcess::start(&server_bin, args.db.as_ref(), args.servers)?;
    eprintln!(
        "{} server(s) {} on {:?} (pids {:?}), ledger {}",
        server.addrs.len(),
        server_bin.display(),
        server.addrs,
        server.pids(),
        server.db.location
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let show = !args.quiet;
    let mut report = runtime.block_on(async {
        match args.mode {
            Mode::Settle => settle::run_settle(&server, options, show).await,
            Mode::P2p => p2p::run_p2p(&server, options, show).await,
            Mode::Handshake { .. } => handshake::run_handshake(&server, options, show).await,
            Mode::Channel { .. } => channel::run_channel(&server, options).await,
            Mode::Floor | Mode::Verify => unreachable!("handled by the caller"),
        }
    })?;
    drop(runtime);
    server.stop_and_audit(&mut report)?;
    Ok(report)
}
