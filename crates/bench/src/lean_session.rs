//! A lean directory client for load generation: the same handshake, identity proof and messages as
//! `whatsap2p_client::directory::connect`, without a profile, a database or a supervising task, so
//! thousands of sessions fit in one process.
//!
//! Writes are batched like `redis-benchmark -P`: [`LeanSession::queue`] encrypts a message into a
//! buffer and [`LeanSession::flush`] puts everything queued on the wire in one `write`. This works
//! by giving the link layer a [`Tap`] as its stream: reads come from the socket, writes land in a
//! shared buffer that the session drains into the socket's write half.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpSocket;
use whatsap2p_link::{decode_or_skip, Handshake, SessionReader, SessionWriter, StaticKeypair};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::{ClientToServer, LookupIntent, ServerToClient};
use whatsap2p_proto::handshake::{Purpose, ServerHello};
use whatsap2p_proto::version;
use whatsap2p_proto::{IdentityProof, Number};

/// A user's keys and number, made up for the benchmark.
pub struct Account {
    /// The number it registers.
    pub number: Number,
    /// Ed25519 identity key that signs the proof.
    pub signing: SigningKey,
    /// Noise static key.
    pub noise: StaticKeypair,
}

impl Account {
    /// Fresh keys for `number`.
    pub fn generate(number: Number) -> anyhow::Result<Self> {
        let signing = SigningKey::generate(&mut rand::rngs::OsRng);
        let noise = StaticKeypair::generate().context("generating a Noise key")?;
        Ok(Self { number, signing, noise })
    }
}

/// A benchmark number: `prefix` (1 to 3 digits) followed by `index` on 9 digits.
pub fn number(prefix: u16, index: usize) -> anyhow::Result<Number> {
    Number::new(&format!("{prefix}{index:09}")).context("making a benchmark number")
}

/// Loopback source addresses used in turn, so tens of thousands of connections to one server port
/// never run out of ephemeral ports (or trip over `TIME_WAIT` left by an earlier figure).
static NEXT_SOURCE: AtomicU64 = AtomicU64::new(0);

fn next_source_ip() -> IpAddr {
    let k = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % 60_000;
    IpAddr::V4(Ipv4Addr::new(127, 1, (k / 240) as u8, (k % 240 + 1) as u8))
}

