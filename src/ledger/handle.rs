//! [`Ledger`]: the handle the server holds. Writes go through a bounded
//! queue to the group-commit writer thread; reads run on blocking tasks
//! against the store; registered keys are cached in memory so that
//! connections verify signatures without touching the database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::core::channel::{ChannelId, CloseRequest};
use crate::core::channel_rules::{ChannelRecord, ChannelRefusal, CloseOutcome, VerifiedCommitment};
use crate::core::keys::VerifyingKey;
use crate::core::limits::{INITIAL_BALANCE_MAX, LEDGER_QUEUE_MAX};
use crate::core::name::Name;
use crate::core::payment::PaymentId;
use crate::core::rotation::KeyChange;
use crate::core::rules::{Refusal, RegisteredKey, VerifiedPayment};
use crate::ledger::group_commit::{run_writer, Queued, WriterMessage};
use crate::ledger::location::DbLocation;
use crate::ledger::log::{Log, LogConfig, NoSealer, Sealer};
use crate::ledger::postgres::PgStore;
use crate::ledger::sqlite::SqliteStore;
use crate::ledger::{
    Account, Answer, Command, CommitObserver, HistoryPage, KeyEntry, LedgerError, LedgerStore,
    NoCommitObserver, Outcome, Settlement,
};

/// How the ledger is opened.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Where the ledger lives: an SQLite file or a PostgreSQL database.
    pub location: DbLocation,
    /// Balance granted to each new account.
    pub initial_balance: u64,
}

/// Registered keys, shared by the writer (which adds to it after each
/// durable registration) and the connections (which verify with it).
pub type KeyRegistry = Arc<RwLock<HashMap<Name, Arc<VerifyingKey>>>>;

/// Handle to the ledger: the writer's queue, the store for reads, and the
/// key cache.
pub struct Ledger {
    commands: mpsc::Sender<WriterMessage>,
    store: Arc<dyn LedgerStore>,
    keys: KeyRegistry,
    writer: Mutex<Option<JoinHandle<()>>>,
    log: Log,
}

impl Ledger {
    /// Opens (creating if needed) the ledger on the configured backend
    /// and starts its writer.
    pub fn open(config: &LedgerConfig) -> Result<Ledger, LedgerError> {
        Ledger::open_observed(config, Arc::new(NoCommitObserver))
    }

    /// Like [`Ledger::open`], with `observer` told about every commit.
    pub fn open_observed(
        config: &LedgerConfig,
        observer: Arc<dyn CommitObserver>,
    ) -> Result<Ledger, LedgerError> {
        Ledger::open_logged(config, observer, None)
    }

    /// Like [`Ledger::open_observed`], keeping the log `log` (its tree read
    /// from the stored payments, checked against its latest checkpoint).
    pub fn open_logged(
        config: &LedgerConfig,
        observer: Arc<dyn CommitObserver>,
        log: Option<LogConfig>,
    ) -> Result<Ledger, LedgerError> {
        if config.initial_balance > INITIAL_BALANCE_MAX {
            return Err(LedgerError::InitialBalance(INITIAL_BALANCE_MAX));
        }
        let store: Arc<dyn LedgerStore> = match &config.location {
            DbLocation::Sqlite(path) => Arc::new(SqliteStore::open(path, config.initial_balance)?),
            DbLocation::Postgres(url) => Arc::new(PgStore::open(url, config.initial_balance)?),
        };
        let log = match log {
            Some(log) => Log::load(store.as_ref(), log)?,
            None => Log::disabled(),
        };
        Ledger::start_with(store, observer, log)
    }

    /// Starts the writer over an opened store.
    pub fn start(store: Arc<dyn LedgerStore>) -> Result<Ledger, LedgerError> {
        Ledger::start_observed(store, Arc::new(NoCommitObserver))
    }

