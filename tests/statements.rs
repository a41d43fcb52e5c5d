//! Statements through the real binaries (issue 15): `micropay-client
//! history --all --format csv|json` streams every payment, page by page,
//! with local date-times and a running balance; peer-controlled memos are
//! data escaped by the format, and CSV cells that a spreadsheet would run
//! as formulas are guarded.

mod cli_support;

use cli_support::{Out, World};
use serde_json::Value;

/// Memos a peer might choose to break a statement.
const MEMOS: [&str; 7] = [
    "coffee, cake",
    "say \"hi\"",
    "line one\nline two",
    "=cmd|' /C calc'!A0",
    "ünïcødé ☕ 支払い",
    "@SUM(A1:A9)",
    "plain",
];

/// A fixed zone with a half-hour offset, so local times are recognisable
/// (a POSIX TZ rule: no time-zone database needed).
const ZONE: &str = "IST-5:30";

fn statement(world: &World, who: &str, args: &[&str]) -> Out {
    let mut all = vec!["history", "--all"];
    all.extend_from_slice(args);
    let mut cmd = world.client(who, &all);
    cmd.env("TZ", ZONE);
    cli_support::run(&mut cmd, format!("{who} {}", all.join(" ")))
}

/// alice pays bob each memo (amounts 1, 2, …), bob pays alice 1000 back
/// at the end; returns what was paid, oldest first, as (payer, amount, memo).
fn pay_with_hostile_memos(world: &World) -> Vec<(&'static str, u64, &'static str)> {
    world.register(&["alice", "bob"]);
    let mut bob = world.serve("bob", &[], false);
    bob.online();
    let mut alice = world.serve("alice", &[], false);
    alice.online();
    let mut paid = Vec::new();
    for (i, memo) in MEMOS.iter().enumerate() {
        let amount = i as u64 + 1;
        world
            .run(
                "alice",
                &["send", "bob", &amount.to_string(), "--memo", memo],
            )
            .expect(0);
        paid.push(("alice", amount, *memo));
    }
    world
        .run("bob", &["send", "alice", "1000", "--memo", "back"])
        .expect(0);
    paid.push(("bob", 1000, "back"));
    paid
}

#[test]
fn csv_and_json_statements_hold_every_payment_with_its_running_balance() {
    let world = World::start();
    let paid = pay_with_hostile_memos(&world);
    let balance = world.balance("alice");
    assert_eq!(balance, 10_000 - 28 + 1000);

    // Three rows a page: eight payments take three pages.
    let csv_out = statement(&world, "alice", &["--format", "csv", "--limit", "3"]);
    csv_out.expect(0).stderr_has(
        "8 payments in 3 pages; balance 10000 before the oldest, 10972 after the newest",
    );
    let text = csv_out
        .stdout
        .strip_prefix('\u{feff}')
        .unwrap_or_else(|| panic!("no UTF-8 BOM:\n{csv_out}"));
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        micropay::person::statement::CSV_HEADER.map(str::to_owned)
    );
    let rows: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("bad CSV ({e}):\n{csv_out}"));
    assert_eq!(rows.len(), paid.len());

    let json_out = statement(&world, "alice", &["--format", "json", "--limit", "3"]);
    json_out.expect(0);
    let lines: Vec<Value> = json_out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), paid.len());

    // Newest first: walk `paid` backwards beside both outputs.
    let mut after = balance;
    for ((csv_row, json_row), (payer, amount, memo)) in
        rows.iter().zip(&lines).zip(paid.iter().rev())
    {
        let (direction, counterparty) = if *payer == "alice" {
            ("out", "bob")
        } else {
            ("in", "bob")
        };
        assert_eq!(&csv_row[3], direction);
        assert_eq!(&csv_row[4], counterparty);
        assert_eq!(csv_row[5].parse::<u64>().ok(), Some(*amount));
        assert_eq!(csv_row[6].parse::<u64>().ok(), Some(after), "{csv_row:?}");
        let guarded = if memo.starts_with(['=', '@']) {
            format!("'{memo}")
        } else {
            memo.to_string()
        };
        assert_eq!(&csv_row[7], guarded, "CSV memo");
        assert!(
            csv_row[1].ends_with("+05:30"),
            "not local time: {}",
            &csv_row[1]
        );
        assert_eq!(json_row["memo"], *memo, "JSON memo is exact");
        assert_eq!(json_row["balance_after"], after);
        assert_eq!(json_row["direction"], direction);
        assert_eq!(json_row["seq"].as_u64(), csv_row[0].parse().ok());
        assert_eq!(json_row["settled_at_local"].as_str(), Some(&csv_row[1]));
        after = if direction == "out" {
            after + amount
        } else {
            after - amount
        };
    }
    assert_eq!(after, 10_000, "the walk ends at the opening grant");

    // bob's statement agrees with his balance too.
    let bob = statement(&world, "bob", &["--format", "json", "--no-bom"]);
    bob.expect(0);
    let newest: Value =
        serde_json::from_str(bob.stdout.lines().next().unwrap_or("")).unwrap_or_default();
    assert_eq!(newest["balance_after"], world.balance("bob"));
}

