//! The properties every decoder keeps on any input, as functions that panic when one is broken.
//!
//! The fuzz targets in `fuzz/` call them on generated inputs (built with the `fuzzing` feature);
//! the tests here call them on every input that once broke one, kept in `fuzz/regressions/TARGET/`.
//!
//! On any bytes: no decoder panics; whatever decodes encodes back to exactly those bytes (one
//! encoding per value); an unknown kind is reported only for a canonical kind number this version
//! does not know; the in-place chunk reader agrees with the ordinary decoder.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::chunk::view_chunk;
use crate::codec::{decode_prefix, decode_struct, kind, WireEnum};
use crate::directory::{ClientToServer, ServerToClient};
use crate::group::{GroupState, SignedGroupState};
use crate::handshake::{Hello, ServerHello};
use crate::peer::PeerMessage;
use crate::version::{self, HelloForm, HelloReply, Versions};
use crate::{decode, encode, DecodeError, IdentityProof, Number};

/// A property: panics when `data` breaks it.
pub type Property = fn(&[u8]);

/// Every target by name (the name of its file in `fuzz/fuzz_targets/`, and of its directory of
/// regressions), with the check it runs.
pub const TARGETS: &[(&str, Property)] = &[
    ("decode_wire", decode_wire),
    ("client_to_server", client_to_server),
    ("server_to_client", server_to_client),
    ("peer_message", peer_message),
    ("chunk_view", chunk_view),
    ("handshake_payloads", handshake_payloads),
    ("group_state", group_state),
    ("nat_datagrams", nat_datagrams),
    ("file_name", file_name),
];

/// A message enum's decoder: what decodes re-encodes to the same bytes, and "unknown kind" means
/// exactly a canonical kind at or above the known ones.
fn message<T: DeserializeOwned + Serialize + WireEnum + std::fmt::Debug>(data: &[u8]) -> Option<T> {
    match decode::<T>(data) {
        Ok(m) => {
            assert_eq!(encode(&m).ok().as_deref(), Some(data), "{m:?} has a second encoding");
            Some(m)
        }
        Err(DecodeError::UnknownVariant(k)) => {
            assert!(k >= T::KNOWN_VARIANTS && kind(data) == Some(k), "kind {k} called unknown");
            None
        }
        Err(_) => {
            if let Some(k) = kind(data) {
                assert!(k < T::KNOWN_VARIANTS, "a message of unknown kind {k} called malformed");
            }
            None
        }
    }
}

/// Any bytes as a directory request.
pub fn client_to_server(data: &[u8]) {
    if let Some(ClientToServer::Lookup { number, .. }) = message::<ClientToServer>(data) {
        // The server's conversion of a requested number never panics, and keeps nothing unchecked.
        if let Ok(n) = Number::try_from(&number) {
            assert_eq!(n.as_str(), number.as_str());
        }
        // Exactly the texts that are a number as typed, with nothing around it, convert.
        let exact = Number::new(number.as_str()).is_ok_and(|n| n.as_str() == number.as_str());
        assert_eq!(Number::try_from(&number).is_ok(), exact, "{number:?}");
    }
}

/// Any bytes as a UDP datagram (probe, reply, punch), a relay ticket and a relay preamble's head.
pub fn nat_datagrams(data: &[u8]) {
    use crate::nat::{self, Datagram, RelayTicket, RELAY_PREAMBLE_HEAD};
    match nat::decode_datagram(data) {
        Ok(d) => {
            assert_eq!(nat::encode_datagram(&d).ok().as_deref(), Some(data), "{d:?} has a second encoding")
        }
        Err(DecodeError::UnknownVariant(k)) => assert!(k >= <Datagram as WireEnum>::KNOWN_VARIANTS),
        Err(_) => {}
    }
    payload::<RelayTicket>(data);
    if let Ok(head) =
        <[u8; RELAY_PREAMBLE_HEAD]>::try_from(data.get(..RELAY_PREAMBLE_HEAD).unwrap_or_default())
    {
        if let Ok(len) = nat::relay_ticket_len(&head) {
            assert!((1..=nat::MAX_TICKET_LEN).contains(&len));
        }
    }
}

/// Any bytes as a directory answer.
pub fn server_to_client(data: &[u8]) {
    message::<ServerToClient>(data);
}

/// Any bytes as a peer message, and as a chunk read in place.
pub fn peer_message(data: &[u8]) {
    message::<PeerMessage>(data);
    chunk_view(data);
}

/// The in-place chunk reader agrees with the ordinary decoder on every input.
pub fn chunk_view(data: &[u8]) {
    let view = view_chunk(data);
    match (view, decode::<PeerMessage>(data)) {
        (Some(Ok(view)), Ok(PeerMessage::FileChunk { id, offset, data: bytes })) => {
            assert_eq!((view.id, view.offset, &data[view.data]), (id, offset, &bytes[..]));
        }
        (Some(Ok(view)), other) => panic!("{view:?} read as a chunk, decoded as {other:?}"),
        (_, Ok(PeerMessage::FileChunk { .. })) => panic!("a chunk the in-place reader refused"),
        (Some(Err(e)), Err(d)) => assert_eq!(
            std::mem::discriminant(&e),
            std::mem::discriminant(&d),
            "the in-place reader says {e}, the decoder {d}"
        ),
        _ => {}
    }
}

fn payload<T: DeserializeOwned + Serialize + std::fmt::Debug>(data: &[u8]) -> Option<T> {
    let p = decode_struct::<T>(data).ok()?;
    assert_eq!(encode(&p).ok().as_deref(), Some(data), "{p:?} has a second encoding");
    Some(p)
}

