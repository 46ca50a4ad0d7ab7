//! Reaching a client behind a NAT (protocol version 3): the addresses it may be reached at, the UDP
//! datagrams that find its public address and open its NAT, and the relay's ticket and preamble.
//!
//! How they are used (the directory messages that carry them are in [`crate::directory`]):
//! 1. After a v3 handshake the directory gives the session a probe token
//!    ([`crate::directory::ServerToClient::Reachability`]). The client sends
//!    [`Datagram::ProbeRequest`] with it from its UDP socket to the directory's UDP port (and to the
//!    relay's, to learn its NAT's kind); each answers [`Datagram::ProbeReply`] with the address it saw.
//!    The directory publishes the UDP address *it observed* for the session, never one a client
//!    claims, so nobody can make the directory point other people's packets at a third party.
//! 2. The client announces the [`Candidate`]s it knows of itself (its LAN addresses) and its
//!    [`NatKind`]; the directory adds the ones it observed.
//! 3. A client that wants another asks the directory to introduce them; both learn each other's
//!    candidates at once and try them together: QUIC from the side that asked, [`Datagram::Punch`]
//!    from the other, so each side's NAT has seen a packet out before the other's comes in.
//! 4. Where no direct path works, both connect out to the relay with the same [`RelayTicket`] and the
//!    relay pipes bytes between them. The Noise session runs end to end through every path.
//!
//! Datagrams start with [`DATAGRAM_MAGIC`], whose first byte is 0: a QUIC packet always has its
//! second-highest bit set (RFC 9000 §17), so one UDP socket carries both and the first byte tells them
//! apart.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::code::wire_code;
use crate::codec::{decode, encode, DecodeError, EncodeError, WireEnum};
use crate::Number;

/// Most candidates a client announces, and the directory hands out for one client.
pub const MAX_CANDIDATES: usize = 8;

wire_code! {
    /// How a candidate is reached.
    pub enum Transport {
        /// TCP to the address.
        Tcp = 0,
        /// QUIC over UDP to the address.
        Udp = 1,
    }
}

wire_code! {
    /// Where a candidate comes from.
    pub enum Source {
        /// An address of the client's own interfaces, as it says (a LAN address, usually).
        Local = 0,
        /// The address the directory saw the client's packets come from (its NAT's public side).
        Observed = 1,
    }
}

/// An address a client may be reached at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Candidate {
    /// TCP or UDP.
    pub transport: Transport,
    /// Where.
    pub addr: SocketAddr,
    /// Said by the client or seen by the directory.
    pub source: Source,
}

wire_code! {
    /// What the client's NAT does to its UDP, as two probes to different destinations show.
    pub enum NatKind {
        /// Not measured (no probe answered yet, or the directory has no UDP port).
        Unmeasured = 0,
        /// No NAT: the address seen is the socket's own.
        Open = 1,
        /// One public port whatever the destination (endpoint-independent mapping): punching works.
        Cone = 2,
        /// A new public port per destination: punching cannot work from this side.
        Symmetric = 3,
        /// No probe came back: UDP is blocked on the way.
        NoUdp = 4,
    }
}

impl NatKind {
    /// Whether a punched UDP path can work between two sides with these NATs.
    pub fn can_punch(self, other: NatKind) -> bool {
        let fine = |k: NatKind| matches!(k, NatKind::Open | NatKind::Cone | NatKind::Unmeasured);
        let blocked = |k: NatKind| matches!(k, NatKind::NoUdp);
        // A symmetric side can still reach an open one; two symmetric sides, or a symmetric and a
        // cone one, cannot find each other's port.
        !(blocked(self) || blocked(other))
            && (fine(self) && fine(other) || self == NatKind::Open || other == NatKind::Open)
    }
}

wire_code! {
    /// Why a link goes through the relay: shown to the user beside the path.
    pub enum RelayReason {
        /// Both sides are behind symmetric NATs.
        BothSymmetric = 0,
        /// One side is behind a symmetric NAT and the other cannot be reached directly.
        Symmetric = 1,
        /// UDP is blocked on the way (no probe answered).
        UdpBlocked = 2,
        /// Both sides tried every direct path and none answered in time.
        PunchTimedOut = 3,
        /// The other side has no direct transport this side can use (an older client behind a NAT).
        NoDirectTransport = 4,
    }
}

