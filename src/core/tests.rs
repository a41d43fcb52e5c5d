//! The settlement rules tested directly: no TLS, no database, time passed
//! in. Unit tests pin each rule and its boundaries; property tests run
//! random histories through the rules and compare them with a model that
//! is written independently of them.

use std::collections::HashMap;

use proptest::prelude::*;

use crate::core::batch::Batch;
use crate::core::keys::SigningKey;
use crate::core::limits::{MEMO_BYTES_MAX, PAYMENT_LIFETIME_MAX_S};
use crate::core::memory_ledger::MemoryLedger;
use crate::core::name::Name;
use crate::core::payment::{Payment, PaymentId};
use crate::core::rules::{Decision, PriorOutcome, RefusalKind, VerifiedPayment};

const GRANT: u64 = 10_000;
/// 2026-01-01T00:00:00Z, unix seconds.
const T0_S: u64 = 1_767_225_600;
const T0_MS: u64 = T0_S * 1000;

fn name(s: &str) -> Name {
    Name::parse(s).expect("a valid name")
}

fn key(n: u8) -> SigningKey {
    SigningKey::ed25519_from_seed(&[n; 32])
}

/// alice (key 1), bob (key 2) and carol (key 3), each with `GRANT`.
fn ledger() -> MemoryLedger {
    let mut l = MemoryLedger::new();
    for (i, n) in ["alice", "bob", "carol"].iter().enumerate() {
        let k = key(i as u8 + 1);
        l.register(&name(n), k.verifying_key(), u64::MAX, GRANT)
            .expect("registers");
    }
    l
}

fn payment(id: u8, payer: &str, payee: &str, amount_minor: u64) -> Payment {
    Payment {
        id: PaymentId([id; 16]),
        payer: name(payer),
        payee: name(payee),
        amount_minor,
        expires_at_s: T0_S + 60,
        memo: String::new(),
    }
}

/// Signs with the payer's key (alice 1, bob 2, carol 3, others 9).
fn verified(p: Payment) -> VerifiedPayment {
    let k = match p.payer.as_str() {
        "alice" => key(1),
        "bob" => key(2),
        "carol" => key(3),
        _ => key(9),
    };
    let signed = p.sign(&k);
    VerifiedPayment::verify(signed, k.verifying_key()).expect("verifies")
}

fn refusal_kind(d: &Decision) -> Option<RefusalKind> {
    match d {
        Decision::Refuse(r) => Some(r.kind),
        _ => None,
    }
}

fn balance(l: &MemoryLedger, n: &str) -> u64 {
    l.balances()[&name(n)]
}

#[test]
fn a_settlement_moves_exactly_the_amount() {
    let mut l = ledger();
    let d = l.settle(&verified(payment(1, "alice", "bob", 250)), T0_MS);
    assert!(
        matches!(d, Decision::Settle(t) if t.payer_after_minor == GRANT - 250 && t.payee_after_minor == GRANT + 250)
    );
    assert_eq!(balance(&l, "alice"), GRANT - 250);
    assert_eq!(balance(&l, "bob"), GRANT + 250);
    assert_eq!(l.total_minor(), l.granted_minor());
    assert_eq!(l.last_seq(), 1);
}

#[test]
fn the_whole_balance_may_be_spent_but_not_one_unit_more() {
    let mut l = ledger();
    let too_much = l.settle(&verified(payment(1, "alice", "bob", GRANT + 1)), T0_MS);
    assert_eq!(
        refusal_kind(&too_much),
        Some(RefusalKind::InsufficientFunds)
    );
    let all = l.settle(&verified(payment(2, "alice", "bob", GRANT)), T0_MS);
    assert!(matches!(all, Decision::Settle(_)));
    assert_eq!(balance(&l, "alice"), 0);
    let one = l.settle(&verified(payment(3, "alice", "bob", 1)), T0_MS);
    assert_eq!(refusal_kind(&one), Some(RefusalKind::InsufficientFunds));
}

