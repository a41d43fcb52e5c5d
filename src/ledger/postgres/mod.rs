//! The shared backend: one PostgreSQL database that several
//! `micropay-server` processes use at once.
//!
//! The [`LedgerStore`] trait is blocking, so the store owns a small tokio
//! runtime of its own (one worker, which drives the connections) and its
//! methods `block_on` it; they are only ever called from the group-commit
//! writer thread and from blocking tasks, never from inside an async
//! task. The writer has its own connection; reads take one from a small
//! pool. Each batch is decided and written in one transaction that first
//! locks the single `ledger_meta` row (see [`write`]), which serializes
//! batches across servers and keeps payment sequence numbers gap-free.
//! No tokio-postgres type leaves this module except through [`presence`].

mod channels;
pub(crate) mod import;
pub mod presence;
mod read;
mod schema;
pub mod tls;
mod write;

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::core::channel::ChannelId;
use crate::core::channel_rules::ChannelRecord;
use crate::core::keys::VerifyingKey;
use crate::core::limits::{LEDGER_READERS_MAX, PG_CONNECT_TIMEOUT_MS};
use crate::core::name::Name;
use crate::core::payment::PaymentId;
use crate::ledger::location::redact_url;
use crate::ledger::{
    Answer, AuditVisitor, Command, HistoryPage, KeyEntry, LedgerError, LedgerStore, Outcome,
    Sealer, StoredCheckpoint,
};

pub use schema::SCHEMA_VERSION;
pub use tls::PgConfig;

/// A ledger in a PostgreSQL database.
pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    config: PgConfig,
    /// The URL without its password, for messages.
    shown: String,
    initial_balance: u64,
    writable: bool,
    writer: Mutex<Option<Client>>,
    readers: Mutex<Vec<Client>>,
}

/// Parses `url` into a connection configuration (with a connect timeout,
/// and TLS as its `sslmode` and `sslrootcert` ask: see [`tls`]).
pub fn pg_config(url: &str) -> Result<PgConfig, LedgerError> {
    let mut config = PgConfig::from_url(url)
        .map_err(|e| LedgerError::Database(format!("{}: {e}", redact_url(url))))?;
    if config.config.get_connect_timeout().is_none() {
        config
            .config
            .connect_timeout(Duration::from_millis(PG_CONNECT_TIMEOUT_MS));
    }
    Ok(config)
}

/// Connects on the current tokio runtime, which then drives the
/// connection until the client is dropped.
pub async fn connect(config: &PgConfig, shown: &str) -> Result<Client, LedgerError> {
    let unavailable = |e: tokio_postgres::Error| {
        LedgerError::Unavailable(format!("cannot connect to {shown}: {e}"))
    };
    let client = match &config.tls {
        None => {
            let (client, connection) = config.config.connect(NoTls).await.map_err(unavailable)?;
            tokio::spawn(drive(connection));
            client
        }
        Some(tls) => {
            let (client, connection) = config
                .config
                .connect(tls.clone())
                .await
                .map_err(unavailable)?;
            tokio::spawn(drive(connection));
            client
        }
    };
    Ok(client)
}

/// Drives one connection until it ends.
async fn drive<F: Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
    if let Err(e) = connection.await {
        tracing::debug!("a PostgreSQL connection ended: {e}");
    }
}

/// A database error as a ledger error: a lost or refused connection is
/// [`LedgerError::Unavailable`], anything else [`LedgerError::Database`].
pub(crate) fn pg_error(e: tokio_postgres::Error) -> LedgerError {
    if e.is_closed() || (e.as_db_error().is_none() && e.code().is_none()) {
        return LedgerError::Unavailable(e.to_string());
    }
    // tokio-postgres shows a server error as just "db error": say what
    // PostgreSQL said (its message may quote values, so escaped).
    match e.as_db_error() {
        Some(db) => LedgerError::Database(format!(
            "{} ({})",
            crate::system::terminal::escape(db.message()),
            db.code().code()
        )),
        None => LedgerError::Database(e.to_string()),
    }
}

/// Whether a failed transaction may simply be run again.
fn retriable(e: &tokio_postgres::Error) -> bool {
    let code = e.code();
    code == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
        || code == Some(&SqlState::T_R_DEADLOCK_DETECTED)
        || e.is_closed()
        || (e.as_db_error().is_none() && code.is_none())
}

impl PgStore {
    /// Connects to the database at `url`, creating or checking the
    /// schema, for writing; new accounts get `initial_balance`.
    pub fn open(url: &str, initial_balance: u64) -> Result<PgStore, LedgerError> {
        let store = PgStore::new(url, initial_balance, true)?;
        store.block_on(async {
            let mut client = connect(&store.config, &store.shown).await?;
            schema::migrate(&mut client, &store.shown).await?;
            *store.writer.lock().unwrap_or_else(|p| p.into_inner()) = Some(client);
            Ok(())
        })?;
        Ok(store)
    }

