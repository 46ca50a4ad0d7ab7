//! Messages between a client and the directory server, after the handshake.
//!
//! The session's number and identity come from the handshake's [`crate::IdentityProof`], so no
//! request repeats them. Requests that expect an answer carry a `req` id echoed in the reply, so a
//! client may keep many in flight on one session.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::codec::WireEnum;
use crate::nat::{Candidate, NatKind, ProbeToken, RelayReason};
#[cfg(doc)]
use crate::nat::{Source, MAX_CANDIDATES};
use crate::{Number, PublicKey, WireNumber};

/// Most numbers in one [`ClientToServer::Watch`].
pub const MAX_WATCH_BATCH: usize = 1024;

/// Most numbers one session may watch.
pub const MAX_WATCHED: usize = 10_000;

/// Longest refusal or error text a server sends.
pub const MAX_REASON_LEN: usize = 256;

/// Client → directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClientToServer {
    /// Go online, reachable for peers at `listen`. An unspecified IP (`0.0.0.0`, `::`) means
    /// "the address you see me coming from".
    Register {
        /// Where this client accepts peer links.
        listen: SocketAddr,
    },
    /// Where is `number`, and which identity key owns it?
    Lookup {
        /// Echoed in the answer.
        req: u32,
        /// Who to look up. Any text: a number that is not valid gets
        /// [`ServerToClient::Error`] for this request, and the session stays.
        number: WireNumber,
        /// Why the client asks; only changes what the server logs.
        intent: LookupIntent,
    },
    /// Keeps the session alive; the server answers with [`ServerToClient::HeartbeatAck`].
    Heartbeat,
    /// Go offline now; the server closes the session.
    Logout,
    /// Push presence changes of these numbers to this session (added to what it already watches).
    /// The server answers with one [`ServerToClient::Presence`] per valid number, then pushes
    /// changes; invalid numbers get one [`ServerToClient::Error`] without a `req`, naming them.
    Watch {
        /// At most [`MAX_WATCH_BATCH`] numbers.
        numbers: Vec<WireNumber>,
    },
    /// (v3) The addresses this client says it may be reached at (its LAN addresses, usually) and
    /// what its NAT does; the directory adds the addresses it observed. Answered with
    /// [`ServerToClient::Error`] only when refused (more than [`MAX_CANDIDATES`], say).
    Announce {
        /// At most [`MAX_CANDIDATES`], each with [`Source::Local`].
        candidates: Vec<Candidate>,
        /// What the client's probes found.
        nat: NatKind,
    },
    /// (v3) "Introduce me to `number`": the directory answers with its candidates
    /// ([`ServerToClient::Introduction`]) and, at the same moment, sends it ours
    /// ([`ServerToClient::Introduced`]), so both sides try the paths between them together.
    Introduce {
        /// Echoed in the answer.
        req: u32,
        /// Who to reach.
        number: WireNumber,
    },
    /// (v3) "No direct path to `number` works": the directory answers with a relay ticket
    /// ([`ServerToClient::RelayOffer`]) and sends the same ticket to `number`.
    RelayRequest {
        /// Echoed in the answer.
        req: u32,
        /// Who to reach.
        number: WireNumber,
        /// Why, for the other side to show and the relay's log.
        reason: RelayReason,
    },
}

/// Why a client looks a number up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LookupIntent {
    /// The user asked whether the number is online.
    Ping,
    /// The client wants the address to open a link (or to check a connecting peer's key).
    Address,
}

impl WireEnum for ClientToServer {
    const KNOWN_VARIANTS: u32 = 8;
}

/// Where an online user listens, and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The peer listener's address.
    pub addr: SocketAddr,
    /// When the user registered, in milliseconds since the Unix epoch (server clock).
    pub since_unix_ms: u64,
}