#[test]
fn field_rules_refuse() {
    let mut l = ledger();
    let cases = [
        (payment(1, "alice", "bob", 0), RefusalKind::ZeroAmount),
        (payment(2, "alice", "alice", 5), RefusalKind::SelfPayment),
        (payment(3, "alice", "dave", 5), RefusalKind::UnknownPayee),
        (payment(4, "dave", "alice", 5), RefusalKind::UnknownPayer),
        (
            Payment {
                memo: "m".repeat(MEMO_BYTES_MAX + 1),
                ..payment(5, "alice", "bob", 5)
            },
            RefusalKind::MemoTooLong,
        ),
    ];
    for (p, kind) in cases {
        let d = l.settle(&verified(p), T0_MS);
        assert_eq!(refusal_kind(&d), Some(kind));
    }
    let at_limit = Payment {
        memo: "m".repeat(MEMO_BYTES_MAX),
        ..payment(6, "alice", "bob", 5)
    };
    assert!(matches!(
        l.settle(&verified(at_limit), T0_MS),
        Decision::Settle(_)
    ));
    assert_eq!(l.total_minor(), l.granted_minor());
}

#[test]
fn expiry_holds_through_the_last_millisecond_of_its_second() {
    let p = payment(1, "alice", "bob", 5);
    let last_good_ms = p.expires_at_s * 1000 + 999;
    let d = ledger().settle(&verified(p.clone()), last_good_ms);
    assert!(matches!(d, Decision::Settle(_)));
    let d = ledger().settle(&verified(p), last_good_ms + 1);
    assert_eq!(refusal_kind(&d), Some(RefusalKind::Expired));
}

#[test]
fn expiry_may_be_at_most_the_lifetime_ahead() {
    let now_ms = T0_MS;
    let at_max = Payment {
        expires_at_s: T0_S + PAYMENT_LIFETIME_MAX_S,
        ..payment(1, "alice", "bob", 5)
    };
    let d = ledger().settle(&verified(at_max.clone()), now_ms);
    assert!(matches!(d, Decision::Settle(_)));
    // One millisecond earlier is the previous second: one too far.
    let d = ledger().settle(&verified(at_max), now_ms - 1);
    assert_eq!(refusal_kind(&d), Some(RefusalKind::ExpiryTooFar));
}

#[test]
fn a_replay_returns_the_original_outcome_and_moves_nothing() {
    let mut l = ledger();
    let p = verified(payment(1, "alice", "bob", 100));
    assert!(matches!(l.settle(&p, T0_MS), Decision::Settle(_)));
    let again = l.settle(&p, T0_MS + 5_000);
    assert_eq!(
        again,
        Decision::Replay(PriorOutcome::Settled {
            seq: 1,
            settled_at_ms: T0_MS
        })
    );
    assert_eq!(balance(&l, "alice"), GRANT - 100);
    assert_eq!(l.last_seq(), 1);
}

#[test]
fn a_refusal_is_final_even_once_it_would_settle() {
    let mut l = ledger();
    let big = verified(payment(1, "alice", "carol", GRANT + 50));
    assert_eq!(
        refusal_kind(&l.settle(&big, T0_MS)),
        Some(RefusalKind::InsufficientFunds)
    );
    assert!(matches!(
        l.settle(&verified(payment(2, "bob", "alice", 100)), T0_MS),
        Decision::Settle(_)
    ));
    let again = l.settle(&big, T0_MS);
    assert!(matches!(
        again,
        Decision::Replay(PriorOutcome::Refused(ref r)) if r.kind == RefusalKind::InsufficientFunds
    ));
    assert_eq!(balance(&l, "carol"), GRANT);
}

#[test]
fn the_same_id_with_other_content_conflicts_but_ids_are_per_payer() {
    let mut l = ledger();
    assert!(matches!(
        l.settle(&verified(payment(1, "alice", "bob", 100)), T0_MS),
        Decision::Settle(_)
    ));
    let other = l.settle(&verified(payment(1, "alice", "bob", 101)), T0_MS);
    assert_eq!(refusal_kind(&other), Some(RefusalKind::Conflict));
    // bob may use the same id for his own payment.
    let bobs = l.settle(&verified(payment(1, "bob", "alice", 7)), T0_MS);
    assert!(matches!(bobs, Decision::Settle(_)));
    assert_eq!(l.total_minor(), l.granted_minor());
}

