//! The Merkle tree of the log, hashed as RFC 6962 / RFC 9162 §2.1: a leaf
//! is `SHA-256(0x00 || record)`, an inner node `SHA-256(0x01 || left ||
//! right)`, and the head of `n` leaves splits at the largest power of two
//! below `n`. Proofs are generated and verified with the RFC's algorithms
//! (§2.1.3 inclusion, §2.1.4 consistency), so any RFC 9162 client can check
//! them. Pure: no I/O.

use ring::digest::{Context as Sha256, SHA256};

/// A SHA-256 hash in the tree.
pub type Hash = [u8; 32];

/// Why a proof was not produced or did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf {index} is outside a tree of {size} leaves")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// The tree sizes are not `0 <= from <= to <= known size`.
    #[error("no consistency proof from size {from} to size {to}")]
    BadSizes {
        /// The older size.
        from: u64,
        /// The newer size.
        to: u64,
    },
    /// The proof has too few or too many hashes.
    #[error("the proof has the wrong number of hashes")]
    WrongLength,
    /// The proof does not lead to the expected root(s).
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
}

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = Sha256::new(&SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// The hash of a leaf: `SHA-256(0x00 || record)`.
pub fn leaf_hash(record: &[u8]) -> Hash {
    sha256(&[&[0x00], record])
}

/// The hash of an inner node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// An append-only tree of leaf hashes. Every complete, aligned subtree is
/// kept (level `k` holds the hashes of the subtrees of `2^k` leaves), so
/// roots and proofs for any size up to the current one take `O(log n)`
/// lookups, at about 64 bytes of memory per leaf.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// The empty tree.
    pub fn new() -> MerkleTree {
        MerkleTree::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf by its hash ([`leaf_hash`] of its record).
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let n = self.levels[level].len();
            let parent = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
    }

    /// Forgets every leaf from `size` on (for a batch whose commit failed).
    pub fn truncate(&mut self, size: u64) {
        for (k, level) in self.levels.iter_mut().enumerate() {
            level.truncate((size >> k) as usize);
        }
    }

    /// The hash of leaves `[lo, hi)`, `lo < hi <= size`, where `lo` is a
    /// multiple of the smallest power of two not below `hi - lo` (which
    /// every range the RFC's recursion visits is).
    fn range_hash(&self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        if n.is_power_of_two() {
            let k = n.trailing_zeros() as usize;
            return self.levels[k][(lo >> k) as usize];
        }
        let k = split_point(n);
        node_hash(&self.range_hash(lo, lo + k), &self.range_hash(lo + k, hi))
    }

    /// The root hash of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size() {
            return Err(ProofError::BadSizes {
                from: size,
                to: self.size(),
            });
        }
        Ok(if size == 0 {
            empty_root()
        } else {
            self.range_hash(0, size)
        })
    }

    /// The root hash of the whole tree.
    pub fn root(&self) -> Hash {
        self.root_at(self.size()).unwrap_or_else(|_| empty_root())
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size`
    /// leaves (RFC 9162 §2.1.3.1), leaf-side first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if index >= size || size > self.size() {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if n <= 1 {
            return;
        }
        let k = split_point(n);
        if m < k {
            self.path(m, lo, lo + k, out);
            out.push(self.range_hash(lo + k, hi));
        } else {
            self.path(m - k, lo + k, hi, out);
            out.push(self.range_hash(lo, lo + k));
        }
    }

    /// The consistency proof between the trees of the first `from` and the
    /// first `to` leaves (RFC 9162 §2.1.4.1); empty when `from` is 0 or
    /// equals `to`.
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<Vec<Hash>, ProofError> {
        if from > to || to > self.size() {
            return Err(ProofError::BadSizes { from, to });
        }
        let mut proof = Vec::new();
        if from > 0 && from < to {
            self.subproof(from, 0, to, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<Hash>) {
        let n = hi - lo;
        if m == n {
            if !complete {
                out.push(self.range_hash(lo, hi));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, lo, lo + k, complete, out);
            out.push(self.range_hash(lo + k, hi));
        } else {
            self.subproof(m - k, lo + k, hi, false, out);
            out.push(self.range_hash(lo, lo + k));
        }
    }
}

/// Shifts `a` and `b` right until `a`'s lowest bit is set or `a` is 0.
fn shift_while_even(a: &mut u64, b: &mut u64) {
    while *a != 0 && *a & 1 == 0 {
        *a >>= 1;
        *b >>= 1;
    }
}

/// Verifies that `leaf` is leaf `index` of the tree of `size` leaves whose
/// root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            shift_while_even(&mut f, &mut s);
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies that the tree of `from` leaves with root `from_root` is a
/// prefix of the tree of `to` leaves with root `to_root` (RFC 9162
/// §2.1.4.2). A tree of 0 leaves is a prefix of every tree.
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &Hash,
    to_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if from > to {
        return Err(ProofError::BadSizes { from, to });
    }
    if from == 0 || from == to {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if from == to && from_root != to_root {
            return Err(ProofError::RootMismatch);
        }
        return Ok(());
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if from.is_power_of_two() {
        path.push(*from_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let (mut f, mut s) = (from - 1, to - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            shift_while_even(&mut f, &mut s);
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != from_root || &sr != to_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
