//! The log in the ledger: the Merkle tree of every change this server
//! wrote (docs/PROTOCOL.md §11), kept in memory and extended by the
//! group-commit writer, which hands each batch's records and one signed
//! checkpoint over them to the store, to be written in the batch's own
//! transaction (table `log_leaves`, beside `checkpoints`). Handlers read
//! proofs from it for receipts, `checkpoint` and `consistency`.
//!
//! Each server keeps its own log (its origin names its key, and on a
//! shared PostgreSQL database also its `--log-name`): servers sharing a
//! database each append only what they decided, and audit checks every
//! log and that together they hold exactly the stored rows.

use std::sync::{Arc, RwLock};

use std::collections::{BTreeMap, HashMap};

use crate::core::batch::Effect;
use crate::core::checkpoint::Checkpoint;
use crate::core::keys::{SigningKey, VerifyingKey};
use crate::core::log_record::settlement_seq;
use crate::core::merkle::{leaf_hash, Hash, MerkleTree, ProofError};
use crate::ledger::log_records::{effect_records, row_records, ByRow, RowRef, RowVisitor};
use crate::ledger::{LedgerError, LedgerStore};

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

/// Why an adoption did not happen: another server logged the rows first
/// (both backends refuse with it).
pub(crate) const ADOPTED_BY_ANOTHER: &str =
    "another server logged this ledger's rows first; start this server again";

/// What a store writes beside a batch's rows, in the same transaction:
/// the batch's records, appended to the log `checkpoint.origin` from leaf
/// `first_index` on, and the checkpoint signed over them.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The leaf index of the first record.
    pub first_index: u64,
    /// The records, in leaf order.
    pub records: Vec<Vec<u8>>,
    /// The signed tree head that covers them.
    pub checkpoint: StoredCheckpoint,
    /// Whether these records adopt the rows of a ledger that had no log:
    /// the store then refuses if any log has leaves by now (another
    /// server adopted them first).
    pub adopting: bool,
}

/// What the writer does with each batch's effects, inside its
/// transaction: [`Sealer::seal`] returns the records and checkpoint to
/// write with the batch, [`Sealer::settle`] says whether it committed.
pub trait Sealer: Send {
    /// Appends the batch's records; returns what to store in the same
    /// transaction, if anything.
    fn seal(&mut self, effects: &[Effect], now_ms: u64) -> Option<Sealed>;
    /// After the transaction: whether it committed.
    fn settle(&mut self, committed: bool);
    /// The log this sealer appends to, if any.
    fn origin(&self) -> Option<&str> {
        None
    }
    /// Called by a store whose failed commit may still have happened
    /// (PostgreSQL: the connection lost during `COMMIT`) at the start of
    /// each transaction, with the log's size as stored there and the root
    /// of the checkpoint stored at that size: the sealer takes the batch
    /// it last gave up on back if it did commit (same size, same root),
    /// and refuses a log that someone else extended.
    fn resync(
        &mut self,
        _durable_size: u64,
        _durable_root: Option<Hash>,
    ) -> Result<(), LedgerError> {
        Ok(())
    }
}

/// A sealer that logs nothing (tests and tools that open a ledger without
/// the server's key; audit then finds the ledger without a log).
pub struct NoSealer;