/// Any bytes as each handshake payload, in both Hello forms, and as a version reply.
pub fn handshake_payloads(data: &[u8]) {
    payload::<Hello>(data);
    payload::<ServerHello>(data);
    if let Some(proof) = payload::<IdentityProof>(data) {
        // Verifying never panics, whatever the key and signature bytes.
        let _ = proof.verify(data, data);
    }
    if let Ok(hello) = version::read_hello(data) {
        assert!(hello.versions.lowest() <= hello.versions.highest());
        let known = match hello.form {
            HelloForm::V2 => encode(&Hello { version: hello.versions.highest(), purpose: hello.purpose }),
            HelloForm::V3 => version::hello(hello.purpose, hello.versions),
        };
        let known = known.expect("a hello encodes");
        assert!(data.starts_with(&known), "a hello read from {data:02x?} is not its prefix {known:02x?}");
        if hello.form == HelloForm::V2 {
            assert_eq!(data.len(), known.len(), "a v2 hello is all there is");
        }
        if let Ok(ours) = Versions::new(2, 5) {
            if let Ok(answer) = version::answer(ours, &hello) {
                if let (HelloForm::V3, Ok(v)) = (hello.form, answer.outcome) {
                    assert_eq!(version::read_reply(hello.versions, &answer.prefix), Ok((v, &[][..])));
                }
            }
        }
    }
    if let Ok((reply, _rest)) = decode_prefix::<HelloReply>(data) {
        let _ = version::read_reply(Versions::only(3), data);
        let _ = reply;
    }
}

/// Any bytes as a signed group state, and the acceptance rule on states built from them.
pub fn group_state(data: &[u8]) {
    let me = Number::new("5550002").expect("a number");
    if let Some(signed) = payload::<SignedGroupState>(data) {
        let _ = signed.accept(None, &signed.signer, &signed.signer_key, &me);
        let _ = signed.accept(Some(&signed.state), &signed.signer, &signed.signer_key, &me);
    }
    // Two states from the bytes, the second signed by a member of it: the rule's decision must
    // keep its promises whatever the states hold.
    let Ok((held, rest)) = decode_prefix::<GroupState>(data) else { return };
    let Ok((new, _)) = decode_prefix::<GroupState>(rest) else { return };
    let Some(signer) = new.admins.iter().chain(&new.members).chain(&held.members).next().cloned() else {
        return;
    };
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let public = crate::PublicKey(key.verifying_key().to_bytes());
    let signed = new.clone().sign(signer.clone(), &key);
    if signed.accept(Some(&held), &signer, &public, &me).is_ok() {
        assert!(new.check().is_ok() && new.id == held.id && new.version > held.version);
        let mut without = held.members.clone();
        let left = without.remove(&signer) && new.members == without;
        assert!(held.admins.contains(&signer) || left, "{signer} changed a group it does not administer");
    }
    if signed.accept(None, &signer, &public, &me).is_ok() {
        assert!(new.check().is_ok() && new.members.contains(&me) && new.admins.contains(&signer));
    }
}

/// Every decoder at once (the first fuzz target; kept so its corpus stays useful).
pub fn decode_wire(data: &[u8]) {
    client_to_server(data);
    server_to_client(data);
    peer_message(data);
    handshake_payloads(data);
    group_state(data);
}

/// Any bytes as the name of a file offered by a peer (as UTF-8, invalid sequences replaced, as a
/// decoded `FileOffer` could only hold valid UTF-8): the safe name is one short, visible path
/// component and no device name, and making it safe again changes nothing; a new extension keeps
/// all of that.
pub fn file_name(data: &[u8]) {
    use crate::file_name::{is_invisible_format, is_reserved, safe_name, with_extension, MAX_NAME_BYTES};
    let offered = String::from_utf8_lossy(data);
    let safe = safe_name(&offered);
    let check = |name: &str| {
        assert!(!name.is_empty(), "empty name for {offered:?}");
        assert!(name.len() <= MAX_NAME_BYTES, "{} bytes: {name:?}", name.len());
        assert!(!name.contains(['/', '\\']), "a separator in {name:?}");
        assert!(!name.contains("..") && !name.starts_with('.'), "dots in {name:?}");
        assert!(!name.ends_with(['.', ' ']), "a trailing dot or space in {name:?}");
        assert!(!is_reserved(name), "a device name: {name:?}");
        let bad = name.chars().find(|&c| c.is_control() || is_invisible_format(c));
        assert!(bad.is_none(), "{bad:?} in {name:?}");
    };
    check(&safe);
    assert_eq!(safe_name(&safe), safe, "not stable");
    check(&with_extension(&safe, "png"));
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::TARGETS;

    /// Every input that once broke a property, kept in `fuzz/regressions/TARGET/`.
    #[test]
    fn given_inputs_that_once_failed_then_every_property_holds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions");
        let mut ran = 0;
        for (name, check) in TARGETS {
            let Ok(dir) = std::fs::read_dir(root.join(name)) else { continue };
            for entry in dir {
                let path = entry.expect("a regression file").path();
                let data = std::fs::read(&path).expect("readable");
                let caught = std::panic::catch_unwind(|| check(&data));
                assert!(caught.is_ok(), "{name} fails again on {}", path.display());
                ran += 1;
            }
        }
        assert!(ran > 0, "no regression inputs found under {}", root.display());
    }
}
