//! The whatsap2p relay: where two clients that cannot reach each other directly both connect out,
//! present the same ticket from the directory, and get their bytes piped to each other. It also
//! answers UDP address probes on the same port number, so a client can tell its NAT's kind from the
//! directory's answer and this one's.
//!
//! It holds no key of any link: the clients run their Noise session end to end through it, and it
//! sees ciphertext. It needs no state shared with the directory either: tickets and probe tokens
//! carry a MAC under keys derived from the directory's static key ([`keys`]), so the relay runs in
//! the directory's process (`whatsap2p-server`, by default) or alone (`whatsap2p-server
//! --relay-only`) with the same key file.
//!
//! A connection (`docs/protocol.md`, section 8): the client writes `"W2PR" 01 len:u16 ticket`
//! within [`Limits::preamble_timeout`]; the relay checks the ticket and answers one
//! [`RelayStatus`] byte. The first side of a ticket waits up to [`Limits::partner_wait`]; when the
//! second comes both get `00` (Paired) and from then on each one's bytes are the other's, until
//! both close, one fails, the pair is idle for [`Limits::idle_timeout`] or moves
//! [`Limits::max_pair_bytes`]. Any other answer is followed by the close.
//!
//! # Layout
//! - [`keys`]: the ticket and probe-token keys, derived from the server key; sealing and opening.
//! - [`rendezvous`]: pairing by ticket, used tickets, the limits on pairs.
//! - [`pipe`]: the bytes both ways, idle and allowance.
//! - [`probe`]: UDP probe answers (shared with the directory).
//! - [`throttle`]: log lines for floods.
//! - [`run`] and [`serve_connection`] (here): the accept loop and one connection's life.

#![forbid(unsafe_code)]

pub mod keys;
pub mod pipe;
pub mod probe;
pub mod rendezvous;
pub mod throttle;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, info_span, warn, Instrument};
use whatsap2p_proto::nat::{relay_ticket_len, RelayStatus, RelayTicket, RELAY_PREAMBLE_HEAD};

pub use keys::{RelayKeys, TicketError};
pub use pipe::{Flow, PipeEnd};
pub use probe::ProbeOutcome;
use rendezvous::{Arrival, Rendezvous};
use throttle::LogThrottle;

/// The relay's limits. Every field has a default (the `DEFAULT_` constants) and a reason.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Pairs at once, waiting for their second side or piping. Each piping pair holds two
    /// connections and at most `2 × pipe::BUFFER` bytes.
    pub max_pairs: usize,
    /// Pairs at once that one number is a side of: one user cannot take the relay for themselves.
    pub pairs_per_number: usize,
    /// How long the first side of a ticket waits for the second before `NoPartner`.
    pub partner_wait: Duration,
    /// How long a connection has to send its whole preamble.
    pub preamble_timeout: Duration,
    /// A pair with no byte either way for this long is closed.
    pub idle_timeout: Duration,
    /// Bytes one pair may move, both ways together; then it is closed (the clients ask the
    /// directory for a new ticket if they still need the relay).
    pub max_pair_bytes: u64,
    /// Connections open at once, in every state; one over it is answered `Busy` and closed.
    pub max_connections: usize,
    /// Tickets valid for longer than this from now are refused (`BadTicket`): used tickets are
    /// remembered until they expire, so this bounds how long.
    pub max_ticket_lifetime: Duration,
}