#[test]
fn a_payee_balance_never_overflows() {
    let mut l = MemoryLedger::new();
    l.register(&name("alice"), key(1).verifying_key(), u64::MAX, 10)
        .expect("registers");
    l.register(&name("bob"), key(2).verifying_key(), u64::MAX, u64::MAX - 5)
        .expect("registers");
    let d = l.settle(&verified(payment(1, "alice", "bob", 6)), T0_MS);
    assert_eq!(refusal_kind(&d), Some(RefusalKind::Overflow));
    let d = l.settle(&verified(payment(2, "alice", "bob", 5)), T0_MS);
    assert!(matches!(d, Decision::Settle(_)));
    assert_eq!(balance(&l, "bob"), u64::MAX);
}

#[test]
fn a_payment_verified_with_a_key_no_longer_registered_is_refused() {
    let mut l = MemoryLedger::new();
    l.register(&name("alice"), key(7).verifying_key(), u64::MAX, GRANT)
        .expect("registers");
    l.register(&name("bob"), key(2).verifying_key(), u64::MAX, GRANT)
        .expect("registers");
    // Signed and verified with key 1, but alice's account has key 7.
    let d = l.settle(&verified(payment(1, "alice", "bob", 5)), T0_MS);
    assert_eq!(refusal_kind(&d), Some(RefusalKind::KeyChanged));
}

#[test]
fn a_key_spends_nothing_after_its_certificate_expires() {
    let mut l = MemoryLedger::new();
    l.register(&name("alice"), key(1).verifying_key(), T0_S, GRANT)
        .expect("registers");
    l.register(&name("bob"), key(2).verifying_key(), u64::MAX, GRANT)
        .expect("registers");
    let last_good_ms = T0_S * 1000 + 999;
    let d = l.settle(&verified(payment(1, "alice", "bob", 5)), last_good_ms);
    assert!(matches!(d, Decision::Settle(_)));
    let d = l.settle(&verified(payment(2, "alice", "bob", 5)), last_good_ms + 1);
    assert_eq!(refusal_kind(&d), Some(RefusalKind::KeyExpired));
    assert_eq!(balance(&l, "alice"), GRANT - 5);
}

#[test]
fn registration_is_refused_for_an_existing_name() {
    let mut l = ledger();
    let again = l.register(&name("alice"), key(4).verifying_key(), u64::MAX, GRANT);
    assert_eq!(
        again.map_err(|r| r.kind),
        Err(RefusalKind::AlreadyRegistered)
    );
    assert_eq!(l.granted_minor(), 3 * u128::from(GRANT));
}

#[test]
fn every_refusal_kind_round_trips_its_stored_name() {
    for kind in RefusalKind::ALL {
        assert_eq!(RefusalKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(RefusalKind::parse("bad_request"), None);
}

/// One step of a random history.
#[derive(Debug, Clone)]
enum Step {
    Pay {
        id: u8,
        payer: usize,
        payee: usize,
        amount_minor: u64,
        expires_in_s: i64,
    },
    Wait {
        ms: u64,
    },
}

const PEOPLE: [&str; 4] = ["alice", "bob", "carol", "dave"];

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u8..12, 0usize..4, 0usize..4, 0u64..4_000, -2i64..120).prop_map(
            |(id, payer, payee, amount_minor, expires_in_s)| Step::Pay {
                id,
                payer,
                payee,
                amount_minor,
                expires_in_s
            }
        ),
        1 => (0u64..3_000).prop_map(|ms| Step::Wait { ms }),
    ]
}

/// The rules restated naively: what should happen to one payment.
struct Model {
    balances: HashMap<&'static str, i128>,
    /// (payer, id) → (amount, payee, expiry, settled?) of the first use.
    seen: HashMap<(usize, u8), (u64, usize, u64, bool)>,
}

