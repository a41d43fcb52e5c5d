//! Durability. Restart: a new server on the same ledger file sees every
//! balance, every history entry and every outcome of the old one. Crash:
//! the real `micropay-server` binary is killed with SIGKILL in the middle
//! of a stream of settlements, several times; after each restart every
//! settlement whose receipt a client received is present, nothing was
//! applied twice, money is conserved and the audit is clean.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{person_from, pki, server_options, TestServer};
use micropay::certs::CertifiedPem;
use micropay::core::keys::VerifyingKey;
use micropay::core::name::Name;
use micropay::core::payment::{Payment, PaymentId, SignedPayment};
use micropay::ledger::DbLocation;
use micropay::net::link::{CallError, Link};
use micropay::person::Person;
use micropay::server::ServerLimits;
use micropay::system::clock::now_s;
use micropay::wire::{
    Balance, ErrorCode, History, HistoryEntry, PaymentJson, PaymentStatus, ReceiptJson, Registered,
    ServerRequest, Settled,
};

use common::GRANT;

fn sign(payer: &Person, payee: &Name, amount: u64) -> SignedPayment {
    Payment {
        id: PaymentId::random(),
        payer: payer.name.clone(),
        payee: payee.clone(),
        amount_minor: amount,
        expires_at_s: now_s() + 600,
        memo: format!("{amount} from {}", payer.name),
    }
    .sign(&payer.key)
}

async fn settle(link: &Link, signed: &SignedPayment) -> Result<Settled, CallError> {
    link.call::<Settled>(&ServerRequest::Settle {
        payment: PaymentJson::from(signed),
    })
    .await
}

async fn balance(link: &Link) -> u64 {
    common::balance(link).await
}

