//! The channel rules against a small in-memory ledger, one negative test
//! per rule, and a property over random interleavings of opens, closes
//! and expiries that conserves money exactly.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::core::channel::{Chain, Link};
use crate::core::keys::SigningKey;
use crate::core::payment::PaymentId;
use crate::core::rules::{Prior, RegisteredKey};

const NOW_MS: u64 = 1_700_000_000_000;
const GRANT: u64 = 1_000;

struct Ledger {
    balances: HashMap<Name, u64>,
    keys: HashMap<Name, (SigningKey, RegisteredKey)>,
    channels: HashMap<ChannelId, ChannelRecord>,
}

impl LedgerView for Ledger {
    fn balance_minor(&self, name: &Name) -> Option<u64> {
        self.balances.get(name).copied()
    }
    fn registered_key(&self, name: &Name) -> Option<RegisteredKey> {
        self.keys.get(name).map(|k| k.1)
    }
    fn accounts(&self) -> u64 {
        self.balances.len() as u64
    }
    fn prior(&self, _: &Name, _: &PaymentId) -> Option<Prior> {
        None
    }
}

impl ChannelView for Ledger {
    fn channel(&self, id: &ChannelId) -> Option<ChannelRecord> {
        self.channels.get(id).cloned()
    }
}

fn name(s: &str) -> Name {
    Name::parse(s).expect("test names are valid")
}

impl Ledger {
    fn new(people: &[&str]) -> Ledger {
        let mut ledger = Ledger {
            balances: HashMap::new(),
            keys: HashMap::new(),
            channels: HashMap::new(),
        };
        for (i, p) in people.iter().enumerate() {
            let key = SigningKey::ed25519_from_seed(&[i as u8 + 1; 32]);
            let registered = RegisteredKey::of(key.verifying_key(), u64::MAX / 2000);
            ledger.balances.insert(name(p), GRANT);
            ledger.keys.insert(name(p), (key, registered));
        }
        ledger
    }

    fn commit(
        &self,
        payer: &str,
        payee: &str,
        links: u64,
        value: u64,
    ) -> (Chain, VerifiedCommitment) {
        let id = ChannelId::random();
        let chain = Chain::generate(id, Link::random_secret(), links).expect("in bounds");
        let signed = Commitment {
            id,
            payer: name(payer),
            payee: name(payee),
            root: chain.root(),
            value_minor: value,
            links,
            expires_at_s: NOW_MS / 1000 + 600,
        }
        .sign(&self.keys[&name(payer)].0);
        let key = self.keys[&name(payer)].0.verifying_key().clone();
        (
            chain,
            VerifiedCommitment::verify(signed, &key).expect("signed by the payer"),
        )
    }

    fn open(
        &mut self,
        v: &VerifiedCommitment,
        now_ms: u64,
    ) -> Result<OpenDecision, ChannelRefusal> {
        let decision = decide_open(self, v, now_ms)?;
        if let OpenDecision::Open {
            hold_minor,
            payer_after_minor,
        } = decision
        {
            let c = v.commitment();
            self.balances.insert(c.payer.clone(), payer_after_minor);
            self.channels.insert(
                c.id,
                ChannelRecord {
                    signed: v.signed().clone(),
                    hold_minor,
                    opened_at_ms: now_ms,
                    end: ChannelEnd::Open,
                },
            );
        }
        Ok(decision)
    }

    fn close(
        &mut self,
        close: &CloseRequest,
        closer: &str,
        now_ms: u64,
    ) -> Result<CloseDecision, ChannelRefusal> {
        let decision = decide_close(self, close, &name(closer), now_ms)?;
        if let CloseDecision::Close {
            outcome,
            payee_after_minor,
            payer_after_minor,
        } = decision
        {
            let record = self.channels.get_mut(&close.id).expect("decided on it");
            record.end = ChannelEnd::Closed(outcome);
            let c = record.signed.commitment.clone();
            self.balances.insert(c.payee, payee_after_minor);
            self.balances.insert(c.payer, payer_after_minor);
        }
        Ok(decision)
    }

