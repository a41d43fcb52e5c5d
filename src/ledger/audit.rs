//! Audit, written once for every backend: a store feeds its rows to an
//! [`Auditor`], which checks that
//!
//! - every stored payment parses, its content hash matches, and its
//!   signature verifies with the payer's registered key;
//! - sequence numbers run from 1 without gaps;
//! - replayed in order through the settlement rules (after every grant),
//!   at its own settlement time, every payment settles: none was expired,
//!   over its lifetime bound, a self-payment or beyond the payer's means;
//! - every balance equals its grants plus what it received minus what it
//!   paid, and the balances sum to the grants.

use std::collections::HashMap;
use std::path::Path;

use crate::core::keys::VerifyingKey;
use crate::core::limits::MEMO_BYTES_MAX;
use crate::core::memory_ledger::MemoryLedger;
use crate::core::name::Name;
use crate::core::payment::{Payment, PaymentId, SignedPayment};
use crate::core::rules::{Decision, VerifiedPayment};
use crate::ledger::location::DbLocation;
use crate::ledger::postgres::PgStore;
use crate::ledger::sqlite::SqliteStore;
use crate::ledger::{AuditVisitor, LedgerError, LedgerStore, StoredPayment};

/// What `audit` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Accounts.
    pub accounts: u64,
    /// Settled payments.
    pub payments: u64,
    /// Recorded refusals.
    pub rejections: u64,
    /// Sum of all grants.
    pub total_granted: u128,
    /// Sum of all balances.
    pub total_balances: u128,
    /// Every violation found; empty means the ledger is sound.
    pub violations: Vec<String>,
}

/// Audits the SQLite ledger at `path`, read-only.
pub fn audit(path: &Path) -> Result<AuditReport, LedgerError> {
    let store = SqliteStore::open_read_only(path)?;
    audit_store(&store)
}

/// Audits the ledger at `location` (an SQLite file or a PostgreSQL
/// database), read-only.
pub fn audit_at(location: &DbLocation) -> Result<AuditReport, LedgerError> {
    match location {
        DbLocation::Sqlite(path) => audit(path),
        DbLocation::Postgres(url) => audit_store(&PgStore::open_read_only(url)?),
    }
}

/// Audits any store.
pub fn audit_store(store: &dyn LedgerStore) -> Result<AuditReport, LedgerError> {
    let mut auditor = Auditor::default();
    store.scan(&mut auditor)?;
    Ok(auditor.finish())
}

/// The checks, fed row by row.
#[derive(Default)]
pub struct Auditor {
    report: AuditReport,
    keys: HashMap<String, VerifyingKey>,
    expected: HashMap<String, i128>,
    stored: HashMap<String, i128>,
    grants: HashMap<String, u64>,
    not_after: HashMap<String, u64>,
    model: Option<MemoryLedger>,
    next_seq: i64,
}

impl AuditVisitor for Auditor {
    fn account(&mut self, name: &str, key_spki: &[u8], balance: i64, key_not_after_s: i64) {
        self.not_after
            .insert(name.to_owned(), u64::try_from(key_not_after_s).unwrap_or(0));
        let report = &mut self.report;
        report.accounts += 1;
        if balance < 0 {
            report
                .violations
                .push(format!("{name}: negative balance {balance}"));
        }
        report.total_balances += balance.max(0) as u128;
        self.stored.insert(name.to_owned(), i128::from(balance));
        self.expected.entry(name.to_owned()).or_insert(0);
        match VerifyingKey::from_spki_der(key_spki) {
            Ok(key) => {
                self.keys.insert(name.to_owned(), key);
            }
            Err(e) => report.violations.push(format!("{name}: unusable key: {e}")),
        }
    }

    fn grant(&mut self, name: &str, amount: i64) {
        self.report.total_granted += amount.max(0) as u128;
        *self.expected.entry(name.to_owned()).or_insert(0) += i128::from(amount);
        let total = self.grants.entry(name.to_owned()).or_insert(0);
        *total = total.saturating_add(u64::try_from(amount).unwrap_or(0));
    }