/// Directory → client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ServerToClient {
    /// Registration accepted; `listen` is the address peers will be given.
    Registered {
        /// The address published for this client.
        listen: SocketAddr,
    },
    /// The session is refused (number bound to another key, store unavailable); the server closes
    /// it. Sent to version 2 sessions only: version 3 sessions get [`ServerToClient::Closed`] with
    /// a code instead.
    Refused {
        /// Why, for people.
        reason: String,
    },
    /// Answer to [`ClientToServer::Lookup`].
    LookupResult {
        /// The request's id.
        req: u32,
        /// Who was looked up.
        number: Number,
        /// The identity key bound to the number, if it ever registered.
        key: Option<PublicKey>,
        /// Where it listens, if online.
        online: Option<Location>,
    },
    /// Answer to [`ClientToServer::Heartbeat`].
    HeartbeatAck,
    /// A request failed; the session stays open.
    Error {
        /// The failing request's id, when it had one.
        req: Option<u32>,
        /// Why, for people.
        message: String,
    },
    /// A watched number's status: sent when the watch starts and whenever it changes.
    Presence {
        /// Who.
        number: Number,
        /// The identity key bound to it, if it ever registered.
        key: Option<PublicKey>,
        /// Where it listens, if online.
        online: Option<Location>,
    },
    /// The server ends this session, for the reason `code`; it closes the connection next.
    Closed {
        /// Why, for the client to act on.
        code: CloseCode,
        /// Why, for people (at most [`MAX_REASON_LEN`] characters).
        reason: String,
    },
    /// (v3) Sent once, right after the handshake: how this session's client finds its public UDP
    /// address and its NAT's kind ([`crate::nat`]).
    Reachability {
        /// What the client's UDP probes carry.
        token: ProbeToken,
        /// The directory's UDP port for probes, on the address the client reached it at; none when
        /// it has none.
        udp_port: Option<u16>,
        /// The relay, if the directory has one; an unspecified IP means the address the client
        /// reached the directory at. It answers probes on the same port number over UDP.
        relay: Option<SocketAddr>,
    },
    /// (v3) Answer to [`ClientToServer::Introduce`]: where `number` may be reached. `number` has
    /// been sent ours at the same moment.
    Introduction {
        /// The request's id.
        req: u32,
        /// Who.
        number: Number,
        /// Its candidates: what it announced and what the directory observed.
        candidates: Vec<Candidate>,
        /// What its NAT does.
        nat: NatKind,
    },
    /// (v3) `from` wants to reach this client and is trying these paths now: send punches to the
    /// UDP ones, so this side's NAT lets its packets in.
    Introduced {
        /// Who asked.
        from: Number,
        /// Its candidates.
        candidates: Vec<Candidate>,
        /// What its NAT does.
        nat: NatKind,
    },
    /// (v3) A relay ticket for reaching `number`: the answer to [`ClientToServer::RelayRequest`]
    /// (with its `req`), or, without one, sent to the side that was asked for.
    RelayOffer {
        /// The request's id, for the side that asked.
        req: Option<u32>,
        /// The other side.
        number: Number,
        /// The relay to connect to; an unspecified IP as in [`ServerToClient::Reachability`].
        relay: SocketAddr,
        /// The sealed ticket both sides present ([`crate::nat::RelayTicket`]).
        ticket: Vec<u8>,
        /// Why the link is relayed.
        reason: RelayReason,
    },
}

impl WireEnum for ServerToClient {
    const KNOWN_VARIANTS: u32 = 11;
}

/// Why the server ends a session on its own, for the client to act on (the text beside it is for
/// people). On the wire a varint; codes from a newer version decode as [`CloseCode::Unknown`], so
/// a client still learns that the session is over.
///
/// Version 3 sessions get every session-ending refusal as [`ServerToClient::Closed`] with one of
/// these; version 2 sessions get [`ServerToClient::Refused`] (words only) for the same refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// A newer session for the same number replaced this one. A client must not reconnect on its
    /// own: it would replace the newer session in turn.
    Replaced,
    /// The number is bound to another identity key. Final: reconnecting cannot help until a person
    /// acts (the right profile, or another number).
    NumberTaken,
    /// The directory cannot record the session right now (its store is unreachable). Temporary:
    /// retry with backoff.
    StoreUnavailable,
    /// The instance is shutting down. Reconnect at once, to another address of the directory if
    /// there is one.
    Shutdown,
    /// A code this version does not know (never one of the above: [`CloseCode::from_code`]
    /// makes a known code its variant). The session is over all the same; a client reconnects
    /// with backoff.
    Unknown(u32),
}