    fn expire(&mut self, id: &ChannelId, now_ms: u64) -> Result<u64, ChannelRefusal> {
        let (released_minor, payer_after_minor) = decide_expire(self, id, now_ms)?;
        let record = self.channels.get_mut(id).expect("decided on it");
        record.end = ChannelEnd::Expired {
            released_minor,
            at_ms: now_ms,
        };
        let payer = record.signed.commitment.payer.clone();
        self.balances.insert(payer, payer_after_minor);
        Ok(released_minor)
    }

    fn held(&self) -> u64 {
        self.channels
            .values()
            .filter(|r| r.end == ChannelEnd::Open)
            .map(|r| r.hold_minor)
            .sum()
    }

    fn total(&self) -> u64 {
        self.balances.values().sum::<u64>() + self.held()
    }
}

fn close_at(chain: &Chain, index: u64) -> CloseRequest {
    CloseRequest {
        id: chain.id(),
        index,
        link: chain.link(index).expect("in bounds"),
    }
}

fn kind<T: std::fmt::Debug>(r: Result<T, ChannelRefusal>) -> ChannelRefusalKind {
    r.expect_err("refused").kind
}

#[test]
fn open_pay_close_moves_exactly_what_was_revealed() {
    let mut l = Ledger::new(&["alice", "bob"]);
    let (chain, v) = l.commit("alice", "bob", 50, 3);
    assert!(matches!(
        l.open(&v, NOW_MS),
        Ok(OpenDecision::Open {
            hold_minor: 150,
            ..
        })
    ));
    assert_eq!(l.balances[&name("alice")], GRANT - 150);
    assert_eq!(l.held(), 150);
    let first = l
        .close(&close_at(&chain, 7), "bob", NOW_MS + 1)
        .expect("closes");
    let CloseDecision::Close { outcome, .. } = first else {
        panic!("{first:?}")
    };
    assert_eq!((outcome.paid_minor, outcome.released_minor), (21, 129));
    assert_eq!(l.balances[&name("bob")], GRANT + 21);
    assert_eq!(l.balances[&name("alice")], GRANT - 21);
    assert_eq!(l.held(), 0);
    // A second close, even claiming more, answers the first outcome.
    assert_eq!(
        l.close(&close_at(&chain, 9), "bob", NOW_MS + 2),
        Ok(CloseDecision::Replay(outcome))
    );
    assert_eq!(l.total(), 2 * GRANT);
}

#[test]
fn open_refusals() {
    let mut l = Ledger::new(&["alice", "bob"]);
    let (_, over) = l.commit("alice", "bob", 101, 10);
    assert_eq!(
        kind(l.open(&over, NOW_MS)),
        ChannelRefusalKind::InsufficientFunds
    );
    let (_, to_self) = l.commit("alice", "alice", 1, 1);
    assert_eq!(
        kind(l.open(&to_self, NOW_MS)),
        ChannelRefusalKind::SelfChannel
    );
    let (_, zero) = l.commit("alice", "bob", 1, 0);
    assert_eq!(kind(l.open(&zero, NOW_MS)), ChannelRefusalKind::BadTerms);
    let (_, huge) = l.commit("alice", "bob", 2, u64::MAX);
    assert_eq!(kind(l.open(&huge, NOW_MS)), ChannelRefusalKind::Overflow);
    let (_, late) = l.commit("alice", "bob", 1, 1);
    assert_eq!(
        kind(l.open(&late, NOW_MS + 600_000)),
        ChannelRefusalKind::Expired
    );
    let (_, early) = l.commit("alice", "bob", 1, 1);
    let far = NOW_MS - (crate::core::limits::CHANNEL_LIFETIME_MAX_S) * 1000;
    assert_eq!(kind(l.open(&early, far)), ChannelRefusalKind::ExpiryTooFar);
    let (_, to_nobody) = l.commit("alice", "carol", 1, 1);
    assert_eq!(
        kind(l.open(&to_nobody, NOW_MS)),
        ChannelRefusalKind::UnknownPayee
    );
    // Two holds that together exceed the balance: the second is refused.
    let (_, a) = l.commit("alice", "bob", 60, 10);
    let (_, b) = l.commit("alice", "bob", 60, 10);
    assert!(l.open(&a, NOW_MS).is_ok());
    assert_eq!(
        kind(l.open(&b, NOW_MS)),
        ChannelRefusalKind::InsufficientFunds
    );
    assert_eq!(l.total(), 2 * GRANT);
}

