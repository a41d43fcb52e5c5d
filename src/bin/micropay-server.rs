//! micropay-server: accounts, presence, signed settlement, receipts and a
//! durable ledger, over mutual TLS 1.3. `micropay-server audit` checks a
//! ledger; `micropay-server backup` copies an SQLite ledger while the
//! server runs; `micropay-server migrate` moves an SQLite ledger into an
//! empty PostgreSQL database; `micropay-server rebind` binds an account to
//! a new key. The ledger is an SQLite file or, shared by several servers, a
//! PostgreSQL database (`--db postgres://...`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{ArgAction, Parser, Subcommand};
use micropay::core::keys::SigningKey;
use micropay::core::limits::*;
use micropay::core::name::Name;
use micropay::core::rotation::KeyChange;
use micropay::ledger::{
    audit_at_with_keys, DbLocation, Ledger, LedgerConfig, LogConfig, NoCommitObserver,
};
use micropay::net::revocation::Crl;
use micropay::net::tls::{self, Material};
use micropay::server::{random_server_id, PresenceOptions, ServerLimits, ServerOptions};

/// The micropay server. Every limit is a flag.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "The micropay server: accounts, presence and signed, durable settlement over mutual TLS 1.3"
)]
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
    /// A certificate revocation list (PEM, signed by the CA;
    /// `micropay-certs --revoke NAME` writes certs/crl.pem). Revoked
    /// certificates fail the handshake and are refused at every request
    /// (certificate_revoked). Reloaded on SIGHUP and when the file changes;
    /// a reload that fails keeps the previous list.
    #[arg(long, env = "MICROPAY_CRL")]
    crl: Option<PathBuf>,
    /// How often to look for a new version of the --crl file, ms.
    #[arg(long, default_value_t = CRL_POLL_MS_DEFAULT)]
    crl_poll_ms: u64,
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
    /// The name of this server's log (docs/PROTOCOL.md §11): servers that
    /// share a PostgreSQL ledger and a key need one each, the same across
    /// restarts. Letters, digits, `.`, `_`, `-`; default: the
    /// --server-id, when one is given on PostgreSQL.
    #[arg(long, env = "MICROPAY_LOG_NAME")]
    log_name: Option<String>,
    /// The certificate (PEM) of another server sharing the PostgreSQL
    /// ledger with its own key (repeat for each): its log is accepted
    /// beside this server's. A log signed by no known key stops the start.
    #[arg(long = "log-peer-cert", value_name = "FILE")]
    log_peer_certs: Vec<PathBuf>,
    /// How long a person's presence lasts in a shared PostgreSQL ledger
    /// unless this server renews it (every third of it), ms.
    #[arg(long, default_value_t = PRESENCE_LEASE_MS_DEFAULT)]
    presence_lease_ms: u64,
    /// Balance granted to each new account, minor units.
    #[arg(long, default_value_t = INITIAL_BALANCE_DEFAULT)]
    initial_balance: u64,
    /// Refused payments one payer may have decided per minute; beyond it
    /// the payer's payments get `busy` (nothing decided, nothing stored)
    /// until the minute ends. Bounds what one account can make the ledger
    /// store.
    #[arg(long, default_value_t = REFUSALS_PER_WINDOW_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..))]
    refusals_per_minute: u32,
    /// Most concurrent connections; more are closed at once.
    #[arg(long, default_value_t = CONNECTIONS_MAX_DEFAULT)]
    connections_max: usize,
    /// Most payment signatures checked in one batch; 1 checks each
    /// payment's signature alone, on its connection's task.
    #[arg(long, default_value_t = VERIFY_BATCH_MAX_DEFAULT)]
    verify_batch_max: usize,
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
    /// Once the ledger is open and the port bound, write the bound
    /// address to this file (useful with `--listen 127.0.0.1:0` in
    /// scripts and tests).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Serve Prometheus metrics over plain HTTP at
    /// `http://ADDRESS/metrics` (e.g. 127.0.0.1:9464); off by default.
    /// Only a loopback address unless --metrics-allow-non-loopback.
    #[arg(long, env = "MICROPAY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Let --metrics-listen use an address other than loopback (the
    /// metrics are plain HTTP without authentication; they name no one).
    #[arg(long, requires = "metrics_listen")]
    metrics_allow_non_loopback: bool,
    /// Once the metrics listener is bound, write its address to this file
    /// (useful with `--metrics-listen 127.0.0.1:0`).
    #[arg(long, requires = "metrics_listen")]
    metrics_ready_file: Option<PathBuf>,
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
        /// Server certificates (PEM) whose keys must have signed the
        /// log's checkpoints; without one, checkpoints are checked
        /// against the stored payments but their signatures are not.
        #[arg(long = "server-cert", value_name = "FILE")]
        server_certs: Vec<PathBuf>,
    },
    /// Copy an SQLite ledger to a new owner-only file while the server
    /// runs (SQLite's online backup API), then audit the copy.
    Backup {
        /// The SQLite ledger to copy.
        #[arg(long, env = "MICROPAY_DB", default_value = "micropay.db")]
        db: DbLocation,
        /// The backup file to write.
        #[arg(long)]
        to: PathBuf,
        /// Replace the --to file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Copy a whole SQLite ledger into an empty PostgreSQL database,
    /// re-verifying every row, in one transaction; then audit the target.
    /// Stop the server first.
    Migrate {
        /// The SQLite ledger to copy.
        #[arg(long)]
        from: PathBuf,
        /// The empty PostgreSQL database (`postgres://...`).
        #[arg(long)]
        to: DbLocation,
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
        /// The server's private key (PEM, PKCS#8): the change is a record
        /// of the server's log, signed into a checkpoint with this key.
        #[arg(long, env = "MICROPAY_SERVER_KEY", default_value = "certs/server.key")]
        key: PathBuf,
        /// The server's log name, as the server has it (`--log-name`).
        #[arg(long, env = "MICROPAY_LOG_NAME")]
        log_name: Option<String>,
        /// The other servers' certificates, as the server has them
        /// (`--log-peer-cert`).
        #[arg(long = "log-peer-cert", value_name = "FILE")]
        log_peer_certs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    micropay::system::logging::init(args.verbose as i8 - args.quiet as i8, "info");
    let result = match &args.command {
        Some(Command::Audit { db, server_certs }) => run_audit_with(db, server_certs),
        Some(Command::Backup { db, to, force }) => run_backup(db, to, *force),
        Some(Command::Migrate { from, to }) => run_migrate(from, to),
        Some(Command::Rebind {
            name,
            cert,
            ca,
            db,
            key,
            log_name,
            log_peer_certs,
        }) => run_rebind(
            name,
            (cert, ca),
            db,
            (key, log_name.as_deref(), log_peer_certs),
        ),
        None => serve(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("micropay-server: {e:#}");
            // A failure tagged at the edge keeps its exit code; anything
            // else happened while running.
            let code = e.downcast_ref::<Exit>().map_or(EXIT_FAILED, |x| x.code);
            ExitCode::from(code)
        }
    }
}

/// Failed while running, or the audit found violations.
const EXIT_FAILED: u8 = 1;
/// The flags or the files they name are unusable; nothing was started.
const EXIT_CONFIG: u8 = 2;
/// The listen address cannot be bound (in use, or not ours).
const EXIT_LISTEN: u8 = 3;

/// An exit code attached to an error as context, so the code is chosen
/// where the failure is understood rather than by matching its text.
#[derive(Debug)]
struct Exit {
    code: u8,
    what: &'static str,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.what)
    }
}

