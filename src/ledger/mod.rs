//! The ledger: accounts, grants, settled payments and recorded refusals,
//! kept durably behind the [`LedgerStore`] trait.
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | the trait every database implements, the types it speaks |
//! | [`handle`] | [`Ledger`]: what the server holds; queues writes to the group-commit writer, runs reads off the async runtime |
//! | [`group_commit`] | the single writer thread: drains the queue into batches, one commit each, answers after the commit |
//! | [`observer`] | [`CommitObserver`]: what the writer reports after each commit (batch size, commit time), for metrics |
//! | [`mod@audit`] | the checks every backend shares: signatures, replay through the rules, conservation, the log's checkpoints |
//! | [`log`] | the server's Merkle log of every change: the tree in memory, the batch's records and one signed checkpoint per batch (stored in the batch's transaction), proofs for replies |
//! | [`log_records`] | the record of each stored row kind, built once for the writer (from a batch's effects) and for audit (from the rows read back) |
//! | [`migrate`] | copying a whole SQLite ledger into an empty PostgreSQL database, audited on the way |
//! | [`channel_rows`] | payment channels as stored: the raw row, decoding it, what audit checks of it |
//! | [`key_history`] | the key-history rows (every key an account had) as written, stored and read |
//! | `key_audit` | rebuilding each stored key change (statement and signatures, or a rebind's certificate) for audit |
//! | [`location`] | [`DbLocation`]: an SQLite path or a PostgreSQL URL, parsed in one place, shown without passwords |
//! | [`sqlite`] | the embedded SQLite backend; the only place that knows SQL for it |
//! | [`postgres`] | the PostgreSQL backend, shared by several servers, and the presence table |
//! | `decode` | stored values back into domain values, for both backends |
//!
//! The settlement rules are not here: a backend gathers what a batch must
//! read, decides it with [`crate::core::batch::Batch`], writes the effects
//! in one transaction and commits.

pub mod audit;
pub mod channel_rows;
mod decode;
pub mod group_commit;
pub mod handle;
mod key_audit;
pub mod key_history;
pub mod location;
pub mod log;
pub mod log_records;
pub mod migrate;
pub mod observer;
pub mod postgres;
pub mod sqlite;

use crate::core::batch::Batch;
use crate::core::channel::{ChannelId, CloseRequest};
use crate::core::channel_rules::{ChannelRecord, ChannelRefusal, CloseOutcome, VerifiedCommitment};
use crate::core::keys::VerifyingKey;
use crate::core::name::Name;
use crate::core::payment::{PaymentId, Receipt, SignedPayment};
use crate::core::rotation::KeyChange;
use crate::core::rules::{LedgerView, Refusal, RegisteredKey, VerifiedPayment};

pub use audit::{audit, audit_at, audit_at_with_keys, AuditReport};
pub use handle::{KeyRegistry, Ledger, LedgerConfig};
pub use key_history::{KeyEntry, StoredKeyChange};
pub use location::{DbLocation, DbLocationError};
pub use log::{Log, LogConfig, NoSealer, Sealed, Sealer, StoredCheckpoint};
pub use migrate::{StoredGrant, StoredRefusal};
pub use observer::{CommitObserver, NoCommitObserver};

/// Why the ledger could not do what was asked (as opposed to a
/// [`Refusal`], which is the rules saying no).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database failed; the message says how.
    #[error("database: {0}")]
    Database(String),
    /// The configured initial balance is out of bounds.
    #[error("the initial balance must be at most {0}")]
    InitialBalance(u64),
    /// The database holds something the ledger cannot interpret.
    #[error("corrupt ledger: {0}")]
    Corrupt(String),
    /// Another process has the ledger open for writing.
    #[error("{} is in use by another micropay-server; stop that server first or choose another --db", .0.display())]
    InUse(std::path::PathBuf),
    /// The writer's queue is full.
    #[error("the ledger queue is full; retry shortly")]
    Busy,
    /// The writer has stopped.
    #[error("the ledger is shutting down")]
    Stopped,
    /// A commit failed; nothing of its batch was applied.
    #[error("the commit failed; nothing was moved")]
    CommitFailed,
    /// The database cannot be reached (yet); retrying later may work.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
}

