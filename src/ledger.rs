//! The ledger: accounts, grants, settled payments and refusals in one
//! SQLite file (WAL, `synchronous=FULL`).
//!
//! One writer thread owns the only write connection and decides every
//! registration and settlement in arrival order. It drains whatever is
//! queued (up to [`GROUP_COMMIT_BATCH_MAX`]), decides and writes it all in
//! one transaction, commits (one fsync for the whole batch), and only then
//! answers each request: nothing is acknowledged before it is durable, and
//! under load many settlements share one fsync (group commit).
//!
//! Signatures are checked before a payment reaches the writer, by the
//! connection tasks, on all cores; the writer trusts that a [`Command`]
//! carries a verified payment and re-checks everything else.
//!
//! Reads (balance, history, status) use a separate read-only connection,
//! which WAL lets run beside the writer and which only ever sees committed
//! (so acknowledged) state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use crate::keys::VerifyingKey;
use crate::limits::{
    ACCOUNTS_MAX, GROUP_COMMIT_BATCH_MAX, HISTORY_PAGE_MAX, INITIAL_BALANCE_MAX, LEDGER_QUEUE_MAX,
};
use crate::name::Name;
use crate::payment::{content_hash, Payment, PaymentId, Receipt, SignedPayment};
use crate::protocol::{ErrorCode, HistoryEntry, WireError};

