//! Payment channels (PayWord hash chains): the chain, the payer's signed
//! commitment, the close request and the server's open receipt. Pure data,
//! SHA-256 and signatures; no I/O, no clock.
//!
//! The payer picks a secret `w_n` and computes `w_{i-1} = H(w_i)` down to
//! the root `w_0`, which it signs in a [`Commitment`]. Revealing `w_i`
//! pays `i` links: anyone holding `w_0` checks it with `i` hashes, nobody
//! can compute `w_{i+1}` from `w_i`. `H` is SHA-256 over a domain tag, the
//! channel id and the input, so a chain of one channel is worthless in any
//! other. The layouts and test vectors are in `docs/PROTOCOL.md`.

use crate::core::keys::{BadSignature, SigningKey, VerifyingKey};
use crate::core::limits::{CHANNEL_CHECKPOINT_LINKS, CHANNEL_LINKS_MAX};
use crate::core::name::Name;
use crate::core::payment::content_hash;

/// Domain-separation tag of the chain hash `H`.
pub const CHAIN_TAG: &[u8] = b"micropay/chain/v1";
/// Domain-separation tag of a channel commitment's canonical bytes.
pub const COMMITMENT_TAG: &[u8] = b"micropay/channel-open/v1";
/// Domain-separation tag of a close request's canonical bytes.
pub const CLOSE_TAG: &[u8] = b"micropay/channel-close/v1";
/// Domain-separation tag of the server's open receipt.
pub const OPEN_RECEIPT_TAG: &[u8] = b"micropay/channel-open-receipt/v1";

/// A channel id: 128 random bits chosen by the payer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub [u8; 16]);

impl ChannelId {
    /// A fresh random id from the system RNG.
    pub fn random() -> ChannelId {
        ChannelId(random_bytes())
    }

    /// Parses 32 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<ChannelId> {
        let mut bytes = [0u8; 16];
        parse_lower_hex(s, &mut bytes)?;
        Some(ChannelId(bytes))
    }

    /// The id as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for ChannelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// One link of a chain (or its secret end, or its root): 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Link(pub [u8; 32]);

impl Link {
    /// A fresh random secret `w_n` from the system RNG.
    pub fn random_secret() -> Link {
        Link(random_bytes())
    }

    /// Parses 64 lowercase hex digits.
    pub fn from_hex(s: &str) -> Option<Link> {
        let mut bytes = [0u8; 32];
        parse_lower_hex(s, &mut bytes)?;
        Some(Link(bytes))
    }

    /// The link as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for Link {
    // A link is money once revealed and a secret before: never print it
    // whole in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link({}…)", hex::encode(&self.0[..4]))
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        panic!("the system random number generator failed");
    }
    bytes
}

fn parse_lower_hex(s: &str, out: &mut [u8]) -> Option<()> {
    if !crate::core::payment::is_lower_hex(s) {
        return None;
    }
    hex::decode_to_slice(s, out).ok()
}

/// The chain hash: `H(x) = SHA-256(len(CHAIN_TAG) || CHAIN_TAG || id || x)`.
pub fn chain_hash(id: &ChannelId, input: &Link) -> Link {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[CHAIN_TAG.len() as u8]);
    ctx.update(CHAIN_TAG);
    ctx.update(&id.0);
    ctx.update(&input.0);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Link(out)
}

/// `H` applied `steps` times to `link`.
pub fn hash_times(id: &ChannelId, link: &Link, steps: u64) -> Link {
    let mut out = *link;
    for _ in 0..steps {
        out = chain_hash(id, &out);
    }
    out
}

/// Why a link does not extend what is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The index is not after the one held (a link revealed twice, or an
    /// older one).
    #[error("link {index} is not after the held link {held}")]
    NotAfter {
        /// The index claimed.
        index: u64,
        /// The index held.
        held: u64,
    },
    /// The index is beyond the channel's number of links.
    #[error("link {index} is beyond the channel's {links} links")]
    BeyondEnd {
        /// The index claimed.
        index: u64,
        /// The channel's n.
        links: u64,
    },
    /// Hashing forward does not reach the held link: a forged preimage.
    #[error("link {index} does not hash to the held link {held}")]
    Mismatch {
        /// The index claimed.
        index: u64,
        /// The index held.
        held: u64,
    },
}

/// Checks that `link` is `w_index` of the chain whose link `w_held` is
/// `held_link`, by hashing forward `index - held` times; `index` must be
/// after `held` and at most `links` (itself at most [`CHANNEL_LINKS_MAX`]),
/// which bounds the work.
pub fn verify_link(
    id: &ChannelId,
    links: u64,
    (held, held_link): (u64, &Link),
    (index, link): (u64, &Link),
) -> Result<(), LinkError> {
    if index > links.min(CHANNEL_LINKS_MAX) {
        return Err(LinkError::BeyondEnd { index, links });
    }
    if index <= held {
        return Err(LinkError::NotAfter { index, held });
    }
    if hash_times(id, link, index - held) != *held_link {
        return Err(LinkError::Mismatch { index, held });
    }
    Ok(())
}

