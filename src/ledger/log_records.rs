//! The log's record of every stored change (docs/PROTOCOL.md §11.1),
//! built in one place from the values the ledger stores: the writer turns
//! a batch's effects into these rows' values and logs their records;
//! audit reads the rows back and rebuilds the same records. A row that
//! was added, rewritten or deleted around the server then has no record
//! in any log (or a record has no row), which audit reports.
//!
//! | stored row | record |
//! |---|---|
//! | `payments` | settlement (type 1, [`crate::core::log_record`]) |
//! | `key_history` (registration, rotation, renewal, rebind) | key (type 2) |
//! | `grants` | grant (type 3) |
//! | `rejections` | refusal (type 4) |
//! | `channels` (at the open) | channel open (type 5) |
//! | `channels` (closed or expired) | channel end (type 6) |

use crate::core::batch::Effect;
use crate::core::limits::MEMO_BYTES_MAX;
use crate::core::log_record::{
    settlement_record, settlement_record_raw, RecordWriter, CHANNEL_END_RECORD_TAG,
    CHANNEL_OPEN_RECORD_TAG, GRANT_RECORD_TAG, KEY_RECORD_TAG, RECORD_CHANNEL_END,
    RECORD_CHANNEL_OPEN, RECORD_GRANT, RECORD_KEY, RECORD_REFUSAL, REFUSAL_RECORD_TAG,
};
use crate::core::payment::SignedPayment;
use crate::ledger::audit::parse_payment;
use crate::ledger::channel_rows::{int, StoredChannel, STATE_CLOSED, STATE_EXPIRED};
use crate::ledger::key_history::{KeyRow, StoredKeyChange};
use crate::ledger::migrate::{StoredGrant, StoredRefusal};
use crate::ledger::{AuditVisitor, StoredCheckpoint, StoredPayment};

/// The record of a key-history row.
pub(crate) fn key_record(row: &KeyRow<'_>) -> Vec<u8> {
    RecordWriter::new(RECORD_KEY, KEY_RECORD_TAG)
        .text(row.name)
        .text(row.kind)
        .bytes(row.key)
        .int(row.not_after_s)
        .bytes(row.serial)
        .bytes(row.proof)
        .bytes(row.old_signature)
        .bytes(row.new_signature)
        .int(row.at_ms)
        .int(row.after_seq)
        .finish()
}

/// The record of a stored key-history row.
pub fn stored_key_record(row: &StoredKeyChange) -> Vec<u8> {
    key_record(&KeyRow {
        name: &row.name,
        kind: &row.kind,
        key: &row.key_spki,
        not_after_s: row.not_after_s,
        serial: &row.serial,
        proof: &row.proof,
        old_signature: &row.old_signature,
        new_signature: &row.new_signature,
        at_ms: row.at_ms,
        after_seq: row.after_seq,
    })
}

/// The record of a grant row.
pub fn grant_record(row: &StoredGrant) -> Vec<u8> {
    RecordWriter::new(RECORD_GRANT, GRANT_RECORD_TAG)
        .text(&row.name)
        .int(row.amount)
        .int(row.granted_at_ms)
        .finish()
}

/// The record of a recorded refusal.
pub fn refusal_record(row: &StoredRefusal) -> Vec<u8> {
    RecordWriter::new(RECORD_REFUSAL, REFUSAL_RECORD_TAG)
        .text(&row.payer)
        .bytes(&row.id)
        .text(&row.payee)
        .bytes(&row.content_hash)
        .text(&row.code)
        .text(&row.message)
        .int(row.decided_at_ms)
        .finish()
}

/// The record of a channel's open (its columns written at the open).
pub fn channel_open_record(row: &StoredChannel) -> Vec<u8> {
    RecordWriter::new(RECORD_CHANNEL_OPEN, CHANNEL_OPEN_RECORD_TAG)
        .bytes(&row.id)
        .text(&row.payer)
        .text(&row.payee)
        .bytes(&row.root)
        .int(row.value)
        .int(row.links)
        .int(row.expires_at)
        .bytes(&row.signature)
        .bytes(&row.content_hash)
        .int(row.hold)
        .int(row.opened_at_ms)
        .finish()
}

/// The record of a channel's end (its columns written at the close or
/// the expiry).
pub fn channel_end_record(row: &StoredChannel) -> Vec<u8> {
    RecordWriter::new(RECORD_CHANNEL_END, CHANNEL_END_RECORD_TAG)
        .bytes(&row.id)
        .text(&row.state)
        .opt_int(row.close_index)
        .opt_bytes(row.close_link.as_deref())
        .opt_int(row.paid)
        .opt_int(row.released)
        .opt_int(row.ended_at_ms)
        .opt_bytes(row.close_hash.as_deref())
        .finish()
}

/// The records of a stored channel row: its open, and its end once it
/// closed or expired.
pub fn channel_records(row: &StoredChannel) -> Vec<Vec<u8>> {
    let mut out = vec![channel_open_record(row)];
    if row.state == STATE_CLOSED || row.state == STATE_EXPIRED {
        out.push(channel_end_record(row));
    }
    out
}