/// Why the ledger could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The configured initial balance is out of bounds.
    #[error("the initial balance must be at most {INITIAL_BALANCE_MAX}")]
    InitialBalance,
    /// The file holds something the ledger cannot interpret.
    #[error("corrupt ledger: {0}")]
    Corrupt(String),
    /// The writer has stopped.
    #[error("the ledger writer has stopped")]
    Stopped,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (
    name          TEXT PRIMARY KEY,
    public_key    BLOB NOT NULL,
    balance       INTEGER NOT NULL CHECK (balance >= 0),
    created_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS grants (
    seq           INTEGER PRIMARY KEY,
    name          TEXT NOT NULL REFERENCES accounts(name),
    amount        INTEGER NOT NULL CHECK (amount >= 0),
    granted_at_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS payments (
    seq           INTEGER PRIMARY KEY,
    id            BLOB NOT NULL UNIQUE,
    payer         TEXT NOT NULL REFERENCES accounts(name),
    payee         TEXT NOT NULL REFERENCES accounts(name),
    amount        INTEGER NOT NULL CHECK (amount > 0),
    expires_at    INTEGER NOT NULL,
    memo          TEXT NOT NULL,
    signature     BLOB NOT NULL,
    content_hash  BLOB NOT NULL,
    settled_at_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS payments_by_payer ON payments(payer, seq);
CREATE INDEX IF NOT EXISTS payments_by_payee ON payments(payee, seq);
CREATE TABLE IF NOT EXISTS rejections (
    id             BLOB PRIMARY KEY,
    payer          TEXT NOT NULL,
    payee          TEXT NOT NULL,
    content_hash   BLOB NOT NULL,
    code           TEXT NOT NULL,
    message        TEXT NOT NULL,
    decided_at_ms  INTEGER NOT NULL
) STRICT;
";

/// How the ledger is opened.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// The SQLite file.
    pub path: PathBuf,
    /// Balance granted to each new account.
    pub initial_balance: u64,
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
    /// SHA-256 of the payment's canonical bytes, computed once by the
    /// writer.
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

/// What the writer is asked to do.
enum Command {
    Register {
        name: Name,
        key: VerifyingKey,
        reply: oneshot::Sender<Result<Account, WireError>>,
    },
    Settle {
        payment: Box<SignedPayment>,
        reply: oneshot::Sender<Result<Settlement, WireError>>,
    },
    Shutdown,
}

/// A payment's recorded outcome, for `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Settled: the payment and its settlement.
    Settled(Box<SignedPayment>, Settlement),
    /// Refused for good.
    Rejected {
        /// Payer.
        payer: String,
        /// Payee.
        payee: String,
        /// Why.
        error: WireError,
    },
}

/// Registered keys, shared by the writer (which adds to it after each
/// durable registration) and the connections (which verify with it).
pub type KeyRegistry = Arc<RwLock<HashMap<Name, Arc<VerifyingKey>>>>;

/// Handle to the ledger: queue to the writer plus a reader connection.
pub struct Ledger {
    commands: mpsc::Sender<Command>,
    reader: Arc<Mutex<Connection>>,
    keys: KeyRegistry,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Ledger {
    /// Opens (creating if needed) the ledger and starts its writer.
    pub fn open(config: &LedgerConfig) -> Result<Ledger, LedgerError> {
        if config.initial_balance > INITIAL_BALANCE_MAX {
            return Err(LedgerError::InitialBalance);
        }
        let conn = open_write(&config.path)?;
        let state = WriterState::load(conn, config.initial_balance)?;
        let keys: KeyRegistry = Arc::new(RwLock::new(state.load_keys()?));
        let reader = Connection::open_with_flags(
            &config.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        let (tx, rx) = mpsc::channel(LEDGER_QUEUE_MAX);
        let writer_keys = keys.clone();
        let writer = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || state.run(rx, writer_keys))
            .map_err(|e| LedgerError::Corrupt(format!("cannot start the writer: {e}")))?;
        Ok(Ledger {
            commands: tx,
            reader: Arc::new(Mutex::new(reader)),
            keys,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The registered key of `name`, if any.
    pub fn key_of(&self, name: &Name) -> Option<Arc<VerifyingKey>> {
        self.keys.read().ok()?.get(name).cloned()
    }

    /// Whether `name` has an account.
    pub fn is_registered(&self, name: &Name) -> bool {
        self.keys.read().is_ok_and(|k| k.contains_key(name))
    }

    /// Creates an account bound to `key`; answers once durable.
    pub async fn register(&self, name: Name, key: VerifyingKey) -> Result<Account, WireError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Command::Register { name, key, reply })?;
        rx.await.map_err(|_| stopped())?
    }

    /// Settles a payment whose signature the caller has verified with the
    /// payer's registered key; answers once the outcome is durable.
    pub async fn settle(&self, payment: SignedPayment) -> Result<Settlement, WireError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Command::Settle {
            payment: Box::new(payment),
            reply,
        })?;
        rx.await.map_err(|_| stopped())?
    }

    fn submit(&self, command: Command) -> Result<(), WireError> {
        self.commands.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                WireError::new(ErrorCode::Busy, "the ledger queue is full; retry shortly")
            }
            mpsc::error::TrySendError::Closed(_) => stopped(),
        })
    }

    /// Lets the writer finish everything queued, commit, checkpoint the WAL
    /// and stop. Later requests are refused.
    pub async fn close(&self) {
        // A full queue means the writer is still draining; wait for room.
        let _ = self.commands.send(Command::Shutdown).await;
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// Runs a read on the reader connection off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> Result<T, WireError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader
                .lock()
                .map_err(|_| internal("reader lock poisoned"))?;
            f(&conn).map_err(|e| internal(&e.to_string()))
        })
        .await
        .map_err(|e| internal(&e.to_string()))?
    }

    /// The committed balance of `name`.
    pub async fn balance(&self, name: &Name) -> Result<Option<u64>, WireError> {
        let name = name.to_string();
        self.read(move |c| query_balance(c, &name)).await
    }

    /// A page of `name`'s payments, newest first.
    pub async fn history(
        &self,
        name: &Name,
        limit: u32,
        before_seq: Option<u64>,
    ) -> Result<Vec<HistoryEntry>, WireError> {
        let name = name.to_string();
        let limit = limit.clamp(1, HISTORY_PAGE_MAX);
        let before = before_seq.map_or(i64::MAX, |s| i64::try_from(s).unwrap_or(i64::MAX));
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, id, payer, payee, amount, memo, settled_at_ms FROM payments
                 WHERE seq < ?2 AND (payer = ?1 OR payee = ?1)
                 ORDER BY seq DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![name, before, limit], |r| {
                Ok(HistoryEntry {
                    seq: r.get::<_, i64>(0)? as u64,
                    payment_id: hex::encode(r.get::<_, Vec<u8>>(1)?),
                    payer: r.get(2)?,
                    payee: r.get(3)?,
                    amount: r.get::<_, i64>(4)? as u64,
                    memo: r.get(5)?,
                    settled_at_ms: r.get::<_, i64>(6)? as u64,
                })
            })?;
            rows.collect()
        })
        .await
    }

    /// The recorded outcome of a payment id.
    pub async fn outcome(&self, id: PaymentId) -> Result<Option<Outcome>, WireError> {
        self.read(move |c| query_outcome(c, &id)).await
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // If close() was not called (a test, a panic), let the writer
        // finish on its own: dropping the sender ends its loop.
        if let Ok(mut w) = self.writer.lock() {
            if let Some(handle) = w.take() {
                let _ = self.commands.try_send(Command::Shutdown);
                let _ = handle.join();
            }
        }
    }
}