/// A new account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Name.
    pub name: Name,
    /// Opening balance.
    pub balance: u64,
}

/// The decision on a settled payment: what its receipt says beyond the
/// payment itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// Ledger position.
    pub seq: u64,
    /// Decision time, unix ms.
    pub settled_at_ms: u64,
    /// Whether this was a replay of an earlier settlement (nothing moved).
    pub replay: bool,
    /// SHA-256 of the payment's canonical bytes.
    pub payment_hash: [u8; 32],
}

impl Settlement {
    /// The receipt for `payment` under this settlement.
    pub fn receipt(&self, payment: &SignedPayment) -> Receipt {
        Receipt {
            payment_id: payment.payment.id,
            payer: payment.payment.payer.clone(),
            payee: payment.payment.payee.clone(),
            amount_minor: payment.payment.amount_minor,
            seq: self.seq,
            settled_at_ms: self.settled_at_ms,
            payment_hash: self.payment_hash,
        }
    }
}

/// A payment's recorded outcome, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Settled: the payment and its settlement.
    Settled(Box<SignedPayment>, Settlement),
    /// Refused for good.
    Refused {
        /// Payer.
        payer: Name,
        /// Payee.
        payee: Name,
        /// Why.
        refusal: Refusal,
    },
}

/// One settled payment as history shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// Ledger position.
    pub seq: u64,
    /// Payment id.
    pub payment_id: PaymentId,
    /// Who paid.
    pub payer: String,
    /// Who was paid.
    pub payee: String,
    /// Minor units.
    pub amount_minor: u64,
    /// Memo.
    pub memo: String,
    /// Unix ms.
    pub settled_at_ms: u64,
}

/// A page of history read in one snapshot together with the caller's
/// balance in that same snapshot, so that a statement can anchor its
/// running balance exactly even while payments keep arriving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The rows, newest first.
    pub rows: Vec<HistoryRow>,
    /// The caller's balance in the snapshot the rows were read in; `None`
    /// when the caller has no account.
    pub balance_minor: Option<u64>,
}

/// One command for the writer, decided in arrival order.
#[derive(Debug)]
pub enum Command {
    /// Open an account bound to `key`.
    Register {
        /// The account's name.
        name: Name,
        /// Its key.
        key: VerifyingKey,
        /// The notAfter of the certificate that registers it, unix s.
        key_not_after_s: u64,
        /// That certificate's serial.
        key_serial: Vec<u8>,
    },
    /// Settle a verified payment.
    Settle(Box<VerifiedPayment>),
    /// Change an account's key (rotation, renewal, rebind).
    ChangeKey(Box<KeyChange>),
    /// Open a payment channel: hold n × value of the payer's balance.
    ChannelOpen(Box<VerifiedCommitment>),
    /// Close a channel: pay the revealed links to the payee, release the
    /// rest.
    ChannelClose {
        /// The close request.
        close: CloseRequest,
        /// Who asks (authenticated by mTLS); must be the payee.
        closer: Name,
    },
    /// Return an expired channel's hold to its payer.
    ChannelExpire(ChannelId),
}

impl Command {
    /// The channel this command names, if any: the backend reads it
    /// before deciding the batch.
    pub fn channel_id(&self) -> Option<ChannelId> {
        match self {
            Command::ChannelOpen(v) => Some(v.commitment().id),
            Command::ChannelClose { close, .. } => Some(close.id),
            Command::ChannelExpire(id) => Some(*id),
            _ => None,
        }
    }
}

