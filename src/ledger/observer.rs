//! [`CommitObserver`]: what the group-commit writer tells whoever watches
//! it (the server's metrics) after each commit. The ledger knows nothing
//! of metrics or servers; it only calls this trait.

use std::time::Duration;

/// Told about every commit the writer makes.
pub trait CommitObserver: Send + Sync + 'static {
    /// A batch of `commands` commands was decided and committed (or failed
    /// to commit) in `elapsed`, measured around the store's commit.
    fn batch_committed(&self, commands: usize, elapsed: Duration);
}

/// An observer that ignores everything: the ledger without metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCommitObserver;

impl CommitObserver for NoCommitObserver {
    fn batch_committed(&self, _commands: usize, _elapsed: Duration) {}
}
