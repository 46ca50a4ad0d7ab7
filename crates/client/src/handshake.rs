//! The handshakes the client runs, in one place: dialing a peer, accepting one, and opening a
//! session with the directory.
//!
//! Every connection is a Noise `XX` handshake (see [`whatsap2p_link::Handshake`]) whose payloads
//! carry, in order: the initiator's hello (the protocol versions it speaks and the purpose); the
//! responder's answer (the version both use, then a peer's [`IdentityProof`] or the directory's
//! `ServerHello`); the initiator's own [`IdentityProof`]. An identity proof signs the handshake hash
//! with the Ed25519 key that owns a number, binding the number to this very session. How the two
//! sides agree on a version is `whatsap2p_proto::version` (the protocol's section 3.3); sending
//! and reading the hello and its answer happen here only.
//!
//! An initiator sends the version 3 hello. A responder from before version 3 refuses it (it reads
//! a byte too many) and closes before answering; the initiator then tries once more, on a new
//! connection, with the version 2 hello, if it still speaks 2. Someone who can cut connections can
//! force version 2 that way; version 2 has the same handshake, keys and proofs, so all it loses is
//! what later versions add, for that connection.

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;
use whatsap2p_link::{Handshake, LinkError, Session};
use whatsap2p_proto::codec::{decode_struct, encode};
use whatsap2p_proto::handshake::{Hello, Purpose};
use whatsap2p_proto::version::{self, HelloForm, ReplyError, Versions, V2};
use whatsap2p_proto::{DecodeError, IdentityProof, Number, PublicKey};

use crate::profile::Identity;
use crate::ClientError;

/// The responder's answer to our hello, for the initiator to check before proving itself.
pub struct Answer {
    /// The version both sides use.
    pub version: u16,
    /// The rest of the responder's message: that version's payload (an identity proof, or the
    /// directory's `ServerHello`).
    pub payload: Vec<u8>,
    /// The handshake hash the responder signed, if its answer is an identity proof.
    pub signed_hash: Vec<u8>,
    /// The responder's Noise static key, authenticated by the handshake.
    pub remote_static: Option<PublicKey>,
    /// Which hello it answers: after a v2 hello, a directory's `ServerHello` may name a version
    /// other than 2 (it no longer speaks 2).
    pub form: HelloForm,
}

/// How an opening (hello out, answer in) failed.
enum Opening {
    /// The responder closed before answering: after a version 3 hello, maybe one from before
    /// version 3 that refused it.
    Closed(ClientError),
    /// Anything else.
    Failed(ClientError),
}

/// Sends our hello in `form` over `stream` and reads the answer.
async fn open<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    identity: &Identity,
    purpose: Purpose,
    ours: Versions,
    form: HelloForm,
    context: &str,
) -> Result<(Handshake<S>, Answer), Opening> {
    let failed = |e: LinkError| Opening::Failed(ClientError::link(format!("handshake with {context}"))(e));
    let mut hs = Handshake::initiator(stream, &identity.noise).map_err(failed)?;
    let hello = match form {
        HelloForm::V2 => encode(&Hello { version: V2, purpose }),
        HelloForm::V3 => version::hello(purpose, ours),
    };
    hs.send(&hello.map_err(|e| failed(e.into()))?).await.map_err(failed)?;
    let signed_hash = hs.hash();
    let message = match hs.recv().await {
        Ok(m) => m,
        Err(e) if closed(&e) => return Err(Opening::Closed(ClientError::link(context)(e))),
        Err(e) => return Err(failed(e)),
    };
    let (version, payload) = match form {
        HelloForm::V2 => (V2, message),
        HelloForm::V3 => match version::read_reply(ours, &message) {
            Ok((version, rest)) => (version, rest.to_vec()),
            Err(ReplyError::NoCommonVersion(source)) => {
                return Err(Opening::Failed(ClientError::Version { context: context.to_owned(), source }))
            }
            Err(e) => return Err(failed(DecodeError::Malformed(e.to_string()).into())),
        },
    };
    let answer = Answer { version, payload, signed_hash, remote_static: hs.remote_static(), form };
    Ok((hs, answer))
}

/// Whether `e` says the responder closed (or reset) the connection before answering.
fn closed(e: &LinkError) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e {
        LinkError::ClosedDuringHandshake => true,
        LinkError::Io(io) => matches!(io.kind(), ConnectionReset | ConnectionAborted | UnexpectedEof),
        _ => false,
    }
}

