//! Several servers on one PostgreSQL ledger (run with
//! `scripts/with-postgres.sh cargo test --release`; without
//! `MICROPAY_TEST_PG` these tests say loudly that they did not run):
//! an account opened on one server is known to the other, presence is
//! shared with leases, a payment settled through one is verified and
//! visible through the other, the same payment forwarded to both at once
//! settles once with one receipt, and a server that stops renewing its
//! leases has its people disappear within the lease.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{link, person, pki, server_options, Backend, TestDb, TestPki, TestServer};
use micropay::ledger::DbLocation;
use micropay::net::link::{CallError, Link};
use micropay::server::{PresenceOptions, ServerLimits};
use micropay::wire::{
    ErrorCode, History, Online, OnlinePeer, PaymentJson, PaymentStatus, Registered, ServerRequest,
    Settled,
};

/// The shared database, or `None` (and a loud note) without PostgreSQL.
async fn shared_db() -> Option<(DbLocation, TestDb)> {
    let backend = common::backends()
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres { .. }))?;
    let dir = tempfile::tempdir().expect("tempdir");
    match backend.fresh_db(dir.path()).await {
        (db, Some(pg)) => Some((db, pg)),
        (_, None) => None,
    }
}

/// `online` says whether it took over a live presence another connection
/// announced, on this server or another sharing the database; the same
/// connection announcing again took over nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_says_whether_it_took_over_another_connections_presence() {
    let Some((db, pg)) = shared_db().await else {
        return;
    };
    let (pki, pg) = (pki(), Arc::new(pg));
    let a = server_on(&pki, &db, &pg, "a", 10_000).await;
    let b = server_on(&pki, &db, &pg, "b", 10_000).await;
    let bob = person(&pki, "bob");
    let bob_a = link(&bob, &a).await;
    let _: Registered = bob_a
        .call(&ServerRequest::Register {})
        .await
        .expect("register");
    let (bob_b, bob_a2) = (link(&bob, &b).await, link(&bob, &a).await);
    assert!(!online(&bob_a, 9).await.replaced, "nobody was online");
    assert!(!online(&bob_a, 9).await.replaced, "the same connection");
    assert!(online(&bob_b, 10).await.replaced, "A's connection, from B");
    assert!(online(&bob_a2, 11).await.replaced, "B's connection, from A");
    let found = locate(&bob_b, "bob").await.expect("bob is online");
    assert_eq!(found.address, "127.0.0.1:11");
    drop((bob_a, bob_b, bob_a2));
    b.running.shutdown().await.expect("B stops");
    common::shutdown_and_audit(a).await;
}