/// The settlement record of a stored payment row; a row that does not
/// parse gets a record no honest write produced, so audit reports it.
pub fn payment_record(row: &StoredPayment) -> Vec<u8> {
    let seq = u64::try_from(row.seq).unwrap_or(0);
    let at_ms = u64::try_from(row.settled_at_ms).unwrap_or(0);
    // An over-long memo cannot be in canonical bytes: report, never panic.
    let parsed = (row.memo.len() <= MEMO_BYTES_MAX)
        .then(|| parse_payment(row))
        .flatten();
    match parsed {
        Some(payment) => settlement_record(&payment, seq, at_ms),
        None => settlement_record_raw(b"unparseable", &row.signature, seq, at_ms),
    }
}

/// The records a batch's effect logs, in the order the rows are written.
pub fn effect_records(effect: &Effect) -> Vec<Vec<u8>> {
    match effect {
        Effect::Account {
            name,
            key,
            key_not_after_s,
            key_serial,
            grant_minor,
            at_ms,
        } => vec![
            key_record(&KeyRow::register(
                name,
                key,
                *key_not_after_s,
                key_serial,
                *at_ms,
            )),
            grant_record(&StoredGrant {
                seq: 0,
                name: name.as_str().to_owned(),
                amount: int(*grant_minor),
                granted_at_ms: int(*at_ms),
            }),
        ],
        Effect::Payment {
            seq,
            payment,
            at_ms,
            ..
        } => vec![settlement_record(payment.signed(), *seq, *at_ms)],
        Effect::KeyChange {
            change,
            after_seq,
            at_ms,
        } => vec![key_record(&KeyRow::change(change, *after_seq, *at_ms))],
        Effect::Refusal {
            payment,
            refusal,
            at_ms,
        } => vec![refusal_record(&refused_row(
            payment.signed(),
            payment.content_hash(),
            (refusal.kind.as_str(), &refusal.message),
            *at_ms,
        ))],
        _ => channel_effect_records(effect),
    }
}

fn refused_row(
    signed: &SignedPayment,
    content_hash: [u8; 32],
    (code, message): (&str, &str),
    at_ms: u64,
) -> StoredRefusal {
    let p = &signed.payment;
    StoredRefusal {
        id: p.id.0.to_vec(),
        payer: p.payer.as_str().to_owned(),
        payee: p.payee.as_str().to_owned(),
        content_hash: content_hash.to_vec(),
        code: code.to_owned(),
        message: message.to_owned(),
        decided_at_ms: int(at_ms),
    }
}

fn channel_effect_records(effect: &Effect) -> Vec<Vec<u8>> {
    match effect {
        Effect::ChannelOpen { record, .. } => {
            vec![channel_open_record(&StoredChannel::opened(record))]
        }
        Effect::ChannelClose {
            id, close, outcome, ..
        } => vec![channel_end_record(&StoredChannel {
            id: id.0.to_vec(),
            state: STATE_CLOSED.to_owned(),
            close_index: Some(int(outcome.index)),
            close_link: Some(close.link.0.to_vec()),
            paid: Some(int(outcome.paid_minor)),
            released: Some(int(outcome.released_minor)),
            ended_at_ms: Some(int(outcome.at_ms)),
            close_hash: Some(outcome.close_hash.to_vec()),
            ..StoredChannel::default()
        })],
        Effect::ChannelExpire {
            id,
            released_minor,
            at_ms,
            ..
        } => vec![channel_end_record(&StoredChannel {
            id: id.0.to_vec(),
            state: STATE_EXPIRED.to_owned(),
            released: Some(int(*released_minor)),
            ended_at_ms: Some(int(*at_ms)),
            ..StoredChannel::default()
        })],
        _ => Vec::new(),
    }
}

/// Every stored row's records, gathered by an audit scan: what the logs
/// must hold, no more and no less.
pub fn row_records(visit: &mut dyn FnMut(Vec<u8>), row: RowRef<'_>) {
    match row {
        RowRef::Key(r) => visit(stored_key_record(r)),
        RowRef::Grant(r) => visit(grant_record(r)),
        RowRef::Payment(r) => visit(payment_record(r)),
        RowRef::Refusal(r) => visit(refusal_record(r)),
        RowRef::Channel(r) => channel_records(r).into_iter().for_each(visit),
    }
}

/// What sees the stored rows only as the records they call for, then the
/// logs' leaves and checkpoints: [`ByRow`] makes it an [`AuditVisitor`].
pub trait RowVisitor {
    /// A stored row with records (accounts have none).
    fn row(&mut self, row: RowRef<'_>);
    /// A leaf of a log.
    fn log_leaf(&mut self, origin: &str, leaf_index: i64, record: &[u8]);
    /// A stored checkpoint.
    fn checkpoint(&mut self, checkpoint: StoredCheckpoint);
}

/// A [`RowVisitor`] fed by a store's audit scan.
pub struct ByRow<'a, T: RowVisitor>(pub &'a mut T);

