//! `micropay-server migrate` (issue 12): a whole SQLite ledger copied into
//! an empty PostgreSQL database through the real binaries, re-verified on
//! the way; afterwards a server on PostgreSQL shows the same balances,
//! history and receipts and goes on settling. A non-empty target, a
//! tampered source and a source a server still runs on are refused.
//!
//! These tests need PostgreSQL: they run only when `MICROPAY_TEST_PG` is
//! set (`scripts/with-postgres.sh cargo test --test migrate`).

mod cli_support;
mod common;

use std::path::Path;
use std::process::Command;

use cli_support::{client, run, start_server, Out, World, SERVER};
use common::backend::{postgres_admin_url, TestDb};
use serde_json::Value;

fn migrate(from: &Path, to: &str) -> Out {
    let mut cmd = Command::new(SERVER);
    cmd.env_remove("RUST_LOG")
        .arg("migrate")
        .arg("--from")
        .arg(from)
        .args(["--to", to]);
    run(&mut cmd, "micropay-server migrate")
}

fn audit(db: &str) -> Out {
    let mut cmd = Command::new(SERVER);
    cmd.env_remove("RUST_LOG").args(["audit", "--db", db]);
    run(&mut cmd, "micropay-server audit")
}

/// What people see of the ledger: balance, history, and each payment's
/// receipt seq, for each of `names`.
fn observe(certs: &Path, server: &str, names: &[&str]) -> Vec<(String, Value, Value, Vec<Value>)> {
    let json = |who: &str, args: &[&str]| -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = run(
            &mut client(who, certs, server, &all),
            format!("{who} {args:?}"),
        );
        out.expect(0);
        out.json()
    };
    names
        .iter()
        .map(|who| {
            let balance = json(who, &["balance"])["balance"].clone();
            let history = json(who, &["history", "--limit", "500"]);
            let receipts = history["entries"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    let id = e["payment_id"].as_str().unwrap_or_default();
                    json(who, &["status", id])["status"]["receipt"]["seq"].clone()
                })
                .collect();
            (
                who.to_string(),
                balance,
                history["entries"].clone(),
                receipts,
            )
        })
        .collect()
}

/// A small ledger made through the real binaries: payments both ways
/// with memos, and a refusal; the server is stopped afterwards.
fn a_ledger() -> World {
    let mut world = World::start();
    world.register(&["alice", "bob", "carol"]);
    let mut bob = world.serve("bob", &[], false);
    bob.online();
    let mut alice = world.serve("alice", &[], false);
    alice.online();
    for (payer, payee, amount, memo) in [
        ("alice", "bob", "250", "coffee, cake"),
        ("bob", "alice", "40", "change"),
        ("carol", "bob", "9", "ünïcødé"),
        ("alice", "bob", "1", ""),
    ] {
        world
            .run(payer, &["send", payee, amount, "--memo", memo])
            .expect(0);
    }
    world.run("carol", &["send", "alice", "999999"]).expect(1);
    drop((bob, alice));
    world.stop_server();
    world
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_ledger_shows_the_same_balances_history_and_receipts() {
    let Some(admin) = postgres_admin_url() else {
        eprintln!("MICROPAY_TEST_PG is not set: the migrate tests were NOT run");
        return;
    };
    let mut world = a_ledger();
    world.restart_server();
    let people = ["alice", "bob", "carol"];
    let before = observe(&world.certs, &world.addr, &people);
    world.stop_server();

    let target = TestDb::create(&admin).await;
    migrate(&world.db, &target.url)
        .expect(0)
        .stdout_has("payments    4")
        .stdout_has("refusals    1")
        .stdout_has("audit: OK");
    audit(&target.url).expect(0).stdout_has("accounts    3");

    let dir = tempfile::tempdir().expect("tempdir");
    let (ready, log) = (dir.path().join("ready"), dir.path().join("pg.log"));
    let (_server, addr) = start_server(
        &world.certs,
        Path::new(&target.url),
        &ready,
        &log,
        &[("RUST_LOG", None)],
        &[],
    );
    assert_eq!(observe(&world.certs, &addr, &people), before);

    // The refusal came along: the same payment id keeps its outcome, and
    // the ledger goes on: a new account and a new payment on PostgreSQL.
    cli_support::make_certs(&world.certs, &["dave"]);
    run(
        &mut client("dave", &world.certs, &addr, &["register"]),
        "dave",
    )
    .expect(0)
    .stdout_has("registered dave with balance 10000");
    let alice = micropay::person::Person::load(
        &world.certs.join("ca.pem"),
        &world.certs.join("alice.pem"),
        &world.certs.join("alice.key"),
    )
    .expect("alice");
    let link = alice.connect_server(&addr).await.expect("connects");
    let signed = common::signed_payment(&alice, "dave", 5, "after the move");
    let settled: micropay::wire::Settled = link
        .call(&micropay::wire::ServerRequest::Settle {
            payment: micropay::wire::PaymentJson::from(&signed),
        })
        .await
        .expect("settles on PostgreSQL");
    assert_eq!(
        settled.receipt.seq, 5,
        "the sequence goes on after the copy"
    );
    migrate(&world.db, &target.url)
        .expect(1)
        .stderr_has("the target is not empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_source_or_a_running_server_makes_migrate_refuse() {
    let Some(admin) = postgres_admin_url() else {
        eprintln!("MICROPAY_TEST_PG is not set: the migrate tests were NOT run");
        return;
    };
    let mut world = a_ledger();
    let target = TestDb::create(&admin).await;

    // A server running on the source: refused, the target untouched.
    world.restart_server();
    migrate(&world.db, &target.url)
        .expect(1)
        .stderr_has("in use by another micropay-server");
    world.stop_server();

    // One memo changed: the content hash no longer matches and the
    // signature no longer verifies; nothing is committed.
    let tampered = world.dir.path().join("tampered.db");
    std::fs::copy(&world.db, &tampered).expect("copy");
    let conn = rusqlite::Connection::open(&tampered).expect("open");
    conn.execute("UPDATE payments SET memo = 'tea' WHERE seq = 1", [])
        .expect("tamper");
    drop(conn);
    migrate(&tampered, &target.url)
        .expect(1)
        .stderr_has("does not audit clean")
        .stderr_has("seq 1");
    audit(&target.url)
        .expect(0)
        .stdout_has("accounts    0")
        .stdout_has("payments    0");

    // The untouched source still migrates into that same (empty) target.
    migrate(&world.db, &target.url).expect(0);
}
