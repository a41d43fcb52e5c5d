//! PostgreSQL faults under load (issue 12): the database crash-restarts
//! (`pg_ctl restart -m immediate`) while people are paying. Runs only under
//! `scripts/with-postgres.sh`, which sets `MICROPAY_TEST_PG` and
//! `MICROPAY_TEST_PG_RESTART`; alone in its test binary, because it
//! restarts the cluster every other PostgreSQL test shares.
//!
//! What must hold: while the database is away settlements are answered
//! `unavailable` or `busy` (never `internal`, never a receipt that was not
//! committed); the server reconnects by itself; retrying each payment with
//! its own id settles it exactly once; every receipt a payer got is in the
//! ledger; money is conserved and the audit is clean.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, GRANT};
use micropay::core::name::Name;
use micropay::core::payment::{Payment, PaymentId, SignedPayment};
use micropay::net::link::{CallError, Link};
use micropay::person::Person;
use micropay::system::clock::now_s;
use micropay::wire::{ErrorCode, PaymentJson, Registered, ServerRequest, Settled};

/// Payers, each paying `PAYMENTS` times one unit to the payee.
const PAYERS: usize = 4;
const PAYMENTS: u64 = 40;
/// How long one payment may keep being retried across the outage.
const RETRY_FOR: Duration = Duration::from_secs(90);

async fn register(link: &Link) {
    let r: Registered = link
        .call(&ServerRequest::Register {})
        .await
        .expect("register");
    assert_eq!(r.balance, GRANT);
}

fn signed(payer: &Person, payee: &Name) -> SignedPayment {
    Payment {
        id: PaymentId::random(),
        payer: payer.name.clone(),
        payee: payee.clone(),
        amount_minor: 1,
        expires_at_s: now_s() + 300,
        memo: String::new(),
    }
    .sign(&payer.key)
}

/// Submits `payment` until it settles, reconnecting when the connection
/// goes; returns the receipt's seq and every error code seen on the way.
async fn settle_until_done(
    person: &Person,
    addr: &str,
    payment: &SignedPayment,
    seen: &mut BTreeMap<String, u64>,
) -> u64 {
    let started = Instant::now();
    let mut link: Option<Link> = None;
    loop {
        assert!(
            started.elapsed() < RETRY_FOR,
            "not settled in time; seen {seen:?}"
        );
        if link.is_none() {
            link = person.connect_server(addr).await.ok();
        }
        let Some(l) = &link else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let request = ServerRequest::Settle {
            payment: PaymentJson::from(payment),
        };
        match l.call::<Settled>(&request).await {
            Ok(settled) => return settled.receipt.seq,
            Err(CallError::Refused(w)) => {
                *seen.entry(w.code.as_str().to_owned()).or_default() += 1;
                assert!(
                    matches!(w.code, ErrorCode::Unavailable | ErrorCode::Busy),
                    "a database outage must read as unavailable or busy, got {w:?}"
                );
            }
            Err(e) => {
                *seen
                    .entry(format!("{e:?}").chars().take(24).collect())
                    .or_default() += 1;
                link = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_restart_under_load_loses_and_duplicates_nothing() {
    let (Some(admin_url), Ok(restart)) = (
        common::backend::postgres_admin_url(),
        std::env::var("MICROPAY_TEST_PG_RESTART"),
    ) else {
        eprintln!("*** MICROPAY_TEST_PG(_RESTART) not set: the PostgreSQL fault test did NOT run");
        return;
    };
    let server = common::start_server_on(&Backend::Postgres { admin_url }).await;
    let addr = server.addr_string();
    let payee = common::person(&server.pki, "payee");
    let payee_link = common::link(&payee, &server).await;
    register(&payee_link).await;
    let mut payers = Vec::new();
    for i in 0..PAYERS {
        let p = common::person(&server.pki, &format!("payer{i}"));
        register(&common::link(&p, &server).await).await;
        payers.push(Arc::new(p));
    }
    let tasks: Vec<_> = payers
        .iter()
        .map(|p| {
            let (p, addr, payee) = (p.clone(), addr.clone(), payee.name.clone());
            tokio::spawn(async move {
                let mut seen = BTreeMap::new();
                let mut seqs = Vec::new();
                for _ in 0..PAYMENTS {
                    let payment = signed(&p, &payee);
                    seqs.push(settle_until_done(&p, &addr, &payment, &mut seen).await);
                }
                (seqs, seen)
            })
        })
        .collect();
    // Let the load run, then crash-restart the database under it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&restart)
            .output()
    })
    .await
    .expect("join")
    .expect("run pg_ctl");
    assert!(
        restarted.status.success(),
        "pg_ctl restart: {}\n{}",
        restarted.status,
        String::from_utf8_lossy(&restarted.stderr)
    );

    let mut all_seqs = Vec::new();
    let mut seen_all: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        let (seqs, seen) = t.await.expect("payer task");
        all_seqs.extend(seqs);
        for (k, v) in seen {
            *seen_all.entry(k).or_default() += v;
        }
    }
    eprintln!("errors seen across the restart: {seen_all:?}");
    let total = PAYERS as u64 * PAYMENTS;
    all_seqs.sort_unstable();
    all_seqs.dedup();
    assert_eq!(
        all_seqs.len() as u64,
        total,
        "every payment has its own seq"
    );
    let payee_link = common::link(&payee, &server).await;
    assert_eq!(common::balance(&payee_link).await, GRANT + total);
    let report = common::shutdown_and_audit(server).await;
    assert_eq!(report.payments, total, "exactly the acknowledged payments");
    assert_eq!(report.total_balances, report.total_granted);
}