impl Sealer for NoSealer {
    fn seal(&mut self, _: &[Effect], _: u64) -> Option<Sealed> {
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
    /// The keys of the other servers whose logs may share the database
    /// (`--log-peer-cert`): a log whose latest checkpoint none of these
    /// keys (nor this server's) signed makes the server refuse to start,
    /// since anyone with the database could have written it.
    pub peers: Vec<VerifyingKey>,
}

impl LogConfig {
    /// The keys a log on this ledger may be signed with.
    fn trusted(&self) -> impl Iterator<Item = &VerifyingKey> {
        std::iter::once(self.key.verifying_key()).chain(&self.peers)
    }
}

#[derive(Default)]
struct LogState {
    tree: MerkleTree,
    /// Leaves durably committed; the tree may hold more while a batch is
    /// in flight.
    committed: u64,
    latest: Option<StoredCheckpoint>,
    pending: Option<StoredCheckpoint>,
    /// The leaf of each settled payment in this log, as (seq, leaf
    /// index), both ascending: a receipt's proof starts from it.
    payments: Vec<(u64, u64)>,
    /// Records of rows written before the ledger had a log, logged with
    /// the next batch (see [`Log::load`]).
    adopt: Vec<Vec<u8>>,
    /// The leaves of the batch being committed.
    batch: Vec<Leaf>,
    /// The last batch given up on, with its checkpoint: kept until a
    /// store says whether it committed after all ([`Sealer::resync`]).
    unsure: Option<(Vec<Leaf>, Option<StoredCheckpoint>)>,
}

/// A leaf's hash, with its payment's seq if it is a settlement.
type Leaf = (Hash, Option<u64>);

impl LogState {
    fn push(&mut self, record: &[u8]) -> Leaf {
        let leaf = (leaf_hash(record), settlement_seq(record));
        self.push_leaf(leaf);
        leaf
    }

    fn push_leaf(&mut self, (hash, seq): Leaf) {
        if let Some(seq) = seq {
            self.payments.push((seq, self.tree.size()));
        }
        self.tree.push(hash);
    }

    fn truncate(&mut self, size: u64) {
        self.tree.truncate(size);
        while self.payments.last().is_some_and(|&(_, leaf)| leaf >= size) {
            self.payments.pop();
        }
    }
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
    /// The payment's leaf index in this log.
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

    /// Reads the log `config.origin` from the store, and checks, as
    /// audit does (without signatures or the replay), that every stored
    /// row is in some log and every log reaches its checkpoints; refuses
    /// a ledger that was rewritten, truncated or written around a server.
    ///
    /// A ledger written before every change was logged (schema 6 and
    /// older: only payments were leaves, or no log at all) has its rows
    /// adopted first, in one transaction with one checkpoint: payments in
    /// `seq` order (so that earlier checkpoints stay prefixes of the log),
    /// then every other row.
    pub fn load(store: &dyn LedgerStore, config: LogConfig) -> Result<Log, LedgerError> {
        let log = Log {
            state: Arc::default(),
            config: Some(config),
        };
        if !store.has_log()? {
            log.adopt(store)?;
        }
        let origin = log.origin().unwrap_or_default().to_owned();
        let mut reader = LoadReader {
            origin: &origin,
            state: LogState::default(),
            check: LogCheck::default(),
            checkpoints: Vec::new(),
        };
        store.scan(&mut ByRow(&mut reader))?;
        let checkpoints = std::mem::take(&mut reader.checkpoints);
        let found = reader.check.finish(&checkpoints, &[]);
        if let Some(first) = found.violations.first() {
            return Err(LedgerError::Corrupt(format!(
                "{first} ({} finding(s) in all); run micropay-server audit",
                found.violations.len()
            )));
        }
        check_signed(&checkpoints, log.config.as_ref())?;
        let mut state = reader.state;
        state.latest = checkpoints
            .into_iter()
            .filter(|c| c.origin == origin)
            .max_by_key(|c| c.size);
        state.committed = state.tree.size();
        *log.write() = state;
        Ok(log)
    }

