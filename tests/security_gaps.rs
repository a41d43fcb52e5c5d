//! The promises of docs/SECURITY.md that no other test proved: `audit`
//! catches a tampered ledger (library and binary), a connection opened
//! before its certificate expired is refused afterwards, a payer rejects a
//! forged receipt handed back by a payee, a person's client refuses a
//! server certificate from a foreign CA, and neither the server nor the
//! client logs a private key, even at trace level.
//!
//! Servers bind 127.0.0.1:0, every wait is bounded and every child
//! process is killed when its guard drops.

mod cli_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cli_support::{client, run, Out, Serve, CLIENT, SERVER, WAIT};
use common::{link, person, person_from, pki, start_server, start_server_with, TestServer};
use micropay::certs::{CertifiedPem, KeyType, Validity};
use micropay::core::keys::SigningKey;
use micropay::core::limits::FRAME_BYTES_MAX;
use micropay::core::name::Name;
use micropay::core::payment::{PaymentId, Receipt, SignedPayment};
use micropay::core::receipt_check::{Evidence, ReceiptError};
use micropay::net::link::{CallError, Link};
use micropay::net::tls::{self, Material};
use micropay::person::{self, PeerError, Person, SendOptions};
use micropay::server::{self, ServerLimits, ServerOptions};
use micropay::system::clock::{now_ms, now_s};
use micropay::wire::frame::read_frame;
use micropay::wire::{
    decode_request, Balance, ErrorCode, PaymentJson, PaymentStatus, PeerRequest, ReceiptJson,
    Registered, Reply, ServerRequest, Settled, WireError,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use time::OffsetDateTime;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Longest any single step (a call, a handshake, a child process) may take.
const STEP: Duration = Duration::from_secs(20);

fn name(s: &str) -> Name {
    Name::parse(s).expect("valid test name")
}

/// A payment from `payer` to `payee`, valid for two minutes, signed.
fn pay(payer: &Person, payee: &str, amount: u64) -> SignedPayment {
    common::signed_payment(payer, payee, amount, "tea")
}

async fn call<T: serde::de::DeserializeOwned>(
    link: &Link,
    request: &ServerRequest,
) -> Result<T, CallError> {
    tokio::time::timeout(STEP, link.call::<T>(request))
        .await
        .expect("a reply within the step limit")
}

async fn settle(link: &Link, signed: &SignedPayment) -> Result<Settled, CallError> {
    call(
        link,
        &ServerRequest::Settle {
            payment: PaymentJson::from(signed),
        },
    )
    .await
}

async fn register(link: &Link) {
    let r: Registered = call(link, &ServerRequest::Register {})
        .await
        .expect("register");
    assert_eq!(r.balance, 10_000);
}

async fn balance(link: &Link) -> u64 {
    call::<Balance>(link, &ServerRequest::Balance {})
        .await
        .expect("balance")
        .balance
}

/// The error code of a refused call; anything else fails the test.
#[track_caller]
fn code<T: std::fmt::Debug>(result: Result<T, CallError>) -> ErrorCode {
    match result {
        Err(CallError::Refused(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------------
// 1. audit detects a tampered ledger
// ---------------------------------------------------------------------

/// `micropay-server audit --db PATH`, bounded.
async fn audit_binary(db: &Path) -> Out {
    let mut cmd = tokio::process::Command::new(SERVER);
    cmd.env_remove("RUST_LOG")
        .env_remove("MICROPAY_DB")
        .arg("audit")
        .arg("--db")
        .arg(db)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(STEP, cmd.output())
        .await
        .expect("audit finishes in time")
        .expect("audit runs");
    Out {
        what: format!("micropay-server audit --db {}", db.display()),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A copy of the ledger at `src` named `case`, changed by `tamper`.
fn tampered_copy(
    src: &Path,
    dir: &Path,
    case: &str,
    tamper: impl FnOnce(&rusqlite::Connection),
) -> PathBuf {
    let dst = dir.join(format!("{case}.db"));
    std::fs::copy(src, &dst).expect("copy the ledger");
    // A clean shutdown folds the WAL into the file; copy it anyway if a
    // non-empty one is left, so the copy is the whole ledger.
    let wal = PathBuf::from(format!("{}-wal", src.display()));
    if std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) {
        std::fs::copy(&wal, format!("{}-wal", dst.display())).expect("copy the WAL");
    }
    let conn = rusqlite::Connection::open(&dst).expect("open the copy");
    tamper(&conn);
    conn.close().expect("close the copy");
    dst
}

/// Audits a tampered copy with the library and the binary: both must
/// report violations, each containing every one of `expect`.
async fn assert_caught(db: &Path, case: &str, expect: &[&str]) -> Vec<String> {
    let report = micropay::ledger::audit(db).expect("audit runs on a tampered ledger");
    assert!(
        !report.violations.is_empty(),
        "{case}: the audit found nothing"
    );
    for want in expect {
        assert!(
            report.violations.iter().any(|v| v.contains(want)),
            "{case}: no violation mentions {want:?}: {:?}",
            report.violations
        );
    }
    let out = audit_binary(db).await;
    assert_eq!(out.code, Some(1), "{case}: the binary must fail:\n{out}");
    assert!(out.stdout.contains("VIOLATION"), "{case}:\n{out}");
    assert!(out.stdout.contains("audit: FAILED"), "{case}:\n{out}");
    for want in expect {
        assert!(
            out.stdout.contains(want),
            "{case}: binary lacks {want:?}:\n{out}"
        );
    }
    report.violations
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_detects_a_tampered_ledger() {
    let server = start_server().await;
    let alice = person(&server.pki, "alice");
    let bob = person(&server.pki, "bob");
    let carol = person(&server.pki, "carol");
    let links = [
        link(&alice, &server).await,
        link(&bob, &server).await,
        link(&carol, &server).await,
    ];
    for l in &links {
        register(l).await;
    }
    // Settled by the payee (link 0 alice, 1 bob, 2 carol), as a peer
    // would, and directly by the payer.
    let payments = [
        (pay(&alice, "bob", 100), 1),
        (pay(&bob, "carol", 250), 2),
        (pay(&carol, "alice", 40), 2),
        (pay(&alice, "carol", 7), 0),
        (pay(&bob, "alice", 1), 0),
    ];
    for (signed, via) in &payments {
        settle(&links[*via], signed).await.expect("settles");
    }
    // A refusal on record too.
    assert_eq!(
        code(settle(&links[1], &pay(&alice, "bob", 1_000_000)).await),
        ErrorCode::InsufficientFunds
    );
    drop(links);
    let TestServer {
        running,
        db,
        dir,
        pki,
        ..
    } = server;
    // Tampering edits the SQLite file directly.
    let db = db.sqlite_path().expect("an SQLite ledger").to_owned();
    tokio::time::timeout(STEP, running.shutdown())
        .await
        .expect("shutdown in time")
        .expect("clean shutdown");
    let cases = tempfile::tempdir().expect("tempdir");

    // Untampered: clean, exit 0.
    let clean = tampered_copy(&db, cases.path(), "clean", |_| {});
    let report = micropay::ledger::audit(&clean).expect("audit runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.payments, 5);
    assert_eq!(report.rejections, 1);
    assert_eq!(report.accounts, 3);
    let out = audit_binary(&clean).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("audit: OK"), "{out}");
    assert!(!out.stdout.contains("VIOLATION"), "{out}");

    // A payment's amount raised from 100 to 150, with the content hash
    // recomputed and both balances fixed up: money still adds up and the
    // hash matches, so only the payer's signature can catch it.
    let original = &payments[0].0;
    let mut changed = original.clone();
    changed.payment.amount_minor = 150;
    let amount = tampered_copy(&db, cases.path(), "amount", |c| {
        let n = c
            .execute(
                "UPDATE payments SET amount = 150, content_hash = ?1 WHERE id = ?2",
                rusqlite::params![&changed.content_hash()[..], &original.payment.id.0[..]],
            )
            .expect("update amount");
        assert_eq!(n, 1);
        c.execute(
            "UPDATE accounts SET balance = balance - 50 WHERE name = 'alice'",
            [],
        )
        .expect("fix alice");
        c.execute(
            "UPDATE accounts SET balance = balance + 50 WHERE name = 'bob'",
            [],
        )
        .expect("fix bob");
    });
    let found = assert_caught(
        &amount,
        "changed amount",
        &["signature does not verify with alice's key"],
    )
    .await;
    // Besides the signature, only the log (issue 13) catches it: the
    // rewritten row's record is in no log, and the logged record matches
    // no row.
    let (log, rest): (Vec<_>, Vec<_>) = found
        .iter()
        .partition(|v| v.contains("in no log") || v.contains("match no stored row"));
    assert_eq!(
        rest.len(),
        1,
        "only the signature check and the log catch it: {found:?}"
    );
    assert_eq!(log.len(), 2, "{found:?}");

    // One byte of a stored signature flipped.
    let target = &payments[1].0;
    let mut signature = target.signature.clone();
    signature[10] ^= 0x01;
    let sig = tampered_copy(&db, cases.path(), "signature", |c| {
        let n = c
            .execute(
                "UPDATE payments SET signature = ?1 WHERE id = ?2",
                rusqlite::params![&signature, &target.payment.id.0[..]],
            )
            .expect("update signature");
        assert_eq!(n, 1);
    });
    let found = assert_caught(
        &sig,
        "flipped signature byte",
        &["signature does not verify with bob's key"],
    )
    .await;
    // The log (issue 13) catches it too: the settlement record changed.
    let (log, rest): (Vec<_>, Vec<_>) = found
        .iter()
        .partition(|v| v.contains("in no log") || v.contains("match no stored row"));
    assert_eq!((rest.len(), log.len()), (1, 2), "{found:?}");

    // One balance off by one.
    let off = tampered_copy(&db, cases.path(), "balance", |c| {
        let n = c
            .execute(
                "UPDATE accounts SET balance = balance + 1 WHERE name = 'carol'",
                [],
            )
            .expect("update balance");
        assert_eq!(n, 1);
    });
    assert_caught(
        &off,
        "balance off by one",
        &["carol: balance", "balances sum to"],
    )
    .await;

    // A settled payment deleted (its effect on balances left in place).
    let deleted = tampered_copy(&db, cases.path(), "deleted", |c| {
        let n = c
            .execute("DELETE FROM payments WHERE seq = 2", [])
            .expect("delete payment");
        assert_eq!(n, 1);
    });
    assert_caught(
        &deleted,
        "deleted payment",
        &["gap", "bob: balance", "carol: balance"],
    )
    .await;

    // An account row deleted with foreign keys turned off: its
    // registration and grant remain, and audit names it.
    let gone = tampered_copy(&db, cases.path(), "account", |c| {
        c.execute_batch("PRAGMA foreign_keys = OFF")
            .expect("keys off");
        let n = c
            .execute("DELETE FROM accounts WHERE name = 'carol'", [])
            .expect("delete account");
        assert_eq!(n, 1);
    });
    assert_caught(
        &gone,
        "deleted account",
        &["carol: registered or granted, but no account row"],
    )
    .await;

    // A grant inserted without touching balances.
    let granted = tampered_copy(&db, cases.path(), "grant", |c| {
        c.execute(
            "INSERT INTO grants (name, amount, granted_at_ms) VALUES ('alice', 500, 0)",
            [],
        )
        .expect("insert grant");
    });
    assert_caught(
        &granted,
        "inserted grant",
        &["alice: balance", "but grants sum to"],
    )
    .await;

    // A settlement time moved past the payment's expiry: the signature
    // and the sums still hold, but the rules refuse it at that time.
    let late = tampered_copy(&db, cases.path(), "late", |c| {
        let n = c
            .execute(
                "UPDATE payments SET settled_at_ms = (expires_at + 1) * 1000 WHERE seq = 3",
                [],
            )
            .expect("move settlement time");
        assert_eq!(n, 1);
    });
    let found = assert_caught(
        &late,
        "settled after expiry",
        &["seq 3: the rules refuse it at its settlement time"],
    )
    .await;
    // The log (issue 13) catches it too: the settlement record changed.
    let (log, rest): (Vec<_>, Vec<_>) = found
        .iter()
        .partition(|v| v.contains("in no log") || v.contains("match no stored row"));
    assert_eq!((rest.len(), log.len()), (1, 2), "{found:?}");

    // A memo far over the limit (and over what canonical bytes can hold)
    // is reported, not panicked on.
    let huge = tampered_copy(&db, cases.path(), "huge", |c| {
        let n = c
            .execute(
                "UPDATE payments SET memo = ?1 WHERE seq = 4",
                rusqlite::params!["x".repeat(70_000)],
            )
            .expect("grow memo");
        assert_eq!(n, 1);
    });
    assert_caught(&huge, "oversize memo", &["seq 4: malformed payment row"]).await;
    // A server refuses a ledger whose payments no longer reach its log's
    // latest checkpoint (issue 13)...
    let refused = micropay::server::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        common::server_options(&pki, huge.clone(), ServerLimits::default()),
    )
    .await;
    assert!(refused.is_err(), "a server must not extend a rewritten log");
    // ...and without a log (a ledger from before the log; the server logs
    // its rows as they are) a server
    // on that file reports the corrupt row to whoever asks for it and
    // keeps answering everything else: no lock is poisoned.
    rusqlite::Connection::open(&huge)
        .and_then(|c| c.execute_batch("DELETE FROM checkpoints; DELETE FROM log_leaves"))
        .expect("drop the log");
    let running = micropay::server::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        common::server_options(&pki, huge.clone(), ServerLimits::default()),
    )
    .await
    .expect("a server starts on the tampered copy");
    let l = alice
        .connect_server(&running.addr.to_string())
        .await
        .expect("connects");
    for _ in 0..3 {
        let status: Result<serde_json::Value, _> = call(
            &l,
            &ServerRequest::Status {
                payment_id: payments[3].0.payment.id.to_hex(),
            },
        )
        .await;
        assert_eq!(code(status), ErrorCode::Internal);
        assert_eq!(balance(&l).await, 10_000 - 100 + 40 - 7 + 1);
    }
    drop(l);
    running.shutdown().await.expect("clean shutdown");

    // The original file is untouched by all this.
    let report = micropay::ledger::audit(&db).expect("audit runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    drop(dir);
}

// ---------------------------------------------------------------------
// 2. a connection outlives its certificate
// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_before_the_certificate_expired_is_refused_after() {
    let server = start_server().await;
    let bob = person(&server.pki, "bob");
    let lb = link(&bob, &server).await;
    register(&lb).await;

    let now = OffsetDateTime::now_utc();
    let validity = Validity {
        not_before: now - time::Duration::hours(1),
        not_after: now + time::Duration::seconds(3),
    };
    let pem = server
        .pki
        .ca
        .issue_person(&name("alice"), KeyType::Ed25519, validity)
        .expect("short-lived certificate");
    let alice = person_from(&server.pki, &pem);
    let la = link(&alice, &server).await;
    register(&la).await;
    assert_eq!(balance(&la).await, 10_000, "valid for now");
    // Signed while the certificate is valid, submitted after it expired.
    let late = pay(&alice, "bob", 10);

    // X.509 times have whole seconds; wait until past notAfter.
    let not_after_s = validity.not_after.unix_timestamp();
    let deadline = Instant::now() + Duration::from_secs(10);
    while i64::try_from(now_s()).expect("now fits") <= not_after_s {
        assert!(Instant::now() < deadline, "the certificate never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The same connection, still open: every request is refused.
    match call::<Balance>(&la, &ServerRequest::Balance {}).await {
        Err(CallError::Refused(e)) => {
            assert_eq!(e.code, ErrorCode::CertificateExpired, "{e:?}");
            assert!(e.message.contains("expired"), "{e:?}");
        }
        other => panic!("expected certificate_expired, got {other:?}"),
    }
    assert_eq!(
        code(settle(&la, &late).await),
        ErrorCode::CertificateExpired
    );
    assert_eq!(
        code(call::<serde_json::Value>(&la, &ServerRequest::List {}).await),
        ErrorCode::CertificateExpired
    );
    assert_eq!(balance(&lb).await, 10_000, "nothing moved");
    // Issue 10, item 1: whoever holds alice's key (a thief) cannot cash a
    // payment signed with it through a valid account once her certificate
    // has expired: the ledger knows until when her key may spend.
    assert_eq!(
        code(settle(&lb, &late).await),
        ErrorCode::CertificateExpired
    );
    let fresh = pay(&alice, "bob", 20);
    assert_eq!(
        code(settle(&lb, &fresh).await),
        ErrorCode::CertificateExpired
    );
    assert_eq!(balance(&lb).await, 10_000, "nothing moved");

    // A new connection with that certificate fails the handshake (or, in
    // TLS 1.3, its first request, after the server's alert).
    match alice.connect_server(&server.addr_string()).await {
        Err(_) => {}
        Ok(l) => assert!(
            call::<Balance>(&l, &ServerRequest::Balance {})
                .await
                .is_err(),
            "an expired certificate got a balance on a new connection"
        ),
    }
    tokio::time::timeout(STEP, server.running.shutdown())
        .await
        .expect("shutdown in time")
        .expect("clean shutdown");
}

// ---------------------------------------------------------------------
// 3. a payee hands back a forged receipt
// ---------------------------------------------------------------------

/// What the fake payee answers to `pay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forgery {
    /// Settles with the server and returns its receipt unchanged.
    Honest,
    /// Does not settle; a receipt with the right fields signed by a key
    /// that is not the server's.
    WrongKey,
    /// Settles, then raises the amount in the genuine receipt.
    ChangedAmount,
    /// Does not settle; returns a genuine server receipt for an earlier
    /// payment.
    OtherPayment,
    /// Settles, then flips a bit of the log proof's first hash.
    AlteredProof,
    /// Settles, then drops the log proof: an unsigned receipt alone.
    StrippedProof,
    /// Settles, then tells the payer the payment was refused.
    SettleThenRefuse,
    /// Does not settle, and says the payment was refused.
    RefuseWithoutForwarding,
}

/// A payee's listener with bob's real certificate that lies about
/// receipts.
struct FakePayee {
    mode: Mutex<Forgery>,
    /// bob's real connection to the server.
    server: Link,
    /// Payment ids handed to the fake, in order.
    seen: Mutex<Vec<PaymentId>>,
    /// The payments handed to the fake, by id.
    paid: Mutex<std::collections::HashMap<PaymentId, SignedPayment>>,
    /// The last genuine receipt the server gave.
    genuine: Mutex<Option<ReceiptJson>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn fake_take(fake: &FakePayee, request: PeerRequest) -> Result<Settled, WireError> {
    let PeerRequest::Pay { payment } = request else {
        return Err(WireError::new(
            micropay::wire::ErrorCode::BadRequest,
            "not a payment",
        ));
    };
    let signed = SignedPayment::try_from(&payment)?;
    lock(&fake.seen).push(signed.payment.id);
    lock(&fake.paid).insert(signed.payment.id, signed.clone());
    let mode = *lock(&fake.mode);
    let forward = || async {
        let settled: Settled = fake
            .server
            .call(&ServerRequest::Settle {
                payment: payment.clone(),
            })
            .await
            .map_err(|e| WireError::new(ErrorCode::Internal, e.to_string()))?;
        *lock(&fake.genuine) = Some(settled.receipt.clone());
        Ok::<Settled, WireError>(settled)
    };
    match mode {
        Forgery::Honest => forward().await,
        Forgery::WrongKey => {
            let p = &signed.payment;
            let receipt = Receipt {
                payment_id: p.id,
                payer: p.payer.clone(),
                payee: p.payee.clone(),
                amount_minor: p.amount_minor,
                seq: 1,
                settled_at_ms: now_ms(),
                payment_hash: signed.content_hash(),
            }
            .sign(&SigningKey::ed25519_from_seed(&[7u8; 32]));
            Ok(Settled {
                receipt: ReceiptJson::from(&receipt),
                replay: false,
                log: None,
            })
        }
        Forgery::ChangedAmount => {
            let mut settled = forward().await?;
            settled.receipt.amount += 1;
            Ok(settled)
        }
        Forgery::AlteredProof => {
            let mut settled = forward().await?;
            let log = settled.log.as_mut().ok_or_else(|| {
                WireError::new(ErrorCode::Internal, "the server sent no log proof")
            })?;
            let first = log.inclusion_proof.first_mut().ok_or_else(|| {
                WireError::new(ErrorCode::Internal, "the proof has no hash to alter")
            })?;
            // Flip the low bit of the first hex digit.
            let flipped = if first.starts_with('0') { "1" } else { "0" };
            first.replace_range(0..1, flipped);
            Ok(settled)
        }
        Forgery::StrippedProof => {
            let mut settled = forward().await?;
            settled.log = None;
            Ok(settled)
        }
        Forgery::SettleThenRefuse => {
            forward().await?;
            Err(WireError::new(
                ErrorCode::InsufficientFunds,
                "\u{1b}[2Jalice cannot pay",
            ))
        }
        Forgery::RefuseWithoutForwarding => Err(WireError::new(
            ErrorCode::InsufficientFunds,
            "alice cannot pay",
        )),
        Forgery::OtherPayment => {
            let receipt = lock(&fake.genuine)
                .clone()
                .ok_or_else(|| WireError::new(ErrorCode::Internal, "no earlier receipt"))?;
            Ok(Settled {
                receipt,
                replay: false,
                log: None,
            })
        }
    }
}

async fn fake_connection(fake: Arc<FakePayee>, tls: TlsStream<TcpStream>) {
    let (read, mut write) = tokio::io::split(tls);
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    while let Ok(Ok(true)) =
        tokio::time::timeout(STEP, read_frame(&mut reader, &mut line, FRAME_BYTES_MAX)).await
    {
        let decoded = decode_request(&line);
        let outcome = match decoded.request {
            Ok(request) => fake_take(&fake, request).await,
            Err(e) => Err(e),
        };
        let reply = Reply::encode(decoded.id, &outcome);
        if write.write_all(&reply).await.is_err() || write.flush().await.is_err() {
            break;
        }
    }
}

/// Starts the fake listener; returns its port.
async fn start_fake_payee(
    bob_material: Material,
    fake: Arc<FakePayee>,
) -> (u16, tokio::task::JoinHandle<()>) {
    let acceptor =
        TlsAcceptor::from(tls::peer_listener_config(&bob_material).expect("listener config"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, fake) = (acceptor.clone(), fake.clone());
            tokio::spawn(async move {
                if let Ok(Ok(tls)) = tokio::time::timeout(STEP, acceptor.accept(tcp)).await {
                    fake_connection(fake, tls).await;
                }
            });
        }
    });
    (port, task)
}

async fn send(alice: &Person, server: &TestServer) -> Result<person::Sent, PeerError> {
    tokio::time::timeout(
        STEP,
        person::send(
            alice,
            &SendOptions::new(&server.addr_string(), name("bob"), 10),
        ),
    )
    .await
    .expect("send finishes in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payer_rejects_a_forged_receipt_from_the_payee() {
    let server = start_server().await;
    let alice_pem = server.pki.person("alice").expect("alice");
    let bob_pem = server.pki.person("bob").expect("bob");
    let alice = person_from(&server.pki, &alice_pem);
    let bob = person_from(&server.pki, &bob_pem);
    let la = link(&alice, &server).await;
    register(&la).await;
    let lb = link(&bob, &server).await;
    register(&lb).await;

    let fake = Arc::new(FakePayee {
        mode: Mutex::new(Forgery::Honest),
        server: lb,
        seen: Mutex::new(Vec::new()),
        paid: Mutex::new(std::collections::HashMap::new()),
        genuine: Mutex::new(None),
    });
    let bob_material = Material::from_pem(
        &server.pki.ca.pem.cert_pem,
        &bob_pem.cert_pem,
        &bob_pem.key_pem,
    )
    .expect("bob's material");
    let (port, task) = start_fake_payee(bob_material, fake.clone()).await;
    // bob's real connection tells the server he is online at the fake.
    let online: micropay::wire::Online = call(
        &fake.server,
        &ServerRequest::Online {
            port,
            address: Some("127.0.0.1".into()),
        },
    )
    .await
    .expect("online");
    assert_eq!(online.address, format!("127.0.0.1:{port}"));

    // Control: an honest answer is accepted, so the harness is sound.
    let sent = send(&alice, &server)
        .await
        .expect("an honest payee is paid");
    let server_key = la.peer_key().expect("server key");
    assert!(
        matches!(sent.evidence, Evidence::Log(_)),
        "proven by the log"
    );
    assert_eq!(sent.signature, None, "a proven receipt is not signed");
    assert_eq!(sent.balance, 9_990);

    let mut balance_now = 9_990;
    for (mode, settles) in [
        (Forgery::WrongKey, false),
        (Forgery::ChangedAmount, true),
        (Forgery::OtherPayment, false),
        (Forgery::AlteredProof, true),
        (Forgery::StrippedProof, true),
    ] {
        *lock(&fake.mode) = mode;
        let result = send(&alice, &server).await;
        let id = *lock(&fake.seen).last().expect("the fake got the payment");
        match (mode, result) {
            (Forgery::WrongKey, Err(PeerError::BadReceipt(bad, ReceiptError::BadSignature)))
            | (
                Forgery::ChangedAmount | Forgery::OtherPayment,
                Err(PeerError::BadReceipt(bad, ReceiptError::NotThisPayment)),
            )
            | (Forgery::AlteredProof, Err(PeerError::BadLogProof(bad, _)))
            | (Forgery::StrippedProof, Err(PeerError::BadReceipt(bad, ReceiptError::Unproven))) => {
                assert_eq!(bad, id, "{mode:?}")
            }
            (_, other) => panic!("{mode:?}: expected a refused receipt, got {other:?}"),
        }
        // The payer's recourse: ask the server what really happened.
        let status = call::<PaymentStatus>(
            &la,
            &ServerRequest::Status {
                payment_id: id.to_hex(),
            },
        )
        .await;
        if settles {
            balance_now -= 10;
            let Ok(PaymentStatus::Settled { receipt, log }) = status else {
                panic!("{mode:?}: expected settled, got {status:?}");
            };
            // The server's own reply is proven.
            let paid = lock(&fake.paid)
                .get(&id)
                .cloned()
                .expect("the fake kept it");
            common::check_reply(&server_key, &receipt, log.as_ref(), &paid);
        } else {
            assert_eq!(code(status), ErrorCode::NotFound, "{mode:?}");
        }
        assert_eq!(balance(&la).await, balance_now, "{mode:?}");
    }

    // Issue 10, item 3: a payee that settles and then claims a refusal is
    // not believed: the payer asks the server, which has the receipt, so
    // `send` succeeds and a retry would pay nothing twice.
    *lock(&fake.mode) = Forgery::SettleThenRefuse;
    let sent = send(&alice, &server)
        .await
        .expect("the server's record wins over the payee's word");
    assert!(
        matches!(sent.evidence, Evidence::Log(_)),
        "proven by the log"
    );
    balance_now -= 10;
    assert_eq!(sent.balance, balance_now);
    // A payee that says no without forwarding: the outcome is unknown
    // (it could still forward until expiry), never a plain refusal.
    *lock(&fake.mode) = Forgery::RefuseWithoutForwarding;
    match send(&alice, &server).await {
        Err(PeerError::OutcomeUnknown {
            payment_id, reason, ..
        }) => {
            assert_eq!(Some(&payment_id), lock(&fake.seen).last());
            assert!(reason.contains("no record"), "{reason}");
        }
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
    assert_eq!(balance(&la).await, balance_now);

    // The real command line says the same: exit 1, `bad_receipt`.
    *lock(&fake.mode) = Forgery::WrongKey;
    let certs = tempfile::tempdir().expect("tempdir");
    server
        .pki
        .write_to(certs.path(), &[("alice", &alice_pem)])
        .expect("certificates written");
    let mut cmd = tokio::process::Command::new(CLIENT);
    cmd.env_remove("RUST_LOG")
        .env_remove("MICROPAY_JSON")
        .arg("--as")
        .arg("alice")
        .arg("--certs")
        .arg(certs.path())
        .arg("--server")
        .arg(server.addr_string())
        .args(["send", "bob", "10"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(STEP, cmd.output())
        .await
        .expect("the client finishes in time")
        .expect("the client runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bad_receipt"), "{stderr}");
    assert!(
        stderr.contains("signature does not verify with the server's key"),
        "{stderr}"
    );
    assert_eq!(balance(&la).await, balance_now);

    task.abort();
    drop(la);
    tokio::time::timeout(STEP, server.running.shutdown())
        .await
        .expect("shutdown in time")
        .expect("clean shutdown");
}

// ---------------------------------------------------------------------
// 4. a server certificate from a foreign CA
// ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_a_foreign_ca_is_refused_by_the_client() {
    let pki_a = pki();
    let pki_b = pki();
    let alice = person(&pki_a, "alice");

    // An honest server of another deployment.
    let other = start_server_with(pki_b.clone(), ServerLimits::default()).await;
    match alice.connect_server(&other.addr_string()).await {
        Err(CallError::Connect { reason, .. }) => {
            assert!(reason.contains("invalid peer certificate"), "{reason}");
        }
        Err(other) => panic!("expected a handshake failure, got {other:?}"),
        Ok(l) => panic!(
            "connected to a foreign server: {:?}",
            call::<Registered>(&l, &ServerRequest::Register {}).await
        ),
    }

    // An impostor that would accept alice (it trusts her CA) but can only
    // show a server certificate from another CA, for the right address:
    // only the client's own check stands in the way.
    let material = Material::from_pem(
        &pki_a.ca.pem.cert_pem,
        &pki_b.server.cert_pem,
        &pki_b.server.key_pem,
    )
    .expect("impostor material");
    let dir = tempfile::tempdir().expect("tempdir");
    let impostor = server::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        ServerOptions {
            tls: tls::server_config(&material).expect("impostor config"),
            signing_key: material.signing_key().expect("impostor key"),
            ledger: micropay::ledger::LedgerConfig {
                location: dir.path().join("impostor.db").into(),
                initial_balance: micropay::core::limits::INITIAL_BALANCE_DEFAULT,
            },
            limits: ServerLimits::default(),
            presence: Default::default(),
            refusals_per_minute: micropay::core::limits::REFUSALS_PER_WINDOW_DEFAULT,
            verify_batch_max: micropay::core::limits::VERIFY_BATCH_MAX_DEFAULT,
            crl: None,
        },
    )
    .await
    .expect("impostor starts");
    match alice.connect_server(&impostor.addr.to_string()).await {
        Err(CallError::Connect { reason, .. }) => {
            // Both test CAs are called "micropay test CA": rustls finds
            // the trusted CA by name, and its key did not sign this
            // certificate (BadSignature).
            assert!(reason.contains("invalid peer certificate"), "{reason}");
            assert!(reason.contains("BadSignature"), "{reason}");
        }
        Err(other) => panic!("expected a handshake failure, got {other:?}"),
        Ok(l) => panic!(
            "alice trusted the impostor: {:?}",
            call::<Registered>(&l, &ServerRequest::Register {}).await
        ),
    }

    // Controls: alice reaches her own deployment's server, and the other
    // server still serves its own people.
    let own = start_server_with(pki_a.clone(), ServerLimits::default()).await;
    register(&link(&alice, &own).await).await;
    register(&link(&person(&pki_b, "alice"), &other).await).await;

    for s in [impostor, own.running, other.running] {
        tokio::time::timeout(STEP, s.shutdown())
            .await
            .expect("shutdown in time")
            .expect("clean shutdown");
    }
}

// ---------------------------------------------------------------------
// 5. keys are never logged
// ---------------------------------------------------------------------

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every form in which a private key file's secret might show up in a
/// log: its PEM body lines, its DER in hex, and the raw 32-byte Ed25519
/// seed in hex (both cases), base64 and as a Rust byte list.
fn secret_forms(key_file: &Path) -> Vec<(String, String)> {
    let pem = std::fs::read_to_string(key_file).expect("read key");
    let what = key_file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut forms = Vec::new();
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(line.len() >= 16, "{what}: short PEM line {line:?}");
        forms.push((format!("{what} PEM body"), line.to_owned()));
    }
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("PKCS#8 key");
    let der = der.secret_der();
    // OCTET STRING { OCTET STRING (32 bytes) }: the Ed25519 seed; in the
    // PKCS#8 v1 files micropay writes, the last 32 bytes.
    let at = der
        .windows(4)
        .position(|w| w == [0x04, 0x22, 0x04, 0x20])
        .expect("an Ed25519 PKCS#8 key");
    let seed = &der[at + 4..at + 36];
    assert_eq!(seed, &der[der.len() - 32..], "{what}: PKCS#8 v1");
    forms.push((format!("{what} DER hex"), hex::encode(der)));
    forms.push((format!("{what} seed hex"), hex::encode(seed)));
    forms.push((format!("{what} seed HEX"), hex::encode(seed).to_uppercase()));
    forms.push((format!("{what} seed base64"), base64(seed)));
    let base64_body = base64(seed);
    forms.push((
        format!("{what} seed base64 (unpadded)"),
        base64_body.trim_end_matches('=').to_owned(),
    ));
    forms.push((format!("{what} seed bytes"), format!("{seed:?}")));
    forms.push((
        format!("{what} seed bytes (first 16)"),
        format!("{:?}", &seed[..16])
            .trim_end_matches(']')
            .to_owned(),
    ));
    forms
}

#[track_caller]
fn assert_no_secret(output: &str, source: &str, forms: &[(String, String)]) {
    for (what, secret) in forms {
        assert!(
            !output.contains(secret.as_str()),
            "{source} contains the {what}"
        );
    }
}

#[test]
fn private_keys_are_never_logged_even_at_trace_level() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    let alice: CertifiedPem = pki.person("alice").expect("alice");
    let bob: CertifiedPem = pki.person("bob").expect("bob");
    pki.write_to(&certs, &[("alice", &alice), ("bob", &bob)])
        .expect("certificates written");
    let mut forms = Vec::new();
    for file in ["server.key", "alice.key", "bob.key", "ca.key"] {
        forms.extend(secret_forms(&certs.join(file)));
    }

    // The real server, everything logged.
    let ready = dir.path().join("ready");
    let log = dir.path().join("server.log");
    let (mut server, addr) = cli_support::start_server(
        &certs,
        &dir.path().join("ledger.db"),
        &ready,
        &log,
        &[("RUST_LOG", Some("trace")), ("MICROPAY_DB", None)],
        &[],
    );

    // People at trace level (-vv) too: register, serve, send.
    let mut outputs: Vec<(String, String)> = Vec::new();
    for who in ["alice", "bob"] {
        let out = run(
            &mut client(who, &certs, &addr, &["-vv", "register"]),
            format!("{who} register"),
        );
        out.expect(0);
        outputs.push((out.what.clone(), format!("{}{}", out.stdout, out.stderr)));
    }
    let serve_err = dir.path().join("bob-serve.err");
    let mut serve = Serve::spawn(
        client("bob", &certs, &addr, &["-vv", "serve"]),
        "bob -vv serve".into(),
        serve_err.clone(),
        false,
    );
    serve.online();
    let sent = run(
        &mut client(
            "alice",
            &certs,
            &addr,
            &["-vv", "send", "bob", "25", "--memo", "no keys"],
        ),
        "alice -vv send",
    );
    sent.expect(0)
        .stdout_has("in the server's log (inclusion proof verified");
    outputs.push((sent.what.clone(), format!("{}{}", sent.stdout, sent.stderr)));
    serve.line_where("bob's `received` line", |l| l.starts_with("received 25"));
    let mut serve_out = serve.seen.join("\n");
    let (status, rest) = serve.interrupt();
    assert_eq!(status.code(), Some(0), "serve after SIGINT: {rest:?}");
    serve_out.push_str(&rest.join("\n"));
    serve_out.push_str(&std::fs::read_to_string(&serve_err).expect("serve stderr"));
    outputs.push(("bob -vv serve".into(), serve_out));

    server.signal("TERM");
    let status = server.wait_for_exit(WAIT).expect("the server exits");
    let server_log = std::fs::read_to_string(&log).expect("server log");
    assert!(status.success(), "server after SIGTERM: {status}");

    // The logs are really at trace level and cover the whole story.
    assert!(
        server_log.contains("TRACE"),
        "no trace lines:\n{server_log}"
    );
    assert!(server_log.contains("registered"), "{server_log}");
    for (what, text) in &outputs {
        assert!(
            text.contains("TRACE"),
            "{what} logged no trace lines:\n{text}"
        );
    }
    assert_no_secret(&server_log, "the server's trace log", &forms);
    eprintln!(
        "checked {} secret forms against {} server log lines and {} client outputs ({} lines)",
        forms.len(),
        server_log.lines().count(),
        outputs.len(),
        outputs
            .iter()
            .map(|(_, t)| t.lines().count())
            .sum::<usize>()
    );
    for (what, text) in &outputs {
        assert_no_secret(text, what, &forms);
    }
}
