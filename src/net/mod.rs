//! Networking: TLS configurations, certificate identities, certificate
//! revocation, the session loop shared by every listener, and client links.

pub mod identity;
pub mod link;
pub mod observer;
pub mod revocation;
pub mod session;
pub mod tls;