    /// Logs the rows of a ledger that has no log yet (see [`Log::load`]).
    ///
    /// Checkpoints from before (schema 6: one per batch, over the settled
    /// payments alone, in `seq` order) must match the stored payments, or
    /// nothing is adopted; the rows go into the log those checkpoints
    /// name when this server's key signed them, so that they stay
    /// prefixes of it, and into this server's own log when there are none.
    fn adopt(&self, store: &dyn LedgerStore) -> Result<(), LedgerError> {
        let Some(config) = self.config.clone() else {
            return Ok(());
        };
        let mut rows = RowCollector::default();
        store.scan(&mut ByRow(&mut rows))?;
        let mut payments = MerkleTree::new();
        for record in &rows.payments {
            payments.push(leaf_hash(record));
        }
        let origin = legacy_origin(&rows.checkpoints, &payments, &config)?;
        let mut records = rows.payments;
        records.extend(rows.others);
        if records.is_empty() {
            return Ok(());
        }
        let count = records.len();
        let mut sealer = Log {
            state: Arc::default(),
            config: Some(LogConfig { origin, ..config }),
        };
        sealer.write().adopt = records;
        let committed = store.commit(&[], crate::system::clock::now_ms(), &mut sealer);
        sealer.settle(committed.is_ok());
        committed?;
        tracing::info!(
            records = count,
            origin = sealer.origin().unwrap_or_default(),
            "logged the rows of a ledger written before every change was logged"
        );
        Ok(())
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

    /// The inclusion proof of payment `seq` under the latest checkpoint;
    /// `None` when this log does not hold it (no log, or a payment
    /// another server settled).
    pub fn inclusion(&self, seq: u64) -> Option<InclusionProof> {
        let state = self.read();
        let latest = state.latest.as_ref()?;
        let at = state.payments.binary_search_by_key(&seq, |p| p.0).ok()?;
        let leaf_index = state.payments[at].1;
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
    fn seal(&mut self, effects: &[Effect], now_ms: u64) -> Option<Sealed> {
        let config = self.config.as_ref()?;
        let mut state = self.write();
        let mut records = std::mem::take(&mut state.adopt);
        let adopting = !records.is_empty();
        records.extend(effects.iter().flat_map(effect_records));
        if records.is_empty() {
            return None;
        }
        let first_index = state.tree.size();
        let batch = records.iter().map(|r| state.push(r)).collect();
        state.batch = batch;
        let checkpoint = Checkpoint {
            origin: config.origin.clone(),
            size: state.tree.size(),
            root: state.tree.root(),
        };
        let stored = StoredCheckpoint {
            origin: config.origin.clone(),
            size: checkpoint.size,
            root: checkpoint.root,
            note: checkpoint.sign(&config.key),
            at_ms: now_ms,
        };
        state.pending = Some(stored.clone());
        Some(Sealed {
            first_index,
            records,
            checkpoint: stored,
            adopting,
        })
    }

    fn settle(&mut self, committed: bool) {
        let mut state = self.write();
        let pending = state.pending.take();
        let batch = std::mem::take(&mut state.batch);
        if committed {
            state.committed = state.tree.size();
            state.unsure = None;
            if pending.is_some() {
                state.latest = pending;
            }
        } else {
            let size = state.committed;
            state.truncate(size);
            // A store may report the same failure twice (once per attempt,
            // once to the writer): only a batch actually given up on is
            // kept.
            if !batch.is_empty() {
                state.unsure = Some((batch, pending));
            }
        }
    }

    fn origin(&self) -> Option<&str> {
        Log::origin(self)
    }

    fn resync(&mut self, durable_size: u64, durable_root: Option<Hash>) -> Result<(), LedgerError> {
        let mut state = self.write();
        let unsure = state.unsure.take();
        if durable_size == state.committed {
            return Ok(());
        }
        match unsure {
            Some((batch, checkpoint))
                if state.committed.checked_add(batch.len() as u64) == Some(durable_size)
                    && checkpoint.as_ref().map(|c| c.root) == durable_root =>
            {
                // The commit we gave up on happened: its leaves are ours.
                for leaf in batch {
                    state.push_leaf(leaf);
                }
                state.committed = durable_size;
                if checkpoint.is_some() {
                    state.latest = checkpoint;
                }
                Ok(())
            }
            _ => Err(LedgerError::Database(format!(
                "the log {} holds {durable_size} leaves where this server wrote {}: another \
                 server appends to it; servers that share a database and a key need their own \
                 --log-name (or --server-id)",
                self.origin().unwrap_or_default(),
                state.committed
            ))),
        }
    }
}

/// What [`Log::load`] reads: this server's log, and everything the check
/// of rows against logs needs.
struct LoadReader<'a> {
    origin: &'a str,
    state: LogState,
    check: LogCheck,
    checkpoints: Vec<StoredCheckpoint>,
}

impl RowVisitor for LoadReader<'_> {
    fn row(&mut self, row: RowRef<'_>) {
        self.check.row(row);
    }
    fn log_leaf(&mut self, origin: &str, index: i64, record: &[u8]) {
        self.check.leaf(origin, index, record);
        if origin == self.origin {
            self.state.push(record);
        }
    }
    fn checkpoint(&mut self, checkpoint: StoredCheckpoint) {
        self.checkpoints.push(checkpoint);
    }
}

/// The log a ledger without leaves is adopted into: the one its earlier
/// checkpoints name (every one of them must be a head of the stored
/// payments' tree, and this server's key must have signed them), or this
/// server's own when there are none.
fn legacy_origin(
    checkpoints: &[StoredCheckpoint],
    payments: &MerkleTree,
    config: &LogConfig,
) -> Result<String, LedgerError> {
    let mut origin: Option<&str> = None;
    for c in checkpoints {
        if payments.root_at(c.size).ok() != Some(c.root) {
            return Err(LedgerError::Corrupt(format!(
                "checkpoint {} of size {} from before every change was logged does not match the \
                 stored payments: the ledger was rewritten; nothing was adopted",
                c.origin, c.size
            )));
        }
        if origin.is_some_and(|o| o != c.origin) {
            return Err(LedgerError::Corrupt(format!(
                "checkpoints of several logs from before every change was logged ({} and {}): \
                 upgrade with one server, after removing the other servers' old checkpoints",
                origin.unwrap_or_default(),
                c.origin
            )));
        }
        if crate::core::checkpoint::open(&c.note, &c.origin, config.key.verifying_key()).is_err() {
            return Err(LedgerError::Corrupt(format!(
                "checkpoint {} of size {} from before every change was logged is not signed by \
                 this server's key: upgrade the ledger with the server that signed it",
                c.origin, c.size
            )));
        }
        origin = Some(&c.origin);
    }
    Ok(origin.map_or_else(|| config.origin.clone(), str::to_owned))
}

/// Refuses a ledger with a log whose latest checkpoint no trusted key
/// signed: such a log (leaves and an unsigned or foreign checkpoint over
/// them) could cover rows written around every server. Only the latest
/// checkpoint of each log is checked: its root pins every leaf, and no
/// leaf may lie past it ([`LogCheck`]).
fn check_signed(
    checkpoints: &[StoredCheckpoint],
    config: Option<&LogConfig>,
) -> Result<(), LedgerError> {
    let Some(config) = config else {
        return Ok(());
    };
    let mut latest: BTreeMap<&str, &StoredCheckpoint> = BTreeMap::new();
    for c in checkpoints {
        let newest = latest.entry(&c.origin).or_insert(c);
        if c.size > newest.size {
            *newest = c;
        }
    }
    for (origin, c) in latest {
        let signed = config
            .trusted()
            .any(|k| crate::core::checkpoint::open(&c.note, origin, k).is_ok());
        if !signed {
            return Err(LedgerError::Corrupt(format!(
                "the latest checkpoint of the log {origin} (size {}) is signed neither by this \
                 server's key nor by a --log-peer-cert key: a log written around the servers, or \
                 one of a server this one does not know; run micropay-server audit --server-cert",
                c.size
            )));
        }
    }
    Ok(())
}

/// Gathers the records of every stored row (to adopt them into a new
/// log): payments apart, in `seq` order; and the checkpoints from before.
#[derive(Default)]
struct RowCollector {
    payments: Vec<Vec<u8>>,
    others: Vec<Vec<u8>>,
    checkpoints: Vec<StoredCheckpoint>,
}

impl RowVisitor for RowCollector {
    fn row(&mut self, row: RowRef<'_>) {
        let out = match row {
            RowRef::Payment(_) => &mut self.payments,
            _ => &mut self.others,
        };
        row_records(&mut |r| out.push(r), row);
    }
    fn log_leaf(&mut self, _: &str, _: i64, _: &[u8]) {}
    fn checkpoint(&mut self, checkpoint: StoredCheckpoint) {
        self.checkpoints.push(checkpoint);
    }
}

/// The name of a record kind, from its type byte, for reports.
fn kind_name(kind: u8) -> &'static str {
    match kind {
        1 => "settlement",
        2 => "key-history",
        3 => "grant",
        4 => "refusal",
        5 => "channel-open",
        6 => "channel-end",
        _ => "unknown",
    }
}