/// The random token a directory session gives its client, proving a UDP probe comes from it.
pub type ProbeToken = [u8; 16];

/// First bytes of every datagram of ours on the UDP socket a client shares with QUIC.
pub const DATAGRAM_MAGIC: [u8; 4] = [0x00, b'W', b'2', b'P'];

/// Largest datagram of ours (the largest is a reply with an IPv6 address: about 40 bytes).
pub const MAX_DATAGRAM_LEN: usize = 64;

/// A UDP datagram of ours: after [`DATAGRAM_MAGIC`], postcard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Datagram {
    /// Client → directory or relay: "what address do you see me at?".
    ProbeRequest {
        /// The session's token; a probe with another token gets no answer.
        token: ProbeToken,
        /// Echoed in the reply, so the client matches it to its request.
        nonce: u64,
    },
    /// Directory or relay → client: the answer, sent to the address the request came from.
    ProbeReply {
        /// The request's nonce.
        nonce: u64,
        /// The address the request came from.
        observed: SocketAddr,
    },
    /// Client → client: opens the sender's NAT towards the receiver; the receiver ignores it.
    Punch {
        /// Random, so each punch is a distinct packet.
        nonce: u64,
    },
}

impl WireEnum for Datagram {
    const KNOWN_VARIANTS: u32 = 3;
}

/// Whether a datagram is ours (else it is QUIC's).
pub fn is_ours(datagram: &[u8]) -> bool {
    datagram.first() == Some(&0)
}

/// The bytes of a datagram.
pub fn encode_datagram(d: &Datagram) -> Result<Vec<u8>, EncodeError> {
    let mut out = DATAGRAM_MAGIC.to_vec();
    out.extend_from_slice(&encode(d)?);
    Ok(out)
}

/// A datagram from its bytes: magic, then one canonical [`Datagram`], nothing after.
pub fn decode_datagram(bytes: &[u8]) -> Result<Datagram, DecodeError> {
    let Some(body) = bytes.strip_prefix(&DATAGRAM_MAGIC) else {
        return Err(DecodeError::Malformed("not a whatsap2p datagram".into()));
    };
    if bytes.len() > MAX_DATAGRAM_LEN {
        return Err(DecodeError::Malformed(format!("datagram of {} bytes", bytes.len())));
    }
    decode(body)
}

/// First bytes a client writes on a TCP connection to the relay, before its ticket.
pub const RELAY_MAGIC: [u8; 4] = *b"W2PR";

/// Version of the relay preamble.
pub const RELAY_VERSION: u8 = 1;

/// Bytes of the relay preamble before the ticket: magic, version, the ticket's length (u16,
/// big-endian).
pub const RELAY_PREAMBLE_HEAD: usize = 7;

/// Longest ticket a relay reads.
pub const MAX_TICKET_LEN: usize = 256;

/// Length of the MAC that ends a sealed ticket.
pub const TICKET_MAC_LEN: usize = 32;

/// What a relay ticket says: these two numbers may be paired until then. The directory seals it
/// (`postcard(ticket) || MAC`, the MAC a keyed BLAKE3 under a key only the directory and its relays
/// hold), gives the same sealed ticket to both sides, and the relay pairs the two connections that
/// present it, once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayTicket {
    /// The side that asked.
    pub a: Number,
    /// The side it wants.
    pub b: Number,
    /// Not valid after this time (directory clock, ms since the Unix epoch).
    pub expires_unix_ms: u64,
    /// Random: makes every ticket distinct, and names the pair at the relay.
    pub nonce: [u8; 16],
}

wire_code! {
    /// The relay's one-byte answer to a preamble.
    pub enum RelayStatus {
        /// Both sides are here: from the next byte on, everything is the other side's.
        Paired = 0,
        /// The ticket is not one the directory sealed (forged, damaged, guessed).
        BadTicket = 1,
        /// The ticket's time is over.
        Expired = 2,
        /// Two connections already used this ticket.
        Used = 3,
        /// The relay is at its limit (pairs in all, or for one of these numbers).
        Busy = 4,
        /// The other side did not come in time.
        NoPartner = 5,
        /// The preamble is not one this relay speaks.
        BadPreamble = 6,
    }
}

