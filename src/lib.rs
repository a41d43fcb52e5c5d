//! micropay: person-to-person micropayments over mutual TLS 1.3, with
//! every payment signed by its payer and settled durably by a server.
//!
//! Module map, from the pure core outwards:
//!
//! | module | what lives there | may touch |
//! |---|---|---|
//! | [`limits`] | every bound, named | nothing |
//! | [`name`] | person names and their grammar | nothing |
//! | [`keys`] | signing/verifying keys (Ed25519, P-256) via ring | nothing |
//! | [`payment`] | payments, receipts, canonical bytes, sign/verify | nothing |
//! | [`protocol`] | wire messages, error codes, request decoding | nothing |
//! | [`identity`] | a verified certificate → name, key, validity | nothing |
//! | [`certs`] | making CA/server/person certificates with rcgen, writing them | files |
//! | [`tls`] | rustls configurations from PEM files or memory | files |
//! | [`frame`] | bounded newline-delimited frames on async streams | sockets |
//! | [`ledger`] | SQLite ledger: schema, single writer, group commit, audit | the database |
//! | [`session`] | accept loop and request/reply loop shared by server and peer listener | sockets |
//! | [`server`] | the server: accept loop, connections, presence, dispatch | sockets, ledger |
//! | [`client`] | a pipelined connection to the server or a peer | sockets |
//! | [`peer`] | the payee's listener (`serve`) and the payer's `send` | sockets |
//! | [`logging`] | tracing set-up for the binaries | stderr |
//! | [`signal`] | Ctrl-C and SIGTERM as one future | signals |
//! | [`clock`] | wall-clock time in the units the protocol uses | the clock |
//!
//! The binaries in `src/bin/` parse flags and call into these modules.

pub mod certs;
pub mod core;
pub mod ledger;
pub mod net;
pub mod person;
pub mod server;
pub mod system;
pub mod wire;
