//! Protocol versions and how two sides agree on one: the version 3 handshake (`docs/protocol.md`,
//! section 3.3). The server's and the client's handshakes call these; [`SPOKEN`] is what they speak.
//!
//! Until version 2 both sides had to speak exactly the same version. From version 3 on, the first
//! handshake message states the lowest and highest versions the initiator speaks, and the
//! responder answers, at the start of message 2, with the highest version both speak, or with its
//! own range when there is none, so the initiator can tell its user which side must upgrade.
//!
//! # Wire forms
//! - v2 Hello: `version: u16, purpose` and nothing after (what version 2 sends; a version 3
//!   responder reads it as the range `version..=version`).
//! - v3 Hello: `highest: u16, purpose, lowest: u16`, then whatever later versions append, which
//!   a version 3 side ignores. The v2 fields come first, so the two forms share a prefix.
//! - Message 2 after a v3 Hello starts with a [`HelloReply`]; after a v2 Hello it has the v2
//!   layout (no reply).
//!
//! Everything here is pure, so both sides' decisions are tested without sockets.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::{decode_prefix, encode, DecodeError, EncodeError};
use crate::handshake::{Hello, Purpose};

/// The only version a v2 Hello can state: sides from before negotiation speak exactly this one.
pub const V2: u16 = 2;

/// The first version that negotiates: its Hello states a range, its message 2 starts with a
/// [`HelloReply`]. Otherwise the same as version 2; what later comes only with a version (new
/// directory messages, say) is gated on the version a session agreed, `>= V3`.
pub const V3: u16 = 3;

/// Version 3, and directory sessions carry several messages per frame (`docs/protocol.md`,
/// section 2): a batch of pipelined requests or answers costs one seal and one open. Peer links
/// are unchanged from version 3.
pub const V4: u16 = 4;

/// The versions this code speaks: version 2 (so sides from before negotiation still talk to it)
/// to version 4.
pub const SPOKEN: Versions = Versions::between(V2, V4);

/// Whether a session that agreed on `version` for `purpose` carries several messages per frame.
pub fn batches(purpose: Purpose, version: u16) -> bool {
    purpose == Purpose::Directory && version >= V4
}

/// The versions one side speaks: every version from `lowest` to `highest`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Versions {
    lowest: u16,
    highest: u16,
}

/// Why a range of versions is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("version range {lowest} to {highest} is empty")]
pub struct EmptyRange {
    /// The stated lowest.
    pub lowest: u16,
    /// The stated highest, below the lowest.
    pub highest: u16,
}

impl Versions {
    /// The versions `lowest..=highest`; fails if `lowest > highest`.
    pub fn new(lowest: u16, highest: u16) -> Result<Self, EmptyRange> {
        if lowest > highest {
            return Err(EmptyRange { lowest, highest });
        }
        Ok(Self { lowest, highest })
    }

    /// `lowest..=highest` in a constant; fails to compile when the range is empty.
    pub const fn between(lowest: u16, highest: u16) -> Self {
        assert!(lowest <= highest, "an empty version range");
        Self { lowest, highest }
    }

    /// Exactly one version.
    pub fn only(version: u16) -> Self {
        Self { lowest: version, highest: version }
    }

    /// The oldest version spoken.
    pub fn lowest(&self) -> u16 {
        self.lowest
    }

    /// The newest version spoken.
    pub fn highest(&self) -> u16 {
        self.highest
    }

    /// Whether `version` is spoken.
    pub fn contains(&self, version: u16) -> bool {
        (self.lowest..=self.highest).contains(&version)
    }
}

impl fmt::Display for Versions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lowest == self.highest {
            write!(f, "version {}", self.lowest)
        } else {
            write!(f, "versions {} to {}", self.lowest, self.highest)
        }
    }
}

/// Why a text is not a range of versions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a range of protocol versions (LOWEST-HIGHEST, or one version)")]
pub struct BadRange(String);

impl std::str::FromStr for Versions {
    type Err = BadRange;

    /// `2-3`, or `4` for one version.
    fn from_str(s: &str) -> Result<Self, BadRange> {
        let bad = || BadRange(s.to_owned());
        let (lowest, highest) = s.split_once('-').unwrap_or((s, s));
        let (lowest, highest) =
            (lowest.trim().parse().map_err(|_| bad())?, highest.trim().parse().map_err(|_| bad())?);
        Self::new(lowest, highest).map_err(|_| bad())
    }
}

