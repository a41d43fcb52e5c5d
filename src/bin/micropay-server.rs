//! micropay-server: accounts, presence, signed settlement, receipts and a
//! durable ledger, over mutual TLS 1.3. `micropay-server audit` checks a
//! ledger; `micropay-server rebind` binds an account to a new key. The
//! ledger is an SQLite file or, shared by several servers, a
//! PostgreSQL database (`--db postgres://...`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{ArgAction, Parser, Subcommand};
use micropay::core::limits::*;
use micropay::core::name::Name;
use micropay::core::rotation::KeyChange;
use micropay::ledger::{audit_at, DbLocation, Ledger, LedgerConfig};
use micropay::net::tls::{self, Material};
use micropay::server::{random_server_id, PresenceOptions, ServerLimits, ServerOptions};

/// The micropay server. Every limit is a flag.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The server's certificate (PEM).
    #[arg(long, env = "MICROPAY_SERVER_CERT", default_value = "certs/server.pem")]
    cert: PathBuf,
    /// The server's private key (PEM, PKCS#8); it also signs receipts.
    #[arg(long, env = "MICROPAY_SERVER_KEY", default_value = "certs/server.key")]
    key: PathBuf,
    /// The CA that issues client certificates (PEM).
    #[arg(long, env = "MICROPAY_CA", default_value = "certs/ca.pem")]
    ca: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "MICROPAY_LISTEN", default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// The ledger: an SQLite file, or a PostgreSQL database
    /// (`postgres://USER:PASSWORD@HOST:PORT/DB`) that several servers
    /// share.
    #[arg(long, env = "MICROPAY_DB", default_value = "micropay.db")]
    db: DbLocation,
    /// This server's name among the servers sharing a PostgreSQL ledger
    /// (unique among them); default: a random id.
    #[arg(long, env = "MICROPAY_SERVER_ID")]
    server_id: Option<String>,
    /// How long a person's presence lasts in a shared PostgreSQL ledger
    /// unless this server renews it (every third of it), ms.
    #[arg(long, default_value_t = PRESENCE_LEASE_MS_DEFAULT)]
    presence_lease_ms: u64,
    /// Balance granted to each new account, minor units.
    #[arg(long, default_value_t = INITIAL_BALANCE_DEFAULT)]
    initial_balance: u64,
    /// Most concurrent connections; more are closed at once.
    #[arg(long, default_value_t = CONNECTIONS_MAX_DEFAULT)]
    connections_max: usize,
    /// Most requests in flight on one connection.
    #[arg(long, default_value_t = IN_FLIGHT_PER_CONNECTION_DEFAULT)]
    in_flight_max: usize,
    /// Time allowed for a TLS handshake, ms.
    #[arg(long, default_value_t = HANDSHAKE_TIMEOUT_MS_DEFAULT)]
    handshake_timeout_ms: u64,
    /// Time a connection may stay silent, take to send one line, or take
    /// to accept a reply, ms.
    #[arg(long, default_value_t = IDLE_TIMEOUT_MS_DEFAULT)]
    idle_timeout_ms: u64,
    /// Longest request line, bytes.
    #[arg(long, default_value_t = FRAME_BYTES_MAX)]
    frame_bytes_max: usize,
    /// Once listening, write the bound address to this file (useful with
    /// `--listen 127.0.0.1:0` in scripts and tests).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// More logging (-v debug, -vv trace).
    #[arg(short, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Less logging.
    #[arg(short, action = ArgAction::Count, global = true)]
    quiet: u8,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a ledger: every signature verifies, balances sum to grants.
    Audit {
        /// The ledger: an SQLite file or a PostgreSQL URL.
        #[arg(long, env = "MICROPAY_DB", default_value = "micropay.db")]
        db: DbLocation,
    },
    /// Bind NAME's account to the key of a new CA-issued certificate,
    /// without the old key (for a person whose key was stolen and lost).
    /// Recorded in the key history as `rebind`. With SQLite, stop the
    /// server first (the ledger's lock refuses otherwise).
    Rebind {
        /// The account.
        name: String,
        /// The new certificate (PEM), issued by the CA to NAME.
        #[arg(long)]
        cert: PathBuf,
        /// The CA it must chain to (PEM).
        #[arg(long, env = "MICROPAY_CA", default_value = "certs/ca.pem")]
        ca: PathBuf,
        /// The ledger: an SQLite file or a PostgreSQL URL.
        #[arg(long, env = "MICROPAY_DB", default_value = "micropay.db")]
        db: DbLocation,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    micropay::system::logging::init(args.verbose as i8 - args.quiet as i8, "info");
    let result = match &args.command {
        Some(Command::Audit { db }) => run_audit(db),
        Some(Command::Rebind { name, cert, ca, db }) => run_rebind(name, cert, ca, db),
        None => serve(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("micropay-server: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_audit(db: &DbLocation) -> Result<ExitCode> {
    if let Some(path) = db.sqlite_path() {
        anyhow::ensure!(path.exists(), "no ledger at {}", path.display());
    }
    // The location prints without any password.
    let report = audit_at(db).with_context(|| format!("auditing {db}"))?;
    println!("ledger      {db}");
    println!("accounts    {}", report.accounts);
    println!("payments    {}", report.payments);
    println!("refusals    {}", report.rejections);
    println!("granted     {}", report.total_granted);
    println!("balances    {}", report.total_balances);
    if report.violations.is_empty() {
        println!("audit: OK (every signature verifies; balances equal grants plus payments)");
        Ok(ExitCode::SUCCESS)
    } else {
        for v in &report.violations {
            println!("VIOLATION   {v}");
        }
        println!(
            "audit: FAILED with {} violation(s)",
            report.violations.len()
        );
        Ok(ExitCode::from(1))
    }
}

fn run_rebind(name: &str, cert: &Path, ca: &Path, db: &DbLocation) -> Result<ExitCode> {
    let name = Name::parse(name).with_context(|| format!("{name:?} is not a valid name"))?;
    if let Some(path) = db.sqlite_path() {
        anyhow::ensure!(path.exists(), "no ledger at {}", path.display());
    }
    let (identity, der) = tls::check_person_cert(ca, cert)
        .with_context(|| format!("checking {} against {}", cert.display(), ca.display()))?;
    anyhow::ensure!(
        identity.name == name,
        "{} is {}'s certificate, not {name}'s",
        cert.display(),
        identity.name
    );
    let not_after_s = u64::try_from(identity.not_after_s).unwrap_or(0);
    let change = KeyChange::rebind(
        name.clone(),
        identity.key.clone(),
        not_after_s,
        identity.serial.clone(),
        der,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let outcome = runtime.block_on(async {
        let ledger = Ledger::open(&LedgerConfig {
            location: db.clone(),
            initial_balance: INITIAL_BALANCE_DEFAULT,
        })?;
        let outcome = ledger.change_key(change).await;
        ledger.close().await;
        outcome
    });
    let registered = outcome
        .with_context(|| format!("rebinding {name} in {db}"))?
        .map_err(|refusal| anyhow::anyhow!("refused: {refusal}"))?;
    println!(
        "rebound {name} to key {} (certificate serial {}, valid until {} unix s)",
        identity.key.fingerprint(),
        identity.serial_hex(),
        registered.not_after_s
    );
    Ok(ExitCode::SUCCESS)
}

/// Checks the flags' bounds; returns this server's id.
fn check_args(args: &Args) -> Result<String> {
    anyhow::ensure!(
        args.initial_balance <= INITIAL_BALANCE_MAX,
        "--initial-balance may be at most {INITIAL_BALANCE_MAX}"
    );
    anyhow::ensure!(
        args.connections_max >= 1,
        "--connections-max must be at least 1"
    );
    anyhow::ensure!(
        args.in_flight_max >= 1,
        "--in-flight-max must be at least 1"
    );
    anyhow::ensure!(
        args.frame_bytes_max >= 256,
        "--frame-bytes-max must be at least 256"
    );
    anyhow::ensure!(
        args.presence_lease_ms >= PRESENCE_LEASE_MS_MIN,
        "--presence-lease-ms must be at least {PRESENCE_LEASE_MS_MIN}"
    );
    let server_id = args.server_id.clone().unwrap_or_else(random_server_id);
    anyhow::ensure!(
        !server_id.is_empty() && server_id.len() <= 64,
        "--server-id must be 1 to 64 characters"
    );
    Ok(server_id)
}

fn serve(args: &Args) -> Result<ExitCode> {
    let server_id = check_args(args)?;
    let material = Material::from_files(&args.ca, &args.cert, &args.key)
        .context("loading the server's certificates (make them with scripts/gen-certs.sh)")?;
    let options = ServerOptions {
        tls: tls::server_config(&material)?,
        signing_key: material.signing_key()?,
        ledger: LedgerConfig {
            location: args.db.clone(),
            initial_balance: args.initial_balance,
        },
        presence: PresenceOptions {
            server_id,
            lease_ms: args.presence_lease_ms,
        },
        limits: ServerLimits {
            connections_max: args.connections_max,
            in_flight_max: args.in_flight_max,
            handshake_timeout_ms: args.handshake_timeout_ms,
            idle_timeout_ms: args.idle_timeout_ms,
            frame_bytes_max: args.frame_bytes_max,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        if let Some(path) = &args.ready_file {
            let addr = listener.local_addr().context("reading the bound address")?;
            // Write then rename, so a reader never sees half an address.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, format!("{addr}\n"))
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("writing {}", path.display()))?;
        }
        micropay::server::run(
            listener,
            options,
            micropay::system::signal::shutdown_signal(),
        )
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}
