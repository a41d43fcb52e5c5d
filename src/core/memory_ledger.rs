//! A ledger held in memory that applies [`rules`](crate::core::rules)
//! decisions: the reference the rules are tested against, and what
//! `audit` replays a stored ledger through.

use std::collections::HashMap;

use crate::core::keys::VerifyingKey;
use crate::core::name::Name;
use crate::core::payment::PaymentId;
use crate::core::rotation::KeyChange;
use crate::core::rules::{
    decide, decide_key_change, decide_registration, Decision, LedgerView, Prior, PriorOutcome,
    Refusal, RegisteredKey, VerifiedPayment,
};

/// Accounts, balances and every decision, in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryLedger {
    balances: HashMap<Name, u64>,
    keys: HashMap<Name, RegisteredKey>,
    priors: HashMap<(Name, PaymentId), Prior>,
    last_seq: u64,
    granted_minor: u128,
}

impl LedgerView for MemoryLedger {
    fn balance_minor(&self, name: &Name) -> Option<u64> {
        self.balances.get(name).copied()
    }

    fn registered_key(&self, name: &Name) -> Option<RegisteredKey> {
        self.keys.get(name).copied()
    }

    fn accounts(&self) -> u64 {
        self.balances.len() as u64
    }

    fn prior(&self, payer: &Name, id: &PaymentId) -> Option<Prior> {
        self.priors.get(&(payer.clone(), *id)).cloned()
    }
}

impl MemoryLedger {
    /// An empty ledger.
    pub fn new() -> MemoryLedger {
        MemoryLedger::default()
    }

    /// Opens an account for `name` bound to `key`, whose certificate is
    /// valid until `key_not_after_s`, with `grant_minor`.
    pub fn register(
        &mut self,
        name: &Name,
        key: &VerifyingKey,
        key_not_after_s: u64,
        grant_minor: u64,
    ) -> Result<(), Refusal> {
        decide_registration(self, name)?;
        self.balances.insert(name.clone(), grant_minor);
        self.keys
            .insert(name.clone(), RegisteredKey::of(key, key_not_after_s));
        self.granted_minor += u128::from(grant_minor);
        Ok(())
    }

    /// Decides a key change at `now_ms` with the rules and applies it.
    pub fn change_key(&mut self, change: &KeyChange, now_ms: u64) -> Result<(), Refusal> {
        let registered = decide_key_change(self, change, now_ms)?;
        self.keys.insert(change.name().clone(), registered);
        Ok(())
    }

    /// Decides `payment` at `now_ms` and applies the decision; settled
    /// payments take the next sequence number.
    pub fn settle(&mut self, payment: &VerifiedPayment, now_ms: u64) -> Decision {
        let decision = decide(self, payment, now_ms);
        let p = &payment.signed().payment;
        let key = (p.payer.clone(), p.id);
        match &decision {
            Decision::Settle(t) => {
                self.balances.insert(p.payer.clone(), t.payer_after_minor);
                self.balances.insert(p.payee.clone(), t.payee_after_minor);
                self.last_seq += 1;
                let outcome = PriorOutcome::Settled {
                    seq: self.last_seq,
                    settled_at_ms: now_ms,
                };
                self.remember(key, payment.content_hash(), outcome);
            }
            Decision::Refuse(r) if r.kind != crate::core::rules::RefusalKind::Conflict => {
                self.remember(
                    key,
                    payment.content_hash(),
                    PriorOutcome::Refused(r.clone()),
                );
            }
            Decision::Refuse(_) | Decision::Replay(_) => {}
        }
        decision
    }

    fn remember(&mut self, key: (Name, PaymentId), content_hash: [u8; 32], outcome: PriorOutcome) {
        self.priors.insert(
            key,
            Prior {
                content_hash,
                outcome,
            },
        );
    }

    /// Every balance.
    pub fn balances(&self) -> &HashMap<Name, u64> {
        &self.balances
    }

    /// The sum of every grant.
    pub fn granted_minor(&self) -> u128 {
        self.granted_minor
    }

    /// The sum of every balance.
    pub fn total_minor(&self) -> u128 {
        self.balances.values().map(|b| u128::from(*b)).sum()
    }

    /// The last sequence number given to a settled payment.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}
