//! Statements: every payment of one person, streamed page by page from the
//! server's `history` operation into CSV or JSON lines, each row with the
//! person's running balance after it.
//!
//! The running balance is anchored on the balance the server returns with
//! the first page (read in the same snapshot as that page's rows, so it is
//! exactly the balance after the newest row), then walked backwards: the
//! balance before a row is the balance after it minus what it brought in
//! (or plus what it paid out). Payments that arrive while paging get newer
//! sequence numbers than the first page's and never appear on the later
//! pages (which ask for `seq < before_seq`), so the anchor stays exact.
//! Only one page is held in memory at a time.
//!
//! Memos and names are peer-controlled: here they are data, escaped by the
//! format (the `csv` crate quotes commas, quotes and newlines; `serde_json`
//! escapes JSON strings), never by the terminal escaper. A CSV cell that a
//! spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a
//! tab or a carriage return) gets a leading `'`; JSON stays exact.

use std::io::Write;

use serde::Serialize;

use crate::core::limits::HISTORY_PAGE_MAX;
use crate::net::link::{CallError, Link};
use crate::wire::{History, HistoryEntry, ServerRequest};

/// The byte-order mark written first in CSV when asked: it makes Excel
/// read the file as UTF-8 instead of the system's legacy code page.
const UTF8_BOM: &[u8] = "\u{feff}".as_bytes();

/// Why a statement could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    /// The server call failed.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The server answered without the caller's balance: no account.
    #[error("the server returned no balance: register first")]
    NoAccount,
    /// The history does not add up to the anchored balance (a server or
    /// ledger fault): the statement stops rather than print wrong numbers.
    #[error("the history is inconsistent with the balance at seq {0}")]
    Inconsistent(u64),
    /// A page did not move towards older payments.
    #[error("the server repeated a page (next_before_seq {0})")]
    NoProgress(u64),
    /// Writing the output failed.
    #[error("cannot write the statement: {0}")]
    Io(#[from] std::io::Error),
    /// Encoding a CSV record failed.
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// The output format of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementFormat {
    /// RFC 4180 CSV with a header row; `bom` writes a UTF-8 byte-order
    /// mark first.
    Csv {
        /// Whether to start with a UTF-8 byte-order mark.
        bom: bool,
    },
    /// One JSON object per line (JSON Lines).
    JsonLines,
}

/// Whether a payment came in or went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The person was paid.
    In,
    /// The person paid.
    Out,
}

/// One statement row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementRow {
    /// Ledger sequence number.
    pub seq: u64,
    /// Settlement time in the local time zone, RFC 3339 with its offset.
    pub settled_at_local: String,
    /// Settlement time, unix ms.
    pub settled_at_ms: u64,
    /// In or out.
    pub direction: Direction,
    /// The other party.
    pub counterparty: String,
    /// Minor units, always positive; `direction` says which way.
    pub amount: u64,
    /// The person's balance right after this payment.
    pub balance_after: u64,
    /// The memo, exactly as signed.
    pub memo: String,
    /// Payment id, 32 hex digits.
    pub payment_id: String,
}

/// The running balance, walked from the newest payment to the oldest.
#[derive(Debug, Clone, Copy)]
pub struct RunningBalance {
    after_next: u64,
}

impl RunningBalance {
    /// Starts at the balance after the newest payment.
    pub fn anchored_at(balance_after_newest: u64) -> RunningBalance {
        RunningBalance {
            after_next: balance_after_newest,
        }
    }

    /// The row for `entry` (the next older payment of `me`), moving the
    /// balance to before it.
    pub fn row(&mut self, me: &str, entry: &HistoryEntry) -> Result<StatementRow, StatementError> {
        let balance_after = self.after_next;
        let (direction, counterparty, before) = if entry.payer == me {
            let before = balance_after.checked_add(entry.amount);
            (Direction::Out, &entry.payee, before)
        } else {
            let before = balance_after.checked_sub(entry.amount);
            (Direction::In, &entry.payer, before)
        };
        self.after_next = before.ok_or(StatementError::Inconsistent(entry.seq))?;
        Ok(StatementRow {
            seq: entry.seq,
            settled_at_local: local_time(entry.settled_at_ms),
            settled_at_ms: entry.settled_at_ms,
            direction,
            counterparty: counterparty.clone(),
            amount: entry.amount,
            balance_after,
            memo: entry.memo.clone(),
            payment_id: entry.payment_id.clone(),
        })
    }

