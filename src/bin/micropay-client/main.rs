//! micropay-client: one person's command line. Register, go online and
//! take payments, see who is online, pay them directly, check balance,
//! history and the status of a payment.
//!
//! Exit codes: 0 success; 1 refused (by the server, or by the payee
//! before it held the payment); 2 usage error (including missing
//! certificate files); 3 could not connect, could not listen (`serve`),
//! or timed out, and nothing was paid; 4 outcome unknown: the payee holds the signed payment and the
//! server has no outcome for it yet, so it may still settle until it
//! expires (the payment id and expiry are printed: ask `status ID`, or
//! retry the identical payment with `send --id ID --expires-at E`);
//! 5 `verify-log` (or `send`, after its payment settled) found that the
//! server's log history changed (rewritten, rolled back or forked) since
//! this client last saw it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

mod channel;
mod history;
mod queries;
mod send;
mod serve;

use clap::{ArgAction, Parser, Subcommand};
use micropay::core::limits::{
    CRL_POLL_MS_DEFAULT, SERVE_KEEPALIVE_MS_DEFAULT, SERVE_KEEPALIVE_MS_MIN,
};
use micropay::core::name::Name;
use micropay::net::link::{check_host_port, CallError};
use micropay::person::{PeerError, Person};
use micropay::system::terminal::escape;
use serde_json::json;