/// Audit's check of the logs against the rows: every stored row's record
/// must be a leaf of exactly one log, every leaf must be some row's
/// record, each log's leaves run from 0 without gaps, and each log
/// reaches the root of every checkpoint stored for it, with none of its
/// leaves left outside its latest checkpoint. Memory: one entry (a hash
/// and a count) per record, and each log's tree.
#[derive(Default)]
pub struct LogCheck {
    /// Leaf hashes of the records the rows call for: how many rows, and
    /// the record type.
    wanted: HashMap<Hash, (u32, u8)>,
    trees: BTreeMap<String, MerkleTree>,
    leaves: u64,
    /// Leaves that are no row's record, per record type; and the first
    /// few, by log and index.
    stray: BTreeMap<u8, u64>,
    stray_first: Vec<String>,
    violations: Vec<String>,
}

/// What [`LogCheck::finish`] found.
#[derive(Debug, Default)]
pub struct LogFindings {
    /// Leaves read, over all logs.
    pub leaves: u64,
    /// Logs (origins) with leaves or checkpoints.
    pub logs: u64,
    /// With no log at all: how many row records no log covers (a ledger
    /// written without a server's key, or whose log was deleted).
    pub unlogged_records: u64,
    /// Checkpoint signatures checked.
    pub signatures: u64,
    /// What is wrong.
    pub violations: Vec<String>,
}

