//! micropay-bench: drives a real micropay-server over mutual TLS with
//! real signatures and reports throughput, latency, server CPU and memory
//! next to the crypto floor measured in the same run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use micropay::bench::{self, BenchOptions, Report, ServerProcess};

/// Measure micropay on this machine.
#[derive(Parser, Debug)]
#[command(version, about)]
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

fn run(args: &Args) -> Result<()> {
    let (connections, window, accounts, count) = match args.mode {
        Mode::Settle | Mode::Floor => (4, 128, 64, 300_000),
        Mode::P2p => (8, 32, 2, 200_000),
        Mode::Handshake { .. } => (4, 1, 1, 20_000),
    };
    let options = BenchOptions {
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
        rate_per_s: args.rate,
    };
    eprintln!("measuring the crypto floor ...");
    let floor = bench::measure_crypto_floor(1000);
    let mut report = if let Mode::Floor = args.mode {
        Report {
            mode: "floor".into(),
            ..Report::default()
        }
    } else {
        let server_bin = match &args.server_bin {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .context("locating this program")?
                .with_file_name("micropay-server"),
        };
        let server = ServerProcess::start(&server_bin, &[])?;
        eprintln!(
            "server {} on {} (pid {})",
            server_bin.display(),
            server.addr,
            server.pid()
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        let mut report = runtime.block_on(async {
            match args.mode {
                Mode::Settle => bench::run_settle(&server, &options, !args.quiet).await,
                Mode::P2p => bench::run_p2p(&server, &options, !args.quiet).await,
                Mode::Handshake { .. } => {
                    bench::run_handshake(&server, &options, !args.quiet).await
                }
                Mode::Floor => unreachable!("handled above"),
            }
        })?;
        drop(runtime);
        server.stop_and_audit(&mut report)?;
        report
    };
    report.ratio_to_floor = match report.mode.as_str() {
        "settle" => report.throughput_per_s / floor.settle_floor_per_s,
        "p2p" => report.throughput_per_s / floor.p2p_floor_per_s,
        _ => 0.0,
    };
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

fn print_table(r: &Report) {
    let f = &r.floor;
    println!();
    println!("micropay-bench {}", r.mode);
    if r.mode != "floor" {
        println!("  succeeded (measured)     {:>12}", r.ok);
        println!("  failed (measured)        {:>12}", r.failed);
        println!("  measured interval        {:>12.2} s", r.measured_s);
        println!("  throughput               {:>12.0} /s", r.throughput_per_s);
        println!(
            "  latency p50              {:>12.2} ms",
            r.latency.p50_us as f64 / 1000.0
        );
        println!(
            "  latency p90              {:>12.2} ms",
            r.latency.p90_us as f64 / 1000.0
        );
        println!(
            "  latency p99              {:>12.2} ms",
            r.latency.p99_us as f64 / 1000.0
        );
        println!(
            "  latency p99.9            {:>12.2} ms",
            r.latency.p999_us as f64 / 1000.0
        );
        println!(
            "  latency max              {:>12.2} ms",
            r.latency.max_us as f64 / 1000.0
        );
        println!(
            "  server CPU per op        {:>12.1} µs",
            r.server_cpu_us_per_op
        );
        println!(
            "  server peak memory       {:>12} KiB",
            r.server_peak_rss_kib
        );
        if r.mode == "handshake" {
            println!("  resumed handshakes       {:>12}", r.resumed);
        } else {
            println!("  payments in the ledger   {:>12}", r.ledger_payments);
            println!(
                "  audit                    {:>12}",
                if r.audit_clean { "clean" } else { "FAILED" }
            );
        }
    }
    println!("  crypto floor (ring, Ed25519, this machine)");
    println!(
        "    verify per core        {:>12.0} /s",
        f.verify_per_s_core
    );
    println!("    sign per core          {:>12.0} /s", f.sign_per_s_core);
    println!("    cores                  {:>12}", f.cores);
    println!(
        "    settle floor           {:>12.0} /s (1 verify + 1 sign per payment)",
        f.settle_floor_per_s
    );
    println!(
        "    p2p floor              {:>12.0} /s (3 verifies + 2 signs per payment)",
        f.p2p_floor_per_s
    );
    if r.ratio_to_floor > 0.0 {
        println!(
            "  achieved / floor         {:>12.1} %",
            r.ratio_to_floor * 100.0
        );
    }
}