/// Two sides with no version in common. Its text names both ranges, for the user to see which side
/// must upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no protocol version in common: this side speaks {ours}, the other side speaks {theirs}")]
pub struct NoCommonVersion {
    /// What this side speaks.
    pub ours: Versions,
    /// What the other side speaks.
    pub theirs: Versions,
}

/// The version two sides use: the highest both speak.
pub fn negotiate(ours: Versions, theirs: Versions) -> Result<u16, NoCommonVersion> {
    let highest = ours.highest.min(theirs.highest);
    if highest < ours.lowest.max(theirs.lowest) {
        return Err(NoCommonVersion { ours, theirs });
    }
    Ok(highest)
}

/// The first fields of a v3 Hello, in their order on the wire.
#[derive(Serialize)]
struct HelloV3 {
    highest: u16,
    purpose: Purpose,
    lowest: u16,
}

/// The initiator's first handshake payload, v3 form: `highest, purpose, lowest`.
pub fn hello(purpose: Purpose, ours: Versions) -> Result<Vec<u8>, EncodeError> {
    encode(&HelloV3 { highest: ours.highest, purpose, lowest: ours.lowest })
}

/// Which form a Hello came in; it decides the layout of message 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloForm {
    /// From a side that predates negotiation: message 2 has the v2 layout, no [`HelloReply`].
    V2,
    /// Message 2 starts with a [`HelloReply`].
    V3,
}

/// A Hello as the responder reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfferedHello {
    /// Directory session or peer link.
    pub purpose: Purpose,
    /// What the initiator speaks.
    pub versions: Versions,
    /// Which form it came in.
    pub form: HelloForm,
}

/// Reads message 1's payload in either form. Bytes after a v3 Hello's known fields are ignored:
/// that is where later versions add fields. A Hello whose lowest is above its highest is
/// malformed.
pub fn read_hello(payload: &[u8]) -> Result<OfferedHello, DecodeError> {
    let (v2, rest): (Hello, _) = decode_prefix(payload)?;
    if rest.is_empty() {
        return Ok(OfferedHello {
            purpose: v2.purpose,
            versions: Versions::only(v2.version),
            form: HelloForm::V2,
        });
    }
    let (lowest, _later_fields): (u16, _) = decode_prefix(rest)?;
    let versions = Versions::new(lowest, v2.version).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok(OfferedHello { purpose: v2.purpose, versions, form: HelloForm::V3 })
}

/// The start of message 2's payload after a v3 Hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum HelloReply {
    /// Both sides use `version`; the rest of the payload is that version's message 2 payload.
    Agreed {
        /// The highest version both speak.
        version: u16,
    },
    /// Nothing in common. Nothing follows; the responder closes the connection after sending it.
    NoCommonVersion {
        /// The lowest version the responder speaks.
        lowest: u16,
        /// The highest version the responder speaks.
        highest: u16,
    },
}

/// What a responder answers to `hello`, speaking `ours`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The version both use, or why there is none.
    pub outcome: Result<u16, NoCommonVersion>,
    /// What message 2's payload starts with: the encoded [`HelloReply`] after a v3 Hello, nothing
    /// after a v2 Hello (whose sender knows no reply). When `outcome` is an error and the Hello
    /// was v3, this is the whole payload.
    pub prefix: Vec<u8>,
}

/// The responder's decision: the version to use, and how message 2 starts.
///
/// After a v2 Hello with nothing in common there is no way to tell the initiator in a form it
/// reads (a v2 initiator expects a v2 payload); the caller then closes the connection, except a
/// directory, which answers with a v2 `ServerHello` carrying its own highest version (a v2 client
/// shows "server speaks protocol version N").
pub fn answer(ours: Versions, hello: &OfferedHello) -> Result<Answer, EncodeError> {
    let outcome = negotiate(ours, hello.versions);
    let prefix = match (hello.form, &outcome) {
        (HelloForm::V2, _) => Vec::new(),
        (HelloForm::V3, Ok(version)) => encode(&HelloReply::Agreed { version: *version })?,
        (HelloForm::V3, Err(_)) => {
            encode(&HelloReply::NoCommonVersion { lowest: ours.lowest, highest: ours.highest })?
        }
    };
    Ok(Answer { outcome, prefix })
}