/// The first stray leaves a report names one by one.
const STRAY_NAMED_MAX: usize = 3;

impl LogCheck {
    /// A stored row: its records must be leaves.
    pub fn row(&mut self, row: RowRef<'_>) {
        let wanted = &mut self.wanted;
        row_records(
            &mut |record| {
                let kind = record.first().copied().unwrap_or(0);
                wanted.entry(leaf_hash(&record)).or_insert((0, kind)).0 += 1;
            },
            row,
        );
    }

    /// A stored leaf, in log and index order.
    pub fn leaf(&mut self, origin: &str, index: i64, record: &[u8]) {
        self.leaves += 1;
        let tree = self.trees.entry(origin.to_owned()).or_default();
        if u64::try_from(index).ok() != Some(tree.size()) {
            self.violations.push(format!(
                "log {origin}: leaf {index} where leaf {} was due (a leaf was deleted or moved)",
                tree.size()
            ));
        }
        let hash = leaf_hash(record);
        tree.push(hash);
        match self.wanted.get_mut(&hash) {
            Some((count, _)) if *count > 0 => *count -= 1,
            _ => {
                let kind = record.first().copied().unwrap_or(0);
                *self.stray.entry(kind).or_default() += 1;
                if self.stray_first.len() < STRAY_NAMED_MAX {
                    self.stray_first
                        .push(format!("{origin} leaf {index} ({})", kind_name(kind)));
                }
            }
        }
    }

    /// The findings, with every checkpoint checked against its log (and
    /// its signature against one of `keys`, if any are given).
    pub fn finish(
        mut self,
        checkpoints: &[StoredCheckpoint],
        keys: &[crate::core::keys::VerifyingKey],
    ) -> LogFindings {
        let unlogged: u64 = self.wanted.values().map(|&(n, _)| u64::from(n)).sum();
        if self.leaves == 0 && checkpoints.is_empty() {
            return LogFindings {
                unlogged_records: unlogged,
                ..LogFindings::default()
            };
        }
        self.report_unmatched();
        let found = audit_checkpoints(&self.trees, checkpoints, keys);
        self.violations.extend(found.violations);
        let mut origins: Vec<&str> = self.trees.keys().map(String::as_str).collect();
        origins.extend(checkpoints.iter().map(|c| c.origin.as_str()));
        origins.sort_unstable();
        origins.dedup();
        LogFindings {
            leaves: self.leaves,
            logs: origins.len() as u64,
            unlogged_records: 0,
            signatures: found.signatures,
            violations: self.violations,
        }
    }

