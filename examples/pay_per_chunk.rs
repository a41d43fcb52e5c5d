//! Pay per chunk of a file being sent, over a payment channel.
//!
//! ```sh
//! cargo run --release --example pay_per_chunk [FILE]
//! ```
//!
//! Everything runs in this one process so that the example needs nothing
//! set up: a CA with certificates for the server, alice and bob (in
//! memory, made with the library's rcgen-based `certs` module); a server
//! on a fresh SQLite ledger in a temporary directory; bob online with
//! `serve`, taking payment channels; and alice, who opens one channel to
//! bob (one signature, one hold at the server) and then, for every 4 KiB
//! chunk of FILE (default: 1 MiB of zeros; at most 10 000 chunks, what
//! alice's grant holds), pays one link worth 1 minor unit on the same
//! connection with [`Channel::pay`] before sending the chunk. Bob closes the
//! channel; the balances show exactly what moved.

use std::io::Read;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use micropay::certs::{Ca, CertifiedPem, KeyType, Validity};
use micropay::core::limits::{
    INITIAL_BALANCE_DEFAULT, REFUSALS_PER_WINDOW_DEFAULT, VERIFY_BATCH_MAX_DEFAULT,
};
use micropay::core::name::Name;
use micropay::ledger::{DbLocation, LedgerConfig};
use micropay::net::link::Link;
use micropay::net::tls::{self, Material};
use micropay::person::channel_payee::PayeeChannels;
use micropay::person::channel_payer::{Channel, ChannelTerms};
use micropay::person::channel_serve::close_due;
use micropay::person::{self, Person, ServeEvent, ServeOptions};
use micropay::server::{self, PresenceOptions, ServerOptions};
use micropay::wire::{Balance, Registered, ServerRequest};

/// What alice pays for: chunks of this many bytes.
const CHUNK_BYTES: usize = 4096;

#[tokio::main]
async fn main() -> Result<()> {
    let file = std::env::args().nth(1);
    let work = tempfile::tempdir().context("a temporary directory")?;
    let validity = Validity::days_from_now(1);
    let ca = Ca::new("pay_per_chunk example CA", KeyType::Ed25519, validity)?;
    let server = start_server(&ca, work.path()).await?;
    let addr = server.addr.to_string();
    let alice = person(&ca, "alice")?;
    let bob = Arc::new(person(&ca, "bob")?);
    let alice_link = register(&alice, &addr).await?;
    let bob_link = register(&bob, &addr).await?;

    // bob goes online, keeping the channels offered to him in a directory.
    let bob_dir = work.path().join("bob-channels");
    let (stop_bob, bob_stopped) = tokio::sync::oneshot::channel::<()>();
    let (events_tx, mut events) = tokio::sync::mpsc::channel(64);
    let options = ServeOptions {
        listen: "127.0.0.1:0".parse()?,
        advertise: None,
        server: addr.clone(),
        limits: Default::default(),
        reconnect: person::Reconnect::default(),
        channels_dir: Some(bob_dir.clone()),
        log_state: None,
    };
    let serving = tokio::spawn(person::serve(bob.clone(), options, events_tx, async {
        let _ = bob_stopped.await;
    }));
    match events.recv().await {
        Some(ServeEvent::Online { .. }) => {}
        other => bail!("bob did not come online: {other:?}"),
    }
    tokio::spawn(async move { while events.recv().await.is_some() {} });

    // alice opens a channel with one link per chunk of the file and pays
    // for each chunk as she reads it, before sending it.
    let (mut source, bytes) = open_source(file.as_deref())?;
    let chunks = bytes.div_ceil(CHUNK_BYTES as u64).max(1);
    if chunks > INITIAL_BALANCE_DEFAULT {
        bail!("the file has {chunks} chunks of {CHUNK_BYTES} bytes; alice can pay for {INITIAL_BALANCE_DEFAULT}");
    }
    let terms = ChannelTerms {
        payee: bob.name.clone(),
        links: chunks,
        value_minor: 1,
        expires_at_s: micropay::system::clock::now_s() + 600,
    };
    let opened_at = Instant::now();
    let alice_dir = work.path().join("alice-channels");
    let mut channel = Channel::open(&alice, &alice_link, terms, &alice_dir).await?;
    println!(
        "alice opened channel {} to bob: {} links of 1 held ({} ms)",
        channel.id(),
        channel.links(),
        opened_at.elapsed().as_millis()
    );
    let started = Instant::now();
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let mut sent = 0u64;
    while channel.paid() < channel.links() {
        let n = fill(&mut *source, &mut chunk)?;
        if n == 0 {
            break;
        }
        // One link pays for this chunk; bob has it on disk when this
        // returns. Here alice would send `chunk[..n]` to bob.
        channel.pay(1).await?;
        sent += n as u64;
    }
    println!(
        "alice paid for {} chunks ({sent} bytes) one link each in {} ms",
        channel.paid(),
        started.elapsed().as_millis()
    );

    // bob stops serving and closes the channel with the last link he holds.
    let _ = stop_bob.send(());
    serving.await??;
    let held = Arc::new(std::sync::Mutex::new(PayeeChannels::open(&bob_dir)?));
    let closed = close_due(&held, &bob_link, u64::MAX).await?;
    println!("bob closed {closed} channel");
    for (who, link) in [("alice", &alice_link), ("bob", &bob_link)] {
        let b: Balance = link.call(&ServerRequest::Balance {}).await?;
        println!("{who}: balance {} (held {})", b.balance, b.held);
    }
    server.shutdown().await?;
    Ok(())
}

