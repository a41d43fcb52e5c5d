//! The log in the ledger: the Merkle tree of every settled payment (leaf
//! index = seq − 1), kept in memory by the server and extended by the
//! group-commit writer, which signs one checkpoint per batch that settled
//! payments and has the store write it in the batch's own transaction.
//! Handlers read proofs from it for receipts, `checkpoint` and
//! `consistency`.
//!
//! With several servers writing one PostgreSQL database, a server sees
//! sequence numbers it did not write; its tree would then miss leaves, so
//! it stops signing checkpoints (with a warning) until it restarts and
//! reads the whole tree again: a per-server log on a shared database is
//! future work (docs/PROTOCOL.md, "The log").

use std::sync::{Arc, RwLock};

use crate::core::batch::Effect;
use crate::core::checkpoint::Checkpoint;
use crate::core::keys::SigningKey;
use crate::core::limits::MEMO_BYTES_MAX;
use crate::core::log_record::{settlement_leaf, settlement_record_raw};
use crate::core::merkle::{leaf_hash, Hash, MerkleTree, ProofError};
use crate::ledger::audit::parse_payment;
use crate::ledger::{AuditVisitor, LedgerError, LedgerStore, StoredKeyChange, StoredPayment};

/// A checkpoint as stored, one row per signed tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// The log it belongs to.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The signed note.
    pub note: String,
    /// When it was signed, unix ms.
    pub at_ms: u64,
}

/// What the writer does with each batch's effects, inside its
/// transaction: [`Sealer::seal`] returns the checkpoint to write with
/// the batch, [`Sealer::settle`] says whether the batch committed.
pub trait Sealer: Send {
    /// Appends the batch's settled payments; returns the checkpoint to
    /// store in the same transaction, if any.
    fn seal(&mut self, effects: &[Effect], now_ms: u64) -> Option<StoredCheckpoint>;
    /// After the transaction: whether it committed.
    fn settle(&mut self, committed: bool);
}

/// A sealer that logs nothing (tools that open a ledger without a key).
pub struct NoSealer;

impl Sealer for NoSealer {
    fn seal(&mut self, _: &[Effect], _: u64) -> Option<StoredCheckpoint> {
        None
    }
    fn settle(&mut self, _: bool) {}
}

/// Which log a server keeps: its origin and the key signing checkpoints.
#[derive(Clone)]
pub struct LogConfig {
    /// The log's name, e.g. `micropay/<server name>`.
    pub origin: String,
    /// The server's key.
    pub key: Arc<SigningKey>,
}

#[derive(Default)]
struct LogState {
    tree: MerkleTree,
    /// Leaves durably committed; the tree may hold more while a batch is
    /// in flight.
    committed: u64,
    latest: Option<StoredCheckpoint>,
    pending: Option<StoredCheckpoint>,
    /// Set when sequence numbers arrived that this server did not write.
    stale: bool,
}

/// The shared log: the writer extends it, handlers read it.
#[derive(Clone)]
pub struct Log {
    state: Arc<RwLock<LogState>>,
    config: Option<LogConfig>,
}

/// What a receipt carries to prove its payment is in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// Leaf index (seq − 1).
    pub leaf_index: u64,
    /// The proof, leaf side first.
    pub proof: Vec<Hash>,
    /// The signed checkpoint the proof leads to.
    pub checkpoint: String,
}

impl Log {
    /// A log without a key: it keeps no tree and signs nothing.
    pub fn disabled() -> Log {
        Log {
            state: Arc::default(),
            config: None,
        }
    }

