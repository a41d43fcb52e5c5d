//! Payment channels on the ledger, on both backends: holds, closes,
//! replays, refusals, expiry with the clock passed in, and audit with
//! holds. The network operations are tested in `tests/channels.rs`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use micropay::core::channel::{Chain, ChannelId, CloseRequest, Commitment, Link};
use micropay::core::channel_rules::{expirable_from_ms, ChannelRefusalKind, VerifiedCommitment};
use micropay::core::keys::SigningKey;
use micropay::core::name::Name;
use micropay::ledger::handle::Ledger;
use micropay::ledger::postgres::PgStore;
use micropay::ledger::sqlite::SqliteStore;
use micropay::ledger::{DbLocation, LedgerStore, NoCommitObserver};

use common::{Backend, GRANT};

const START_MS: u64 = 1_800_000_000_000;

struct World {
    ledger: Ledger,
    clock: Arc<AtomicU64>,
    alice: SigningKey,
    db: DbLocation,
    _dir: tempfile::TempDir,
    _pg: Option<common::TestDb>,
}

fn name(s: &str) -> Name {
    Name::parse(s).expect("valid name")
}

async fn world(backend: &Backend) -> World {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, pg) = backend.fresh_db(dir.path()).await;
    let location = db.clone();
    let clock = Arc::new(AtomicU64::new(START_MS));
    let reader = clock.clone();
    // Opening a PostgreSQL store blocks on a runtime of its own: off the
    // test's runtime.
    let ledger = tokio::task::spawn_blocking(move || {
        let store: Arc<dyn LedgerStore> = match &location {
            DbLocation::Sqlite(path) => Arc::new(SqliteStore::open(path, GRANT).expect("sqlite")),
            DbLocation::Postgres(url) => Arc::new(PgStore::open(url, GRANT).expect("postgres")),
        };
        Ledger::start_clocked(store, Arc::new(NoCommitObserver), move || {
            reader.load(Ordering::SeqCst)
        })
        .expect("ledger starts")
    })
    .await
    .expect("open task");
    let alice = SigningKey::ed25519_from_seed(&[1; 32]);
    let bob = SigningKey::ed25519_from_seed(&[2; 32]);
    for (who, key) in [("alice", &alice), ("bob", &bob), ("carol", &bob)] {
        let not_after = START_MS / 1000 + 365 * 86_400;
        ledger
            .register(name(who), key.verifying_key().clone(), (not_after, vec![1]))
            .await
            .expect("ledger")
            .expect("registers");
    }
    World {
        ledger,
        clock,
        alice,
        db,
        _dir: dir,
        _pg: pg,
    }
}

impl World {
    fn commit(&self, links: u64, value_minor: u64) -> (Chain, VerifiedCommitment) {
        let id = ChannelId::random();
        let chain = Chain::generate(id, Link::random_secret(), links).expect("in bounds");
        let signed = Commitment {
            id,
            payer: name("alice"),
            payee: name("bob"),
            root: chain.root(),
            value_minor,
            links,
            expires_at_s: START_MS / 1000 + 600,
        }
        .sign(&self.alice);
        let verified =
            VerifiedCommitment::verify(signed, self.alice.verifying_key()).expect("alice signed");
        (chain, verified)
    }

    async fn available(&self, who: &str) -> u64 {
        self.ledger
            .balance(&name(who))
            .await
            .expect("read")
            .expect("account")
    }

    async fn close(
        &self,
        chain: &Chain,
        index: u64,
        closer: &str,
    ) -> Result<u64, ChannelRefusalKind> {
        let close = CloseRequest {
            id: chain.id(),
            index,
            link: chain.link(index.min(chain.links())).expect("in bounds"),
        };
        match self
            .ledger
            .close_channel(close, name(closer))
            .await
            .expect("ledger")
        {
            Ok((outcome, _)) => Ok(outcome.paid_minor),
            Err(refusal) => Err(refusal.kind),
        }
    }

    async fn audit_clean(self) {
        self.ledger.close().await;
        let report = common::audit(&self.db).await;
        assert!(
            report.violations.is_empty(),
            "audit: {:?}",
            report.violations
        );
        assert_eq!(
            report.total_balances + report.total_held,
            report.total_granted
        );
    }
}

