//! micropay-certs: makes the CA, the server certificate and one
//! certificate per person, with rcgen. `scripts/gen-certs.sh` runs it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use micropay::certs::{generate, GenerateOptions, KeyType};
use micropay::core::name::Name;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KeyTypeArg {
    Ed25519,
    EcdsaP256,
}

/// Make micropay certificates: a CA (kept and reused), the server's
/// certificate and one per person. Keys are written with mode 0600.
#[derive(Parser, Debug)]
#[command(version, about)]
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
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// IP address for the server certificate (repeatable; default:
    /// 127.0.0.1 and ::1).
    #[arg(long = "server-ip")]
    server_ips: Vec<IpAddr>,
    /// Replace existing certificates.
    #[arg(long)]
    force: bool,
    /// People to make certificates for: lowercase [a-z0-9][a-z0-9-]{0,31},
    /// not ending in '-' and not number-like (a name is dialled as a DNS name).
    #[arg(value_parser = parse_name)]
    names: Vec<Name>,
}

fn parse_name(s: &str) -> Result<Name, String> {
    Name::parse(s).map_err(|e| format!("{s:?} is not a valid name: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let server_names = if args.server_names.is_empty() && args.server_ips.is_empty() {
        vec!["localhost".to_owned()]
    } else {
        args.server_names
    };
    let server_ips = if args.server_ips.is_empty() {
        vec![
            IpAddr::from([127, 0, 0, 1]),
            "::1".parse().unwrap_or(IpAddr::from([127, 0, 0, 1])),
        ]
    } else {
        args.server_ips
    };
    let opts = GenerateOptions {
        out_dir: args.out_dir,
        days: args.days,
        key_type: match args.key_type {
            KeyTypeArg::Ed25519 => KeyType::Ed25519,
            KeyTypeArg::EcdsaP256 => KeyType::EcdsaP256,
        },
        server_names,
        server_ips,
        force: args.force,
        people: args.names,
    };
    match generate(&opts) {
        Ok(report) => {
            for path in &report.reused {
                println!("kept    {}", path.display());
            }
            for path in &report.written {
                println!("wrote   {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("micropay-certs: {e}");
            ExitCode::from(1)
        }
    }
}
