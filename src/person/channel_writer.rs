//! The payee's group writer of channel links: `serve` accepts each
//! `channel_pay` in memory, in the order the payer sent it, and one task
//! writes every link accepted since its last write with one round of
//! fsyncs; each payment is acknowledged once the write holding it is
//! done. A payer that pipelines many small payments therefore pays one
//! disk flush per batch instead of one per payment, and no link is
//! acknowledged before it is on disk.
//!
//! If a write fails, the writer stops: every waiting and later link is
//! refused ([`PayeeRefusal::NotStored`]) until `serve` restarts and
//! reloads what is on disk, so an acknowledgement never covers a link
//! that a restart would lose.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{watch, Notify};

use crate::core::channel::{check_link, ChannelId, Link, LinkError, LinkStep};
use crate::core::limits::CHANNEL_INLINE_HASHES_MAX;
use crate::person::channel_payee::{write_channels, HeldChannel, PayeeChannels, PayeeRefusal};

/// The payee's channels, shared by its connections, the writer and the
/// close task.
pub type SharedChannels = Arc<Mutex<PayeeChannels>>;

/// How far the writer got.
#[derive(Debug, Clone, Default)]
struct Written {
    /// Every link with a ticket up to this one is on disk.
    ticket: u64,
    /// Why the writer stopped, once it has.
    halted: Option<Halt>,
}

#[derive(Debug, Clone)]
enum Halt {
    Failed(String),
    Stopped,
}

impl Halt {
    fn refusal(&self) -> PayeeRefusal {
        match self {
            Halt::Failed(why) => PayeeRefusal::NotStored(why.clone()),
            Halt::Stopped => PayeeRefusal::Stopping,
        }
    }
}

/// Accepts links in memory and writes them in batches (see the module
/// documentation).
pub struct ChannelWriter {
    channels: SharedChannels,
    written: watch::Sender<Written>,
    wake: Notify,
}

impl ChannelWriter {
    /// A writer for `channels`; it writes once [`ChannelWriter::run`] runs.
    pub fn new(channels: SharedChannels) -> Arc<ChannelWriter> {
        Arc::new(ChannelWriter {
            channels,
            written: watch::Sender::new(Written::default()),
            wake: Notify::new(),
        })
    }

    /// The channels this writer holds.
    pub fn channels(&self) -> &SharedChannels {
        &self.channels
    }

    fn lock(&self) -> MutexGuard<'_, PayeeChannels> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Accepts `link` as `w_index` of channel `id` in memory if it extends
    /// the link held, and answers the ticket to wait for with
    /// [`ChannelWriter::written`] and the index then held. A link already
    /// held (sent again) pays nothing and answers the index held, once
    /// that is on disk. The hashing runs outside the lock, so a long step
    /// on one channel does not hold up the others.
    pub fn accept(
        &self,
        id: &ChannelId,
        index: u64,
        link: Link,
    ) -> Result<(u64, u64), PayeeRefusal> {
        if let Some(halt) = &self.written.borrow().halted {
            return Err(halt.refusal());
        }
        loop {
            let (links, held, held_link) = self.lock().position(id)?;
            let step = check_off_runtime(id, links, (held, &held_link), (index, &link))?;
            let mut channels = self.lock();
            if step == LinkStep::AlreadyHeld {
                // Asked again under the lock: the channel may have been
                // closed meanwhile, and it may hold more by now.
                let (_, now_held, _) = channels.position(id)?;
                return Ok((channels.latest_ticket(), now_held));
            }
            // Another connection may have moved the channel while this one
            // hashed; then check again from the new position.
            if let Some(ticket) = channels.advance(id, held, (index, link))? {
                self.wake.notify_one();
                return Ok((ticket, index));
            }
        }
    }

    /// Waits until the link with `ticket` is on disk; a refusal when the
    /// writer stopped before writing it.
    pub async fn written(&self, ticket: u64) -> Result<(), PayeeRefusal> {
        let mut rx = self.written.subscribe();
        let state = rx
            .wait_for(|w| w.ticket >= ticket || w.halted.is_some())
            .await
            .map_err(|_| PayeeRefusal::Stopping)?;
        if state.ticket >= ticket {
            return Ok(());
        }
        Err(state
            .halted
            .as_ref()
            .map_or(PayeeRefusal::Stopping, Halt::refusal))
    }

