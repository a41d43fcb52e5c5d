//! The payee's side of payment channels: the channels offered to me and
//! the latest link I hold of each, kept durably in a directory (one small
//! file per channel, written to a temporary file, fsynced, renamed over
//! the old one, and the directory fsynced) so that a link is on disk
//! before it is acknowledged and a restart loses no acknowledged unit.
//!
//! An offer is accepted only when the commitment names me as payee and
//! the payer on the other end of the connection as payer, the payer's
//! certificate key signed it, and the server's open receipt for exactly
//! that commitment verifies with the server's key. A payment `(id, i, w_i)`
//! is accepted only when `w_i` hashes forward to the link held, in
//! `i - held` ≤ n steps.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::channel::{
    check_link, verify_link, ChannelId, CloseRequest, Link, LinkError, LinkStep, OpenReceipt,
    SignedCommitment, SignedOpenReceipt,
};
use crate::core::keys::VerifyingKey;
use crate::core::name::Name;
use crate::wire::channel::parse_link;
use crate::wire::{CommitmentJson, WireError};

/// Why the payee's channel store failed.
#[derive(Debug, thiserror::Error)]
pub enum ChannelStoreError {
    /// Reading or writing a file failed.
    #[error("{path}: {error}")]
    Io {
        /// Which file.
        path: PathBuf,
        /// What happened.
        error: std::io::Error,
    },
    /// A channel file does not hold a channel.
    #[error("{path}: not a channel file: {why}")]
    Corrupt {
        /// Which file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

/// Why an offer or a payment is refused.
#[derive(Debug, thiserror::Error)]
pub enum PayeeRefusal {
    /// The offer is not for me, not from this payer, or badly signed.
    #[error("{0}")]
    BadOffer(String),
    /// No channel with this id was offered to me.
    #[error("channel {0} was not offered here")]
    Unknown(ChannelId),
    /// The link does not extend the one held.
    #[error("{0}")]
    Link(#[from] LinkError),
    /// The link could not be stored; it is not acknowledged.
    #[error("{0}")]
    Store(#[from] ChannelStoreError),
    /// An earlier write of links failed: this payee acknowledges no more
    /// links until it restarts (and reloads what is on disk).
    #[error("the payee cannot store links: {0}")]
    NotStored(String),
    /// The payee is stopping; the link was not stored.
    #[error("the payee is stopping; the link was not stored")]
    Stopping,
    /// The payee is closing (or closed) this channel: it takes no more
    /// links for it.
    #[error("channel {0} is being closed; it takes no more links")]
    Closing(ChannelId),
}

/// One channel as the payee holds it.
#[derive(Debug, Clone)]
pub struct HeldChannel {
    /// The payer's commitment.
    pub signed: SignedCommitment,
    /// The server's open receipt.
    pub receipt: SignedOpenReceipt,
    /// The latest index held (0: only the root).
    pub index: u64,
    /// `w_index`.
    pub link: Link,
}

/// A channel file's contents.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelFile {
    commitment: CommitmentJson,
    opened_at_ms: u64,
    server_signature: String,
    index: u64,
    link: String,
}

/// Every channel offered to me, with the latest link of each.
///
/// A link is first accepted in memory ([`PayeeChannels::accept`], which
/// hands out a ticket) and then written with every other link accepted
/// since the last write ([`PayeeChannels::take_unwritten`],
/// [`write_channels`]): one fsync covers many pipelined links, and a link
/// is acknowledged only once the write holding its ticket is done.
pub struct PayeeChannels {
    dir: PathBuf,
    channels: HashMap<ChannelId, HeldChannel>,
    /// Channels whose link in memory is newer than the one on disk.
    unwritten: HashSet<ChannelId>,
    /// The ticket of the latest accepted link.
    accepted_ticket: u64,
    /// The index and link of each channel as written on disk: what may be
    /// claimed when links in memory could not be written.
    durable: HashMap<ChannelId, (u64, Link)>,
    /// Channels whose close is under way: no link is taken for them, so
    /// that nothing is acknowledged past the index the close claims.
    closing: HashSet<ChannelId>,
}

impl PayeeChannels {
    /// Opens (creating if needed, mode 0700) the directory and loads every
    /// channel file in it.
    pub fn open(dir: &Path) -> Result<PayeeChannels, ChannelStoreError> {
        let io = |error| ChannelStoreError::Io {
            path: dir.to_owned(),
            error,
        };
        {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let mut channels = HashMap::new();
        for entry in fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "chan") {
                let held = load(&path)?;
                channels.insert(held.signed.commitment.id, held);
            }
        }
        let durable = channels
            .iter()
            .map(|(id, h)| (*id, (h.index, h.link)))
            .collect();
        Ok(PayeeChannels {
            dir: dir.to_owned(),
            channels,
            unwritten: HashSet::new(),
            accepted_ticket: 0,
            durable,
            closing: HashSet::new(),
        })
    }

    /// The directory the channel files live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The channel `id`, if offered here.
    pub fn get(&self, id: &ChannelId) -> Option<&HeldChannel> {
        self.channels.get(id)
    }

    /// Every channel held, in no particular order.
    pub fn all(&self) -> impl Iterator<Item = &HeldChannel> {
        self.channels.values()
    }

    /// Every channel held, as `channel list` shows it, oldest expiry
    /// first.
    pub fn summaries(&self) -> Vec<crate::person::channel_payer::ChannelSummary> {
        use crate::person::channel_payer::{ChannelRole, ChannelSummary};
        let mut out: Vec<_> = self
            .all()
            .map(|h| ChannelSummary::of(ChannelRole::Payee, &h.signed, h.index))
            .collect();
        out.sort_by_key(|c| (c.expires_at_s, c.id));
        out
    }

    /// Accepts an offer from `payer` (name and certificate key) to `me`,
    /// with the server's open receipt checked with `server_key`; stores it
    /// durably. Offering the same channel again keeps the link held.
    pub fn offer(
        &mut self,
        (me, payer, payer_key): (&Name, &Name, &VerifyingKey),
        server_key: &VerifyingKey,
        signed: SignedCommitment,
        receipt: SignedOpenReceipt,
    ) -> Result<(), PayeeRefusal> {
        let c = &signed.commitment;
        let bad = |why: &str| Err(PayeeRefusal::BadOffer(why.to_owned()));
        if c.payee != *me {
            return bad("the channel is not to me");
        }
        if c.payer != *payer {
            return bad("the channel is not from you");
        }
        if signed.verify(payer_key).is_err() {
            return bad("the commitment does not verify with your certificate key");
        }
        if receipt.verify(server_key, &signed).is_err() {
            return bad(
                "the open receipt does not verify with the server's key for this commitment",
            );
        }
        if self.channels.contains_key(&c.id) {
            return Ok(());
        }
        let held = HeldChannel {
            link: c.root,
            index: 0,
            signed,
            receipt,
        };
        write_channels(&self.dir, std::slice::from_ref(&held))?;
        let id = held.signed.commitment.id;
        self.durable.insert(id, (0, held.signed.commitment.root));
        self.channels.insert(id, held);
        Ok(())
    }

    /// Accepts `link` as `w_index` of channel `id` if it hashes forward to
    /// the link held, and stores it durably before answering the index now
    /// held. Nothing changes on a refusal. (`serve` does the same in two
    /// halves, [`PayeeChannels::accept`] and a shared write, so that one
    /// fsync covers many links.)
    pub fn pay(&mut self, id: &ChannelId, index: u64, link: Link) -> Result<u64, PayeeRefusal> {
        let (links, held, held_link) = self.position(id)?;
        if check_link(id, links, (held, &held_link), (index, &link))? == LinkStep::AlreadyHeld {
            return Ok(held);
        }
        let before = self.channels.get(id).cloned();
        self.advance(id, held, (index, link))?;
        let (_, unwritten) = self.take_unwritten();
        if let Err(e) = write_channels(&self.dir, &unwritten) {
            // Not on disk, so not accepted: the link held goes back.
            if let Some(before) = before {
                self.channels.insert(*id, before);
            }
            return Err(e.into());
        }
        self.mark_written(&unwritten)?;
        Ok(index)
    }

    /// Channel `id`'s number of links, the index held and its link: what
    /// a new link is checked against (outside any lock: checking k links
    /// costs k hashes).
    pub fn position(&self, id: &ChannelId) -> Result<(u64, u64, Link), PayeeRefusal> {
        if self.closing.contains(id) {
            return Err(PayeeRefusal::Closing(*id));
        }
        let held = self.channels.get(id).ok_or(PayeeRefusal::Unknown(*id))?;
        Ok((held.signed.commitment.links, held.index, held.link))
    }

    /// Moves channel `id` from index `from` to `(index, link)`, a link the
    /// caller checked against `from`, and answers the ticket the link must
    /// wait for; `None` when another link moved the channel since the
    /// check (check again against the new position).
    pub fn advance(
        &mut self,
        id: &ChannelId,
        from: u64,
        (index, link): (u64, Link),
    ) -> Result<Option<u64>, PayeeRefusal> {
        if self.closing.contains(id) {
            return Err(PayeeRefusal::Closing(*id));
        }
        let held = self
            .channels
            .get_mut(id)
            .ok_or(PayeeRefusal::Unknown(*id))?;
        if held.index != from {
            return Ok(None);
        }
        assert!(index > from, "a checked link extends the one held");
        held.index = index;
        held.link = link;
        self.unwritten.insert(*id);
        self.accepted_ticket += 1;
        Ok(Some(self.accepted_ticket))
    }

    /// The ticket of the newest link accepted: a link already held is
    /// durable once every link accepted so far is.
    pub fn latest_ticket(&self) -> u64 {
        self.accepted_ticket
    }

    /// Every channel whose newest link is not yet on disk, and the ticket
    /// of the newest link among them: once they are written
    /// ([`write_channels`]), every link with a ticket up to that one is
    /// durable.
    pub fn take_unwritten(&mut self) -> (u64, Vec<HeldChannel>) {
        let held = self
            .unwritten
            .drain()
            .filter_map(|id| self.channels.get(&id).cloned())
            .collect();
        (self.accepted_ticket, held)
    }

    /// Records that `written` are on disk. A channel forgotten while its
    /// file was being written has that file removed again, so a closed
    /// channel never comes back at the next start.
    pub fn mark_written(&mut self, written: &[HeldChannel]) -> Result<(), ChannelStoreError> {
        for held in written {
            let id = held.signed.commitment.id;
            if !self.channels.contains_key(&id) {
                remove_if_present(&self.path_of(&id))?;
                continue;
            }
            let root = held.signed.commitment.root;
            let on_disk = self.durable.entry(id).or_insert((0, root));
            if held.index > on_disk.0 {
                *on_disk = (held.index, held.link);
            }
        }
        Ok(())
    }

    /// Starts closing every channel that holds paid links and expires
    /// before `before_s`: from now on no link is taken for them. Answers
    /// the close requests with the newest link accepted of each, and the
    /// ticket that covers them all: once that ticket is written
    /// ([`crate::person::channel_writer::ChannelWriter::written`]), every
    /// link acknowledged for these channels is at most the index claimed.
    pub fn begin_closing(&mut self, before_s: u64) -> (u64, Vec<CloseRequest>) {
        let due: Vec<CloseRequest> = self
            .channels
            .values()
            .filter(|h| h.index > 0 && h.signed.commitment.expires_at_s < before_s)
            .map(|h| CloseRequest {
                id: h.signed.commitment.id,
                index: h.index,
                link: h.link,
            })
            .collect();
        self.closing.extend(due.iter().map(|c| c.id));
        (self.accepted_ticket, due)
    }

    /// The close requests of `ids` as written on disk, for the channels
    /// with at least one paid link there.
    pub fn durable_requests(&self, ids: &[ChannelId]) -> Vec<CloseRequest> {
        ids.iter()
            .filter_map(|id| {
                let (index, link) = *self.durable.get(id)?;
                (index > 0).then_some(CloseRequest {
                    id: *id,
                    index,
                    link,
                })
            })
            .collect()
    }

    /// Takes links for channel `id` again: its close did not happen.
    pub fn end_closing(&mut self, id: &ChannelId) {
        self.closing.remove(id);
    }

    /// Forgets a channel that is closed (its file is removed).
    pub fn forget(&mut self, id: &ChannelId) -> Result<(), ChannelStoreError> {
        self.closing.remove(id);
        self.durable.remove(id);
        self.unwritten.remove(id);
        if self.channels.remove(id).is_some() {
            remove_if_present(&self.path_of(id))?;
        }
        Ok(())
    }

    fn path_of(&self, id: &ChannelId) -> PathBuf {
        path_in(&self.dir, id)
    }
}

fn remove_if_present(path: &Path) -> Result<(), ChannelStoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(ChannelStoreError::Io {
            path: path.to_owned(),
            error,
        }),
    }
}

