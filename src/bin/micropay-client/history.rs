//! `history`: a page of my payments as a table.

use micropay::person::Person;
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
    println!(
        "{:>6}  {:<4}  {:<20}  {:>12}  {:<32}  MEMO",
        "SEQ", "DIR", "WITH", "AMOUNT", "PAYMENT ID"
    );
    for e in &h.entries {
        let (dir, with, sign) = if e.payer == person.name.as_str() {
            ("out", &e.payee, "-")
        } else {
            ("in", &e.payer, "+")
        };
        println!(
            "{:>6}  {:<4}  {:<20}  {:>12}  {:<32}  {}",
            e.seq,
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