impl Model {
    fn pay(
        &mut self,
        payer: usize,
        payee: usize,
        id: u8,
        amount: u64,
        expires_at_s: u64,
        now_ms: u64,
    ) -> bool {
        if let Some(&(a, e, x, settled)) = self.seen.get(&(payer, id)) {
            return (a, e, x) == (amount, payee, expires_at_s) && settled;
        }
        let now_s = now_ms / 1000;
        let ok = amount >= 1
            && payer != payee
            && now_s <= expires_at_s
            && expires_at_s - now_s <= PAYMENT_LIFETIME_MAX_S
            && self.balances[PEOPLE[payer]] >= i128::from(amount);
        if ok {
            *self.balances.get_mut(PEOPLE[payer]).expect("known") -= i128::from(amount);
            *self.balances.get_mut(PEOPLE[payee]).expect("known") += i128::from(amount);
        }
        self.seen
            .insert((payer, id), (amount, payee, expires_at_s, ok));
        ok
    }
}

fn signing_keys() -> Vec<SigningKey> {
    (1..=4).map(key).collect()
}

fn build(step: &Step, keys: &[SigningKey], now_ms: u64) -> Option<(VerifiedPayment, usize, usize)> {
    let Step::Pay {
        id,
        payer,
        payee,
        amount_minor,
        expires_in_s,
    } = *step
    else {
        return None;
    };
    let expires_at_s = (now_ms / 1000).saturating_add_signed(expires_in_s);
    let p = Payment {
        id: PaymentId([id; 16]),
        payer: name(PEOPLE[payer]),
        payee: name(PEOPLE[payee]),
        amount_minor,
        expires_at_s,
        memo: String::new(),
    };
    let k = &keys[payer];
    let v = VerifiedPayment::verify(p.sign(k), k.verifying_key()).expect("verifies");
    Some((v, payer, payee))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random payments, replays, conflicts and expiries: the rules agree
    /// with the naive model on every payment, money is conserved after
    /// every step, and every settled payment takes the next sequence.
    #[test]
    fn random_histories_conserve_money_and_match_the_model(steps in proptest::collection::vec(step(), 1..120)) {
        let keys = signing_keys();
        let mut ledger = MemoryLedger::new();
        let mut model = Model { balances: HashMap::new(), seen: HashMap::new() };
        for (i, person) in PEOPLE.iter().enumerate() {
            let grant = if i == 3 { 0 } else { GRANT };
            ledger.register(&name(person), keys[i].verifying_key(), u64::MAX, grant).expect("registers");
            model.balances.insert(person, i128::from(grant));
        }
        let mut now_ms = T0_MS;
        let mut settled = 0u64;
        for s in &steps {
            if let Step::Wait { ms } = s {
                now_ms += ms;
                continue;
            }
            let Some((v, payer, payee)) = build(s, &keys, now_ms) else { continue };
            let p = &v.signed().payment;
            let want = model.pay(payer, payee, p.id.0[0], p.amount_minor, p.expires_at_s, now_ms);
            let d = ledger.settle(&v, now_ms);
            let got = matches!(d, Decision::Settle(_) | Decision::Replay(PriorOutcome::Settled { .. }));
            prop_assert_eq!(got, want, "{:?} gave {:?}", s, d);
            if matches!(d, Decision::Settle(_)) {
                settled += 1;
                prop_assert_eq!(ledger.last_seq(), settled);
            }
            prop_assert_eq!(ledger.total_minor(), ledger.granted_minor());
        }
        for person in PEOPLE {
            prop_assert_eq!(i128::from(ledger.balances()[&name(person)]), model.balances[person]);
        }
    }

    /// Deciding a history as one batch gives the same answers as deciding
    /// it one payment at a time.
    #[test]
    fn a_batch_decides_like_payments_one_by_one(steps in proptest::collection::vec(step(), 1..80)) {
        let keys = signing_keys();
        let mut one_by_one = MemoryLedger::new();
        for (i, person) in PEOPLE.iter().enumerate() {
            one_by_one.register(&name(person), keys[i].verifying_key(), u64::MAX, GRANT).expect("registers");
        }
        let base = one_by_one.clone();
        let mut batch = Batch::new(&base, 0);
        for s in &steps {
            let Some((v, _, _)) = build(s, &keys, T0_MS) else { continue };
            let single = one_by_one.settle(&v, T0_MS);
            let batched = batch.settle(&v, T0_MS);
            match (single, batched) {
                (Decision::Settle(_), Ok(b)) => prop_assert!(!b.replay),
                (Decision::Replay(PriorOutcome::Settled { seq, .. }), Ok(b)) => {
                    prop_assert!(b.replay);
                    prop_assert_eq!(b.seq, seq);
                }
                (Decision::Refuse(r), Err(e)) => prop_assert_eq!(r.kind, e.kind),
                (Decision::Replay(PriorOutcome::Refused(r)), Err(e)) => prop_assert_eq!(r.kind, e.kind),
                (single, batched) => prop_assert!(false, "{:?} vs {:?}", single, batched),
            }
        }
        let (_, last_seq) = batch.finish();
        prop_assert_eq!(last_seq, one_by_one.last_seq());
    }
}