/// One person's micropay command line.
#[derive(Parser, Debug)]
#[command(
    version,
    about = "One person's micropay command line: register, go online, see who is online, pay directly"
)]
struct Args {
    /// Who I am: uses DIR/NAME.pem, DIR/NAME.key and DIR/ca.pem.
    #[arg(long = "as", env = "MICROPAY_AS", global = true, value_name = "NAME")]
    as_name: Option<String>,
    /// Certificate directory.
    #[arg(long, env = "MICROPAY_CERTS", default_value = "certs", global = true)]
    certs: PathBuf,
    /// The server, HOST:PORT.
    #[arg(
        long,
        env = "MICROPAY_SERVER",
        default_value = "127.0.0.1:7443",
        global = true
    )]
    server: String,
    /// CA certificate (default DIR/ca.pem).
    #[arg(long, env = "MICROPAY_CA", global = true)]
    ca: Option<PathBuf>,
    /// My certificate (default DIR/NAME.pem).
    #[arg(long, env = "MICROPAY_CERT", global = true)]
    cert: Option<PathBuf>,
    /// My private key (default DIR/NAME.key).
    #[arg(long, env = "MICROPAY_KEY", global = true)]
    key: Option<PathBuf>,
    /// Print exactly one JSON object per command (per event for serve).
    /// MICROPAY_JSON takes 1/0, true/false, yes/no, on/off.
    #[arg(long, env = "MICROPAY_JSON", global = true, action = ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    json: bool,
    /// More logging.
    #[arg(short, action = ArgAction::Count, global = true)]
    verbose: u8,
    /// Less logging.
    #[arg(short, action = ArgAction::Count, global = true)]
    quiet: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum ChannelAction {
    /// Open a channel to PAYEE (who must be online with
    /// `serve --channels-dir`): holds LINKS × VALUE of my balance.
    Open {
        /// Who to pay.
        payee: String,
        /// Number of links (units), 1 to 1 000 000.
        #[arg(long)]
        links: u64,
        /// Minor units per link.
        #[arg(long)]
        value: u64,
        /// Seconds until the channel expires.
        #[arg(long, default_value_t = micropay::core::limits::CHANNEL_LIFETIME_DEFAULT_S)]
        expires_in: u64,
    },
    /// Pay UNITS more links of a channel I opened, in REPEAT messages.
    Pay {
        /// The channel id.
        channel_id: String,
        /// Links per message.
        #[arg(long, default_value_t = 1)]
        units: u64,
        /// Messages (a streaming demo: each pays --units).
        #[arg(long, default_value_t = 1)]
        repeat: u64,
    },
    /// Payee side: close every channel I hold paid links of.
    Close,
    /// The channels in DIR: those I pay from and those I am paid through,
    /// with the links paid of each (no server needed).
    List,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create my account.
    Register,
    /// Go online and accept payments until Ctrl-C.
    Serve {
        /// Where to listen for payers.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// HOST:PORT to announce (default: the address the server sees
        /// and the port I listen on).
        #[arg(long)]
        advertise: Option<String>,
        /// Interval of the keep-alive on the server connection, ms (keep
        /// it well below the server's --idle-timeout-ms).
        #[arg(long, default_value_t = SERVE_KEEPALIVE_MS_DEFAULT,
              value_parser = clap::value_parser!(u64).range(SERVE_KEEPALIVE_MS_MIN..))]
        keepalive_ms: u64,
        /// A CRL (PEM, signed by the CA; `micropay-certs --revoke` writes
        /// certs/crl.pem): payers whose certificate it lists are refused
        /// at the handshake and at every payment. Reloaded on SIGHUP and
        /// when the file changes.
        #[arg(long, env = "MICROPAY_CRL")]
        crl: Option<PathBuf>,
        /// How often to look for a new version of the --crl file, ms.
        #[arg(long, default_value_t = CRL_POLL_MS_DEFAULT,
              value_parser = clap::value_parser!(u64).range(1..))]
        crl_poll_ms: u64,
        /// Serve Prometheus metrics (payments received, peer connections)
        /// over plain HTTP at http://ADDRESS/metrics; off by default.
        /// Only a loopback address unless --metrics-allow-non-loopback.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// Let --metrics-listen use an address other than loopback.
        #[arg(long, requires = "metrics_listen")]
        metrics_allow_non_loopback: bool,
        /// Take payment channels: keep the channels offered to me and the
        /// latest link of each in DIR (one file per channel, written
        /// durably before each acknowledgement), and close each channel
        /// with the server before it expires.
        #[arg(long)]
        channels_dir: Option<PathBuf>,
    },
    /// Payment channels: one signature, many small payments.
    Channel {
        /// Where channel state lives (payer: DIR/ID.payer, mode 0600;
        /// payee: the directory `serve --channels-dir` uses).
        #[arg(long, default_value = "channels")]
        dir: PathBuf,
        #[command(subcommand)]
        action: ChannelAction,
    },
    /// My balance and who is online, with addresses.
    List,
    /// Pay a peer directly; prints the server's receipt.
    Send {
        /// Who to pay.
        payee: String,
        /// Amount in minor units (a whole number, at least 1).
        // Hyphen values reach our own check, so `-5` is refused with the
        // amount rule rather than clap's hint to write `-- -5`.
        #[arg(allow_hyphen_values = true)]
        amount: String,
        /// A note for the payee (at most 140 bytes).
        #[arg(long, default_value = "")]
        memo: String,
        /// Seconds the whole payment may take (connecting, finding the
        /// payee, the receipt); at least 1.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// Retry an earlier payment whose outcome was unknown: its id
        /// (with --expires-at, exactly as printed), so it settles at most
        /// once.
        #[arg(long, requires = "expires_at")]
        id: Option<String>,
        /// The expiry of the payment being retried (unix seconds, as
        /// printed).
        #[arg(long, requires = "id")]
        expires_at: Option<u64>,
    },
    /// My balance.
    Balance,
    /// My payments, newest first: one page as a table, or with --all
    /// every payment as a CSV or JSON-lines statement on stdout.
    History {
        /// How many (with --all: per page fetched; default 20, or the
        /// largest page with --all).
        #[arg(long)]
        limit: Option<u32>,
        /// Show payments before this ledger seq (next page).
        #[arg(long, conflicts_with = "all")]
        before: Option<u64>,
        /// Every payment, streamed page by page, with the running balance.
        #[arg(long, requires = "format")]
        all: bool,
        /// Statement format (with --all).
        #[arg(long, value_enum, requires = "all")]
        format: Option<history::Format>,
        /// Leave out the UTF-8 byte-order mark that starts a CSV statement
        /// (it is there so that spreadsheets read the file as UTF-8).
        #[arg(long)]
        no_bom: bool,
    },
    /// Move my account to a new key, or renew it with a new certificate
    /// for the same key: signs with my current key (--key, or
    /// DIR/NAME.key) and the new one, and connects with the NEW
    /// certificate, so it works after the old certificate expired.
    Rotate {
        /// The new certificate (e.g. DIR/NAME.next.pem from
        /// `micropay-certs --next NAME`).
        #[arg(long)]
        new_cert: PathBuf,
        /// The new certificate's private key (the current key for a
        /// renewal).
        #[arg(long)]
        new_key: PathBuf,
    },
    /// The outcome of a payment I made or received.
    Status {
        /// The payment id (32 hex digits).
        payment_id: String,
    },
    /// Check that the server's log only grew since I last saw it: fetch
    /// its latest signed checkpoint and a consistency proof from the one
    /// remembered in the state file, then remember the new one.
    VerifyLog {
        /// The state file (default DIR/log-state.json, next to the
        /// certificates).
        #[arg(long, env = "MICROPAY_LOG_STATE")]
        state: Option<PathBuf>,
    },
}

/// A failure with its exit code.
struct Failure {
    /// Process exit code.
    code: u8,
    /// Stable machine-readable code: a server/peer error code, or one of
    /// `usage`, `connect_failed`, `timeout`, `connection_closed`,
    /// `wrong_listener`, `outcome_unknown`, `bad_receipt`.
    error_code: String,
    /// What happened, for people.
    message: String,
    /// The payment concerned, when one was handed over.
    payment_id: Option<String>,
    /// Its expiry, for a retry.
    expires_at_s: Option<u64>,
}

