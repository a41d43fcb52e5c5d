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

/// A fixed zone with a half-hour offset, so local times are recognisable.
const ZONE: &str = "Asia/Kolkata";

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