impl<T: RowVisitor> AuditVisitor for ByRow<'_, T> {
    fn account(&mut self, _: &str, _: &[u8], _: i64, _: i64) {}
    fn grant(&mut self, row: StoredGrant) {
        self.0.row(RowRef::Grant(&row));
    }
    fn key_change(&mut self, row: StoredKeyChange) {
        self.0.row(RowRef::Key(&row));
    }
    fn payment(&mut self, row: StoredPayment) {
        self.0.row(RowRef::Payment(&row));
    }
    fn refusal(&mut self, row: StoredRefusal) {
        self.0.row(RowRef::Refusal(&row));
    }
    fn channel(&mut self, row: StoredChannel) {
        self.0.row(RowRef::Channel(&row));
    }
    fn log_leaf(&mut self, origin: &str, leaf_index: i64, record: &[u8]) {
        self.0.log_leaf(origin, leaf_index, record);
    }
    fn checkpoint(&mut self, checkpoint: StoredCheckpoint) {
        self.0.checkpoint(checkpoint);
    }
}

/// A stored row of any kind that has records.
#[derive(Debug, Clone, Copy)]
pub enum RowRef<'a> {
    /// A key-history row.
    Key(&'a StoredKeyChange),
    /// A grant.
    Grant(&'a StoredGrant),
    /// A settled payment.
    Payment(&'a StoredPayment),
    /// A recorded refusal.
    Refusal(&'a StoredRefusal),
    /// A payment channel.
    Channel(&'a StoredChannel),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::keys::SigningKey;
    use crate::core::merkle::leaf_hash;
    use crate::core::name::Name;

    fn alice_key() -> crate::core::keys::VerifyingKey {
        let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
        SigningKey::ed25519_from_seed(&seed).verifying_key().clone()
    }

    /// The registration vectors of docs/PROTOCOL.md §11.6.
    #[test]
    fn registration_records_match_protocol_md() {
        let name = Name::parse("alice").expect("name");
        let key = alice_key();
        let serial = [0x0a, 0x0b, 0x0c, 0x0d];
        let records = effect_records(&Effect::Account {
            name: name.clone(),
            key: key.clone(),
            key_not_after_s: 1_830_000_000,
            key_serial: serial.to_vec(),
            grant_minor: 10_000,
            at_ms: 1_799_999_000_000,
        });
        assert_eq!(
            hex::encode(&records[0]),
            "02136d6963726f7061792d6c6f672d6b65792d76310005616c69636500087265676973746572\
             002c302a300506032b657003210003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8\
             000000006d13958000040a0b0c0d000000000000000001a3184d0dc00000000000000000"
        );
        assert_eq!(
            hex::encode(leaf_hash(&records[0])),
            "e8338e4b91195863b8b88bbf80c071381bd45637a76238510b9f12007280ccbb"
        );
        assert_eq!(
            hex::encode(&records[1]),
            "03156d6963726f7061792d6c6f672d6772616e742d76310005616c6963650000000000002710000001a3184d0dc0"
        );
        assert_eq!(
            hex::encode(leaf_hash(&records[1])),
            "bc5a9226b211e1acca96ffd5f75dc8d068496c225846be1e0c5f4b2b0656f0fe"
        );
    }

    /// What a batch logs is what audit rebuilds from the rows it wrote.
    #[test]
    fn effect_records_equal_the_records_of_the_rows_written() {
        let name = Name::parse("alice").expect("name");
        let key = alice_key();
        let row = KeyRow::register(&name, &key, 1_830_000_000, &[1, 2], 7);
        let stored = StoredKeyChange {
            hseq: 1,
            name: "alice".into(),
            kind: "register".into(),
            key_spki: key.spki_der().to_vec(),
            not_after_s: 1_830_000_000,
            serial: vec![1, 2],
            proof: Vec::new(),
            old_signature: Vec::new(),
            new_signature: Vec::new(),
            at_ms: 7,
            after_seq: 0,
        };
        assert_eq!(key_record(&row), stored_key_record(&stored));
        let grant = StoredGrant {
            seq: 9,
            name: "alice".into(),
            amount: 10_000,
            granted_at_ms: 7,
        };
        let from_effect = effect_records(&Effect::Account {
            name: name.clone(),
            key: key.clone(),
            key_not_after_s: 1_830_000_000,
            key_serial: vec![1, 2],
            grant_minor: 10_000,
            at_ms: 7,
        });
        assert_eq!(from_effect[1], grant_record(&grant));
        let mut changed = stored.clone();
        changed.at_ms += 1;
        assert_ne!(key_record(&row), stored_key_record(&changed));
    }

    #[test]
    fn an_open_channel_has_one_record_and_an_ended_one_two() {
        let mut row = StoredChannel {
            id: vec![1; 16],
            state: "open".into(),
            ..StoredChannel::default()
        };
        assert_eq!(channel_records(&row).len(), 1);
        row.state = STATE_EXPIRED.into();
        row.released = Some(5);
        let records = channel_records(&row);
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0],
            channel_open_record(&row),
            "the open is unchanged"
        );
    }
}
