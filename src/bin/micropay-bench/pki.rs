//! The bench's certificates, made with the library's public certificate
//! API: `certs::generate` writes the CA and the server's pair exactly as
//! `micropay-certs` does, and the CA read back issues people in memory.

use std::net::IpAddr;
use std::path::Path;

use micropay::certs::{self, Ca, CertifiedPem, GenerateOptions, KeyType, Validity};
use micropay::core::name::Name;

use crate::error::{setup, BenchError};

/// Validity of every bench certificate, days.
const VALIDITY_DAYS: u32 = 1;

/// The CA the bench's server trusts.
pub struct BenchPki {
    /// The CA, able to issue people.
    pub ca: Ca,
}

impl BenchPki {
    /// Writes `ca.pem`/`ca.key` and `server.pem`/`server.key` (for
    /// `localhost` and 127.0.0.1, Ed25519) into `dir` and loads the CA.
    pub fn create(dir: &Path) -> Result<BenchPki, BenchError> {
        certs::generate(&GenerateOptions {
            out_dir: dir.to_owned(),
            days: VALIDITY_DAYS,
            key_type: KeyType::Ed25519,
            server_names: vec!["localhost".to_owned()],
            server_ips: vec![IpAddr::from([127, 0, 0, 1])],
            force: false,
            renew_server: false,
            people: Vec::new(),
            next: None,
        })
        .map_err(setup("making certificates"))?;
        let read = |file: &str| {
            std::fs::read_to_string(dir.join(file)).map_err(setup("reading certificates"))
        };
        let ca =
            Ca::from_pem(&read("ca.pem")?, &read("ca.key")?).map_err(setup("loading the CA"))?;
        Ok(BenchPki { ca })
    }

    /// A person's certificate and key, issued in memory.
    pub fn person(&self, name: &str) -> Result<CertifiedPem, BenchError> {
        let name = Name::parse(name).map_err(setup("a person's name"))?;
        self.ca
            .issue_person(
                &name,
                KeyType::Ed25519,
                Validity::days_from_now(VALIDITY_DAYS),
            )
            .map_err(setup("making a person"))
    }
}
