//! Where the two connections that present one ticket find each other: the first waits (holding a
//! [`Slot`]), the second hands it its stream; a ticket that paired is *used* until it expires, so a
//! third connection, or the same two again, is refused.
//!
//! Everything here has a bound: pairs (waiting or piping) in all and per number ([`Limits`]), used
//! tickets ([`MAX_USED`], each kept until its own expiry, which the relay caps at
//! [`Limits::max_ticket_lifetime`]). The clock is an input (ms since the Unix epoch, as tickets say
//! it), so the rules are tested without time passing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use whatsap2p_proto::nat::{RelayStatus, RelayTicket};
use whatsap2p_proto::Number;

use crate::Limits;

/// Most used tickets remembered. Each is remembered until its expiry (at most
/// [`Limits::max_ticket_lifetime`] away), so this caps how many pairs may start in that time;
/// beyond it the relay answers `Busy` until old ones expire. About 40 bytes each.
pub const MAX_USED: usize = 65_536;

/// The state every connection of the relay shares.
pub struct Rendezvous<S> {
    rooms: Mutex<Rooms<S>>,
    limits: Limits,
}

struct Rooms<S> {
    /// First sides waiting for their partner, by ticket nonce.
    waiting: HashMap<[u8; 16], oneshot::Sender<S>>,
    /// Tickets that paired, with their expiry (ms since the epoch).
    used: HashMap<[u8; 16], u64>,
    /// Pairs waiting or piping.
    pairs: usize,
    /// The same, per number (either side of the ticket).
    per_number: HashMap<Number, usize>,
}

/// What a connection with a valid ticket does next.
pub enum Arrival<S> {
    /// It is the first: wait (bounded) for the partner's stream on the receiver. The slot is the
    /// pair's, freed when dropped.
    Wait(oneshot::Receiver<S>, Slot<S>),
    /// Its partner waits: send it this connection's stream. If that fails the partner is gone
    /// (the stream comes back in the error): answer `NoPartner`.
    Join(oneshot::Sender<S>),
    /// Refused: answer this.
    Refused(RelayStatus),
}

/// A pair's place in the relay's counts: held by the task that waits, then pipes; freed on drop,
/// whichever way that task ends.
pub struct Slot<S> {
    rendezvous: Arc<Rendezvous<S>>,
    nonce: [u8; 16],
    numbers: [Number; 2],
}

impl<S> Drop for Slot<S> {
    fn drop(&mut self) {
        let mut rooms = self.rendezvous.lock();
        rooms.waiting.remove(&self.nonce);
        rooms.pairs = rooms.pairs.saturating_sub(1);
        for n in &self.numbers {
            if let Some(count) = rooms.per_number.get_mut(n) {
                *count -= 1;
                if *count == 0 {
                    rooms.per_number.remove(n);
                }
            }
        }
    }
}

impl<S> Slot<S> {
    /// The first side stopped waiting without a partner. `true`: nobody took its place, the slot
    /// goes with this; `false`: a partner took the waiting place meanwhile and its stream is on the
    /// way (read the receiver).
    pub fn give_up(&self) -> bool {
        self.rendezvous.lock().waiting.remove(&self.nonce).is_some()
    }
}

