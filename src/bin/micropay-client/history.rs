//! `history`: a page of my payments as a table.

use micropay::person::Person;
use micropay::system::localtime::local_datetime_ms;
use micropay::system::terminal::escape;
use micropay::wire::{History, ServerRequest};
use serde_json::json;

use crate::Failure;

/// Prints one page of history, newest first.
pub async fn run(
    person: &Person,
    server: &str,
    limit: u32,
    before: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    let link = person.connect_server(server).await?;
    let h: History = link
        .call(&ServerRequest::History {
            limit: Some(limit),
            before_seq: before,
        })
        .await?;
    if json {
        println!(
            "{}",
            json!({"ok": true, "entries": h.entries, "next_before_seq": h.next_before_seq})
        );
    } else if h.entries.is_empty() {
        match before {
            Some(seq) => println!("no payments before seq {seq}"),
            None => println!("no payments yet"),
        }
    } else {
        print_table(person, &h);
    }
    Ok(())
}

fn print_table(person: &Person, h: &History) {
    // WITH is as wide as the longest name (32), so rows stay aligned.
    println!(
        "{:>6}  {:<26}  {:<4}  {:<32}  {:>12}  {:<32}  MEMO",
        "SEQ", "WHEN", "DIR", "WITH", "AMOUNT", "PAYMENT ID"
    );
    for e in &h.entries {
        let (dir, with, sign) = if e.payer == person.name.as_str() {
            ("out", &e.payee, "-")
        } else {
            ("in", &e.payer, "+")
        };
        println!(
            "{:>6}  {:<26}  {:<4}  {:<32}  {:>12}  {:<32}  {}",
            e.seq,
            local_datetime_ms(e.settled_at_ms),
            dir,
            escape(with),
            format!("{sign}{}", e.amount),
            escape(&e.payment_id),
            escape(&e.memo)
        );
    }
    if let Some(next) = h.next_before_seq {
        println!("(more: --before {next})");
    }
}