fn stopped() -> WireError {
    WireError::new(ErrorCode::Busy, "the ledger is shutting down")
}

fn internal(m: &str) -> WireError {
    WireError::new(ErrorCode::Internal, format!("ledger: {m}"))
}

/// Page cache of the writer connection, KiB.
const WRITER_CACHE_KIB: i64 = 64 * 1024;

/// WAL size, in 4 KiB pages, at which SQLite folds it into the main file.
const WAL_CHECKPOINT_PAGES: i64 = 16 * 1024;

fn open_write(path: &Path) -> Result<Connection, LedgerError> {
    let conn = Connection::open(path)?;
    // WAL lets readers run beside the writer; FULL makes every commit
    // durable before it returns, which is what an acknowledgement promises.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // The writer's working set (the hot index pages) stays in memory, and
    // the WAL is folded into the main file every 64 MiB rather than every
    // 4 MiB: both cut the pages written per settlement several-fold.
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    Ok(conn)
}

fn query_balance(c: &Connection, name: &str) -> Result<Option<u64>, rusqlite::Error> {
    c.prepare_cached("SELECT balance FROM accounts WHERE name = ?1")?
        .query_row([name], |r| r.get::<_, i64>(0))
        .optional()
        .map(|b| b.map(|b| b as u64))
}

fn query_outcome(c: &Connection, id: &PaymentId) -> Result<Option<Outcome>, rusqlite::Error> {
    let settled = c
        .prepare_cached(
            "SELECT payer, payee, amount, expires_at, memo, signature, seq, settled_at_ms
             FROM payments WHERE id = ?1",
        )?
        .query_row([&id.0[..]], |r| {
            let payer: String = r.get(0)?;
            let payee: String = r.get(1)?;
            Ok((
                payer,
                payee,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, String>(4)?,
                r.get::<_, Vec<u8>>(5)?,
                r.get::<_, i64>(6)? as u64,
                r.get::<_, i64>(7)? as u64,
            ))
        })
        .optional()?;
    if let Some((payer, payee, amount, expires_at, memo, signature, seq, settled_at_ms)) = settled {
        let (Ok(payer), Ok(payee)) = (Name::parse(&payer), Name::parse(&payee)) else {
            return Err(rusqlite::Error::InvalidQuery);
        };
        let payment = SignedPayment {
            payment: Payment {
                id: *id,
                payer,
                payee,
                amount_minor: amount,
                expires_at_s: expires_at,
                memo,
            },
            signature,
        };
        let payment_hash = payment.content_hash();
        return Ok(Some(Outcome::Settled(
            Box::new(payment),
            Settlement {
                seq,
                settled_at_ms,
                replay: true,
                payment_hash,
            },
        )));
    }
    c.prepare_cached("SELECT payer, payee, code, message FROM rejections WHERE id = ?1")?
        .query_row([&id.0[..]], |r| {
            let code: String = r.get(2)?;
            Ok(Outcome::Rejected {
                payer: r.get(0)?,
                payee: r.get(1)?,
                error: WireError::new(
                    ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal),
                    r.get::<_, String>(3)?,
                ),
            })
        })
        .optional()
}

/// The writer's in-memory view, always equal to the committed database
/// plus the current, uncommitted batch.
struct WriterState {
    stats: WriterStats,
    conn: Connection,
    initial_balance: u64,
    balances: HashMap<Name, u64>,
    last_seq: u64,
}

/// Where the writer's time goes, logged when it stops: the figures behind
/// the group-commit numbers in docs/BENCHMARKS.md.
#[derive(Debug, Default)]
struct WriterStats {
    batches: u64,
    commands: u64,
    /// Time spent deciding and writing rows, µs.
    decide_us: u64,
    /// Time spent in COMMIT (WAL write and fsync), µs.
    commit_us: u64,
}