impl Failure {
    fn new(code: u8, error_code: &str, message: impl Into<String>) -> Failure {
        Failure {
            code,
            error_code: error_code.to_owned(),
            message: message.into(),
            payment_id: None,
            expires_at_s: None,
        }
    }

    fn usage(message: impl Into<String>) -> Failure {
        Failure::new(2, "usage", message)
    }

    /// Prints the failure: one JSON object on stdout, or a line on stderr.
    fn report(&self, json_mode: bool) -> ExitCode {
        if json_mode {
            println!(
                "{}",
                json!({"ok": false, "error": {"code": self.error_code, "message": self.message}, "exit_code": self.code,
                       "payment_id": self.payment_id, "expires_at": self.expires_at_s})
            );
        } else if self.code == 1 {
            // Refusals carry text from the server or a peer: escaped.
            let message = escape(&self.message);
            eprintln!("micropay-client: {}: {message}", self.error_code);
        } else {
            eprintln!("micropay-client: {}", escape(&self.message));
        }
        ExitCode::from(self.code)
    }
}

impl From<CallError> for Failure {
    fn from(e: CallError) -> Failure {
        match e {
            CallError::Refused(w) => Failure::new(1, w.code.as_str(), w.message),
            CallError::Connect { .. } | CallError::NotThatPeer { .. } => {
                Failure::new(3, "connect_failed", e.to_string())
            }
            CallError::NotTheServer { .. } => Failure::new(3, "not_the_server", e.to_string()),
            CallError::Timeout(_) => Failure::new(3, "timeout", e.to_string()),
            CallError::Closed => Failure::new(3, "connection_closed", e.to_string()),
        }
    }
}

impl From<PeerError> for Failure {
    fn from(e: PeerError) -> Failure {
        match e {
            PeerError::Call(c) => c.into(),
            PeerError::Tls(_)
            | PeerError::Identity(_)
            | PeerError::Crl(_)
            | PeerError::Statement(_) => Failure::usage(e.to_string()),
            // The address may be fine and merely taken: not a usage error.
            PeerError::Listen { .. } => Failure::new(3, "listen_failed", e.to_string()),
            PeerError::Channels(_) => Failure::new(3, "channels_dir", e.to_string()),
            PeerError::BadReceipt(..) => Failure::new(1, "bad_receipt", e.to_string()),
            PeerError::BadLogProof(..) => Failure::new(1, "bad_log_proof", e.to_string()),
            PeerError::LogHistoryChanged(payment_id, _) => Failure {
                payment_id: Some(payment_id.to_hex()),
                ..Failure::new(5, "log_history_changed", e.to_string())
            },
            PeerError::ServerHistoryChanged(_) => {
                Failure::new(5, "log_history_changed", e.to_string())
            }
            PeerError::WrongListener { .. } => Failure::new(3, "wrong_listener", e.to_string()),
            PeerError::PayeeUnreachable { .. } => Failure::new(3, "connect_failed", e.to_string()),
            PeerError::OutcomeUnknown {
                payment_id,
                expires_at_s,
                ..
            } => Failure {
                payment_id: Some(payment_id.to_hex()),
                expires_at_s: Some(expires_at_s),
                ..Failure::new(4, "outcome_unknown", e.to_string())
            },
        }
    }
}

/// Whether the command line asks for JSON, read before clap has parsed it
/// (so that even a usage error comes out as one JSON object).
fn json_requested() -> bool {
    std::env::args().any(|a| a == "--json")
        || std::env::var("MICROPAY_JSON").is_ok_and(|v| {
            matches!(
                v.to_ascii_lowercase().as_str(),
                "1" | "true" | "t" | "yes" | "y" | "on"
            )
        })
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || !json_requested()
            {
                e.exit();
            }
            return Failure::usage(e.to_string().trim().to_owned()).report(true);
        }
    };
    micropay::system::logging::init(args.verbose as i8 - args.quiet as i8, "warn");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Failure::new(3, "runtime", format!("cannot start the runtime: {e}"))
                .report(args.json);
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(args.json),
    }
}

async fn channel_command(
    person: &Person,
    args: &Args,
    dir: &std::path::Path,
    action: &ChannelAction,
) -> Result<(), Failure> {
    let (server, json) = (&args.server, args.json);
    match action {
        ChannelAction::Open {
            payee,
            links,
            value,
            expires_in,
        } => {
            channel::open(
                person,
                server,
                (payee, *links, *value, *expires_in),
                dir,
                json,
            )
            .await
        }
        ChannelAction::Pay {
            channel_id,
            units,
            repeat,
        } => channel::pay(person, server, (channel_id, *units, *repeat), dir, json).await,
        ChannelAction::Close => channel::close(person, server, dir, json).await,
        ChannelAction::List => channel::list(dir, json),
    }
}