    /// Writes accepted links until `stop` turns true (then writes what is
    /// left once more and stops) or a write fails.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let (ticket, batch) = self.lock().take_unwritten();
            let wrote_some = !batch.is_empty();
            if wrote_some {
                if let Err(why) = self.write(batch).await {
                    return self.halt(Halt::Failed(why));
                }
            }
            // Every link up to `ticket` is now written, or belonged to a
            // channel forgotten since (whose close first waited for its
            // links to be written).
            self.written
                .send_modify(|w| w.ticket = w.ticket.max(ticket));
            if wrote_some {
                continue;
            }
            if *stop.borrow() {
                return self.halt(Halt::Stopped);
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                changed = stop.changed() => if changed.is_err() {
                    return self.halt(Halt::Stopped);
                },
            }
        }
    }

    /// Writes `batch` off the runtime and records it as written.
    async fn write(&self, batch: Vec<HeldChannel>) -> Result<(), String> {
        let dir = self.lock().dir().to_owned();
        let written =
            tokio::task::spawn_blocking(move || write_channels(&dir, &batch).map(|()| batch))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        self.lock()
            .mark_written(&written)
            .map_err(|e| e.to_string())
    }

    fn halt(&self, why: Halt) {
        if let Halt::Failed(e) = &why {
            tracing::error!("writing channel links failed; no more links are acknowledged until serve restarts: {e}");
        }
        self.written.send_modify(|w| w.halted = Some(why));
    }
}