    /// Reads every stored payment into the tree and the latest stored
    /// checkpoint of `config.origin`; refuses a ledger whose payments no
    /// longer lead to that checkpoint's root.
    pub fn load(store: &dyn LedgerStore, config: LogConfig) -> Result<Log, LedgerError> {
        let mut leaves = LeafReader::default();
        store.scan(&mut leaves)?;
        let tree = leaves.tree;
        let latest = store
            .checkpoints()?
            .into_iter()
            .filter(|c| c.origin == config.origin)
            .max_by_key(|c| c.size);
        if let Some(c) = &latest {
            if tree.root_at(c.size).ok() != Some(c.root) {
                return Err(LedgerError::Corrupt(format!(
                    "the stored payments do not lead to the root of the log's checkpoint of size {}: \
                     the ledger was rewritten or truncated; run micropay-server audit",
                    c.size
                )));
            }
        }
        let committed = tree.size();
        let state = LogState {
            tree,
            committed,
            latest,
            ..LogState::default()
        };
        Ok(Log {
            state: Arc::new(RwLock::new(state)),
            config: Some(config),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, LogState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, LogState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The log's origin, if it keeps one.
    pub fn origin(&self) -> Option<&str> {
        self.config.as_ref().map(|c| c.origin.as_str())
    }

    /// The latest signed checkpoint.
    pub fn latest(&self) -> Option<StoredCheckpoint> {
        self.read().latest.clone()
    }

    /// The inclusion proof of payment `seq` under the latest checkpoint.
    pub fn inclusion(&self, seq: u64) -> Option<InclusionProof> {
        let state = self.read();
        let latest = state.latest.as_ref()?;
        let leaf_index = seq.checked_sub(1)?;
        let proof = state.tree.inclusion_proof(leaf_index, latest.size).ok()?;
        Some(InclusionProof {
            leaf_index,
            proof,
            checkpoint: latest.note.clone(),
        })
    }

    /// The consistency proof between two committed tree sizes.
    pub fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProofError> {
        let state = self.read();
        if to > state.committed {
            return Err(ProofError::BadSizes { from, to });
        }
        state.tree.consistency_proof(from, to)
    }
}

impl Sealer for Log {
    fn seal(&mut self, effects: &[Effect], now_ms: u64) -> Option<StoredCheckpoint> {
        let config = self.config.clone()?;
        let mut state = self.write();
        if state.stale {
            return None;
        }
        let mut added = false;
        for effect in effects {
            let Effect::Payment {
                seq,
                payment,
                at_ms,
                ..
            } = effect
            else {
                continue;
            };
            if *seq != state.tree.size() + 1 {
                tracing::warn!(
                    seq,
                    tree_size = state.tree.size(),
                    "payments settled by another server: this server stops signing checkpoints until it restarts"
                );
                let committed = state.committed;
                state.tree.truncate(committed);
                state.stale = true;
                return None;
            }
            state
                .tree
                .push(settlement_leaf(payment.signed(), *seq, *at_ms));
            added = true;
        }
        if !added {
            return None;
        }
        let checkpoint = Checkpoint {
            origin: config.origin.clone(),
            size: state.tree.size(),
            root: state.tree.root(),
        };
        let stored = StoredCheckpoint {
            origin: config.origin,
            size: checkpoint.size,
            root: checkpoint.root,
            note: checkpoint.sign(&config.key),
            at_ms: now_ms,
        };
        state.pending = Some(stored.clone());
        Some(stored)
    }

    fn settle(&mut self, committed: bool) {
        let mut state = self.write();
        let pending = state.pending.take();
        if committed {
            state.committed = state.tree.size();
            if pending.is_some() {
                state.latest = pending;
            }
        } else {
            let size = state.committed;
            state.tree.truncate(size);
        }
    }
}

/// The leaf of a stored payment row; a row that does not parse gets a
/// leaf no honest record has, so the tree (and audit) notice it.
pub fn stored_leaf(row: &StoredPayment) -> Hash {
    let seq = u64::try_from(row.seq).unwrap_or(0);
    let at_ms = u64::try_from(row.settled_at_ms).unwrap_or(0);
    // An over-long memo cannot be in canonical bytes: report, never panic.
    let parsed = (row.memo.len() <= MEMO_BYTES_MAX)
        .then(|| parse_payment(row))
        .flatten();
    match parsed {
        Some(payment) => settlement_leaf(&payment, seq, at_ms),
        None => leaf_hash(&settlement_record_raw(
            b"unparseable",
            &row.signature,
            seq,
            at_ms,
        )),
    }
}

/// Builds the tree from a store's payment rows.
#[derive(Default)]
pub struct LeafReader {
    /// The tree of the rows read so far.
    pub tree: MerkleTree,
}

impl AuditVisitor for LeafReader {
    fn account(&mut self, _: &str, _: &[u8], _: i64, _: i64) {}
    fn grant(&mut self, _: &str, _: i64) {}
    fn key_change(&mut self, _: StoredKeyChange) {}
    fn payment(&mut self, row: StoredPayment) {
        self.tree.push(stored_leaf(&row));
    }
    fn refusal(&mut self) {}
    fn channel(&mut self, _: crate::ledger::channel_rows::StoredChannel) {}
}

/// What checking the stored checkpoints found.
#[derive(Debug, Default)]
pub struct CheckpointAudit {
    /// Signatures checked.
    pub signatures: u64,
    /// What is wrong.
    pub violations: Vec<String>,
}

/// Checks every stored checkpoint against `tree` (recomputed from the
/// stored payments): its note must say what its row says, the tree must
/// reach its root at its size, and with `keys` given its signature must
/// verify with one of them.
pub fn audit_checkpoints(
    tree: &MerkleTree,
    checkpoints: &[StoredCheckpoint],
    keys: &[crate::core::keys::VerifyingKey],
) -> CheckpointAudit {
    let mut found = CheckpointAudit::default();
    // A rewritten early payment breaks every later checkpoint: report
    // the first of them and how many there are, not one line each.
    let (mut short, mut wrong): (Vec<&StoredCheckpoint>, Vec<&StoredCheckpoint>) =
        (Vec::new(), Vec::new());
    for c in checkpoints {
        let at = format!("checkpoint {} of size {}", c.origin, c.size);
        match crate::core::checkpoint::parse(&c.note) {
            Ok((note, _, _))
                if note.origin == c.origin && note.size == c.size && note.root == c.root => {}
            Ok(_) => found
                .violations
                .push(format!("{at}: its note says something else")),
            Err(e) => found.violations.push(format!("{at}: {e}")),
        }
        if c.size > tree.size() {
            short.push(c);
        } else if tree.root_at(c.size).ok() != Some(c.root) {
            wrong.push(c);
        }
        if !keys.is_empty() {
            found.signatures += 1;
            let signed = keys
                .iter()
                .any(|k| crate::core::checkpoint::open(&c.note, &c.origin, k).is_ok());
            if !signed {
                found
                    .violations
                    .push(format!("{at}: not signed by the server's key"));
            }
        }
    }
    if let Some(c) = short.first() {
        found.violations.push(format!(
            "checkpoint {} of size {} (and {} more): only {} payments are stored (deleted or truncated)",
            c.origin,
            c.size,
            short.len() - 1,
            tree.size()
        ));
    }
    if let Some(c) = wrong.first() {
        found.violations.push(format!(
            "checkpoint {} of size {} (and {} later): the stored payments do not lead to its root \
             (a payment was rewritten, deleted or reordered)",
            c.origin,
            c.size,
            wrong.len() - 1
        ));
    }
    found
}