/// The initiator's side over `stream`: sends our hello (the version 3 one, then once the version 2
/// one on a second connection made with `redial`, if the first was closed before an answer), lets
/// `check` judge the responder's answer, then proves our identity. Returns what `check` gave, the
/// version agreed and the session. `context` names the other side in errors ("directory
/// 10.0.0.1:7000"). The caller bounds the whole with its handshake deadline.
#[allow(clippy::too_many_arguments)]
pub async fn initiate<S, D, DF, T, F>(
    stream: S,
    redial: D,
    identity: &Identity,
    number: &Number,
    purpose: Purpose,
    ours: Versions,
    context: &str,
    check: impl FnOnce(Answer) -> F,
) -> Result<(T, u16, Session<S>), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    D: FnOnce() -> DF,
    DF: Future<Output = Result<S, ClientError>>,
    F: Future<Output = Result<T, ClientError>>,
{
    let first = open(stream, identity, purpose, ours, HelloForm::V3, context).await;
    let (mut hs, answer) = match first {
        Ok(opened) => opened,
        Err(Opening::Closed(e)) if ours.contains(V2) && ours.highest() > V2 => {
            info!("{context} closed after our version 3 hello ({e}): trying the version 2 hello");
            match open(redial().await?, identity, purpose, ours, HelloForm::V2, context).await {
                Ok(opened) => opened,
                Err(Opening::Closed(e) | Opening::Failed(e)) => return Err(e),
            }
        }
        Err(Opening::Closed(e) | Opening::Failed(e)) => return Err(e),
    };
    let version = answer.version;
    let checked = check(answer).await?;
    let link_err = || ClientError::link(format!("handshake with {context}"));
    let mine = IdentityProof::sign(&identity.signing, number.clone(), &hs.hash(), &identity.noise.public().0);
    hs.send(&encode(&mine).map_err(|e| link_err()(e.into()))?).await.map_err(link_err())?;
    let mut session = hs.finish().map_err(link_err())?;
    if version::batches(purpose, version) {
        session.set_batched();
    }
    Ok((checked, version, session))
}

/// A link to a peer, and the protocol version it agreed.
pub struct Linked<S> {
    /// The session.
    pub session: Session<S>,
    /// The version agreed in the handshake.
    pub version: u16,
}

/// Runs the handshake with peer `to` at `addr` over `stream` (and, to retry with the version 2
/// hello, a second connection made with `redial`): the responder must prove, in this very
/// session, that it owns `to` with the key `expected` (the one the directory lists and we pinned).
#[allow(clippy::too_many_arguments)]
pub async fn dial_peer<S, D, DF>(
    stream: S,
    redial: D,
    identity: &Identity,
    me: &Number,
    to: &Number,
    expected: PublicKey,
    addr: SocketAddr,
    ours: Versions,
) -> Result<Linked<S>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    D: FnOnce() -> DF,
    DF: Future<Output = Result<S, ClientError>>,
{
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
    let ((), version, session) =
        initiate(stream, redial, identity, me, Purpose::Peer, ours, &context, check).await?;
    Ok(Linked { session, version })
}

/// A peer that dialed us, proved who it is and was vouched for.
pub struct Accepted<S> {
    /// The number it proved.
    pub number: Number,
    /// The identity key it proved.
    pub key: PublicKey,
    /// The link.
    pub linked: Linked<S>,
}

/// The responder's side for a peer that dialed us from `addr`: takes its hello and agrees on a
/// version, proves our identity, checks its proof, and lets `vouch` decide whether the key it
/// proved owns the number it claims (the directory's word, and our pin).
pub async fn accept_peer<S, F>(
    stream: S,
    identity: &Identity,
    me: &Number,
    addr: SocketAddr,
    ours: Versions,
    vouch: impl FnOnce(Number, PublicKey) -> F,
) -> Result<Accepted<S>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Future<Output = Result<(), ClientError>>,
{
    let link_err = || ClientError::link(format!("handshake with peer {addr}"));
    let mut hs = Handshake::responder(stream, &identity.noise).map_err(link_err())?;
    let offered =
        version::read_hello(&hs.recv().await.map_err(link_err())?).map_err(|e| link_err()(e.into()))?;
    if offered.purpose != Purpose::Peer {
        return Err(ClientError::UnsupportedHello { addr, hello: format!("{offered:?}") });
    }
    let answer = version::answer(ours, &offered).map_err(|e| link_err()(e.into()))?;
    let version = match answer.outcome {
        Ok(version) => version,
        Err(source) => {
            // A version 3 initiator reads why; a version 2 one only sees the connection closed.
            if offered.form == HelloForm::V3 {
                hs.send(&answer.prefix).await.map_err(link_err())?;
            }
            return Err(ClientError::Version { context: format!("peer {addr}"), source });
        }
    };
    let mine = IdentityProof::sign(&identity.signing, me.clone(), &hs.hash(), &identity.noise.public().0);
    let mut payload = answer.prefix;
    payload.extend(encode(&mine).map_err(|e| link_err()(e.into()))?);
    hs.send(&payload).await.map_err(link_err())?;
    let hash = hs.hash();
    let payload = hs.recv().await.map_err(link_err())?;
    let proof: IdentityProof = decode_struct(&payload).map_err(|e| link_err()(e.into()))?;
    let claimed = proof.number.clone();
    let refuse = |reason: String| ClientError::PeerIdentity { number: claimed.clone(), addr, reason };
    let noise = hs.remote_static().ok_or_else(|| refuse("no static key".into()))?;
    proof.verify(&hash, &noise.0).map_err(|e| refuse(e.to_string()))?;
    vouch(claimed.clone(), proof.identity).await?;
    let session = hs.finish().map_err(link_err())?;
    Ok(Accepted { number: claimed, key: proof.identity, linked: Linked { session, version } })
}