// ---------------------------------------------------------------------
// Key changes: rotation, renewal, rebind (decide_key_change)
// ---------------------------------------------------------------------

mod key_changes {
    use super::*;
    use crate::core::batch::Batch;
    use crate::core::rotation::{KeyChange, KeyChangeKind, KeyStatement, StatementError};

    /// alice's change from key `old` to key `new`, certificate valid until
    /// `not_after_s`, signed by both.
    fn change(old: u8, new: u8, not_after_s: u64) -> KeyChange {
        let statement = KeyStatement {
            name: name("alice"),
            old_key: key(old).verifying_key().clone(),
            new_key: key(new).verifying_key().clone(),
            new_not_after_s: not_after_s,
            new_serial: vec![0x01, new],
        };
        let signed = statement.sign(&key(old), &key(new)).expect("signs");
        KeyChange::from_statement(signed).expect("verifies")
    }

    fn signed_by(k: u8, p: Payment) -> VerifiedPayment {
        VerifiedPayment::verify(p.sign(&key(k)), key(k).verifying_key()).expect("verifies")
    }

    #[test]
    fn a_rotation_moves_the_account_and_the_old_key_is_refused() {
        let mut l = ledger();
        let before = verified(payment(1, "alice", "bob", 10));
        let c = change(1, 7, u64::MAX);
        assert_eq!(c.kind(), KeyChangeKind::Rotate);
        l.change_key(&c, T0_MS).expect("rotates");
        let d = l.settle(&before, T0_MS);
        assert_eq!(refusal_kind(&d), Some(RefusalKind::KeyChanged), "{d:?}");
        let after = signed_by(7, payment(2, "alice", "bob", 10));
        assert!(matches!(l.settle(&after, T0_MS), Decision::Settle(_)));
        assert_eq!(balance(&l, "alice"), GRANT - 10);
    }

    #[test]
    fn a_second_rotation_from_the_same_old_key_is_refused() {
        let mut l = ledger();
        l.change_key(&change(1, 7, u64::MAX), T0_MS)
            .expect("first wins");
        let second = l.change_key(&change(1, 8, u64::MAX), T0_MS);
        assert_eq!(second.map_err(|r| r.kind), Err(RefusalKind::KeyChanged));
        // From the new key it goes on.
        l.change_key(&change(7, 8, u64::MAX), T0_MS)
            .expect("chained");
    }