fn run_backup(db: &DbLocation, to: &std::path::Path, force: bool) -> Result<ExitCode> {
    let Some(path) = db.sqlite_path() else {
        anyhow::bail!("backup copies SQLite ledgers; back up PostgreSQL with pg_dump or a base backup (docs/DEPLOY.md)");
    };
    anyhow::ensure!(path.exists(), "no ledger at {}", path.display());
    micropay::ledger::sqlite::backup(path, to, force)
        .with_context(|| format!("backing up {} to {}", path.display(), to.display()))?;
    println!("backup      {} -> {}", path.display(), to.display());
    run_audit(&DbLocation::Sqlite(to.to_owned()))
}

fn run_migrate(from: &std::path::Path, to: &DbLocation) -> Result<ExitCode> {
    let DbLocation::Postgres(url) = to else {
        anyhow::bail!("--to must be a postgres:// URL");
    };
    anyhow::ensure!(from.exists(), "no ledger at {}", from.display());
    let report = micropay::ledger::migrate::migrate(from, url)
        .with_context(|| format!("migrating {} to {to}", from.display()))?;
    println!("migrated    {} -> {to}", from.display());
    println!("accounts    {}", report.target.accounts);
    println!("payments    {}", report.target.payments);
    println!("refusals    {}", report.target.rejections);
    println!("granted     {}", report.target.total_granted);
    println!("balances    {}", report.target.total_balances);
    println!("channels    {}", report.target.channels);
    println!("held        {}", report.target.total_held);
    println!("audit: OK (source verified while copying; target audited after the commit)");
    Ok(ExitCode::SUCCESS)
}

