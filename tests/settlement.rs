//! Every settlement rule of DESIGN.md, positive and negative, against a
//! real server on 127.0.0.1:0. Each test drives the server through the
//! payee's (or payer's) own link, as a peer would, then stops the server
//! and checks that `audit` finds the ledger sound.

#[macro_use]
mod common;

use std::fmt::Debug;

use common::{link, person, person_from, TestServer};
use micropay::core::checkpoint::CheckpointCache;
use micropay::core::keys::VerifyingKey;
use micropay::core::limits::{MEMO_BYTES_MAX, PAYMENT_LIFETIME_MAX_S};
use micropay::core::name::Name;
use micropay::core::payment::{Payment, PaymentId, Receipt, SignedPayment};
use micropay::core::receipt_check::{check_receipt as check_receipt_core, LogPlace, ReceiptError};
use micropay::net::link::{CallError, Link};
use micropay::person::Person;
use micropay::system::clock::now_s;
use micropay::wire::{
    Balance, ErrorCode, History, Listing, LogProofJson, PaymentJson, PaymentStatus, ReceiptJson,
    Registered, ServerRequest, Settled,
};

use common::GRANT;

fn name(s: &str) -> Name {
    Name::parse(s).expect("valid test name")
}

/// An unsigned payment from `payer` to `payee`, valid for two minutes.
fn payment(payer: &str, payee: &str, amount: u64) -> Payment {
    Payment {
        id: PaymentId::random(),
        payer: name(payer),
        payee: name(payee),
        amount_minor: amount,
        expires_at_s: now_s() + 120,
        memo: String::new(),
    }
}

/// A payment from `payer` to `payee`, signed by the payer.
fn pay(payer: &Person, payee: &str, amount: u64) -> SignedPayment {
    payment(payer.name.as_str(), payee, amount).sign(&payer.key)
}

async fn settle(link: &Link, signed: &SignedPayment) -> Result<Settled, CallError> {
    link.call::<Settled>(&ServerRequest::Settle {
        payment: PaymentJson::from(signed),
    })
    .await
}

async fn settle_json(link: &Link, json: PaymentJson) -> Result<Settled, CallError> {
    link.call::<Settled>(&ServerRequest::Settle { payment: json })
        .await
}

async fn balance(link: &Link) -> u64 {
    common::balance(link).await
}

async fn register(link: &Link) -> Registered {
    link.call::<Registered>(&ServerRequest::Register {})
        .await
        .expect("register")
}

async fn status(link: &Link, id: &PaymentId) -> Result<PaymentStatus, CallError> {
    link.call::<PaymentStatus>(&ServerRequest::Status {
        payment_id: id.to_hex(),
    })
    .await
}

