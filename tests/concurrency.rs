//! Many people paying each other at random, all at once, pipelined, for a
//! bounded number of payments and a bounded time; then money is conserved
//! exactly, every balance agrees with the receipts the clients received,
//! and the audit of the ledger is clean.
//!
//! The random choices come from a seed printed at the start; set
//! `MICROPAY_TEST_SEED` to replay a run.

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{link, person, TestServer};
use micropay::core::payment::{Payment, PaymentId, Receipt, SignedPayment};
use micropay::net::link::{CallError, Link};
use micropay::person::Person;
use micropay::system::clock::now_s;
use micropay::wire::{Balance, ErrorCode, PaymentJson, Registered, ServerRequest, Settled};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use common::GRANT;

/// SplitMix64: small, fast, good enough to pick payers and amounts.
use common::Rng;

fn seed() -> u64 {
    let seed = match std::env::var("MICROPAY_TEST_SEED") {
        Ok(s) => s.parse().expect("MICROPAY_TEST_SEED is a u64"),
        Err(_) => {
            let bytes = PaymentId::random().0;
            u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
        }
    };
    eprintln!("seed {seed} (MICROPAY_TEST_SEED={seed} replays this run)");
    seed
}

struct Party {
    person: Person,
    link: Link,
}

async fn parties(server: &TestServer, n: usize) -> Arc<Vec<Party>> {
    let mut out = Vec::new();
    for i in 0..n {
        let person = person(&server.pki, &format!("p{i}"));
        let link = link(&person, server).await;
        let registered: Registered = link
            .call(&ServerRequest::Register {})
            .await
            .expect("register");
        assert_eq!(registered.balance, GRANT);
        out.push(Party { person, link });
    }
    Arc::new(out)
}

fn sign(payer: &Person, payee: &Person, amount: u64) -> SignedPayment {
    Payment {
        id: PaymentId::random(),
        payer: payer.name.clone(),
        payee: payee.name.clone(),
        amount_minor: amount,
        expires_at_s: now_s() + 300,
        memo: String::new(),
    }
    .sign(&payer.key)
}

/// One submission and what came back.
struct Submission {
    payment: SignedPayment,
    outcome: Result<Settled, ErrorCode>,
}

async fn submit(link: &Link, payment: SignedPayment) -> Submission {
    let result = link
        .call::<Settled>(&ServerRequest::Settle {
            payment: PaymentJson::from(&payment),
        })
        .await;
    let outcome = match result {
        Ok(settled) => Ok(settled),
        Err(CallError::Refused(e)) => Err(e.code),
        Err(e) => panic!("settle failed outside the protocol: {e}"),
    };
    Submission { payment, outcome }
}

/// What the clients learnt, checked for consistency: per payment id, the
/// one receipt (all submissions of a settled payment got the same one) or
/// the one refusal.
struct Learnt {
    receipts: BTreeMap<PaymentId, (SignedPayment, Receipt)>,
    refused: BTreeMap<PaymentId, ErrorCode>,
}

fn reconcile(
    submissions: &[Submission],
    server_key: &micropay::core::keys::VerifyingKey,
) -> Learnt {
    let mut receipts: BTreeMap<PaymentId, (SignedPayment, Receipt)> = BTreeMap::new();
    let mut refused: BTreeMap<PaymentId, ErrorCode> = BTreeMap::new();
    for s in submissions {
        let id = s.payment.payment.id;
        match &s.outcome {
            Ok(settled) => {
                let (receipt, _) = common::check_reply(
                    server_key,
                    &settled.receipt,
                    settled.log.as_ref(),
                    &s.payment,
                );
                assert!(receipt.matches(&s.payment), "receipt is for this payment");
                assert!(!refused.contains_key(&id), "{id} both settled and refused");
                if let Some((_, earlier)) = receipts.get(&id) {
                    assert_eq!(earlier, &receipt, "{id}: replays get the original receipt");
                } else {
                    receipts.insert(id, (s.payment.clone(), receipt));
                }
            }
            Err(code) => {
                assert!(!receipts.contains_key(&id), "{id} both settled and refused");
                if let Some(earlier) = refused.get(&id) {
                    assert_eq!(earlier, code, "{id}: replays get the original refusal");
                } else {
                    refused.insert(id, *code);
                }
            }
        }
    }
    // Distinct payments have distinct, gapless sequence numbers.
    let seqs: BTreeSet<u64> = receipts.values().map(|(_, r)| r.seq).collect();
    assert_eq!(seqs.len(), receipts.len(), "two payments share a seq");
    if let (Some(first), Some(last)) = (seqs.first(), seqs.last()) {
        assert_eq!(*first, 1);
        assert_eq!(*last as usize, seqs.len(), "seq numbers have gaps");
    }
    Learnt { receipts, refused }
}