fn run_audit(db: &DbLocation) -> Result<ExitCode> {
    run_audit_with(db, &[])
}

/// The keys of the server certificates in `files` (PEM).
fn server_keys(files: &[PathBuf]) -> Result<Vec<micropay::core::keys::VerifyingKey>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut keys = Vec::new();
    for file in files {
        let der = CertificateDer::from_pem_file(file)
            .with_context(|| format!("reading the certificate {}", file.display()))?;
        let key = micropay::net::identity::public_key_of_cert(&der)
            .with_context(|| format!("the key of {}", file.display()))?;
        keys.push(key);
    }
    Ok(keys)
}

fn run_audit_with(db: &DbLocation, server_certs: &[PathBuf]) -> Result<ExitCode> {
    if let Some(path) = db.sqlite_path() {
        anyhow::ensure!(path.exists(), "no ledger at {}", path.display());
    }
    let keys = server_keys(server_certs)?;
    // The location prints without any password.
    let report = audit_at_with_keys(db, &keys).with_context(|| format!("auditing {db}"))?;
    println!("ledger      {db}");
    println!("accounts    {}", report.accounts);
    println!("payments    {}", report.payments);
    println!("refusals    {}", report.rejections);
    println!("granted     {}", report.total_granted);
    println!("balances    {}", report.total_balances);
    println!("channels    {}", report.channels);
    println!("held        {}", report.total_held);
    println!(
        "checkpoints {} ({} signatures checked)",
        report.checkpoints, report.checkpoint_signatures
    );
    if keys.is_empty() && report.checkpoints > 0 {
        // Without the servers' keys a log made up in the database (leaves
        // and a checkpoint signed by anyone) cannot be told from a real one.
        println!(
            "WARNING     checkpoint signatures not checked: give --server-cert FILE for each \
             server key, or a made-up log would pass"
        );
    }
    println!(
        "log leaves  {} in {} log(s)",
        report.log_leaves, report.logs
    );
    let mut violations = report.violations.clone();
    if report.unlogged_records > 0 {
        // A server logs every change it makes: rows without any log were
        // written around every server, or the log was deleted.
        violations.push(format!(
            "the ledger has no log, yet its rows call for {} records: written without a \
             server, or its log was deleted (a server opening it would log them anew)",
            report.unlogged_records
        ));
    }
    if violations.is_empty() {
        println!(
            "audit: OK (every signature verifies; balances equal grants plus payments; \
             every row is in a log that reaches its checkpoints)"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        for v in &violations {
            println!("VIOLATION   {v}");
        }
        println!("audit: FAILED with {} violation(s)", violations.len());
        Ok(ExitCode::from(1))
    }
}

fn run_rebind(
    name: &str,
    (cert, ca): (&Path, &Path),
    db: &DbLocation,
    (key, log_name, peers): (&Path, Option<&str>, &[PathBuf]),
) -> Result<ExitCode> {
    let name = Name::parse(name).with_context(|| format!("{name:?} is not a valid name"))?;
    if let Some(log_name) = log_name {
        check_log_name(log_name)?;
    }
    let mut log = server_log(key, log_name)?;
    log.peers = server_keys(peers)?;
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
        let config = LedgerConfig {
            location: db.clone(),
            initial_balance: INITIAL_BALANCE_DEFAULT,
        };
        let ledger = Ledger::open_logged(&config, Arc::new(NoCommitObserver), Some(log))?;
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

/// The log a tool that writes the ledger appends to: the server's own,
/// named by its key (`key`, PEM PKCS#8) and log name.
fn server_log(key: &Path, log_name: Option<&str>) -> Result<LogConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    let der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the server's key {} (--key)", key.display()))?;
    let key = SigningKey::from_pkcs8_der(der.secret_der())
        .with_context(|| format!("the server's key {}", key.display()))?;
    Ok(LogConfig {
        origin: micropay::server::log_origin(key.verifying_key(), log_name),
        key: Arc::new(key),
        peers: Vec::new(),
    })
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
        args.verify_batch_max >= 1,
        "--verify-batch-max must be at least 1"
    );
    anyhow::ensure!(
        args.in_flight_max >= 1,
        "--in-flight-max must be at least 1"
    );
    anyhow::ensure!(
        args.frame_bytes_max >= 256,
        "--frame-bytes-max must be at least 256"
    );
    anyhow::ensure!(args.crl_poll_ms >= 1, "--crl-poll-ms must be at least 1");
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

/// The log name: `--log-name`, or on PostgreSQL the `--server-id` given.
fn log_name(args: &Args) -> Result<Option<String>> {
    let name = match (&args.log_name, &args.db) {
        (Some(name), _) => Some(name.clone()),
        (None, DbLocation::Postgres(_)) => args.server_id.clone(),
        (None, DbLocation::Sqlite(_)) => None,
    };
    if let Some(name) = &name {
        check_log_name(name)?;
    }
    Ok(name)
}

/// A log name becomes part of the checkpoint's origin and key name, which
/// must not hold spaces or `+` (C2SP signed note).
fn check_log_name(name: &str) -> Result<()> {
    anyhow::ensure!(
        (1..=LOG_NAME_BYTES_MAX).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "the log name {:?} must be 1 to {LOG_NAME_BYTES_MAX} letters, digits, '.', '_' or '-' \
         (from --log-name, or --server-id on PostgreSQL)",
        micropay::system::terminal::escape(name)
    );
    Ok(())
}

fn serve(args: &Args) -> Result<ExitCode> {
    let config = |what| Exit {
        code: EXIT_CONFIG,
        what,
    };
    let server_id = check_args(args).context(config("bad flags"))?;
    let material = Material::from_files(&args.ca, &args.cert, &args.key)
        .context("make them with scripts/gen-certs.sh")
        .context(config("loading the server's certificates"))?;
    tracing::info!(
        db = %args.db, cert = %args.cert.display(), key = %args.key.display(),
        ca = %args.ca.display(), crl = ?args.crl.as_ref().map(|p| p.display().to_string()),
        server_id = %server_id, "starting"
    );
    let crl = match &args.crl {
        Some(path) => Some(
            Crl::load(path, &material.roots, args.crl_poll_ms)
                .context(config("loading the certificate revocation list (--crl)"))?,
        ),
        None => None,
    };
    let options = ServerOptions {
        tls: tls::server_config_with_crl(&material, crl.as_deref())
            .context(config("the TLS configuration"))?,
        crl,
        signing_key: material.signing_key().context(config("the server's key"))?,
        ledger: LedgerConfig {
            location: args.db.clone(),
            initial_balance: args.initial_balance,
        },
        presence: PresenceOptions {
            server_id,
            lease_ms: args.presence_lease_ms,
            log_name: log_name(args).context(config("bad flags"))?,
            log_peers: server_keys(&args.log_peer_certs).context(config("--log-peer-cert"))?,
        },
        refusals_per_minute: args.refusals_per_minute,
        verify_batch_max: args.verify_batch_max,
        limits: limits(args),
    };
    run_server(args, options)
}

/// Binds the listeners and runs the server until a signal stops it.
fn run_server(args: &Args, options: ServerOptions) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let metrics_listener = bind_metrics(args).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))
            .context(Exit {
                code: EXIT_LISTEN,
                what: "cannot listen",
            })?;
        let addr = listener.local_addr().context("reading the bound address")?;
        // The ready file is written once the ledger is open (and locked),
        // not merely once the port is bound.
        let ready = || match &args.ready_file {
            Some(path) => {
                write_ready_file(path, addr).map_err(|e| std::io::Error::other(format!("{e:#}")))
            }
            None => Ok(()),
        };
        micropay::server::run_with(
            listener,
            metrics_listener,
            options,
            micropay::system::signal::shutdown_signal(),
            ready,
        )
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The connection limits the flags ask for.
fn limits(args: &Args) -> ServerLimits {
    ServerLimits {
        connections_max: args.connections_max,
        in_flight_max: args.in_flight_max,
        handshake_timeout_ms: args.handshake_timeout_ms,
        idle_timeout_ms: args.idle_timeout_ms,
        frame_bytes_max: args.frame_bytes_max,
    }
}

/// Binds the metrics listener if `--metrics-listen` asks for one; a
/// non-loopback address without `--metrics-allow-non-loopback`, or one
/// that cannot be bound, stops the start.
async fn bind_metrics(args: &Args) -> Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = args.metrics_listen else {
        return Ok(None);
    };
    let listener = micropay::metrics::http::bind(addr, args.metrics_allow_non_loopback).await?;
    if let Some(path) = &args.metrics_ready_file {
        let bound = listener
            .local_addr()
            .context("reading the metrics address")?;
        write_ready_file(path, bound)?;
    }
    Ok(Some(listener))
}

/// Writes `addr` to `path`: to a temporary file, then renamed, so a
/// reader never sees half an address.
fn write_ready_file(path: &std::path::Path, addr: SocketAddr) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))
}
