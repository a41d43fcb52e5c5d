//! The RFC 6962 reference vectors (the eight leaves and the roots, proofs
//! and consistency proofs published with certificate-transparency-go's
//! `merkle` tests) and property tests: every proof verifies, and any flipped
//! bit in a leaf, a proof hash or a root makes it fail.

use proptest::prelude::*;

use super::*;

const LEAVES_HEX: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// The roots of the trees of the first 0..=8 leaves.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (leaf index, tree size, proof): the published vectors (which number
/// leaves from 1; these from 0).
const INCLUSION: [(u64, u64, &[&str]); 4] = [
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (from size, to size, proof).
const CONSISTENCY: [(u64, u64, &[&str]); 4] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

fn h(s: &str) -> Hash {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).expect("test vector is 32 bytes of hex");
    out
}

fn reference_tree() -> MerkleTree {
    let mut tree = MerkleTree::new();
    for leaf in LEAVES_HEX {
        tree.push(leaf_hash(&hex::decode(leaf).expect("hex")));
    }
    tree
}

fn tree_of(n: u64) -> MerkleTree {
    let mut tree = MerkleTree::new();
    for i in 0..n {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    tree
}

#[test]
fn roots_match_rfc6962_vectors() {
    let tree = reference_tree();
    for (size, root) in ROOTS.iter().enumerate() {
        assert_eq!(tree.root_at(size as u64), Ok(h(root)), "size {size}");
    }
    assert_eq!(MerkleTree::new().root(), h(ROOTS[0]));
}

#[test]
fn inclusion_proofs_match_rfc6962_vectors() {
    let tree = reference_tree();
    for (index, size, proof) in INCLUSION {
        let want: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
        assert_eq!(tree.inclusion_proof(index, size), Ok(want.clone()));
        let leaf = tree.levels[0][index as usize];
        let root = h(ROOTS[size as usize]);
        assert_eq!(verify_inclusion(&leaf, index, size, &want, &root), Ok(()));
    }
}

#[test]
fn consistency_proofs_match_rfc6962_vectors() {
    let tree = reference_tree();
    for (from, to, proof) in CONSISTENCY {
        let want: Vec<Hash> = proof.iter().map(|p| h(p)).collect();
        assert_eq!(tree.consistency_proof(from, to), Ok(want.clone()));
        let (a, b) = (h(ROOTS[from as usize]), h(ROOTS[to as usize]));
        assert_eq!(verify_consistency(from, to, &a, &b, &want), Ok(()));
    }
}

#[test]
fn out_of_range_requests_are_errors_not_panics() {
    let tree = tree_of(5);
    assert!(tree.inclusion_proof(5, 5).is_err());
    assert!(tree.inclusion_proof(0, 6).is_err());
    assert!(tree.consistency_proof(4, 3).is_err());
    assert!(tree.consistency_proof(1, 6).is_err());
    assert!(tree.root_at(6).is_err());
    let root = tree.root();
    assert!(verify_inclusion(&root, 5, 5, &[], &root).is_err());
    assert!(verify_consistency(3, 2, &root, &root, &[]).is_err());
}

#[test]
fn truncate_restores_the_earlier_tree() {
    let mut tree = tree_of(13);
    let root7 = tree.root_at(7).expect("size 7 exists");
    tree.truncate(7);
    assert_eq!(tree.size(), 7);
    assert_eq!(tree.root(), root7);
    for i in 7..13u64 {
        tree.push(leaf_hash(&i.to_be_bytes()));
    }
    assert_eq!(tree.root(), tree_of(13).root());
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut out = *hash;
    out[(bit / 8) % 32] ^= 1 << (bit % 8);
    out
}

proptest! {
    #[test]
    fn every_inclusion_proof_verifies_and_any_flip_fails(
        size in 1u64..200, pick in any::<u64>(), bit in 0usize..256, which in any::<usize>()
    ) {
        let tree = tree_of(size);
        let index = pick % size;
        let leaf = leaf_hash(&index.to_be_bytes());
        let root = tree.root();
        let proof = tree.inclusion_proof(index, size).expect("in range");
        prop_assert_eq!(verify_inclusion(&leaf, index, size, &proof, &root), Ok(()));
        prop_assert!(verify_inclusion(&flip(&leaf, bit), index, size, &proof, &root).is_err());
        prop_assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root, bit)).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = which % bad.len();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
        }
        if size > 1 {
            let other = (index + 1) % size;
            prop_assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_any_flip_fails(
        to in 1u64..200, pick in any::<u64>(), bit in 0usize..256, which in any::<usize>()
    ) {
        let tree = tree_of(to);
        let from = pick % (to + 1);
        let (a, b) = (tree.root_at(from).expect("from"), tree.root_at(to).expect("to"));
        let proof = tree.consistency_proof(from, to).expect("sizes in order");
        prop_assert_eq!(verify_consistency(from, to, &a, &b, &proof), Ok(()));
        if from > 0 {
            prop_assert!(verify_consistency(from, to, &flip(&a, bit), &b, &proof).is_err());
            prop_assert!(verify_consistency(from, to, &a, &flip(&b, bit), &proof).is_err());
        }
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = which % bad.len();
            bad[i] = flip(&bad[i], bit);
            prop_assert!(verify_consistency(from, to, &a, &b, &bad).is_err());
        }
    }

    #[test]
    fn a_rewritten_leaf_breaks_consistency_with_the_old_root(
        to in 2u64..100, pick in any::<u64>()
    ) {
        let from = 1 + pick % (to - 1);
        let honest = tree_of(to);
        let old_root = honest.root_at(from).expect("from");
        let mut forged = MerkleTree::new();
        for i in 0..to {
            let record = if i == pick % from { u64::MAX - i } else { i };
            forged.push(leaf_hash(&record.to_be_bytes()));
        }
        let proof = forged.consistency_proof(from, to).expect("sizes in order");
        prop_assert!(verify_consistency(from, to, &old_root, &forged.root(), &proof).is_err());
    }
}
