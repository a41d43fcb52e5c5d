//! Online backup of an SQLite ledger, beside a running server.
//!
//! The running server holds an advisory lock on its ledger file (so that a
//! second server refuses to start); a backup never takes that lock. It
//! reads through an ordinary read-only connection, which WAL lets run
//! beside the writer, and copies every page with SQLite's online backup
//! API in **one** step: one read transaction, so the copy is exactly the
//! committed state at one instant (every payment acknowledged before the
//! backup began, none half-written). Copying in several steps would let
//! the busy writer restart the copy after every commit.
//!
//! The copy goes to a new owner-only (0600) file beside the destination,
//! is switched to a rollback journal (so the backup is one self-contained
//! file), synced, and only then put in place: linked to the destination
//! name, which fails if that name exists (no overwrite unless asked), or
//! renamed over it when overwriting is asked. A failed backup leaves no
//! destination file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::Connection;

use crate::core::limits::{BACKUP_BUSY_RETRIES_MAX, BACKUP_BUSY_WAIT_MS, LEDGER_FILE_MODE};

use super::schema::open_read;

/// Why a backup failed; nothing was written at the destination.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The destination exists and overwriting was not asked for.
    #[error("{} exists; choose another file or allow overwriting it", .0.display())]
    Exists(PathBuf),
    /// The destination is the ledger itself.
    #[error("{} is the ledger itself", .0.display())]
    SameFile(PathBuf),
    /// The source is not a readable micropay ledger.
    #[error(transparent)]
    Source(#[from] crate::ledger::LedgerError),
    /// SQLite failed while copying.
    #[error("copying the ledger: {0}")]
    Copy(#[from] rusqlite::Error),
    /// The ledger stayed busy through every retry.
    #[error("the ledger stayed busy; try again")]
    Busy,
    /// A file operation failed.
    #[error("{what} {}: {source}", .path.display())]
    File {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn file_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_owned();
    move |source| BackupError::File { what, path, source }
}

/// Copies the SQLite ledger at `ledger` into a new file at `to`, owner
/// only, while a server may be running on it; `overwrite` allows
/// replacing an existing `to`.
pub fn backup(ledger: &Path, to: &Path, overwrite: bool) -> Result<(), BackupError> {
    let source = open_read(ledger)?;
    refuse_same_file(ledger, to)?;
    if !overwrite && to.exists() {
        return Err(BackupError::Exists(to.to_owned()));
    }
    let tmp = temporary_beside(to);
    let result = copy_into(&source, &tmp).and_then(|()| put_in_place(&tmp, to, overwrite));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        for suffix in ["-journal", "-wal", "-shm"] {
            let _ = std::fs::remove_file(sidecar(&tmp, suffix));
        }
    }
    result
}

fn refuse_same_file(ledger: &Path, to: &Path) -> Result<(), BackupError> {
    let ledger = std::fs::canonicalize(ledger).map_err(file_error("cannot resolve", ledger))?;
    if std::fs::canonicalize(to).is_ok_and(|to| to == ledger) {
        return Err(BackupError::SameFile(to.to_owned()));
    }
    Ok(())
}

fn temporary_beside(to: &Path) -> PathBuf {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    to.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Creates `tmp` (0600, new), copies every page of `source` into it in
/// one step and makes it a self-contained rollback-journal database.
fn copy_into(source: &Connection, tmp: &Path) -> Result<(), BackupError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(LEDGER_FILE_MODE)
        .open(tmp)
        .map_err(file_error("cannot create", tmp))?;
    let mut dest = Connection::open(tmp)?;
    {
        let copy = Backup::new(source, &mut dest)?;
        let mut busy = 0;
        // -1: every page in one step, inside one read transaction.
        loop {
            match copy.step(-1)? {
                StepResult::Done => break,
                StepResult::More => continue,
                // Busy, Locked (and anything newer): wait and retry, boundedly.
                _ => {
                    busy += 1;
                    if busy > BACKUP_BUSY_RETRIES_MAX {
                        return Err(BackupError::Busy);
                    }
                    std::thread::sleep(Duration::from_millis(BACKUP_BUSY_WAIT_MS));
                }
            }
        }
    }
    // The copied header says WAL; a rollback journal keeps the backup one
    // file (the server switches back to WAL when it opens it).
    dest.pragma_update(None, "journal_mode", "DELETE")?;
    dest.close().map_err(|(_, e)| e)?;
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(file_error("cannot sync", tmp))
}

fn put_in_place(tmp: &Path, to: &Path, overwrite: bool) -> Result<(), BackupError> {
    if overwrite {
        std::fs::rename(tmp, to).map_err(file_error("cannot rename onto", to))?;
    } else {
        // A hard link fails if `to` appeared meanwhile: never clobbered.
        std::fs::hard_link(tmp, to).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => BackupError::Exists(to.to_owned()),
            _ => file_error("cannot create", to)(e),
        })?;
        std::fs::remove_file(tmp).map_err(file_error("cannot remove", tmp))?;
    }
    let dir = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(file_error("cannot sync", dir))
}
