//! Key lifecycle against real servers, on every ledger backend: rotation
//! (a new key, signed over by the old one), renewal (the same key, a later
//! notAfter), the operator's rebind, and the key history audit checks.
//!
//! Servers bind 127.0.0.1:0; every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::{audit, link, person_from, start_server_on, TestServer, GRANT};
use micropay::certs::{CertifiedPem, KeyType, Validity};
use micropay::core::name::Name;
use micropay::core::payment::SignedPayment;
use micropay::core::rotation::{KeyChange, KeyChangeKind};
use micropay::ledger::{DbLocation, Ledger, LedgerConfig, NoCommitObserver};
use micropay::net::identity::Identity;
use micropay::net::link::{CallError, Link};
use micropay::person::{rotate, rotation_statement, PeerError, Person};
use micropay::system::clock::now_s;
use micropay::wire::{
    Balance, ErrorCode, PaymentJson, Registered, Rotated, ServerRequest, Settled,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

/// Longest any single step may take.
const STEP: Duration = Duration::from_secs(20);

fn name(s: &str) -> Name {
    Name::parse(s).expect("valid test name")
}

async fn call<T: serde::de::DeserializeOwned>(
    link: &Link,
    request: &ServerRequest,
) -> Result<T, CallError> {
    tokio::time::timeout(STEP, link.call::<T>(request))
        .await
        .expect("a reply within the step limit")
}

async fn register(link: &Link) {
    let r: Registered = call(link, &ServerRequest::Register {})
        .await
        .expect("register");
    assert_eq!(r.balance, GRANT);
}

async fn balance(link: &Link) -> Result<u64, CallError> {
    call::<Balance>(link, &ServerRequest::Balance {})
        .await
        .map(|b| b.balance)
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

fn pay(payer: &Person, payee: &str, amount: u64) -> SignedPayment {
    common::signed_payment(payer, payee, amount, "tea")
}

/// The error code of a refused call; anything else fails the test.
#[track_caller]
fn code<T: std::fmt::Debug>(result: Result<T, CallError>) -> ErrorCode {
    match result {
        Err(CallError::Refused(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn rotate_to(old: &Person, new: &Person, server: &TestServer) -> Result<Rotated, PeerError> {
    tokio::time::timeout(STEP, rotate(&old.key, new, &server.addr_string()))
        .await
        .expect("rotate within the step limit")
}

/// A certificate for `who` with a new key, valid from an hour ago for
/// `valid_s` seconds from now.
fn cert_for(server: &TestServer, who: &str, valid_s: i64) -> CertifiedPem {
    let now = OffsetDateTime::now_utc();
    let validity = Validity {
        not_before: now - time::Duration::hours(1),
        not_after: now + time::Duration::seconds(valid_s),
    };
    server
        .pki
        .ca
        .issue_person(&name(who), KeyType::Ed25519, validity)
        .expect("certificate")
}

/// Waits (bounded) until the clock is past `pem`'s notAfter.
async fn wait_until_expired(pem: &CertifiedPem) {
    let not_after_s = identity_of(pem).not_after_s;
    let deadline = Instant::now() + Duration::from_secs(15);
    while i64::try_from(now_s()).expect("now fits") <= not_after_s {
        assert!(Instant::now() < deadline, "the certificate never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn identity_of(pem: &CertifiedPem) -> Identity {
    let der = CertificateDer::from_pem_slice(pem.cert_pem.as_bytes()).expect("PEM");
    Identity::from_cert_der(&der).expect("identity")
}

backend_test! {
    /// Rotate, then pay with the new key; the old key is refused at the
    /// gate (old and new connections) and a payment it signed before the
    /// rotation, relayed by the payee afterwards, is refused as
    /// key_mismatch at settlement and recorded so. Audit checks each
    /// payment with the key registered when it settled.
    async fn rotate_then_pay_with_the_new_key_and_the_old_key_is_refused(backend) {
        let server = start_server_on(&backend).await;
        let alice_old = person_from(&server.pki, &cert_for(&server, "alice", 3600));
        let bob = person_from(&server.pki, &cert_for(&server, "bob", 3600));
        let (la_old, lb) = (link(&alice_old, &server).await, link(&bob, &server).await);
        register(&la_old).await;
        register(&lb).await;
        settle(&lb, &pay(&alice_old, "bob", 100)).await.expect("settles with the old key");
        let unsettled = pay(&alice_old, "bob", 7);

        let alice_new = person_from(&server.pki, &cert_for(&server, "alice", 3600));
        let rotated = rotate_to(&alice_old, &alice_new, &server).await.expect("rotates");
        assert_eq!(rotated.kind, "rotate");
        assert_eq!(rotated.key_fingerprint, alice_new.identity.key.fingerprint());

        let la_new = link(&alice_new, &server).await;
        assert_eq!(balance(&la_new).await.expect("balance"), GRANT - 100);
        settle(&lb, &pay(&alice_new, "bob", 50)).await.expect("settles with the new key");
        // The old key at the gate: on its open connection and on a new one.
        assert_eq!(code(balance(&la_old).await), ErrorCode::KeyMismatch);
        let la_old2 = link(&alice_old, &server).await;
        assert_eq!(code(balance(&la_old2).await), ErrorCode::KeyMismatch);
        // Signed by the old key before the rotation, relayed after it.
        assert_eq!(code(settle(&lb, &unsettled).await), ErrorCode::KeyMismatch);
        assert_eq!(code(settle(&lb, &pay(&alice_old, "bob", 9)).await), ErrorCode::KeyMismatch);
        assert_eq!(balance(&la_new).await.expect("balance"), GRANT - 150);

        let report = common::shutdown_and_audit(server).await;
        assert_eq!(report.payments, 2);
    }
}

backend_test! {
    /// An owner whose old certificate has expired rotates with the new
    /// certificate (the old one can no longer even connect) and pays.
    async fn rotation_with_an_expired_old_certificate_succeeds(backend) {
        let server = start_server_on(&backend).await;
        let old_pem = cert_for(&server, "alice", 2);
        let alice_old = person_from(&server.pki, &old_pem);
        let bob = person_from(&server.pki, &cert_for(&server, "bob", 3600));
        let lb = link(&bob, &server).await;
        register(&link(&alice_old, &server).await).await;
        register(&lb).await;
        wait_until_expired(&old_pem).await;

        let alice_new = person_from(&server.pki, &cert_for(&server, "alice", 3600));
        let rotated = rotate_to(&alice_old, &alice_new, &server).await.expect("rotates");
        assert_eq!(rotated.kind, "rotate");
        settle(&lb, &pay(&alice_new, "bob", 30)).await.expect("the new key spends");
        assert_eq!(balance(&lb).await.expect("balance"), GRANT + 30);
        common::shutdown_and_audit(server).await;
    }
}

backend_test! {
    /// Renewal: a new certificate for the SAME key only extends the
    /// validity, so payments keep settling after the old notAfter, which
    /// would have refused them (the control: before the renewal, a
    /// payment past the old notAfter is refused as certificate_expired).
    async fn renewal_with_the_same_key_extends_validity(backend) {
        let server = start_server_on(&backend).await;
        let now = OffsetDateTime::now_utc();
        let old_pem = cert_for(&server, "alice", 3);
        let alice = person_from(&server.pki, &old_pem);
        let bob = person_from(&server.pki, &cert_for(&server, "bob", 3600));
        let lb = link(&bob, &server).await;
        register(&link(&alice, &server).await).await;
        register(&lb).await;
        settle(&lb, &pay(&alice, "bob", 5)).await.expect("settles before expiry");
        wait_until_expired(&old_pem).await;
        assert_eq!(
            code(settle(&lb, &pay(&alice, "bob", 6)).await),
            ErrorCode::CertificateExpired,
            "without a renewal the key spends nothing more"
        );

        let validity = Validity {
            not_before: now - time::Duration::hours(1),
            not_after: now + time::Duration::hours(2),
        };
        let renewed_pem = server
            .pki
            .ca
            .issue_person_for_key(&name("alice"), &old_pem.key_pem, validity)
            .expect("renewed certificate");
        let renewed = person_from(&server.pki, &renewed_pem);
        assert_eq!(renewed.identity.key, alice.identity.key, "same key");
        let r = rotate_to(&alice, &renewed, &server).await.expect("renews");
        assert_eq!(r.kind, "renew");
        assert_eq!(r.not_after, u64::try_from(renewed.identity.not_after_s).expect("positive"));
        // Signed with the same key, settled after the old notAfter.
        settle(&lb, &pay(&alice, "bob", 7)).await.expect("settles after the renewal");
        assert_eq!(balance(&link(&renewed, &server).await).await.expect("balance"), GRANT - 12);
        // Renewing again with the same certificate extends nothing: refused.
        assert_eq!(code_of(rotate_to(&alice, &renewed, &server).await), ErrorCode::BadRequest);
        common::shutdown_and_audit(server).await;
    }
}

#[track_caller]
fn code_of<T: std::fmt::Debug>(result: Result<T, PeerError>) -> ErrorCode {
    match result {
        Err(PeerError::Call(CallError::Refused(e))) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

backend_test! {
    /// A statement whose old signature is not the registered key's, or
    /// whose new signature is not the certificate's key's, is refused and
    /// changes nothing.
    async fn a_rotation_statement_with_a_bad_signature_is_refused(backend) {
        let server = start_server_on(&backend).await;
        let alice = person_from(&server.pki, &cert_for(&server, "alice", 3600));
        register(&link(&alice, &server).await).await;
        let new = person_from(&server.pki, &cert_for(&server, "alice", 3600));
        let thief = person_from(&server.pki, &cert_for(&server, "alice", 3600));
        let good = rotation_statement(&alice.key, &new).expect("statement");
        let forged_old = rotation_statement(&thief.key, &new).expect("statement");
        let ln = link(&new, &server).await;
        let attempt = |old: &[u8], new_sig: &[u8]| ServerRequest::Rotate {
            old_signature: hex::encode(old),
            new_signature: hex::encode(new_sig),
        };
        let mut flipped = good.new_signature.clone();
        flipped[0] ^= 1;
        for (case, request) in [
            ("old signed by another key", attempt(&forged_old.old_signature, &forged_old.new_signature)),
            ("new signature broken", attempt(&good.old_signature, &flipped)),
            ("signatures swapped for garbage", attempt(&[1, 2, 3], &good.new_signature)),
        ] {
            assert_eq!(
                code(call::<Rotated>(&ln, &request).await),
                ErrorCode::BadSignature,
                "{case}"
            );
        }
        assert_eq!(code(balance(&ln).await), ErrorCode::KeyMismatch, "nothing changed");
        assert_eq!(balance(&link(&alice, &server).await).await.expect("old key still works"), GRANT);
        // Two racing rotations from the same old key: exactly one wins.
        let second = person_from(&server.pki, &cert_for(&server, "alice", 3600));
        let (a, b) = tokio::join!(rotate_to(&alice, &new, &server), rotate_to(&alice, &second, &server));
        let wins = [a.is_ok(), b.is_ok()].iter().filter(|w| **w).count();
        assert_eq!(wins, 1, "{a:?} {b:?}");
        for r in [a, b].into_iter().filter(Result::is_err) {
            let c = code_of(r);
            assert!(matches!(c, ErrorCode::KeyMismatch | ErrorCode::BadSignature), "{c:?}");
        }
        common::shutdown_and_audit(server).await;
    }
}

backend_test! {
    /// The operator's rebind (no old key) is recorded as `rebind`, the new
    /// key spends and audit accepts the history; a tampered key-history
    /// row is then reported by audit, not a panic.
    async fn rebind_is_recorded_and_audited_and_tampering_is_caught(backend) {
        let server = start_server_on(&backend).await;
        let alice = person_from(&server.pki, &cert_for(&server, "alice", 3600));
        let bob = person_from(&server.pki, &cert_for(&server, "bob", 3600));
        register(&link(&alice, &server).await).await;
        let lb = link(&bob, &server).await;
        register(&lb).await;
        settle(&lb, &pay(&alice, "bob", 40)).await.expect("settles");
        let new_pem = cert_for(&server, "alice", 3600);
        let new_alice = person_from(&server.pki, &new_pem);
        let rotated = person_from(&server.pki, &cert_for(&server, "alice", 3600));
        rotate_to(&alice, &rotated, &server).await.expect("rotates");
        settle(&lb, &pay(&rotated, "bob", 2)).await.expect("settles");
        let pki = server.pki.clone();
        let (db, dir, pg) = common::stop_keeping_ledger(server).await;

        let der = CertificateDer::from_pem_slice(new_pem.cert_pem.as_bytes())
            .expect("PEM")
            .to_vec();
        // The PostgreSQL store blocks on a runtime of its own: open it off
        // this one.
        let config = LedgerConfig {
            location: db.clone(),
            initial_balance: GRANT,
        };
        // As `micropay-server rebind` does: the change goes into the
        // server's log.
        let log = common::server_log(&pki);
        let ledger = tokio::task::spawn_blocking(move || {
            Ledger::open_logged(&config, std::sync::Arc::new(NoCommitObserver), Some(log))
        })
            .await
            .expect("open task")
            .expect("opens");
        let change = KeyChange::rebind(
            name("alice"),
            new_alice.identity.key.clone(),
            u64::try_from(new_alice.identity.not_after_s).expect("positive"),
            new_alice.identity.serial.clone(),
            der,
        )
        .expect("rebind");
        ledger.change_key(change).await.expect("ledger").expect("rebinds");
        let history = ledger.key_history(&name("alice")).await.expect("history");
        let kinds: Vec<_> = history.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [KeyChangeKind::Register, KeyChangeKind::Rotate, KeyChangeKind::Rebind]);
        assert_eq!(history[0].serial, alice.identity.serial);
        assert_eq!(history[2].key, new_alice.identity.key);
        let current = ledger.current_key(&name("alice")).await.expect("reads").expect("has a key");
        assert_eq!(current.serial, new_alice.identity.serial, "the serial a CRL check needs");
        assert_eq!(history[1].after_seq, 1, "the rotation came after payment 1");
        ledger.close().await;
        drop(ledger);
        let report = audit(&db).await;
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!(report.payments, 2);

        common::tamper(&db, "UPDATE key_history SET not_after_s = not_after_s + 1 WHERE kind = 'rotate'").await;
        let report = audit(&db).await;
        assert!(
            report.violations.iter().any(|v| v.contains("key history") && v.contains("alice")),
            "{:?}",
            report.violations
        );
        drop((dir, pg));
    }
}

backend_test! {
    /// A ledger written before the key history existed (SQLite schema 3,
    /// PostgreSQL schema 2) is migrated when a server opens it: each
    /// account's history starts with its registered key, and a rotation
    /// afterwards audits clean.
    async fn a_ledger_from_before_the_key_history_is_migrated(backend) {
        let server = start_server_on(&backend).await;
        let pki = server.pki.clone();
        let alice = person_from(&pki, &cert_for(&server, "alice", 3600));
        let bob = person_from(&pki, &cert_for(&server, "bob", 3600));
        register(&link(&alice, &server).await).await;
        register(&link(&bob, &server).await).await;
        settle(&link(&bob, &server).await, &pay(&alice, "bob", 3)).await.expect("settles");
        let (db, dir, pg) = common::stop_keeping_ledger(server).await;
        let downgrade = match &db {
            // A ledger that old had no log either.
            DbLocation::Sqlite(_) => {
                "DROP TABLE key_history; DROP TABLE log_leaves; DROP TABLE checkpoints;
                 PRAGMA user_version = 3;"
            }
            DbLocation::Postgres(_) => {
                "DROP TABLE key_history; DROP TABLE log_leaves; DROP TABLE checkpoints;
                 UPDATE micropay_schema SET version = 2;"
            }
        };
        common::tamper(&db, downgrade).await;

        let options = common::server_options(&pki, db.clone(), Default::default());
        let server = common::start_server_at(pki.clone(), db.clone(), dir, pg, options).await;
        let new = person_from(&pki, &cert_for(&server, "alice", 3600));
        rotate_to(&alice, &new, &server).await.expect("rotates after the migration");
        settle(&link(&bob, &server).await, &pay(&new, "bob", 4)).await.expect("settles");
        let report = common::shutdown_and_audit(server).await;
        assert_eq!(report.payments, 2);
    }
}
