//! The embedded backend: one SQLite file (WAL, `synchronous=FULL`).
//!
//! One write connection, used only by the group-commit writer, decides
//! and writes each batch in one `BEGIN IMMEDIATE … COMMIT`, with the
//! balances and keys cached in memory (the cache changes only after a
//! commit succeeds). Reads take a connection from a small pool of
//! read-only connections, which WAL lets run beside the writer and which
//! only ever see committed (so acknowledged) state; no read waits for
//! another. While a server has the file open for writing it holds an
//! exclusive lock on it, so a second server on the same file refuses to
//! start. A backup ([`backup()`]) reads beside a running server without
//! that lock. No rusqlite type leaves this module.

mod backup;
mod channels;
mod export;
mod read;
mod schema;
mod write;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::Connection;

use crate::core::channel::ChannelId;
use crate::core::channel_rules::ChannelRecord;
use crate::core::keys::VerifyingKey;
use crate::core::limits::LEDGER_READERS_MAX;
use crate::core::name::Name;
use crate::core::payment::PaymentId;
use crate::ledger::{
    Answer, AuditVisitor, Command, HistoryPage, KeyEntry, LedgerError, LedgerStore, Outcome,
    Sealer, StoredCheckpoint,
};

pub use backup::{backup, BackupError};
use schema::{db, open_read, open_write};
use write::Writer;

/// A ledger in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    writer: Option<Mutex<Writer>>,
    readers: Mutex<Vec<Connection>>,
    /// Held (locked) for the store's lifetime when it writes.
    _lock: Option<File>,
}

impl SqliteStore {
    /// Opens (creating if needed) the ledger for writing, granting
    /// `initial_balance` to each new account. Fails when another process
    /// has the file open for writing.
    pub fn open(path: &Path, initial_balance: u64) -> Result<SqliteStore, LedgerError> {
        let conn = open_write(path)?;
        let lock = lock_exclusive(path)?;
        let writer = Writer::load(conn, initial_balance)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            writer: Some(Mutex::new(writer)),
            readers: Mutex::new(Vec::new()),
            _lock: Some(lock),
        })
    }

    /// Opens an existing ledger for reading only (audit).
    pub fn open_read_only(path: &Path) -> Result<SqliteStore, LedgerError> {
        let conn = open_read(path)?;
        Ok(SqliteStore {
            path: path.to_owned(),
            writer: None,
            readers: Mutex::new(vec![conn]),
            _lock: None,
        })
    }

    /// Runs `f` on a pooled read connection.
    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, rusqlite::Error>,
    ) -> Result<T, LedgerError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_read(&self.path)?,
        };
        let result = f(&conn).map_err(db);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < LEDGER_READERS_MAX {
            pool.push(conn);
        }
        result
    }
}

/// Takes an advisory lock on the database file for the store's lifetime.
fn lock_exclusive(path: &Path) -> Result<File, LedgerError> {
    let file = File::open(path)
        .map_err(|e| LedgerError::Database(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LedgerError::InUse(path.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(LedgerError::Database(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

impl LedgerStore for SqliteStore {
    fn keys(&self) -> Result<Vec<(Name, VerifyingKey)>, LedgerError> {
        self.with_reader(read::keys)?
    }

    fn key(&self, name: &Name) -> Result<Option<VerifyingKey>, LedgerError> {
        self.with_reader(|c| read::key(c, name))?
    }

    fn key_history(&self, name: &Name) -> Result<Vec<KeyEntry>, LedgerError> {
        self.with_reader(|c| read::key_history(c, name))?
    }

    fn commit(
        &self,
        batch: &[Command],
        now_ms: u64,
        sealer: &mut dyn Sealer,
    ) -> Result<Vec<Answer>, LedgerError> {
        let Some(writer) = &self.writer else {
            return Err(LedgerError::Database(
                "the ledger was opened read-only".into(),
            ));
        };
        writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .commit(batch, now_ms, sealer)
    }

    fn checkpoints(&self) -> Result<Vec<StoredCheckpoint>, LedgerError> {
        self.with_reader(read::checkpoints)?
    }

    fn has_log(&self) -> Result<bool, LedgerError> {
        self.with_reader(read::has_log)
    }

    fn balance(&self, name: &Name) -> Result<Option<u64>, LedgerError> {
        self.with_reader(|c| read::balance(c, name))?
    }

    fn history(
        &self,
        name: &Name,
        limit: u32,
        before_seq: Option<u64>,
    ) -> Result<HistoryPage, LedgerError> {
        self.with_reader(|c| read::history(c, name, limit, before_seq))?
    }

    fn outcome(&self, party: &Name, id: &PaymentId) -> Result<Option<Outcome>, LedgerError> {
        self.with_reader(|c| read::outcome(c, party, id))?
    }

    fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, LedgerError> {
        self.with_reader(|c| Ok(channels::channel(c, id)))?
    }

    fn channels_of(&self, name: &Name, limit: u32) -> Result<Vec<ChannelRecord>, LedgerError> {
        self.with_reader(|c| Ok(channels::channels_of(c, name, limit)))?
    }

    fn held(&self, name: &Name) -> Result<u64, LedgerError> {
        self.with_reader(|c| Ok(channels::held(c, name)))?
    }

    fn expirable_channels(&self, now_ms: u64, limit: u32) -> Result<Vec<ChannelId>, LedgerError> {
        self.with_reader(|c| Ok(channels::expirable(c, now_ms, limit)))?
    }

    fn scan(&self, visitor: &mut dyn AuditVisitor) -> Result<(), LedgerError> {
        export::export_in_snapshot(self, &mut crate::ledger::migrate::Visiting(visitor))
    }

    fn close(&self) -> Result<(), LedgerError> {
        // Fold the WAL back into the main file so the database is one
        // self-contained file after a clean stop.
        if let Some(writer) = &self.writer {
            writer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .checkpoint()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Issue 10, item 10: reads do not share one connection behind one
    /// lock. While as many reads as the pool keeps are held open (a slow
    /// `history`, say), another read still runs to completion.
    #[test]
    fn a_held_read_does_not_hold_up_other_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("l.db"), 100).expect("open");
        let alice = Name::parse("alice").expect("name");
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Mutex::new(release_rx);
        std::thread::scope(|s| {
            let held: Vec<_> = (0..LEDGER_READERS_MAX)
                .map(|_| {
                    let (store, entered_tx, release_rx) = (&store, entered_tx.clone(), &release_rx);
                    s.spawn(move || {
                        store.with_reader(|_conn| {
                            let _ = entered_tx.send(());
                            // Bounded: the test releases every reader below.
                            let _ = release_rx
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .recv_timeout(std::time::Duration::from_secs(20));
                            Ok(())
                        })
                    })
                })
                .collect();
            for _ in 0..LEDGER_READERS_MAX {
                entered_rx.recv().expect("a reader entered");
            }
            // Every pooled connection is busy: the next read gets its own.
            assert_eq!(store.balance(&alice).expect("read"), None);
            for _ in 0..LEDGER_READERS_MAX {
                let _ = release_tx.send(());
            }
            for h in held {
                h.join().expect("joined").expect("held read");
            }
        });
    }
}