/// Why message 2 does not let the initiator go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The responder speaks nothing the initiator does.
    #[error(transparent)]
    NoCommonVersion(#[from] NoCommonVersion),
    /// The responder chose a version the initiator did not offer.
    #[error("the other side chose version {chosen}, but this side speaks {ours}")]
    NotOffered {
        /// What the responder chose.
        chosen: u16,
        /// What the initiator offered.
        ours: Versions,
    },
    /// The reply is not one.
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// The initiator's reading of message 2's payload after its v3 Hello stating `ours`: the version
/// to use and the rest of the payload (that version's message 2 payload).
pub fn read_reply(ours: Versions, payload: &[u8]) -> Result<(u16, &[u8]), ReplyError> {
    let (reply, rest): (HelloReply, _) = decode_prefix(payload)?;
    match reply {
        HelloReply::Agreed { version } if ours.contains(version) => Ok((version, rest)),
        HelloReply::Agreed { version } => Err(ReplyError::NotOffered { chosen: version, ours }),
        HelloReply::NoCommonVersion { lowest, highest } => {
            let theirs = Versions::new(lowest, highest).map_err(|e| DecodeError::Malformed(e.to_string()))?;
            if !rest.is_empty() {
                return Err(DecodeError::Trailing(rest.len()).into());
            }
            Err(NoCommonVersion { ours, theirs }.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(lowest: u16, highest: u16) -> Versions {
        Versions::new(lowest, highest).expect("range")
    }

    #[test]
    fn given_overlapping_ranges_then_the_highest_shared_version() {
        assert_eq!(negotiate(range(2, 3), range(2, 3)), Ok(3));
        assert_eq!(negotiate(range(2, 5), range(3, 4)), Ok(4));
        assert_eq!(negotiate(range(3, 4), Versions::only(4)), Ok(4));
        assert_eq!(negotiate(range(2, 3), range(3, 9)), Ok(3));
    }

    #[test]
    fn given_range_texts_then_parsed_or_refused() {
        assert_eq!("2-3".parse(), Ok(range(2, 3)));
        assert_eq!("4".parse(), Ok(Versions::only(4)));
        assert!("3-2".parse::<Versions>().is_err());
        assert!("x".parse::<Versions>().is_err());
        assert_eq!(SPOKEN, range(2, 4));
    }

    #[test]
    fn given_disjoint_ranges_then_an_error_naming_both() {
        let e = negotiate(range(3, 4), Versions::only(2)).expect_err("disjoint");
        assert_eq!(e, NoCommonVersion { ours: range(3, 4), theirs: Versions::only(2) });
        assert_eq!(
            e.to_string(),
            "no protocol version in common: this side speaks versions 3 to 4, the other side speaks version 2"
        );
        assert!(negotiate(range(5, 6), range(3, 4)).is_err());
        assert_eq!(Versions::new(4, 3), Err(EmptyRange { lowest: 4, highest: 3 }));
    }

    #[test]
    fn given_a_v2_hello_then_read_as_exactly_version_2_and_answered_in_the_v2_layout() {
        // What version 2 sends today: `Hello { version: 2, purpose: Peer }`.
        let v2 = encode(&Hello { version: 2, purpose: Purpose::Peer }).expect("encode");
        assert_eq!(v2, [2, 1]);
        let offered = read_hello(&v2).expect("v2 hello");
        assert_eq!(
            offered,
            OfferedHello { purpose: Purpose::Peer, versions: Versions::only(2), form: HelloForm::V2 }
        );
        let both = answer(range(2, 3), &offered).expect("answer");
        assert_eq!(both, Answer { outcome: Ok(2), prefix: Vec::new() });
        // A side that no longer speaks 2 says nothing a v2 side could read.
        let newer = answer(range(3, 4), &offered).expect("answer");
        assert!(newer.outcome.is_err() && newer.prefix.is_empty());
    }

    #[test]
    fn given_a_v3_hello_then_its_range_and_purpose_and_later_fields_are_ignored() {
        let bytes = hello(Purpose::Directory, range(2, 3)).expect("hello");
        assert_eq!(bytes, [3, 0, 2]);
        let want = OfferedHello { purpose: Purpose::Directory, versions: range(2, 3), form: HelloForm::V3 };
        assert_eq!(read_hello(&bytes), Ok(want));
        // A version 4 Hello appends fields; a version 3 side reads its own and ignores the rest.
        assert_eq!(read_hello(&[4, 0, 3, 0xff, 0xff, 7]), Ok(OfferedHello { versions: range(3, 4), ..want }));
    }

    #[test]
    fn given_a_bad_hello_then_malformed_or_non_canonical() {
        assert!(matches!(read_hello(&[3, 0, 4]), Err(DecodeError::Malformed(_))));
        assert!(matches!(read_hello(&[3, 9, 2]), Err(DecodeError::Malformed(_))));
        assert_eq!(read_hello(&[0x83, 0, 0, 2]), Err(DecodeError::NonCanonical));
        assert_eq!(read_hello(&[3, 0, 0x82, 0]), Err(DecodeError::NonCanonical));
        assert!(read_hello(&[3]).is_err());
    }

    #[test]
    fn given_a_v2_side_then_a_v3_hello_fails_on_its_trailing_byte() {
        // Version 2 reads the Hello with `decode_struct`: a v3 Hello is a v2 Hello and one more field.
        let bytes = hello(Purpose::Peer, range(2, 3)).expect("hello");
        assert_eq!(crate::codec::decode_struct::<Hello>(&bytes), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn given_a_v3_exchange_then_both_sides_use_the_highest_shared_version() {
        let (initiator, responder) = (range(2, 4), range(3, 5));
        let offered = read_hello(&hello(Purpose::Peer, initiator).expect("hello")).expect("read");
        let ans = answer(responder, &offered).expect("answer");
        assert_eq!(ans.outcome, Ok(4));
        let mut message_2 = ans.prefix.clone();
        message_2.extend_from_slice(b"proof");
        assert_eq!(message_2[..2], [0, 4]);
        assert_eq!(read_reply(initiator, &message_2), Ok((4, &b"proof"[..])));
    }

    #[test]
    fn given_a_responder_speaking_only_newer_versions_then_the_initiator_learns_both_ranges() {
        let (initiator, responder) = (range(2, 3), range(4, 5));
        let offered = read_hello(&hello(Purpose::Directory, initiator).expect("hello")).expect("read");
        let ans = answer(responder, &offered).expect("answer");
        assert_eq!(ans.outcome, Err(NoCommonVersion { ours: responder, theirs: initiator }));
        assert_eq!(ans.prefix, [1, 4, 5]);
        let err = read_reply(initiator, &ans.prefix).expect_err("no common version");
        assert_eq!(err, ReplyError::NoCommonVersion(NoCommonVersion { ours: initiator, theirs: responder }));
        assert_eq!(
            err.to_string(),
            "no protocol version in common: this side speaks versions 2 to 3, the other side speaks versions 4 to 5"
        );
    }

    #[test]
    fn given_a_responder_speaking_only_older_versions_then_the_initiator_learns_both_ranges() {
        let (initiator, responder) = (range(4, 5), range(2, 3));
        let offered = read_hello(&hello(Purpose::Peer, initiator).expect("hello")).expect("read");
        let ans = answer(responder, &offered).expect("answer");
        assert!(ans.outcome.is_err());
        assert!(matches!(read_reply(initiator, &ans.prefix), Err(ReplyError::NoCommonVersion(_))));
    }

    #[test]
    fn given_a_reply_choosing_a_version_not_offered_then_refused() {
        let reply = encode(&HelloReply::Agreed { version: 7 }).expect("encode");
        assert_eq!(
            read_reply(range(2, 3), &reply),
            Err(ReplyError::NotOffered { chosen: 7, ours: range(2, 3) })
        );
        assert!(matches!(read_reply(range(2, 3), &[1, 5, 4]), Err(ReplyError::Decode(_))));
        assert!(matches!(read_reply(range(2, 3), &[9]), Err(ReplyError::Decode(_))));
    }
}