fn load_person(args: &Args) -> Result<Person, Failure> {
    let name = args.as_name.as_deref();
    let dir = &args.certs;
    let pick = |explicit: &Option<PathBuf>, file: Option<String>| -> Result<PathBuf, Failure> {
        match (explicit, file) {
            (Some(path), _) => Ok(path.clone()),
            (None, Some(file)) => Ok(dir.join(file)),
            (None, None) => Err(Failure::usage(
                "who are you? pass --as NAME (or --cert and --key, or set MICROPAY_AS)",
            )),
        }
    };
    if let Some(name) = name {
        Name::parse(name).map_err(|e| Failure::usage(format!("--as {name:?}: {e}")))?;
    }
    let cert = pick(&args.cert, name.map(|n| format!("{n}.pem")))?;
    let key = pick(&args.key, name.map(|n| format!("{n}.key")))?;
    let ca = args.ca.clone().unwrap_or_else(|| dir.join("ca.pem"));
    for path in [&cert, &key, &ca] {
        if !path.exists() {
            let hint = match name {
                Some(n) => format!("run scripts/gen-certs.sh --out {} {n}", dir.display()),
                None => "make certificates with scripts/gen-certs.sh".to_owned(),
            };
            return Err(Failure::usage(format!(
                "no file at {}: {hint}",
                path.display()
            )));
        }
    }
    match &args.command {
        Command::Serve {
            crl: Some(crl),
            crl_poll_ms,
            ..
        } => Person::load_with_crl(&ca, &cert, &key, crl, *crl_poll_ms),
        _ => Person::load(&ca, &cert, &key),
    }
    .map_err(Failure::from)
}

async fn run(args: &Args) -> Result<(), Failure> {
    check_host_port(&args.server).map_err(|e| Failure::usage(format!("--server {e}")))?;
    let person = load_person(args)?;
    let json = args.json;
    match &args.command {
        Command::Register => queries::register(&person, &args.server, json).await,
        Command::List => queries::list(&person, &args.server, json).await,
        Command::Channel { dir, action } => channel_command(&person, args, dir, action).await,
        Command::Balance => queries::balance(&person, &args.server, json).await,
        Command::History {
            limit,
            format: Some(format),
            no_bom,
            ..
        } => history::statement(&person, &args.server, *limit, *format, !*no_bom).await,
        Command::History { limit, before, .. } => {
            history::run(&person, &args.server, *limit, *before, json).await
        }
        Command::Rotate { new_cert, new_key } => {
            rotate_command(&person, args, new_cert, new_key).await
        }
        Command::Status { payment_id } => {
            queries::status(&person, &args.server, payment_id, json).await
        }
        Command::VerifyLog { state } => {
            queries::verify_log(&person, &args.server, state_or(state, &args.certs), json).await
        }
        Command::Send {
            payee,
            amount,
            memo,
            timeout,
            id,
            expires_at,
        } => {
            let request = send::Request {
                payee,
                amount,
                memo,
                timeout_s: *timeout,
                retry: id.as_deref().zip(*expires_at),
                log_state: state_or(&None, &args.certs),
            };
            send::run(&person, &args.server, &request, json).await
        }
        Command::Serve {
            listen,
            advertise,
            keepalive_ms,
            metrics_listen,
            metrics_allow_non_loopback,
            channels_dir,
            ..
        } => {
            let request = serve::Request {
                channels_dir: channels_dir.clone(),
                log_state: state_or(&None, &args.certs),
                listen: *listen,
                advertise: advertise.clone(),
                keepalive_ms: *keepalive_ms,
                metrics: metrics_listen.map(|addr| (addr, *metrics_allow_non_loopback)),
            };
            serve::run(person, &args.server, request, json).await
        }
    }
}

/// `rotate`: loads the new certificate and key, then moves the account.
async fn rotate_command(
    person: &Person,
    args: &Args,
    new_cert: &std::path::Path,
    new_key: &std::path::Path,
) -> Result<(), Failure> {
    let ca = args.ca.clone().unwrap_or_else(|| args.certs.join("ca.pem"));
    for path in [new_cert, new_key] {
        if !path.exists() {
            return Err(Failure::usage(format!("no file at {}", path.display())));
        }
    }
    let new = Person::load(&ca, new_cert, new_key).map_err(Failure::from)?;
    queries::rotate(person, &new, &args.server, args.json).await
}

/// `verify-log`'s state file: the one given, or log-state.json next to
/// the certificates.
fn state_or(state: &Option<PathBuf>, certs: &std::path::Path) -> PathBuf {
    state
        .clone()
        .unwrap_or_else(|| certs.join("log-state.json"))
}
