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
//!   paid, and the balances sum to the grants;
//! - the key history of every account starts with its registration, each
//!   later change carries its proof (a statement signed by the key before
//!   it and by the new key, or a rebind's certificate), is replayed
//!   through the rules at its position among the payments, and ends with
//!   the account's current key; each payment's signature is checked with
//!   the key registered when it settled;
//! - every payment channel's commitment is signed by its payer, its hold
//!   is n × value, a close's link hashes to the root and pays exactly
//!   index × value, an expiry returns the hold after expiry plus grace;
//!   and grants = available balances + open holds.
//! - the logs (docs/PROTOCOL.md §11): every stored row's record (payments,
//!   key history, grants, refusals, channel opens and ends) is a leaf of
//!   exactly one log and every leaf is some row's record; each log's
//!   leaves run from 0 without gaps, its tree reaches the root of every
//!   checkpoint stored for it, no leaf lies past its latest checkpoint,
//!   every checkpoint's note says what its row says, and (given the
//!   servers' keys) its signature verifies. So a row added, rewritten or
//!   deleted around the server (a minted grant, a deleted refusal, an
//!   edited channel) is found even where the other checks cannot see it,
//!   and so is a log rewritten, truncated or rolled back under a
//!   checkpoint. A ledger with no log at all (written without a server's
//!   key) is reported as such (`unlogged_records`), not as a violation.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use crate::core::keys::VerifyingKey;
use crate::core::limits::{MEMO_BYTES_MAX, VERIFY_BATCH_MAX_DEFAULT};
use crate::core::memory_ledger::MemoryLedger;
use crate::core::name::Name;
use crate::core::payment::{Payment, PaymentId, SignedPayment};
use crate::core::rotation::KeyChange;
use crate::core::rules::{Decision, VerifiedPayment};
use crate::ledger::channel_rows::StoredChannel;
use crate::ledger::key_audit::{audit_row, AuditedRow};
use crate::ledger::location::DbLocation;
use crate::ledger::log::LogCheck;
use crate::ledger::log_records::RowRef;
use crate::ledger::postgres::PgStore;
use crate::ledger::sqlite::SqliteStore;
use crate::ledger::{
    AuditVisitor, LedgerError, LedgerStore, StoredCheckpoint, StoredGrant, StoredKeyChange,
    StoredPayment, StoredRefusal,
};

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
    /// Sum of all (available) balances.
    pub total_balances: u128,
    /// Payment channels.
    pub channels: u64,
    /// Sum of the holds of open channels: grants = balances + held.
    pub total_held: u128,
    /// Stored checkpoints checked against the recomputed tree.
    pub checkpoints: u64,
    /// Of those, how many had their signature checked (with a key given
    /// to [`audit_at_with_keys`]).
    pub checkpoint_signatures: u64,
    /// Log leaves read, over every log.
    pub log_leaves: u64,
    /// Logs (origins) found.
    pub logs: u64,
    /// When the ledger has no log at all: the records its rows would have
    /// (0 for an empty ledger). A server always logs, so a server's
    /// ledger with unlogged records lost its log.
    pub unlogged_records: u64,
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
    audit_at_with_keys(location, &[])
}

/// Like [`audit_at`], also checking every checkpoint's signature with
/// one of `log_keys` (the servers' keys).
pub fn audit_at_with_keys(
    location: &DbLocation,
    log_keys: &[VerifyingKey],
) -> Result<AuditReport, LedgerError> {
    match location {
        DbLocation::Sqlite(path) => {
            audit_store_with_keys(&SqliteStore::open_read_only(path)?, log_keys)
        }
        DbLocation::Postgres(url) => {
            audit_store_with_keys(&PgStore::open_read_only(url)?, log_keys)
        }
    }
}

/// Audits any store.
pub fn audit_store(store: &dyn LedgerStore) -> Result<AuditReport, LedgerError> {
    audit_store_with_keys(store, &[])
}

/// Audits any store, checking checkpoint signatures with `log_keys`.
pub fn audit_store_with_keys(
    store: &dyn LedgerStore,
    log_keys: &[VerifyingKey],
) -> Result<AuditReport, LedgerError> {
    let mut auditor = Auditor::default();
    store.scan(&mut auditor)?;
    Ok(auditor.finish_with(log_keys))
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
    /// Each account's key as stored in `accounts` (the current one).
    account_keys: HashMap<String, (Vec<u8>, u64)>,
    /// Accounts whose history has a registration row.
    with_history: HashSet<String>,
    /// The last key of each account's history, as read so far.
    history_key: HashMap<String, VerifyingKey>,
    /// Key changes not yet replayed, in history order.
    pending: VecDeque<PendingChange>,
    last_after_seq: u64,
    /// Every key each account ever had, to check channel commitments
    /// signed before a rotation.
    all_keys: HashMap<String, Vec<VerifyingKey>>,
    /// The rows against the logs.
    log: LogCheck,
    /// The stored checkpoints.
    checkpoints: Vec<StoredCheckpoint>,
    /// Payments whose signatures are checked in the next batch, in order,
    /// each with the key registered when it settled.
    unverified: Vec<Unverified>,
}

