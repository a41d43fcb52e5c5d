//! The payer's side of payment channels: [`PayerChannel`] opens a channel
//! at the server, offers it to the payee and pays units by revealing
//! links. Its secret and position live in a state file (mode 0600, never
//! sent anywhere; only links leave it), rewritten durably after each
//! acknowledged payment.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::core::channel::{Chain, ChannelId, Commitment, Link, SignedCommitment};
use crate::core::name::Name;
use crate::net::link::{CallError, Link as Conn};
use crate::person::channel_payee::ChannelStoreError;
use crate::person::Person;
use crate::wire::{ChannelAck, ChannelOpened, CommitmentJson, PeerRequest, ServerRequest};

/// Why a payer's channel operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PayerChannelError {
    /// The server or the payee refused, or could not be reached.
    #[error("{0}")]
    Call(#[from] CallError),
    /// The state file could not be read or written.
    #[error("{0}")]
    Store(#[from] ChannelStoreError),
    /// The terms are out of bounds (links zero or above the limit).
    #[error("{0}")]
    Terms(String),
    /// All links are paid (or the payment asked for goes past n).
    #[error("channel {id} is exhausted: {paid} of {links} links paid")]
    Exhausted {
        /// The channel.
        id: ChannelId,
        /// Links paid.
        paid: u64,
        /// n.
        links: u64,
    },
}

/// The state file's contents.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PayerFile {
    commitment: CommitmentJson,
    secret: String,
    opened: ChannelOpened,
    paid: u64,
}

/// A channel I pay from.
pub struct PayerChannel {
    chain: Chain,
    /// The chain segment the next links come from (see [`Chain::segment`]).
    segment: Option<(u64, Vec<Link>)>,
    secret: Link,
    signed: SignedCommitment,
    opened: ChannelOpened,
    paid: u64,
    path: PathBuf,
}

/// Which side of a channel I am on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelRole {
    /// I opened it and pay from it.
    Payer,
    /// It was offered to me; I hold its links.
    Payee,
}

/// One channel as `channel list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelSummary {
    /// The channel id.
    #[serde(serialize_with = "hex_id")]
    pub id: ChannelId,
    /// My side.
    pub role: ChannelRole,
    /// The other party: the payee when I pay, the payer when I am paid.
    pub peer: String,
    /// Links paid (payer: acknowledged; payee: held).
    pub paid: u64,
    /// n.
    pub links: u64,
    /// Minor units per link.
    pub value_minor: u64,
    /// Unix seconds at which it expires.
    pub expires_at_s: u64,
}

fn hex_id<S: serde::Serializer>(id: &ChannelId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&id.to_hex())
}

impl ChannelSummary {
    /// The summary of a commitment with `paid` links paid, from `role`'s
    /// side.
    pub fn of(role: ChannelRole, signed: &SignedCommitment, paid: u64) -> ChannelSummary {
        let c = &signed.commitment;
        let peer = match role {
            ChannelRole::Payer => &c.payee,
            ChannelRole::Payee => &c.payer,
        };
        ChannelSummary {
            id: c.id,
            role,
            peer: peer.to_string(),
            paid,
            links: c.links,
            value_minor: c.value_minor,
            expires_at_s: c.expires_at_s,
        }
    }
}

/// The channels I pay from whose state files are in `dir` (read without
/// regenerating their chains), oldest expiry first. A missing directory
/// holds none.
pub fn payer_summaries(dir: &Path) -> Result<Vec<ChannelSummary>, ChannelStoreError> {
    let io = |path: &Path, error| ChannelStoreError::Io {
        path: path.to_owned(),
        error,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.extension().is_none_or(|e| e != "payer") {
            continue;
        }
        let corrupt = |why: String| ChannelStoreError::Corrupt {
            path: path.clone(),
            why,
        };
        let text = fs::read(&path).map_err(|e| io(&path, e))?;
        let file: PayerFile = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        let signed = file.commitment.parse().map_err(|e| corrupt(e.message))?;
        out.push(ChannelSummary::of(ChannelRole::Payer, &signed, file.paid));
    }
    out.sort_by_key(|c| (c.expires_at_s, c.id));
    Ok(out)
}

impl PayerChannel {
    /// Opens a channel from `person` to `payee` of `links` links worth
    /// `value_minor` each, expiring at `expires_at_s`, on the server
    /// connection `server`; its state file goes into `dir`.
    pub async fn open(
        person: &Person,
        server: &Conn,
        (payee, links, value_minor, expires_at_s): (Name, u64, u64, u64),
        dir: &Path,
    ) -> Result<PayerChannel, PayerChannelError> {
        let id = ChannelId::random();
        let secret = Link::random_secret();
        let chain = Chain::generate(id, secret, links)
            .map_err(|e| PayerChannelError::Terms(e.to_string()))?;
        let signed = Commitment {
            id,
            payer: person.name.clone(),
            payee,
            root: chain.root(),
            value_minor,
            links,
            expires_at_s,
        }
        .sign(&person.key);
        let opened: ChannelOpened = server
            .call(&ServerRequest::ChannelOpen {
                commitment: CommitmentJson::from(&signed),
            })
            .await?;
        let channel = PayerChannel {
            path: dir.join(format!("{id}.payer")),
            segment: None,
            chain,
            secret,
            signed,
            opened,
            paid: 0,
        };
        channel.save()?;
        Ok(channel)
    }

