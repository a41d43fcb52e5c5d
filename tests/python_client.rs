//! docs/PROTOCOL.md is enough to write a client: a Python client written
//! from it alone (tests/python/protocol_client.py, Python's `ssl` and the
//! `cryptography` package) registers, pays, and verifies the receipt and its
//! log proof (docs/PROTOCOL.md §10) against the real server. Skipped, with a
//! note, where python3 or `cryptography` is missing.

mod common;

use std::process::Command;

fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import cryptography, ssl"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_written_from_the_protocol_document_works() {
    if !python_ready() {
        eprintln!("skipped: python3 with the cryptography package is not available");
        return;
    }
    let server = common::start_server().await;
    let alice = server.pki.person("alice").expect("alice");
    let bob = server.pki.person("bob").expect("bob");
    let certs = server.dir.path().join("certs");
    server
        .pki
        .write_to(&certs, &[("alice", &alice), ("bob", &bob)])
        .expect("certs written");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/protocol_client.py"
    );
    let port = server.addr().port().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(&certs)
            .args(["127.0.0.1", &port])
            .output()
    })
    .await
    .expect("join")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON summary");
    assert_eq!(summary["balances"], serde_json::json!([9750, 10250]));
    assert_eq!(summary["seq"], 1);
    assert_eq!(summary["receipt_verified"], true);
    assert_eq!(summary["log_proof_verified"], true);
    // A server keeping a log proves the receipt and does not sign it.
    assert_eq!(summary["receipt_signed"], false);
    server.running.shutdown().await.expect("shutdown");
    let audit = common::audit(&server.db).await;
    assert!(audit.violations.is_empty(), "{:?}", audit.violations);
}
