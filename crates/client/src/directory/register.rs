//! One attempt at a session with the directory: dial one address, run the handshake (agreeing on a
//! version, checking the directory's key against the profile's pin), prove our identity, and
//! register.
//!
//! **One key per directory.** Every instance of a directory has the same key, so the profile pins
//! one key for the directory, whatever the address: the directory is the set of addresses the user
//! gives, and their pins (one per address, under its text) must all be one key. An address
//! reached for the first time that presents that key is the same directory and is pinned too; one
//! that presents another key is refused as `SERVER KEY CHANGED`. A profile with no pin for any of
//! the addresses pins the key of the first one it reaches (trust on first use).

use std::net::SocketAddr;
use std::time::Duration;

use whatsap2p_link::{SessionReader, SessionWriter};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::{ClientToServer, ServerToClient};
use whatsap2p_proto::handshake::{Purpose, ServerHello};
use whatsap2p_proto::version::{HelloForm, Versions};
use whatsap2p_proto::{Number, PublicKey};

use super::address::{ServerAddr, Target};
use crate::config::Timeouts;
use crate::handshake::{self, Answer};
use crate::profile::Identity;
use crate::store::Store;
use crate::transport::{self, PeerStream};
use crate::ClientError;

/// What every attempt needs, beside the address it tries.
pub(crate) struct Params {
    /// Every address of the directory, as given.
    pub(crate) servers: Vec<ServerAddr>,
    pub(crate) number: Number,
    pub(crate) identity: Identity,
    /// Where we accept peers (published by the directory).
    pub(crate) listen: SocketAddr,
    pub(crate) store: Store,
    pub(crate) timeouts: Timeouts,
    /// The protocol versions we speak.
    pub(crate) versions: Versions,
}

type Writer = SessionWriter<PeerStream>;

/// A registered session, ready to be driven by the session task.
pub struct Registered {
    /// The address the directory publishes for our listener.
    pub published: SocketAddr,
    /// The server's key (pinned).
    pub server_key: PublicKey,
    /// The protocol version agreed in the handshake.
    pub version: u16,
    /// Where this session is.
    pub(crate) target: Target,
    /// What a version 3 session offers (its `Reachability`); `None` before version 3.
    pub reach: Option<super::Reach>,
    /// How often to send heartbeats: a third of the server's timeout, at most the configured interval.
    pub(crate) heartbeat: Duration,
    pub(crate) reader: SessionReader<PeerStream>,
    pub(crate) writer: Writer,
}

/// The key a directory presents must be the directory's (see the module's comment); pins it for
/// `given` on first use.
async fn check_server_key(p: &Params, given: &ServerAddr, presented: PublicKey) -> Result<(), ClientError> {
    let pins = p.store.server_pins(p.servers.iter().map(ToString::to_string).collect()).await?;
    match directory_key(&pins)? {
        Some(pinned) if pinned != presented => {
            Err(ClientError::ServerKeyChanged { server: given.to_string(), pinned, presented })
        }
        // Pins nothing when `given` has its pin already.
        _ => p.store.pin_server(&given.to_string(), &presented).await,
    }
}

/// The key pinned for the directory whose addresses have these `pins`, if any; an error when they
/// name two keys (the addresses are not one directory).
pub(crate) fn directory_key(pins: &[(String, PublicKey)]) -> Result<Option<PublicKey>, ClientError> {
    let Some((_, first)) = pins.first() else { return Ok(None) };
    if pins.iter().all(|(_, k)| k == first) {
        return Ok(Some(*first));
    }
    let pins = pins.iter().map(|(s, k)| format!("{s} has {k}")).collect::<Vec<_>>().join(", ");
    Err(ClientError::NotOneDirectory { pins })
}

/// Dials `target`, authenticates both ways and registers `p.listen`.
pub(crate) async fn register(target: &Target, p: &Params) -> Result<Registered, ClientError> {
    let what = format!("directory {}", target.addr);
    let addr = target.addr;
    let dial = || transport::dial(addr, p.timeouts.connect, "connecting to the directory");
    let context = &what;
    let check = |answer: Answer| async move {
        let server_hello: ServerHello = decode_struct(&answer.payload)
            .map_err(|e| ClientError::link(format!("handshake with {context}"))(e.into()))?;
        if server_hello.version != answer.version {
            // After a v2 hello: a directory that no longer speaks 2 names its own version.
            let text = match answer.form {
                HelloForm::V2 => {
                    format!("the directory no longer speaks version 2: it speaks {}", server_hello.version)
                }
                HelloForm::V3 => format!(
                    "the directory agreed to version {} but speaks {}",
                    answer.version, server_hello.version
                ),
            };
            return Err(ClientError::Directory(text));
        }
        let server_key = answer.remote_static.ok_or(ClientError::Directory("no server key".into()))?;
        check_server_key(p, &target.given, server_key).await?;
        let heartbeat = (Duration::from_millis(server_hello.heartbeat_timeout_ms) / 3)
            .clamp(Duration::from_millis(100), p.timeouts.heartbeat);
        Ok((server_key, heartbeat))
    };
    let stream = dial().await?;
    let (identity, number) = (&p.identity, &p.number);
    let handshake =
        handshake::initiate(stream, dial, identity, number, Purpose::Directory, p.versions, &what, check);
    let ((server_key, heartbeat), version, session) = tokio::time::timeout(p.timeouts.handshake, handshake)
        .await
        .map_err(|_| ClientError::Timeout("directory handshake"))??;
    let (mut reader, mut writer) = session.split();
    writer
        .send_msg(&ClientToServer::Register { listen: p.listen })
        .await
        .map_err(ClientError::link(format!("registering with {what}")))?;
    // A version 3 session says what it offers for NAT traversal right after the handshake, so
    // before it answers the registration.
    let mut reach = None;
    let answer = tokio::time::timeout(p.timeouts.request, async {
        loop {
            match reader.recv_msg::<ServerToClient>().await {
                Ok(Some(ServerToClient::Reachability { token, udp_port, relay })) if version >= 3 => {
                    reach = Some(super::Reach::new(addr, token, udp_port, relay));
                }
                other => return other,
            }
        }
    })
    .await
    .map_err(|_| ClientError::Timeout("registration"))?
    .map_err(ClientError::link(format!("registering with {what}")))?;
    match answer {
        Some(ServerToClient::Registered { listen }) => Ok(Registered {
            published: listen,
            server_key,
            version,
            target: target.clone(),
            reach,
            heartbeat,
            reader,
            writer,
        }),
        // A version 2 directory: words only.
        Some(ServerToClient::Refused { reason }) => Err(ClientError::Refused(reason)),
        Some(ServerToClient::Closed { code, reason }) => {
            Err(ClientError::Closed { number: p.number.clone(), code, reason })
        }
        // Too many new numbers from our address today: the time to wait comes with it.
        Some(ServerToClient::Limited { limit, retry_after_ms, .. }) => {
            Err(ClientError::limited(limit, retry_after_ms))
        }
        Some(other) => Err(ClientError::Directory(format!("unexpected answer to registration: {other:?}"))),
        None => Err(ClientError::Directory("server closed the connection during registration".into())),
    }
}
