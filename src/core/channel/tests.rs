//! Unit and property tests of the chain and the channel messages, and the
//! test vectors of docs/PROTOCOL.md (reproducible with Python's hashlib).

use proptest::prelude::*;

use super::*;

fn name(s: &str) -> Name {
    Name::parse(s).expect("test names are valid")
}

fn vector_id() -> ChannelId {
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = i as u8;
    }
    ChannelId(id)
}

fn vector_chain() -> Chain {
    Chain::generate(vector_id(), Link([7; 32]), 4).expect("4 links is in bounds")
}

/// The vector commitment: alice to bob, 4 links of 10, expiring at
/// 1 800 000 000.
pub(crate) fn vector_commitment() -> Commitment {
    Commitment {
        id: vector_id(),
        payer: name("alice"),
        payee: name("bob"),
        root: vector_chain().root(),
        value_minor: 10,
        links: 4,
        expires_at_s: 1_800_000_000,
    }
}

const VECTOR_LINKS_HEX: [&str; 5] = [
    "b62f81a4048e0d24d2076496ab824819b8a9e344a241471b7e0f053cec0a783f",
    "c331f1483f8b3df8928aca79bd09102263f43f91c8edfa22b918943e9fbfde05",
    "03277de688d1656fa6a6ad23e0cb05b7878a221a40611357d4d461ca4727e2ae",
    "de36de7b3fa4460c716956bd3bed70ee07a2de98038c303e1bdf4b6a3c17ef72",
    "0707070707070707070707070707070707070707070707070707070707070707",
];
const VECTOR_COMMITMENT_HEX: &str = "186d6963726f7061792f6368616e6e656c2d6f70656e2f7631\
000102030405060708090a0b0c0d0e0f05616c69636503626f62\
b62f81a4048e0d24d2076496ab824819b8a9e344a241471b7e0f053cec0a783f\
000000000000000a0000000000000004000000006b49d200";
const VECTOR_COMMITMENT_HASH_HEX: &str =
    "1813b58f6c42478f9736dfb0e23ad5423415ed12656cf5f2d77152e0258aca70";
const VECTOR_COMMITMENT_SIGNATURE_HEX: &str =
    "4ad4c66a728dd3d8c579f2381631d2c342b106e94b28cbb87cd72fd5bc463ed8\
40c9b064992c7abe547cad4cf8e4cae8f98d26285fbf85f896c78701244c370a";
const VECTOR_RECEIPT_SIGNATURE_HEX: &str =
    "65f8629856cf64314e17188c943c68010beab33c3c8f8bd9313662ee8aa81389\
8536ced953ef032f1978288eb474d463e49d4d78732f1d9853f805580af5ef0a";
const VECTOR_CLOSE_HEX: &str = "196d6963726f7061792f6368616e6e656c2d636c6f73652f7631\
000102030405060708090a0b0c0d0e0f0000000000000002\
03277de688d1656fa6a6ad23e0cb05b7878a221a40611357d4d461ca4727e2ae";
const VECTOR_RECEIPT_HEX: &str =
    "206d6963726f7061792f6368616e6e656c2d6f70656e2d726563656970742f7631\
000102030405060708090a0b0c0d0e0f\
1813b58f6c42478f9736dfb0e23ad5423415ed12656cf5f2d77152e0258aca70\
0000000000000028000001a3184d0e3b";

