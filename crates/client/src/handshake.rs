//! The handshakes the client runs, in one place: dialing a peer, accepting one, and opening a
//! session with the directory.
//!
//! Every connection is a Noise `XX` handshake (see [`whatsap2p_link::Handshake`]) whose payloads
//! carry, in order: the initiator's [`Hello`] (protocol version and purpose); the responder's answer
//! (a peer's [`IdentityProof`], or the directory's `ServerHello`); the initiator's own
//! [`IdentityProof`]. An identity proof signs the handshake hash with the Ed25519 key that owns a
//! number, binding the number to this very session. What a hello says and how it is checked live in
//! [`hello`] and [`accepts`] only, so version negotiation changes these two and nothing else.

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use whatsap2p_link::{Handshake, Session};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::handshake::{Hello, Purpose};
use whatsap2p_proto::{IdentityProof, Number, PublicKey, PROTOCOL_VERSION};

use crate::profile::Identity;
use crate::ClientError;

/// The hello an initiator sends for `purpose`.
pub fn hello(purpose: Purpose) -> Hello {
    Hello { version: PROTOCOL_VERSION, purpose }
}

/// Whether a responder serving `purpose` takes `hello`.
pub fn accepts(hello: &Hello, purpose: Purpose) -> bool {
    hello.version == PROTOCOL_VERSION && hello.purpose == purpose
}

/// The responder's answer to our hello, for the initiator to check before proving itself.
pub struct Answer {
    /// The payload of the responder's message.
    pub payload: Vec<u8>,
    /// The handshake hash the responder signed, if its answer is an identity proof.
    pub signed_hash: Vec<u8>,
    /// The responder's Noise static key, authenticated by the handshake.
    pub remote_static: Option<PublicKey>,
}

/// The initiator's side: sends our hello, lets `check` judge the responder's answer, then proves our
/// identity. `context` names the other side in errors ("directory 10.0.0.1:7000").
pub async fn initiate<S, T, F>(
    stream: S,
    identity: &Identity,
    number: &Number,
    purpose: Purpose,
    context: &str,
    check: impl FnOnce(Answer) -> F,
) -> Result<(T, Session<S>), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Result<T, ClientError>>,
{
    let link_err = || ClientError::link(format!("handshake with {context}"));
    let mut hs = Handshake::initiator(stream, &identity.noise).map_err(link_err())?;
    hs.send(&whatsap2p_proto::encode(&hello(purpose)).map_err(|e| link_err()(e.into()))?)
        .await
        .map_err(link_err())?;
    let signed_hash = hs.hash();
    let payload = hs.recv().await.map_err(link_err())?;
    let checked = check(Answer { payload, signed_hash, remote_static: hs.remote_static() }).await?;
    let mine = IdentityProof::sign(&identity.signing, number.clone(), &hs.hash(), &identity.noise.public().0);
    hs.send(&whatsap2p_proto::encode(&mine).map_err(|e| link_err()(e.into()))?).await.map_err(link_err())?;
    Ok((checked, hs.finish().map_err(link_err())?))
}

/// Dials peer `to` over `stream` (at `addr`): the responder must prove, in this very session, that
/// it owns `to` with the key `expected` (the one the directory lists and we pinned).
pub async fn dial_peer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    identity: &Identity,
    me: &Number,
    to: &Number,
    expected: PublicKey,
    addr: SocketAddr,
) -> Result<Session<S>, ClientError> {
    let refuse = |reason: String| ClientError::PeerIdentity { number: to.clone(), addr, reason };
    let context = format!("{to} at {addr}");
    let check = |answer: Answer| async move {
        let proof: IdentityProof =
            decode_struct(&answer.payload).map_err(|e| refuse(format!("bad identity proof: {e}")))?;
        let noise = answer.remote_static.ok_or_else(|| refuse("no static key".into()))?;
        proof.verify(&answer.signed_hash, &noise.0).map_err(|e| refuse(e.to_string()))?;
        if proof.number != *to {
            return Err(refuse(format!("it says it is {}", proof.number)));
        }
        if proof.identity != expected {
            return Err(refuse(format!(
                "it presented key {}, the directory says {to} owns {expected}",
                proof.identity
            )));
        }
        Ok(())
    };
    let ((), session) = initiate(stream, identity, me, Purpose::Peer, &context, check).await?;
    Ok(session)
}

/// The responder's side for a peer that dialed us from `addr`: takes its hello, proves our identity,
/// checks its proof, and lets `vouch` decide whether the key it proved owns the number it claims
/// (the directory's word, and our pin). Returns who it is, with the session.
pub async fn accept_peer<S, F>(
    stream: S,
    identity: &Identity,
    me: &Number,
    addr: SocketAddr,
    vouch: impl FnOnce(Number, PublicKey) -> F,
) -> Result<(Number, PublicKey, Session<S>), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Result<(), ClientError>>,
{
    let link_err = || ClientError::link(format!("handshake with peer {addr}"));
    let mut hs = Handshake::responder(stream, &identity.noise).map_err(link_err())?;
    let hello: Hello =
        decode_struct(&hs.recv().await.map_err(link_err())?).map_err(|e| link_err()(e.into()))?;
    if !accepts(&hello, Purpose::Peer) {
        return Err(ClientError::UnsupportedHello { addr, hello: format!("{hello:?}") });
    }
    let mine = IdentityProof::sign(&identity.signing, me.clone(), &hs.hash(), &identity.noise.public().0);
    hs.send(&whatsap2p_proto::encode(&mine).map_err(|e| link_err()(e.into()))?).await.map_err(link_err())?;
    let hash = hs.hash();
    let payload = hs.recv().await.map_err(link_err())?;
    let proof: IdentityProof = decode_struct(&payload).map_err(|e| link_err()(e.into()))?;
    let claimed = proof.number.clone();
    let refuse = |reason: String| ClientError::PeerIdentity { number: claimed.clone(), addr, reason };
    let noise = hs.remote_static().ok_or_else(|| refuse("no static key".into()))?;
    proof.verify(&hash, &noise.0).map_err(|e| refuse(e.to_string()))?;
    vouch(claimed.clone(), proof.identity).await?;
    Ok((claimed, proof.identity, hs.finish().map_err(link_err())?))
}