/// A payment read but not yet verified and replayed.
struct Unverified {
    seq: i64,
    signed: SignedPayment,
    key: VerifyingKey,
    settled_at_ms: i64,
}

/// A key change waiting for its position among the payments.
struct PendingChange {
    hseq: i64,
    change: Box<KeyChange>,
    after_seq: u64,
    at_ms: u64,
}

impl AuditVisitor for Auditor {
    fn account(&mut self, name: &str, key_spki: &[u8], balance: i64, key_not_after_s: i64) {
        let not_after_s = u64::try_from(key_not_after_s).unwrap_or(0);
        self.not_after.insert(name.to_owned(), not_after_s);
        self.account_keys
            .insert(name.to_owned(), (key_spki.to_vec(), not_after_s));
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

    fn grant(&mut self, row: StoredGrant) {
        self.log.row(RowRef::Grant(&row));
        let (name, amount) = (row.name.as_str(), row.amount);
        self.report.total_granted += amount.max(0) as u128;
        *self.expected.entry(name.to_owned()).or_insert(0) += i128::from(amount);
        let total = self.grants.entry(name.to_owned()).or_insert(0);
        *total = total.saturating_add(u64::try_from(amount).unwrap_or(0));
    }

    fn key_change(&mut self, row: StoredKeyChange) {
        self.log.row(RowRef::Key(&row));
        let (hseq, name) = (row.hseq, row.name.clone());
        match audit_row(&row, self.history_key.get(&name)) {
            Err(e) => self.violate(format!("key history {hseq} ({name}): {e}")),
            Ok(AuditedRow::Register {
                name,
                key,
                not_after_s,
            }) => {
                self.with_history.insert(name.clone());
                self.all_keys
                    .entry(name.clone())
                    .or_default()
                    .push(key.clone());
                self.history_key.insert(name.clone(), key.clone());
                self.keys.insert(name.clone(), key);
                self.not_after.insert(name, not_after_s);
            }
            Ok(AuditedRow::Change {
                change,
                after_seq,
                at_ms,
            }) => {
                if after_seq < self.last_after_seq {
                    self.violate(format!(
                        "key history {hseq} ({name}): out of order (after payment {after_seq}, an earlier change is after {})",
                        self.last_after_seq
                    ));
                }
                self.last_after_seq = self.last_after_seq.max(after_seq);
                let new_key = change.new_key().clone();
                self.all_keys.entry(name.clone()).or_default().push(new_key);
                self.history_key.insert(name, change.new_key().clone());
                self.pending.push_back(PendingChange {
                    hseq,
                    change,
                    after_seq,
                    at_ms,
                });
            }
        }
    }

    fn payment(&mut self, row: StoredPayment) {
        self.report.payments += 1;
        self.log.row(RowRef::Payment(&row));
        let seq = row.seq;
        self.apply_key_changes(u64::try_from(seq).unwrap_or(0));
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
        let Some(key) = self.keys.get(&row.payer).cloned() else {
            self.violate(format!("seq {seq}: payer {} has no account", row.payer));
            return;
        };
        // Signatures are checked in batches, under the rule single checks
        // follow (docs/PROTOCOL.md §4.4); the replay waits for them, in
        // order, and happens before any later key change is replayed.
        self.unverified.push(Unverified {
            seq,
            signed: payment,
            key,
            settled_at_ms: row.settled_at_ms,
        });
        if self.unverified.len() >= VERIFY_BATCH_MAX_DEFAULT {
            self.verify_and_replay();
        }
    }

    fn refusal(&mut self, row: StoredRefusal) {
        self.log.row(RowRef::Refusal(&row));
        self.report.rejections += 1;
    }

    fn log_leaf(&mut self, origin: &str, leaf_index: i64, record: &[u8]) {
        self.log.leaf(origin, leaf_index, record);
    }

    fn checkpoint(&mut self, checkpoint: StoredCheckpoint) {
        self.checkpoints.push(checkpoint);
    }

    fn channel(&mut self, row: StoredChannel) {
        self.log.row(RowRef::Channel(&row));
        self.report.channels += 1;
        let keys = self.all_keys.get(&row.payer).cloned().unwrap_or_default();
        match crate::ledger::channel_rows::audit_row(&row, &keys) {
            Ok(moves) => {
                *self.expected.entry(moves.payer).or_insert(0) += moves.payer_delta;
                *self.expected.entry(moves.payee).or_insert(0) += moves.payee_delta;
                self.report.total_held += moves.held;
            }
            Err(violations) => self.report.violations.extend(violations),
        }
    }
}

impl Auditor {
    fn violate(&mut self, violation: String) {
        self.report.violations.push(violation);
    }

