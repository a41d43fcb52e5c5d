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

/// bob's channel directory in `world`.
fn bob_channels(world: &World) -> String {
    let dir = world.dir.path().join("bob-channels");
    dir.to_str().expect("utf-8 path").to_owned()
}

/// A small ledger made through the real binaries: payments both ways
/// with memos, a refusal, and a payment channel alice → bob left open
/// with 10 of its 50 links paid; the server is stopped afterwards.
fn a_ledger() -> World {
    let mut world = World::start();
    world.register(&["alice", "bob", "carol"]);
    let bob_dir = bob_channels(&world);
    let mut bob = world.serve("bob", &["--channels-dir", &bob_dir], false);
    bob.online();
    let alice_dir = world.dir.path().join("alice-channels");
    let alice_dir = alice_dir.to_str().expect("utf-8 path");
    let opened = world.run(
        "alice",
        &[
            "--json", "channel", "--dir", alice_dir, "open", "bob", "--links", "50", "--value", "2",
        ],
    );
    opened.expect(0);
    let id = opened.json()["channel_id"]
        .as_str()
        .expect("an id")
        .to_owned();
    world
        .run(
            "alice",
            &["channel", "--dir", alice_dir, "pay", &id, "--units", "10"],
        )
        .expect(0);
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
    assert_eq!(
        world.balance_and_held("alice").1,
        100,
        "the channel's hold is open before the move"
    );
    world.stop_server();

    let target = TestDb::create(&admin).await;
    migrate(&world.db, &target.url)
        .expect(0)
        .stdout_has("payments    4")
        .stdout_has("refusals    1")
        .stdout_has("channels    1")
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

    // The open channel came along with its hold: bob closes it on
    // PostgreSQL and is paid exactly the 10 links he holds.
    let bob_dir = bob_channels(&world);
    run(
        &mut client(
            "bob",
            &world.certs,
            &addr,
            &["channel", "--dir", &bob_dir, "close"],
        ),
        "bob",
    )
    .expect(0)
    .stdout_has("closed 1 channel(s)");
    let balance = |who: &str| {
        let out = run(
            &mut client(who, &world.certs, &addr, &["--json", "balance"]),
            who,
        );
        out.expect(0);
        let b = out.json();
        (
            b["balance"].as_u64().expect("balance"),
            b["held"].as_u64().expect("held"),
        )
    };
    let (alice, bob) = (
        before[0].1.as_u64().expect("n"),
        before[1].1.as_u64().expect("n"),
    );
    assert_eq!(
        balance("alice"),
        (alice + 100 - 20, 0),
        "the rest of the hold went back"
    );
    assert_eq!(
        balance("bob"),
        (bob + 20, 0),
        "bob was paid his 10 links of 2"
    );

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