/// The error code of a refused call; anything else fails the test.
fn code<T: Debug>(result: Result<T, CallError>) -> ErrorCode {
    match result {
        Err(CallError::Refused(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Checks a receipt as a client does: proven by the log (no signature
/// on it) and bound to this exact payment.
fn check_receipt(
    link: &Link,
    receipt: &ReceiptJson,
    log: Option<&LogProofJson>,
    signed: &SignedPayment,
) -> Receipt {
    let parsed = common::check_proven(link, receipt, log, signed);
    assert!(parsed.matches(signed), "receipt is for this exact payment");
    parsed
}

/// Registered people, each with its own link.
struct Party {
    person: Person,
    link: Link,
}

async fn party(server: &TestServer, who: &str) -> Party {
    let person = person(&server.pki, who);
    let link = link(&person, server).await;
    let registered = register(&link).await;
    assert_eq!(registered.name, who);
    assert_eq!(registered.balance, GRANT);
    Party { person, link }
}

async fn balances(parties: &[&Party]) -> Vec<u64> {
    let mut out = Vec::new();
    for p in parties {
        out.push(balance(&p.link).await);
    }
    out
}

/// Stops the server and audits its ledger; returns the report.
async fn finish(server: TestServer) -> micropay::ledger::AuditReport {
    common::shutdown_and_audit(server).await
}

backend_test! {
async fn register_grants_the_initial_balance_once(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = person(&server.pki, "alice");
    let l = link(&alice, &server).await;
    let registered = register(&l).await;
    assert_eq!(registered.name, "alice");
    assert_eq!(registered.balance, GRANT);
    assert_eq!(
        registered.key_fingerprint,
        alice.key.verifying_key().fingerprint()
    );
    assert_eq!(balance(&l).await, GRANT);
    assert_eq!(
        code(l.call::<Registered>(&ServerRequest::Register {}).await),
        ErrorCode::AlreadyRegistered
    );
    // A second connection with the same certificate is the same account.
    let l2 = link(&alice, &server).await;
    assert_eq!(
        code(l2.call::<Registered>(&ServerRequest::Register {}).await),
        ErrorCode::AlreadyRegistered
    );
    assert_eq!(balance(&l2).await, GRANT);
    let listing: Listing = l.call(&ServerRequest::List {}).await.expect("list");
    assert_eq!(listing.balance, GRANT);
    let report = finish(server).await;
    assert_eq!(report.accounts, 1);
    assert_eq!(report.total_granted, u128::from(GRANT));
}
}

backend_test! {
async fn everything_but_register_needs_an_account(backend) {
    let server = common::start_server_on(&backend).await;
    let bob = party(&server, "bob").await;
    let dave = person(&server.pki, "dave");
    let l = link(&dave, &server).await;
    let signed = pay(&dave, "bob", 5);
    assert_eq!(
        code(l.call::<Balance>(&ServerRequest::Balance {}).await),
        ErrorCode::NotRegistered
    );
    assert_eq!(
        code(l.call::<Listing>(&ServerRequest::List {}).await),
        ErrorCode::NotRegistered
    );
    assert_eq!(
        code(
            l.call::<History>(&ServerRequest::History {
                limit: None,
                before_seq: None
            })
            .await
        ),
        ErrorCode::NotRegistered
    );
    assert_eq!(
        code(status(&l, &signed.payment.id).await),
        ErrorCode::NotRegistered
    );
    assert_eq!(code(settle(&l, &signed).await), ErrorCode::NotRegistered);
    assert_eq!(
        code(
            l.call::<serde_json::Value>(&ServerRequest::Online {
                port: 9000,
                address: None
            })
            .await
        ),
        ErrorCode::NotRegistered
    );
    // Registering then opens the account on the same connection.
    assert_eq!(register(&l).await.balance, GRANT);
    assert_eq!(balance(&l).await, GRANT);
    // The payment dave signed before registering is now settleable.
    let settled = settle(&bob.link, &signed).await.expect("settles");
    check_receipt(&bob.link, &settled.receipt, settled.log.as_ref(), &signed);
    assert_eq!(balance(&l).await, GRANT - 5);
    finish(server).await;
}
}

backend_test! {
async fn payee_settles_and_money_moves_exactly(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let carol = party(&server, "carol").await;
    let mut signed = pay(&alice.person, "bob", 250);
    signed.payment.memo = "lunch".into();
    let signed = signed.payment.sign(&alice.person.key);
    let settled = settle(&bob.link, &signed).await.expect("payee settles");
    let receipt = check_receipt(&bob.link, &settled.receipt, settled.log.as_ref(), &signed);
    assert_eq!(receipt.seq, 1);
    assert_eq!(receipt.amount_minor, 250);
    assert_eq!(receipt.payer.as_str(), "alice");
    assert_eq!(receipt.payee.as_str(), "bob");
    assert_eq!(receipt.payment_id, signed.payment.id);
    assert_eq!(
        balances(&[&alice, &bob, &carol]).await,
        vec![GRANT - 250, GRANT + 250, GRANT]
    );
    let log = settled.log.as_ref().expect("proof");
    let check = |key: &VerifyingKey, receipt: &Receipt, place: Option<LogPlace<'_>>| {
        let mut cache = CheckpointCache::new(4);
        check_receipt_core(&mut cache, key, &signed, receipt, None, place)
    };
    let server_key = bob.link.peer_key().expect("server key");
    // The proof does not verify with anyone else's key.
    assert!(matches!(
        check(alice.person.key.verifying_key(), &receipt, Some(log.place())),
        Err(ReceiptError::BadLogProof(_))
    ));
    // A forged receipt (amount or time changed) is refused.
    let mut forged = receipt.clone();
    forged.amount_minor = 2500;
    assert_eq!(
        check(&server_key, &forged, Some(log.place())),
        Err(ReceiptError::NotThisPayment)
    );
    let mut forged = receipt.clone();
    forged.settled_at_ms += 1;
    assert!(matches!(
        check(&server_key, &forged, Some(log.place())),
        Err(ReceiptError::BadLogProof(_))
    ));
    // Without its proof the unsigned receipt proves nothing.
    assert_eq!(
        check(&server_key, &receipt, None),
        Err(ReceiptError::Unproven)
    );
    // Nor does a receipt match a different payment.
    assert!(!receipt.matches(&pay(&alice.person, "bob", 250)));
    let report = finish(server).await;
    assert_eq!(report.payments, 1);
}
}

backend_test! {
async fn payer_may_submit_directly(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let signed = pay(&alice.person, "bob", 1);
    let settled = settle(&alice.link, &signed).await.expect("payer submits");
    check_receipt(&alice.link, &settled.receipt, settled.log.as_ref(), &signed);
    assert_eq!(balances(&[&alice, &bob]).await, vec![GRANT - 1, GRANT + 1]);
    // The whole balance may be spent; then nothing more.
    let all = pay(&alice.person, "bob", GRANT - 1);
    settle(&alice.link, &all).await.expect("spends everything");
    assert_eq!(balances(&[&alice, &bob]).await, vec![0, 2 * GRANT]);
    let one_more = pay(&alice.person, "bob", 1);
    assert_eq!(
        code(settle(&bob.link, &one_more).await),
        ErrorCode::InsufficientFunds
    );
    assert_eq!(balances(&[&alice, &bob]).await, vec![0, 2 * GRANT]);
    finish(server).await;
}
}

backend_test! {
async fn a_bad_signature_is_refused_and_moves_nothing(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let carol = party(&server, "carol").await;
    // Signed with carol's (registered) key but claiming to be from alice.
    let forged = payment("alice", "bob", 300).sign(&carol.person.key);
    assert_eq!(
        code(settle(&bob.link, &forged).await),
        ErrorCode::BadSignature
    );
    // Signed by a fresh, never-registered key with alice's name on it.
    let impostor = person_from(&server.pki, &server.pki.person("alice").expect("cert"));
    let forged2 = payment("alice", "bob", 300).sign(&impostor.key);
    assert_eq!(
        code(settle(&bob.link, &forged2).await),
        ErrorCode::BadSignature
    );
    // A truncated signature, an empty one, a non-hex one.
    let good = pay(&alice.person, "bob", 300);
    let mut json = PaymentJson::from(&good);
    json.signature.truncate(json.signature.len() - 2);
    assert_eq!(
        code(settle_json(&bob.link, json).await),
        ErrorCode::BadSignature
    );
    let mut json = PaymentJson::from(&good);
    json.signature.clear();
    assert_eq!(
        code(settle_json(&bob.link, json).await),
        ErrorCode::BadSignature
    );
    let mut json = PaymentJson::from(&good);
    json.signature = "zz".repeat(64);
    assert_eq!(
        code(settle_json(&bob.link, json).await),
        ErrorCode::BadRequest
    );
    let mut json = PaymentJson::from(&good);
    json.signature = "00".repeat(4096);
    assert_eq!(
        code(settle_json(&bob.link, json).await),
        ErrorCode::BadRequest
    );
    assert_eq!(balances(&[&alice, &bob, &carol]).await, vec![GRANT; 3]);
    // A refused forgery does not burn the id: the genuine payment with
    // the same id still settles.
    let genuine = forged.payment.clone().sign(&alice.person.key);
    assert_eq!(genuine.payment.id, forged.payment.id);
    settle(&bob.link, &genuine).await.expect("genuine settles");
    assert_eq!(
        balances(&[&alice, &bob, &carol]).await,
        vec![GRANT - 300, GRANT + 300, GRANT]
    );
    let report = finish(server).await;
    assert_eq!(report.payments, 1);
}
}

backend_test! {
async fn a_payment_changed_after_signing_is_refused(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let carol = party(&server, "carol").await;
    let signed = pay(&alice.person, "bob", 10);
    // Amount raised by the payee.
    let mut json = PaymentJson::from(&signed);
    json.amount = 1_000;
    assert_eq!(
        code(settle_json(&bob.link, json).await),
        ErrorCode::BadSignature
    );
    // Amount raised through the library types.
    let mut tampered = signed.clone();
    tampered.payment.amount_minor = 9_999;
    assert_eq!(
        code(settle(&bob.link, &tampered).await),
        ErrorCode::BadSignature
    );
    // Redirected to carol, who forwards it as if she were the payee.
    let mut json = PaymentJson::from(&signed);
    json.payee = "carol".into();
    assert_eq!(
        code(settle_json(&carol.link, json).await),
        ErrorCode::BadSignature
    );
    // Memo and expiry are signed too.
    let mut json = PaymentJson::from(&signed);
    json.memo = "x".into();
    assert_eq!(
        code(settle_json(&bob.link, json).await),
        ErrorCode::BadSignature
    );
    let mut json = PaymentJson::from(&signed);
    json.expires_at += 1;
    assert_eq!(
        code(settle_json(&bob.link, json).await),
        ErrorCode::BadSignature
    );
    assert_eq!(balances(&[&alice, &bob, &carol]).await, vec![GRANT; 3]);
    // The untouched original still settles, for its signed amount.
    settle(&bob.link, &signed).await.expect("original settles");
    assert_eq!(
        balances(&[&alice, &bob, &carol]).await,
        vec![GRANT - 10, GRANT + 10, GRANT]
    );
    finish(server).await;
}
}

backend_test! {
async fn a_replay_returns_the_original_receipt_and_moves_nothing(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let signed = pay(&alice.person, "bob", 700);
    let first = settle(&bob.link, &signed).await.expect("settles");
    check_receipt(&bob.link, &first.receipt, first.log.as_ref(), &signed);
    // Again by the payee, by the payer, and on a fresh connection.
    let again = settle(&bob.link, &signed).await.expect("replay");
    assert_eq!(again.receipt, first.receipt);
    // The reply says which one moved money (issue 10, item 9).
    assert!(!first.replay && again.replay);
    let by_payer = settle(&alice.link, &signed).await.expect("replay by payer");
    assert_eq!(by_payer.receipt, first.receipt);
    let fresh = link(&bob.person, &server).await;
    assert_eq!(
        settle(&fresh, &signed).await.expect("replay").receipt,
        first.receipt
    );
    // Many copies at once, pipelined on two connections.
    let mut waiting = Vec::new();
    for i in 0..64 {
        let l = if i % 2 == 0 { &alice.link } else { &bob.link };
        waiting.push(
            l.send(&ServerRequest::Settle {
                payment: PaymentJson::from(&signed),
            })
            .await
            .expect("sent"),
        );
    }
    for rx in waiting {
        let reply = rx.await.expect("reply");
        let settled: Settled = reply.into_result().expect("replay settles");
        assert_eq!(settled.receipt, first.receipt);
    }
    assert_eq!(
        balances(&[&alice, &bob]).await,
        vec![GRANT - 700, GRANT + 700]
    );
    let report = finish(server).await;
    assert_eq!(report.payments, 1);
}
}

backend_test! {
async fn concurrent_first_submissions_of_one_payment_move_money_once(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    // Fresh payments, each sent by payer and payee at the same moment.
    let mut payments = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..50 {
        let signed = pay(&alice.person, "bob", 3);
        for l in [&alice.link, &bob.link, &alice.link, &bob.link] {
            waiting.push((
                payments.len(),
                l.send(&ServerRequest::Settle {
                    payment: PaymentJson::from(&signed),
                })
                .await
                .expect("sent"),
            ));
        }
        payments.push(signed);
    }
    let mut receipts: Vec<Option<ReceiptJson>> = vec![None; payments.len()];
    for (i, rx) in waiting {
        let settled: Settled = rx.await.expect("reply").into_result().expect("settles");
        check_receipt(&alice.link, &settled.receipt, settled.log.as_ref(), &payments[i]);
        match &receipts[i] {
            Some(r) => assert_eq!(r, &settled.receipt),
            None => receipts[i] = Some(settled.receipt),
        }
    }
    assert_eq!(
        balances(&[&alice, &bob]).await,
        vec![GRANT - 150, GRANT + 150]
    );
    let report = finish(server).await;
    assert_eq!(report.payments, 50);
}
}

backend_test! {
async fn the_same_id_with_different_content_is_a_conflict(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let carol = party(&server, "carol").await;
    let signed = pay(&alice.person, "bob", 100);
    let first = settle(&bob.link, &signed).await.expect("settles");
    // Same id, properly signed, each field changed in turn.
    let mut variants = Vec::new();
    let mut p = signed.payment.clone();
    p.amount_minor = 101;
    variants.push((p, &bob.link));
    let mut p = signed.payment.clone();
    p.memo = "other".into();
    variants.push((p, &bob.link));
    let mut p = signed.payment.clone();
    p.expires_at_s += 1;
    variants.push((p, &bob.link));
    let mut p = signed.payment.clone();
    p.payee = name("carol");
    variants.push((p, &carol.link));
    for (p, l) in variants {
        let other = p.sign(&alice.person.key);
        assert_eq!(
            code(settle(l, &other).await),
            ErrorCode::Conflict,
            "{other:?}"
        );
    }
    // The original is unaffected and still replays.
    assert_eq!(
        settle(&bob.link, &signed).await.expect("replay").receipt,
        first.receipt
    );
    assert_eq!(
        balances(&[&alice, &bob, &carol]).await,
        vec![GRANT - 100, GRANT + 100, GRANT]
    );
    // A refused payment's id is taken too: different content conflicts.
    let refused = pay(&alice.person, "bob", GRANT * 5);
    assert_eq!(
        code(settle(&bob.link, &refused).await),
        ErrorCode::InsufficientFunds
    );
    let mut smaller = refused.payment.clone();
    smaller.amount_minor = 1;
    let smaller = smaller.sign(&alice.person.key);
    assert_eq!(code(settle(&bob.link, &smaller).await), ErrorCode::Conflict);
    assert_eq!(
        balances(&[&alice, &bob, &carol]).await,
        vec![GRANT - 100, GRANT + 100, GRANT]
    );
    finish(server).await;
}
}

backend_test! {
async fn an_expired_payment_is_refused(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let mut p = payment("alice", "bob", 40);
    p.expires_at_s = now_s() - 10;
    let expired = p.sign(&alice.person.key);
    assert_eq!(code(settle(&bob.link, &expired).await), ErrorCode::Expired);
    // Again: still expired, recorded as such.
    assert_eq!(
        code(settle(&alice.link, &expired).await),
        ErrorCode::Expired
    );
    match status(&alice.link, &expired.payment.id)
        .await
        .expect("status")
    {
        PaymentStatus::Rejected { error } => assert_eq!(error.code, ErrorCode::Expired),
        other => panic!("expected rejected, got {other:?}"),
    }
    // Expiry far beyond the allowed lifetime is malformed, not accepted.
    let mut p = payment("alice", "bob", 40);
    p.expires_at_s = now_s() + PAYMENT_LIFETIME_MAX_S + 3_600;
    let too_far = p.sign(&alice.person.key);
    assert_eq!(
        code(settle(&bob.link, &too_far).await),
        ErrorCode::BadRequest
    );
    // Expiring a few seconds from now is fine.
    let mut p = payment("alice", "bob", 40);
    p.expires_at_s = now_s() + 5;
    let soon = p.sign(&alice.person.key);
    settle(&bob.link, &soon).await.expect("not yet expired");
    assert_eq!(
        balances(&[&alice, &bob]).await,
        vec![GRANT - 40, GRANT + 40]
    );
    finish(server).await;
}
}

backend_test! {
async fn insufficient_funds_is_refused_for_good(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let carol = party(&server, "carol").await;
    let too_much = pay(&alice.person, "bob", GRANT + 1);
    assert_eq!(
        code(settle(&bob.link, &too_much).await),
        ErrorCode::InsufficientFunds
    );
    assert_eq!(balances(&[&alice, &bob, &carol]).await, vec![GRANT; 3]);
    let huge = pay(&alice.person, "bob", u64::MAX);
    assert_eq!(
        code(settle(&bob.link, &huge).await),
        ErrorCode::InsufficientFunds
    );
    // Funds arrive: alice could now afford it, but the refused payment
    // keeps its original outcome.
    let gift = pay(&carol.person, "alice", 5_000);
    settle(&alice.link, &gift).await.expect("gift settles");
    assert_eq!(balance(&alice.link).await, GRANT + 5_000);
    assert_eq!(
        code(settle(&bob.link, &too_much).await),
        ErrorCode::InsufficientFunds
    );
    assert_eq!(
        code(settle(&alice.link, &too_much).await),
        ErrorCode::InsufficientFunds
    );
    match status(&bob.link, &too_much.payment.id)
        .await
        .expect("status")
    {
        PaymentStatus::Rejected { error } => assert_eq!(error.code, ErrorCode::InsufficientFunds),
        other => panic!("expected rejected, got {other:?}"),
    }
    assert_eq!(
        balances(&[&alice, &bob, &carol]).await,
        vec![GRANT + 5_000, GRANT, GRANT - 5_000]
    );
    // A new payment (new id) for the same amount now goes through.
    let retry = pay(&alice.person, "bob", GRANT + 1);
    settle(&bob.link, &retry)
        .await
        .expect("new payment settles");
    assert_eq!(
        balances(&[&alice, &bob, &carol]).await,
        vec![4_999, 2 * GRANT + 1, GRANT - 5_000]
    );
    let report = finish(server).await;
    assert_eq!(report.payments, 2);
    assert_eq!(report.rejections, 2);
}
}

backend_test! {
async fn paying_oneself_is_refused(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let selfpay = pay(&alice.person, "alice", 10);
    assert_eq!(
        code(settle(&alice.link, &selfpay).await),
        ErrorCode::SelfPayment
    );
    assert_eq!(balance(&alice.link).await, GRANT);
    finish(server).await;
}
}

backend_test! {
async fn an_unknown_payee_is_refused(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let to_dave = pay(&alice.person, "dave", 10);
    assert_eq!(
        code(settle(&alice.link, &to_dave).await),
        ErrorCode::UnknownPayee
    );
    assert_eq!(balance(&alice.link).await, GRANT);
    // dave has a certificate but no account: he cannot settle it either.
    let dave = person(&server.pki, "dave");
    let dave_link = link(&dave, &server).await;
    let fresh = pay(&alice.person, "dave", 10);
    assert_eq!(
        code(settle(&dave_link, &fresh).await),
        ErrorCode::NotRegistered
    );
    assert_eq!(balance(&alice.link).await, GRANT);
    finish(server).await;
}
}

backend_test! {
async fn an_unknown_payer_is_refused(backend) {
    let server = common::start_server_on(&backend).await;
    let bob = party(&server, "bob").await;
    // dave signs with his real certificate key but never registered.
    let dave = person(&server.pki, "dave");
    let from_dave = pay(&dave, "bob", 10);
    assert_eq!(
        code(settle(&bob.link, &from_dave).await),
        ErrorCode::UnknownPayer
    );
    assert_eq!(balance(&bob.link).await, GRANT);
    finish(server).await;
}
}

backend_test! {
async fn a_third_party_may_not_forward_a_payment(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let carol = party(&server, "carol").await;
    let signed = pay(&alice.person, "bob", 60);
    assert_eq!(
        code(settle(&carol.link, &signed).await),
        ErrorCode::Forbidden
    );
    assert_eq!(balances(&[&alice, &bob, &carol]).await, vec![GRANT; 3]);
    // Nor learn its status once settled.
    let settled = settle(&bob.link, &signed).await.expect("payee settles");
    check_receipt(&bob.link, &settled.receipt, settled.log.as_ref(), &signed);
    assert_eq!(
        code(status(&carol.link, &signed.payment.id).await),
        ErrorCode::NotFound
    );
    // And after settlement a third party's forward is still refused.
    assert_eq!(
        code(settle(&carol.link, &signed).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        balances(&[&alice, &bob, &carol]).await,
        vec![GRANT - 60, GRANT + 60, GRANT]
    );
    finish(server).await;
}
}

backend_test! {
async fn a_registered_name_with_another_key_gets_key_mismatch_everywhere(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    // A valid certificate from the same CA for "alice", with a new key.
    let other = person_from(&server.pki, &server.pki.person("alice").expect("cert"));
    assert_ne!(
        other.key.verifying_key().fingerprint(),
        alice.person.key.verifying_key().fingerprint()
    );
    let l = link(&other, &server).await;
    let own_payment = pay(&alice.person, "bob", 5);
    let mismatch = |r: Result<serde_json::Value, CallError>| {
        assert_eq!(code(r), ErrorCode::KeyMismatch);
    };
    let requests = vec![
        ServerRequest::Register {},
        ServerRequest::Balance {},
        ServerRequest::List {},
        ServerRequest::History {
            limit: Some(5),
            before_seq: None,
        },
        ServerRequest::Status {
            payment_id: own_payment.payment.id.to_hex(),
        },
        ServerRequest::Online {
            port: 9000,
            address: None,
        },
        ServerRequest::Offline {},
        ServerRequest::Locate { name: "bob".into() },
        // Even a payment genuinely signed by the registered key.
        ServerRequest::Settle {
            payment: PaymentJson::from(&own_payment),
        },
        // And one signed by the new key.
        ServerRequest::Settle {
            payment: PaymentJson::from(&pay(&other, "bob", 5)),
        },
    ];
    for request in &requests {
        mismatch(l.call::<serde_json::Value>(request).await);
    }
    // A payment signed with the new key, forwarded by the real payee,
    // does not verify with the registered key.
    let by_new_key = pay(&other, "bob", 5);
    assert_eq!(
        code(settle(&bob.link, &by_new_key).await),
        ErrorCode::BadSignature
    );
    assert_eq!(balances(&[&alice, &bob]).await, vec![GRANT; 2]);
    // The real alice is unaffected.
    settle(&alice.link, &own_payment)
        .await
        .expect("real alice pays");
    assert_eq!(balances(&[&alice, &bob]).await, vec![GRANT - 5, GRANT + 5]);
    let report = finish(server).await;
    assert_eq!(report.accounts, 2);
}
}

backend_test! {
async fn status_is_for_payer_and_payee_only(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let carol = party(&server, "carol").await;
    let signed = pay(&alice.person, "bob", 42);
    // Unknown before settlement.
    assert_eq!(
        code(status(&alice.link, &signed.payment.id).await),
        ErrorCode::NotFound
    );
    let settled = settle(&bob.link, &signed).await.expect("settles");
    for l in [&alice.link, &bob.link] {
        match status(l, &signed.payment.id).await.expect("status") {
            PaymentStatus::Settled { receipt, log } => {
                check_receipt(l, &receipt, log.as_ref(), &signed);
                assert_eq!(receipt, settled.receipt);
            }
            other => panic!("expected settled, got {other:?}"),
        }
    }
    assert_eq!(
        code(status(&carol.link, &signed.payment.id).await),
        ErrorCode::NotFound
    );
    // Refusals: visible to payer and payee, hidden from others.
    let refused = pay(&alice.person, "bob", GRANT * 2);
    assert_eq!(
        code(settle(&bob.link, &refused).await),
        ErrorCode::InsufficientFunds
    );
    for l in [&alice.link, &bob.link] {
        match status(l, &refused.payment.id).await.expect("status") {
            PaymentStatus::Rejected { error } => {
                assert_eq!(error.code, ErrorCode::InsufficientFunds)
            }
            other => panic!("expected rejected, got {other:?}"),
        }
    }
    assert_eq!(
        code(status(&carol.link, &refused.payment.id).await),
        ErrorCode::NotFound
    );
    // Malformed ids.
    for bad in [
        "",
        "xyz",
        "00112233445566778899aabbccddeef",
        &"0".repeat(34),
    ] {
        let r = alice
            .link
            .call::<PaymentStatus>(&ServerRequest::Status {
                payment_id: bad.into(),
            })
            .await;
        assert_eq!(code(r), ErrorCode::BadRequest, "{bad:?}");
    }
    finish(server).await;
}
}

async fn history_pages(link: &Link, limit: u32) -> Vec<Vec<micropay::wire::HistoryEntry>> {
    let mut pages = Vec::new();
    let mut before_seq = None;
    loop {
        let page: History = link
            .call(&ServerRequest::History {
                limit: Some(limit),
                before_seq,
            })
            .await
            .expect("history");
        assert!(page.entries.len() <= limit as usize);
        let next = page.next_before_seq;
        let empty = page.entries.is_empty();
        if let Some(next) = next {
            assert_eq!(Some(next), page.entries.last().map(|e| e.seq));
        }
        if !empty {
            pages.push(page.entries);
        }
        match next {
            Some(n) => before_seq = Some(n),
            None => break,
        }
        assert!(pages.len() < 100, "pagination does not end");
    }
    pages
}

backend_test! {
async fn history_is_newest_first_and_paginates(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let carol = party(&server, "carol").await;
    // alice's payments in settlement order: (seq, payer, payee, amount, memo).
    let mut expected = Vec::new();
    for i in 0..11u64 {
        let (payer, payee_name, submitter) = match i % 3 {
            0 => (&alice, "bob", &bob),
            1 => (&bob, "alice", &alice),
            _ => (&alice, "carol", &alice),
        };
        let mut p = payment(payer.person.name.as_str(), payee_name, 10 + i);
        p.memo = format!("n{i}");
        let signed = p.sign(&payer.person.key);
        let settled = settle(&submitter.link, &signed).await.expect("settles");
        expected.push((settled.receipt.seq, signed));
        // A payment between others is not in alice's history.
        let other = pay(&bob.person, "carol", 1);
        settle(&carol.link, &other).await.expect("settles");
    }
    expected.reverse();
    for limit in [1u32, 3, 4, 11, 20] {
        let pages = history_pages(&alice.link, limit).await;
        for page in &pages[..pages.len() - 1] {
            assert_eq!(page.len(), limit as usize);
        }
        let all: Vec<_> = pages.into_iter().flatten().collect();
        assert_eq!(all.len(), expected.len(), "limit {limit}");
        for (entry, (seq, signed)) in all.iter().zip(&expected) {
            assert_eq!(entry.seq, *seq);
            assert_eq!(entry.payment_id, signed.payment.id.to_hex());
            assert_eq!(entry.payer, signed.payment.payer.as_str());
            assert_eq!(entry.payee, signed.payment.payee.as_str());
            assert_eq!(entry.amount, signed.payment.amount_minor);
            assert_eq!(entry.memo, signed.payment.memo);
        }
        assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    }
    // The default page is 20: everything here fits, so no next page.
    let page: History = alice
        .link
        .call(&ServerRequest::History {
            limit: None,
            before_seq: None,
        })
        .await
        .expect("history");
    assert_eq!(page.entries.len(), expected.len());
    assert_eq!(page.next_before_seq, None);
    // before_seq below the oldest: empty.
    let oldest = expected.last().map(|e| e.0).expect("some");
    let page: History = alice
        .link
        .call(&ServerRequest::History {
            limit: Some(5),
            before_seq: Some(oldest),
        })
        .await
        .expect("history");
    assert!(page.entries.is_empty());
    assert_eq!(page.next_before_seq, None);
    // Someone with no payments has an empty history.
    let dave = party(&server, "dave").await;
    let pages = history_pages(&dave.link, 5).await;
    assert!(pages.is_empty());
    finish(server).await;
}
}

backend_test! {
async fn malformed_payments_are_bad_requests(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    // Amount 0, even when properly signed.
    let zero = pay(&alice.person, "bob", 0);
    assert_eq!(code(settle(&bob.link, &zero).await), ErrorCode::BadRequest);
    // A memo one byte over the limit, ASCII and multi-byte.
    let mut p = payment("alice", "bob", 5);
    p.memo = "m".repeat(MEMO_BYTES_MAX + 1);
    let long = p.sign(&alice.person.key);
    assert_eq!(code(settle(&bob.link, &long).await), ErrorCode::BadRequest);
    let mut p = payment("alice", "bob", 5);
    p.memo = "é".repeat(MEMO_BYTES_MAX / 2 + 1);
    let long = p.sign(&alice.person.key);
    assert_eq!(code(settle(&bob.link, &long).await), ErrorCode::BadRequest);
    // Malformed ids and names.
    let good = pay(&alice.person, "bob", 5);
    for mutate in [
        |j: &mut PaymentJson| j.id = "not-hex".into(),
        |j: &mut PaymentJson| j.id.push_str("00"),
        |j: &mut PaymentJson| j.payer = "Alice".into(),
        |j: &mut PaymentJson| j.payee = "".into(),
        |j: &mut PaymentJson| j.payee = "b".repeat(40),
    ] {
        let mut json = PaymentJson::from(&good);
        mutate(&mut json);
        assert_eq!(
            code(settle_json(&bob.link, json.clone()).await),
            ErrorCode::BadRequest,
            "{json:?}"
        );
    }
    assert_eq!(balances(&[&alice, &bob]).await, vec![GRANT; 2]);
    // Exactly at the memo limit is fine, in bytes, not characters.
    let mut p = payment("alice", "bob", 5);
    p.memo = "é".repeat(MEMO_BYTES_MAX / 2);
    assert_eq!(p.memo.len(), MEMO_BYTES_MAX);
    let at_limit = p.sign(&alice.person.key);
    settle(&bob.link, &at_limit)
        .await
        .expect("memo at the limit");
    assert_eq!(balances(&[&alice, &bob]).await, vec![GRANT - 5, GRANT + 5]);
    let report = finish(server).await;
    assert_eq!(report.payments, 1);
}
}

backend_test! {
/// A full history page of maximal memos (control characters, which JSON
/// escapes to six bytes each) is far longer than a request line may be;
/// the client must still read it.
async fn a_full_history_page_of_long_memos_is_readable(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let memo = "\u{1}".repeat(micropay::core::limits::MEMO_BYTES_MAX);
    for _ in 0..40 {
        let mut p = payment("alice", "bob", 1);
        p.memo = memo.clone();
        settle(&alice.link, &p.sign(&alice.person.key))
            .await
            .expect("settles");
    }
    let page: History = bob
        .link
        .call(&ServerRequest::History {
            limit: Some(40),
            before_seq: None,
        })
        .await
        .expect("a long reply is read whole");
    assert_eq!(page.entries.len(), 40);
    assert!(page.entries.iter().all(|e| e.memo == memo));
    finish(server).await;
}
}

backend_test! {
/// Issue 11, item 4: paging is exact and out-of-range values are refused,
/// never clamped silently.
async fn history_paging_is_exact_at_every_size(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    // 510 payments: more than the largest page.
    let mut pending = Vec::new();
    for _ in 0..510 {
        let signed = pay(&alice.person, "bob", 1);
        let request = ServerRequest::Settle {
            payment: PaymentJson::from(&signed),
        };
        pending.push(alice.link.send(&request).await.expect("send"));
    }
    for p in pending {
        assert!(p.await.expect("reply").ok);
    }
    let link = &bob.link;
    let page = |limit, before_seq| async move {
        let request = ServerRequest::History { limit, before_seq };
        link.call::<History>(&request).await
    };
    let full = page(Some(500), None).await.expect("history");
    assert_eq!(full.entries.len(), 500);
    assert_eq!(full.next_before_seq, full.entries.last().map(|e| e.seq));
    let rest = page(Some(500), full.next_before_seq)
        .await
        .expect("history");
    assert_eq!(rest.entries.len(), 10);
    assert_eq!(rest.next_before_seq, None, "nothing older remains");
    let exact = page(Some(10), full.next_before_seq).await.expect("history");
    assert_eq!(exact.next_before_seq, None, "a page that ends exactly");
    for bad in [Some(0), Some(501), Some(1000)] {
        assert_eq!(
            code(page(bad, None).await),
            ErrorCode::BadRequest,
            "{bad:?}"
        );
    }
    assert_eq!(code(page(None, Some(0)).await), ErrorCode::BadRequest);
    finish(server).await;
}
}

backend_test! {
/// Issue 11, item 1: every refusal the rules decide about a verified
/// payment is final and recorded; replaying the same payment later gets
/// the same refusal, even once it would otherwise settle.
async fn refusals_of_verified_payments_are_final_and_recorded(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    // Too far ahead now; a few seconds later it would be within bounds.
    let mut far = payment("alice", "bob", 5);
    far.expires_at_s = now_s() + PAYMENT_LIFETIME_MAX_S + 2;
    let far = far.sign(&alice.person.key);
    assert_eq!(code(settle(&bob.link, &far).await), ErrorCode::BadRequest);
    tokio::time::sleep(std::time::Duration::from_millis(3_100)).await;
    assert_eq!(code(settle(&bob.link, &far).await), ErrorCode::BadRequest);
    match status(&alice.link, &far.payment.id).await.expect("status") {
        PaymentStatus::Rejected { error } => assert_eq!(error.code, ErrorCode::BadRequest),
        other => panic!("expected rejected, got {other:?}"),
    }
    assert_eq!(balances(&[&alice, &bob]).await, vec![GRANT, GRANT]);
    let report = finish(server).await;
    assert_eq!(report.rejections, 1);
}
}

backend_test! {
/// Issue 10, item 15: payment ids are scoped to their payer, so mallory
/// reusing alice's id (even before alice's payment arrives) changes
/// nothing for alice.
async fn another_payer_cannot_take_a_payment_id(backend) {
    let server = common::start_server_on(&backend).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let mallory = party(&server, "mallory").await;
    let alices = pay(&alice.person, "bob", 100);
    let mut copy = payment("mallory", "bob", 1);
    copy.id = alices.payment.id;
    let copy = copy.sign(&mallory.person.key);
    settle(&bob.link, &copy).await.expect("mallory's own payment settles");
    let receipt = settle(&bob.link, &alices).await.expect("alice's settles too");
    assert_eq!(receipt.receipt.amount, 100);
    match status(&alice.link, &alices.payment.id).await.expect("status") {
        PaymentStatus::Settled { receipt, .. } => assert_eq!(receipt.payer, "alice"),
        other => panic!("expected settled, got {other:?}"),
    }
    assert_eq!(
        balances(&[&alice, &bob, &mallory]).await,
        vec![GRANT - 100, GRANT + 101, GRANT - 1]
    );
    finish(server).await;
}
}

backend_test! {
/// Issue 10, item 11: one payer can make the ledger record at most
/// `--refusals-per-minute` refusals a minute. Past the budget its payments
/// get `busy` and nothing is decided or stored (status `not_found`, a
/// valid payment does not settle either); other payers are untouched; the
/// refusals already recorded replay as before once the minute ends (the
/// window itself is unit-tested in `core::refusal_budget`).
async fn refusals_one_payer_can_have_recorded_are_budgeted(backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, pg) = backend.fresh_db(dir.path()).await;
    let pki = common::pki();
    let mut options = common::server_options(&pki, db.clone(), Default::default());
    options.refusals_per_minute = 3;
    let server = common::start_server_at(pki, db, dir, pg.map(std::sync::Arc::new), options).await;
    let alice = party(&server, "alice").await;
    let bob = party(&server, "bob").await;
    let carol = party(&server, "carol").await;
    for _ in 0..3 {
        let too_much = pay(&alice.person, "bob", GRANT + 1);
        assert_eq!(code(settle(&bob.link, &too_much).await), ErrorCode::InsufficientFunds);
    }
    let fourth = pay(&alice.person, "bob", GRANT + 1);
    assert_eq!(code(settle(&bob.link, &fourth).await), ErrorCode::Busy);
    assert_eq!(code(status(&alice.link, &fourth.payment.id).await), ErrorCode::NotFound);
    let fine = pay(&alice.person, "bob", 1);
    assert_eq!(code(settle(&bob.link, &fine).await), ErrorCode::Busy);
    // Another payer is not held up by alice's refusals.
    settle(&bob.link, &pay(&carol.person, "bob", 7)).await.expect("carol pays");
    assert_eq!(balances(&[&alice, &bob, &carol]).await, vec![GRANT, GRANT + 7, GRANT - 7]);
    let report = finish(server).await;
    assert_eq!(report.rejections, 3);
}
}
