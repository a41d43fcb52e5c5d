//! micropay-certs: makes the CA, the server certificate and one
//! certificate per person, with rcgen. `scripts/gen-certs.sh` runs it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use micropay::certs::{generate, revoke, GenerateOptions, KeyType, NextKey, RevokeOptions};
use micropay::core::limits::CRL_NEXT_UPDATE_DAYS_DEFAULT;
use micropay::core::name::Name;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KeyTypeArg {
    Ed25519,
    EcdsaP256,
}

/// Make the certificates of a micropay deployment, with rcgen.
///
/// Into the output directory: ca.pem/ca.key, the CA (made on the first run,
/// then always reused, never replaced); server.pem/server.key, the server's
/// certificate (made on the first run; replaced only with --renew-server;
/// it carries the server-role mark clients require); and NAME.pem/NAME.key
/// for each person named (replaced only with --force). Keys are written
/// with mode 0600 and never printed.
///
/// With --revoke NAME, revokes NAME's certificate instead: OUT/crl.pem
/// gets its serial and a new signature from the CA.
///
/// The names ca, server, crl, localhost and the server's own DNS names are
/// reserved: no person can have them.
///
/// To rotate or renew a registered person's key, issue their NEXT
/// certificate with --next NAME (NAME.next.pem and a new NAME.next.key) or
/// --next --keep-key NAME (NAME.next.pem for the key in NAME.key), then run
/// `micropay-client --as NAME rotate --new-cert .. --new-key ..`. Re-keying
/// with --force NAME instead replaces NAME.key, and the server answers
/// key_mismatch until the account is rotated or rebound.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Output directory.
    #[arg(long = "out", default_value = "certs")]
    out_dir: PathBuf,
    /// Validity of new certificates, in days.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Key algorithm of new keys.
    #[arg(long, value_enum, default_value = "ed25519")]
    key_type: KeyTypeArg,
    /// DNS name for the server certificate (repeatable; default: localhost).
    /// Applied when the server's certificate is made: the first run, or
    /// with --renew-server.
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// IP address for the server certificate (repeatable; default:
    /// 127.0.0.1 and ::1). Applied like --server-name.
    #[arg(long = "server-ip")]
    server_ips: Vec<IpAddr>,
    /// Replace the certificates and keys of the people named, and only
    /// theirs (never the CA's or the server's). A registered person
    /// re-keyed this way gets key_mismatch from the server: their account
    /// stays bound to the old key.
    #[arg(long)]
    force: bool,
    /// Replace the server's certificate and key (new key, the
    /// --server-name/--server-ip given, the CA kept). Clients need
    /// nothing new: they trust the CA.
    #[arg(long)]
    renew_server: bool,
    /// Revoke NAME's certificate (repeatable): adds the serial of
    /// OUT/NAME.pem to OUT/crl.pem, keeping the entries already there, and
    /// signs the new CRL (number one higher) with the CA. Servers and
    /// payees running with --crl OUT/crl.pem pick it up without a restart.
    /// Revoking someone already listed just re-signs the CRL (a fresh next
    /// update). Makes nothing else.
    #[arg(long = "revoke", value_name = "NAME", value_parser = parse_name,
          conflicts_with_all = ["names", "force", "renew_server", "server_names", "server_ips"])]
    revoke: Vec<Name>,
    /// Days until the next update of a CRL signed by --revoke.
    #[arg(long, default_value_t = CRL_NEXT_UPDATE_DAYS_DEFAULT)]
    crl_days: u32,
    /// Write each named person's NEXT certificate, NAME.next.pem with a
    /// new key in NAME.next.key, for `micropay-client rotate`; NAME.pem and
    /// NAME.key are left as they are.
    #[arg(long)]
    next: bool,
    /// With --next: certify the key already in NAME.key (a renewal: same
    /// key, new validity) instead of a new key; writes NAME.next.pem only.
    #[arg(long, requires = "next")]
    keep_key: bool,
    /// People to make certificates for: lowercase [a-z0-9][a-z0-9-]{0,31},
    /// not ending in '-', not number-like (a name is dialled as a DNS name)
    /// and not reserved.
    #[arg(value_parser = parse_name)]
    names: Vec<Name>,
}

fn parse_name(s: &str) -> Result<Name, String> {
    Name::parse(s).map_err(|e| format!("{s:?} is not a valid name: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if !args.revoke.is_empty() {
        return run_revoke(args);
    }
    let opts = GenerateOptions {
        out_dir: args.out_dir,
        days: args.days,
        key_type: match args.key_type {
            KeyTypeArg::Ed25519 => KeyType::Ed25519,
            KeyTypeArg::EcdsaP256 => KeyType::EcdsaP256,
        },
        server_names: args.server_names,
        server_ips: args.server_ips,
        force: args.force,
        renew_server: args.renew_server,
        people: args.names,
        next: match (args.next, args.keep_key) {
            (false, _) => None,
            (true, false) => Some(NextKey::New),
            (true, true) => Some(NextKey::Same),
        },
    };
    match generate(&opts) {
        Ok(report) => {
            for path in &report.reused {
                println!("kept    {}", path.display());
            }
            for path in &report.written {
                println!("wrote   {}", path.display());
            }
            for note in &report.notes {
                eprintln!("micropay-certs: note: {note}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("micropay-certs: {e}");
            ExitCode::from(1)
        }
    }
}

fn run_revoke(args: Args) -> ExitCode {
    let opts = RevokeOptions {
        dir: args.out_dir,
        people: args.revoke,
        next_update_days: args.crl_days,
    };
    match revoke(&opts) {
        Ok(report) => {
            for (name, serial) in &report.revoked {
                println!("revoked {name} (serial {serial})");
            }
            for name in &report.already {
                println!("already revoked {name}");
            }
            let next = report
                .next_update
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| report.next_update.to_string());
            println!(
                "wrote   {} (CRL number {}, {} revoked certificate(s), next update {next})",
                report.crl.display(),
                report.number,
                report.entries
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("micropay-certs: {e}");
            ExitCode::from(1)
        }
    }
}