/// [`check_link`], moved off the async runtime's worker (with
/// `block_in_place`) when it costs more than
/// [`CHANNEL_INLINE_HASHES_MAX`] hashes: a link may take up to n hashes,
/// and the caller must not spawn it elsewhere, since links are checked in
/// the order they arrived.
fn check_off_runtime(
    id: &ChannelId,
    links: u64,
    held: (u64, &Link),
    presented: (u64, &Link),
) -> Result<LinkStep, LinkError> {
    let steps = held.0.abs_diff(presented.0);
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if steps > CHANNEL_INLINE_HASHES_MAX && multi_thread {
        tokio::task::block_in_place(|| check_link(id, links, held, presented))
    } else {
        check_link(id, links, held, presented)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::channel::{Chain, Commitment, OpenReceipt};
    use crate::core::keys::SigningKey;
    use crate::core::name::Name;

    fn name(s: &str) -> Name {
        Name::parse(s).expect("valid")
    }

    /// A payee store holding one offered channel of 5 000 links.
    fn store_with_channel(dir: &std::path::Path) -> (SharedChannels, Chain) {
        let alice = SigningKey::ed25519_from_seed(&[1; 32]);
        let server = SigningKey::ed25519_from_seed(&[0x42; 32]);
        let id = ChannelId::random();
        let chain = Chain::generate(id, Link::random_secret(), 5_000).expect("in bounds");
        let signed = Commitment {
            id,
            payer: name("alice"),
            payee: name("bob"),
            root: chain.root(),
            value_minor: 1,
            links: 5_000,
            expires_at_s: 1_800_000_000,
        }
        .sign(&alice);
        let receipt = OpenReceipt {
            id,
            commitment_hash: signed.content_hash(),
            hold_minor: 5_000,
            opened_at_ms: 5,
        }
        .sign(&server);
        let mut store = PayeeChannels::open(dir).expect("opens");
        store
            .offer(
                (&name("bob"), &name("alice"), alice.verifying_key()),
                server.verifying_key(),
                signed,
                receipt,
            )
            .expect("accepted");
        (Arc::new(Mutex::new(store)), chain)
    }

    #[tokio::test]
    async fn pipelined_links_are_acknowledged_only_once_written_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (channels, chain) = store_with_channel(dir.path());
        let id = chain.id();
        let writer = ChannelWriter::new(channels);
        let (stop_tx, stop) = watch::channel(false);
        // Accepted before the writer runs: nothing is written yet.
        let tickets: Vec<u64> = (1..=300)
            .map(|i| writer.accept(&id, i, chain.link(i).expect("in bounds")))
            .map(|accepted| accepted.map(|(ticket, _)| ticket))
            .collect::<Result<_, _>>()
            .expect("each link extends the last");
        assert_eq!(writer.written.borrow().ticket, 0);
        // A link sent again pays nothing and answers the index held; a
        // forged older one is refused, in memory, before any write.
        let (_, held) = writer
            .accept(&id, 200, chain.link(200).expect("in bounds"))
            .expect("already held");
        assert_eq!(held, 300);
        assert!(matches!(
            writer.accept(&id, 200, chain.link(201).expect("in bounds")),
            Err(PayeeRefusal::Link(_))
        ));
        let running = tokio::spawn(writer.clone().run(stop));
        for ticket in tickets {
            writer.written(ticket).await.expect("written");
        }
        stop_tx.send(true).expect("the writer listens");
        running.await.expect("the writer stops");
        assert!(matches!(
            writer.accept(&id, 301, chain.link(301).expect("in bounds")),
            Err(PayeeRefusal::Stopping)
        ));
        let reopened = PayeeChannels::open(dir.path()).expect("reopens");
        assert_eq!(reopened.get(&id).expect("held").index, 300);
    }

    #[tokio::test]
    async fn a_close_stops_new_links_waits_for_accepted_ones_and_stays_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (channels, chain) = store_with_channel(dir.path());
        let id = chain.id();
        let writer = ChannelWriter::new(channels.clone());
        let w = |i| chain.link(i).expect("in bounds");
        let (ticket, _) = writer.accept(&id, 7, w(7)).expect("extends the root");
        // The close starts: it claims link 7, the newest accepted, and no
        // later link is taken, so none can be acknowledged past it.
        let (covering, due) = channels.lock().expect("lock").begin_closing(u64::MAX);
        assert_eq!((due.len(), due[0].index), (1, 7));
        assert!(covering >= ticket);
        assert!(matches!(
            writer.accept(&id, 8, w(8)),
            Err(PayeeRefusal::Closing(_))
        ));
        let (stop_tx, stop) = watch::channel(false);
        let running = tokio::spawn(writer.clone().run(stop));
        writer
            .written(covering)
            .await
            .expect("written before the close");
        channels.lock().expect("lock").forget(&id).expect("forgets");
        stop_tx.send(true).expect("the writer listens");
        running.await.expect("the writer stops");
        let reopened = PayeeChannels::open(dir.path()).expect("reopens");
        assert!(reopened.get(&id).is_none(), "a closed channel stays closed");
    }

    #[tokio::test]
    async fn after_a_failed_write_only_what_is_on_disk_is_claimed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (channels, chain) = store_with_channel(dir.path());
        let id = chain.id();
        let writer = ChannelWriter::new(channels.clone());
        let w = |i| chain.link(i).expect("in bounds");
        let (stop_tx, stop) = watch::channel(false);
        let running = tokio::spawn(writer.clone().run(stop));
        let (first, _) = writer.accept(&id, 3, w(3)).expect("extends the root");
        writer.written(first).await.expect("written");
        // The disk goes away: link 9 is refused, and a close claims 3.
        let moved = dir.path().with_extension("gone");
        std::fs::rename(dir.path(), &moved).expect("moves the directory away");
        let (second, _) = writer.accept(&id, 9, w(9)).expect("accepted in memory");
        assert!(matches!(
            writer.written(second).await,
            Err(PayeeRefusal::NotStored(_))
        ));
        let claim = channels.lock().expect("lock").durable_requests(&[id]);
        assert_eq!((claim.len(), claim[0].index), (1, 3));
        std::fs::rename(&moved, dir.path()).expect("moves it back");
        let _ = stop_tx.send(true);
        running.await.expect("the writer stopped");
    }

    #[tokio::test]
    async fn a_failed_write_refuses_every_waiting_and_later_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (channels, chain) = store_with_channel(dir.path());
        let id = chain.id();
        let writer = ChannelWriter::new(channels);
        let (ticket, _) = writer
            .accept(&id, 1, chain.link(1).expect("in bounds"))
            .expect("extends the root");
        // The directory disappears: the write cannot happen.
        std::fs::remove_dir_all(dir.path()).expect("removes");
        let (_stop_tx, stop) = watch::channel(false);
        writer.clone().run(stop).await;
        assert!(matches!(
            writer.written(ticket).await,
            Err(PayeeRefusal::NotStored(_))
        ));
        assert!(matches!(
            writer.accept(&id, 2, chain.link(2).expect("in bounds")),
            Err(PayeeRefusal::NotStored(_))
        ));
    }
}