    /// Loads channel `id` from `dir`.
    pub fn load(dir: &Path, id: &ChannelId) -> Result<PayerChannel, PayerChannelError> {
        let path = dir.join(format!("{id}.payer"));
        let corrupt = |why: String| ChannelStoreError::Corrupt {
            path: path.clone(),
            why,
        };
        let text = fs::read(&path).map_err(|error| ChannelStoreError::Io {
            path: path.clone(),
            error,
        })?;
        let file: PayerFile = serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
        let signed = file.commitment.parse().map_err(|e| corrupt(e.message))?;
        let secret = Link::from_hex(&file.secret).ok_or_else(|| corrupt("bad secret".into()))?;
        let c = &signed.commitment;
        let chain = Chain::generate(c.id, secret, c.links).map_err(|e| corrupt(e.to_string()))?;
        if chain.root() != c.root || file.paid > c.links {
            return Err(corrupt("the secret does not match the commitment".into()).into());
        }
        Ok(PayerChannel {
            chain,
            segment: None,
            secret,
            signed,
            opened: file.opened,
            paid: file.paid,
            path,
        })
    }

    /// The channel id.
    pub fn id(&self) -> ChannelId {
        self.chain.id()
    }

    /// The payee.
    pub fn payee(&self) -> &Name {
        &self.signed.commitment.payee
    }

    /// Links paid so far.
    pub fn paid(&self) -> u64 {
        self.paid
    }

    /// n.
    pub fn links(&self) -> u64 {
        self.chain.links()
    }

    /// Offers the channel to its payee on `peer` (a connection to the
    /// payee's listener); answers the index the payee holds.
    pub async fn offer(&self, peer: &Conn) -> Result<u64, PayerChannelError> {
        let ack: ChannelAck = peer
            .call(&PeerRequest::ChannelOffer {
                commitment: CommitmentJson::from(&self.signed),
                open_receipt: self.opened.clone(),
            })
            .await?;
        Ok(ack.index)
    }

    /// Pays `units` more links in one message on `peer`; records the new
    /// position once the payee acknowledged it. Answers the links paid.
    pub async fn pay(&mut self, peer: &Conn, units: u64) -> Result<u64, PayerChannelError> {
        self.pay_pipelined(peer, units, 1, 1).await
    }

    /// Pays `messages` messages of `units` links each on `peer`, keeping up
    /// to `window` messages in flight (the payee takes them in the order
    /// sent), and records the position acknowledged once, at the end (or
    /// at the first refusal). Answers the links paid.
    ///
    /// A crash before the record leaves the state file behind the payee;
    /// the next payment then resends links the payee holds, which it
    /// answers with the index held (paying nothing twice), and the
    /// position catches up.
    pub async fn pay_pipelined(
        &mut self,
        peer: &Conn,
        units: u64,
        messages: u64,
        window: usize,
    ) -> Result<u64, PayerChannelError> {
        let mut in_flight = std::collections::VecDeque::new();
        let mut next = self.paid;
        let mut sent = 0u64;
        let mut outcome = Ok(());
        while outcome.is_ok() && (sent < messages || !in_flight.is_empty()) {
            while sent < messages && in_flight.len() < window.max(1) {
                let body = match self.pay_body(next, units) {
                    Ok((index, body)) => {
                        next = index;
                        body
                    }
                    Err(e) => {
                        sent = messages;
                        outcome = Err(e);
                        break;
                    }
                };
                match peer.send_body(&body).await {
                    Ok(reply) => in_flight.push_back(reply),
                    Err(e) => {
                        sent = messages;
                        outcome = Err(e.into());
                        break;
                    }
                }
                sent += 1;
            }
            let Some(reply) = in_flight.pop_front() else {
                break;
            };
            match peer.reply_within(reply).await {
                Ok(ack) => self.acknowledged(&ack),
                Err(e) => outcome = Err(e.into()),
            }
        }
        self.save()?;
        outcome.map(|()| self.paid)
    }

    fn acknowledged(&mut self, ack: &ChannelAck) {
        self.paid = ack.index.clamp(self.paid, self.links());
    }

    /// The request paying `units` links after index `from`, and the index
    /// it pays up to.
    fn pay_body(&mut self, from: u64, units: u64) -> Result<(u64, Vec<u8>), PayerChannelError> {
        let exhausted = |me: &PayerChannel| PayerChannelError::Exhausted {
            id: me.id(),
            paid: me.paid,
            links: me.links(),
        };
        let index = from.checked_add(units).ok_or_else(|| exhausted(self))?;
        let Some(link) = self.link_at(index) else {
            return Err(exhausted(self));
        };
        let body = crate::wire::request::encode_body(&PeerRequest::ChannelPay {
            channel_id: self.id().to_hex(),
            index,
            link: link.to_hex(),
        });
        Ok((index, body))
    }