impl Limits {
    /// Default [`Limits::max_pairs`].
    pub const DEFAULT_MAX_PAIRS: usize = 1024;
    /// Default [`Limits::pairs_per_number`]: links relayed to 8 contacts at once.
    pub const DEFAULT_PAIRS_PER_NUMBER: usize = 8;
    /// Default [`Limits::partner_wait`]: the directory sends both sides their offer at the same
    /// moment, so the second is normally there within a round trip or two.
    pub const DEFAULT_PARTNER_WAIT: Duration = Duration::from_secs(10);
    /// Default [`Limits::preamble_timeout`].
    pub const DEFAULT_PREAMBLE_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default [`Limits::idle_timeout`]: longer than a client keeps an idle link (10 minutes), so
    /// the relay never cuts a link its clients would keep.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(11 * 60);
    /// Default [`Limits::max_pair_bytes`]: 4 GiB, a 2 GiB file (the largest a client accepts) each
    /// way.
    pub const DEFAULT_MAX_PAIR_BYTES: u64 = 4 << 30;
    /// Default [`Limits::max_connections`]: both sides of every pair, and room for preambles.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 2 * Self::DEFAULT_MAX_PAIRS + 256;
    /// Default [`Limits::max_ticket_lifetime`].
    pub const DEFAULT_MAX_TICKET_LIFETIME: Duration = Duration::from_secs(5 * 60);
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pairs: Self::DEFAULT_MAX_PAIRS,
            pairs_per_number: Self::DEFAULT_PAIRS_PER_NUMBER,
            partner_wait: Self::DEFAULT_PARTNER_WAIT,
            preamble_timeout: Self::DEFAULT_PREAMBLE_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_pair_bytes: Self::DEFAULT_MAX_PAIR_BYTES,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_ticket_lifetime: Self::DEFAULT_MAX_TICKET_LIFETIME,
        }
    }
}

/// What the relay reports, for metrics (the server's Prometheus counters implement it). Every
/// method defaults to nothing.
pub trait Observer: Send + Sync + 'static {
    /// A UDP datagram came to a probe port.
    fn probe(&self, _outcome: ProbeOutcome) {}
    /// A connection was refused with `status`.
    fn relay_refused(&self, _status: RelayStatus) {}
    /// Two connections were paired.
    fn relay_paired(&self) {}
    /// A pair ended.
    fn relay_ended(&self, _flow: &Flow) {}
}

/// An observer that counts nothing.
pub struct Unobserved;

impl Observer for Unobserved {}

/// How long writing the one status byte may take before the client is considered gone.
const STATUS_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// What every connection of one relay shares.
pub struct Relay<S = TcpStream> {
    keys: RelayKeys,
    limits: Limits,
    observer: Arc<dyn Observer>,
    /// The first side of a ticket waits here for the second's stream and address.
    rendezvous: Arc<Rendezvous<(S, SocketAddr)>>,
    /// Refusals anyone can cause (garbage, guessed tickets): logged through the throttle.
    forged: LogThrottle,
    /// Cancelled when the relay shuts down.
    cancel: CancellationToken,
}

impl<S> Relay<S> {
    /// A relay checking tickets with `keys`, within `limits`, reporting to `observer`.
    pub fn new(keys: RelayKeys, limits: Limits, observer: Arc<dyn Observer>) -> Self {
        Self {
            keys,
            limits,
            observer,
            rendezvous: Rendezvous::new(limits),
            forged: LogThrottle::default(),
            cancel: CancellationToken::new(),
        }
    }

    /// Pairs waiting or piping now.
    pub fn pairs(&self) -> usize {
        self.rendezvous.pairs()
    }

    /// Ends every pair and every wait for a partner ([`run`] does it when it shuts down; a caller
    /// of [`serve_connection`] does it itself).
    pub fn shut_down(&self) {
        self.cancel.cancel();
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Serves the relay on `listener` (and probes on `udp`, if given) until `shutdown` completes; then
/// ends every pair and returns.
pub async fn run(
    listener: TcpListener,
    udp: Option<UdpSocket>,
    relay: Relay<TcpStream>,
    shutdown: impl Future<Output = ()>,
) {
    let relay = Arc::new(relay);
    let permits = Arc::new(Semaphore::new(relay.limits.max_connections));
    let mut background = JoinSet::new();
    if let Some(udp) = udp {
        let keys = relay.keys.clone();
        background.spawn(probe::serve(
            udp,
            move |token, _| keys.is_probe_token(token),
            relay.observer.clone(),
            relay.cancel.clone(),
        ));
    }
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!("relay: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // Tell it why without waiting for it: a full relay does not wait on anyone.
                    let _ = stream.try_write(&[status_byte(RelayStatus::Busy)]);
                    relay.observer.relay_refused(RelayStatus::Busy);
                    if let Some(n) = relay.forged.note(Instant::now()) {
                        warn!("Relay: refused {n} connection(s): {} open (latest {peer})", relay.limits.max_connections);
                    }
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let relay = relay.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    serve_connection(&relay, stream, peer).await;
                });
            }
        }
    }
    relay.cancel.cancel();
    while connections.join_next().await.is_some() {}
    while background.join_next().await.is_some() {}
}