    /// Checks the signatures of the payments read so far as one batch,
    /// then replays them through the rules in order.
    fn verify_and_replay(&mut self) {
        let (meta, payments): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unverified)
            .into_iter()
            .map(|u| ((u.seq, u.settled_at_ms), (u.signed, u.key)))
            .unzip();
        let answers = VerifiedPayment::try_verify_many(payments);
        for ((seq, settled_at_ms), answer) in meta.into_iter().zip(answers) {
            match answer {
                Ok(verified) => self.replay(seq, &verified, settled_at_ms),
                Err(signed) => {
                    let payer = &signed.payment.payer;
                    self.violate(format!(
                        "seq {seq}: signature does not verify with {payer}'s key"
                    ));
                }
            }
        }
    }

    /// Replays, through the rules, every key change decided before
    /// payment `seq`; payments from then on verify with the new keys.
    fn apply_key_changes(&mut self, seq: u64) {
        if self.pending.front().is_some_and(|p| p.after_seq < seq) {
            // The payments read before the change settled before it: they
            // go through the rules first.
            self.verify_and_replay();
        }
        while self.pending.front().is_some_and(|p| p.after_seq < seq) {
            let Some(pending) = self.pending.pop_front() else {
                return;
            };
            let model = self
                .model
                .get_or_insert_with(|| opening_model(&self.keys, &self.grants, &self.not_after));
            let change = &pending.change;
            match model.change_key(change, pending.at_ms) {
                Ok(()) => {
                    let name = change.name().as_str().to_owned();
                    self.keys.insert(name.clone(), change.new_key().clone());
                    self.not_after.insert(name, change.new_not_after_s());
                }
                Err(refusal) => self.violate(format!(
                    "key history {} ({}): the rules refuse it at its time: {refusal}",
                    pending.hseq,
                    change.name()
                )),
            }
        }
    }

    /// Replays one payment through the rules at its settlement time.
    fn replay(&mut self, seq: i64, payment: &VerifiedPayment, settled_at_ms: i64) {
        let model = self
            .model
            .get_or_insert_with(|| opening_model(&self.keys, &self.grants, &self.not_after));
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

    /// Every account's history must start with its registration and end
    /// with the key the account has now.
    fn check_final_keys(&mut self) {
        self.apply_key_changes(u64::MAX);
        // A name with a registration or a grant but no account row: the
        // account was deleted (possible with foreign keys off).
        let mut orphans: Vec<String> = self
            .with_history
            .iter()
            .chain(self.grants.keys())
            .filter(|n| !self.account_keys.contains_key(*n))
            .cloned()
            .collect();
        orphans.sort();
        orphans.dedup();
        for name in orphans {
            self.violate(format!("{name}: registered or granted, but no account row"));
        }
        let mut names: Vec<_> = self.account_keys.keys().cloned().collect();
        names.sort();
        for name in names {
            if !self.with_history.contains(&name) {
                self.violate(format!("{name}: no registration in the key history"));
                continue;
            }
            let (spki, not_after_s) = &self.account_keys[&name];
            let last = self.keys.get(&name).map(|k| k.spki_der().to_vec());
            let last_not_after = self.not_after.get(&name).copied();
            if last.as_ref() != Some(spki) || last_not_after != Some(*not_after_s) {
                self.violate(format!(
                    "{name}: the account's key is not the last key of its history"
                ));
            }
        }
    }

    /// The report, with the balance checks and the logs checked against
    /// the rows and the checkpoints read (signatures with one of
    /// `log_keys`, if any are given).
    pub fn finish_with(mut self, log_keys: &[VerifyingKey]) -> AuditReport {
        let checkpoints = std::mem::take(&mut self.checkpoints);
        let log = std::mem::take(&mut self.log).finish(&checkpoints, log_keys);
        let mut report = self.finish();
        report.checkpoints = checkpoints.len() as u64;
        report.checkpoint_signatures = log.signatures;
        report.log_leaves = log.leaves;
        report.logs = log.logs;
        report.unlogged_records = log.unlogged_records;
        report.violations.extend(log.violations);
        report
    }

    /// The report, with the balance checks (not the logs').
    fn finish(mut self) -> AuditReport {
        self.verify_and_replay();
        self.check_final_keys();
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
        if report.total_balances + report.total_held != report.total_granted {
            report.violations.push(format!(
                "balances sum to {} and open channels hold {}, but grants sum to {}",
                report.total_balances, report.total_held, report.total_granted
            ));
        }
        self.report
    }
}

/// Every account with its first key and all its grants, before any
/// payment or key change.
fn opening_model(
    keys: &HashMap<String, VerifyingKey>,
    grants: &HashMap<String, u64>,
    not_after: &HashMap<String, u64>,
) -> MemoryLedger {
    let mut model = MemoryLedger::new();
    for (name, key) in keys {
        let Ok(parsed) = Name::parse(name) else {
            continue;
        };
        let grant = grants.get(name).copied().unwrap_or(0);
        let not_after_s = not_after.get(name).copied().unwrap_or(0);
        // Names are unique in the store, so registration cannot be
        // refused here; a refusal would show up as unknown accounts.
        let _ = model.register(&parsed, key, not_after_s, grant);
    }
    model
}

pub(crate) fn parse_payment(row: &StoredPayment) -> Option<SignedPayment> {
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