    fn report_unmatched(&mut self) {
        let mut missing: BTreeMap<u8, u64> = BTreeMap::new();
        for &(count, kind) in self.wanted.values() {
            if count > 0 {
                *missing.entry(kind).or_default() += u64::from(count);
            }
        }
        for (kind, count) in missing {
            self.violations.push(format!(
                "{count} stored {} row record(s) are in no log: written around the server \
                 (added, minted or rewritten)",
                kind_name(kind)
            ));
        }
        for (kind, count) in &self.stray {
            self.violations.push(format!(
                "{count} logged {} record(s) match no stored row: the rows were deleted or \
                 rewritten (first: {})",
                kind_name(*kind),
                self.stray_first.join(", ")
            ));
        }
    }
}

/// What checking the stored checkpoints found.
#[derive(Debug, Default)]
struct CheckpointAudit {
    signatures: u64,
    violations: Vec<String>,
}

/// Checks every stored checkpoint against the tree of its log: its note
/// must say what its row says, the tree must reach its root at its size,
/// its signature must verify with one of `keys` (when given), and no log
/// may hold leaves past its latest checkpoint.
fn audit_checkpoints(
    trees: &BTreeMap<String, MerkleTree>,
    checkpoints: &[StoredCheckpoint],
    keys: &[crate::core::keys::VerifyingKey],
) -> CheckpointAudit {
    let mut found = CheckpointAudit::default();
    let empty = MerkleTree::new();
    // A rewritten early leaf breaks every later checkpoint: report the
    // first of them and how many there are, not one line each.
    let (mut short, mut wrong): (Vec<&StoredCheckpoint>, Vec<&StoredCheckpoint>) =
        (Vec::new(), Vec::new());
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    for c in checkpoints {
        let tree = trees.get(&c.origin).unwrap_or(&empty);
        let at = format!("checkpoint {} of size {}", c.origin, c.size);
        check_note(c, &at, &mut found);
        let newest = latest.entry(&c.origin).or_default();
        *newest = (*newest).max(c.size);
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
        let size = trees.get(&c.origin).map_or(0, MerkleTree::size);
        found.violations.push(format!(
            "checkpoint {} of size {} (and {} more): the log holds only {size} leaves (deleted or truncated)",
            c.origin,
            c.size,
            short.len() - 1,
        ));
    }
    if let Some(c) = wrong.first() {
        found.violations.push(format!(
            "checkpoint {} of size {} (and {} later): the log does not lead to its root \
             (a leaf was rewritten, deleted or reordered)",
            c.origin,
            c.size,
            wrong.len() - 1
        ));
    }
    for (origin, tree) in trees {
        let covered = latest.get(origin.as_str()).copied().unwrap_or(0);
        if tree.size() > covered {
            found.violations.push(format!(
                "log {origin}: {} leaves past its latest checkpoint (size {covered}): \
                 leaves no server signed",
                tree.size() - covered
            ));
        }
    }
    found
}