/// One decided command waiting for its batch to commit.
enum Pending {
    Register(
        oneshot::Sender<Result<Account, WireError>>,
        Result<Account, WireError>,
        Option<VerifyingKey>,
    ),
    Settle(
        oneshot::Sender<Result<Settlement, WireError>>,
        Result<Settlement, WireError>,
    ),
}

impl WriterState {
    fn load(conn: Connection, initial_balance: u64) -> Result<WriterState, LedgerError> {
        let mut balances = HashMap::new();
        {
            let mut stmt = conn.prepare("SELECT name, balance FROM accounts")?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let name: String = row.get(0)?;
                let balance: i64 = row.get(1)?;
                let name = Name::parse(&name)
                    .map_err(|e| LedgerError::Corrupt(format!("account {name:?}: {e}")))?;
                let balance = u64::try_from(balance)
                    .map_err(|_| LedgerError::Corrupt(format!("negative balance of {name}")))?;
                balances.insert(name, balance);
            }
        }
        let last_seq: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM payments", [], |r| {
                r.get(0)
            })?;
        Ok(WriterState {
            stats: WriterStats::default(),
            conn,
            initial_balance,
            balances,
            last_seq: last_seq as u64,
        })
    }

    fn load_keys(&self) -> Result<HashMap<Name, Arc<VerifyingKey>>, LedgerError> {
        let mut keys = HashMap::new();
        let mut stmt = self.conn.prepare("SELECT name, public_key FROM accounts")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let name: String = row.get(0)?;
            let spki: Vec<u8> = row.get(1)?;
            let parsed = Name::parse(&name)
                .ok()
                .zip(VerifyingKey::from_spki_der(&spki).ok());
            let Some((name, key)) = parsed else {
                return Err(LedgerError::Corrupt(format!(
                    "account {name:?} has a bad key"
                )));
            };
            keys.insert(name, Arc::new(key));
        }
        Ok(keys)
    }

    fn run(mut self, mut rx: mpsc::Receiver<Command>, keys: KeyRegistry) {
        let mut batch = Vec::with_capacity(GROUP_COMMIT_BATCH_MAX);
        let mut stopping = false;
        while !stopping {
            let Some(first) = rx.blocking_recv() else {
                break;
            };
            batch.push(first);
            while batch.len() < GROUP_COMMIT_BATCH_MAX {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(_) => break,
                }
            }
            self.stats.batches += 1;
            self.stats.commands += batch.len() as u64;
            stopping = self.apply_batch(&mut batch, &keys);
        }
        // Fold the WAL back into the main file so the database is one
        // self-contained file after a clean stop.
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!("WAL checkpoint at shutdown failed: {e}");
        }
        let st = &self.stats;
        tracing::info!(
            batches = st.batches,
            commands = st.commands,
            per_commit = st.commands as f64 / st.batches.max(1) as f64,
            decide_us_per_command = st.decide_us as f64 / st.commands.max(1) as f64,
            commit_us_per_batch = st.commit_us as f64 / st.batches.max(1) as f64,
            "ledger writer stopped"
        );
    }

    /// Decides and commits one batch; answers only after the commit.
    /// Returns whether a shutdown was requested.
    fn apply_batch(&mut self, batch: &mut Vec<Command>, keys: &KeyRegistry) -> bool {
        let started = std::time::Instant::now();
        let now_ms = crate::clock::now_ms();
        let mut pending = Vec::with_capacity(batch.len());
        let mut stopping = false;
        let snapshot_seq = self.last_seq;
        let mut touched: HashMap<Name, u64> = HashMap::new();
        let result = (|| -> Result<(), rusqlite::Error> {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            for cmd in batch.drain(..) {
                match cmd {
                    Command::Register { name, key, reply } => {
                        let outcome = self.register(&name, &key, now_ms, &mut touched)?;
                        let key = outcome.is_ok().then_some(key);
                        pending.push(Pending::Register(reply, outcome, key));
                    }
                    Command::Settle { payment, reply } => {
                        let outcome = self.settle(&payment, now_ms, &mut touched)?;
                        pending.push(Pending::Settle(reply, outcome));
                    }
                    Command::Shutdown => stopping = true,
                }
            }
            let decided = std::time::Instant::now();
            self.stats.decide_us += decided.duration_since(started).as_micros() as u64;
            let commit = self.conn.execute_batch("COMMIT");
            self.stats.commit_us += decided.elapsed().as_micros() as u64;
            commit
        })();
        match result {
            Ok(()) => {
                // Durable: publish new keys, then answer.
                if let Ok(mut registry) = keys.write() {
                    for p in &pending {
                        if let Pending::Register(_, Ok(account), Some(key)) = p {
                            registry.insert(account.name.clone(), Arc::new(key.clone()));
                        }
                    }
                }
                for p in pending {
                    match p {
                        Pending::Register(tx, outcome, _) => {
                            let _ = tx.send(outcome);
                        }
                        Pending::Settle(tx, outcome) => {
                            let _ = tx.send(outcome);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!("ledger commit failed, batch refused: {e}");
                let _ = self.conn.execute_batch("ROLLBACK");
                // Undo the in-memory effects of the failed batch.
                for (name, balance) in touched {
                    if balance == u64::MAX {
                        self.balances.remove(&name);
                    } else {
                        self.balances.insert(name, balance);
                    }
                }
                self.last_seq = snapshot_seq;
                for p in pending {
                    let err = internal("the commit failed; nothing was moved");
                    match p {
                        Pending::Register(tx, _, _) => {
                            let _ = tx.send(Err(err));
                        }
                        Pending::Settle(tx, _) => {
                            let _ = tx.send(Err(err));
                        }
                    }
                }
            }
        }
        stopping
    }

    /// Remembers an account's balance before its first change in a batch
    /// (`u64::MAX` marks "did not exist"), so a failed commit can be undone.
    fn remember(&self, touched: &mut HashMap<Name, u64>, name: &Name) {
        if !touched.contains_key(name) {
            let before = self.balances.get(name).copied().unwrap_or(u64::MAX);
            touched.insert(name.clone(), before);
        }
    }

    fn register(
        &mut self,
        name: &Name,
        key: &VerifyingKey,
        now_ms: u64,
        touched: &mut HashMap<Name, u64>,
    ) -> Result<Result<Account, WireError>, rusqlite::Error> {
        if self.balances.contains_key(name) {
            return Ok(Err(WireError::new(
                ErrorCode::AlreadyRegistered,
                format!("{name} already has an account"),
            )));
        }
        if self.balances.len() as u64 >= ACCOUNTS_MAX {
            return Ok(Err(WireError::new(
                ErrorCode::Busy,
                "the ledger holds the maximum number of accounts",
            )));
        }
        let grant = self.initial_balance as i64;
        self.conn
            .prepare_cached(
                "INSERT INTO accounts (name, public_key, balance, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![name.as_str(), key.spki_der(), grant, now_ms as i64])?;
        self.conn
            .prepare_cached("INSERT INTO grants (name, amount, granted_at_ms) VALUES (?1, ?2, ?3)")?
            .execute(params![name.as_str(), grant, now_ms as i64])?;
        self.remember(touched, name);
        self.balances.insert(name.clone(), self.initial_balance);
        Ok(Ok(Account {
            name: name.clone(),
            balance: self.initial_balance,
        }))
    }

    fn settle(
        &mut self,
        signed: &SignedPayment,
        now_ms: u64,
        touched: &mut HashMap<Name, u64>,
    ) -> Result<Result<Settlement, WireError>, rusqlite::Error> {
        let p = &signed.payment;
        let canonical = p.canonical_bytes();
        let hash = content_hash(&canonical);

        // Rule 5: an id seen before returns its original outcome, or a
        // conflict when the content differs.
        let seen = self
            .conn
            .prepare_cached("SELECT content_hash, seq, settled_at_ms FROM payments WHERE id = ?1")?
            .query_row([&p.id.0[..]], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .optional()?;
        if let Some((stored_hash, seq, settled_at_ms)) = seen {
            if stored_hash != hash {
                return Ok(Err(conflict(&p.id)));
            }
            return Ok(Ok(Settlement {
                seq: seq as u64,
                settled_at_ms: settled_at_ms as u64,
                replay: true,
                payment_hash: hash,
            }));
        }
        let refused = self
            .conn
            .prepare_cached("SELECT content_hash, code, message FROM rejections WHERE id = ?1")?
            .query_row([&p.id.0[..]], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .optional()?;
        if let Some((stored_hash, code, message)) = refused {
            if stored_hash != hash {
                return Ok(Err(conflict(&p.id)));
            }
            let code = ErrorCode::parse(&code).unwrap_or(ErrorCode::Internal);
            return Ok(Err(WireError::new(code, message)));
        }

        // Rules 3 and 4, decided now, recorded either way.
        let decision = self.decide(p, now_ms);
        match decision {
            Err(error) => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO rejections (id, payer, payee, content_hash, code, message, decided_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(params![
                        &p.id.0[..],
                        p.payer.as_str(),
                        p.payee.as_str(),
                        &hash[..],
                        error.code.as_str(),
                        error.message,
                        now_ms as i64
                    ])?;
                Ok(Err(error))
            }
            Ok((payer_after, payee_after)) => {
                let seq = self.last_seq + 1;
                // amount <= payer's balance <= total supply < i64::MAX.
                assert!(p.amount_minor <= i64::MAX as u64);
                self.conn
                    .prepare_cached(
                        "INSERT INTO payments (seq, id, payer, payee, amount, expires_at, memo, signature, content_hash, settled_at_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                    )?
                    .execute(params![
                        seq as i64,
                        &p.id.0[..],
                        p.payer.as_str(),
                        p.payee.as_str(),
                        p.amount_minor as i64,
                        p.expires_at_s as i64,
                        p.memo,
                        signed.signature,
                        &hash[..],
                        now_ms as i64
                    ])?;
                let mut update = self
                    .conn
                    .prepare_cached("UPDATE accounts SET balance = ?2 WHERE name = ?1")?;
                update.execute(params![p.payer.as_str(), payer_after as i64])?;
                update.execute(params![p.payee.as_str(), payee_after as i64])?;
                drop(update);
                self.remember(touched, &p.payer);
                self.remember(touched, &p.payee);
                self.balances.insert(p.payer.clone(), payer_after);
                self.balances.insert(p.payee.clone(), payee_after);
                self.last_seq = seq;
                Ok(Ok(Settlement {
                    seq,
                    settled_at_ms: now_ms,
                    replay: false,
                    payment_hash: hash,
                }))
            }
        }
    }

    /// The new balances of payer and payee, or why the payment is refused.
    fn decide(&self, p: &Payment, now_ms: u64) -> Result<(u64, u64), WireError> {
        p.check_fields()?;
        p.check_time(now_ms / 1000)?;
        let payer_balance = *self.balances.get(&p.payer).ok_or_else(|| {
            WireError::new(
                ErrorCode::UnknownPayer,
                format!("{} has no account", p.payer),
            )
        })?;
        let payee_balance = *self.balances.get(&p.payee).ok_or_else(|| {
            WireError::new(
                ErrorCode::UnknownPayee,
                format!("{} has no account", p.payee),
            )
        })?;
        let payer_after = payer_balance.checked_sub(p.amount_minor).ok_or_else(|| {
            WireError::new(
                ErrorCode::InsufficientFunds,
                format!(
                    "{} has {} and cannot pay {}",
                    p.payer, payer_balance, p.amount_minor
                ),
            )
        })?;
        // Cannot overflow while the supply is bounded, but money is never
        // allowed to appear from an overflow.
        let payee_after = payee_balance
            .checked_add(p.amount_minor)
            .ok_or_else(|| WireError::new(ErrorCode::Internal, "balance overflow"))?;
        Ok((payer_after, payee_after))
    }
}

fn conflict(id: &PaymentId) -> WireError {
    WireError::new(
        ErrorCode::Conflict,
        format!("payment id {id} was already used for a different payment"),
    )
}

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

/// Checks a ledger file: every stored payment's signature verifies with
/// the payer's registered key and its content hash matches; sequence
/// numbers have no gaps; every balance equals its grants plus what it
/// received minus what it paid; and the balances sum to the grants.
pub fn audit(path: &Path) -> Result<AuditReport, LedgerError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    // A missing schema means this is not a ledger at all.
    let tables: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND name IN ('accounts','grants','payments','rejections')",
        [],
        |r| r.get(0),
    )?;
    if tables != 4 {
        return Err(LedgerError::Corrupt(format!(
            "{} is not a micropay ledger",
            path.display()
        )));
    }
    let mut report = AuditReport::default();
    let mut keys: HashMap<String, VerifyingKey> = HashMap::new();
    let mut expected: HashMap<String, i128> = HashMap::new();
    let mut stored: HashMap<String, i128> = HashMap::new();
    {
        let mut stmt = conn.prepare("SELECT name, public_key, balance FROM accounts")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let name: String = r.get(0)?;
            let spki: Vec<u8> = r.get(1)?;
            let balance: i64 = r.get(2)?;
            report.accounts += 1;
            if balance < 0 {
                report
                    .violations
                    .push(format!("{name}: negative balance {balance}"));
            }
            report.total_balances += balance.max(0) as u128;
            stored.insert(name.clone(), i128::from(balance));
            expected.insert(name.clone(), 0);
            match VerifyingKey::from_spki_der(&spki) {
                Ok(key) => {
                    keys.insert(name, key);
                }
                Err(e) => report.violations.push(format!("{name}: unusable key: {e}")),
            }
        }
    }
    {
        let mut stmt = conn.prepare("SELECT name, amount FROM grants")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let name: String = r.get(0)?;
            let amount: i64 = r.get(1)?;
            report.total_granted += amount.max(0) as u128;
            *expected.entry(name).or_insert(0) += i128::from(amount);
        }
    }
    {
        let mut stmt = conn.prepare(
            "SELECT seq, id, payer, payee, amount, expires_at, memo, signature, content_hash
             FROM payments ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        let mut next_seq = 1i64;
        while let Some(r) = rows.next()? {
            let seq: i64 = r.get(0)?;
            let id: Vec<u8> = r.get(1)?;
            let payer: String = r.get(2)?;
            let payee: String = r.get(3)?;
            let amount: i64 = r.get(4)?;
            let expires_at: i64 = r.get(5)?;
            let memo: String = r.get(6)?;
            let signature: Vec<u8> = r.get(7)?;
            let hash: Vec<u8> = r.get(8)?;
            report.payments += 1;
            if seq != next_seq {
                report
                    .violations
                    .push(format!("seq {seq}: expected {next_seq} (gap)"));
            }
            next_seq = seq + 1;
            *expected.entry(payer.clone()).or_insert(0) -= i128::from(amount);
            *expected.entry(payee.clone()).or_insert(0) += i128::from(amount);
            let parsed = (|| {
                let id: [u8; 16] = id.as_slice().try_into().ok()?;
                Some(SignedPayment {
                    payment: Payment {
                        id: PaymentId(id),
                        payer: Name::parse(&payer).ok()?,
                        payee: Name::parse(&payee).ok()?,
                        amount_minor: u64::try_from(amount).ok()?,
                        expires_at_s: u64::try_from(expires_at).ok()?,
                        memo,
                    },
                    signature,
                })
            })();
            let Some(payment) = parsed else {
                report
                    .violations
                    .push(format!("seq {seq}: malformed payment row"));
                continue;
            };
            if payment.content_hash()[..] != hash[..] {
                report
                    .violations
                    .push(format!("seq {seq}: content hash does not match"));
            }
            match keys.get(&payer) {
                Some(key) if payment.verify(key).is_ok() => {}
                Some(_) => report.violations.push(format!(
                    "seq {seq}: signature does not verify with {payer}'s key"
                )),
                None => report
                    .violations
                    .push(format!("seq {seq}: payer {payer} has no account")),
            }
        }
    }
    report.rejections = conn.query_row("SELECT COUNT(*) FROM rejections", [], |r| {
        r.get::<_, i64>(0)
    })? as u64;
    let mut names: Vec<_> = stored.keys().cloned().collect();
    names.sort();
    for name in names {
        let have = stored[&name];
        let want = expected.get(&name).copied().unwrap_or(0);
        if have != want {
            report.violations.push(format!(
                "{name}: balance {have} but grants and payments give {want}"
            ));
        }
    }
    if report.total_balances != report.total_granted {
        report.violations.push(format!(
            "balances sum to {} but grants sum to {}",
            report.total_balances, report.total_granted
        ));
    }
    Ok(report)
}
