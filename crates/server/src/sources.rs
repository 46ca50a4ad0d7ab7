//! Connections per source address: how many are open and how many are still in their handshake,
//! so that one address cannot take every session slot of the instance, nor hold its slots with
//! handshakes it never finishes, while other addresses are still served (issue 16).
//!
//! A connection takes a [`Slot`] of its address when it is accepted and gives it back when it ends
//! (the slot's drop); its handshake part is given back as soon as the handshake ends. An address
//! has an entry only while it has a connection, so the table is bounded by the connection cap.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::config::Limits;

/// Where connections come from, as the limits count it: an IPv4 address, or the /64 prefix of an
/// IPv6 address (one subscriber's network: its 2^64 addresses are one source). An IPv4-mapped IPv6
/// address is its IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceAddr {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl From<IpAddr> for SourceAddr {
    fn from(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Self::V6(prefix)
            }
        }
    }
}

impl fmt::Display for SourceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(octets) => write!(f, "{}", std::net::Ipv4Addr::from(*octets)),
            Self::V6(prefix) => {
                let mut octets = [0; 16];
                octets[..8].copy_from_slice(prefix);
                write!(f, "{}/64", std::net::Ipv6Addr::from(octets))
            }
        }
    }
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crowded {
    /// Its address has [`Limits::sessions_per_address`] connections open.
    Sessions,
    /// Its address has [`Limits::handshakes_per_address`] handshakes in progress.
    Handshakes,
}

/// What one address holds now.
#[derive(Default)]
struct Held {
    /// Connections open, handshakes included.
    connections: usize,
    /// Of them, still in their handshake.
    handshakes: usize,
}

/// The connections of this instance by source address.
pub struct Sources {
    /// Per address; an entry goes when its last connection ends. A std lock, held for a lookup
    /// and an add, never across an await.
    held: Mutex<HashMap<SourceAddr, Held>>,
    max_connections: usize,
    max_handshakes: usize,
}

impl Sources {
    /// Counting against `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            held: Mutex::default(),
            max_connections: limits.sessions_per_address,
            max_handshakes: limits.handshakes_per_address,
        }
    }

    /// A slot for a new connection from `ip`, in its handshake, or why there is none.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Crowded> {
        let source = SourceAddr::from(ip);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let entry = held.entry(source).or_default();
        if entry.connections >= self.max_connections {
            return Err(Crowded::Sessions);
        }
        if entry.handshakes >= self.max_handshakes {
            return Err(Crowded::Handshakes);
        }
        entry.connections += 1;
        entry.handshakes += 1;
        Ok(Slot { sources: Some(self.clone()), source, handshaking: true })
    }

    /// Connections open from `source` now, and of them in their handshake.
    pub fn held(&self, source: SourceAddr) -> (usize, usize) {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(&source).map_or((0, 0), |h| (h.connections, h.handshakes))
    }

    fn release(&self, source: SourceAddr, handshake: bool, connection: bool) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = held.get_mut(&source) else { return };
        if handshake {
            entry.handshakes = entry.handshakes.saturating_sub(1);
        }
        if connection {
            entry.connections = entry.connections.saturating_sub(1);
            if entry.connections == 0 {
                held.remove(&source);
            }
        }
    }
}

/// One connection's place among its address's: given back when dropped.
pub struct Slot {
    /// `None` once [`Slot::keep`] handed the place over.
    sources: Option<Arc<Sources>>,
    source: SourceAddr,
    handshaking: bool,
}

impl Slot {
    /// Where the connection comes from.
    pub fn source(&self) -> SourceAddr {
        self.source
    }

    /// The handshake is over: its handshake slot goes back, the connection keeps its place.
    pub fn handshake_done(&mut self) {
        if !std::mem::take(&mut self.handshaking) {
            return;
        }
        if let Some(sources) = &self.sources {
            sources.release(self.source, true, false);
        }
    }

    /// The handshake is over and the connection stays: its place is kept without this guard, and
    /// whoever keeps it gives it back with [`Sources::leave`]. (A held session's state does, so as
    /// not to keep a guard per session.)
    pub fn keep(mut self) {
        self.handshake_done();
        self.sources = None;
    }
}

impl Sources {
    /// A connection from `source` whose slot was kept ([`Slot::keep`]) ended.
    pub fn leave(&self, source: SourceAddr) {
        self.release(source, false, true);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(sources) = &self.sources {
            sources.release(self.source, self.handshaking, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(sessions: usize, handshakes: usize) -> Arc<Sources> {
        let limits = Limits {
            sessions_per_address: sessions,
            handshakes_per_address: handshakes,
            ..Limits::default()
        };
        Arc::new(Sources::new(&limits))
    }

    #[test]
    fn given_an_address_at_its_handshake_limit_then_it_is_refused_until_one_finishes_and_others_pass() {
        let s = sources(3, 2);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let mut a = s.admit(ip).expect("first");
        let _b = s.admit(ip).expect("second");
        assert_eq!(s.admit(ip).err(), Some(Crowded::Handshakes));
        assert!(s.admit("10.0.0.2".parse().expect("ip")).is_ok(), "another address is served");
        a.handshake_done();
        let _c = s.admit(ip).expect("a handshake slot came back");
        assert_eq!(s.admit(ip).err(), Some(Crowded::Sessions));
        assert_eq!(s.held(ip.into()), (3, 2));
        drop(a);
        assert_eq!(s.held(ip.into()), (2, 2));
        let c = s.admit("10.0.0.3".parse().expect("ip")).expect("another");
        c.keep();
        assert_eq!(
            s.held("10.0.0.3".parse::<IpAddr>().expect("ip").into()),
            (1, 0),
            "kept: the handshake part back"
        );
        s.leave("10.0.0.3".parse::<IpAddr>().expect("ip").into());
        assert_eq!(s.held("10.0.0.3".parse::<IpAddr>().expect("ip").into()), (0, 0));
    }

    #[test]
    fn given_addresses_of_one_ipv6_prefix_then_they_are_one_source_and_the_table_empties() {
        let s = sources(1, 1);
        let slot = s.admit("2001:db8:1:2::1".parse().expect("ip")).expect("first");
        assert_eq!(s.admit("2001:db8:1:2:ffff::9".parse().expect("ip")).err(), Some(Crowded::Sessions));
        assert!(s.admit("2001:db8:1:3::1".parse().expect("ip")).is_ok(), "another /64");
        assert_eq!(slot.source().to_string(), "2001:db8:1:2::/64");
        drop(slot);
        assert!(s.held.lock().expect("lock").is_empty(), "no entry outlives its connections");
        let v4: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(SourceAddr::from(v4).to_string(), "10.0.0.1");
    }
}
