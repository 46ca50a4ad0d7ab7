//! Links over UDP: QUIC (`quinn`) on the client's shared socket, one bidirectional stream per link.
//!
//! QUIC brings what a punched UDP path needs and TCP cannot give through a NAT: a connection both
//! sides can open with packets that cross in flight, retransmission, congestion control and
//! keep-alives. Its TLS is not what authenticates anyone: each side shows a throwaway self-signed
//! certificate and the client accepts any certificate ([`AnyCertificate`]). That is safe here
//! because the Noise handshake runs inside the stream exactly as on TCP, and it is the Noise
//! handshake with its identity proofs (the directory's key for the number, the pinned key, the
//! proof over the handshake hash) that decides who is at the other end; TLS only adds a second,
//! unauthenticated layer of encryption, which costs a little CPU and nothing in safety.
//!
//! The side that wants the link (the Noise initiator) is always the QUIC client and opens the one
//! stream; the other side accepts it on its endpoint and runs the same accept path as for TCP.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::rustls;
use quinn::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use quinn::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use quinn::rustls::{DigitallySignedStruct, SignatureScheme};
use quinn::{Endpoint, EndpointConfig, IdleTimeout, TokioRuntime, TransportConfig, VarInt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::udp::SharedSocket;
use super::PeerStream;
use crate::ClientError;

/// What both sides say in TLS's ALPN, so a QUIC stranger speaking something else is refused early.
const ALPN: &[u8] = b"whatsap2p/1";
/// The name the client asks for; certificates are not checked (see the module's comment).
const SERVER_NAME: &str = "whatsap2p";

/// First estimate of the round trip: QUIC retransmits an unanswered Initial after about three
/// times this, so a low value makes the packets that cross a NAT just opened by a punch come
/// quickly (quinn's default, 333 ms, would make the first retry wait a second).
pub(crate) const INITIAL_RTT: Duration = Duration::from_millis(100);
/// Keep-alive on a live link: NATs forget an idle UDP mapping after 30 s or more (Linux: 30 s
/// unreplied, 120 s once both ways), so a packet every 15 s keeps the path open.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// A QUIC connection that hears nothing (not even a keep-alive) for this long is dead: the other
/// side is gone or the path broke. The link's own idle limit (`Timeouts::link_idle`) still closes
/// a quiet link that is alive.
pub(crate) const QUIC_IDLE: Duration = Duration::from_secs(60);
/// Flow-control window of the one stream: at least the file window (8 MiB of chunks in flight)
/// plus room for chat, so QUIC never throttles below what the transfer allows itself.
const STREAM_WINDOW: u32 = 16 * 1024 * 1024;
/// Incoming QUIC connections still handshaking at once (each then takes a place under
/// `MAX_PEER_CONNECTIONS` while its Noise handshake runs).
pub(crate) const MAX_QUIC_INCOMING: usize = 64;

/// The client's QUIC endpoint on its shared UDP socket: dials out and accepts.
#[derive(Clone)]
pub(crate) struct Quic {
    endpoint: Endpoint,
}

impl Quic {
    /// An endpoint on `socket`, with a fresh self-signed certificate.
    pub(crate) fn new(socket: Arc<SharedSocket>) -> Result<Self, ClientError> {
        let tls_err = |e: String| ClientError::Io {
            context: "setting up QUIC".into(),
            source: std::io::Error::other(e),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .map_err(|e| tls_err(e.to_string()))?;
        let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
        let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key.into())
            .map_err(|e| tls_err(e.to_string()))?;
        server_tls.alpn_protocols = vec![ALPN.to_vec()];
        let mut client_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        client_tls.alpn_protocols = vec![ALPN.to_vec()];
        let transport = Arc::new(transport_config());
        let server_crypto = QuicServerConfig::try_from(server_tls).map_err(|e| tls_err(e.to_string()))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server.transport_config(transport.clone());
        server.max_incoming(MAX_QUIC_INCOMING);
        // A peer behind a NAT may be re-mapped mid-link; QUIC follows it.
        server.migration(true);
        let client_crypto = QuicClientConfig::try_from(client_tls).map_err(|e| tls_err(e.to_string()))?;
        let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
        client.transport_config(transport);
        let mut endpoint = Endpoint::new_with_abstract_socket(
            EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(TokioRuntime),
        )
        .map_err(ClientError::io("starting the QUIC endpoint"))?;
        endpoint.set_default_client_config(client);
        Ok(Self { endpoint })
    }

    /// Opens a QUIC connection to `addr` and its stream, within `within`.
    pub(crate) async fn dial(&self, addr: SocketAddr, within: Duration) -> Result<PeerStream, ClientError> {
        let what = || format!("QUIC to {addr}");
        let connecting = self
            .endpoint
            .connect(addr, SERVER_NAME)
            .map_err(|e| ClientError::io(what())(std::io::Error::other(e)))?;
        let opened = async {
            let connection = connecting.await.map_err(|e| ClientError::io(what())(e.into()))?;
            let (send, recv) = connection.open_bi().await.map_err(|e| ClientError::io(what())(e.into()))?;
            Ok::<_, ClientError>(Box::new(QuicStream::new(connection, send, recv)) as PeerStream)
        };
        tokio::time::timeout(within, opened).await.map_err(|_| ClientError::Timeout("QUIC connect"))?
    }

    /// The next connection a peer opens to us; `None` once the endpoint is closed.
    pub(crate) async fn incoming(&self) -> Option<quinn::Incoming> {
        self.endpoint.accept().await
    }

    /// Closes every connection and stops accepting.
    pub(crate) fn close(&self) {
        self.endpoint.close(VarInt::from_u32(0), b"bye");
    }
}

/// Completes an incoming connection and takes the stream its peer opens, within `within`.
pub(crate) async fn open(incoming: quinn::Incoming, within: Duration) -> Result<PeerStream, String> {
    let opened = async {
        let connection = incoming.await.map_err(|e| e.to_string())?;
        let (send, recv) = connection.accept_bi().await.map_err(|e| e.to_string())?;
        Ok(Box::new(QuicStream::new(connection, send, recv)) as PeerStream)
    };
    tokio::time::timeout(within, opened).await.map_err(|_| format!("no stream within {within:?}"))?
}

fn transport_config() -> TransportConfig {
    let mut t = TransportConfig::default();
    t.initial_rtt(INITIAL_RTT);
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(IdleTimeout::try_from(QUIC_IDLE).ok());
    // One stream per link, opened by the dialing side.
    t.max_concurrent_bidi_streams(VarInt::from_u32(1));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    t.stream_receive_window(VarInt::from_u32(STREAM_WINDOW));
    t.receive_window(VarInt::from_u32(STREAM_WINDOW));
    t.send_window(u64::from(STREAM_WINDOW));
    t
}

/// How long a dropped stream's connection stays open for the peer to read what was written last:
/// dropping the last handle of a QUIC connection closes it at once, and bytes still unacknowledged
/// (a link's last frames) would be lost.
pub(crate) const LINGER: Duration = Duration::from_secs(3);

/// One QUIC stream as a [`PeerStream`]; holds its connection, which closes when the stream goes
/// (after at most [`LINGER`]).
struct QuicStream {
    connection: quinn::Connection,
    send: Option<quinn::SendStream>,
    recv: quinn::RecvStream,
}

impl QuicStream {
    fn new(connection: quinn::Connection, send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        Self { connection, send: Some(send), recv }
    }

    fn send(&mut self) -> std::io::Result<&mut quinn::SendStream> {
        self.send.as_mut().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        let (Some(mut send), Ok(runtime)) = (self.send.take(), tokio::runtime::Handle::try_current()) else {
            return;
        };
        let connection = self.connection.clone();
        // Ends by itself within LINGER: once the peer has read everything, or the connection ends.
        runtime.spawn(async move {
            let _ = send.finish();
            let _ = tokio::time::timeout(LINGER, send.stopped()).await;
            drop(connection);
        });
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(self.send()?), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.send()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(self.send()?).poll_shutdown(cx)
    }
}

/// Accepts any server certificate, checking only that the TLS handshake's signature is made with
/// it. Safe here, and only here: see the module's comment (Noise authenticates both sides).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use quinn::AsyncUdpSocket;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use whatsap2p_proto::nat::{decode_datagram, encode_datagram, Datagram};

    use super::*;

    fn endpoint() -> (Quic, Arc<SharedSocket>, tokio::sync::mpsc::Receiver<crate::transport::udp::Received>) {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket.set_nonblocking(true).expect("nonblocking");
        let (shared, ours) = SharedSocket::new(socket).expect("shared socket");
        (Quic::new(shared.clone()).expect("quic"), shared, ours)
    }

    #[tokio::test]
    async fn given_a_shared_socket_then_quic_streams_and_our_datagrams_both_arrive_unmixed() {
        let (a, a_socket, _a_ours) = endpoint();
        let (b, b_socket, mut b_ours) = endpoint();
        let b_addr = b_socket.local_addr().expect("addr");
        let accepting = tokio::spawn(async move {
            let incoming = b.incoming().await.expect("incoming");
            let mut stream = open(incoming, Duration::from_secs(5)).await.expect("open");
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf).await.expect("read");
            stream.write_all(b"world").await.expect("write");
            stream.flush().await.expect("flush");
            (buf, b)
        });
        let mut stream = a.dial(b_addr, Duration::from_secs(5)).await.expect("dial");
        // One of ours in the middle of QUIC's traffic: it goes to our queue, not to quinn.
        let punch = encode_datagram(&Datagram::Punch { nonce: 7 }).expect("encode");
        a_socket.send_ours(b_addr, &punch).expect("send ours");
        stream.write_all(b"hello").await.expect("write");
        stream.flush().await.expect("flush");
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"world");
        let (got, _b) = accepting.await.expect("join");
        assert_eq!(&got, b"hello");
        let (bytes, from) = tokio::time::timeout(Duration::from_secs(5), b_ours.recv())
            .await
            .expect("our datagram in time")
            .expect("queue open");
        assert_eq!(decode_datagram(&bytes), Ok(Datagram::Punch { nonce: 7 }));
        assert_eq!(from, a_socket.local_addr().expect("addr"));
        assert_eq!(b_socket.dropped(), 0);
    }

    #[tokio::test]
    async fn given_a_flood_of_our_datagrams_then_the_queue_is_bounded_and_the_rest_counted() {
        let (_b, b_socket, _b_ours) = endpoint();
        let b_addr = b_socket.local_addr().expect("addr");
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let punch = encode_datagram(&Datagram::Punch { nonce: 1 }).expect("encode");
        let flood = crate::transport::udp::OURS_QUEUE as u64 + 100;
        // In bursts the kernel's socket buffer holds, so every datagram reaches the socket.
        for burst in 0..flood.div_ceil(50) {
            for _ in 0..(flood - burst * 50).min(50) {
                sender.send_to(&punch, b_addr).expect("send");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Nobody reads the queue: what does not fit is dropped, never held.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while b_socket.dropped() < 100 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(b_socket.dropped() >= 100, "dropped {}", b_socket.dropped());
    }
}
