//! Copying a whole SQLite ledger into an empty PostgreSQL database
//! (`micropay-server migrate`), re-verifying it on the way.
//!
//! The source is read in one read transaction while holding the same
//! exclusive lock a server holds, so no server writes it meanwhile (a
//! running server makes the migration refuse to start). Every row goes
//! through the shared [`Auditor`] as it is copied (content hashes,
//! signatures, the replay through the settlement rules, the balances) and
//! into the target inside one PostgreSQL transaction, which is committed
//! only when the audit of the source found nothing; a target that already
//! holds any account, grant, payment, refusal or channel is refused.
//! Payment channels come along in whatever state they are (open ones
//! keep their hold, and the payee closes them on the new ledger), and so
//! do the logs' leaves and checkpoints: the servers' logs go on where they
//! were, and clients that remember a checkpoint find it. After the
//! commit the target is audited on its own and must agree with the source
//! on every count and total.

use std::path::Path;

use crate::ledger::audit::{audit_at, Auditor};
use crate::ledger::channel_rows::StoredChannel;
use crate::ledger::location::DbLocation;
use crate::ledger::postgres::import::PgImport;
use crate::ledger::sqlite::SqliteStore;
use crate::ledger::{
    AuditReport, AuditVisitor, LedgerError, LedgerStore, StoredKeyChange, StoredPayment,
};

/// An account row as stored.
#[derive(Debug, Clone)]
pub struct StoredAccount {
    /// Name.
    pub name: String,
    /// DER SubjectPublicKeyInfo of the registered key.
    pub public_key: Vec<u8>,
    /// Balance, minor units.
    pub balance: i64,
    /// When it opened, unix ms.
    pub created_at_ms: i64,
    /// The notAfter of the certificate behind the key, unix s.
    pub key_not_after_s: i64,
}

/// A grant row as stored.
#[derive(Debug, Clone)]
pub struct StoredGrant {
    /// Its position among grants.
    pub seq: i64,
    /// Who got it.
    pub name: String,
    /// Minor units.
    pub amount: i64,
    /// When, unix ms.
    pub granted_at_ms: i64,
}

/// A recorded refusal as stored.
#[derive(Debug, Clone)]
pub struct StoredRefusal {
    /// Payment id bytes.
    pub id: Vec<u8>,
    /// Payer name.
    pub payer: String,
    /// Payee name.
    pub payee: String,
    /// The refused payment's content hash.
    pub content_hash: Vec<u8>,
    /// Error code.
    pub code: String,
    /// Message.
    pub message: String,
    /// When, unix ms.
    pub decided_at_ms: i64,
}

/// Where an export sends every stored row: accounts first, then grants,
/// the key history, payments in `seq` order, then refusals. An error stops the export.
pub trait RowSink {
    /// An account.
    fn account(&mut self, row: StoredAccount) -> Result<(), LedgerError>;
    /// A grant.
    fn grant(&mut self, row: StoredGrant) -> Result<(), LedgerError>;
    /// A key-history row, in ascending `hseq` order, after the grants.
    fn key_change(&mut self, row: StoredKeyChange) -> Result<(), LedgerError>;
    /// A settled payment.
    fn payment(&mut self, row: StoredPayment) -> Result<(), LedgerError>;
    /// A recorded refusal.
    fn refusal(&mut self, row: StoredRefusal) -> Result<(), LedgerError>;
    /// A payment channel (open, closed or expired), after every refusal.
    fn channel(&mut self, row: StoredChannel) -> Result<(), LedgerError>;
    /// A leaf of a log, after every row: by origin, then leaf index.
    fn log_leaf(
        &mut self,
        origin: &str,
        leaf_index: i64,
        record: Vec<u8>,
    ) -> Result<(), LedgerError>;
}

/// An export fed to an audit visitor: audit reads what a migration reads.
pub(crate) struct Visiting<'a>(pub(crate) &'a mut dyn AuditVisitor);

impl RowSink for Visiting<'_> {
    fn account(&mut self, r: StoredAccount) -> Result<(), LedgerError> {
        self.0
            .account(&r.name, &r.public_key, r.balance, r.key_not_after_s);
        Ok(())
    }
    fn grant(&mut self, row: StoredGrant) -> Result<(), LedgerError> {
        self.0.grant(row);
        Ok(())
    }
    fn key_change(&mut self, row: StoredKeyChange) -> Result<(), LedgerError> {
        self.0.key_change(row);
        Ok(())
    }
    fn payment(&mut self, row: StoredPayment) -> Result<(), LedgerError> {
        self.0.payment(row);
        Ok(())
    }
    fn refusal(&mut self, row: StoredRefusal) -> Result<(), LedgerError> {
        self.0.refusal(row);
        Ok(())
    }
    fn channel(&mut self, row: StoredChannel) -> Result<(), LedgerError> {
        self.0.channel(row);
        Ok(())
    }
    fn log_leaf(&mut self, origin: &str, index: i64, record: Vec<u8>) -> Result<(), LedgerError> {
        self.0.log_leaf(origin, index, &record);
        Ok(())
    }
}