/// The preamble a client writes to the relay: magic, version, length, sealed ticket.
pub fn relay_preamble(sealed: &[u8]) -> Result<Vec<u8>, EncodeError> {
    let len = u16::try_from(sealed.len())
        .ok()
        .filter(|&l| usize::from(l) <= MAX_TICKET_LEN)
        .ok_or(EncodeError::TooLarge(sealed.len()))?;
    let mut out = Vec::with_capacity(RELAY_PREAMBLE_HEAD + sealed.len());
    out.extend_from_slice(&RELAY_MAGIC);
    out.push(RELAY_VERSION);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(sealed);
    Ok(out)
}

/// The ticket's length from the preamble's head, or why the preamble is not one this relay speaks.
pub fn relay_ticket_len(head: &[u8; RELAY_PREAMBLE_HEAD]) -> Result<usize, RelayStatus> {
    if head[..4] != RELAY_MAGIC || head[4] != RELAY_VERSION {
        return Err(RelayStatus::BadPreamble);
    }
    let len = usize::from(u16::from_be_bytes([head[5], head[6]]));
    if len == 0 || len > MAX_TICKET_LEN {
        return Err(RelayStatus::BadPreamble);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_datagrams_then_they_round_trip_and_are_never_quic() {
        let all = [
            Datagram::ProbeRequest { token: [7; 16], nonce: 300 },
            Datagram::ProbeReply { nonce: 300, observed: "[2001:db8::1]:40000".parse().expect("addr") },
            Datagram::Punch { nonce: u64::MAX },
        ];
        for d in all {
            let bytes = encode_datagram(&d).expect("encode");
            assert!(bytes.len() <= MAX_DATAGRAM_LEN, "{d:?} is {} bytes", bytes.len());
            assert!(is_ours(&bytes));
            // A QUIC packet has the fixed bit (0x40) set in its first byte.
            assert_eq!(bytes[0] & 0x40, 0);
            assert_eq!(decode_datagram(&bytes), Ok(d));
        }
    }

    #[test]
    fn given_bad_datagrams_then_refused() {
        assert!(decode_datagram(b"\x00W2Q\x02\x01").is_err(), "wrong magic");
        assert!(decode_datagram(&[0x00, b'W', b'2', b'P', 0x02, 0x80, 0x00]).is_err(), "over-long varint");
        let mut long = encode_datagram(&Datagram::Punch { nonce: 1 }).expect("encode");
        long.resize(MAX_DATAGRAM_LEN + 1, 0);
        assert!(decode_datagram(&long).is_err(), "oversized");
        let future = [0x00, b'W', b'2', b'P', 0x09];
        assert_eq!(decode_datagram(&future), Err(DecodeError::UnknownVariant(9)));
    }

    #[test]
    fn given_unknown_codes_then_they_decode_and_encode_back() {
        let bytes = [9u8];
        let kind: NatKind = crate::codec::decode_struct(&bytes).expect("decode");
        assert_eq!(kind, NatKind::Unknown(9));
        assert_eq!(encode(&kind).expect("encode"), bytes);
        assert_eq!(NatKind::from_code(2), NatKind::Cone);
    }

    #[test]
    fn given_nat_kinds_then_punching_is_possible_only_where_a_port_can_be_found() {
        use NatKind::*;
        assert!(Cone.can_punch(Cone));
        assert!(Open.can_punch(Symmetric));
        assert!(!Symmetric.can_punch(Symmetric));
        assert!(!Symmetric.can_punch(Cone));
        assert!(!Cone.can_punch(NoUdp));
        assert!(Unmeasured.can_punch(Cone), "unmeasured is tried");
    }

    #[test]
    fn given_a_preamble_then_its_head_gives_the_ticket_length() {
        let p = relay_preamble(&[1; 40]).expect("preamble");
        let head: [u8; RELAY_PREAMBLE_HEAD] = p[..RELAY_PREAMBLE_HEAD].try_into().expect("head");
        assert_eq!(relay_ticket_len(&head), Ok(40));
        assert_eq!(&p[RELAY_PREAMBLE_HEAD..], &[1; 40]);
        let mut bad = head;
        bad[4] = 2;
        assert_eq!(relay_ticket_len(&bad), Err(RelayStatus::BadPreamble));
        assert!(relay_preamble(&[0; MAX_TICKET_LEN + 1]).is_err());
    }
}