    /// The balance before every payment walked so far (after the walk:
    /// the opening balance).
    pub fn before_oldest(&self) -> u64 {
        self.after_next
    }
}

/// `ms` as a local date-time, RFC 3339 with the zone's offset (the `TZ`
/// environment variable, else the system's zone).
pub fn local_time(ms: u64) -> String {
    crate::system::localtime::local_rfc3339_ms(ms)
}

/// `text` made inert for a spreadsheet: a cell starting with a character
/// that spreadsheets read as the start of a formula gets a leading `'`.
pub fn formula_guard(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// The CSV header, in the order [`StatementWriter`] writes fields.
pub const CSV_HEADER: [&str; 9] = [
    "seq",
    "settled_at_local",
    "settled_at_ms",
    "direction",
    "counterparty",
    "amount",
    "balance_after",
    "memo",
    "payment_id",
];

/// Writes statement rows in one format as they come.
pub enum StatementWriter<W: Write> {
    /// CSV through the `csv` crate.
    Csv(Box<csv::Writer<W>>),
    /// JSON Lines.
    JsonLines(W),
}

impl<W: Write> StatementWriter<W> {
    /// Starts a statement on `out` (the BOM and header for CSV).
    pub fn start(mut out: W, format: StatementFormat) -> Result<Self, StatementError> {
        match format {
            StatementFormat::Csv { bom } => {
                if bom {
                    out.write_all(UTF8_BOM)?;
                }
                let mut csv = csv::Writer::from_writer(out);
                csv.write_record(CSV_HEADER)?;
                Ok(StatementWriter::Csv(Box::new(csv)))
            }
            StatementFormat::JsonLines => Ok(StatementWriter::JsonLines(out)),
        }
    }

    /// Writes one row.
    pub fn row(&mut self, row: &StatementRow) -> Result<(), StatementError> {
        match self {
            StatementWriter::Csv(csv) => {
                let direction = match row.direction {
                    Direction::In => "in",
                    Direction::Out => "out",
                };
                csv.write_record([
                    row.seq.to_string().as_str(),
                    &row.settled_at_local,
                    &row.settled_at_ms.to_string(),
                    direction,
                    &formula_guard(&row.counterparty),
                    &row.amount.to_string(),
                    &row.balance_after.to_string(),
                    &formula_guard(&row.memo),
                    &row.payment_id,
                ])?;
            }
            StatementWriter::JsonLines(out) => {
                serde_json::to_writer(&mut *out, row).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    /// Pushes what was written so far to the output (after each page).
    pub fn flush(&mut self) -> Result<(), StatementError> {
        match self {
            StatementWriter::Csv(csv) => csv.flush()?,
            StatementWriter::JsonLines(out) => out.flush()?,
        }
        Ok(())
    }
}

/// What a finished statement covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementSummary {
    /// Rows written.
    pub rows: u64,
    /// Pages fetched.
    pub pages: u64,
    /// The balance after the newest payment (the anchor).
    pub closing_balance: u64,
    /// The balance before the oldest payment.
    pub opening_balance: u64,
}

/// Streams every payment of `me` from the server behind `link` into
/// `out`, newest first, `page_size` rows per request (clamped to the
/// protocol's page bounds), flushing after each page.
pub async fn export<W: Write>(
    link: &Link,
    me: &str,
    page_size: u32,
    out: &mut StatementWriter<W>,
) -> Result<StatementSummary, StatementError> {
    let page_size = page_size.clamp(1, HISTORY_PAGE_MAX);
    let mut before_seq = None;
    let mut running: Option<RunningBalance> = None;
    let mut summary = StatementSummary {
        rows: 0,
        pages: 0,
        closing_balance: 0,
        opening_balance: 0,
    };
    // Every page moves strictly towards older payments (checked below),
    // and sequence numbers are at least 1, so this loop ends.
    loop {
        let page: History = link
            .call(&ServerRequest::History {
                limit: Some(page_size),
                before_seq,
            })
            .await?;
        summary.pages += 1;
        let walk = match running.as_mut() {
            Some(walk) => walk,
            None => {
                let anchor = page.balance.ok_or(StatementError::NoAccount)?;
                summary.closing_balance = anchor;
                running.insert(RunningBalance::anchored_at(anchor))
            }
        };
        for entry in &page.entries {
            out.row(&walk.row(me, entry)?)?;
            summary.rows += 1;
        }
        out.flush()?;
        summary.opening_balance = walk.before_oldest();
        match page.next_before_seq {
            Some(next) if before_seq.is_none_or(|b| next < b) => before_seq = Some(next),
            Some(next) => return Err(StatementError::NoProgress(next)),
            None => return Ok(summary),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, payer: &str, payee: &str, amount: u64, memo: &str) -> HistoryEntry {
        HistoryEntry {
            seq,
            payment_id: format!("{seq:032x}"),
            payer: payer.into(),
            payee: payee.into(),
            amount,
            memo: memo.into(),
            settled_at_ms: 1_700_000_000_000 + seq,
        }
    }

    #[test]
    fn running_balance_walks_back_to_the_opening_balance() {
        // Opening 100: +30 (seq 1), -50 (seq 2), +5 (seq 3) → 85.
        let mut walk = RunningBalance::anchored_at(85);
        let rows: Vec<_> = [
            entry(3, "bob", "me", 5, ""),
            entry(2, "me", "carol", 50, ""),
            entry(1, "bob", "me", 30, ""),
        ]
        .iter()
        .map(|e| walk.row("me", e).map(|r| (r.balance_after, r.direction)))
        .collect::<Result<_, _>>()
        .unwrap_or_default();
        assert_eq!(
            rows,
            vec![
                (85, Direction::In),
                (80, Direction::Out),
                (130, Direction::In)
            ]
        );
        assert_eq!(walk.before_oldest(), 100);
    }

    #[test]
    fn a_history_that_does_not_add_up_is_refused() {
        let mut walk = RunningBalance::anchored_at(3);
        let refused = walk.row("me", &entry(7, "bob", "me", 5, ""));
        assert!(matches!(refused, Err(StatementError::Inconsistent(7))));
        let mut walk = RunningBalance::anchored_at(u64::MAX);
        let refused = walk.row("me", &entry(8, "me", "bob", 1, ""));
        assert!(matches!(refused, Err(StatementError::Inconsistent(8))));
    }

    #[test]
    fn formula_starts_are_guarded_and_others_kept() {
        for risky in ["=cmd|' /C calc'!A0", "+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(formula_guard(risky), format!("'{risky}"));
        }
        for plain in ["lunch", "", "a=b", "'quoted", "ünïcødé"] {
            assert_eq!(formula_guard(plain), plain);
        }
    }

    #[test]
    fn csv_quotes_commas_quotes_and_newlines_and_guards_formulas() {
        let mut walk = RunningBalance::anchored_at(10);
        let row = walk.row("me", &entry(1, "bob", "me", 10, "a,b \"q\"\nz"));
        let formula = walk.row("me", &entry(0, "me", "bob", 1, "=1+1"));
        let mut out = StatementWriter::start(Vec::new(), StatementFormat::Csv { bom: true })
            .unwrap_or_else(|_| StatementWriter::JsonLines(Vec::new()));
        for r in [row, formula].into_iter().flatten() {
            assert!(out.row(&r).is_ok());
        }
        let StatementWriter::Csv(csv) = out else {
            panic!("not csv");
        };
        let bytes = csv.into_inner().unwrap_or_default();
        let text = String::from_utf8(bytes).unwrap_or_default();
        assert!(text.starts_with("\u{feff}seq,settled_at_local,"));
        assert!(text.contains(",\"a,b \"\"q\"\"\nz\","), "{text}");
        assert!(text.contains(",'=1+1,"), "{text}");
    }
}