/// Starts a server for `localhost`/127.0.0.1 on a fresh SQLite ledger in
/// `dir`.
async fn start_server(ca: &Ca, dir: &std::path::Path) -> Result<server::RunningServer> {
    let pem = ca.issue_server(
        &["localhost".to_owned()],
        &[IpAddr::from([127, 0, 0, 1])],
        KeyType::Ed25519,
        Validity::days_from_now(1),
    )?;
    let material = material(ca, &pem)?;
    let options = ServerOptions {
        tls: tls::server_config(&material)?,
        signing_key: material.signing_key()?,
        ledger: LedgerConfig {
            location: DbLocation::Sqlite(dir.join("ledger.db")),
            initial_balance: INITIAL_BALANCE_DEFAULT,
        },
        limits: Default::default(),
        presence: PresenceOptions::default(),
        refusals_per_minute: REFUSALS_PER_WINDOW_DEFAULT,
        verify_batch_max: VERIFY_BATCH_MAX_DEFAULT,
        crl: None,
    };
    Ok(server::spawn("127.0.0.1:0".parse()?, options).await?)
}

fn material(ca: &Ca, pem: &CertifiedPem) -> Result<Material> {
    Ok(Material::from_pem(
        &ca.pem.cert_pem,
        &pem.cert_pem,
        &pem.key_pem,
    )?)
}

fn person(ca: &Ca, name: &str) -> Result<Person> {
    let pem = ca.issue_person(
        &Name::parse(name)?,
        KeyType::Ed25519,
        Validity::days_from_now(1),
    )?;
    Ok(Person::from_material(material(ca, &pem)?)?)
}

async fn register(who: &Person, addr: &str) -> Result<Link> {
    let link = who.connect_server(addr).await?;
    let _: Registered = link.call(&ServerRequest::Register {}).await?;
    Ok(link)
}

/// FILE to read (or 1 MiB of zeros) and its size in bytes. Reading is
/// plain blocking I/O: one small read per payment does not matter here.
fn open_source(file: Option<&str>) -> Result<(Box<dyn Read>, u64)> {
    let Some(path) = file else {
        let bytes = 1u64 << 20;
        return Ok((Box::new(std::io::repeat(0).take(bytes)), bytes));
    };
    let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    let bytes = f
        .metadata()
        .with_context(|| format!("reading {path}"))?
        .len();
    Ok((Box::new(f), bytes))
}

/// Reads up to a whole chunk; 0 at the end of the source.
fn fill(source: &mut dyn Read, chunk: &mut [u8]) -> Result<usize> {
    let mut filled = 0;
    while filled < chunk.len() {
        let n = source
            .read(&mut chunk[filled..])
            .context("reading the file")?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}