/// Why a migration did not happen; the target was left as it was.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The source could not be read (or a server runs on it).
    #[error("the source: {0}")]
    Source(LedgerError),
    /// The target could not be written.
    #[error("the target: {0}")]
    Target(LedgerError),
    /// The target already holds a ledger.
    #[error("the target is not empty ({0} rows in accounts, grants, payments and rejections); migrate only into an empty database")]
    NotEmpty(u64),
    /// The source does not audit clean: nothing was committed.
    #[error("the source does not audit clean ({} violation(s)), nothing was copied; first: {}", .0.len(), .0.first().map_or("", String::as_str))]
    Violations(Vec<String>),
    /// The target, audited after the commit, disagrees with the source.
    #[error("the target disagrees with the source after the copy: {0}")]
    Mismatch(String),
}

/// What a migration copied: the audit of the source (taken while
/// copying) and the audit of the target afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The source's audit.
    pub source: AuditReport,
    /// The target's audit after the commit.
    pub target: AuditReport,
}

/// Feeds every row to the auditor and to the target.
struct Copier<'a> {
    auditor: Auditor,
    target: &'a mut PgImport,
    last_seq: i64,
    /// The target's error, kept so it is reported as the target's.
    target_failed: Option<LedgerError>,
}

impl Copier<'_> {
    fn write_target(
        &mut self,
        write: impl FnOnce(&mut PgImport) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        write(self.target).map_err(|e| {
            self.target_failed = Some(e);
            LedgerError::Stopped
        })
    }
}

impl RowSink for Copier<'_> {
    fn account(&mut self, row: StoredAccount) -> Result<(), LedgerError> {
        let (name, key) = (&row.name, &row.public_key);
        self.auditor
            .account(name, key, row.balance, row.key_not_after_s);
        self.write_target(|t| t.account(&row))
    }

    fn grant(&mut self, row: StoredGrant) -> Result<(), LedgerError> {
        self.write_target(|t| t.grant(&row))?;
        self.auditor.grant(row);
        Ok(())
    }

    fn key_change(&mut self, row: StoredKeyChange) -> Result<(), LedgerError> {
        self.write_target(|t| t.key_change(&row))?;
        self.auditor.key_change(row);
        Ok(())
    }

    fn payment(&mut self, row: StoredPayment) -> Result<(), LedgerError> {
        self.write_target(|t| t.payment(&row))?;
        self.last_seq = row.seq;
        self.auditor.payment(row);
        Ok(())
    }

    fn refusal(&mut self, row: StoredRefusal) -> Result<(), LedgerError> {
        self.write_target(|t| t.refusal(&row))?;
        self.auditor.refusal(row);
        Ok(())
    }

    fn channel(&mut self, row: StoredChannel) -> Result<(), LedgerError> {
        self.write_target(|t| t.channel(&row))?;
        self.auditor.channel(row);
        Ok(())
    }

    fn log_leaf(&mut self, origin: &str, index: i64, record: Vec<u8>) -> Result<(), LedgerError> {
        self.auditor.log_leaf(origin, index, &record);
        self.write_target(|t| t.log_leaf(origin, index, &record))
    }
}

/// Copies the SQLite ledger at `from` into the empty PostgreSQL database
/// at `to_url` (see the module documentation).
pub fn migrate(from: &Path, to_url: &str) -> Result<MigrationReport, MigrateError> {
    let source = SqliteStore::open_for_export(from).map_err(MigrateError::Source)?;
    let mut target = PgImport::begin(to_url).map_err(MigrateError::Target)?;
    let present = target.rows_present().map_err(MigrateError::Target)?;
    if present > 0 {
        return Err(MigrateError::NotEmpty(present));
    }
    let mut copier = Copier {
        auditor: Auditor::default(),
        target: &mut target,
        last_seq: 0,
        target_failed: None,
    };
    // On any failure the target's transaction is rolled back when
    // `target` drops.
    if let Err(e) = source.export(&mut copier) {
        return Err(match copier.target_failed.take() {
            Some(target) => MigrateError::Target(target),
            None => MigrateError::Source(e),
        });
    }
    let last_seq = copier.last_seq;
    // The checkpoints come along with the logs they sign, so that clients
    // that remember them find the same logs on the new ledger.
    let checkpoints = source.checkpoints().map_err(MigrateError::Source)?;
    let report = copier.auditor.finish_with(&checkpoints, &[]);
    for c in &checkpoints {
        target.checkpoint(c).map_err(MigrateError::Target)?;
    }
    if !report.violations.is_empty() {
        return Err(MigrateError::Violations(report.violations));
    }
    target.commit(last_seq).map_err(MigrateError::Target)?;
    drop(source);
    let after = audit_at(&DbLocation::Postgres(to_url.to_owned())).map_err(MigrateError::Target)?;
    agree(&report, &after)?;
    Ok(MigrationReport {
        source: report,
        target: after,
    })
}

fn agree(source: &AuditReport, target: &AuditReport) -> Result<(), MigrateError> {
    if let Some(first) = target.violations.first() {
        return Err(MigrateError::Mismatch(format!(
            "the target's audit: {first}"
        )));
    }
    let pairs = [
        ("accounts", source.accounts as u128, target.accounts as u128),
        ("payments", source.payments as u128, target.payments as u128),
        (
            "refusals",
            source.rejections as u128,
            target.rejections as u128,
        ),
        ("granted", source.total_granted, target.total_granted),
        ("balances", source.total_balances, target.total_balances),
        ("channels", source.channels as u128, target.channels as u128),
        ("held", source.total_held, target.total_held),
    ];
    for (what, s, t) in pairs {
        if s != t {
            return Err(MigrateError::Mismatch(format!(
                "{what}: {s} in the source, {t} in the target"
            )));
        }
    }
    Ok(())
}
