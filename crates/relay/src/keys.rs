//! The keys a directory and its relays share without talking to each other: both derived from the
//! server's static private key (BLAKE3 `derive_key`, one context string each), so every instance of
//! one directory and a relay started alone with the same key file seal and check the same tickets
//! and probe tokens, with no state in common.
//!
//! - A **relay ticket** is `postcard(RelayTicket) || BLAKE3-keyed(ticket key, those bytes)` (32
//!   bytes): only a holder of the server key can make one, and any change to it breaks the MAC.
//! - A **probe token** is 8 random bytes then the first 8 bytes of BLAKE3-keyed(probe key, them): the
//!   directory gives one to each session (and knows which session holds it); a relay, which knows no
//!   session, can still tell a token the directory made from a guessed one (1 chance in 2^64 a
//!   guess).

use whatsap2p_proto::codec::{decode_struct, encode, EncodeError};
use whatsap2p_proto::nat::{ProbeToken, RelayTicket, MAX_TICKET_LEN, TICKET_MAC_LEN};

/// Context of the ticket key's derivation. Changing it invalidates every ticket in flight.
pub const TICKET_CONTEXT: &str = "whatsap2p 2025 relay ticket MAC v1";

/// Context of the probe key's derivation.
pub const PROBE_CONTEXT: &str = "whatsap2p 2025 UDP probe token MAC v1";

/// Random bytes at the start of a probe token.
const PROBE_RANDOM_LEN: usize = 8;

/// The keys, derived from the server's static key.
#[derive(Clone)]
pub struct RelayKeys {
    ticket: [u8; 32],
    probe: [u8; 32],
}

impl std::fmt::Debug for RelayKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.write_str("RelayKeys(..)")
    }
}

/// Why a sealed ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Shorter than a MAC, longer than [`MAX_TICKET_LEN`], or its MAC is wrong: not one this
    /// directory sealed (forged, damaged or guessed).
    #[error("not a ticket this directory sealed")]
    Forged,
    /// The MAC is right but the ticket does not decode: sealed by a newer version.
    #[error("a sealed ticket this version cannot read")]
    Unreadable,
}

impl RelayKeys {
    /// The keys of the server whose static private key is `server_private`.
    pub fn derive(server_private: &[u8; 32]) -> Self {
        Self {
            ticket: blake3::derive_key(TICKET_CONTEXT, server_private),
            probe: blake3::derive_key(PROBE_CONTEXT, server_private),
        }
    }

    /// The sealed ticket: its bytes then their MAC.
    pub fn seal(&self, ticket: &RelayTicket) -> Result<Vec<u8>, EncodeError> {
        let mut sealed = encode(ticket)?;
        let mac = blake3::keyed_hash(&self.ticket, &sealed);
        sealed.extend_from_slice(mac.as_bytes());
        if sealed.len() > MAX_TICKET_LEN {
            return Err(EncodeError::TooLarge(sealed.len()));
        }
        Ok(sealed)
    }

    /// The ticket in `sealed`, if this directory sealed it. Says nothing of its time: the caller
    /// checks that.
    pub fn open(&self, sealed: &[u8]) -> Result<RelayTicket, TicketError> {
        if sealed.len() > MAX_TICKET_LEN {
            return Err(TicketError::Forged);
        }
        let Some(body_len) = sealed.len().checked_sub(TICKET_MAC_LEN) else {
            return Err(TicketError::Forged);
        };
        let (body, mac) = sealed.split_at(body_len);
        let mac: [u8; TICKET_MAC_LEN] = mac.try_into().map_err(|_| TicketError::Forged)?;
        // `Hash`'s equality is constant-time.
        if blake3::keyed_hash(&self.ticket, body) != blake3::Hash::from(mac) {
            return Err(TicketError::Forged);
        }
        decode_struct(body).map_err(|_| TicketError::Unreadable)
    }

    /// A new probe token: random, and provably this directory's.
    pub fn probe_token(&self) -> ProbeToken {
        let mut token = [0u8; 16];
        let random: [u8; PROBE_RANDOM_LEN] = rand::random();
        token[..PROBE_RANDOM_LEN].copy_from_slice(&random);
        let mac = blake3::keyed_hash(&self.probe, &random);
        token[PROBE_RANDOM_LEN..].copy_from_slice(&mac.as_bytes()[..16 - PROBE_RANDOM_LEN]);
        token
    }

    /// Whether this directory made `token` (not whether its session still lives: only the
    /// directory knows that).
    pub fn is_probe_token(&self, token: &ProbeToken) -> bool {
        let (random, mac) = token.split_at(PROBE_RANDOM_LEN);
        let expected = blake3::keyed_hash(&self.probe, random);
        // Every byte compared, whatever the first difference: no timing to learn the MAC from.
        expected.as_bytes()[..mac.len()].iter().zip(mac).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsap2p_proto::Number;

    fn ticket() -> RelayTicket {
        RelayTicket {
            a: Number::new("5550001").expect("n"),
            b: Number::new("5550002").expect("n"),
            expires_unix_ms: 1_750_000_000_000,
            nonce: [9; 16],
        }
    }

    #[test]
    fn given_a_sealed_ticket_then_the_same_key_opens_it_and_any_change_is_forged() {
        let keys = RelayKeys::derive(&[1; 32]);
        let sealed = keys.seal(&ticket()).expect("seal");
        assert!(sealed.len() <= MAX_TICKET_LEN);
        assert_eq!(keys.open(&sealed), Ok(ticket()));
        // Another instance with the same server key.
        assert_eq!(RelayKeys::derive(&[1; 32]).open(&sealed), Ok(ticket()));
        assert_eq!(RelayKeys::derive(&[2; 32]).open(&sealed), Err(TicketError::Forged), "another key");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(keys.open(&bad), Err(TicketError::Forged), "byte {i} flipped");
        }
        assert_eq!(keys.open(&sealed[..TICKET_MAC_LEN - 1]), Err(TicketError::Forged));
        assert_eq!(keys.open(&[]), Err(TicketError::Forged));
        assert_eq!(keys.open(&[0; MAX_TICKET_LEN + 1]), Err(TicketError::Forged));
    }

    #[test]
    fn given_a_well_sealed_body_that_is_not_a_ticket_then_unreadable() {
        let keys = RelayKeys::derive(&[1; 32]);
        let body = [0xff, 0xff];
        let mut sealed = body.to_vec();
        sealed.extend_from_slice(blake3::keyed_hash(&keys.ticket, &body).as_bytes());
        assert_eq!(keys.open(&sealed), Err(TicketError::Unreadable));
    }

    #[test]
    fn given_probe_tokens_then_they_differ_and_only_the_keys_maker_accepts_them() {
        let keys = RelayKeys::derive(&[1; 32]);
        let (t1, t2) = (keys.probe_token(), keys.probe_token());
        assert_ne!(t1, t2);
        assert!(keys.is_probe_token(&t1) && keys.is_probe_token(&t2));
        assert!(RelayKeys::derive(&[1; 32]).is_probe_token(&t1), "a relay with the same server key");
        assert!(!RelayKeys::derive(&[2; 32]).is_probe_token(&t1));
        let mut forged = t1;
        forged[15] ^= 0x80;
        assert!(!keys.is_probe_token(&forged));
        assert!(!keys.is_probe_token(&[0; 16]));
    }

    #[test]
    fn given_the_two_keys_then_they_differ() {
        let keys = RelayKeys::derive(&[1; 32]);
        assert_ne!(keys.ticket, keys.probe, "one context each");
    }
}