/// A server on `db` named `id`, with a presence lease of `lease_ms`.
async fn server_on(
    pki: &Arc<TestPki>,
    db: &DbLocation,
    pg: &Arc<TestDb>,
    id: &str,
    lease_ms: u64,
) -> TestServer {
    let mut options = server_options(pki, db.clone(), ServerLimits::default());
    options.presence = PresenceOptions {
        server_id: id.to_owned(),
        lease_ms,
        // Both servers share one key: each keeps its own log.
        log_name: Some(id.to_owned()),
        log_peers: Vec::new(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    common::start_server_at(pki.clone(), db.clone(), dir, Some(pg.clone()), options).await
}

async fn online(l: &Link, port: u16) -> Online {
    l.call(&ServerRequest::Online {
        port,
        address: Some("127.0.0.1".into()),
    })
    .await
    .expect("online")
}

async fn locate(l: &Link, who: &str) -> Result<OnlinePeer, CallError> {
    l.call(&ServerRequest::Locate { name: who.into() }).await
}

fn code<T: std::fmt::Debug>(r: Result<T, CallError>) -> ErrorCode {
    match r {
        Err(CallError::Refused(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn settle(l: &Link, payment: &micropay::core::payment::SignedPayment) -> Settled {
    l.call(&ServerRequest::Settle {
        payment: PaymentJson::from(payment),
    })
    .await
    .expect("settles")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_accounts_presence_and_payments() {
    let Some((db, pg)) = shared_db().await else {
        return;
    };
    let (pki, pg) = (pki(), Arc::new(pg));
    let a = server_on(&pki, &db, &pg, "a", 10_000).await;
    let b = server_on(&pki, &db, &pg, "b", 10_000).await;
    let (alice, bob) = (person(&pki, "alice"), person(&pki, "bob"));
    let (alice_a, bob_a) = (link(&alice, &a).await, link(&bob, &a).await);
    // Registration on A; both accounts are known on B.
    for l in [&alice_a, &bob_a] {
        let r: Registered = l.call(&ServerRequest::Register {}).await.expect("register");
        assert_eq!(r.balance, 10_000);
    }
    let (alice_b, bob_b) = (link(&alice, &b).await, link(&bob, &b).await);
    assert_eq!(common::balance(&alice_b).await, 10_000);
    assert_eq!(
        code(
            alice_b
                .call::<Registered>(&ServerRequest::Register {})
                .await
        ),
        ErrorCode::AlreadyRegistered
    );
    // Bob goes online on B; A sees him, and sees him go.
    assert_eq!(code(locate(&alice_a, "bob").await), ErrorCode::PayeeOffline);
    let announced = online(&bob_b, 9).await;
    let found = locate(&alice_a, "bob").await.expect("bob is online");
    assert_eq!(found.address, announced.address);
    let listing: micropay::wire::Listing =
        alice_a.call(&ServerRequest::List {}).await.expect("list");
    assert_eq!(listing.online_count, 1);
    assert_eq!(listing.online[0].name, "bob");
    // A payment settled via B is verified and visible from A.
    let server_key = pki_key(&pki);
    let first = common::signed_payment(&alice, "bob", 250, "via b");
    let settled = settle(&bob_b, &first).await;
    // B's log proves it, or, if B's tree missed a leaf another server
    // wrote, B signs the receipt instead: either is a client's proof.
    let (receipt, _) =
        common::check_reply(&server_key, &settled.receipt, settled.log.as_ref(), &first);
    assert!(receipt.matches(&first));
    assert_eq!(common::balance(&alice_a).await, 9_750);
    assert_eq!(common::balance(&bob_a).await, 10_250);
    let history: History = alice_a
        .call(&ServerRequest::History {
            limit: None,
            before_seq: None,
        })
        .await
        .expect("history");
    assert_eq!(history.entries.len(), 1);
    let status: PaymentStatus = alice_a
        .call(&ServerRequest::Status {
            payment_id: first.payment.id.to_hex(),
        })
        .await
        .expect("status");
    let PaymentStatus::Settled { receipt, .. } = status else {
        panic!("not settled: {status:?}");
    };
    // The same attested receipt; whether it comes signed depends on
    // whether the answering server's log can prove it (PROTOCOL §5).
    assert_eq!(attested(&receipt), attested(&settled.receipt));
    // The same payment forwarded to both servers at once settles once,
    // and both answer with the same receipt.
    let second = common::signed_payment(&alice, "bob", 100, "both");
    let (via_a, via_b) = tokio::join!(settle(&bob_a, &second), settle(&bob_b, &second));
    assert_eq!(attested(&via_a.receipt), attested(&via_b.receipt));
    assert_eq!(via_a.receipt.seq, 2);
    assert_eq!(common::balance(&alice_b).await, 9_650);
    drop((alice_a, bob_a, alice_b, bob_b));
    b.running.shutdown().await.expect("B stops");
    // B's clean stop withdrew its people at once.
    let alice_a = link(&alice, &a).await;
    assert_eq!(code(locate(&alice_a, "bob").await), ErrorCode::PayeeOffline);
    drop(alice_a);
    let report = common::shutdown_and_audit(a).await;
    assert_eq!(report.payments, 2);
    assert_eq!(report.accounts, 2);
    assert_eq!(report.logs, 2, "each server keeps a log of its own");
}

/// Two servers given one log name on one database would fork the log:
/// the one that finds its log extended by the other refuses to write
/// (nothing of its batch applied), the other goes on, and the ledger
/// audits clean with one log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_log_another_extended_refuses_to_fork_it() {
    let Some((db, pg)) = shared_db().await else {
        return;
    };
    let (pki, pg) = (pki(), Arc::new(pg));
    let a = server_on(&pki, &db, &pg, "a", 10_000).await;
    let mut options = server_options(&pki, db.clone(), ServerLimits::default());
    options.presence = PresenceOptions {
        server_id: "b".to_owned(),
        lease_ms: 10_000,
        log_name: Some("a".to_owned()),
        log_peers: Vec::new(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let b = common::start_server_at(pki.clone(), db.clone(), dir, Some(pg.clone()), options).await;
    let (alice, bob) = (person(&pki, "alice"), person(&pki, "bob"));
    let _: Registered = link(&alice, &a)
        .await
        .call(&ServerRequest::Register {})
        .await
        .expect("A registers");
    let refused = link(&bob, &b)
        .await
        .call::<Registered>(&ServerRequest::Register {})
        .await;
    assert!(
        refused.is_err(),
        "B must not append to A's log: {refused:?}"
    );
    let bob_a = link(&bob, &a).await;
    let _: Registered = bob_a
        .call(&ServerRequest::Register {})
        .await
        .expect("A goes on");
    drop(bob_a);
    b.running.shutdown().await.expect("B stops");
    let report = common::shutdown_and_audit(a).await;
    assert_eq!((report.accounts, report.logs), (2, 1));
}

/// What a receipt attests, without the evidence for it.
fn attested(receipt: &micropay::wire::ReceiptJson) -> micropay::core::payment::Receipt {
    micropay::core::payment::Receipt::try_from(receipt).expect("receipt parses")
}

fn pki_key(pki: &TestPki) -> micropay::core::keys::VerifyingKey {
    let material = micropay::net::tls::Material::from_pem(
        &pki.ca.pem.cert_pem,
        &pki.server.cert_pem,
        &pki.server.key_pem,
    )
    .expect("server material");
    material
        .signing_key()
        .expect("server key")
        .verifying_key()
        .clone()
}

/// The real server binary, killed (SIGKILL) on drop.
struct ServerProcess {
    child: Child,
    addr: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `micropay-server` on `db` with certificates in `dir`.
async fn start_binary(dir: &std::path::Path, db: &DbLocation, lease_ms: u64) -> ServerProcess {
    let DbLocation::Postgres(url) = db else {
        panic!("a PostgreSQL ledger")
    };
    let ready = dir.join("ready");
    let child = Command::new(env!("CARGO_BIN_EXE_micropay-server"))
        .args(["--listen", "127.0.0.1:0", "--server-id", "doomed", "-q"])
        .arg("--cert")
        .arg(dir.join("server.pem"))
        .arg("--key")
        .arg(dir.join("server.key"))
        .arg("--ca")
        .arg(dir.join("ca.pem"))
        .arg("--presence-lease-ms")
        .arg(lease_ms.to_string())
        .arg("--ready-file")
        .arg(&ready)
        .env("MICROPAY_DB", url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("micropay-server starts");
    let mut process = ServerProcess {
        child,
        addr: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(addr) = std::fs::read_to_string(&ready) {
            process.addr = addr.trim().to_owned();
            return process;
        }
        assert!(
            process.child.try_wait().expect("wait").is_none(),
            "the server exited early"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server did not become ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_renewing_loses_its_people_within_the_lease() {
    let Some((db, pg)) = shared_db().await else {
        return;
    };
    const LEASE_MS: u64 = 900;
    let (pki, pg) = (pki(), Arc::new(pg));
    let certs = tempfile::tempdir().expect("tempdir");
    pki.write_to(certs.path(), &[])
        .expect("certificates written");
    let a = server_on(&pki, &db, &pg, "a", 10_000).await;
    let doomed = start_binary(certs.path(), &db, LEASE_MS).await;
    let (alice, bob) = (person(&pki, "alice"), person(&pki, "bob"));
    let alice_a = link(&alice, &a).await;
    let bob_b = bob.connect_server(&doomed.addr).await.expect("connects");
    for l in [&alice_a, &bob_b] {
        let _: Registered = l.call(&ServerRequest::Register {}).await.expect("register");
    }
    online(&bob_b, 9).await;
    // Renewed while the server lives: still there after several leases.
    tokio::time::sleep(Duration::from_millis(3 * LEASE_MS)).await;
    locate(&alice_a, "bob")
        .await
        .expect("bob stays online while his server renews");
    // The server dies without a word (SIGKILL): bob goes within the lease.
    let killed_at = Instant::now();
    drop(doomed);
    let gone = loop {
        match locate(&alice_a, "bob").await {
            Ok(_) => {}
            Err(CallError::Refused(e)) if e.code == ErrorCode::PayeeOffline => {
                break killed_at.elapsed()
            }
            Err(other) => panic!("locate failed: {other}"),
        }
        assert!(
            killed_at.elapsed() < Duration::from_millis(LEASE_MS + 2_000),
            "bob is still online long after his server died"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        gone <= Duration::from_millis(LEASE_MS + 500),
        "gone after {gone:?}"
    );
    drop((alice_a, bob_b));
    common::shutdown_and_audit(a).await;
}

/// A rotation through server A is honoured at once by server B, which
/// cached the old key: the new key passes B's connection check (B re-reads
/// the store on a mismatch) and its payments settle through B; a payment
/// signed with the old key is refused through B (`key_mismatch`, decided
/// against the key in the database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_on_one_server_is_honoured_by_the_other() {
    let Some((db, pg)) = shared_db().await else {
        return;
    };
    let (pki, pg) = (pki(), Arc::new(pg));
    let a = server_on(&pki, &db, &pg, "a", 10_000).await;
    let b = server_on(&pki, &db, &pg, "b", 10_000).await;
    let (alice_old, bob) = (person(&pki, "alice"), person(&pki, "bob"));
    for p in [&alice_old, &bob] {
        let _: Registered = link(p, &a)
            .await
            .call(&ServerRequest::Register {})
            .await
            .expect("register");
    }
    let bob_b = link(&bob, &b).await;
    // B caches alice's old key: a payment she signed settles through B.
    settle(&bob_b, &common::signed_payment(&alice_old, "bob", 5, "")).await;
    let unsettled = common::signed_payment(&alice_old, "bob", 6, "");

    let alice_new = person(&pki, "alice");
    let rotated = micropay::person::rotate(&alice_old.key, &alice_new, &a.addr_string())
        .await
        .expect("rotates through A");
    assert_eq!(rotated.kind, "rotate");
    let alice_new_b = link(&alice_new, &b).await;
    let balance: micropay::wire::Balance = alice_new_b
        .call(&ServerRequest::Balance {})
        .await
        .expect("the new key passes B's gate at once");
    assert_eq!(balance.balance, 10_000 - 5);
    settle(&bob_b, &common::signed_payment(&alice_new, "bob", 7, "")).await;
    let refused = bob_b
        .call::<Settled>(&ServerRequest::Settle {
            payment: PaymentJson::from(&unsettled),
        })
        .await;
    assert_eq!(code(refused), ErrorCode::KeyMismatch);
    drop((bob_b, alice_new_b));
    b.running.shutdown().await.expect("B stops");
    common::shutdown_and_audit(a).await;
}