#[test]
fn forged_and_replayed_commitments() {
    let mut l = Ledger::new(&["alice", "bob", "mallory"]);
    let (_, v) = l.commit("alice", "bob", 10, 1);
    // Signed by mallory in alice's name: the signature does not verify
    // with alice's key, so no VerifiedCommitment exists.
    let mut forged = v.commitment().clone();
    forged.links = 20;
    let by_mallory = forged.sign(&l.keys[&name("mallory")].0);
    let alice_key = l.keys[&name("alice")].0.verifying_key().clone();
    assert!(VerifiedCommitment::verify(by_mallory.clone(), &alice_key).is_err());
    // Verified with mallory's own key, it names alice's account whose key
    // is not mallory's.
    let mallory_key = l.keys[&name("mallory")].0.verifying_key().clone();
    let verified = VerifiedCommitment::verify(by_mallory, &mallory_key).expect("mallory signed");
    assert_eq!(
        kind(l.open(&verified, NOW_MS)),
        ChannelRefusalKind::KeyChanged
    );
    // The same commitment twice replays; another under the same id conflicts.
    let first = l.open(&v, NOW_MS).expect("opens");
    assert!(matches!(first, OpenDecision::Open { .. }));
    assert!(matches!(
        l.open(&v, NOW_MS + 5),
        Ok(OpenDecision::Replay(_))
    ));
    let mut other = v.commitment().clone();
    other.links = 11;
    let other = VerifiedCommitment::verify(other.sign(&l.keys[&name("alice")].0), &alice_key)
        .expect("alice signed");
    assert_eq!(kind(l.open(&other, NOW_MS)), ChannelRefusalKind::Conflict);
    assert_eq!(l.held(), 10);
}

#[test]
fn close_refusals() {
    let mut l = Ledger::new(&["alice", "bob", "carol"]);
    let (chain, v) = l.commit("alice", "bob", 5, 2);
    l.open(&v, NOW_MS).expect("opens");
    let unknown = CloseRequest {
        id: ChannelId([9; 16]),
        ..close_at(&chain, 1)
    };
    assert_eq!(
        kind(l.close(&unknown, "bob", NOW_MS)),
        ChannelRefusalKind::UnknownChannel
    );
    assert_eq!(
        kind(l.close(&close_at(&chain, 1), "carol", NOW_MS)),
        ChannelRefusalKind::NotPayee
    );
    assert_eq!(
        kind(l.close(&close_at(&chain, 1), "alice", NOW_MS)),
        ChannelRefusalKind::NotPayee
    );
    let beyond = CloseRequest {
        index: 6,
        ..close_at(&chain, 5)
    };
    assert_eq!(
        kind(l.close(&beyond, "bob", NOW_MS)),
        ChannelRefusalKind::BeyondEnd
    );
    // A claim for more links than revealed: w_2 claimed as w_3.
    let more = CloseRequest {
        index: 3,
        ..close_at(&chain, 2)
    };
    assert_eq!(
        kind(l.close(&more, "bob", NOW_MS)),
        ChannelRefusalKind::BadLink
    );
    let forged = CloseRequest {
        link: Link([0; 32]),
        ..close_at(&chain, 2)
    };
    assert_eq!(
        kind(l.close(&forged, "bob", NOW_MS)),
        ChannelRefusalKind::BadLink
    );
    let after = expirable_from_ms(v.commitment());
    assert_eq!(
        kind(l.close(&close_at(&chain, 2), "bob", after)),
        ChannelRefusalKind::Expired
    );
    // The last millisecond of the grace period still closes.
    assert!(l.close(&close_at(&chain, 2), "bob", after - 1).is_ok());
    assert_eq!(l.total(), 3 * GRANT);
}