fn check_note(c: &StoredCheckpoint, at: &str, found: &mut CheckpointAudit) {
    match crate::core::checkpoint::parse(&c.note) {
        Ok((note, _, _))
            if note.origin == c.origin && note.size == c.size && note.root == c.root => {}
        Ok(_) => found
            .violations
            .push(format!("{at}: its note says something else")),
        Err(e) => found.violations.push(format!("{at}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::name::Name;

    fn log() -> Log {
        let key = SigningKey::ed25519_from_seed(&[7; 32]);
        Log {
            state: Arc::default(),
            config: Some(LogConfig {
                origin: "micropay/test".into(),
                key: Arc::new(key),
                peers: Vec::new(),
            }),
        }
    }

    fn account(name: &str) -> Effect {
        let key = SigningKey::ed25519_from_seed(&[1; 32]);
        Effect::Account {
            name: Name::parse(name).expect("name"),
            key: key.verifying_key().clone(),
            key_not_after_s: 1,
            key_serial: vec![1],
            grant_minor: 10,
            at_ms: 2,
        }
    }

    #[test]
    fn a_batch_whose_commit_outcome_was_unknown_is_taken_back_if_it_happened() {
        let mut log = log();
        let sealed = log.seal(&[account("alice")], 5).expect("sealed");
        assert_eq!((sealed.first_index, sealed.records.len()), (0, 2));
        // The store and then the writer both report the failure.
        log.settle(false);
        log.settle(false);
        assert_eq!(log.read().tree.size(), 0);
        let root = log
            .read()
            .unsure
            .as_ref()
            .and_then(|u| u.1.as_ref())
            .map(|c| c.root);
        assert!(
            log.resync(2, None).is_err(),
            "same size, another root: not ours"
        );
        log.seal(&[account("alice")], 5).expect("sealed again");
        log.settle(false);
        log.resync(2, root).expect("the commit happened after all");
        assert_eq!(log.read().committed, 2);
        assert_eq!(log.latest().map(|c| c.size), Some(2));
        // A batch that did not commit is dropped.
        log.seal(&[account("bob")], 6).expect("sealed");
        log.settle(false);
        log.resync(2, root).expect("nothing happened");
        assert_eq!((log.read().tree.size(), log.read().committed), (2, 2));
        // Leaves nobody here wrote: another server appends to this log.
        assert!(log.resync(3, None).is_err());
    }

    fn stored(origin: &str, tree: &MerkleTree, size: u64, key: &SigningKey) -> StoredCheckpoint {
        let root = tree.root_at(size).expect("size");
        let note = Checkpoint {
            origin: origin.into(),
            size,
            root,
        }
        .sign(key);
        StoredCheckpoint {
            origin: origin.into(),
            size,
            root,
            note,
            at_ms: 0,
        }
    }

    #[test]
    fn only_logs_signed_by_a_trusted_key_are_accepted() {
        let log = log();
        let config = log.config.as_ref().expect("config");
        let mut tree = MerkleTree::new();
        tree.push(leaf_hash(b"a"));
        let ours = stored("micropay/test", &tree, 1, &config.key);
        let stranger = SigningKey::ed25519_from_seed(&[9; 32]);
        let forged = stored("micropay/forged", &tree, 1, &stranger);
        assert!(check_signed(std::slice::from_ref(&ours), Some(config)).is_ok());
        assert!(check_signed(&[ours.clone(), forged.clone()], Some(config)).is_err());
        let mut with_peer = config.clone();
        with_peer.peers.push(stranger.verifying_key().clone());
        assert!(check_signed(&[ours, forged], Some(&with_peer)).is_ok());
    }

    #[test]
    fn a_ledger_without_leaves_is_adopted_into_the_log_its_checkpoints_name() {
        let log = log();
        let config = log.config.as_ref().expect("config");
        let mut payments = MerkleTree::new();
        for r in [b"p1", b"p2"] {
            payments.push(leaf_hash(r));
        }
        assert_eq!(
            legacy_origin(&[], &payments, config).expect("none"),
            "micropay/test"
        );
        let old = stored("micropay/old", &payments, 2, &config.key);
        assert_eq!(
            legacy_origin(std::slice::from_ref(&old), &payments, config).expect("ours"),
            "micropay/old"
        );
        let mut other = MerkleTree::new();
        other.push(leaf_hash(b"x"));
        let rewritten = stored("micropay/old", &other, 1, &config.key);
        assert!(legacy_origin(&[rewritten], &payments, config).is_err());
        let second = stored("micropay/second", &payments, 1, &config.key);
        assert!(legacy_origin(&[old, second], &payments, config).is_err());
        let stranger = SigningKey::ed25519_from_seed(&[9; 32]);
        let foreign = stored("micropay/old", &payments, 2, &stranger);
        assert!(legacy_origin(&[foreign], &payments, config).is_err());
    }

    #[test]
    fn a_batch_without_changes_seals_nothing() {
        let mut log = log();
        assert!(log.seal(&[], 5).is_none());
        log.settle(true);
        assert_eq!(log.read().committed, 0);
    }
}
