//! The single writer: one thread takes commands off a bounded queue,
//! drains whatever is waiting (up to [`GROUP_COMMIT_BATCH_MAX`]) into one
//! batch, has the store decide and commit it in one transaction, and only
//! then answers each command. Nothing is acknowledged before it is
//! durable, and under load many settlements share one commit (group
//! commit). The thread is the same for every backend.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::core::limits::GROUP_COMMIT_BATCH_MAX;
use crate::ledger::handle::KeyRegistry;
use crate::ledger::{Answer, Command, CommitObserver, LedgerError, LedgerStore, Sealer};

/// A command with the channel its answer goes back on.
pub struct Queued {
    /// What to do.
    pub command: Command,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Answer, LedgerError>>,
}

/// What the writer thread receives.
pub enum WriterMessage {
    /// A command to decide.
    Command(Queued),
    /// Finish what is queued, then stop.
    Shutdown,
}

/// Where the writer's time goes, logged when it stops: the figures behind
/// the group-commit numbers in docs/BENCHMARKS.md.
#[derive(Debug, Default)]
struct WriterStats {
    batches: u64,
    commands: u64,
    /// Time spent in the store's commit (deciding, writing, syncing), µs.
    commit_us: u64,
}

/// Runs the writer until it is told to stop or every sender is gone,
/// telling `observer` about each commit and sealing each batch into the
/// log with `sealer`.
pub fn run_writer(
    store: Arc<dyn LedgerStore>,
    mut rx: mpsc::Receiver<WriterMessage>,
    keys: KeyRegistry,
    now_ms: impl Fn() -> u64,
    observer: Arc<dyn CommitObserver>,
    mut sealer: Box<dyn Sealer>,
) {
    let mut stats = WriterStats::default();
    let mut batch: Vec<Queued> = Vec::with_capacity(GROUP_COMMIT_BATCH_MAX);
    let mut stopping = false;
    while !stopping {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        stopping |= take(first, &mut batch);
        while batch.len() < GROUP_COMMIT_BATCH_MAX && !stopping {
            match rx.try_recv() {
                Ok(message) => stopping |= take(message, &mut batch),
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let commands = batch.len();
        stats.commands += commands as u64;
        let started = Instant::now();
        commit_and_answer(store.as_ref(), &mut batch, &keys, now_ms(), sealer.as_mut());
        let elapsed = started.elapsed();
        stats.batches += 1;
        stats.commit_us += elapsed.as_micros() as u64;
        observer.batch_committed(commands, elapsed);
    }
    if let Err(e) = store.close() {
        tracing::warn!("closing the ledger failed: {e}");
    }
    tracing::info!(
        batches = stats.batches,
        commands = stats.commands,
        per_commit = stats.commands as f64 / stats.batches.max(1) as f64,
        commit_us_per_batch = stats.commit_us as f64 / stats.batches.max(1) as f64,
        "ledger writer stopped"
    );
}

/// Adds a command to the batch; returns whether a shutdown was asked for.
fn take(message: WriterMessage, batch: &mut Vec<Queued>) -> bool {
    match message {
        WriterMessage::Command(queued) => {
            batch.push(queued);
            false
        }
        WriterMessage::Shutdown => true,
    }
}

fn commit_and_answer(
    store: &dyn LedgerStore,
    batch: &mut Vec<Queued>,
    keys: &KeyRegistry,
    now_ms: u64,
    sealer: &mut dyn Sealer,
) {
    let (commands, replies): (Vec<Command>, Vec<_>) =
        batch.drain(..).map(|q| (q.command, q.reply)).unzip();
    let committed = store.commit(&commands, now_ms, sealer);
    // Before any answer goes out, so that a receipt's proof can use the
    // batch's checkpoint.
    sealer.settle(committed.is_ok());
    match committed {
        Ok(answers) => {
            assert_eq!(answers.len(), commands.len(), "one answer per command");
            publish_keys(keys, &commands, &answers);
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Err(e) => {
            tracing::error!("ledger commit failed: {e}");
            // A database that cannot be reached is a condition to retry
            // (`unavailable`), not a fault of the server (`internal`).
            let answer = |e: &LedgerError| match e {
                LedgerError::Unavailable(why) => LedgerError::Unavailable(why.clone()),
                _ => LedgerError::CommitFailed,
            };
            for reply in replies {
                let _ = reply.send(Err(answer(&e)));
            }
        }
    }
}

/// Durable now: connections may verify with the new keys.
fn publish_keys(keys: &KeyRegistry, commands: &[Command], answers: &[Answer]) {
    let mut registry = keys.write().unwrap_or_else(|p| p.into_inner());
    for (command, answer) in commands.iter().zip(answers) {
        match (command, answer) {
            (Command::Register { name, key, .. }, Answer::Registered(_)) => {
                registry.insert(name.clone(), Arc::new(key.clone()));
            }
            (Command::ChangeKey(change), Answer::KeyChanged(_)) => {
                registry.insert(change.name().clone(), Arc::new(change.new_key().clone()));
            }
            _ => {}
        }
    }
}