fn path_in(dir: &Path, id: &ChannelId) -> PathBuf {
    dir.join(format!("{id}.chan"))
}

/// Writes each channel in `held` to its file in `dir` (a temporary file,
/// fsynced and renamed over the old one) and then fsyncs the directory
/// once: after this returns, a crash leaves every one of these links on
/// disk. Blocking: call it off the async runtime.
pub fn write_channels(dir: &Path, held: &[HeldChannel]) -> Result<(), ChannelStoreError> {
    if held.is_empty() {
        return Ok(());
    }
    for one in held {
        write_file(dir, one)?;
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|error| ChannelStoreError::Io {
            path: dir.to_owned(),
            error,
        })
}

fn write_file(dir: &Path, held: &HeldChannel) -> Result<(), ChannelStoreError> {
    let path = path_in(dir, &held.signed.commitment.id);
    let io = |error| ChannelStoreError::Io {
        path: path.clone(),
        error,
    };
    let file = ChannelFile {
        commitment: CommitmentJson::from(&held.signed),
        opened_at_ms: held.receipt.receipt.opened_at_ms,
        server_signature: hex::encode(&held.receipt.signature),
        index: held.index,
        link: held.link.to_hex(),
    };
    let text = serde_json::to_vec(&file).map_err(|e| io(std::io::Error::other(e)))?;
    replace_file(&path, &text).map_err(io)
}