/// Balances implied by the receipts: grant + received − sent.
fn implied_balances(people: &[Party], learnt: &Learnt) -> HashMap<String, i128> {
    let mut balances: HashMap<String, i128> = people
        .iter()
        .map(|p| (p.person.name.to_string(), i128::from(GRANT)))
        .collect();
    for (payment, _) in learnt.receipts.values() {
        let p = &payment.payment;
        *balances.get_mut(p.payer.as_str()).expect("payer") -= i128::from(p.amount_minor);
        *balances.get_mut(p.payee.as_str()).expect("payee") += i128::from(p.amount_minor);
    }
    balances
}

async fn check_balances(people: &[Party], learnt: &Learnt) {
    let implied = implied_balances(people, learnt);
    let mut total = 0u128;
    for p in people {
        let b: Balance = p
            .link
            .call(&ServerRequest::Balance {})
            .await
            .expect("balance");
        total += u128::from(b.balance);
        assert_eq!(
            i128::from(b.balance),
            implied[p.person.name.as_str()],
            "{}: server balance vs. receipts",
            p.person.name
        );
    }
    assert_eq!(
        total,
        u128::from(GRANT) * people.len() as u128,
        "money is conserved"
    );
}

async fn finish(server: TestServer, receipts: usize) {
    let report = common::shutdown_and_audit(server).await;
    assert_eq!(
        report.payments as usize, receipts,
        "ledger payments vs. receipts received"
    );
}

