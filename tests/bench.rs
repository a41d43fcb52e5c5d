//! Short runs of every `micropay-bench` mode: the bench works and its
//! accounting is right (every payment it counts as settled is in the
//! ledger, and the audit is clean afterwards). No timing assertions.

use std::path::Path;

use micropay::bench::{self, BenchOptions, ServerProcess};

fn server_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_micropay-server"))
}

fn small(count: usize) -> BenchOptions {
    BenchOptions {
        count,
        duration_ms: 5_000,
        warmup_ms: 0,
        connections: 2,
        window: 16,
        accounts: 6,
        resumption: true,
        rate_per_s: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_mode_counts_exactly_what_the_ledger_holds() {
    let server = ServerProcess::start(server_bin(), &[]).expect("server starts");
    let mut report = bench::run_settle(&server, &small(600), false)
        .await
        .expect("settle run");
    assert_eq!(report.failed, 0);
    assert_eq!(report.ok_total, 600, "all pre-signed payments settle");
    server.stop_and_audit(&mut report).expect("stop and audit");
    assert!(report.audit_clean, "{:?}", report.audit_violations);
    assert_eq!(report.ledger_payments, report.ok_total);
    assert!(report.latency.p50_us <= report.latency.max_us);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2p_mode_counts_exactly_what_the_ledger_holds() {
    let server = ServerProcess::start(server_bin(), &[]).expect("server starts");
    let mut options = small(300);
    options.accounts = 2;
    let mut report = bench::run_p2p(&server, &options, false)
        .await
        .expect("p2p run");
    assert_eq!(report.failed, 0);
    assert_eq!(
        report.ok_total, 300,
        "every payment comes back with a valid receipt"
    );
    server.stop_and_audit(&mut report).expect("stop and audit");
    assert!(report.audit_clean, "{:?}", report.audit_violations);
    assert_eq!(report.ledger_payments, report.ok_total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_mode_with_and_without_resumption() {
    let server = ServerProcess::start(server_bin(), &[]).expect("server starts");
    let with = bench::run_handshake(&server, &small(60), false)
        .await
        .expect("handshake run");
    assert_eq!(with.failed, 0);
    assert_eq!(with.ok_total, 60);
    assert!(with.resumed > 0, "resumption is used when allowed");
    let mut options = small(60);
    options.resumption = false;
    let without = bench::run_handshake(&server, &options, false)
        .await
        .expect("handshake run");
    assert_eq!(without.ok_total, 60);
    assert_eq!(without.resumed, 0, "no resumption when disabled");
}

#[test]
fn crypto_floor_is_measured() {
    let floor = bench::measure_crypto_floor(100);
    assert!(floor.sign_per_s_core > 0.0 && floor.verify_per_s_core > 0.0);
    assert!(floor.cores >= 1);
    assert!(floor.settle_floor_per_s > floor.p2p_floor_per_s);
}

#[test]
fn the_bench_binary_runs_and_writes_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("out.json");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_micropay-bench"))
        .args([
            "settle",
            "--count",
            "200",
            "--duration",
            "3",
            "--warmup",
            "0",
            "-q",
        ])
        .arg("--server-bin")
        .arg(server_bin())
        .arg("--json")
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("bench runs");
    assert!(status.success());
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
            .expect("valid JSON");
    assert_eq!(figures["mode"], "settle");
    assert_eq!(figures["ok_total"], 200);
    assert_eq!(figures["ledger_payments"], 200);
    assert_eq!(figures["audit_clean"], true);
    assert!(
        figures["floor"]["settle_floor_per_s"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0
    );
}