/// The known codes with their numbers and names, in order.
const CLOSE_CODES: [(CloseCode, u32, &str); 4] = [
    (CloseCode::Replaced, 0, "Replaced"),
    (CloseCode::NumberTaken, 1, "NumberTaken"),
    (CloseCode::StoreUnavailable, 2, "StoreUnavailable"),
    (CloseCode::Shutdown, 3, "Shutdown"),
];

impl CloseCode {
    /// The code's number on the wire.
    pub fn code(self) -> u32 {
        match self {
            Self::Unknown(n) => n,
            known => CLOSE_CODES.iter().find(|(c, ..)| *c == known).map_or(u32::MAX, |(_, n, _)| *n),
        }
    }

    /// The code with this number.
    pub fn from_code(n: u32) -> Self {
        CLOSE_CODES.iter().find(|(_, m, _)| *m == n).map_or(Self::Unknown(n), |(c, ..)| *c)
    }

    fn name(self) -> Option<&'static str> {
        CLOSE_CODES.iter().find(|(c, ..)| *c == self).map(|(.., name)| *name)
    }

    fn from_name(name: &str) -> Option<Self> {
        CLOSE_CODES.iter().find(|(.., n)| *n == name).map(|(c, ..)| *c)
    }
}

impl Serialize for CloseCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.name() {
            // Text formats (the test vectors) show the name; postcard writes the number.
            Some(name) if s.is_human_readable() => s.serialize_str(name),
            _ => s.serialize_u32(self.code()),
        }
    }
}

impl<'de> Deserialize<'de> for CloseCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return u32::deserialize(d).map(Self::from_code);
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Code(u32),
            Name(String),
        }
        match Text::deserialize(d)? {
            Text::Code(n) => Ok(Self::from_code(n)),
            Text::Name(name) => Self::from_name(&name)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown close code {name:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};

    #[test]
    fn given_an_ipv6_address_then_flow_info_and_scope_id_are_not_sent() {
        let plain = std::net::SocketAddrV6::new("fe80::1".parse().expect("ip"), 40000, 0, 0);
        let scoped = std::net::SocketAddrV6::new(*plain.ip(), 40000, 7, 3);
        let register = |listen: std::net::SocketAddrV6| ClientToServer::Register { listen: listen.into() };
        let bytes = encode(&register(scoped)).expect("encode");
        assert_eq!(bytes, encode(&register(plain)).expect("encode"));
        assert_eq!(bytes[..2], [0, 1]);
        assert_eq!(bytes.len(), 2 + 16 + 3);
        assert_eq!(decode::<ClientToServer>(&bytes), Ok(register(plain)));
    }

    #[test]
    fn given_close_codes_then_known_ones_have_names_and_unknown_ones_still_decode() {
        let closed = |code| ServerToClient::Closed { code, reason: "r".into() };
        assert_eq!(encode(&closed(CloseCode::Replaced)).expect("encode"), [6, 0, 1, b'r']);
        assert_eq!(decode::<ServerToClient>(&[6, 0x80, 1, 1, b'r']), Ok(closed(CloseCode::Unknown(128))));
        for (code, n, name) in CLOSE_CODES {
            assert_eq!((code.code(), CloseCode::from_code(n), code.name()), (n, code, Some(name)));
            assert_eq!(encode(&closed(code)).expect("encode")[1], n as u8);
        }
        assert_eq!(CloseCode::Unknown(4).name(), None);
    }
}
