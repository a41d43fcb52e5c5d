//! Deciding a whole commit batch in memory before anything is written.
//!
//! A ledger backend gathers what a batch needs to read (balances, keys,
//! earlier decisions about the batch's payment ids) into a base
//! [`LedgerView`], then feeds the batch's registrations and payments
//! through a [`Batch`]. The batch decides each one with the rules, sees
//! the effects of those before it (two payments of one batch from the same
//! payer both count against the balance; a repeated id is a replay), and
//! collects the [`Effect`]s to write. The backend writes the effects in one
//! transaction and only after the commit updates its cached state, so a
//! failed commit leaves nothing to undo.

use std::collections::HashMap;

use crate::core::channel::{ChannelId, CloseRequest};
use crate::core::channel_rules::{
    decide_close, decide_expire, decide_open, ChannelEnd, ChannelRecord, ChannelRefusal,
    ChannelView, CloseDecision, CloseOutcome, OpenDecision, VerifiedCommitment,
};
use crate::core::keys::VerifyingKey;
use crate::core::name::Name;
use crate::core::payment::PaymentId;
use crate::core::rotation::KeyChange;
use crate::core::rules::{
    decide, decide_key_change, decide_registration, Decision, LedgerView, Prior, PriorOutcome,
    Refusal, RefusalKind, RegisteredKey, Transfer, VerifiedPayment,
};

/// A state change to write, in the order decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A new account with its opening grant.
    Account {
        /// The account's name.
        name: Name,
        /// The registered key.
        key: VerifyingKey,
        /// Its certificate's notAfter, unix seconds.
        key_not_after_s: u64,
        /// Its certificate's serial.
        key_serial: Vec<u8>,
        /// The opening grant.
        grant_minor: u64,
        /// When, unix ms.
        at_ms: u64,
    },
    /// A settled payment.
    Payment {
        /// Its ledger position.
        seq: u64,
        /// The payment.
        payment: Box<VerifiedPayment>,
        /// The balances after it.
        transfer: Transfer,
        /// When, unix ms.
        at_ms: u64,
    },
    /// An account's key changed (rotation, renewal or rebind).
    KeyChange {
        /// The change, its proof and signatures.
        change: Box<KeyChange>,
        /// The last payment seq settled before it: payments after this
        /// position are checked against the new key.
        after_seq: u64,
        /// When, unix ms.
        at_ms: u64,
    },
    /// A channel opened: its hold left the payer's available balance.
    ChannelOpen {
        /// The channel as stored, with its hold.
        record: Box<ChannelRecord>,
        /// The payer's available balance afterwards.
        payer_after_minor: u64,
    },
    /// A channel closed by its payee.
    ChannelClose {
        /// The channel.
        id: ChannelId,
        /// The revealed link and its index.
        close: CloseRequest,
        /// What moved.
        outcome: CloseOutcome,
        /// The payer and its available balance afterwards.
        payer: (Name, u64),
        /// The payee and its available balance afterwards.
        payee: (Name, u64),
    },
    /// A channel's hold returned to its payer at expiry.
    ChannelExpire {
        /// The channel.
        id: ChannelId,
        /// The amount returned.
        released_minor: u64,
        /// The payer and its available balance afterwards.
        payer: (Name, u64),
        /// When, unix ms.
        at_ms: u64,
    },
    /// A refusal recorded for good.
    Refusal {
        /// The refused payment.
        payment: Box<VerifiedPayment>,
        /// Why.
        refusal: Refusal,
        /// When, unix ms.
        at_ms: u64,
    },
}

/// The answer to one settled payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// Ledger position.
    pub seq: u64,
    /// When it settled, unix ms.
    pub settled_at_ms: u64,
    /// Whether this answer repeats an earlier settlement (nothing moved).
    pub replay: bool,
}

/// A batch being decided on top of a base view.
pub struct Batch<'a, V: LedgerView> {
    base: &'a V,
    balances: HashMap<Name, u64>,
    keys: HashMap<Name, RegisteredKey>,
    priors: HashMap<(Name, PaymentId), Prior>,
    channels: HashMap<ChannelId, ChannelRecord>,
    accounts_added: u64,
    last_seq: u64,
    effects: Vec<Effect>,
}

