//! The transport seam: how a byte stream to a peer or to the directory is made.
//!
//! Everything above this module takes a [`PeerStream`], any reliable, ordered byte stream: the Noise
//! session (`whatsap2p_link`) runs over it and proves who is at the other end, so a stream needs no
//! security of its own. Three transports make one: TCP (`dial` and `PeerListener`, here), QUIC over
//! the client's one UDP socket (`quic`, on the socket of `udp`), and TCP through the relay (`relay`).
//! Streams that peers open to us, whatever the transport, go through `crate::link::Links::adopt`, and
//! nothing outside this module names a socket type.
//!
//! # Layout
//! - `udp`: the shared UDP socket, which hands QUIC's datagrams to quinn and ours to `crate::reach`.
//! - `quic`: the QUIC endpoint on it (dial, accept), and why its TLS checks no certificate.
//! - `relay`: a stream through the relay (preamble, ticket, pairing).

pub(crate) mod quic;
pub(crate) mod relay;
pub(crate) mod udp;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::ClientError;

/// A reliable, ordered byte stream in both directions.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> ByteStream for T {}

/// The stream a link runs over, whatever transport made it.
pub type PeerStream = Box<dyn ByteStream>;

/// Connects to `addr` over TCP within `within`; `what` names the other side in errors.
pub(crate) async fn dial(
    addr: SocketAddr,
    within: Duration,
    what: &'static str,
) -> Result<PeerStream, ClientError> {
    let stream = tokio::time::timeout(within, TcpStream::connect(addr))
        .await
        .map_err(|_| ClientError::Timeout(what))?
        .map_err(ClientError::io(format!("{what} at {addr}")))?;
    // Frames are written whole; waiting to coalesce them only adds latency.
    let _ = stream.set_nodelay(true);
    Ok(Box::new(stream))
}

/// The client's UDP socket, bound on the IP of the TCP listener (so the two share a network) at
/// `port` (0: the system chooses).
pub(crate) fn bind_udp(listen: SocketAddr, port: u16) -> Result<std::net::UdpSocket, ClientError> {
    let addr = SocketAddr::new(listen.ip(), port);
    std::net::UdpSocket::bind(addr).map_err(ClientError::io(format!("binding UDP on {addr}")))
}

/// Where peers connect to us.
pub(crate) struct PeerListener(TcpListener);

impl PeerListener {
    /// Listens on `addr`.
    pub(crate) async fn bind(addr: SocketAddr) -> Result<Self, ClientError> {
        TcpListener::bind(addr)
            .await
            .map(Self)
            .map_err(ClientError::io(format!("listening for peers on {addr}")))
    }

    /// The address actually bound.
    pub(crate) fn local_addr(&self) -> Result<SocketAddr, ClientError> {
        self.0.local_addr().map_err(ClientError::io("reading the listen address"))
    }

    /// The next peer's stream and address.
    pub(crate) async fn accept(&self) -> std::io::Result<(PeerStream, SocketAddr)> {
        let (stream, addr) = self.0.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((Box::new(stream), addr))
    }
}