/// The answer to one [`Command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The account opened.
    Registered(Account),
    /// The payment settled (now or before).
    Settled(Settlement),
    /// The account's key changed; the key registered now.
    KeyChanged(RegisteredKey),
    /// The rules refused.
    Refused(Refusal),
    /// A channel is open (now, or before when `replay`).
    ChannelOpened {
        /// The channel as recorded.
        record: Box<ChannelRecord>,
        /// Whether this repeats an earlier open.
        replay: bool,
    },
    /// A channel closed (now, or before when `replay`).
    ChannelClosed {
        /// What moved.
        outcome: CloseOutcome,
        /// Whether this repeats the first close.
        replay: bool,
    },
    /// An expired channel's hold returned to its payer.
    ChannelExpired {
        /// The amount returned.
        released_minor: u64,
    },
    /// The channel rules refused.
    ChannelRefused(ChannelRefusal),
}

/// What `audit` reads from a store, row by row, so that a ledger of any
/// size is audited in bounded memory (beyond one entry per account).
pub trait AuditVisitor {
    /// An account as stored, with the notAfter (unix s) of the
    /// certificate behind its key.
    fn account(&mut self, name: &str, key_spki: &[u8], balance: i64, key_not_after_s: i64);
    /// A grant.
    fn grant(&mut self, row: StoredGrant);
    /// A key-history row; called for every row in ascending `hseq`
    /// order, after the accounts and before the payments.
    fn key_change(&mut self, row: StoredKeyChange);
    /// A settled payment; called in ascending `seq` order.
    fn payment(&mut self, row: StoredPayment);
    /// A recorded refusal.
    fn refusal(&mut self, row: StoredRefusal);
    /// A payment channel as stored; called after the payments.
    fn channel(&mut self, row: channel_rows::StoredChannel);
    /// A leaf of a log, after every row: by origin, then leaf index.
    fn log_leaf(&mut self, origin: &str, leaf_index: i64, record: &[u8]);
    /// A stored checkpoint, after every leaf, read in the same snapshot
    /// (a server writing meanwhile must not make leaves and checkpoints
    /// disagree).
    fn checkpoint(&mut self, checkpoint: StoredCheckpoint);
}

/// A settled payment row as stored, before any interpretation: audit must
/// be able to report rows that do not parse.
#[derive(Debug, Clone)]
pub struct StoredPayment {
    /// Sequence number.
    pub seq: i64,
    /// Payment id bytes.
    pub id: Vec<u8>,
    /// Payer name.
    pub payer: String,
    /// Payee name.
    pub payee: String,
    /// Amount.
    pub amount: i64,
    /// Expiry, unix s.
    pub expires_at: i64,
    /// Memo.
    pub memo: String,
    /// Signature bytes.
    pub signature: Vec<u8>,
    /// Stored content hash.
    pub content_hash: Vec<u8>,
    /// Settlement time, unix ms.
    pub settled_at_ms: i64,
}

