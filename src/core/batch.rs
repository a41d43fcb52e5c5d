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

impl<'a, V: LedgerView> Batch<'a, V> {
    /// A batch on top of `base`, whose last settled payment is `last_seq`.
    pub fn new(base: &'a V, last_seq: u64) -> Batch<'a, V> {
        Batch {
            base,
            balances: HashMap::new(),
            keys: HashMap::new(),
            priors: HashMap::new(),
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