#[test]
fn test_vectors_match_protocol_md() {
    let chain = vector_chain();
    for (i, want) in VECTOR_LINKS_HEX.iter().enumerate() {
        let link = chain.link(i as u64).expect("in bounds");
        assert_eq!(&link.to_hex(), want, "w_{i}");
    }
    let commitment = vector_commitment();
    assert_eq!(
        hex::encode(commitment.canonical_bytes()),
        VECTOR_COMMITMENT_HEX
    );
    let payer = SigningKey::ed25519_from_seed(&crate::core::payment::tests::vector_seed());
    let signed = commitment.sign(&payer);
    assert_eq!(
        hex::encode(signed.content_hash()),
        VECTOR_COMMITMENT_HASH_HEX
    );
    assert_eq!(
        hex::encode(&signed.signature),
        VECTOR_COMMITMENT_SIGNATURE_HEX
    );
    assert!(signed.verify(payer.verifying_key()).is_ok());
    let close = CloseRequest {
        id: vector_id(),
        index: 2,
        link: chain.link(2).expect("in bounds"),
    };
    assert_eq!(hex::encode(close.canonical_bytes()), VECTOR_CLOSE_HEX);
    let receipt = OpenReceipt {
        id: vector_id(),
        commitment_hash: signed.content_hash(),
        hold_minor: 40,
        opened_at_ms: 1_799_999_000_123,
    };
    assert_eq!(hex::encode(receipt.canonical_bytes()), VECTOR_RECEIPT_HEX);
    let server = SigningKey::ed25519_from_seed(&[0x42; 32]);
    let signed_receipt = receipt.sign(&server);
    assert_eq!(
        hex::encode(&signed_receipt.signature),
        VECTOR_RECEIPT_SIGNATURE_HEX
    );
    assert!(signed_receipt
        .verify(server.verifying_key(), &signed)
        .is_ok());
    assert!(signed_receipt
        .verify(payer.verifying_key(), &signed)
        .is_err());
}

#[test]
fn every_commitment_field_is_signed() {
    let key = SigningKey::ed25519_from_seed(&[9; 32]);
    let signed = vector_commitment().sign(&key);
    let edits: [fn(&mut Commitment); 7] = [
        |c| c.id.0[0] ^= 1,
        |c| c.payer = name("alicf"),
        |c| c.payee = name("bob2"),
        |c| c.root.0[31] ^= 1,
        |c| c.value_minor += 1,
        |c| c.links += 1,
        |c| c.expires_at_s += 1,
    ];
    for edit in edits {
        let mut changed = signed.clone();
        edit(&mut changed.commitment);
        assert!(changed.verify(key.verifying_key()).is_err(), "{changed:?}");
    }
    assert!(signed.verify(key.verifying_key()).is_ok());
}

#[test]
fn a_receipt_for_another_commitment_is_refused() {
    let server = SigningKey::ed25519_from_seed(&[0x42; 32]);
    let payer = SigningKey::ed25519_from_seed(&[1; 32]);
    let signed = vector_commitment().sign(&payer);
    let receipt = OpenReceipt {
        id: vector_id(),
        commitment_hash: signed.content_hash(),
        hold_minor: 40,
        opened_at_ms: 1,
    }
    .sign(&server);
    let mut other = vector_commitment();
    other.value_minor = 11;
    assert!(receipt
        .verify(server.verifying_key(), &other.sign(&payer))
        .is_err());
}

#[test]
fn chains_are_bound_to_their_channel() {
    let other = ChannelId([0xee; 16]);
    let a = Chain::generate(vector_id(), Link([7; 32]), 4).expect("in bounds");
    let b = Chain::generate(other, Link([7; 32]), 4).expect("in bounds");
    assert_ne!(a.root(), b.root());
    let w2 = a.link(2).expect("in bounds");
    assert!(verify_link(&other, 4, (0, &b.root()), (2, &w2)).is_err());
}

#[test]
fn verify_link_rules() {
    let id = vector_id();
    let chain = vector_chain();
    let w = |i| chain.link(i).expect("in bounds");
    assert_eq!(verify_link(&id, 4, (0, &w(0)), (3, &w(3))), Ok(()));
    assert_eq!(verify_link(&id, 4, (1, &w(1)), (4, &w(4))), Ok(()));
    // A link revealed twice, or an older one.
    assert!(matches!(
        verify_link(&id, 4, (2, &w(2)), (2, &w(2))),
        Err(LinkError::NotAfter { .. })
    ));
    // A link that does not hash to the held one (wrong preimage, or a
    // claim for more links than revealed).
    assert!(matches!(
        verify_link(&id, 4, (0, &w(0)), (3, &w(2))),
        Err(LinkError::Mismatch { .. })
    ));
    assert!(matches!(
        verify_link(&id, 4, (0, &w(0)), (1, &Link([0; 32]))),
        Err(LinkError::Mismatch { .. })
    ));
    // Beyond n.
    assert!(matches!(
        verify_link(&id, 4, (0, &w(0)), (5, &w(4))),
        Err(LinkError::BeyondEnd { .. })
    ));
    assert!(chain.link(5).is_none());
}