#[test]
fn the_hold_returns_at_expiry_plus_grace_and_only_then() {
    let mut l = Ledger::new(&["alice", "bob"]);
    let (chain, v) = l.commit("alice", "bob", 5, 2);
    l.open(&v, NOW_MS).expect("opens");
    let from = expirable_from_ms(v.commitment());
    assert_eq!(
        kind(l.expire(&chain.id(), from - 1)),
        ChannelRefusalKind::NotExpirable
    );
    assert_eq!(l.expire(&chain.id(), from), Ok(10));
    assert_eq!(l.balances[&name("alice")], GRANT);
    assert_eq!(
        kind(l.expire(&chain.id(), from + 1)),
        ChannelRefusalKind::NotExpirable
    );
    assert_eq!(
        kind(l.close(&close_at(&chain, 1), "bob", from)),
        ChannelRefusalKind::AlreadyExpired
    );
    // A closed channel does not expire.
    let (chain, v) = l.commit("alice", "bob", 5, 2);
    l.open(&v, NOW_MS).expect("opens");
    l.close(&close_at(&chain, 1), "bob", NOW_MS)
        .expect("closes");
    assert_eq!(
        kind(l.expire(&chain.id(), from + 1)),
        ChannelRefusalKind::NotExpirable
    );
    assert_eq!(l.total(), 2 * GRANT);
}

#[derive(Debug, Clone)]
enum Step {
    Open {
        payer: usize,
        payee: usize,
        links: u64,
        value: u64,
    },
    Close {
        channel: usize,
        index: u64,
        closer: usize,
    },
    Expire {
        channel: usize,
    },
    Advance {
        ms: u64,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, 0..3usize, 1..40u64, 1..50u64).prop_map(|(payer, payee, links, value)| {
            Step::Open {
                payer,
                payee,
                links,
                value,
            }
        }),
        (any::<usize>(), 0..45u64, 0..3usize).prop_map(|(channel, index, closer)| Step::Close {
            channel,
            index,
            closer
        }),
        any::<usize>().prop_map(|channel| Step::Expire { channel }),
        (0..400_000u64).prop_map(|ms| Step::Advance { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the order of opens, closes and expiries, the money in
    /// available balances plus open holds always equals the grants, and a
    /// channel pays its payee at most n × value.
    #[test]
    fn random_interleavings_conserve_money(steps in proptest::collection::vec(step(), 1..40)) {
        let people = ["alice", "bob", "carol"];
        let mut l = Ledger::new(&people);
        let mut chains: Vec<Chain> = Vec::new();
        let mut now = NOW_MS;
        for s in steps {
            match s {
                Step::Open { payer, payee, links, value } => {
                    let (chain, v) = l.commit(people[payer], people[payee], links, value);
                    if let Ok(OpenDecision::Open { .. }) = l.open(&v, now) {
                        chains.push(chain);
                    }
                }
                Step::Close { channel, index, closer } if !chains.is_empty() => {
                    let chain = &chains[channel % chains.len()];
                    let close = CloseRequest {
                        id: chain.id(),
                        index,
                        link: chain.link(index.min(chain.links())).expect("in bounds"),
                    };
                    if let Ok(CloseDecision::Close { outcome, .. }) = l.close(&close, people[closer], now) {
                        let hold = l.channels[&chain.id()].hold_minor;
                        prop_assert!(outcome.paid_minor <= hold);
                        prop_assert_eq!(outcome.paid_minor + outcome.released_minor, hold);
                    }
                }
                Step::Expire { channel } if !chains.is_empty() => {
                    let _ = l.expire(&chains[channel % chains.len()].id(), now);
                }
                Step::Advance { ms } => now += ms,
                _ => {}
            }
            prop_assert_eq!(l.total(), GRANT * people.len() as u64);
        }
    }
}