async fn full_history(link: &Link) -> Vec<HistoryEntry> {
    let mut all = Vec::new();
    let mut before_seq = None;
    loop {
        let page: History = link
            .call(&ServerRequest::History {
                limit: Some(7),
                before_seq,
            })
            .await
            .expect("history");
        all.extend(page.entries);
        match page.next_before_seq {
            Some(n) => before_seq = Some(n),
            None => return all,
        }
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, CallError>) -> ErrorCode {
    match result {
        Err(CallError::Refused(e)) => e.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Statuses of many payments at once, pipelined.
async fn statuses(link: &Link, ids: &[PaymentId]) -> Vec<Result<PaymentStatus, ErrorCode>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(128) {
        let mut waiting = Vec::new();
        for id in chunk {
            let request = ServerRequest::Status {
                payment_id: id.to_hex(),
            };
            waiting.push(link.send(&request).await.expect("sent"));
        }
        for rx in waiting {
            let reply = rx.await.expect("reply");
            out.push(reply.into_result::<PaymentStatus>().map_err(|e| e.code));
        }
    }
    out
}

async fn audit_clean(db: &DbLocation) -> micropay::ledger::AuditReport {
    let report = common::audit(db).await;
    assert!(
        report.violations.is_empty(),
        "audit: {:?}",
        report.violations
    );
    assert_eq!(report.total_balances, report.total_granted);
    report
}

// ---------------------------------------------------------------- restart

/// What the clients saw before a restart, to compare after it.
struct Seen {
    balances: BTreeMap<String, u64>,
    histories: BTreeMap<String, Vec<HistoryEntry>>,
    settled: Vec<(SignedPayment, ReceiptJson)>,
    refused: Vec<(SignedPayment, ErrorCode)>,
}

async fn snapshot(people: &[Person], links: &[Link], seen: &mut Seen) {
    for (p, l) in people.iter().zip(links) {
        seen.balances.insert(p.name.to_string(), balance(l).await);
        seen.histories
            .insert(p.name.to_string(), full_history(l).await);
    }
}

/// Everything seen before must still be there, exactly.
async fn check_seen(people: &[Person], links: &[Link], seen: &Seen) {
    for (p, l) in people.iter().zip(links) {
        assert_eq!(
            Some(&balance(l).await),
            seen.balances.get(p.name.as_str()),
            "{}'s balance survives",
            p.name
        );
        assert_eq!(
            Some(&full_history(l).await),
            seen.histories.get(p.name.as_str()),
            "{}'s history survives",
            p.name
        );
        assert_eq!(
            code(l.call::<Registered>(&ServerRequest::Register {}).await),
            ErrorCode::AlreadyRegistered
        );
    }
    let server_key = links[0].peer_key().expect("server key");
    for (signed, receipt) in &seen.settled {
        let payee = people
            .iter()
            .position(|p| p.name == signed.payment.payee)
            .expect("payee");
        // The status gives the very same signed receipt...
        match links[payee]
            .call::<PaymentStatus>(&ServerRequest::Status {
                payment_id: signed.payment.id.to_hex(),
            })
            .await
            .expect("status")
        {
            PaymentStatus::Settled { receipt: again, .. } => assert_eq!(&again, receipt),
            other => panic!("expected settled, got {other:?}"),
        }
        // ...and so does a replay, which moves nothing.
        let again = settle(&links[payee], signed).await.expect("replay");
        assert_eq!(&again.receipt, receipt);
        common::check_reply(&server_key, &again.receipt, again.log.as_ref(), signed);
    }
    for (signed, refusal) in &seen.refused {
        let payee = people
            .iter()
            .position(|p| p.name == signed.payment.payee)
            .expect("payee");
        assert_eq!(code(settle(&links[payee], signed).await), *refusal);
    }
    for (p, l) in people.iter().zip(links) {
        assert_eq!(
            Some(&balance(l).await),
            seen.balances.get(p.name.as_str()),
            "replays moved nothing"
        );
    }
}

backend_test! {
async fn balances_history_and_outcomes_survive_restarts(backend) {
    let pki = pki();
    let first = common::start_server_on_with(&backend, pki.clone(), ServerLimits::default()).await;
    let TestServer {
        running, db, dir, pg, ..
    } = first;
    let pems: Vec<CertifiedPem> = ["alice", "bob", "carol"]
        .iter()
        .map(|n| pki.person(n).expect("cert"))
        .collect();
    let people: Vec<Person> = pems.iter().map(|pem| person_from(&pki, pem)).collect();
    let mut seen = Seen {
        balances: BTreeMap::new(),
        histories: BTreeMap::new(),
        settled: Vec::new(),
        refused: Vec::new(),
    };
    let mut running = Some(running);
    for generation in 0..3u64 {
        let server = match running.take() {
            Some(server) => server,
            None => micropay::server::spawn(
                "127.0.0.1:0".parse().expect("addr"),
                server_options(&pki, db.clone(), ServerLimits::default()),
            )
            .await
            .expect("restarts on the same ledger"),
        };
        let addr = server.addr.to_string();
        let mut links = Vec::new();
        for p in &people {
            links.push(p.connect_server(&addr).await.expect("connects"));
        }
        if generation == 0 {
            for l in &links {
                let r: Registered = l.call(&ServerRequest::Register {}).await.expect("register");
                assert_eq!(r.balance, GRANT);
            }
        } else {
            check_seen(&people, &links, &seen).await;
        }
        // New payments in every generation, continuing the sequence.
        let last_seq = seen.settled.iter().map(|(_, r)| r.seq).max().unwrap_or(0);
        for i in 0..12u64 {
            let payer = ((i + generation) % 3) as usize;
            let payee = (payer + 1 + (i % 2) as usize) % 3;
            let signed = sign(
                &people[payer],
                &people[payee].name,
                10 * (i + 1) + generation,
            );
            let settled = settle(&links[payee], &signed).await.expect("settles");
            assert_eq!(settled.receipt.seq, last_seq + i + 1, "seq continues");
            seen.settled.push((signed, settled.receipt));
        }
        let too_much = sign(&people[0], &people[1].name, 3 * GRANT + 1);
        assert_eq!(
            code(settle(&links[1], &too_much).await),
            ErrorCode::InsufficientFunds
        );
        seen.refused.push((too_much, ErrorCode::InsufficientFunds));
        snapshot(&people, &links, &mut seen).await;
        let total: u64 = seen.balances.values().sum();
        assert_eq!(total, 3 * GRANT);
        server.shutdown().await.expect("clean shutdown");
        // A link to the stopped server fails at once instead of hanging.
        let started = Instant::now();
        let stale = links[0].call::<Balance>(&ServerRequest::Balance {}).await;
        assert!(stale.is_err(), "the old server is gone");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a call on a closed link took {:?}",
            started.elapsed()
        );
        let report = audit_clean(&db).await;
        assert_eq!(report.payments as usize, seen.settled.len());
        assert_eq!(report.rejections as usize, seen.refused.len());
        assert_eq!(report.accounts, 3);
    }
    // A certificate with a new key for a registered name is still refused.
    let server = micropay::server::spawn(
        "127.0.0.1:0".parse().expect("addr"),
        server_options(&pki, db.clone(), ServerLimits::default()),
    )
    .await
    .expect("restarts");
    let other_alice = person_from(&pki, &pki.person("alice").expect("cert"));
    let l = other_alice
        .connect_server(&server.addr.to_string())
        .await
        .expect("connects");
    assert_eq!(
        code(l.call::<Balance>(&ServerRequest::Balance {}).await),
        ErrorCode::KeyMismatch
    );
    drop(l);
    server.shutdown().await.expect("clean shutdown");
    audit_clean(&db).await;
    drop((dir, pg));
}
}

// ------------------------------------------------------------------ crash

/// The real server binary; killed when dropped, so a failing test leaves
/// no process behind.
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

struct Files {
    certs: PathBuf,
    db: PathBuf,
    ready: PathBuf,
    log: PathBuf,
}

async fn start_binary(files: &Files) -> ServerProcess {
    let _ = std::fs::remove_file(&files.ready);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&files.log)
        .expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_micropay-server"))
        .arg("--cert")
        .arg(files.certs.join("server.pem"))
        .arg("--key")
        .arg(files.certs.join("server.key"))
        .arg("--ca")
        .arg(files.certs.join("ca.pem"))
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--db")
        .arg(&files.db)
        .arg("--ready-file")
        .arg(&files.ready)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("micropay-server starts");
    let mut process = ServerProcess {
        child,
        addr: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(&files.ready) {
            let addr = text.trim();
            if !addr.is_empty() {
                process.addr = addr.to_owned();
                return process;
            }
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            let log = std::fs::read_to_string(&files.log).unwrap_or_default();
            panic!("micropay-server exited with {status} before it was ready:\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "micropay-server never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a client knows about each payment it submitted.
#[derive(Debug, Clone)]
enum Known {
    Receipt(ReceiptJson),
    Refused(ErrorCode),
    /// No answer: the server died first.
    Unknown,
}

/// Streams payments from `payer` to `payee` through `submitter`'s link,
/// pipelined, until the connection dies or a bound is reached.
async fn stream(
    link: Arc<Link>,
    payer: Arc<Person>,
    payee: Name,
    count_max: usize,
    deadline: Instant,
) -> Vec<(SignedPayment, Known)> {
    const WINDOW: usize = 16;
    let mut results = Vec::new();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut alive = true;
    let mut issued = 0;
    while alive && issued < count_max && Instant::now() < deadline {
        while in_flight.len() >= WINDOW {
            let (signed, known) = in_flight.join_next().await.expect("some").expect("task");
            alive &= !matches!(known, Known::Unknown);
            results.push((signed, known));
        }
        if !alive {
            break;
        }
        let amount = 1 + (issued as u64 * 7919) % 9;
        let signed = sign(&payer, &payee, amount);
        issued += 1;
        let link = link.clone();
        in_flight.spawn(async move {
            let known = match settle(&link, &signed).await {
                Ok(settled) => Known::Receipt(settled.receipt),
                Err(CallError::Refused(e)) if e.code != ErrorCode::Busy => Known::Refused(e.code),
                Err(_) => Known::Unknown,
            };
            (signed, known)
        });
    }
    while let Some(done) = in_flight.join_next().await {
        results.push(done.expect("task"));
    }
    results
}

/// Everything the clients have learnt across rounds, per payment id.
#[derive(Default)]
struct Book {
    payments: BTreeMap<PaymentId, (SignedPayment, Known)>,
}

impl Book {
    fn record(&mut self, signed: SignedPayment, known: Known) {
        let id = signed.payment.id;
        assert!(
            self.payments.insert(id, (signed, known)).is_none(),
            "payment ids are fresh"
        );
    }

    fn count(&self, f: impl Fn(&Known) -> bool) -> usize {
        self.payments.values().filter(|(_, k)| f(k)).count()
    }
}

/// After a restart: every receipt received is present with the same
/// signed receipt, every refusal is still a refusal, and each payment
/// whose outcome was unknown is resolved (settled, refused or absent).
async fn verify_book(
    book: &mut Book,
    links: &[(Arc<Person>, Arc<Link>)],
    server_key: &VerifyingKey,
) {
    let link_of = |name: &Name| {
        links
            .iter()
            .find(|(p, _)| &p.name == name)
            .map(|(_, l)| l.clone())
            .expect("a link for every person")
    };
    let ids: Vec<PaymentId> = book.payments.keys().copied().collect();
    // Ask the payee (it is a party to every payment) in one pipelined batch
    // per person.
    let mut by_payee: BTreeMap<String, Vec<PaymentId>> = BTreeMap::new();
    for id in &ids {
        let payee = book.payments[id].0.payment.payee.to_string();
        by_payee.entry(payee).or_default().push(*id);
    }
    for (payee, ids) in by_payee {
        let link = link_of(&Name::parse(&payee).expect("name"));
        let answers = statuses(&link, &ids).await;
        for (id, answer) in ids.iter().zip(answers) {
            let entry = book.payments.get_mut(id).expect("known id");
            match (&entry.1, answer) {
                (Known::Receipt(r), Ok(PaymentStatus::Settled { receipt, .. })) => {
                    assert_eq!(r, &receipt, "{id}: the acknowledged receipt survives");
                }
                (Known::Receipt(_), other) => {
                    panic!("{id}: acknowledged settlement lost after the crash: {other:?}")
                }
                (Known::Refused(c), Ok(PaymentStatus::Rejected { error })) => {
                    assert_eq!(*c, error.code, "{id}: the refusal survives");
                }
                (Known::Refused(c), other) => {
                    panic!("{id}: acknowledged refusal ({c}) changed after the crash: {other:?}")
                }
                (Known::Unknown, Ok(PaymentStatus::Settled { receipt, log })) => {
                    let (parsed, _) =
                        common::check_reply(server_key, &receipt, log.as_ref(), &entry.0);
                    assert!(parsed.matches(&entry.0));
                    entry.1 = Known::Receipt(receipt);
                }
                (Known::Unknown, Ok(PaymentStatus::Rejected { error })) => {
                    entry.1 = Known::Refused(error.code);
                }
                (Known::Unknown, Err(ErrorCode::NotFound)) => {}
                (Known::Unknown, Err(other)) => panic!("{id}: status failed: {other}"),
            }
        }
    }
    // Unresolved payments never reached the ledger: forget them, so that
    // the final count compares settled payments only.
    book.payments
        .retain(|_, (_, k)| !matches!(k, Known::Unknown));
}

/// Balances implied by the settled payments must be the server's, and
/// sum to the grants.
async fn verify_balances(book: &Book, links: &[(Arc<Person>, Arc<Link>)]) {
    let mut implied: BTreeMap<String, i128> = links
        .iter()
        .map(|(p, _)| (p.name.to_string(), i128::from(GRANT)))
        .collect();
    let mut seqs = std::collections::BTreeSet::new();
    for (signed, known) in book.payments.values() {
        if let Known::Receipt(r) = known {
            assert!(seqs.insert(r.seq), "seq {} used twice", r.seq);
            let p = &signed.payment;
            *implied.get_mut(p.payer.as_str()).expect("payer") -= i128::from(p.amount_minor);
            *implied.get_mut(p.payee.as_str()).expect("payee") += i128::from(p.amount_minor);
        }
    }
    let mut total = 0u128;
    for (p, l) in links {
        let b = balance(l).await;
        total += u128::from(b);
        assert_eq!(
            i128::from(b),
            implied[p.name.as_str()],
            "{}: balance equals grant + received - sent, each payment once",
            p.name
        );
    }
    assert_eq!(total, u128::from(GRANT) * links.len() as u128);
}

/// Replays up to 200 acknowledged payments (submitted by their payer):
/// each gets its original receipt or refusal back and moves nothing,
/// which `verify_balances` then confirms.
async fn replay_some(book: &Book, links: &[(Arc<Person>, Arc<Link>)]) {
    let mut waiting = Vec::new();
    for (signed, known) in book.payments.values().rev().take(200) {
        let (_, link) = links
            .iter()
            .find(|(p, _)| p.name == signed.payment.payer)
            .expect("payer's link");
        let request = ServerRequest::Settle {
            payment: PaymentJson::from(signed),
        };
        waiting.push((known, link.send(&request).await.expect("sent")));
    }
    for (known, rx) in waiting {
        let answer = rx.await.expect("reply").into_result::<Settled>();
        match (known, answer) {
            (Known::Receipt(r), Ok(settled)) => assert_eq!(r, &settled.receipt),
            (Known::Refused(c), Err(e)) => assert_eq!(*c, e.code),
            (known, answer) => panic!("replay of {known:?} answered {answer:?}"),
        }
    }
}

async fn connect_all(people: &[Arc<Person>], addr: &str) -> Vec<(Arc<Person>, Arc<Link>)> {
    let mut out = Vec::new();
    for p in people {
        let link = p.connect_server(addr).await.expect("connects");
        out.push((p.clone(), Arc::new(link)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_settlements_survive_sigkill() {
    // scripts/crash-test.sh sets MICROPAY_CRASH_ROUNDS for longer runs;
    // the default keeps the test suite quick.
    let rounds: usize = std::env::var("MICROPAY_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .clamp(1, 1000);
    const PER_STREAM_MAX: usize = 20_000;
    let test_started = Instant::now();
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let files = Files {
        certs: dir.path().join("certs"),
        db: dir.path().join("ledger.db"),
        ready: dir.path().join("ready"),
        log: dir.path().join("server.log"),
    };
    let names = ["alice", "bob", "carol"];
    let pems: Vec<CertifiedPem> = names.iter().map(|n| pki.person(n).expect("cert")).collect();
    let pairs: Vec<(&str, &CertifiedPem)> = names.iter().copied().zip(pems.iter()).collect();
    pki.write_to(&files.certs, &pairs)
        .expect("certificates written");
    let people: Vec<Arc<Person>> = pems
        .iter()
        .map(|pem| Arc::new(person_from(&pki, pem)))
        .collect();
    let mut book = Book::default();

    for round in 0..=rounds {
        let mut server = start_binary(&files).await;
        let links = connect_all(&people, &server.addr).await;
        let server_key = links[0].1.peer_key().expect("server key");
        if round == 0 {
            for (_, l) in &links {
                let r: Registered = l.call(&ServerRequest::Register {}).await.expect("register");
                assert_eq!(r.balance, GRANT);
            }
        } else {
            verify_book(&mut book, &links, &server_key).await;
            replay_some(&book, &links).await;
            verify_balances(&book, &links).await;
        }
        if round == rounds {
            // Final round: stop gracefully with SIGTERM instead.
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(server.child.id().to_string())
                .status()
                .expect("kill runs");
            assert!(status.success());
            let deadline = Instant::now() + Duration::from_secs(20);
            let exit = loop {
                if let Some(exit) = server.child.try_wait().expect("wait") {
                    break exit;
                }
                assert!(Instant::now() < deadline, "no exit after SIGTERM");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert!(exit.success(), "SIGTERM exits 0, got {exit}");
            drop(links);
            break;
        }
        // Streams: alice pays bob directly; bob forwards carol's payments
        // to him; carol forwards alice's payments to her; bob pays alice
        // directly. Money goes round, so few run dry.
        let deadline = Instant::now() + Duration::from_secs(8);
        let plan = [(0, 0, 1), (1, 2, 1), (2, 0, 2), (1, 1, 0)];
        let mut streams = tokio::task::JoinSet::new();
        for (submitter, payer, payee) in plan {
            streams.spawn(stream(
                links[submitter].1.clone(),
                people[payer].clone(),
                people[payee].name.clone(),
                PER_STREAM_MAX,
                deadline,
            ));
        }
        // Let some settlements through, then kill -9 at an arbitrary point.
        let wait_ms = 150 + (PaymentId::random().0[0] as u64) * 2;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        server.child.kill().expect("SIGKILL");
        let exit = server.child.wait().expect("reaped");
        assert!(!exit.success(), "killed, not exited");
        let mut submitted = 0;
        while let Some(done) = streams.join_next().await {
            for (signed, known) in done.expect("stream") {
                submitted += 1;
                book.record(signed, known);
            }
        }
        let receipts = book.count(|k| matches!(k, Known::Receipt(_)));
        eprintln!(
            "round {round}: killed after {wait_ms} ms; {submitted} submitted, {} unknown; {receipts} receipts so far",
            book.count(|k| matches!(k, Known::Unknown)),
        );
        drop(links);
        drop(server);
        // The ledger file as the crash left it is already sound.
        audit_clean(&DbLocation::Sqlite(files.db.clone())).await;
    }
    let settled = book.count(|k| matches!(k, Known::Receipt(_)));
    assert!(settled > 0, "some settlements were acknowledged");
    let report = audit_clean(&DbLocation::Sqlite(files.db.clone())).await;
    assert_eq!(
        report.payments as usize, settled,
        "each settled payment once in the ledger"
    );
    assert_eq!(report.accounts, 3);
    // The binary's own audit agrees.
    let out = Command::new(env!("CARGO_BIN_EXE_micropay-server"))
        .arg("audit")
        .arg("--db")
        .arg(&files.db)
        .output()
        .expect("audit runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "micropay-server audit failed:\n{stdout}"
    );
    assert!(stdout.contains("audit: OK"), "{stdout}");
    eprintln!(
        "{settled} settled payments across {rounds} crashes, {} refusals; {:.1?}",
        report.rejections,
        test_started.elapsed()
    );
}
