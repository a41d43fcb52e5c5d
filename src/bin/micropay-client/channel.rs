//! `channel open|pay|close`: payment channels from the command line. The
//! payer's chain secret and position stay in DIR/ID.payer (mode 0600);
//! the payee's held links in the directory `serve --channels-dir` uses.

use std::path::Path;

use micropay::core::channel::ChannelId;
use micropay::core::limits::IN_FLIGHT_PER_CONNECTION_DEFAULT;
use micropay::core::name::Name;
use micropay::person::channel_payee::{ChannelStoreError, PayeeChannels};
use micropay::person::channel_payer::{
    payer_summaries, Channel, ChannelRole, ChannelTerms, PayerChannelError,
};
use micropay::person::channel_serve::close_due;
use micropay::person::Person;
use micropay::system::clock::now_s;
use micropay::system::localtime::local_datetime_ms;
use micropay::system::terminal::escape;
use serde_json::json;

use crate::Failure;

impl From<PayerChannelError> for Failure {
    fn from(e: PayerChannelError) -> Failure {
        match e {
            PayerChannelError::Call(c) => c.into(),
            PayerChannelError::Store(_) => Failure::new(2, "channel_state", e.to_string()),
            PayerChannelError::Terms(_) => Failure::usage(e.to_string()),
            PayerChannelError::Exhausted { .. } => {
                Failure::new(1, "channel_exhausted", e.to_string())
            }
        }
    }
}

/// `channel open PAYEE --links N --value V [--expires-in S]`.
pub async fn open(
    person: &Person,
    server: &str,
    (payee, links, value, expires_in_s): (&str, u64, u64, u64),
    dir: &Path,
    json: bool,
) -> Result<(), Failure> {
    let payee = Name::parse(payee).map_err(|e| Failure::usage(format!("PAYEE: {e}")))?;
    let link = person.connect_server(server).await?;
    let terms = ChannelTerms {
        payee: payee.clone(),
        links,
        value_minor: value,
        expires_at_s: now_s().saturating_add(expires_in_s),
    };
    let channel = Channel::open(person, &link, terms, dir).await?;
    let id = channel.id();
    if json {
        println!(
            "{}",
            json!({"ok": true, "channel_id": id.to_hex(), "payee": payee.as_str(), "links": links, "value": value})
        );
    } else {
        println!(
            "opened channel {id} to {}: {links} links of {value} held",
            escape(payee.as_str())
        );
    }
    Ok(())
}

/// `channel pay CHANNEL_ID [--units K] [--repeat R]`: R messages of K
/// units each.
pub async fn pay(
    person: &Person,
    server: &str,
    (id, units, repeat): (&str, u64, u64),
    dir: &Path,
    json: bool,
) -> Result<(), Failure> {
    let id = ChannelId::from_hex(id)
        .ok_or_else(|| Failure::usage("CHANNEL_ID must be 32 lowercase hex digits"))?;
    let link = person.connect_server(server).await?;
    let mut channel = Channel::resume(person, &link, &id, dir).await?;
    // The messages are pipelined: the payee takes them in the order sent
    // and acknowledges each once it is on disk.
    channel
        .pay_pipelined(units, repeat, IN_FLIGHT_PER_CONNECTION_DEFAULT)
        .await?;
    if json {
        println!(
            "{}",
            json!({"ok": true, "channel_id": id.to_hex(), "paid_links": channel.paid(), "links": channel.links()})
        );
    } else {
        println!(
            "channel {id}: {} of {} links paid",
            channel.paid(),
            channel.links()
        );
    }
    Ok(())
}

/// `channel close` (payee side): closes every channel in DIR that holds
/// paid links.
pub async fn close(person: &Person, server: &str, dir: &Path, json: bool) -> Result<(), Failure> {
    let channels =
        PayeeChannels::open(dir).map_err(|e| Failure::new(2, "channels_dir", e.to_string()))?;
    let shared = std::sync::Arc::new(std::sync::Mutex::new(channels));
    let link = person.connect_server(server).await?;
    let closed = close_due(&shared, &link, u64::MAX).await?;
    if json {
        println!("{}", json!({"ok": true, "closed": closed}));
    } else {
        println!("closed {closed} channel(s)");
    }
    Ok(())
}

/// `channel list`: the channels in DIR, both sides, oldest expiry first.
pub fn list(dir: &Path, json: bool) -> Result<(), Failure> {
    let state = |e: ChannelStoreError| Failure::new(2, "channel_state", e.to_string());
    let mut channels = payer_summaries(dir).map_err(state)?;
    if dir.exists() {
        channels.extend(PayeeChannels::open(dir).map_err(state)?.summaries());
    }
    if json {
        println!("{}", json!({"ok": true, "channels": channels}));
        return Ok(());
    }
    if channels.is_empty() {
        println!("no channels in {}", escape(&dir.display().to_string()));
        return Ok(());
    }
    let width = channels
        .iter()
        .map(|c| c.peer.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<5}  {:<32}  {:<width$}  {:>15}  {:>6}  EXPIRES",
        "ROLE", "CHANNEL", "PEER", "PAID/LINKS", "VALUE"
    );
    for c in &channels {
        let role = match c.role {
            ChannelRole::Payer => "payer",
            ChannelRole::Payee => "payee",
        };
        println!(
            "{role:<5}  {}  {:<width$}  {:>15}  {:>6}  {}",
            c.id,
            escape(&c.peer),
            format!("{}/{}", c.paid, c.links),
            c.value_minor,
            local_datetime_ms(c.expires_at_s.saturating_mul(1000)),
        );
    }
    Ok(())
}