    /// Like [`Ledger::start`], with `observer` told about every commit.
    pub fn start_observed(
        store: Arc<dyn LedgerStore>,
        observer: Arc<dyn CommitObserver>,
    ) -> Result<Ledger, LedgerError> {
        Ledger::start_with(store, observer, Log::disabled())
    }

    /// Like [`Ledger::start_observed`], deciding every batch at the time
    /// `clock` gives (unix ms) instead of the system clock: tests move
    /// time forward (e.g. past a channel's expiry) without sleeping.
    pub fn start_clocked(
        store: Arc<dyn LedgerStore>,
        observer: Arc<dyn CommitObserver>,
        clock: impl Fn() -> u64 + Send + 'static,
    ) -> Result<Ledger, LedgerError> {
        Ledger::start_full(store, observer, Log::disabled(), clock)
    }

    /// Starts the writer over an opened store, keeping `log`.
    pub fn start_with(
        store: Arc<dyn LedgerStore>,
        observer: Arc<dyn CommitObserver>,
        log: Log,
    ) -> Result<Ledger, LedgerError> {
        Ledger::start_full(store, observer, log, crate::system::clock::now_ms)
    }

    /// Starts the writer over an opened store, keeping `log`, deciding at
    /// the times `clock` gives.
    fn start_full(
        store: Arc<dyn LedgerStore>,
        observer: Arc<dyn CommitObserver>,
        log: Log,
        clock: impl Fn() -> u64 + Send + 'static,
    ) -> Result<Ledger, LedgerError> {
        let sealer: Box<dyn Sealer> = if log.origin().is_some() {
            Box::new(log.clone())
        } else {
            Box::new(NoSealer)
        };
        let keys: KeyRegistry = Arc::new(RwLock::new(
            store
                .keys()?
                .into_iter()
                .map(|(name, key)| (name, Arc::new(key)))
                .collect(),
        ));
        let (tx, rx) = mpsc::channel(LEDGER_QUEUE_MAX);
        let (writer_store, writer_keys) = (store.clone(), keys.clone());
        let writer = std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || run_writer(writer_store, rx, writer_keys, clock, observer, sealer))
            .map_err(|e| LedgerError::Database(format!("cannot start the writer: {e}")))?;
        Ok(Ledger {
            commands: tx,
            store,
            keys,
            writer: Mutex::new(Some(writer)),
            log,
        })
    }

    /// The log: proofs and checkpoints for handlers.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// The registered key of `name`, if any: from the cache, or (for an
    /// account opened elsewhere, e.g. by another server on a shared
    /// database) from the store, then cached.
    pub async fn key_of(&self, name: &Name) -> Result<Option<Arc<VerifyingKey>>, LedgerError> {
        let cached = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned();
        if cached.is_some() {
            return Ok(cached);
        }
        let owned = name.clone();
        let Some(key) = self.read(move |s| s.key(&owned)).await? else {
            return Ok(None);
        };
        let key = Arc::new(key);
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), key.clone());
        Ok(Some(key))
    }

    /// Whether `name` has an account.
    pub async fn is_registered(&self, name: &Name) -> Result<bool, LedgerError> {
        Ok(self.key_of(name).await?.is_some())
    }

    /// The registered key of `name` read from the store (not the cache),
    /// which then replaces the cached one. With several servers on one
    /// database, another server may have changed the key: a connection
    /// whose key does not match the cache asks this before refusing.
    pub async fn refresh_key(&self, name: &Name) -> Result<Option<Arc<VerifyingKey>>, LedgerError> {
        let owned = name.clone();
        let Some(key) = self.read(move |s| s.key(&owned)).await? else {
            return Ok(None);
        };
        let key = Arc::new(key);
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), key.clone());
        Ok(Some(key))
    }

    /// Every key `name` ever had, oldest first, from the store.
    pub async fn key_history(&self, name: &Name) -> Result<Vec<KeyEntry>, LedgerError> {
        let name = name.clone();
        self.read(move |s| s.key_history(&name)).await
    }

    /// `name`'s current key with its certificate's notAfter and serial
    /// (what a CRL check needs), from the store; `None` without an account.
    pub async fn current_key(&self, name: &Name) -> Result<Option<KeyEntry>, LedgerError> {
        Ok(self.key_history(name).await?.pop())
    }

    /// Creates an account bound to `key`, whose certificate is valid until
    /// `key_not_after_s` and has serial `key_serial`; answers once durable.
    pub async fn register(
        &self,
        name: Name,
        key: VerifyingKey,
        (key_not_after_s, key_serial): (u64, Vec<u8>),
    ) -> Result<Result<Account, Refusal>, LedgerError> {
        let command = Command::Register {
            name,
            key,
            key_not_after_s,
            key_serial,
        };
        match self.submit(command).await? {
            Answer::Registered(account) => Ok(Ok(account)),
            Answer::Refused(refusal) => Ok(Err(refusal)),
            _ => Err(LedgerError::Corrupt(
                "another answer answered a registration".into(),
            )),
        }
    }

    /// Changes an account's key (rotation, renewal, rebind) as the rules
    /// decide; answers once durable with the key registered now.
    pub async fn change_key(
        &self,
        change: KeyChange,
    ) -> Result<Result<RegisteredKey, Refusal>, LedgerError> {
        match self.submit(Command::ChangeKey(Box::new(change))).await? {
            Answer::KeyChanged(registered) => Ok(Ok(registered)),
            Answer::Refused(refusal) => Ok(Err(refusal)),
            _ => Err(LedgerError::Corrupt(
                "another answer answered a key change".into(),
            )),
        }
    }

    /// Settles a verified payment; answers once the outcome is durable.
    pub async fn settle(
        &self,
        payment: VerifiedPayment,
    ) -> Result<Result<Settlement, Refusal>, LedgerError> {
        match self.submit(Command::Settle(Box::new(payment))).await? {
            Answer::Settled(settlement) => Ok(Ok(settlement)),
            Answer::Refused(refusal) => Ok(Err(refusal)),
            _ => Err(LedgerError::Corrupt(
                "another answer answered a settlement".into(),
            )),
        }
    }

    /// Opens a payment channel: holds n × value of the payer's available
    /// balance; answers once durable with the channel as recorded and
    /// whether it was opened before (same commitment).
    pub async fn open_channel(
        &self,
        verified: VerifiedCommitment,
    ) -> Result<Result<(ChannelRecord, bool), ChannelRefusal>, LedgerError> {
        match self
            .submit(Command::ChannelOpen(Box::new(verified)))
            .await?
        {
            Answer::ChannelOpened { record, replay } => Ok(Ok((*record, replay))),
            Answer::ChannelRefused(refusal) => Ok(Err(refusal)),
            _ => Err(LedgerError::Corrupt(
                "another answer answered a channel open".into(),
            )),
        }
    }

    /// Closes a channel on behalf of `closer` (who must be its payee);
    /// answers once durable with the outcome, the first one for a repeated
    /// close.
    pub async fn close_channel(
        &self,
        close: CloseRequest,
        closer: Name,
    ) -> Result<Result<(CloseOutcome, bool), ChannelRefusal>, LedgerError> {
        match self.submit(Command::ChannelClose { close, closer }).await? {
            Answer::ChannelClosed { outcome, replay } => Ok(Ok((outcome, replay))),
            Answer::ChannelRefused(refusal) => Ok(Err(refusal)),
            _ => Err(LedgerError::Corrupt(
                "another answer answered a channel close".into(),
            )),
        }
    }

    /// Returns an expired channel's hold to its payer; answers the amount.
    pub async fn expire_channel(
        &self,
        id: ChannelId,
    ) -> Result<Result<u64, ChannelRefusal>, LedgerError> {
        match self.submit(Command::ChannelExpire(id)).await? {
            Answer::ChannelExpired { released_minor } => Ok(Ok(released_minor)),
            Answer::ChannelRefused(refusal) => Ok(Err(refusal)),
            _ => Err(LedgerError::Corrupt(
                "another answer answered a channel expiry".into(),
            )),
        }
    }

    /// The channel `id`, if it was ever opened.
    pub async fn channel(&self, id: ChannelId) -> Result<Option<ChannelRecord>, LedgerError> {
        self.read(move |s| s.channel(&id)).await
    }

    /// `name`'s channels as payer or payee, newest first, at most `limit`.
    pub async fn channels_of(
        &self,
        name: &Name,
        limit: u32,
    ) -> Result<Vec<ChannelRecord>, LedgerError> {
        let name = name.clone();
        self.read(move |s| s.channels_of(&name, limit)).await
    }

    /// The sum of `name`'s open holds as payer.
    pub async fn held(&self, name: &Name) -> Result<u64, LedgerError> {
        let name = name.clone();
        self.read(move |s| s.held(&name)).await
    }

    /// Returns the hold of every open channel past expiry plus grace at
    /// `now_ms` to its payer, at most `limit` of them per call; answers how
    /// many were returned. Another server on the same database may return
    /// one first: that answer is a refusal, and is not counted.
    pub async fn expire_due(&self, now_ms: u64, limit: u32) -> Result<u32, LedgerError> {
        let due = self
            .read(move |s| s.expirable_channels(now_ms, limit))
            .await?;
        let mut expired = 0;
        for id in due {
            if self.expire_channel(id).await?.is_ok() {
                expired += 1;
            }
        }
        Ok(expired)
    }

    async fn submit(&self, command: Command) -> Result<Answer, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let message = WriterMessage::Command(Queued { command, reply });
        self.commands.try_send(message).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => LedgerError::Busy,
            mpsc::error::TrySendError::Closed(_) => LedgerError::Stopped,
        })?;
        rx.await.map_err(|_| LedgerError::Stopped)?
    }

    /// Commands waiting in the writer's queue (bounded by
    /// [`LEDGER_QUEUE_MAX`]), for the queue-depth gauge.
    pub fn queue_depth(&self) -> usize {
        self.commands
            .max_capacity()
            .saturating_sub(self.commands.capacity())
    }

    /// Lets the writer finish everything queued, commit and stop. Later
    /// requests are refused.
    pub async fn close(&self) {
        // A full queue means the writer is still draining; wait for room.
        let _ = self.commands.send(WriterMessage::Shutdown).await;
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// Runs a read on the store off the async runtime.
    async fn read<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn LedgerStore) -> Result<T, LedgerError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| LedgerError::Database(format!("read task failed: {e}")))?
    }

    /// The committed balance of `name`.
    pub async fn balance(&self, name: &Name) -> Result<Option<u64>, LedgerError> {
        let name = name.clone();
        self.read(move |s| s.balance(&name)).await
    }

    /// A page of `name`'s payments, newest first, with `name`'s balance
    /// read in the same snapshot.
    pub async fn history(
        &self,
        name: &Name,
        limit: u32,
        before_seq: Option<u64>,
    ) -> Result<HistoryPage, LedgerError> {
        let name = name.clone();
        self.read(move |s| s.history(&name, limit, before_seq))
            .await
    }

    /// The recorded outcome of payment `id` in which `party` takes part.
    pub async fn outcome(
        &self,
        party: &Name,
        id: PaymentId,
    ) -> Result<Option<Outcome>, LedgerError> {
        let party = party.clone();
        self.read(move |s| s.outcome(&party, &id)).await
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        // If close() was not called (a test, a panic), let the writer
        // finish on its own.
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(handle) = handle {
            let _ = self.commands.try_send(WriterMessage::Shutdown);
            let _ = handle.join();
        }
    }
}
