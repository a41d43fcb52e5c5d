//! The last checkpoint a client has seen from each server's log, kept in
//! a small JSON state file, and the check that the log has only grown
//! since: on every check the client fetches the latest checkpoint, and a
//! consistency proof from the size it saw before, and refuses (with
//! [`LogStateError::HistoryChanged`]) when the proof does not verify, the
//! log shrank, or one size has two roots. The file maps each log's origin
//! to the note of the last checkpoint verified from it: servers sharing a
//! PostgreSQL database keep one log each (docs/PROTOCOL.md §11.5), so a
//! client that talks to several of them remembers each log apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::core::checkpoint::{self, Checkpoint, CheckpointError};
use crate::core::keys::VerifyingKey;
use crate::core::log_proof::{decode_hashes, LogProofError};
use crate::core::merkle::verify_consistency;
use crate::net::link::{CallError, Link};
use crate::wire::{CheckpointJson, ConsistencyJson, ServerRequest};

/// Why the log could not be checked, or what the check found.
#[derive(Debug, thiserror::Error)]
pub enum LogStateError {
    /// The server could not be asked.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The server's certificate carries no usable key.
    #[error("the server's certificate has no usable key: {0}")]
    ServerKey(String),
    /// The checkpoint is not the server's.
    #[error("the server's checkpoint does not verify: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A proof was malformed.
    #[error("the server's consistency proof is malformed: {0}")]
    Proof(#[from] LogProofError),
    /// The state file could not be read or written.
    #[error("log state file {}: {why}", .path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
    /// The log's history is not an extension of what was seen before.
    #[error("the server's log history has changed: it showed a tree of {seen_size} entries before and now shows {now_size} that {why}; the ledger was rewritten, rolled back or forked")]
    HistoryChanged {
        /// The size seen before.
        seen_size: u64,
        /// The size now.
        now_size: u64,
        /// How it differs.
        why: &'static str,
    },
}

/// What a successful check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCheck {
    /// The size seen before (none on first contact).
    pub seen_size: Option<u64>,
    /// The latest checkpoint, now remembered.
    pub now: Checkpoint,
}

fn file_error(path: &Path, why: impl ToString) -> LogStateError {
    LogStateError::File {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

fn load(path: &Path) -> Result<BTreeMap<String, String>, LogStateError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| file_error(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(file_error(path, e)),
    }
}

fn save(path: &Path, state: &BTreeMap<String, String>) -> Result<(), LogStateError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| file_error(path, e))?;
    }
    let text = serde_json::to_string_pretty(state).map_err(|e| file_error(path, e))?;
    // Write then rename, so that a crash never leaves half a file.
    // Unique per process and thread: concurrent sends share one file.
    let tmp = path.with_extension(format!(
        "tmp.{}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&tmp, text).map_err(|e| file_error(path, e))?;
    std::fs::rename(&tmp, path).map_err(|e| file_error(path, e))
}

fn open_note(note: &str, key: &VerifyingKey) -> Result<Checkpoint, CheckpointError> {
    let (parsed, _, _) = checkpoint::parse(note)?;
    checkpoint::open(note, &parsed.origin, key)
}

/// Fetches the server's latest checkpoint, checks it is consistent with
/// the one remembered in `state` for this server, and remembers it.
pub async fn check_log(server: &Link, state: &Path) -> Result<LogCheck, LogStateError> {
    let key = server
        .server_key()
        .map_err(|e| LogStateError::ServerKey(e.to_string()))?;
    let latest: CheckpointJson = server.call(&ServerRequest::Checkpoint {}).await?;
    let now = open_note(&latest.checkpoint, &key)?;
    let mut remembered = load(state)?;
    // The origin is bound to the server's key by the note's key id, which
    // `open_note` checked.
    let origin = now.origin.clone();
    let seen = match remembered.get(&origin) {
        Some(note) => Some(open_note(note, &key)?),
        None => None,
    };
    if let Some(seen) = &seen {
        let changed = |why| LogStateError::HistoryChanged {
            seen_size: seen.size,
            now_size: now.size,
            why,
        };
        if now.size < seen.size {
            return Err(changed("is smaller"));
        }
        let proof: ConsistencyJson = server
            .call(&ServerRequest::Consistency {
                from_size: seen.size,
                to_size: now.size,
            })
            .await?;
        let hashes = decode_hashes(&proof.proof)?;
        verify_consistency(seen.size, now.size, &seen.root, &now.root, &hashes)
            .map_err(|_| changed("does not extend it"))?;
    }
    remembered.insert(origin, latest.checkpoint);
    save(state, &remembered)?;
    Ok(LogCheck {
        seen_size: seen.map(|s| s.size),
        now,
    })
}