/// The stream handed to the link layer: reads from the socket, writes into `out`.
pub struct Tap {
    read: OwnedReadHalf,
    out: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tap {
    fn poll_write(self: Pin<&mut Self>, _: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One registered directory session.
pub struct LeanSession {
    reader: SessionReader<Tap>,
    writer: SessionWriter<Tap>,
    out: Arc<Mutex<Vec<u8>>>,
    wire: OwnedWriteHalf,
    spare: Vec<u8>,
    /// Where answers are opened.
    inbox: Vec<u8>,
    next_req: u32,
}

/// Writes what the link layer left in `out` to the socket, in one go.
async fn drain(out: &Arc<Mutex<Vec<u8>>>, spare: &mut Vec<u8>, wire: &mut OwnedWriteHalf) -> io::Result<()> {
    std::mem::swap(&mut *out.lock().unwrap_or_else(|p| p.into_inner()), spare);
    let result = wire.write_all(spare).await;
    spare.clear();
    result
}

impl LeanSession {
    /// Connects, runs the initiator handshake with an identity proof, and registers.
    pub async fn register(server: SocketAddr, account: &Account) -> anyhow::Result<Self> {
        let socket = TcpSocket::new_v4().context("creating a socket")?;
        socket.bind(SocketAddr::new(next_source_ip(), 0)).context("binding a loopback source")?;
        let stream = socket.connect(server).await.with_context(|| format!("connecting to {server}"))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        let (read, mut wire) = stream.into_split();
        let out = Arc::new(Mutex::new(Vec::with_capacity(256)));
        let mut spare = Vec::with_capacity(256);
        let tap = Tap { read, out: out.clone() };
        let mut hs = Handshake::initiator(tap, &account.noise)?;
        // As the client does: the version 3 hello, answered with the version agreed.
        hs.send(&version::hello(Purpose::Directory, version::SPOKEN)?).await?;
        drain(&out, &mut spare, &mut wire).await.context("sending the hello")?;
        let message = hs.recv().await?;
        let (agreed, rest) = version::read_reply(version::SPOKEN, &message)?;
        let server_hello: ServerHello = decode_struct(rest)?;
        if server_hello.version != agreed {
            bail!("server agreed to version {agreed} but speaks {}", server_hello.version);
        }
        let proof = IdentityProof::sign(
            &account.signing,
            account.number.clone(),
            &hs.hash(),
            &account.noise.public().0,
        );
        hs.send(&whatsap2p_proto::encode(&proof)?).await?;
        let mut link = hs.finish()?;
        if version::batches(Purpose::Directory, agreed) {
            link.set_batched();
        }
        let (reader, writer) = link.split();
        let mut session = Self { reader, writer, out, wire, spare, inbox: Vec::new(), next_req: 0 };
        // A fake listening address: nobody dials these accounts.
        let listen = SocketAddr::from(([127, 0, 0, 1], 9));
        session.queue(&ClientToServer::Register { listen }).await?;
        session.flush().await?;
        // A version 3 directory says how to reach it over UDP first (see `Reachability` in
        // docs/protocol.md); nobody probes from these accounts.
        loop {
            match session.next().await? {
                ServerToClient::Registered { .. } => return Ok(session),
                ServerToClient::Refused { reason } => bail!("registration refused: {reason}"),
                ServerToClient::Reachability { .. } => continue,
                other => bail!("unexpected answer to registration: {other:?}"),
            }
        }
    }

    /// Encrypts `msg` into the outgoing buffer, encoded on the stack, as `redis-benchmark` formats
    /// its commands into a buffer it keeps: the load generator's own costs are not the figure.
    pub async fn queue(&mut self, msg: &ClientToServer) -> anyhow::Result<()> {
        self.writer.queue_msg(msg).context("encoding a request")
    }

    /// Writes every queued message to the socket.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        self.writer.flush().await?;
        drain(&self.out, &mut self.spare, &mut self.wire).await.context("writing to the directory")
    }

    /// The next message from the server, opened into a buffer the session keeps. Cancel-safe.
    pub async fn next(&mut self) -> anyhow::Result<ServerToClient> {
        loop {
            let Some(n) = self.reader.recv_into(&mut self.inbox).await? else {
                bail!("the server closed the session");
            };
            let bytes = &self.inbox[..n];
            // Read as any client would, without the canonical-encoding check (a defence against
            // a hostile server, which this one is not; the protocol's tests and fuzz targets hold
            // the server to it): `redis-benchmark` does not check its replies' bytes either.
            if let Ok(msg) = postcard::from_bytes::<ServerToClient>(bytes) {
                return Ok(msg);
            }
            if let Some(msg) = decode_or_skip::<ServerToClient>(bytes)? {
                return Ok(msg);
            }
        }
    }

    /// Sends `depth` lookups of `wanted` in one write, then reads the `depth` answers, checking that
    /// each matches a request and says the number is online. Returns how many were answered.
    pub async fn lookup_batch(&mut self, wanted: &Number, depth: usize) -> anyhow::Result<u64> {
        let first = self.next_req;
        for _ in 0..depth {
            self.next_req = self.next_req.wrapping_add(1);
            let lookup = ClientToServer::Lookup {
                req: self.next_req,
                number: wanted.into(),
                intent: LookupIntent::Ping,
            };
            self.queue(&lookup).await?;
        }
        self.flush().await?;
        for i in 0..depth {
            match self.next().await? {
                ServerToClient::LookupResult { req, online, .. } => {
                    let expected = first.wrapping_add(i as u32 + 1);
                    if req != expected {
                        bail!("answer {req} while expecting {expected}");
                    }
                    if online.is_none() {
                        bail!("{wanted} looked offline (answer {i} of batch at req {first})");
                    }
                }
                other => bail!("unexpected answer to a lookup: {other:?}"),
            }
        }
        Ok(depth as u64)
    }

    /// Asks whether `wanted` is online (one round trip).
    pub async fn is_online(&mut self, wanted: &Number) -> anyhow::Result<bool> {
        self.next_req = self.next_req.wrapping_add(1);
        let req = self.next_req;
        self.queue(&ClientToServer::Lookup { req, number: wanted.into(), intent: LookupIntent::Ping })
            .await?;
        self.flush().await?;
        loop {
            match self.next().await? {
                ServerToClient::LookupResult { req: r, online, .. } if r == req => {
                    return Ok(online.is_some())
                }
                ServerToClient::LookupResult { .. } | ServerToClient::HeartbeatAck => continue,
                other => bail!("unexpected answer to a lookup: {other:?}"),
            }
        }
    }

    /// Sends a heartbeat (the answer is read, and ignored, by whoever calls [`LeanSession::next`]).
    pub async fn heartbeat(&mut self) -> anyhow::Result<()> {
        self.queue(&ClientToServer::Heartbeat).await?;
        self.flush().await
    }

    /// Says goodbye; the server closes the session.
    pub async fn logout(mut self) -> anyhow::Result<()> {
        self.queue(&ClientToServer::Logout).await?;
        self.flush().await
    }
}