backend_test! {
    async fn open_places_a_hold_and_close_pays_exactly_the_revealed_links(backend) {
        let w = world(&backend).await;
        let (chain, v) = w.commit(100, 5);
        let (record, replay) = w.ledger.open_channel(v.clone()).await.expect("ledger").expect("opens");
        assert!(!replay);
        assert_eq!(record.hold_minor, 500);
        assert_eq!(w.available("alice").await, GRANT - 500);
        assert_eq!(w.ledger.held(&name("alice")).await.expect("read"), 500);
        // The same commitment again answers the first open.
        let (again, replay) = w.ledger.open_channel(v).await.expect("ledger").expect("replays");
        assert!(replay);
        assert_eq!(again.opened_at_ms, record.opened_at_ms);
        assert_eq!(w.available("alice").await, GRANT - 500);
        // Only the payee closes; a forged link and a claim beyond n are refused.
        assert_eq!(w.close(&chain, 30, "carol").await, Err(ChannelRefusalKind::NotPayee));
        let forged = CloseRequest { id: chain.id(), index: 30, link: Link([0; 32]) };
        let refused = w.ledger.close_channel(forged, name("bob")).await.expect("ledger");
        assert_eq!(refused.map_err(|r| r.kind).err(), Some(ChannelRefusalKind::BadLink));
        assert_eq!(w.close(&chain, 101, "bob").await, Err(ChannelRefusalKind::BeyondEnd));
        assert_eq!(w.close(&chain, 30, "bob").await, Ok(150));
        assert_eq!(w.available("alice").await, GRANT - 150);
        assert_eq!(w.available("bob").await, GRANT + 150);
        assert_eq!(w.ledger.held(&name("alice")).await.expect("read"), 0);
        // A second close, even claiming more, answers the first outcome.
        assert_eq!(w.close(&chain, 60, "bob").await, Ok(150));
        assert_eq!(w.available("bob").await, GRANT + 150);
        w.audit_clean().await;
    }
}

backend_test! {
    async fn holds_together_cannot_exceed_the_balance(backend) {
        let w = world(&backend).await;
        let (_, over) = w.commit(GRANT + 1, 1);
        let refused = w.ledger.open_channel(over).await.expect("ledger");
        assert_eq!(refused.err().map(|r| r.kind), Some(ChannelRefusalKind::InsufficientFunds));
        let (_, a) = w.commit(GRANT / 2 + 1, 1);
        let (_, b) = w.commit(GRANT / 2 + 1, 1);
        assert!(w.ledger.open_channel(a).await.expect("ledger").is_ok());
        let refused = w.ledger.open_channel(b).await.expect("ledger");
        assert_eq!(refused.err().map(|r| r.kind), Some(ChannelRefusalKind::InsufficientFunds));
        w.audit_clean().await;
    }
}

backend_test! {
    async fn the_hold_returns_to_the_payer_after_expiry_and_grace(backend) {
        let w = world(&backend).await;
        let (chain, v) = w.commit(10, 7);
        let from_ms = expirable_from_ms(v.commitment());
        w.ledger.open_channel(v).await.expect("ledger").expect("opens");
        assert_eq!(w.available("alice").await, GRANT - 70);
        // Not yet: nothing is due one millisecond before.
        w.clock.store(from_ms - 1, Ordering::SeqCst);
        assert_eq!(w.ledger.expire_due(from_ms - 1, 10).await.expect("ledger"), 0);
        w.clock.store(from_ms, Ordering::SeqCst);
        assert_eq!(w.ledger.expire_due(from_ms, 10).await.expect("ledger"), 1);
        assert_eq!(w.available("alice").await, GRANT);
        assert_eq!(w.ledger.expire_due(from_ms, 10).await.expect("ledger"), 0);
        // A close after the hold went back is refused.
        assert_eq!(w.close(&chain, 3, "bob").await, Err(ChannelRefusalKind::AlreadyExpired));
        w.audit_clean().await;
    }
}

backend_test! {
    async fn audit_is_clean_with_open_holds(backend) {
        let w = world(&backend).await;
        let (_, v) = w.commit(20, 3);
        w.ledger.open_channel(v).await.expect("ledger").expect("opens");
        w.audit_clean().await;
    }
}
