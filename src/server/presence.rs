//! Who is online, and where: behind a trait so that several servers can
//! share one view. The in-memory implementation serves one process;
//! [`crate::server::pg_presence::PgPresence`] keeps it in PostgreSQL
//! with leases.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::core::name::Name;

/// Why presence could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The shared store is unreachable.
    #[error("presence is unavailable: {0}")]
    Unavailable(String),
}

/// A presence operation's future.
pub type PresenceFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, PresenceError>> + Send + 'a>>;

/// One person online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Present {
    /// Who.
    pub name: Name,
    /// `host:port` of their peer listener.
    pub address: String,
}

/// A page of who is online.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    /// The first people by name, at most the asked-for count.
    pub people: Vec<Present>,
    /// How many are online in all.
    pub total: usize,
}

/// Who is online. `conn_id` names the connection that announced a
/// presence, so that a connection only ever withdraws its own.
pub trait Presence: Send + Sync + 'static {
    /// `name` accepts payments at `address`, announced by `conn_id`;
    /// replaces any earlier presence of `name`, and says whether that
    /// earlier presence (still live) came from another connection: the
    /// caller took over from another `serve` of the same person.
    fn announce(&self, name: &Name, address: &str, conn_id: u64) -> PresenceFuture<'_, bool>;
    /// Removes `name`'s presence if `conn_id` announced it; says whether
    /// it did.
    fn withdraw(&self, name: &Name, conn_id: u64) -> PresenceFuture<'_, bool>;
    /// Where `name` is online.
    fn locate(&self, name: &Name) -> PresenceFuture<'_, Option<String>>;
    /// The first `max` people online, by name, and the total.
    fn roster(&self, max: usize) -> PresenceFuture<'_, Roster>;
    /// Called once when the server stops: withdraws everything this
    /// server announced (shared presence) and stops any background work.
    fn close(&self) -> PresenceFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

struct Entry {
    address: String,
    conn_id: u64,
}

/// Presence in this process's memory.
#[derive(Default)]
pub struct MemoryPresence {
    online: Mutex<BTreeMap<Name, Entry>>,
}

impl MemoryPresence {
    /// Nobody online.
    pub fn new() -> MemoryPresence {
        MemoryPresence::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Name, Entry>> {
        // A poisoned lock means a panic elsewhere; the map is still usable.
        self.online.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Presence for MemoryPresence {
    fn announce(&self, name: &Name, address: &str, conn_id: u64) -> PresenceFuture<'_, bool> {
        let entry = Entry {
            address: address.to_owned(),
            conn_id,
        };
        let earlier = self.map().insert(name.clone(), entry);
        let replaced = earlier.is_some_and(|e| e.conn_id != conn_id);
        Box::pin(std::future::ready(Ok(replaced)))
    }

    fn withdraw(&self, name: &Name, conn_id: u64) -> PresenceFuture<'_, bool> {
        let mut map = self.map();
        let mine = map.get(name).is_some_and(|e| e.conn_id == conn_id);
        if mine {
            map.remove(name);
        }
        Box::pin(std::future::ready(Ok(mine)))
    }

    fn locate(&self, name: &Name) -> PresenceFuture<'_, Option<String>> {
        let found = self.map().get(name).map(|e| e.address.clone());
        Box::pin(std::future::ready(Ok(found)))
    }

    fn roster(&self, max: usize) -> PresenceFuture<'_, Roster> {
        let map = self.map();
        let people = map
            .iter()
            .take(max)
            .map(|(name, e)| Present {
                name: name.clone(),
                address: e.address.clone(),
            })
            .collect();
        let roster = Roster {
            people,
            total: map.len(),
        };
        Box::pin(std::future::ready(Ok(roster)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::parse(s).expect("name")
    }

    #[tokio::test]
    async fn a_connection_withdraws_only_its_own_presence() {
        let p = MemoryPresence::new();
        assert!(!p
            .announce(&name("bob"), "127.0.0.1:1", 1)
            .await
            .expect("ok"));
        assert!(!p
            .announce(&name("bob"), "127.0.0.1:1", 1)
            .await
            .expect("ok"));
        assert!(p
            .announce(&name("bob"), "127.0.0.1:2", 2)
            .await
            .expect("ok"));
        assert!(!p.withdraw(&name("bob"), 1).await.expect("ok"));
        assert_eq!(
            p.locate(&name("bob")).await.expect("ok").as_deref(),
            Some("127.0.0.1:2")
        );
        assert!(p.withdraw(&name("bob"), 2).await.expect("ok"));
        assert_eq!(p.locate(&name("bob")).await.expect("ok"), None);
    }

    #[tokio::test]
    async fn the_roster_is_sorted_and_bounded() {
        let p = MemoryPresence::new();
        for (i, n) in ["carol", "alice", "bob"].into_iter().enumerate() {
            p.announce(&name(n), "h:1", i as u64).await.expect("ok");
        }
        let roster = p.roster(2).await.expect("ok");
        assert_eq!(roster.total, 3);
        let names: Vec<_> = roster.people.iter().map(|e| e.name.to_string()).collect();
        assert_eq!(names, ["alice", "bob"]);
    }
}
