//! `online`: announce where the caller accepts payments.

use std::net::{IpAddr, SocketAddr};

use rustls::pki_types::ServerName;
use tracing::info;

use super::{reply, Caller, Context};
use crate::core::limits::ADVERTISED_HOST_BYTES_MAX;
use crate::wire::{ErrorCode, Online, ResultJson, WireError};

/// Announces the caller at `address` (default: the connection's source
/// IP) and `port`; the reply says whether this took over a presence
/// another connection of the same person had announced.
pub async fn run(
    cx: &Context,
    caller: &Caller,
    port: u16,
    address: Option<&str>,
) -> Result<ResultJson, WireError> {
    if port == 0 {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            "port must be 1..65535",
        ));
    }
    let me = &caller.identity.name;
    let address = advertised_address(address, caller.peer_ip, port)?;
    let replaced = cx.presence.announce(me, &address, caller.conn_id).await?;
    info!(name = %me, %address, replaced, "online");
    reply(Online { address, replaced })
}

/// The address others will dial: the given host (validated) or the
/// connection's source IP, with the port.
fn advertised_address(host: Option<&str>, peer_ip: IpAddr, port: u16) -> Result<String, WireError> {
    let Some(host) = host else {
        return Ok(SocketAddr::new(peer_ip, port).to_string());
    };
    if let Ok(ip) = host
        .trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, port).to_string());
    }
    // A DNS host is what TLS would accept as a server name (labels of
    // letters, digits and inner hyphens; not number-like, such as `42`),
    // because payers resolve and dial it.
    let valid = host.len() <= ADVERTISED_HOST_BYTES_MAX
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && matches!(ServerName::try_from(host), Ok(ServerName::DnsName(_)));
    if !valid {
        return Err(WireError::new(
            ErrorCode::BadRequest,
            "address must be an IP address (IPv6 with or without brackets) or a DNS host name",
        ));
    }
    Ok(format!("{}:{port}", host.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_addresses() {
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        assert_eq!(advertised_address(None, ip, 9).expect("ok"), "10.1.2.3:9");
        assert_eq!(
            advertised_address(Some("::1"), ip, 9).expect("ok"),
            "[::1]:9"
        );
        assert_eq!(
            advertised_address(Some("pay.example"), ip, 9).expect("ok"),
            "pay.example:9"
        );
        assert_eq!(
            advertised_address(Some("[::1]"), ip, 9).expect("ok"),
            "[::1]:9"
        );
        assert_eq!(
            advertised_address(Some("Pay.Example"), ip, 9).expect("ok"),
            "pay.example:9"
        );
        for bad in ["-bad-", "bad-", "42", "1.2.3", "a..b", ".a", "a_b", "0x1f"] {
            assert!(advertised_address(Some(bad), ip, 9).is_err(), "{bad}");
        }
        assert!(advertised_address(Some("a b"), ip, 9).is_err());
        assert!(advertised_address(Some(""), ip, 9).is_err());
        assert!(advertised_address(Some(&"a".repeat(300)), ip, 9).is_err());
    }
}
