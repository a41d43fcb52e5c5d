//! What a run measures: its options, the figures and how samples become
//! figures, and the human table.

use std::time::Instant;

use serde::Serialize;

use crate::floor::CryptoFloor;

/// Sizes and bounds of a run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchOptions {
    /// Most operations to run (settle: pre-signed payments).
    pub count: usize,
    /// Most time to run, ms (after warm-up).
    pub duration_ms: u64,
    /// Time at the start not counted, ms.
    pub warmup_ms: u64,
    /// Connections: payee links (settle), payers (p2p), concurrent
    /// connectors (handshake).
    pub connections: usize,
    /// Requests in flight per connection.
    pub window: usize,
    /// Channel: links each message pays.
    pub units_per_message: u64,
    /// Accounts (settle: payers and payees together; p2p: payees).
    pub accounts: usize,
    /// Handshake mode: allow TLS session resumption.
    pub resumption: bool,
    /// Offered load, operations per second over all connections; `None`
    /// sends as fast as the window allows (a closed loop).
    pub rate_per_s: Option<f64>,
    /// Server processes sharing the ledger.
    pub servers: usize,
    /// `"sqlite"` or `"postgres"`.
    pub ledger: String,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Maximum.
    pub max_us: u64,
}

impl Latency {
    fn from_samples(samples: &mut [u64]) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        Latency {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            p999_us: at(0.999),
            max_us: samples[samples.len() - 1],
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `settle`, `p2p`, `handshake` or `floor`.
    pub mode: String,
    /// The options used.
    pub options: Option<BenchOptions>,
    /// Operations that succeeded in the measured interval.
    pub ok: u64,
    /// Operations that failed in the measured interval.
    pub failed: u64,
    /// All operations that succeeded, warm-up included.
    pub ok_total: u64,
    /// Length of the measured interval, seconds.
    pub measured_s: f64,
    /// Successful operations per second in the measured interval.
    pub throughput_per_s: f64,
    /// Latency of successful operations in the measured interval.
    pub latency: Latency,
    /// Server CPU time (user + system) per successful operation, µs.
    pub server_cpu_us_per_op: f64,
    /// The same, under the name issue 13's scripts read.
    pub server_cpu_per_op_us: f64,
    /// ring's single-core Ed25519 verifications per second measured in
    /// this run (V: the unit the targets of issue 13 are stated in).
    pub verify_per_core: f64,
    /// Throughput / V.
    pub throughput_per_verify_per_core: f64,
    /// Server CPU per operation × V: how many single ring verifications'
    /// time one operation costs the server.
    pub server_cpu_per_op_in_verifies: f64,
    /// Server peak resident memory, KiB.
    pub server_peak_rss_kib: u64,
    /// The crypto floor of this machine.
    pub floor: CryptoFloor,
    /// throughput / the matching floor (settle or p2p); 0 for handshake.
    pub ratio_to_floor: f64,
    /// Handshakes that were resumptions (handshake mode).
    pub resumed: u64,
    /// Payments the ledger holds after the run (settle and p2p).
    pub ledger_payments: u64,
    /// Whether `audit` found the ledger sound after the run.
    pub audit_clean: bool,
    /// Audit violations, if any.
    pub audit_violations: Vec<String>,
}

/// One finished operation.
pub struct Sample {
    /// When its reply was in.
    pub done: Instant,
    /// From sending to the reply, µs.
    pub latency_us: u64,
    /// Whether it succeeded.
    pub ok: bool,
}

/// Turns samples into the measured figures.
pub fn summarize(mode: &str, samples: &[Sample], measure_from: Instant, report: &mut Report) {
    let measured: Vec<&Sample> = samples.iter().filter(|s| s.done >= measure_from).collect();
    report.mode = mode.to_owned();
    report.ok_total = samples.iter().filter(|s| s.ok).count() as u64;
    report.ok = measured.iter().filter(|s| s.ok).count() as u64;
    report.failed = measured.iter().filter(|s| !s.ok).count() as u64;
    let last = measured
        .iter()
        .map(|s| s.done)
        .max()
        .unwrap_or(measure_from);
    report.measured_s = last.saturating_duration_since(measure_from).as_secs_f64();
    report.throughput_per_s = if report.measured_s > 0.0 {
        report.ok as f64 / report.measured_s
    } else {
        0.0
    };
    let mut latencies: Vec<u64> = measured
        .iter()
        .filter(|s| s.ok)
        .map(|s| s.latency_us)
        .collect();
    report.latency = Latency::from_samples(&mut latencies);
}

/// Server CPU µs per operation (0 without operations).
pub fn cpu_per_op(cpu_us: u64, ops: u64) -> f64 {
    if ops == 0 {
        0.0
    } else {
        cpu_us as f64 / ops as f64
    }
}

/// Prints the figures as a human table on stdout.
pub fn print_table(r: &Report) {
    println!();
    println!("micropay-bench {}", r.mode);
    if r.mode != "floor" {
        print_run(r);
    }
    print_floor(&r.floor);
    if r.ratio_to_floor > 0.0 {
        println!(
            "  achieved / floor         {:>12.1} %",
            r.ratio_to_floor * 100.0
        );
    }
    if r.verify_per_core > 0.0 && (r.mode == "settle" || r.mode == "p2p") {
        println!(
            "  in units of V (ring verify/s/core = {:.0}): throughput {:.2} × V, server CPU per op {:.2} / V",
            r.verify_per_core, r.throughput_per_verify_per_core, r.server_cpu_per_op_in_verifies
        );
    }
}

fn print_run(r: &Report) {
    let ms = |us: u64| us as f64 / 1000.0;
    if let Some(o) = &r.options {
        println!(
            "  ledger, servers          {:>12} × {}",
            o.ledger, o.servers
        );
    }
    println!("  succeeded (measured)     {:>12}", r.ok);
    println!("  failed (measured)        {:>12}", r.failed);
    println!("  measured interval        {:>12.2} s", r.measured_s);
    println!("  throughput               {:>12.0} /s", r.throughput_per_s);
    let l = &r.latency;
    for (label, us) in [
        ("p50", l.p50_us),
        ("p90", l.p90_us),
        ("p99", l.p99_us),
        ("p99.9", l.p999_us),
        ("max", l.max_us),
    ] {
        println!("  latency {label:<17} {:>12.2} ms", ms(us));
    }
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

fn print_floor(f: &CryptoFloor) {
    println!("  crypto floor (Ed25519: ring signs, ZIP-215 single verify)");
    println!(
        "    verify per core        {:>12.0} /s",
        f.verify_per_s_core
    );
    println!(
        "    ring verify per core   {:>12.0} /s (V)",
        f.ring_verify_per_s_core
    );
    println!("    sign per core          {:>12.0} /s", f.sign_per_s_core);
    println!("    cores                  {:>12}", f.cores);
    println!(
        "    settle floor           {:>12.0} /s (1 verify per payment; checkpoints per batch)",
        f.settle_floor_per_s
    );
    println!(
        "    p2p floor              {:>12.0} /s (2 verifies + 1 sign per payment)",
        f.p2p_floor_per_s
    );
}
