//! Who may open a peer connection before proving who they are: at most [`MAX_HANDSHAKES`]
//! unauthenticated connections at once, each for at most the handshake timeout. While fewer than
//! [`FREE_HANDSHAKES`] run, anyone gets a place (many users behind one carrier-grade NAT, or a
//! benchmark on loopback, may all connect at once); past that, a source (an IPv4 address, or an
//! IPv6 /64, which one host usually has whole) that already has [`MAX_HANDSHAKES_PER_SOURCE`] gets
//! no more. So one address holding a thousand idle connections takes at most half the places,
//! and contacts from elsewhere still get in. Refusals and failed handshakes are counted, and the
//! counts logged once per [`REPORT_EVERY`], not one line each: under attack the log would
//! otherwise grow by the megabyte.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most peer connections handshaking at once (they have not proved who they are).
pub const MAX_HANDSHAKES: usize = 512;
/// Handshakes running below which every source gets a place.
pub const FREE_HANDSHAKES: usize = MAX_HANDSHAKES / 2;
/// Past [`FREE_HANDSHAKES`], most handshakes from one source. Generous for the many users a
/// carrier-grade NAT puts behind one address: a handshake takes milliseconds, so this many at the
/// same moment is already a crowd.
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 32;
/// Refusals are summed up in one log line this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Why a peer connection was turned away before it became a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turned {
    /// Past [`FREE_HANDSHAKES`], its source already had [`MAX_HANDSHAKES_PER_SOURCE`] running.
    PerSource,
    /// [`MAX_HANDSHAKES`] handshakes were running, or every connection place was taken.
    Total,
    /// It did not finish its handshake within the timeout.
    Slow,
    /// Its handshake failed (garbage, a wrong proof, a number it does not own).
    Failed,
}

const KINDS: usize = 4;

impl Turned {
    fn index(self) -> usize {
        self as usize
    }
}

/// The handshakes running, by source, and the refusals not yet reported.
#[derive(Default)]
pub(crate) struct Admission {
    running: Mutex<HashMap<IpAddr, usize>>,
    turned: [AtomicU64; KINDS],
}

/// A place taken by one handshake, given back when dropped.
pub(crate) struct Place {
    admission: Arc<Admission>,
    source: IpAddr,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut running = self.admission.running();
        if let Some(n) = running.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.source);
            }
        }
    }
}

/// The source a connection from `ip` counts against.
fn source(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl Admission {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a handshake from `ip`, or why there is none (counted).
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Place, Turned> {
        let source = source(ip);
        let mut running = self.running();
        let total: usize = running.values().sum();
        let from_source = running.get(&source).copied().unwrap_or(0);
        let refused = if total >= MAX_HANDSHAKES {
            Turned::Total
        } else if total >= FREE_HANDSHAKES && from_source >= MAX_HANDSHAKES_PER_SOURCE {
            Turned::PerSource
        } else {
            *running.entry(source).or_default() += 1;
            return Ok(Place { admission: self.clone(), source });
        };
        drop(running);
        self.count(refused);
        Err(refused)
    }

    /// Counts a connection turned away.
    pub(crate) fn count(&self, why: Turned) {
        self.turned[why.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since the last report, reset; `None` when nothing was turned away.
    pub(crate) fn report(&self) -> Option<String> {
        let n: Vec<u64> = self.turned.iter().map(|c| c.swap(0, Ordering::Relaxed)).collect();
        if n.iter().all(|&c| c == 0) {
            return None;
        }
        let idx = |t: Turned| n[t.index()];
        Some(format!(
            "turned away {} peer connections in the last {:?}: {} over {MAX_HANDSHAKES_PER_SOURCE} handshakes from one source while {FREE_HANDSHAKES} ran, {} over {MAX_HANDSHAKES} handshakes or the connection limit, {} too slow to handshake, {} failed their handshake",
            n.iter().sum::<u64>(),
            REPORT_EVERY,
            idx(Turned::PerSource),
            idx(Turned::Total),
            idx(Turned::Slow),
            idx(Turned::Failed),
        ))
    }

    /// Handshakes running now.
    #[cfg(test)]
    fn running_total(&self) -> usize {
        self.running().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_one_source_over_its_share_then_it_is_turned_away_and_others_still_admitted() {
        let admission = Arc::new(Admission::default());
        let flood: IpAddr = "127.0.0.1".parse().expect("ip");
        let mut held: Vec<Place> =
            (0..FREE_HANDSHAKES).map(|_| admission.admit(flood).expect("places for all")).collect();
        for _ in 0..1_000 {
            assert_eq!(admission.admit(flood).err(), Some(Turned::PerSource));
        }
        let contact = admission.admit("127.0.0.2".parse().expect("ip")).expect("another source gets in");
        // Places come back when handshakes end: below the free mark, the flood's source gets one.
        drop(contact);
        held.pop();
        let again = admission.admit(flood).expect("a place given back");
        drop((held, again));
        assert_eq!(admission.running_total(), 0);
        let report = admission.report().expect("a report");
        assert!(report.starts_with("turned away 1000 peer connections"), "{report}");
        assert_eq!(admission.report(), None, "counts reset after a report");
    }

    #[test]
    fn given_many_sources_then_the_total_bounds_them() {
        let admission = Arc::new(Admission::default());
        let held: Vec<Place> = (0..MAX_HANDSHAKES)
            .map(|i| {
                admission.admit(IpAddr::from([10, 0, (i / 8 / 256) as u8, (i / 8) as u8])).expect("admitted")
            })
            .collect();
        assert_eq!(admission.admit("10.1.0.0".parse().expect("ip")).err(), Some(Turned::Total));
        drop(held);
        admission.admit("10.1.0.0".parse().expect("ip")).expect("room again");
    }

    #[test]
    fn given_ipv6_then_a_64_is_one_source() {
        let a = source("2001:db8:1:2:aaaa::1".parse().expect("ip"));
        let b = source("2001:db8:1:2:bbbb::9".parse().expect("ip"));
        assert_eq!(a, b);
        assert_ne!(a, source("2001:db8:1:3::1".parse().expect("ip")));
        assert_eq!(source("::ffff:1.2.3.4".parse().expect("ip")), IpAddr::from([1, 2, 3, 4]));
    }
}