/// Where a presented link stands relative to the one held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStep {
    /// It is after the held link and hashes forward to it: it pays
    /// `index - held` more links.
    Extends,
    /// It is the held link or an earlier one, genuinely of this chain: it
    /// was paid before and pays nothing again (a payer resending after a
    /// lost acknowledgement learns the index held).
    AlreadyHeld,
}

/// Checks `link` as `w_index` against the held `w_held`: a later index
/// must hash forward to the held link ([`verify_link`]); an index at or
/// before the one held must be what the held link hashes to in
/// `held - index` steps. Either way at most n hashes.
pub fn check_link(
    id: &ChannelId,
    links: u64,
    (held, held_link): (u64, &Link),
    (index, link): (u64, &Link),
) -> Result<LinkStep, LinkError> {
    if index > held {
        verify_link(id, links, (held, held_link), (index, link))?;
        return Ok(LinkStep::Extends);
    }
    if hash_times(id, held_link, held - index) != *link {
        return Err(LinkError::Mismatch { index, held });
    }
    Ok(LinkStep::AlreadyHeld)
}

/// The payer's chain: its secret end kept as checkpoints every
/// [`CHANNEL_CHECKPOINT_LINKS`] links, so any link costs a bounded number
/// of hashes and memory stays small.
#[derive(Clone)]
pub struct Chain {
    id: ChannelId,
    links: u64,
    /// `checkpoints[j]` is `w_{j * CHANNEL_CHECKPOINT_LINKS}` for every
    /// multiple below n, and the last entry is `w_n`.
    checkpoints: Vec<Link>,
}

/// A chain length of zero or above [`CHANNEL_LINKS_MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a chain has 1 to {CHANNEL_LINKS_MAX} links, not {0}")]
pub struct BadChainLength(pub u64);

impl Chain {
    /// The chain of `links` links of channel `id` ending in `secret`
    /// (`w_n`). Costs `links` hashes.
    pub fn generate(id: ChannelId, secret: Link, links: u64) -> Result<Chain, BadChainLength> {
        if links == 0 || links > CHANNEL_LINKS_MAX {
            return Err(BadChainLength(links));
        }
        let mut reversed = vec![secret];
        let mut current = secret;
        for i in (0..links).rev() {
            current = chain_hash(&id, &current);
            if i % CHANNEL_CHECKPOINT_LINKS == 0 {
                reversed.push(current);
            }
        }
        reversed.reverse();
        Ok(Chain {
            id,
            links,
            checkpoints: reversed,
        })
    }

    /// The channel id.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// n, the number of links.
    pub fn links(&self) -> u64 {
        self.links
    }

    /// The root `w_0`.
    pub fn root(&self) -> Link {
        self.checkpoints[0]
    }

    /// `w_index`, or `None` beyond n.
    pub fn link(&self, index: u64) -> Option<Link> {
        if index > self.links {
            return None;
        }
        let upper = index.div_ceil(CHANNEL_CHECKPOINT_LINKS) * CHANNEL_CHECKPOINT_LINKS;
        let (from_index, from) = if upper >= self.links {
            (self.links, self.checkpoints.last()?)
        } else {
            let slot = usize::try_from(upper / CHANNEL_CHECKPOINT_LINKS).ok()?;
            (upper, self.checkpoints.get(slot)?)
        };
        Some(hash_times(&self.id, from, from_index - index))
    }

    /// Every link of the checkpoint segment holding `index`, as
    /// `(first, links)` with `links[k] = w_{first + k}`, or `None` beyond
    /// n. A segment spans at most [`CHANNEL_CHECKPOINT_LINKS`] links and
    /// costs one hash per link, so a payer walking the chain link by link
    /// pays about one hash per link instead of up to a segment's worth
    /// each time ([`Chain::link`]).
    pub fn segment(&self, index: u64) -> Option<(u64, Vec<Link>)> {
        if index > self.links {
            return None;
        }
        let first = (index / CHANNEL_CHECKPOINT_LINKS) * CHANNEL_CHECKPOINT_LINKS;
        let last = first
            .saturating_add(CHANNEL_CHECKPOINT_LINKS)
            .min(self.links);
        let mut current = self.link(last)?;
        let len = usize::try_from(last - first).ok()?;
        let mut links = vec![current; len + 1];
        for slot in links.iter_mut().take(len).rev() {
            current = chain_hash(&self.id, &current);
            *slot = current;
        }
        Some((first, links))
    }
}

/// The channel commitment the payer signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commitment {
    /// The channel id.
    pub id: ChannelId,
    /// Who pays; must be the signer.
    pub payer: Name,
    /// Who is paid.
    pub payee: Name,
    /// The chain's root `w_0`.
    pub root: Link,
    /// Minor units each link is worth, at least 1.
    pub value_minor: u64,
    /// n, the number of links, 1 to [`CHANNEL_LINKS_MAX`].
    pub links: u64,
    /// Unix seconds after which the payee's close is no longer accepted
    /// (past a grace period) and the hold returns to the payer.
    pub expires_at_s: u64,
}