    #[test]
    fn inside_a_batch_a_rotation_orders_against_payments() {
        let base = ledger();
        let mut batch = Batch::new(&base, 0);
        let early = verified(payment(1, "alice", "bob", 10));
        let late = verified(payment(2, "alice", "bob", 10));
        assert!(batch.settle(&early, T0_MS).is_ok(), "before the rotation");
        batch
            .change_key(&change(1, 7, u64::MAX), T0_MS)
            .expect("rotates");
        let refused = batch.settle(&late, T0_MS).map_err(|r| r.kind);
        assert_eq!(refused, Err(RefusalKind::KeyChanged));
        let racing = batch.change_key(&change(1, 8, u64::MAX), T0_MS);
        assert_eq!(racing.map_err(|r| r.kind), Err(RefusalKind::KeyChanged));
        let new = signed_by(7, payment(3, "alice", "bob", 10));
        assert!(batch.settle(&new, T0_MS).is_ok());
    }

    #[test]
    fn a_renewal_extends_validity_and_must_end_later() {
        let mut l = MemoryLedger::new();
        l.register(&name("alice"), key(1).verifying_key(), T0_S, GRANT)
            .expect("registers");
        l.register(&name("bob"), key(2).verifying_key(), u64::MAX, GRANT)
            .expect("registers");
        let late_ms = (T0_S + 10) * 1000;
        let p = verified(payment(1, "alice", "bob", 5));
        let mut expired = l.clone();
        assert_eq!(
            refusal_kind(&expired.settle(&p, late_ms)),
            Some(RefusalKind::KeyExpired)
        );
        let same = l.change_key(&change(1, 1, T0_S), T0_MS);
        assert_eq!(same.map_err(|r| r.kind), Err(RefusalKind::RenewalNotLater));
        let renew = change(1, 1, T0_S + 3600);
        assert_eq!(renew.kind(), KeyChangeKind::Renew);
        l.change_key(&renew, T0_MS).expect("renews");
        assert!(matches!(l.settle(&p, late_ms), Decision::Settle(_)));
    }

    #[test]
    fn an_expired_new_certificate_or_no_account_is_refused() {
        let mut l = ledger();
        let expired = l.change_key(&change(1, 7, T0_S - 1), T0_MS);
        assert_eq!(expired.map_err(|r| r.kind), Err(RefusalKind::KeyExpired));
        let mut empty = MemoryLedger::new();
        let none = empty.change_key(&change(1, 7, u64::MAX), T0_MS);
        assert_eq!(none.map_err(|r| r.kind), Err(RefusalKind::NoAccount));
    }

    #[test]
    fn a_rebind_needs_no_old_key() {
        let mut l = ledger();
        l.change_key(&change(1, 7, u64::MAX), T0_MS)
            .expect("rotates");
        let rebind = KeyChange::rebind(
            name("alice"),
            key(9).verifying_key().clone(),
            u64::MAX,
            vec![9],
            vec![0x30],
        )
        .expect("rebind");
        assert_eq!(rebind.kind(), KeyChangeKind::Rebind);
        l.change_key(&rebind, T0_MS).expect("rebinds");
        let p = signed_by(9, payment(1, "alice", "bob", 1));
        assert!(matches!(l.settle(&p, T0_MS), Decision::Settle(_)));
    }

    #[test]
    fn a_statement_needs_both_signatures() {
        let statement = KeyStatement {
            name: name("alice"),
            old_key: key(1).verifying_key().clone(),
            new_key: key(7).verifying_key().clone(),
            new_not_after_s: T0_S,
            new_serial: vec![1],
        };
        let good = statement.clone().sign(&key(1), &key(7)).expect("signs");
        let mut bad_old = good.clone();
        bad_old.old_signature = key(3).sign(&statement.canonical_bytes().expect("bytes"));
        let mut bad_new = good.clone();
        bad_new.new_signature[5] ^= 1;
        assert_eq!(
            KeyChange::from_statement(bad_old).err(),
            Some(StatementError::BadOldSignature)
        );
        assert_eq!(
            KeyChange::from_statement(bad_new).err(),
            Some(StatementError::BadNewSignature)
        );
        let mut long = statement;
        long.new_serial = vec![1; 22];
        assert_eq!(
            long.canonical_bytes().err(),
            Some(StatementError::SerialTooLong)
        );
        assert!(KeyChange::from_statement(good).is_ok());
    }
}