    /// `w_index`, from the cached segment when it holds it.
    fn link_at(&mut self, index: u64) -> Option<Link> {
        let cached = |s: &(u64, Vec<Link>)| {
            let offset = usize::try_from(index.checked_sub(s.0)?).ok()?;
            s.1.get(offset).copied()
        };
        if let Some(link) = self.segment.as_ref().and_then(cached) {
            return Some(link);
        }
        self.segment = Some(self.chain.segment(index)?);
        self.segment.as_ref().and_then(cached)
    }

    fn save(&self) -> Result<(), ChannelStoreError> {
        let io = |error| ChannelStoreError::Io {
            path: self.path.clone(),
            error,
        };
        let file = PayerFile {
            commitment: CommitmentJson::from(&self.signed),
            secret: self.secret.to_hex(),
            opened: self.opened.clone(),
            paid: self.paid,
        };
        let text = serde_json::to_vec(&file).map_err(|e| io(std::io::Error::other(e)))?;
        if let Some(dir) = self.path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        crate::person::channel_payee::replace_file(&self.path, &text).map_err(io)
    }
}

/// Finds `payee` through the server connection `server` (`locate`) and
/// connects to its listener as `person`.
pub async fn connect_payee(
    person: &Person,
    server: &Conn,
    payee: &Name,
) -> Result<Conn, CallError> {
    let found: crate::wire::OnlinePeer = server
        .call(&ServerRequest::Locate {
            name: payee.to_string(),
        })
        .await?;
    Conn::connect(
        &found.address,
        payee.as_str(),
        person.payer_config(),
        crate::core::limits::CONNECT_TIMEOUT_MS_DEFAULT,
    )
    .await
}

/// A channel held open to its payee: the payer's chain and state file
/// together with one connection to the payee, so that a program pays many
/// times on one connection with [`Channel::pay`]. `examples/pay_per_chunk.rs`
/// shows it in use.
pub struct Channel {
    state: PayerChannel,
    peer: Conn,
}

/// What a channel is opened with.
#[derive(Debug, Clone)]
pub struct ChannelTerms {
    /// Who is paid.
    pub payee: Name,
    /// n: how many links (units) the channel holds.
    pub links: u64,
    /// Minor units each link is worth.
    pub value_minor: u64,
    /// Unix seconds at which it expires.
    pub expires_at_s: u64,
}

impl Channel {
    /// Opens a channel on the server connection `server` (the server holds
    /// `links × value_minor` of my balance), finds the payee, connects to
    /// it and offers the channel; its state file goes into `dir`.
    pub async fn open(
        person: &Person,
        server: &Conn,
        terms: ChannelTerms,
        dir: &Path,
    ) -> Result<Channel, PayerChannelError> {
        let state = PayerChannel::open(
            person,
            server,
            (
                terms.payee,
                terms.links,
                terms.value_minor,
                terms.expires_at_s,
            ),
            dir,
        )
        .await?;
        let peer = connect_payee(person, server, state.payee()).await?;
        state.offer(&peer).await?;
        Ok(Channel { state, peer })
    }

    /// Picks up channel `id` from its state file in `dir` and connects to
    /// its payee again.
    pub async fn resume(
        person: &Person,
        server: &Conn,
        id: &ChannelId,
        dir: &Path,
    ) -> Result<Channel, PayerChannelError> {
        let state = PayerChannel::load(dir, id)?;
        let peer = connect_payee(person, server, state.payee()).await?;
        Ok(Channel { state, peer })
    }

    /// Pays `units` more links in one message and waits for the payee's
    /// acknowledgement (the link is on its disk). Answers the links paid.
    pub async fn pay(&mut self, units: u64) -> Result<u64, PayerChannelError> {
        self.state.pay(&self.peer, units).await
    }

    /// Pays `messages` messages of `units` links each, up to `window` in
    /// flight ([`PayerChannel::pay_pipelined`]). Answers the links paid.
    pub async fn pay_pipelined(
        &mut self,
        units: u64,
        messages: u64,
        window: usize,
    ) -> Result<u64, PayerChannelError> {
        self.state
            .pay_pipelined(&self.peer, units, messages, window)
            .await
    }

    /// The channel id.
    pub fn id(&self) -> ChannelId {
        self.state.id()
    }

    /// Links paid so far (acknowledged by the payee).
    pub fn paid(&self) -> u64 {
        self.state.paid()
    }

    /// n.
    pub fn links(&self) -> u64 {
        self.state.links()
    }

    /// The payee.
    pub fn payee(&self) -> &Name {
        self.state.payee()
    }
}