#[test]
fn check_link_answers_links_already_held_without_paying_them_again() {
    let id = vector_id();
    let chain = vector_chain();
    let w = |i| chain.link(i).expect("in bounds");
    assert_eq!(
        check_link(&id, 4, (1, &w(1)), (3, &w(3))),
        Ok(LinkStep::Extends)
    );
    // The held link again, or a genuine older one: already held.
    assert_eq!(
        check_link(&id, 4, (2, &w(2)), (2, &w(2))),
        Ok(LinkStep::AlreadyHeld)
    );
    assert_eq!(
        check_link(&id, 4, (3, &w(3)), (1, &w(1))),
        Ok(LinkStep::AlreadyHeld)
    );
    // An older index with a link that is not the chain's: refused.
    assert!(matches!(
        check_link(&id, 4, (3, &w(3)), (1, &w(2))),
        Err(LinkError::Mismatch { .. })
    ));
    assert!(matches!(
        check_link(&id, 4, (2, &w(2)), (2, &Link([0; 32]))),
        Err(LinkError::Mismatch { .. })
    ));
    // Later links keep every rule of verify_link.
    assert!(matches!(
        check_link(&id, 4, (0, &w(0)), (5, &w(4))),
        Err(LinkError::BeyondEnd { .. })
    ));
    assert!(matches!(
        check_link(&id, 4, (0, &w(0)), (3, &w(2))),
        Err(LinkError::Mismatch { .. })
    ));
}

#[test]
fn chain_length_is_bounded() {
    let id = vector_id();
    assert_eq!(
        Chain::generate(id, Link([1; 32]), 0).err(),
        Some(BadChainLength(0))
    );
    let too_many = crate::core::limits::CHANNEL_LINKS_MAX + 1;
    assert_eq!(
        Chain::generate(id, Link([1; 32]), too_many).err(),
        Some(BadChainLength(too_many))
    );
}

#[test]
fn hex_forms_round_trip_and_reject_uppercase() {
    let id = vector_id();
    assert_eq!(ChannelId::from_hex(&id.to_hex()), Some(id));
    assert_eq!(ChannelId::from_hex(&id.to_hex().to_uppercase()), None);
    assert_eq!(ChannelId::from_hex("00"), None);
    let link = Link([0xab; 32]);
    assert_eq!(Link::from_hex(&link.to_hex()), Some(link));
    assert_eq!(Link::from_hex("zz"), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every link of a checkpointed chain equals the link computed by
    /// hashing down from the secret, and verifies from any earlier link.
    #[test]
    fn checkpointed_links_match_plain_hashing(
        secret in any::<[u8; 32]>(),
        links in 1u64..3000,
        picks in proptest::collection::vec((any::<u64>(), any::<u64>()), 1..8),
    ) {
        let id = ChannelId([3; 16]);
        let chain = Chain::generate(id, Link(secret), links).expect("in bounds");
        prop_assert_eq!(chain.link(links), Some(Link(secret)));
        prop_assert_eq!(hash_times(&id, &Link(secret), links), chain.root());
        for (a, b) in picks {
            let (i, j) = (a % (links + 1), b % (links + 1));
            let (lo, hi) = (i.min(j), i.max(j));
            let wl = chain.link(lo).expect("in bounds");
            let wh = chain.link(hi).expect("in bounds");
            prop_assert_eq!(hash_times(&id, &wh, hi - lo), wl);
            let checked = verify_link(&id, links, (lo, &wl), (hi, &wh));
            prop_assert_eq!(checked.is_ok(), hi > lo);
        }
    }

    /// A segment holds exactly the links [`Chain::link`] gives, starts at
    /// a checkpoint, contains the index asked for, and none exists past n.
    #[test]
    fn segments_agree_with_single_links(
        links in 1u64..3000,
        pick in any::<u64>(),
    ) {
        let id = ChannelId([4; 16]);
        let chain = Chain::generate(id, Link([9; 32]), links).expect("in bounds");
        let index = pick % (links + 1);
        let (first, segment) = chain.segment(index).expect("in bounds");
        prop_assert_eq!(first % CHANNEL_CHECKPOINT_LINKS, 0);
        prop_assert!(first <= index && index < first + segment.len() as u64);
        for (k, link) in segment.iter().enumerate() {
            prop_assert_eq!(Some(*link), chain.link(first + k as u64));
        }
        prop_assert!(chain.segment(links + 1).is_none());
    }
}