impl Commitment {
    /// The canonical bytes the payer signs (layout in `docs/PROTOCOL.md`).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + COMMITMENT_TAG.len() + 16 + 66 + 32 + 24);
        put_short(&mut out, COMMITMENT_TAG);
        out.extend_from_slice(&self.id.0);
        put_short(&mut out, self.payer.as_str().as_bytes());
        put_short(&mut out, self.payee.as_str().as_bytes());
        out.extend_from_slice(&self.root.0);
        out.extend_from_slice(&self.value_minor.to_be_bytes());
        out.extend_from_slice(&self.links.to_be_bytes());
        out.extend_from_slice(&self.expires_at_s.to_be_bytes());
        out
    }

    /// The amount held while the channel is open: n × value, or `None`
    /// when it overflows.
    pub fn hold_minor(&self) -> Option<u64> {
        self.links.checked_mul(self.value_minor)
    }

    /// Signs the commitment with the payer's key.
    pub fn sign(self, key: &SigningKey) -> SignedCommitment {
        let signature = key.sign(&self.canonical_bytes());
        SignedCommitment {
            commitment: self,
            signature,
        }
    }
}

/// A commitment with the payer's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCommitment {
    /// The signed fields.
    pub commitment: Commitment,
    /// The payer's signature over [`Commitment::canonical_bytes`].
    pub signature: Vec<u8>,
}

impl SignedCommitment {
    /// Verifies the payer's signature with `payer_key`.
    pub fn verify(&self, payer_key: &VerifyingKey) -> Result<(), BadSignature> {
        payer_key.verify(&self.commitment.canonical_bytes(), &self.signature)
    }

    /// SHA-256 of the commitment's canonical bytes: what the open receipt
    /// and the ledger bind to.
    pub fn content_hash(&self) -> [u8; 32] {
        content_hash(&self.commitment.canonical_bytes())
    }
}

/// A close request: the payee claims `index` links by revealing `w_index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRequest {
    /// The channel.
    pub id: ChannelId,
    /// How many links are claimed, at most n.
    pub index: u64,
    /// `w_index`.
    pub link: Link,
}

impl CloseRequest {
    /// The canonical bytes of a close (layout in `docs/PROTOCOL.md`); the
    /// ledger stores their hash so a second close can be told apart from a
    /// replay of the first.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + CLOSE_TAG.len() + 16 + 8 + 32);
        put_short(&mut out, CLOSE_TAG);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.link.0);
        out
    }
}

/// The server's receipt that a channel is open and its hold placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReceipt {
    /// The channel.
    pub id: ChannelId,
    /// SHA-256 of the commitment's canonical bytes.
    pub commitment_hash: [u8; 32],
    /// The amount held, n × value.
    pub hold_minor: u64,
    /// When the hold was placed, unix ms.
    pub opened_at_ms: u64,
}

impl OpenReceipt {
    /// The canonical bytes the server signs (layout in `docs/PROTOCOL.md`).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + OPEN_RECEIPT_TAG.len() + 16 + 32 + 16);
        put_short(&mut out, OPEN_RECEIPT_TAG);
        out.extend_from_slice(&self.id.0);
        out.extend_from_slice(&self.commitment_hash);
        out.extend_from_slice(&self.hold_minor.to_be_bytes());
        out.extend_from_slice(&self.opened_at_ms.to_be_bytes());
        out
    }

    /// Signs the receipt with the server's key.
    pub fn sign(self, server_key: &SigningKey) -> SignedOpenReceipt {
        let signature = server_key.sign(&self.canonical_bytes());
        SignedOpenReceipt {
            receipt: self,
            signature,
        }
    }
}

/// An open receipt with the server's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedOpenReceipt {
    /// The attested fields.
    pub receipt: OpenReceipt,
    /// The server's signature over [`OpenReceipt::canonical_bytes`].
    pub signature: Vec<u8>,
}

impl SignedOpenReceipt {
    /// Verifies the server's signature and that the receipt is for exactly
    /// `commitment`.
    pub fn verify(
        &self,
        server_key: &VerifyingKey,
        commitment: &SignedCommitment,
    ) -> Result<(), BadSignature> {
        server_key.verify(&self.receipt.canonical_bytes(), &self.signature)?;
        let matches = self.receipt.id == commitment.commitment.id
            && self.receipt.commitment_hash == commitment.content_hash()
            && Some(self.receipt.hold_minor) == commitment.commitment.hold_minor();
        if !matches {
            return Err(BadSignature);
        }
        Ok(())
    }
}

/// Appends a field of at most 255 bytes with a one-byte length prefix.
fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    // Names and tags are at most 32 bytes by construction.
    assert!(bytes.len() <= usize::from(u8::MAX));
    out.push(bytes.len() as u8);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests;
