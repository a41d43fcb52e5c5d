//! `history`: a page of my payments as a table, or every payment as a
//! statement.

use micropay::core::limits::{HISTORY_PAGE_DEFAULT, HISTORY_PAGE_MAX};
use micropay::person::statement::{self, StatementError, StatementFormat, StatementWriter};
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
    limit: Option<u32>,
    before: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    let link = person.connect_server(server).await?;
    let h: History = link
        .call(&ServerRequest::History {
            limit: Some(limit.unwrap_or(HISTORY_PAGE_DEFAULT)),
            before_seq: before,
        })
        .await?;
    if json {
        println!(
            "{}",
            json!({"ok": true, "entries": h.entries, "next_before_seq": h.next_before_seq,
                   "balance": h.balance})
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

/// A statement's format on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Json,
}

/// Streams every payment to stdout as a statement, page by page.
pub async fn statement(
    person: &Person,
    server: &str,
    limit: Option<u32>,
    format: Format,
    bom: bool,
) -> Result<(), Failure> {
    let format = match format {
        Format::Csv => StatementFormat::Csv { bom },
        Format::Json => StatementFormat::JsonLines,
    };
    let link = person.connect_server(server).await?;
    let stdout = std::io::stdout().lock();
    let mut out = StatementWriter::start(std::io::BufWriter::new(stdout), format)
        .map_err(statement_failure)?;
    let page_size = limit.unwrap_or(HISTORY_PAGE_MAX);
    let summary = statement::export(&link, person.name.as_str(), page_size, &mut out)
        .await
        .map_err(statement_failure)?;
    out.flush().map_err(statement_failure)?;
    eprintln!(
        "{} payments in {} pages; balance {} before the oldest, {} after the newest",
        summary.rows, summary.pages, summary.opening_balance, summary.closing_balance
    );
    Ok(())
}

fn statement_failure(e: StatementError) -> Failure {
    match e {
        StatementError::Call(c) => c.into(),
        StatementError::NoAccount => Failure::new(1, "not_registered", e.to_string()),
        other => Failure::new(1, "statement_failed", other.to_string()),
    }
}