#[test]
fn no_bom_leaves_a_plain_csv_and_an_empty_history_has_just_the_header() {
    let world = World::start();
    world.register(&["alice"]);
    let out = statement(&world, "alice", &["--format", "csv", "--no-bom"]);
    out.expect(0).stderr_has("0 payments in 1 pages");
    assert_eq!(
        out.stdout,
        "seq,settled_at_local,settled_at_ms,direction,counterparty,amount,balance_after,memo,payment_id\n"
    );
}

#[test]
fn a_statement_needs_an_account_and_all_needs_a_format() {
    let world = World::start();
    statement(&world, "carol", &["--format", "json"])
        .expect(1)
        .stderr_has("not_registered");
    world.register(&["alice"]);
    statement(&world, "alice", &[]).expect(2);
    world
        .run("alice", &["history", "--format", "csv"])
        .expect(2);
}

mod common;

use std::io::Write;
use std::sync::mpsc;

use micropay::person::statement::{self, StatementFormat, StatementSummary, StatementWriter};
use micropay::wire::{PaymentJson, Registered, ServerRequest, Settled};

/// A statement's output that, after its first page, stops until told to
/// go on: payments made meanwhile arrive in the middle of the paging.
struct PausingOutput {
    bytes: Vec<u8>,
    paused: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
}

impl Write for PausingOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if let Some((paused, resume)) = self.paused.take() {
            let _ = paused.send(());
            let _ = resume.recv_timeout(cli_support::WAIT);
        }
        Ok(())
    }
}

async fn pay(
    link: &micropay::net::link::Link,
    payer: &micropay::person::Person,
    payee: &str,
    amount: u64,
) {
    let signed = common::signed_payment(payer, payee, amount, "");
    link.call::<Settled>(&ServerRequest::Settle {
        payment: PaymentJson::from(&signed),
    })
    .await
    .expect("settles");
}

/// Runs alice's statement (pages of two) on its own thread and runtime,
/// pausing after the first page until `resume` is sent.
fn statement_on_a_thread(
    pki: std::sync::Arc<common::TestPki>,
    alice: micropay::certs::CertifiedPem,
    server: String,
    paused: mpsc::Sender<()>,
    resume: mpsc::Receiver<()>,
) -> std::thread::JoinHandle<(Vec<Value>, StatementSummary)> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let alice = common::person_from(&pki, &alice);
            let link = alice.connect_server(&server).await.expect("connects");
            let output = PausingOutput {
                bytes: Vec::new(),
                paused: Some((paused, resume)),
            };
            let mut out =
                StatementWriter::start(output, StatementFormat::JsonLines).expect("starts");
            let summary = statement::export(&link, "alice", 2, &mut out)
                .await
                .expect("statement");
            let StatementWriter::JsonLines(output) = out else {
                panic!("not JSON lines");
            };
            let text = String::from_utf8(output.bytes).expect("UTF-8");
            let rows = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("JSON line"))
                .collect();
            (rows, summary)
        })
    })
}

backend_test! {
    async fn a_statement_stays_exact_while_payments_arrive(backend) {
        let server = common::start_server_on(&backend).await;
        let alice_pem = server.pki.person("alice").expect("alice's certificate");
        let alice = common::person_from(&server.pki, &alice_pem);
        let bob = common::person(&server.pki, "bob");
        let (alice_link, bob_link) = (common::link(&alice, &server).await, common::link(&bob, &server).await);
        for l in [&alice_link, &bob_link] {
            let _: Registered = l.call(&ServerRequest::Register {}).await.expect("registers");
        }
        for amount in 1..=5 {
            pay(&bob_link, &bob, "alice", amount).await;
        }
        let (paused_tx, paused_rx) = mpsc::channel();
        let (resume_tx, resume_rx) = mpsc::channel();
        let walker = statement_on_a_thread(server.pki.clone(), alice_pem, server.addr_string(), paused_tx, resume_rx);
        tokio::task::spawn_blocking(move || paused_rx.recv_timeout(cli_support::WAIT))
            .await
            .expect("joins")
            .expect("the statement paused after its first page");
        // New payments both ways while the statement is between pages.
        pay(&alice_link, &alice, "bob", 100).await;
        pay(&bob_link, &bob, "alice", 7).await;
        resume_tx.send(()).expect("resumes");
        let (rows, summary) = tokio::task::spawn_blocking(move || walker.join().expect("no panic"))
            .await
            .expect("joins");
        let after: Vec<u64> = rows.iter().filter_map(|r| r["balance_after"].as_u64()).collect();
        assert_eq!(after, vec![10_015, 10_010, 10_006, 10_003, 10_001]);
        assert_eq!(summary.pages, 3);
        assert_eq!((summary.opening_balance, summary.closing_balance), (common::GRANT, 10_015));
        assert_eq!(common::balance(&alice_link).await, 10_015 - 100 + 7);
        common::shutdown_and_audit(server).await;
    }
}