backend_test! {
async fn random_payments_between_many_people_conserve_money(backend) {
    const PEOPLE: usize = 8;
    const PAYMENTS_MAX: usize = 20_000;
    const WINDOW: usize = 32;
    let time_limit = Duration::from_secs(8);

    let server = common::start_server_on(&backend).await;
    let people = parties(&server, PEOPLE).await;
    let server_key = people[0].link.peer_key().expect("server key");
    let base_seed = seed();
    let issued = Arc::new(AtomicUsize::new(0));
    let submissions = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let deadline = started + time_limit;

    let mut workers = JoinSet::new();
    for me in 0..PEOPLE {
        let (people, issued, submissions) = (people.clone(), issued.clone(), submissions.clone());
        workers.spawn(async move {
            let mut rng = Rng(base_seed ^ (me as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
            let window = Arc::new(Semaphore::new(WINDOW));
            let mut in_flight = JoinSet::new();
            let mut sent: Vec<SignedPayment> = Vec::new();
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < PAYMENTS_MAX
            {
                let payment = if !sent.is_empty() && rng.chance(5) {
                    // A replay of something already sent.
                    sent[rng.range(0, sent.len() as u64 - 1) as usize].clone()
                } else {
                    let mut payee = rng.range(0, PEOPLE as u64 - 2) as usize;
                    if payee >= me {
                        payee += 1;
                    }
                    let amount = match rng.next() % 100 {
                        0 => rng.range(GRANT * PEOPLE as u64, u64::MAX),
                        1..=9 => rng.range(GRANT / 2, GRANT * 2),
                        _ => rng.range(1, 500),
                    };
                    let p = sign(&people[me].person, &people[payee].person, amount);
                    sent.push(p.clone());
                    p
                };
                // Half the time the payer submits, half the time the payee
                // forwards it, as after a peer-to-peer hand-over.
                let submitter = if rng.chance(50) {
                    me
                } else {
                    people
                        .iter()
                        .position(|p| p.person.name == payment.payment.payee)
                        .expect("payee is one of us")
                };
                let permit = window.clone().acquire_owned().await.expect("window");
                let (people, submissions) = (people.clone(), submissions.clone());
                in_flight.spawn(async move {
                    let s = submit(&people[submitter].link, payment).await;
                    submissions.lock().expect("lock").push(s);
                    drop(permit);
                });
                while in_flight.try_join_next().is_some() {}
            }
            while let Some(done) = in_flight.join_next().await {
                done.expect("submission task");
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("worker");
    }
    let elapsed = started.elapsed();
    let submissions = std::mem::take(&mut *submissions.lock().expect("lock"));
    let learnt = reconcile(&submissions, &server_key);
    eprintln!(
        "{} submissions in {:.2?} ({:.0}/s): {} settled, {} refused",
        submissions.len(),
        elapsed,
        submissions.len() as f64 / elapsed.as_secs_f64(),
        learnt.receipts.len(),
        learnt.refused.len()
    );
    assert!(
        submissions.len() >= 100,
        "too few payments to mean anything"
    );
    assert!(!learnt.receipts.is_empty());
    assert!(
        !learnt.refused.is_empty(),
        "some payments exceed any balance"
    );
    for code in learnt.refused.values() {
        assert_eq!(*code, ErrorCode::InsufficientFunds);
    }
    check_balances(&people, &learnt).await;
    let receipts = learnt.receipts.len();
    drop(people);
    finish(server, receipts).await;
}
}

backend_test! {
async fn a_contended_payer_never_overdraws(backend) {
    // One payer signs payments worth twice its balance; all of them are
    // submitted at once by the payer and by each payee, several times.
    const PEOPLE: usize = 6;
    const AMOUNT: u64 = 50;
    const PAYMENTS: u64 = 2 * GRANT / AMOUNT;
    let server = common::start_server_on(&backend).await;
    let people = parties(&server, PEOPLE).await;
    let server_key = people[0].link.peer_key().expect("server key");
    let mut rng = Rng(seed());
    let mut waiting = Vec::new();
    for _ in 0..PAYMENTS {
        let payee = rng.range(1, PEOPLE as u64 - 1) as usize;
        let payment = sign(&people[0].person, &people[payee].person, AMOUNT);
        for submitter in [0, payee, payee] {
            let rx = people[submitter]
                .link
                .send(&ServerRequest::Settle {
                    payment: PaymentJson::from(&payment),
                })
                .await
                .expect("sent");
            waiting.push((payment.clone(), rx));
        }
    }
    let mut submissions = Vec::new();
    for (payment, rx) in waiting {
        let reply = rx.await.expect("reply");
        let outcome = reply
            .into_result::<Settled>()

            .map_err(|e| e.code);
        submissions.push(Submission { payment, outcome });
    }
    let learnt = reconcile(&submissions, &server_key);
    // Exactly the balance's worth settles; the rest is refused.
    assert_eq!(learnt.receipts.len() as u64, GRANT / AMOUNT);
    assert_eq!(learnt.refused.len() as u64, PAYMENTS - GRANT / AMOUNT);
    for code in learnt.refused.values() {
        assert_eq!(*code, ErrorCode::InsufficientFunds);
    }
    let b: Balance = people[0]
        .link
        .call(&ServerRequest::Balance {})
        .await
        .expect("balance");
    assert_eq!(b.balance, 0);
    check_balances(&people, &learnt).await;
    let receipts = learnt.receipts.len();
    drop(people);
    finish(server, receipts).await;
}
}