/// One database behind the ledger. Every method blocks; [`Ledger`] calls
/// them from the writer thread or from blocking tasks, never on the async
/// runtime. Only the group-commit writer calls [`LedgerStore::commit`].
pub trait LedgerStore: Send + Sync + 'static {
    /// Every registered key, read once at start.
    fn keys(&self) -> Result<Vec<(Name, VerifyingKey)>, LedgerError>;
    /// The registered key of `name`, if any.
    fn key(&self, name: &Name) -> Result<Option<VerifyingKey>, LedgerError>;
    /// Every key `name` ever had, oldest first (empty without an
    /// account).
    fn key_history(&self, name: &Name) -> Result<Vec<KeyEntry>, LedgerError>;
    /// Decides `batch` at `now_ms` with the rules and commits the effects
    /// in one durable transaction, together with the log records and
    /// checkpoint `sealer` returns for the batch's effects; answers in the batch's order. On
    /// error nothing of the batch is applied (the caller tells `sealer`).
    fn commit(
        &self,
        batch: &[Command],
        now_ms: u64,
        sealer: &mut dyn Sealer,
    ) -> Result<Vec<Answer>, LedgerError>;
    /// Every stored checkpoint, by origin then tree size.
    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, LedgerError>;
    /// Whether any log has a leaf (a ledger without one is adopted).
    fn has_log(&self) -> Result<bool, LedgerError>;
    /// The committed balance of `name`.
    fn balance(&self, name: &Name) -> Result<Option<u64>, LedgerError>;
    /// Up to `limit` of `name`'s payments with `seq < before_seq`, newest
    /// first, with `name`'s balance read in the same snapshot.
    fn history(
        &self,
        name: &Name,
        limit: u32,
        before_seq: Option<u64>,
    ) -> Result<HistoryPage, LedgerError>;
    /// The recorded outcome of payment `id` in which `party` is payer or
    /// payee.
    fn outcome(&self, party: &Name, id: &PaymentId) -> Result<Option<Outcome>, LedgerError>;
    /// The channel `id`, if it was ever opened.
    fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, LedgerError>;
    /// The channels in which `name` is payer or payee, newest first, at
    /// most `limit`.
    fn channels_of(&self, name: &Name, limit: u32) -> Result<Vec<ChannelRecord>, LedgerError>;
    /// The sum of the holds of `name`'s open channels as payer.
    fn held(&self, name: &Name) -> Result<u64, LedgerError>;
    /// Up to `limit` open channels whose hold may return to the payer at
    /// `now_ms` (past expiry plus grace).
    fn expirable_channels(&self, now_ms: u64, limit: u32) -> Result<Vec<ChannelId>, LedgerError>;
    /// Feeds every stored row to `visitor`.
    fn scan(&self, visitor: &mut dyn AuditVisitor) -> Result<(), LedgerError>;
    /// Called once by the writer when it stops (e.g. to checkpoint).
    fn close(&self) -> Result<(), LedgerError>;
}

/// Decides one command of a batch with the rules, as every backend's
/// writer does: a registration grants `initial_balance`.
pub fn decide_command<V: LedgerView>(
    batch: &mut Batch<'_, V>,
    command: &Command,
    initial_balance: u64,
    now_ms: u64,
) -> Answer {
    match command {
        Command::Register {
            name,
            key,
            key_not_after_s,
            key_serial,
        } => match batch.register(
            name,
            (key, *key_not_after_s, key_serial),
            initial_balance,
            now_ms,
        ) {
            Ok(()) => Answer::Registered(Account {
                name: name.clone(),
                balance: initial_balance,
            }),
            Err(refusal) => Answer::Refused(refusal),
        },
        Command::Settle(payment) => match batch.settle(payment, now_ms) {
            Ok(settled) => Answer::Settled(Settlement {
                seq: settled.seq,
                settled_at_ms: settled.settled_at_ms,
                replay: settled.replay,
                payment_hash: payment.content_hash(),
            }),
            Err(refusal) => Answer::Refused(refusal),
        },
        Command::ChangeKey(change) => match batch.change_key(change, now_ms) {
            Ok(registered) => Answer::KeyChanged(registered),
            Err(refusal) => Answer::Refused(refusal),
        },
        Command::ChannelOpen(verified) => match batch.open_channel(verified, now_ms) {
            Ok((record, replay)) => Answer::ChannelOpened {
                record: Box::new(record),
                replay,
            },
            Err(refusal) => Answer::ChannelRefused(refusal),
        },
        Command::ChannelClose { close, closer } => {
            match batch.close_channel(close, closer, now_ms) {
                Ok((outcome, replay)) => Answer::ChannelClosed { outcome, replay },
                Err(refusal) => Answer::ChannelRefused(refusal),
            }
        }
        Command::ChannelExpire(id) => match batch.expire_channel(id, now_ms) {
            Ok(released_minor) => Answer::ChannelExpired { released_minor },
            Err(refusal) => Answer::ChannelRefused(refusal),
        },
    }
}