impl<S> Rendezvous<S> {
    /// An empty relay with these limits.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            rooms: Mutex::new(Rooms {
                waiting: HashMap::new(),
                used: HashMap::new(),
                pairs: 0,
                per_number: HashMap::new(),
            }),
            limits,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rooms<S>> {
        // A std lock: held for a few map operations, never across an await.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A connection presents `ticket` (its MAC checked) at `now_ms`.
    pub fn arrive(self: &Arc<Self>, ticket: &RelayTicket, now_ms: u64) -> Arrival<S> {
        if ticket.expires_unix_ms < now_ms {
            return Arrival::Refused(RelayStatus::Expired);
        }
        let max_lifetime = u64::try_from(self.limits.max_ticket_lifetime.as_millis()).unwrap_or(u64::MAX);
        if ticket.expires_unix_ms > now_ms.saturating_add(max_lifetime) {
            // Sealed with our key, but it would sit in the used set for longer than this relay
            // keeps anything: a directory configured past the relay's limit.
            return Arrival::Refused(RelayStatus::BadTicket);
        }
        let mut rooms = self.lock();
        if rooms.used.contains_key(&ticket.nonce) {
            return Arrival::Refused(RelayStatus::Used);
        }
        if let Some(partner) = rooms.waiting.remove(&ticket.nonce) {
            if rooms.used.len() >= MAX_USED {
                rooms.used.retain(|_, expires| *expires >= now_ms);
            }
            // Past MAX_USED (after dropping the expired) the set grows by this one anyway: the
            // ticket was admitted when it came first, and the count of waiting pairs is bounded.
            rooms.used.insert(ticket.nonce, ticket.expires_unix_ms);
            return Arrival::Join(partner);
        }
        if rooms.used.len() >= MAX_USED {
            rooms.used.retain(|_, expires| *expires >= now_ms);
            if rooms.used.len() >= MAX_USED {
                return Arrival::Refused(RelayStatus::Busy);
            }
        }
        let per = |n: &Number| rooms.per_number.get(n).copied().unwrap_or(0);
        if rooms.pairs >= self.limits.max_pairs
            || per(&ticket.a) >= self.limits.pairs_per_number
            || per(&ticket.b) >= self.limits.pairs_per_number
        {
            return Arrival::Refused(RelayStatus::Busy);
        }
        let (tx, rx) = oneshot::channel();
        rooms.waiting.insert(ticket.nonce, tx);
        rooms.pairs += 1;
        for n in [&ticket.a, &ticket.b] {
            *rooms.per_number.entry(n.clone()).or_insert(0) += 1;
        }
        drop(rooms);
        let slot = Slot {
            rendezvous: self.clone(),
            nonce: ticket.nonce,
            numbers: [ticket.a.clone(), ticket.b.clone()],
        };
        Arrival::Wait(rx, slot)
    }

    /// Pairs waiting or piping.
    pub fn pairs(&self) -> usize {
        self.lock().pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW: u64 = 1_750_000_000_000;

    fn ticket(a: &str, b: &str, nonce: u8) -> RelayTicket {
        RelayTicket {
            a: Number::new(a).expect("n"),
            b: Number::new(b).expect("n"),
            expires_unix_ms: NOW + 30_000,
            nonce: [nonce; 16],
        }
    }

    fn limits() -> Limits {
        Limits { max_pairs: 3, pairs_per_number: 2, ..Limits::default() }
    }

    fn status<S>(a: Arrival<S>) -> Option<RelayStatus> {
        match a {
            Arrival::Refused(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn given_two_arrivals_then_they_pair_once_and_the_ticket_is_used_until_it_expires() {
        let r = Rendezvous::<u32>::new(limits());
        let t = ticket("1001", "1002", 1);
        let Arrival::Wait(mut rx, slot) = r.arrive(&t, NOW) else { panic!("first waits") };
        let Arrival::Join(tx) = r.arrive(&t, NOW) else { panic!("second joins") };
        tx.send(7).expect("send");
        assert_eq!(rx.try_recv(), Ok(7));
        assert_eq!(status(r.arrive(&t, NOW)), Some(RelayStatus::Used), "a third");
        assert_eq!(r.pairs(), 1);
        drop(slot);
        assert_eq!(r.pairs(), 0);
        assert_eq!(status(r.arrive(&t, NOW + 1)), Some(RelayStatus::Used), "the same pair again");
        assert_eq!(status(r.arrive(&t, t.expires_unix_ms + 1)), Some(RelayStatus::Expired));
    }

    #[test]
    fn given_a_first_side_that_gives_up_then_its_place_is_free_and_the_ticket_unused() {
        let r = Rendezvous::<u32>::new(limits());
        let t = ticket("1001", "1002", 1);
        let Arrival::Wait(_rx, slot) = r.arrive(&t, NOW) else { panic!("waits") };
        assert!(slot.give_up());
        drop(slot);
        assert_eq!(r.pairs(), 0);
        assert!(matches!(r.arrive(&t, NOW), Arrival::Wait(..)), "the ticket may be tried again");
    }

    #[test]
    fn given_a_partner_that_joins_while_the_first_gives_up_then_the_first_gets_the_stream() {
        let r = Rendezvous::<u32>::new(limits());
        let t = ticket("1001", "1002", 1);
        let Arrival::Wait(mut rx, slot) = r.arrive(&t, NOW) else { panic!("waits") };
        let Arrival::Join(tx) = r.arrive(&t, NOW) else { panic!("joins") };
        assert!(!slot.give_up(), "too late to give up");
        tx.send(9).expect("send");
        assert_eq!(rx.try_recv(), Ok(9));
    }

    #[test]
    fn given_the_limits_then_busy_for_the_pair_over_them_and_free_again_when_one_ends() {
        let r = Rendezvous::<u32>::new(limits());
        let Arrival::Wait(_, s1) = r.arrive(&ticket("1001", "2001", 1), NOW) else { panic!() };
        let Arrival::Wait(_, _s2) = r.arrive(&ticket("1001", "2002", 2), NOW) else { panic!() };
        assert_eq!(
            status(r.arrive(&ticket("2003", "1001", 3), NOW)),
            Some(RelayStatus::Busy),
            "a third pair for 1001"
        );
        let Arrival::Wait(_, _s3) = r.arrive(&ticket("3001", "3002", 4), NOW) else { panic!() };
        assert_eq!(
            status(r.arrive(&ticket("4001", "4002", 5), NOW)),
            Some(RelayStatus::Busy),
            "pairs in all"
        );
        drop(s1);
        assert!(matches!(r.arrive(&ticket("2003", "1001", 3), NOW), Arrival::Wait(..)));
    }

    #[test]
    fn given_a_ticket_valid_longer_than_the_relay_keeps_anything_then_refused() {
        let r = Rendezvous::<u32>::new(limits());
        let mut t = ticket("1001", "1002", 1);
        t.expires_unix_ms = NOW + Limits::default().max_ticket_lifetime.as_millis() as u64 + 1;
        assert_eq!(status(r.arrive(&t, NOW)), Some(RelayStatus::BadTicket));
        t.expires_unix_ms = NOW + Duration::from_secs(1).as_millis() as u64;
        assert!(matches!(r.arrive(&t, NOW), Arrival::Wait(..)));
    }

    #[test]
    fn given_the_used_set_full_then_expired_ones_make_room_and_live_ones_make_busy() {
        let r = Rendezvous::<u32>::new(Limits { max_pairs: 10, ..Limits::default() });
        {
            let mut rooms = r.lock();
            for i in 0..MAX_USED as u32 {
                let mut nonce = [0u8; 16];
                nonce[..4].copy_from_slice(&i.to_be_bytes());
                rooms.used.insert(nonce, NOW + 1_000);
            }
        }
        assert_eq!(status(r.arrive(&ticket("1001", "1002", 0xee), NOW)), Some(RelayStatus::Busy));
        assert!(matches!(r.arrive(&ticket("1001", "1002", 0xee), NOW + 1_001), Arrival::Wait(..)));
        assert_eq!(r.lock().used.len(), 0);
    }
}
