//! TLS to PostgreSQL (issue 12): `sslmode` and `sslrootcert` in the `--db`
//! URL are honoured. Runs against the throwaway cluster of
//! `scripts/with-postgres.sh`, which offers TLS with a certificate from a
//! CA of its own when openssl is installed (`MICROPAY_TEST_PG_SSLROOTCERT`);
//! says loudly when it cannot run. The URL handling itself is unit-tested
//! in `src/ledger/postgres/tls.rs`.

mod common;

use std::sync::Arc;

use common::{person, server_options, TestDb};
use micropay::ledger::postgres::{connect, pg_config};
use micropay::ledger::{DbLocation, LedgerError};
use micropay::server::ServerLimits;
use micropay::wire::{Registered, ServerRequest};

/// The admin URL and the cluster's CA, or `None` (and a loud note).
fn tls_cluster() -> Option<(String, String)> {
    let admin = common::backend::postgres_admin_url();
    let ca = std::env::var("MICROPAY_TEST_PG_SSLROOTCERT").ok();
    match (admin, ca) {
        (Some(admin), Some(ca)) => Some((admin, ca)),
        _ => {
            eprintln!(
                "*** MICROPAY_TEST_PG or MICROPAY_TEST_PG_SSLROOTCERT not set: \
                 the PostgreSQL TLS tests did NOT run"
            );
            None
        }
    }
}

/// Whether a connection made from `url` is encrypted, as the server sees
/// it; or why it could not be made.
async fn connection_is_tls(url: &str) -> Result<bool, LedgerError> {
    let config = pg_config(url)?;
    let client = connect(&config, "the test database").await?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    Ok(row.get::<_, bool>(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_is_honoured_and_a_wrong_ca_is_refused() {
    let Some((admin, ca)) = tls_cluster() else {
        return;
    };
    let db = TestDb::create(&admin).await;
    let with = |query: &str| format!("{}?{query}", db.url);
    for query in [
        format!("sslmode=verify-full&sslrootcert={ca}"),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
        format!("sslmode=require&sslrootcert={ca}"),
        "sslmode=require".to_owned(),
    ] {
        let tls = connection_is_tls(&with(&query)).await.expect(&query);
        assert!(tls, "{query} gives an encrypted connection");
    }
    for query in ["sslmode=disable", "sslmode=prefer"] {
        let tls = connection_is_tls(&with(query)).await.expect(query);
        assert!(!tls, "{query} stays plain TCP");
    }
    // A CA that did not issue the server's certificate: refused before
    // any password is sent, as unavailable (the server cannot be trusted).
    let other = tempfile::tempdir().expect("tempdir");
    let wrong_ca = other.path().join("other-ca.pem");
    std::fs::write(&wrong_ca, &common::pki().ca.pem.cert_pem).expect("written");
    for mode in ["verify-full", "verify-ca", "require"] {
        let query = format!("sslmode={mode}&sslrootcert={}", wrong_ca.display());
        let refused = connection_is_tls(&with(&query)).await;
        assert!(
            matches!(refused, Err(LedgerError::Unavailable(_))),
            "{mode} with a foreign CA must be refused, got {refused:?}"
        );
    }
}

/// A server whose `--db` asks for verify-full settles over TLS, and the
/// audit reads the same ledger through the same URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_settles_over_verified_tls() {
    let Some((admin, ca)) = tls_cluster() else {
        return;
    };
    let pg = Arc::new(TestDb::create(&admin).await);
    let url = format!("{}?sslmode=verify-full&sslrootcert={ca}", pg.url);
    let db = DbLocation::parse(&url).expect("a valid --db");
    let pki = common::pki();
    let options = server_options(&pki, db.clone(), ServerLimits::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let server = common::start_server_at(pki.clone(), db, dir, Some(pg), options).await;
    let (alice, bob) = (person(&pki, "alice"), person(&pki, "bob"));
    let (alice_l, bob_l) = (
        common::link(&alice, &server).await,
        common::link(&bob, &server).await,
    );
    for l in [&alice_l, &bob_l] {
        let _: Registered = l.call(&ServerRequest::Register {}).await.expect("register");
    }
    let payment = common::signed_payment(&alice, "bob", 7, "over TLS");
    let _: micropay::wire::Settled = alice_l
        .call(&ServerRequest::Settle {
            payment: micropay::wire::PaymentJson::from(&payment),
        })
        .await
        .expect("settles");
    drop((alice_l, bob_l));
    let report = common::shutdown_and_audit(server).await;
    assert_eq!(report.payments, 1);
}

/// `--db` refuses TLS parameters it cannot honour before anything starts.
#[test]
fn unusable_tls_parameters_are_refused_by_db_parsing() {
    for url in [
        "postgres://u:secret@127.0.0.1/db?sslmode=verify-full",
        "postgres://u:secret@127.0.0.1/db?sslmode=sometimes",
    ] {
        let e = DbLocation::parse(url).expect_err(url);
        let text = e.to_string();
        assert!(
            !text.contains("secret"),
            "the password is never shown: {text}"
        );
    }
}
