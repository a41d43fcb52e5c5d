//! Online backups of an SQLite ledger (issue 15): `micropay-server backup`
//! copies the ledger while the server runs and payments keep settling; the
//! copy is owner-only, audits clean, and a server restored from it holds
//! every payment acknowledged before the backup began. A backup never
//! overwrites a file unless asked, and never the ledger itself.

mod cli_support;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cli_support::{run, Out, World, SERVER, WAIT};
use micropay::ledger::DbLocation;
use micropay::net::link::Link;
use micropay::person::Person;
use micropay::server::ServerLimits;
use micropay::wire::{PaymentJson, PaymentStatus, Registered, ServerRequest, Settled};

/// Most payments the load makes, whatever happens.
const LOAD_PAYMENTS_MAX: usize = 20_000;

/// Acknowledged before the backup starts, at least.
const ACKED_BEFORE_BACKUP_MIN: usize = 100;

fn backup_cmd(db: &Path, to: &Path, force: bool) -> Out {
    let mut cmd = Command::new(SERVER);
    cmd.env_remove("RUST_LOG")
        .arg("backup")
        .arg("--db")
        .arg(db)
        .arg("--to")
        .arg(to);
    if force {
        cmd.arg("--force");
    }
    run(&mut cmd, "micropay-server backup")
}

/// (payer index, payment id, seq) of every acknowledged payment.
type Acked = Arc<Mutex<Vec<(usize, String, u64)>>>;

/// Payments round a ring of people, one at a time each, until `stop` or
/// [`LOAD_PAYMENTS_MAX`]; every receipt is recorded in `acked`.
async fn load(people: Arc<Vec<(Person, Link)>>, acked: Acked, stop: Arc<AtomicBool>) {
    for i in 0..LOAD_PAYMENTS_MAX {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let payer = i % people.len();
        let payee = &people[(i + 1) % people.len()].0.name;
        let signed = common::signed_payment(&people[payer].0, payee.as_str(), 1, "load");
        let settled: Settled = people[payer]
            .1
            .call(&ServerRequest::Settle {
                payment: PaymentJson::from(&signed),
            })
            .await
            .expect("settles");
        acked.lock().expect("acked").push((
            payer,
            settled.receipt.payment_id.clone(),
            settled.receipt.seq,
        ));
    }
}

async fn registered(server: &common::TestServer, names: &[&str]) -> Vec<(Person, Link)> {
    let mut people = Vec::new();
    for name in names {
        let person = common::person(&server.pki, name);
        let link = common::link(&person, server).await;
        let _: Registered = link
            .call(&ServerRequest::Register {})
            .await
            .expect("registers");
        people.push((person, link));
    }
    people
}

/// Waits (bounded) until the load has `n` receipts; returns them.
async fn acked_at_least(acked: &Acked, n: usize) -> Vec<(usize, String, u64)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = acked.lock().expect("acked").clone();
        if now.len() >= n {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "the load stalled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_restores_every_acknowledged_payment() {
    let server = common::start_server().await;
    let DbLocation::Sqlite(ledger) = server.db.clone() else {
        panic!("an SQLite test server");
    };
    let people = Arc::new(registered(&server, &["alice", "bob", "carol"]).await);
    let (acked, stop) = (Acked::default(), Arc::new(AtomicBool::new(false)));
    let loader = tokio::spawn(load(people.clone(), acked.clone(), stop.clone()));

    let before = acked_at_least(&acked, ACKED_BEFORE_BACKUP_MIN).await;
    let to = server.dir.path().join("backup.db");
    let copy = to.clone();
    let out = tokio::task::spawn_blocking(move || backup_cmd(&ledger, &copy, false))
        .await
        .expect("backup task");
    out.expect(0).stdout_has("audit: OK");
    stop.store(true, Ordering::Relaxed);
    loader.await.expect("the load ends");
    let mode = std::fs::metadata(&to).expect("backup").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the backup is owner-only");

    // Restore: a copy of the backup under a new server.
    let restored_dir = tempfile::tempdir().expect("tempdir");
    let restored = restored_dir.path().join("ledger.db");
    std::fs::copy(&to, &restored).expect("copy back");
    let db = DbLocation::Sqlite(restored.clone());
    assert!(common::audit(&db).await.violations.is_empty());
    let options = common::server_options(&server.pki, db.clone(), ServerLimits::default());
    let again = common::start_server_at(server.pki.clone(), db, restored_dir, None, options).await;
    for (payer, id, seq) in &before {
        let link = common::link(&people[*payer].0, &again).await;
        let status: PaymentStatus = link
            .call(&ServerRequest::Status {
                payment_id: id.clone(),
            })
            .await
            .expect("status");
        match status {
            PaymentStatus::Settled { receipt, .. } => assert_eq!(receipt.seq, *seq),
            other => panic!("payment {id} acknowledged before the backup is missing: {other:?}"),
        }
    }
    let report = common::shutdown_and_audit(again).await;
    assert!(report.payments >= before.len() as u64);
    eprintln!(
        "acknowledged before the backup: {}; in the backup: {}; acknowledged in all: {}",
        before.len(),
        report.payments,
        acked.lock().expect("acked").len()
    );
    common::shutdown_and_audit(server).await;
}

#[test]
fn a_backup_never_overwrites_unless_asked_and_never_the_ledger() {
    let world = World::start();
    world.register(&["alice"]);
    let to = world.dir.path().join("existing.db");
    std::fs::write(&to, "keep me").expect("write");

    backup_cmd(&world.db, &to, false)
        .expect(1)
        .stderr_has("exists");
    assert_eq!(
        std::fs::read_to_string(&to).ok().as_deref(),
        Some("keep me")
    );

    backup_cmd(&world.db, &world.db, true)
        .expect(1)
        .stderr_has("is the ledger itself");

    backup_cmd(&world.db, &to, true)
        .expect(0)
        .stdout_has("accounts    1")
        .stdout_has("audit: OK");
    let mut audit = Command::new(SERVER);
    audit
        .env_remove("RUST_LOG")
        .arg("audit")
        .arg("--db")
        .arg(&to);
    run(&mut audit, "audit the backup").expect(0);

    // Nothing half-written is left beside it, and the server still runs.
    let partial = std::fs::read_dir(world.dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains(".partial-"));
    assert!(!partial, "a partial backup file was left behind");
    assert_eq!(world.balance("alice"), 10_000);
}

#[test]
fn a_backup_refuses_a_postgres_url_and_a_missing_ledger() {
    let dir = tempfile::tempdir().expect("tempdir");
    let to = dir.path().join("b.db");
    let mut cmd = Command::new(SERVER);
    cmd.env_remove("RUST_LOG")
        .args(["backup", "--db", "postgres://u@127.0.0.1:1/x", "--to"])
        .arg(&to);
    run(&mut cmd, "backup postgres")
        .expect(1)
        .stderr_has("pg_dump");
    backup_cmd(&dir.path().join("none.db"), &to, false)
        .expect(1)
        .stderr_has("no ledger at");
    assert!(!to.exists());
}