    fn payment(&mut self, row: StoredPayment) {
        self.report.payments += 1;
        let seq = row.seq;
        if seq != self.next_seq + 1 {
            self.violate(format!("seq {seq}: expected {} (gap)", self.next_seq + 1));
        }
        self.next_seq = seq;
        *self.expected.entry(row.payer.clone()).or_insert(0) -= i128::from(row.amount);
        *self.expected.entry(row.payee.clone()).or_insert(0) += i128::from(row.amount);
        if row.memo.len() > MEMO_BYTES_MAX {
            let bytes = row.memo.len();
            self.violate(format!(
                "seq {seq}: malformed payment row: a memo of {bytes} bytes (the limit is {MEMO_BYTES_MAX})"
            ));
            return;
        }
        let Some(payment) = parse_payment(&row) else {
            self.violate(format!("seq {seq}: malformed payment row"));
            return;
        };
        if payment.content_hash()[..] != row.content_hash[..] {
            self.violate(format!("seq {seq}: content hash does not match"));
        }
        let verified = match self.keys.get(&row.payer) {
            None => {
                self.violate(format!("seq {seq}: payer {} has no account", row.payer));
                return;
            }
            Some(key) => match VerifiedPayment::verify(payment, key) {
                Ok(verified) => verified,
                Err(_) => {
                    let payer = &row.payer;
                    self.violate(format!(
                        "seq {seq}: signature does not verify with {payer}'s key"
                    ));
                    return;
                }
            },
        };
        self.replay(seq, &verified, row.settled_at_ms);
    }

    fn refusal(&mut self) {
        self.report.rejections += 1;
    }
}

impl Auditor {
    fn violate(&mut self, violation: String) {
        self.report.violations.push(violation);
    }

    /// Replays one payment through the rules at its settlement time.
    fn replay(&mut self, seq: i64, payment: &VerifiedPayment, settled_at_ms: i64) {
        if self.model.is_none() {
            self.model = Some(self.opening_model());
        }
        let Some(model) = self.model.as_mut() else {
            return;
        };
        let at_ms = u64::try_from(settled_at_ms).unwrap_or(0);
        match model.settle(payment, at_ms) {
            Decision::Settle(_) => {}
            Decision::Refuse(refusal) => self.violate(format!(
                "seq {seq}: the rules refuse it at its settlement time: {refusal}"
            )),
            Decision::Replay(_) => {
                self.violate(format!("seq {seq}: the payment id was settled before"))
            }
        }
    }

    /// Every account with all its grants, before any payment.
    fn opening_model(&self) -> MemoryLedger {
        let mut model = MemoryLedger::new();
        for (name, key) in &self.keys {
            let Ok(parsed) = Name::parse(name) else {
                continue;
            };
            let grant = self.grants.get(name).copied().unwrap_or(0);
            let not_after_s = self.not_after.get(name).copied().unwrap_or(0);
            // Names are unique in the store, so registration cannot be
            // refused here; a refusal would show up as unknown accounts.
            let _ = model.register(&parsed, key, not_after_s, grant);
        }
        model
    }

    /// The report, with the balance checks.
    pub fn finish(mut self) -> AuditReport {
        let mut names: Vec<_> = self.stored.keys().cloned().collect();
        names.sort();
        for name in names {
            let have = self.stored[&name];
            let want = self.expected.get(&name).copied().unwrap_or(0);
            if have != want {
                self.violate(format!(
                    "{name}: balance {have} but grants and payments give {want}"
                ));
            }
        }
        let report = &mut self.report;
        if report.total_balances != report.total_granted {
            report.violations.push(format!(
                "balances sum to {} but grants sum to {}",
                report.total_balances, report.total_granted
            ));
        }
        self.report
    }
}

fn parse_payment(row: &StoredPayment) -> Option<SignedPayment> {
    let id: [u8; 16] = row.id.as_slice().try_into().ok()?;
    Some(SignedPayment {
        payment: Payment {
            id: PaymentId(id),
            payer: Name::parse(&row.payer).ok()?,
            payee: Name::parse(&row.payee).ok()?,
            amount_minor: u64::try_from(row.amount).ok()?,
            expires_at_s: u64::try_from(row.expires_at).ok()?,
            memo: row.memo.clone(),
        },
        signature: row.signature.clone(),
    })
}