fn status_byte(status: RelayStatus) -> u8 {
    // Every status this version sends is under 128: a one-byte varint.
    u8::try_from(status.code()).unwrap_or(u8::MAX)
}

/// Why a connection was refused, for its log line.
enum Refusal {
    Preamble(&'static str),
    Ticket(TicketError),
    Status(RelayStatus),
}

/// One connection, from its preamble to the end of its pair (or its refusal).
pub async fn serve_connection<S>(relay: &Relay<S>, stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = info_span!("relay", peer = %format_args!("{}/{}", peer.ip(), peer.port()));
    connection(relay, stream, peer).instrument(span).await
}

async fn connection<S>(relay: &Relay<S>, mut stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ticket = match tokio::time::timeout(relay.limits.preamble_timeout, read_preamble(&mut stream)).await {
        Ok(Ok(sealed)) => relay.keys.open(&sealed).map_err(Refusal::Ticket),
        Ok(Err(refusal)) => Err(refusal),
        Err(_) => Err(Refusal::Preamble("no whole preamble in time")),
    };
    let ticket = match ticket {
        Ok(t) => t,
        Err(refusal) => return refuse(relay, stream, peer, refusal, None).await,
    };
    let (mut partner_rx, slot) = match relay.rendezvous.arrive(&ticket, now_ms()) {
        Arrival::Refused(status) => {
            return refuse(relay, stream, peer, Refusal::Status(status), Some(&ticket)).await;
        }
        Arrival::Join(partner) => {
            if let Err((stream, _)) = partner.send((stream, peer)) {
                // The first side's task is gone (the relay is shutting down).
                let refusal = Refusal::Status(RelayStatus::NoPartner);
                refuse(relay, stream, peer, refusal, Some(&ticket)).await;
            }
            return;
        }
        Arrival::Wait(rx, slot) => (rx, slot),
    };
    // While it waits, a client writes nothing: a byte is a client that does not wait for its
    // status, the end of the stream one that left (its place is freed at once).
    let mut early = [0u8; 1];
    let waited = tokio::select! {
        _ = relay.cancel.cancelled() => return,
        r = tokio::time::timeout(relay.limits.partner_wait, &mut partner_rx) => r,
        r = stream.read(&mut early) => {
            if !slot.give_up() {
                // Paired at this very moment: the partner's stream is on the way, and this side's
                // early byte would be lost. Refuse both (dropping the partner's closes it).
                drop(partner_rx.await);
            }
            if matches!(r, Ok(1)) {
                let refusal = Refusal::Preamble("wrote before its status");
                return refuse(relay, stream, peer, refusal, Some(&ticket)).await;
            }
            let who = format!("{}/{}", peer.ip(), peer.port());
            info!("Relay: {who} left while waiting for its partner ({} and {})", ticket.a, ticket.b);
            return;
        }
    };
    let (second, second_peer) = match waited {
        Ok(Ok(second)) => second,
        Ok(Err(_)) => return,
        Err(_) if slot.give_up() => {
            let refusal = Refusal::Status(RelayStatus::NoPartner);
            return refuse(relay, stream, peer, refusal, Some(&ticket)).await;
        }
        // A partner took the place just as the wait ended: its stream is on the way.
        Err(_) => match partner_rx.await {
            Ok(second) => second,
            Err(_) => return,
        },
    };
    relay.observer.relay_paired();
    let started = Instant::now();
    let flow = pair(relay, stream, second).await;
    relay.observer.relay_ended(&flow);
    // The relay cannot tell which number is which side (both present the same ticket, and it
    // reads nothing of what they send): it names both, and the sides by their addresses, which
    // the directory's log ties to numbers.
    info!(
        "Relayed {} and {}: {} bytes from the first to connect ({}/{}), {} from the second ({}/{}), {:.1?}, {}",
        ticket.a,
        ticket.b,
        flow.first_to_second,
        peer.ip(),
        peer.port(),
        flow.second_to_first,
        second_peer.ip(),
        second_peer.port(),
        started.elapsed(),
        flow.end
    );
    drop(slot);
}

/// Reads the preamble's head and the sealed ticket (the caller bounds the time).
async fn read_preamble<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, Refusal> {
    let mut head = [0u8; RELAY_PREAMBLE_HEAD];
    stream.read_exact(&mut head).await.map_err(|_| Refusal::Preamble("closed within the preamble"))?;
    let len =
        relay_ticket_len(&head).map_err(|_| Refusal::Preamble("not a relay preamble this relay speaks"))?;
    // At most MAX_TICKET_LEN, checked by relay_ticket_len.
    let mut sealed = vec![0u8; len];
    stream.read_exact(&mut sealed).await.map_err(|_| Refusal::Preamble("closed within the ticket"))?;
    Ok(sealed)
}

/// Answers the refusal's status byte, closes, counts and logs it.
async fn refuse<S>(
    relay: &Relay<S>,
    mut stream: S,
    peer: SocketAddr,
    refusal: Refusal,
    ticket: Option<&RelayTicket>,
) where
    S: AsyncWrite + Unpin,
{
    let status = match &refusal {
        Refusal::Preamble(_) => RelayStatus::BadPreamble,
        Refusal::Ticket(_) => RelayStatus::BadTicket,
        Refusal::Status(s) => *s,
    };
    relay.observer.relay_refused(status);
    let _ = tokio::time::timeout(STATUS_WRITE_TIMEOUT, async {
        stream.write_all(&[status_byte(status)]).await?;
        stream.shutdown().await
    })
    .await;
    let (who, what) = (format!("{}/{}", peer.ip(), peer.port()), status_name(status));
    match (refusal, ticket) {
        // Anyone can cause these: a line each would let them fill the log.
        (Refusal::Preamble(why), _) => {
            if let Some(n) = relay.forged.note(Instant::now()) {
                warn!("Relay: refused {n} connection(s) ({what}: {why}; latest {who})");
            }
        }
        (Refusal::Ticket(e), _) => {
            if let Some(n) = relay.forged.note(Instant::now()) {
                warn!("Relay: refused {n} connection(s) ({what}: {e}; latest {who})");
            }
        }
        // A ticket the directory sealed: one of its users, at a rate the directory bounds.
        (Refusal::Status(_), Some(t)) => {
            warn!("Relay: refused {who} with the ticket of {} and {}: {what}", t.a, t.b)
        }
        (Refusal::Status(_), None) => warn!("Relay: refused {who}: {what}"),
    }
}

fn status_name(status: RelayStatus) -> &'static str {
    match status {
        RelayStatus::Paired => "Paired",
        RelayStatus::BadTicket => "BadTicket",
        RelayStatus::Expired => "Expired (the ticket's time is over)",
        RelayStatus::Used => "Used (two connections already presented the ticket)",
        RelayStatus::Busy => "Busy (a limit of pairs)",
        RelayStatus::NoPartner => "NoPartner (the other side did not come in time)",
        RelayStatus::BadPreamble => "BadPreamble",
        _ => "unknown status",
    }
}

/// Tells both sides they are paired, then pipes.
async fn pair<S>(relay: &Relay<S>, mut first: S, mut second: S) -> Flow
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let paired = [status_byte(RelayStatus::Paired)];
    let told = tokio::time::timeout(STATUS_WRITE_TIMEOUT, async {
        first.write_all(&paired).await?;
        second.write_all(&paired).await
    })
    .await;
    if !matches!(told, Ok(Ok(()))) {
        return Flow { first_to_second: 0, second_to_first: 0, end: PipeEnd::Failed };
    }
    pipe::pipe(first, second, relay.limits.idle_timeout, relay.limits.max_pair_bytes, &relay.cancel).await
}