/// Replaces `path` with `bytes`: written to `path.tmp` (mode 0600),
/// fsynced, and renamed over `path`, so that a crash leaves either the
/// old contents or the new, never a mix. The caller fsyncs the directory
/// when the rename itself must survive a crash.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Reads one channel file back, checking that its link really is the
/// chain's link at its index (a corrupt file is reported, not trusted).
fn load(path: &Path) -> Result<HeldChannel, ChannelStoreError> {
    let corrupt = |why: String| ChannelStoreError::Corrupt {
        path: path.to_owned(),
        why,
    };
    let text = fs::read(path).map_err(|error| ChannelStoreError::Io {
        path: path.to_owned(),
        error,
    })?;
    let file: ChannelFile = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    let wire = |e: WireError| corrupt(e.message);
    let signed = file.commitment.parse().map_err(wire)?;
    let link = parse_link(&file.link, "link").map_err(wire)?;
    let c = &signed.commitment;
    if file.index > 0 {
        verify_link(&c.id, c.links, (0, &c.root), (file.index, &link))
            .map_err(|e| corrupt(e.to_string()))?;
    } else if link != c.root {
        return Err(corrupt("index 0 with a link other than the root".into()));
    }
    let receipt = SignedOpenReceipt {
        receipt: OpenReceipt {
            id: c.id,
            commitment_hash: signed.content_hash(),
            hold_minor: c.hold_minor().unwrap_or(0),
            opened_at_ms: file.opened_at_ms,
        },
        signature: hex::decode(&file.server_signature).map_err(|e| corrupt(e.to_string()))?,
    };
    Ok(HeldChannel {
        signed,
        receipt,
        index: file.index,
        link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::channel::{Chain, Commitment};
    use crate::core::keys::SigningKey;

    fn name(s: &str) -> Name {
        Name::parse(s).expect("valid")
    }

    struct Setup {
        chain: Chain,
        signed: SignedCommitment,
        receipt: SignedOpenReceipt,
        alice: SigningKey,
        server: SigningKey,
    }

    fn setup() -> Setup {
        let alice = SigningKey::ed25519_from_seed(&[1; 32]);
        let server = SigningKey::ed25519_from_seed(&[0x42; 32]);
        let id = ChannelId::random();
        let chain = Chain::generate(id, Link::random_secret(), 50).expect("in bounds");
        let signed = Commitment {
            id,
            payer: name("alice"),
            payee: name("bob"),
            root: chain.root(),
            value_minor: 2,
            links: 50,
            expires_at_s: 1_800_000_000,
        }
        .sign(&alice);
        let receipt = OpenReceipt {
            id,
            commitment_hash: signed.content_hash(),
            hold_minor: 100,
            opened_at_ms: 5,
        }
        .sign(&server);
        Setup {
            chain,
            signed,
            receipt,
            alice,
            server,
        }
    }

    fn offer(store: &mut PayeeChannels, s: &Setup) -> Result<(), PayeeRefusal> {
        store.offer(
            (&name("bob"), &name("alice"), s.alice.verifying_key()),
            s.server.verifying_key(),
            s.signed.clone(),
            s.receipt.clone(),
        )
    }

    #[test]
    fn a_restart_loses_no_acknowledged_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = setup();
        let id = s.chain.id();
        let mut store = PayeeChannels::open(dir.path()).expect("opens");
        offer(&mut store, &s).expect("accepted");
        let w = |i| s.chain.link(i).expect("in bounds");
        assert_eq!(store.pay(&id, 3, w(3)).expect("pays"), 3);
        assert_eq!(store.pay(&id, 10, w(10)).expect("pays k units at once"), 10);
        drop(store);
        let mut store = PayeeChannels::open(dir.path()).expect("reopens");
        let held = store.get(&id).expect("still held");
        assert_eq!((held.index, held.link), (10, w(10)));
        let claim = store.durable_requests(&[id]);
        assert_eq!((claim.len(), claim[0].index, claim[0].link), (1, 10, w(10)));
        assert_eq!(store.pay(&id, 11, w(11)).expect("goes on"), 11);
        store.forget(&id).expect("forgets");
        assert!(PayeeChannels::open(dir.path())
            .expect("reopens")
            .get(&id)
            .is_none());
    }

    #[test]
    fn bad_links_and_offers_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = setup();
        let id = s.chain.id();
        let mut store = PayeeChannels::open(dir.path()).expect("opens");
        let w = |i| s.chain.link(i).expect("in bounds");
        assert!(matches!(
            store.pay(&id, 1, w(1)),
            Err(PayeeRefusal::Unknown(_))
        ));
        // Offers: from someone else, to someone else, a bad receipt.
        let mallory = SigningKey::ed25519_from_seed(&[9; 32]);
        let wrong_payer = store.offer(
            (&name("bob"), &name("mallory"), mallory.verifying_key()),
            s.server.verifying_key(),
            s.signed.clone(),
            s.receipt.clone(),
        );
        assert!(matches!(wrong_payer, Err(PayeeRefusal::BadOffer(_))));
        let wrong_key = store.offer(
            (&name("bob"), &name("alice"), mallory.verifying_key()),
            s.server.verifying_key(),
            s.signed.clone(),
            s.receipt.clone(),
        );
        assert!(matches!(wrong_key, Err(PayeeRefusal::BadOffer(_))));
        let bad_receipt = store.offer(
            (&name("bob"), &name("alice"), s.alice.verifying_key()),
            mallory.verifying_key(),
            s.signed.clone(),
            s.receipt.clone(),
        );
        assert!(matches!(bad_receipt, Err(PayeeRefusal::BadOffer(_))));
        offer(&mut store, &s).expect("accepted");
        store.pay(&id, 5, w(5)).expect("pays");
        // A link revealed twice or an older one pays nothing again: the
        // answer is the index held.
        assert_eq!(store.pay(&id, 5, w(5)).expect("already held"), 5);
        assert_eq!(store.pay(&id, 4, w(4)).expect("already held"), 5);
        // An older index with a foreign link, a wrong preimage, beyond n.
        assert!(matches!(
            store.pay(&id, 4, w(3)),
            Err(PayeeRefusal::Link(LinkError::Mismatch { .. }))
        ));
        assert!(matches!(
            store.pay(&id, 7, w(6)),
            Err(PayeeRefusal::Link(LinkError::Mismatch { .. }))
        ));
        assert!(matches!(
            store.pay(&id, 51, w(50)),
            Err(PayeeRefusal::Link(LinkError::BeyondEnd { .. }))
        ));
        let held = store.get(&id).expect("held");
        assert_eq!((held.index, held.link), (5, w(5)));
    }

    #[test]
    fn a_corrupt_channel_file_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("x.chan"), b"{not json").expect("writes");
        assert!(matches!(
            PayeeChannels::open(dir.path()),
            Err(ChannelStoreError::Corrupt { .. })
        ));
    }
}