    /// Connects to an existing ledger for reading only (audit).
    pub fn open_read_only(url: &str) -> Result<PgStore, LedgerError> {
        let store = PgStore::new(url, 0, false)?;
        store.block_on(async {
            let client = connect(&store.config, &store.shown).await?;
            schema::check(&client, &store.shown).await?;
            store.give_back(client);
            Ok(())
        })?;
        Ok(store)
    }

    fn new(url: &str, initial_balance: u64, writable: bool) -> Result<PgStore, LedgerError> {
        let config = pg_config(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ledger-pg")
            .enable_all()
            .build()
            .map_err(|e| LedgerError::Database(format!("cannot start a runtime: {e}")))?;
        Ok(PgStore {
            runtime: Some(runtime),
            config,
            shown: redact_url(url),
            initial_balance,
            writable,
            writer: Mutex::new(None),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn block_on<T>(
        &self,
        f: impl Future<Output = Result<T, LedgerError>>,
    ) -> Result<T, LedgerError> {
        match &self.runtime {
            Some(runtime) => runtime.block_on(f),
            None => Err(LedgerError::Stopped),
        }
    }

    /// A pooled read connection, or a new one; back to the pool when
    /// dropped.
    async fn reader(&self) -> Result<Pooled<'_>, LedgerError> {
        loop {
            let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match pooled {
                Some(client) if !client.is_closed() => {
                    return Ok(Pooled {
                        store: self,
                        client: Some(client),
                    })
                }
                Some(_) => continue,
                None => {
                    let client = connect(&self.config, &self.shown).await?;
                    return Ok(Pooled {
                        store: self,
                        client: Some(client),
                    });
                }
            }
        }
    }

    fn give_back(&self, client: Client) {
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < LEDGER_READERS_MAX && !client.is_closed() {
            pool.push(client);
        }
    }
}

/// A read connection taken from the pool.
struct Pooled<'s> {
    store: &'s PgStore,
    client: Option<Client>,
}

impl Pooled<'_> {
    fn client(&mut self) -> Result<&mut Client, LedgerError> {
        self.client.as_mut().ok_or(LedgerError::Stopped)
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            self.store.give_back(client);
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // The store may be dropped on an async runtime (the server's),
        // where blocking on our own runtime's shutdown is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl LedgerStore for PgStore {
    fn keys(&self) -> Result<Vec<(Name, VerifyingKey)>, LedgerError> {
        self.block_on(async { read::keys(self.reader().await?.client()?).await })
    }

    fn key(&self, name: &Name) -> Result<Option<VerifyingKey>, LedgerError> {
        self.block_on(async { read::key(self.reader().await?.client()?, name).await })
    }

    fn key_history(&self, name: &Name) -> Result<Vec<KeyEntry>, LedgerError> {
        self.block_on(async { read::key_history(self.reader().await?.client()?, name).await })
    }

    fn commit(
        &self,
        batch: &[Command],
        now_ms: u64,
        sealer: &mut dyn Sealer,
    ) -> Result<Vec<Answer>, LedgerError> {
        if !self.writable {
            return Err(LedgerError::Database(
                "the ledger was opened read-only".into(),
            ));
        }
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.block_on(write::commit(self, &mut writer, batch, now_ms, sealer))
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, LedgerError> {
        self.block_on(async { read::checkpoints(self.reader().await?.client()?).await })
    }

    fn has_log(&self) -> Result<bool, LedgerError> {
        self.block_on(async { read::has_log(self.reader().await?.client()?).await })
    }

    fn balance(&self, name: &Name) -> Result<Option<u64>, LedgerError> {
        self.block_on(async { read::balance(self.reader().await?.client()?, name).await })
    }

    fn history(
        &self,
        name: &Name,
        limit: u32,
        before_seq: Option<u64>,
    ) -> Result<HistoryPage, LedgerError> {
        self.block_on(async {
            let mut reader = self.reader().await?;
            read::history(reader.client()?, name, limit, before_seq).await
        })
    }

    fn outcome(&self, party: &Name, id: &PaymentId) -> Result<Option<Outcome>, LedgerError> {
        self.block_on(async { read::outcome(self.reader().await?.client()?, party, id).await })
    }

    fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, LedgerError> {
        self.block_on(async { channels::channel(self.reader().await?.client()?, id).await })
    }

    fn channels_of(&self, name: &Name, limit: u32) -> Result<Vec<ChannelRecord>, LedgerError> {
        self.block_on(async {
            channels::channels_of(self.reader().await?.client()?, name, limit).await
        })
    }

    fn held(&self, name: &Name) -> Result<u64, LedgerError> {
        self.block_on(async { channels::held(self.reader().await?.client()?, name).await })
    }

    fn expirable_channels(&self, now_ms: u64, limit: u32) -> Result<Vec<ChannelId>, LedgerError> {
        self.block_on(async {
            channels::expirable(self.reader().await?.client()?, now_ms, limit).await
        })
    }

    fn scan(&self, visitor: &mut dyn AuditVisitor) -> Result<(), LedgerError> {
        self.block_on(async { read::scan(self.reader().await?.client()?, visitor).await })
    }

    fn close(&self) -> Result<(), LedgerError> {
        // Nothing to fold back: every commit is already in the database.
        Ok(())
    }
}
