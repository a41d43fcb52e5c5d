//! The checkpoint and settlement-record test vectors of docs/PROTOCOL.md
//! ("The log"), and negative tests for every rule of [`open`].

use super::*;
use crate::core::log_record::{settlement_leaf, settlement_record};
use crate::core::payment::tests::{vector_payment, vector_seed};

/// The settlement record of the PROTOCOL.md payment vector (signed by the
/// Ed25519 key with seed 00 01 .. 1f), settled as seq 1 at
/// 1 799 999 000 123 ms.
pub(crate) const RECORD_VECTOR_HEX: &str = "011a6d6963726f7061792d6c6f672d736574746c656d656e742d76310000000000000001000001a3184d0e3b0045136d6963726f7061792f7061796d656e742f763100112233445566778899aabbccddeeff05616c69636503626f6200000000000000fa000000006b49d20000056c756e636800406d7285abe2f8feb493443f4aac7e5b29c8e8fb6c8e5e7686bc93790a1cdc4b80507c59e6bb55c226db69c8bdb445dd3aecf622d9be4b93ea09428350d5eec508";
/// Its leaf hash.
pub(crate) const LEAF_VECTOR_HEX: &str =
    "0a5c9320e4adf4ab55758ad5505e47167666de3f0ee56ef0034b8bc3690aa129";
/// The checkpoint of origin `micropay/example`, size 8, the RFC 6962
/// reference root of 8 leaves, signed by the Ed25519 key with seed 32 ×
/// 0x42.
pub(crate) const CHECKPOINT_VECTOR: &str = "micropay/example\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n\u{2014} micropay/example Tu82Ma4b9iYyPxZ9t3I1S6u0l8eOQ6LdBZX+jt61smnrdkMRJRqJm4+gLkc1A3KqJRKYGvQdCE4Aw5Va4b5yMmEUbQk=\n";

const ORIGIN: &str = "micropay/example";

fn vector_checkpoint() -> Checkpoint {
    let mut root = [0u8; 32];
    hex::decode_to_slice(
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        &mut root,
    )
    .expect("hex");
    Checkpoint {
        origin: ORIGIN.to_string(),
        size: 8,
        root,
    }
}

fn server() -> SigningKey {
    SigningKey::ed25519_from_seed(&[0x42; 32])
}

#[test]
fn vectors_match_protocol_md() {
    let payer = SigningKey::ed25519_from_seed(&vector_seed());
    let signed = vector_payment().sign(&payer);
    let record = settlement_record(&signed, 1, 1_799_999_000_123);
    let leaf = settlement_leaf(&signed, 1, 1_799_999_000_123);
    let note = vector_checkpoint().sign(&server());
    assert_eq!(hex::encode(&record), RECORD_VECTOR_HEX);
    assert_eq!(hex::encode(leaf), LEAF_VECTOR_HEX);
    assert_eq!(note, CHECKPOINT_VECTOR);
    assert_eq!(
        open(&note, ORIGIN, server().verifying_key()),
        Ok(vector_checkpoint())
    );
}

#[test]
fn a_p256_server_signs_and_verifies_checkpoints() {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .expect("keygen");
    let key = SigningKey::from_pkcs8_der(pkcs8.as_ref()).expect("p256 key");
    let note = vector_checkpoint().sign(&key);
    assert_eq!(
        open(&note, ORIGIN, key.verifying_key()),
        Ok(vector_checkpoint())
    );
    assert_eq!(
        open(&note, ORIGIN, server().verifying_key()),
        Err(CheckpointError::UnknownKey)
    );
}

#[test]
fn tampered_or_foreign_checkpoints_are_refused() {
    let key = server();
    let note = vector_checkpoint().sign(&key);
    let vk = key.verifying_key();
    let other = SigningKey::ed25519_from_seed(&[0x43; 32]);
    assert_eq!(
        open(&note, ORIGIN, other.verifying_key()),
        Err(CheckpointError::UnknownKey)
    );
    assert_eq!(
        open(&note, "micropay/other", vk),
        Err(CheckpointError::WrongOrigin)
    );
    let bigger = note.replacen("\n8\n", "\n9\n", 1);
    assert_eq!(
        open(&bigger, ORIGIN, vk),
        Err(CheckpointError::BadSignature)
    );
    let mut forged = vector_checkpoint();
    forged.root[0] ^= 1;
    let (_, _, sigs) = parse(&note).expect("parses");
    let spliced = format!("{}\n{}", forged.body(), sigs);
    assert_eq!(
        open(&spliced, ORIGIN, vk),
        Err(CheckpointError::BadSignature)
    );
    for bad in [
        "",
        "micropay/example\n8\n",
        "micropay/example\n08\nAAAA\n\n— x AAAA\n",
        "micropay/example\n+8\nAAAA\n\n— x AAAA\n",
        "micropay/example\n8\nAAAA\n\n— x AAAA\n",
        &note.replace('\u{2014}', "-"),
        &"x".repeat(CHECKPOINT_NOTE_BYTES_MAX + 1),
    ] {
        assert!(
            matches!(open(bad, ORIGIN, vk), Err(CheckpointError::Malformed(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn the_cache_checks_each_note_once_and_stays_bounded() {
    let key = server();
    let mut cache = CheckpointCache::new(2);
    let mut notes = Vec::new();
    for size in 1..=3u64 {
        let mut c = vector_checkpoint();
        c.size = size;
        notes.push(c.sign(&key));
    }
    for _ in 0..3 {
        assert!(cache.open(&notes[0], ORIGIN, key.verifying_key()).is_ok());
    }
    assert_eq!(cache.signatures_checked(), 1, "one check for one note");
    for note in &notes {
        assert!(cache.open(note, ORIGIN, key.verifying_key()).is_ok());
    }
    assert_eq!(cache.len(), 2);
    assert_eq!(cache.signatures_checked(), 3);
    // A cached note is answered from the cache only for the key and
    // origin it was verified with: with another key or origin it is
    // checked again, and refused.
    let other = SigningKey::ed25519_from_seed(&[0x43; 32]);
    assert_eq!(
        cache.open(&notes[2], ORIGIN, other.verifying_key()),
        Err(CheckpointError::UnknownKey)
    );
    assert_eq!(
        cache.open(&notes[2], "micropay/other", key.verifying_key()),
        Err(CheckpointError::WrongOrigin)
    );
    // The first note was evicted (capacity 2): checked again.
    assert!(cache.open(&notes[0], ORIGIN, key.verifying_key()).is_ok());
    assert_eq!(cache.signatures_checked(), 6);
    assert_eq!(cache.len(), 2);
}
