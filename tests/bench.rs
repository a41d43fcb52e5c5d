//! Short runs of every `micropay-bench` mode, through the real binary and
//! its JSON figures: the bench works and its accounting is right (every
//! payment it counts as settled is in the ledger, and the audit is clean
//! afterwards). No timing assertions.

use std::process::{Command, Stdio};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_micropay-bench");
const SERVER: &str = env!("CARGO_BIN_EXE_micropay-server");

/// Runs `micropay-bench MODE` with small sizes (`--count COUNT`,
/// `--accounts ACCOUNTS`, two connections, a window of 16, no warm-up)
/// plus `extra`, asserts that it succeeded and returns its JSON figures.
fn bench(mode: &str, count: usize, accounts: usize, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("out.json");
    let (count, accounts) = (count.to_string(), accounts.to_string());
    let output = Command::new(BENCH)
        .arg(mode)
        .args(["--count", &count, "--duration", "5", "--warmup", "0"])
        .args([
            "--connections",
            "2",
            "--window",
            "16",
            "--accounts",
            &accounts,
        ])
        .arg("-q")
        .args(extra)
        .arg("--server-bin")
        .arg(SERVER)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .expect("the bench runs");
    assert!(
        output.status.success(),
        "micropay-bench {mode} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("JSON written");
    serde_json::from_str(&text).expect("valid JSON")
}

fn u64_of(figures: &Value, pointer: &str) -> u64 {
    figures
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} is not a count in {figures}"))
}

fn f64_of(figures: &Value, pointer: &str) -> f64 {
    figures
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {figures}"))
}

/// The ledger holds exactly the payments the bench counted as settled,
/// and its audit is clean.
fn assert_ledger_matches(figures: &Value) {
    assert_eq!(
        figures["audit_clean"], true,
        "{}",
        figures["audit_violations"]
    );
    assert_eq!(
        u64_of(figures, "/ledger_payments"),
        u64_of(figures, "/ok_total")
    );
}

#[test]
fn settle_mode_counts_exactly_what_the_ledger_holds() {
    let figures = bench("settle", 600, 6, &[]);
    assert_eq!(figures["mode"], "settle");
    assert_eq!(u64_of(&figures, "/failed"), 0);
    assert_eq!(
        u64_of(&figures, "/ok_total"),
        600,
        "all pre-signed payments settle"
    );
    assert_ledger_matches(&figures);
    assert!(u64_of(&figures, "/latency/p50_us") <= u64_of(&figures, "/latency/max_us"));
    assert!(f64_of(&figures, "/floor/settle_floor_per_s") > 0.0);
    // The top-level figures scripts read (issue 13).
    for field in [
        "/verify_per_core",
        "/throughput_per_s",
        "/server_cpu_per_op_us",
    ] {
        assert!(f64_of(&figures, field) > 0.0, "{field} is missing or zero");
    }
}

#[test]
fn p2p_mode_counts_exactly_what_the_ledger_holds() {
    let figures = bench("p2p", 300, 2, &[]);
    assert_eq!(figures["mode"], "p2p");
    assert_eq!(u64_of(&figures, "/failed"), 0);
    assert_eq!(
        u64_of(&figures, "/ok_total"),
        300,
        "every payment comes back with a valid receipt"
    );
    assert_ledger_matches(&figures);
}

#[test]
fn channel_mode_pays_every_link_and_audits_clean() {
    // 160 links, 16 per message with up to 16 messages in flight: ten
    // messages, each checked and stored by the payee before its
    // acknowledgement, then the channel closed for all 160.
    let figures = bench("channel", 160, 2, &["--units", "16"]);
    assert_eq!(figures["mode"], "channel");
    assert_eq!(u64_of(&figures, "/ok_total"), 160);
    assert_eq!(figures["audit_clean"], true);
}

#[test]
fn handshake_mode_with_and_without_resumption() {
    let with = bench("handshake", 60, 6, &[]);
    assert_eq!(with["mode"], "handshake");
    assert_eq!(u64_of(&with, "/failed"), 0);
    assert_eq!(u64_of(&with, "/ok_total"), 60);
    assert!(
        u64_of(&with, "/resumed") > 0,
        "resumption is used when allowed"
    );
    let without = bench("handshake", 60, 6, &["--no-resumption"]);
    assert_eq!(u64_of(&without, "/ok_total"), 60);
    assert_eq!(
        u64_of(&without, "/resumed"),
        0,
        "no resumption when disabled"
    );
}

#[test]
fn crypto_floor_is_measured() {
    let figures = bench("floor", 1, 6, &[]);
    assert_eq!(figures["mode"], "floor");
    assert!(f64_of(&figures, "/floor/sign_per_s_core") > 0.0);
    assert!(f64_of(&figures, "/floor/verify_per_s_core") > 0.0);
    assert!(u64_of(&figures, "/floor/cores") >= 1);
    assert!(
        f64_of(&figures, "/floor/settle_floor_per_s") > f64_of(&figures, "/floor/p2p_floor_per_s")
    );
}

/// `settle` on PostgreSQL with two server processes on one fresh database:
/// every pre-signed payment settles through one of the two, the ledger
/// holds exactly those, and the audit is clean. Runs only with
/// `MICROPAY_TEST_PG` (`scripts/with-postgres.sh`).
#[test]
fn settle_mode_on_postgres_with_two_servers_counts_exactly_what_the_ledger_holds() {
    let Some(url) = std::env::var("MICROPAY_TEST_PG")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        eprintln!("*** MICROPAY_TEST_PG is not set: the PostgreSQL bench test did NOT run");
        return;
    };
    let figures = bench("settle", 600, 6, &["--db", &url, "--servers", "2"]);
    assert_eq!(figures["options"]["ledger"], "postgres");
    assert_eq!(u64_of(&figures, "/options/servers"), 2);
    assert_eq!(u64_of(&figures, "/failed"), 0);
    assert_eq!(u64_of(&figures, "/ok_total"), 600);
    assert_ledger_matches(&figures);
}

/// Several servers on one SQLite file are refused before anything starts:
/// an SQLite ledger has one writer.
#[test]
fn several_servers_on_sqlite_are_refused() {
    let output = Command::new(BENCH)
        .args(["settle", "--servers", "2", "--count", "10", "-q"])
        .arg("--server-bin")
        .arg(SERVER)
        .stdin(Stdio::null())
        .output()
        .expect("the bench runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("needs --db postgres://"), "{stderr}");
}