impl<V: LedgerView> LedgerView for Batch<'_, V> {
    fn balance_minor(&self, name: &Name) -> Option<u64> {
        self.balances
            .get(name)
            .copied()
            .or_else(|| self.base.balance_minor(name))
    }

    fn registered_key(&self, name: &Name) -> Option<RegisteredKey> {
        self.keys
            .get(name)
            .copied()
            .or_else(|| self.base.registered_key(name))
    }

    fn accounts(&self) -> u64 {
        self.base.accounts() + self.accounts_added
    }

    fn prior(&self, payer: &Name, id: &PaymentId) -> Option<Prior> {
        self.priors
            .get(&(payer.clone(), *id))
            .cloned()
            .or_else(|| self.base.prior(payer, id))
    }
}

impl<V: LedgerView> ChannelView for Batch<'_, V> {
    fn channel(&self, id: &ChannelId) -> Option<ChannelRecord> {
        self.channels.get(id).cloned()
    }
}

impl<'a, V: LedgerView> Batch<'a, V> {
    /// A batch on top of `base`, whose last settled payment is `last_seq`.
    pub fn new(base: &'a V, last_seq: u64) -> Batch<'a, V> {
        Batch {
            base,
            balances: HashMap::new(),
            keys: HashMap::new(),
            priors: HashMap::new(),
            channels: HashMap::new(),
            accounts_added: 0,
            last_seq,
            effects: Vec::new(),
        }
    }

    /// Decides the registration of `name` with `key` (whose certificate
    /// is valid until `key_not_after_s` and has serial `key_serial`) and
    /// `grant_minor`.
    pub fn register(
        &mut self,
        name: &Name,
        (key, key_not_after_s, key_serial): (&VerifyingKey, u64, &[u8]),
        grant_minor: u64,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        decide_registration(self, name)?;
        self.balances.insert(name.clone(), grant_minor);
        self.keys
            .insert(name.clone(), RegisteredKey::of(key, key_not_after_s));
        self.accounts_added += 1;
        self.effects.push(Effect::Account {
            name: name.clone(),
            key: key.clone(),
            key_not_after_s,
            key_serial: key_serial.to_vec(),
            grant_minor,
            at_ms: now_ms,
        });
        Ok(())
    }

    /// Decides a key change at `now_ms`: later payments of the batch see
    /// the new key (a payment verified with the old one is then refused as
    /// `KeyChanged`), and a second rotation from the same old key is
    /// refused.
    pub fn change_key(
        &mut self,
        change: &KeyChange,
        now_ms: u64,
    ) -> Result<RegisteredKey, Refusal> {
        let registered = decide_key_change(self, change, now_ms)?;
        self.keys.insert(change.name().clone(), registered);
        self.effects.push(Effect::KeyChange {
            change: Box::new(change.clone()),
            after_seq: self.last_seq,
            at_ms: now_ms,
        });
        Ok(registered)
    }

    /// Decides `payment` at `now_ms`.
    pub fn settle(&mut self, payment: &VerifiedPayment, now_ms: u64) -> Result<Settled, Refusal> {
        let p = &payment.signed().payment;
        match decide(self, payment, now_ms) {
            Decision::Replay(PriorOutcome::Settled { seq, settled_at_ms }) => Ok(Settled {
                seq,
                settled_at_ms,
                replay: true,
            }),
            Decision::Replay(PriorOutcome::Refused(refusal)) => Err(refusal),
            Decision::Refuse(refusal) => {
                // A conflict is not recorded: the id already has its outcome.
                if refusal.kind != RefusalKind::Conflict {
                    self.remember(payment, PriorOutcome::Refused(refusal.clone()));
                    self.effects.push(Effect::Refusal {
                        payment: Box::new(payment.clone()),
                        refusal: refusal.clone(),
                        at_ms: now_ms,
                    });
                }
                Err(refusal)
            }
            Decision::Settle(transfer) => {
                // The sequence is bounded by the number of stored rows.
                assert!(self.last_seq < u64::MAX);
                self.last_seq += 1;
                let seq = self.last_seq;
                self.balances
                    .insert(p.payer.clone(), transfer.payer_after_minor);
                self.balances
                    .insert(p.payee.clone(), transfer.payee_after_minor);
                let settled_at_ms = now_ms;
                self.remember(payment, PriorOutcome::Settled { seq, settled_at_ms });
                self.effects.push(Effect::Payment {
                    seq,
                    payment: Box::new(payment.clone()),
                    transfer,
                    at_ms: now_ms,
                });
                Ok(Settled {
                    seq,
                    settled_at_ms,
                    replay: false,
                })
            }
        }
    }

    /// Gives the batch the stored channels its commands name (the backend
    /// reads them before deciding; a channel absent here does not exist).
    pub fn preload_channels(&mut self, channels: impl IntoIterator<Item = ChannelRecord>) {
        for record in channels {
            self.channels.insert(record.signed.commitment.id, record);
        }
    }

    /// Decides a channel open at `now_ms`: the hold leaves the payer's
    /// available balance. Answers the channel as recorded and whether this
    /// repeats an earlier open.
    pub fn open_channel(
        &mut self,
        verified: &VerifiedCommitment,
        now_ms: u64,
    ) -> Result<(ChannelRecord, bool), ChannelRefusal> {
        let (hold_minor, payer_after_minor) = match decide_open(self, verified, now_ms)? {
            OpenDecision::Replay(record) => return Ok((*record, true)),
            OpenDecision::Open {
                hold_minor,
                payer_after_minor,
            } => (hold_minor, payer_after_minor),
        };
        let record = ChannelRecord {
            signed: verified.signed().clone(),
            hold_minor,
            opened_at_ms: now_ms,
            end: ChannelEnd::Open,
        };
        let c = verified.commitment();
        self.balances.insert(c.payer.clone(), payer_after_minor);
        self.channels.insert(c.id, record.clone());
        self.effects.push(Effect::ChannelOpen {
            record: Box::new(record.clone()),
            payer_after_minor,
        });
        Ok((record, false))
    }

    /// Decides a close by `closer` at `now_ms`. Answers the outcome and
    /// whether it repeats the first close.
    pub fn close_channel(
        &mut self,
        close: &CloseRequest,
        closer: &Name,
        now_ms: u64,
    ) -> Result<(CloseOutcome, bool), ChannelRefusal> {
        let (outcome, payee_after, payer_after) = match decide_close(self, close, closer, now_ms)? {
            CloseDecision::Replay(outcome) => return Ok((outcome, true)),
            CloseDecision::Close {
                outcome,
                payee_after_minor,
                payer_after_minor,
            } => (outcome, payee_after_minor, payer_after_minor),
        };
        let Some(record) = self.channels.get_mut(&close.id) else {
            unreachable!("decide_close found the channel");
        };
        record.end = ChannelEnd::Closed(outcome);
        let (payer, payee) = (
            record.signed.commitment.payer.clone(),
            record.signed.commitment.payee.clone(),
        );
        self.balances.insert(payer.clone(), payer_after);
        self.balances.insert(payee.clone(), payee_after);
        self.effects.push(Effect::ChannelClose {
            id: close.id,
            close: *close,
            outcome,
            payer: (payer, payer_after),
            payee: (payee, payee_after),
        });
        Ok((outcome, false))
    }

    /// Decides the expiry of channel `id` at `now_ms`; answers the amount
    /// returned to the payer.
    pub fn expire_channel(&mut self, id: &ChannelId, now_ms: u64) -> Result<u64, ChannelRefusal> {
        let (released_minor, payer_after) = decide_expire(self, id, now_ms)?;
        let Some(record) = self.channels.get_mut(id) else {
            unreachable!("decide_expire found the channel");
        };
        record.end = ChannelEnd::Expired {
            released_minor,
            at_ms: now_ms,
        };
        let payer = record.signed.commitment.payer.clone();
        self.balances.insert(payer.clone(), payer_after);
        self.effects.push(Effect::ChannelExpire {
            id: *id,
            released_minor,
            payer: (payer, payer_after),
            at_ms: now_ms,
        });
        Ok(released_minor)
    }

    fn remember(&mut self, payment: &VerifiedPayment, outcome: PriorOutcome) {
        let p = &payment.signed().payment;
        self.priors.insert(
            (p.payer.clone(), p.id),
            Prior {
                content_hash: payment.content_hash(),
                outcome,
            },
        );
    }

    /// The effects to write, in order, and the last sequence number after
    /// them.
    pub fn finish(self) -> (Vec<Effect>, u64) {
        (self.effects, self.last_seq)
    }
}
