//! One client's directory session: handshake, identity check, then requests until logout, silence,
//! disconnect or replacement (a newer session of the number registered, see [`crate::roster`]).
//! Every exit path takes the user offline, unless another session of the number owns its presence
//! by then.
//!
//! A server holds tens of thousands of sessions, nearly all idle, so what an idle session keeps is
//! what counts (at most 4 KiB each, issue 6). An async fn keeps room for its largest state for as
//! long as it runs, so each phase other than the wait for the next frame (the handshake, the
//! identity claim, answering a request, the goodbye) runs in a boxed future of its own, freed when
//! it ends. Between requests a session holds its [`Online`] state, in one allocation of its size,
//! the wait itself, and the link's reader and writer, which keep no buffer while idle.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{info, info_span, warn, Instrument};
use whatsap2p_link::{decode_or_skip, Handshake, LinkError, SessionReader, SessionWriter};
use whatsap2p_proto::codec::decode_struct;
use whatsap2p_proto::directory::{
    ClientToServer, CloseCode, Location, LookupIntent, ServerToClient, MAX_REASON_LEN, MAX_WATCHED,
    MAX_WATCH_BATCH,
};
use whatsap2p_proto::handshake::{Purpose, ServerHello};
use whatsap2p_proto::version::{self, HelloForm, NoCommonVersion, V3};
use whatsap2p_proto::{IdentityProof, Number, NumberError, PublicKey, WireNumber};

use crate::identities::Binding;
use crate::limits::{Asker, Limited};
use crate::mailbox::{self, Ending};
use crate::metrics::Refusal;
use crate::presence::{Held, PresenceEntry, Renewal};
use crate::sources::{Slot, SourceAddr};
use crate::store::{Owner, SessionId};
use crate::watchers::Push;
use crate::Directory;

mod nat;

pub use nat::{MAX_MEETINGS, MEETING_WINDOW};

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// Most answers buffered before a write, when requests arrive pipelined.
const MAX_UNFLUSHED: usize = 64;

type Reader = SessionReader<TcpStream>;
type Writer = SessionWriter<TcpStream>;

/// A request as read: `None` when the client closed the connection.
type Received = Result<Option<ClientToServer>, LinkError>;

/// What woke a session waiting for requests.
enum Woken {
    Push(Result<Push, Ending>),
    Read(Result<Received, tokio::time::error::Elapsed>),
}

/// What the wait for requests does next.
enum Flow {
    /// Goes on with this request, read with the previous one (pipelined).
    Next(Received),
    /// Waits for something first ([`Online::step`]).
    Wait(Step),
    End(End),
}

/// A step of a session that waits (for the store, a write, ...): run boxed, outside the future of
/// the wait for requests.
enum Step {
    /// Writes a push.
    Push(Push),
    /// Answers what was read, then ends the session.
    Last(End),
    /// A lookup that the store answers.
    LookupStored(u32, Number),
    /// Any request but a lookup.
    Answer(ClientToServer),
    /// Writes out the answers queued.
    Flush,
}

/// Why a session ended, for the log line.
enum End {
    Logout,
    Silent,
    Closed,
    Shutdown,
    /// A newer session of the number registered (see [`crate::roster`]).
    Replaced,
    /// The first `Register` could not be stored; the client was told.
    Unavailable,
    /// The first `Register` found the number bound to another key; the client was told.
    Taken,
    Failed(String),
}

impl From<LinkError> for End {
    fn from(e: LinkError) -> Self {
        End::Failed(e.to_string())
    }
}

/// Serves one connection to the end, then gives back its `permit` and its address's slot (the
/// handshake part of it as soon as the handshake ends). Never panics on what the client sends.
///
/// What this returns is the whole task of a session, kept for as long as the client is online, and
/// tokio rounds a task up to 128 bytes, so it is built to hold pointers only: the connection's
/// parts travel in one box, the handshake runs boxed (its state is freed when it ends), the
/// session's state is a `Box<Online>` (which gives the permit and the slot back when it drops),
/// and the wait for requests is the only state of the future. This is not an `async fn` around the block: that
/// would keep a second copy of the arguments.
pub fn serve(
    stream: TcpStream,
    addr: SocketAddr,
    dir: Arc<Directory>,
    (permit, slot): (OwnedSemaphorePermit, Slot),
) -> impl Future<Output = ()> + Send + 'static {
    // The number joins the span once the handshake has proved it (`start`).
    let span = info_span!("conn", addr = %addr, number = tracing::field::Empty);
    let conn = Box::new(Conn { stream, addr, permit, slot });
    async move {
        let dir = &*dir;
        let Some(online) = Box::pin(start(conn, dir)).await else { return };
        online.run().await;
    }
    .instrument(span)
}

/// A connection accepted and not handshaken yet, and what it holds of the directory's capacity.
struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    permit: OwnedSemaphorePermit,
    slot: Slot,
}

/// A handshaken connection: what [`Online`] is made of besides the proof.
struct Link {
    addr: SocketAddr,
    reader: Reader,
    writer: Writer,
    permit: OwnedSemaphorePermit,
    slot: Slot,
}

/// The handshake, within its timeout and until shutdown: the session's state if it succeeds.
async fn start(conn: Box<Conn>, dir: &Directory) -> Option<Box<Online<'_>>> {
    let Conn { stream, addr, permit, mut slot } = *conn;
    info!("Got a new connection from {}/{}", addr.ip(), addr.port());
    let handshake = tokio::time::timeout(dir.config.handshake_timeout, handshake(stream, dir));
    let (ip, port) = (addr.ip(), addr.port());
    let (proof, version, reader, writer) = tokio::select! {
        _ = dir.shutdown.cancelled() => return None,
        r = handshake => match r {
            Err(_) => {
                let timeout = dir.config.handshake_timeout;
                dir.refuse(Refusal::Handshake, || warn!("Dropping {ip}/{port}: handshake not finished within {timeout:?}"));
                return None;
            }
            Ok(Err(HandshakeError::Version(e))) => {
                dir.refuse(Refusal::Handshake, || warn!("Refusing {ip}/{port}: {e}"));
                return None;
            }
            Ok(Err(e)) => {
                dir.refuse(Refusal::Handshake, || warn!("Dropping {ip}/{port}: handshake failed: {e}"));
                return None;
            }
            Ok(Ok(ok)) => ok,
        },
    };
    slot.handshake_done();
    tracing::Span::current().record("number", tracing::field::display(&proof.number));
    let link = Link { addr, reader, writer, permit, slot };
    Some(Online::new(dir, proof, version, link))
}

/// Why a handshake did not make a session.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    /// The link failed, or the client sent something that is not a handshake of ours.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The client speaks no version we do; it was told so when its Hello allowed it.
    #[error(transparent)]
    Version(#[from] NoCommonVersion),
}

impl From<whatsap2p_proto::DecodeError> for HandshakeError {
    fn from(e: whatsap2p_proto::DecodeError) -> Self {
        Self::Link(e.into())
    }
}

impl From<whatsap2p_proto::codec::EncodeError> for HandshakeError {
    fn from(e: whatsap2p_proto::codec::EncodeError) -> Self {
        Self::Link(e.into())
    }
}

/// What a finished handshake gives: the client's verified proof, the version agreed, the link.
type Handshaken = (IdentityProof, u16, Reader, Writer);

/// Responder side of `XX` for a directory session: agrees on a version (section 3.3 of the
/// protocol), then returns the client's verified proof.
async fn handshake(stream: TcpStream, dir: &Directory) -> Result<Handshaken, HandshakeError> {
    let mut hs = Handshake::responder(stream, &dir.key)?;
    let offered = version::read_hello(&hs.recv().await?)?;
    if offered.purpose != Purpose::Directory {
        return Err(whatsap2p_proto::DecodeError::Malformed(format!(
            "a hello for {:?}, not the directory",
            offered.purpose
        ))
        .into());
    }
    let ours = dir.config.versions;
    let answer = version::answer(ours, &offered)?;
    let heartbeat_timeout_ms = dir.config.heartbeat_timeout.as_millis() as u64;
    let (version, mut payload) = match answer.outcome {
        Ok(version) => (version, answer.prefix),
        Err(none) => {
            match offered.form {
                // The reply says it all: nothing follows it.
                HelloForm::V3 => hs.send(&answer.prefix).await?,
                // A v2 client reads only a ServerHello: ours names our version, which it shows.
                HelloForm::V2 => {
                    let hello = ServerHello { version: ours.highest(), heartbeat_timeout_ms };
                    hs.send(&whatsap2p_proto::encode(&hello)?).await?
                }
            }
            return Err(none.into());
        }
    };
    payload.extend(whatsap2p_proto::encode(&ServerHello { version, heartbeat_timeout_ms })?);
    hs.send(&payload).await?;
    let hash = hs.hash();
    let proof: IdentityProof = decode_struct(&hs.recv().await?)?;
    let remote = hs.remote_static().ok_or(LinkError::ClosedDuringHandshake)?;
    proof.verify(&hash, &remote.0).map_err(|e| {
        whatsap2p_proto::DecodeError::Malformed(format!("identity proof for {}: {e}", proof.number))
    })?;
    let mut session = hs.finish()?;
    if version::batches(Purpose::Directory, version) {
        session.set_batched();
    }
    let (reader, writer) = session.split();
    Ok((proof, version, reader, writer))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn short(reason: String) -> String {
    reason.chars().take(MAX_REASON_LEN).collect()
}

/// Most characters of a bad number quoted back in an error.
const QUOTED_NUMBER_LEN: usize = 24;

/// Most bad numbers one `Watch` error names.
const NAMED_BAD_NUMBERS: usize = 4;

/// The error for a request naming `text`, which is not a number.
fn invalid_number(text: &WireNumber, e: &NumberError) -> String {
    short(format!("invalid number {:?}: {e}", text.excerpt(QUOTED_NUMBER_LEN)))
}

/// Splits a watch list into valid numbers and, if some are not, one message naming them.
fn check_numbers(numbers: Vec<WireNumber>) -> (Vec<Number>, Option<String>) {
    let mut valid = Vec::with_capacity(numbers.len());
    let mut bad = Vec::new();
    for text in numbers {
        match Number::try_from(&text) {
            Ok(n) => valid.push(n),
            Err(e) => bad.push(invalid_number(&text, &e)),
        }
    }
    if bad.is_empty() {
        return (valid, None);
    }
    let mut message = format!("not watching {} of the numbers: ", bad.len());
    message.push_str(&bad[..bad.len().min(NAMED_BAD_NUMBERS)].join("; "));
    if bad.len() > NAMED_BAD_NUMBERS {
        message.push_str("; …");
    }
    (valid, Some(short(message)))
}

/// Why a session or registration that the store cannot record right now is refused.
const UNAVAILABLE: &str =
    "the directory cannot record registrations right now (its store is unreachable); try again later";

/// Ends a session of `version` for `code`: a version 3 client gets the code to act on, a version 2
/// client the words only (`Refused`), except for `Replaced`, which every client gets as `Closed` (a
/// version 2 client skips the kind it does not know, then sees the connection closed).
async fn end_with(
    writer: &mut Writer,
    version: u16,
    code: CloseCode,
    reason: String,
) -> Result<(), LinkError> {
    let reason = short(reason);
    let msg = if version >= V3 || code == CloseCode::Replaced {
        ServerToClient::Closed { code, reason }
    } else {
        ServerToClient::Refused { reason }
    };
    writer.send_msg(&msg).await
}

/// What a session keeps while its user is online.
struct Online<'d> {
    dir: &'d Directory,
    number: Number,
    key: PublicKey,
    /// Whether the number is bound to `key`: from the start if it was, else from this session's
    /// first `Register` ([`Online::bind`]). Until then the session holds nothing of the number.
    bound: bool,
    /// The protocol version agreed in the handshake: what the client understands.
    version: u16,
    session: SessionId,
    addr: SocketAddr,
    /// The number and address, hashed once for the request limits.
    asker: Asker,
    reader: Reader,
    writer: Writer,
    /// This session's bounded queue of pushes, through which the roster also ends it.
    push: (mailbox::Sender, mailbox::Receiver),
    watched: HashSet<Number>,
    /// Where the client registered, once it has: kept to put the entry back if the store lost it.
    location: Option<Location>,
    /// Answers fed to the writer and not written yet.
    unflushed: usize,
    /// Where the frames of a batch of pipelined requests are opened; empty (unallocated) between
    /// batches.
    batch: Vec<u8>,
    /// Lookups among them, for the metrics.
    looked_up: u32,
    /// The token this session's UDP probes carry: set for version 3 sessions (see `nat`).
    token: Option<whatsap2p_proto::nat::ProbeToken>,
    /// Introductions and relay requests asked for lately (see `nat`).
    meetings: nat::MeetingRate,
}

impl Drop for Online<'_> {
    fn drop(&mut self) {
        // On every way out, refused at the start or closed at the end.
        let dir = self.dir;
        dir.roster.leave(&self.number, self.session);
        dir.sources.leave(SourceAddr::from(self.addr.ip()));
        dir.connections.add_permits(1);
    }
}

impl<'d> Online<'d> {
    /// The state of a session whose handshake just proved `proof`; it takes all of `proof` so the
    /// rest of it (the signature) is not kept beside it.
    fn new(dir: &'d Directory, proof: IdentityProof, version: u16, link: Link) -> Box<Self> {
        let Link { addr, reader, writer, permit, slot } = link;
        // Its place among the directory's connections and its address's, given back in `drop`:
        // the guards would cost every held session 40 bytes.
        permit.forget();
        slot.keep();
        let asker = dir.limits.asker(&proof.number, SourceAddr::from(addr.ip()));
        let session = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let push = mailbox::mailbox();
        dir.roster.join(&proof.number, session, push.0.clone());
        Box::new(Self {
            dir,
            asker,
            number: proof.number,
            key: proof.identity,
            bound: false,
            version,
            session,
            addr,
            reader,
            writer,
            push,
            watched: HashSet::new(),
            location: None,
            unflushed: 0,
            batch: Vec::new(),
            looked_up: 0,
            token: None,
            meetings: Default::default(),
        })
    }

    async fn run(mut self: Box<Self>) {
        if !Box::pin(self.check_binding()).await {
            return;
        }
        if self.bound && !Box::pin(self.hold()).await {
            return;
        }
        info!("Connected: {}", self.number);
        self.dir.metrics.session_opened(true);
        // Right after the handshake, before any answer: a version 3 client reads it first. Boxed,
        // like every phase but the wait for requests (see the module's comment).
        let end = match Box::pin(self.send_reachability()).await {
            Ok(()) => self.requests().await,
            Err(e) => e.into(),
        };
        Box::pin(self.close(end)).await;
    }

    /// Makes this the number's only session, replacing any other (one session per number), once
    /// the number is bound to its key. Refuses the session when the store cannot record it.
    async fn hold(&mut self) -> bool {
        // In the roster since `Online::new`, so a session that replaces this one at once finds it.
        Box::pin(self.take_over()).await
    }

    async fn take_over(&mut self) -> bool {
        let (dir, number) = (self.dir, &self.number);
        match dir.presence.take_over(number, self.owner(), self.key).await {
            Ok(applied) => {
                if let Some(change) = applied {
                    dir.apply(change).await;
                }
                true
            }
            Err(e) => {
                warn!("Refused {number}: {e}");
                dir.metrics.refused(Refusal::StoreUnavailable);
                let _ = self.end(CloseCode::StoreUnavailable, UNAVAILABLE.into()).await;
                let _ = self.writer.close().await;
                false
            }
        }
    }

    /// The protocol version this session agreed in its handshake: messages a later version adds
    /// go only to sessions whose version has them.
    fn version(&self) -> u16 {
        self.version
    }

    /// Ends the session for `code` (see [`end_with`]).
    async fn end(&mut self, code: CloseCode, reason: String) -> Result<(), LinkError> {
        end_with(&mut self.writer, self.version, code, reason).await
    }

    /// This session, as presence entries name it.
    fn owner(&self) -> Owner {
        Owner { instance: self.dir.instance, session: self.session }
    }

    /// Checks the number's binding at the end of the handshake: refuses the session (telling the
    /// client why) when the number belongs to another key or the store fails. A number bound to
    /// nobody stays so until the session registers ([`Online::bind`]): a handshake binds nothing.
    async fn check_binding(&mut self) -> bool {
        match self.dir.identities.key_of(&self.number).await {
            Ok(None) => true,
            Ok(Some(owner)) if owner == self.key => {
                self.bound = true;
                true
            }
            Ok(Some(owner)) => {
                self.refuse_taken(owner).await;
                false
            }
            Err(e) => {
                self.refuse_unavailable(e).await;
                false
            }
        }
    }

    /// Binds the number to the session's key at its first `Register`, within its address's
    /// registrations of new numbers per day, then makes this the number's session. A limit is
    /// answered (the session stays, unregistered); a number bound to another key meanwhile, or a
    /// store that fails, ends the session as at the handshake.
    async fn bind(&mut self) -> Result<Option<ServerToClient>, End> {
        // Spent even if the number turns out to be bound already: to this key, that is a race
        // between two sessions of one user; to another, the attempt of a squatter.
        if let Err(limited) = self.dir.limits.new_number(SourceAddr::from(self.addr.ip())) {
            return Ok(Some(self.limited(None, limited)));
        }
        let (number, key) = (&self.number, self.key);
        match self.dir.identities.claim(number, &key).await {
            Ok(Binding::New) => info!("Bound {number} to key {key}"),
            Ok(Binding::Matches) => {}
            Ok(Binding::Conflict { owner }) => {
                self.refuse_taken(owner).await;
                return Err(End::Taken);
            }
            Err(e) => {
                self.refuse_unavailable(e).await;
                return Err(End::Unavailable);
            }
        }
        self.bound = true;
        if !Box::pin(self.hold()).await {
            return Err(End::Unavailable);
        }
        Ok(None)
    }

    /// Refuses the session: its number is bound to `owner`, not its key.
    async fn refuse_taken(&mut self, owner: PublicKey) {
        let (number, key, addr) = (&self.number, self.key, self.addr);
        let (ip, port) = (addr.ip(), addr.port());
        self.dir.refuse(Refusal::NumberTaken, || {
            warn!("Refused {number} from {ip}/{port}: number is bound to key {owner}, not {key}")
        });
        let reason = format!("number {number} is registered to another key");
        let _ = self.end(CloseCode::NumberTaken, reason).await;
        let _ = self.writer.close().await;
    }

    /// Refuses the session: the store cannot say or record whose its number is.
    async fn refuse_unavailable(&mut self, e: crate::StoreError) {
        warn!("Refused {}: {e}", self.number);
        self.dir.metrics.refused(Refusal::StoreUnavailable);
        let _ = self.end(CloseCode::StoreUnavailable, UNAVAILABLE.into()).await;
        let _ = self.writer.close().await;
    }

    /// The answer to a request refused by a limit: `Limited` for a version 3 session, an `Error`
    /// naming the limit for a version 2 one. Logged within the log's budget.
    fn limited(&self, req: Option<u32>, limited: Limited) -> ServerToClient {
        let Limited { limit, refusal, retry_after } = limited;
        let (number, ip) = (&self.number, self.addr.ip());
        self.dir.refuse(refusal, || info!("Limited {number} from {ip}: {limit}, retry in {retry_after:?}"));
        let retry_after_ms = limited.retry_after_ms();
        if self.version >= V3 {
            ServerToClient::Limited { req, limit, retry_after_ms }
        } else {
            let message =
                format!("over the directory's limit of {limit}; retry in {:.1} s", retry_after.as_secs_f64());
            ServerToClient::Error { req, message }
        }
    }

    /// Requests until the session ends. This wait is the state a held session keeps: everything
    /// that waits besides it runs boxed ([`Online::step`]), so that the future holds the wait's
    /// state and nothing else.
    async fn requests(&mut self) -> End {
        // A request already read while answering the previous one (see `answer`).
        let mut ready: Option<Received> = None;
        let mut last_frame = tokio::time::Instant::now();
        loop {
            // Moved out, not taken: a moved-out `ready` is not kept across the awaits below, where
            // a `None` left in it would be (it would be dropped at the next assignment).
            let received = ready;
            let flow = match received {
                Some(received) => self.handle(received, last_frame),
                None => {
                    let woken = tokio::select! {
                        // A push, or the roster ending the session.
                        push = self.push.1.recv() => Woken::Push(push),
                        // The deadline counts from the client's last frame: pushes we send do not
                        // keep it alive.
                        r = tokio::time::timeout_at(
                            last_frame + self.dir.config.heartbeat_timeout,
                            self.reader.recv_msg::<ClientToServer>(),
                        ) => Woken::Read(r),
                    };
                    match woken {
                        Woken::Push(Ok(push)) => Flow::Wait(Step::Push(push)),
                        Woken::Push(Err(Ending::Replaced)) => return End::Replaced,
                        Woken::Push(Err(Ending::Shutdown)) => return End::Shutdown,
                        Woken::Read(Err(_)) => return End::Silent,
                        Woken::Read(Ok(received)) => {
                            // A batch of requests begins: the one clock read for all of it (the
                            // pipelined requests that follow came in about now too).
                            last_frame = tokio::time::Instant::now();
                            self.handle(received, last_frame)
                        }
                    }
                }
            };
            ready = match flow {
                Flow::Next(next) => Some(next),
                Flow::Wait(step) => match Box::pin(self.step(step)).await {
                    Ok(next) => next,
                    Err(end) => return end,
                },
                Flow::End(end) => return end,
            };
        }
    }

    /// A request as read, without waiting: a lookup answered from memory, the most frequent
    /// request by far, is queued here; anything else is a [`Step`].
    fn handle(&mut self, received: Received, now: tokio::time::Instant) -> Flow {
        let msg = match received {
            Ok(Some(m)) => m,
            Ok(None) => return Flow::Wait(Step::Last(End::Closed)),
            Err(e) => return Flow::Wait(Step::Last(e.into())),
        };
        let reply = match msg {
            ClientToServer::Lookup { req, number, intent } => {
                match self.lookup_now(req, &number, intent, now) {
                    Ok(reply) => reply,
                    Err(wanted) => return Flow::Wait(Step::LookupStored(req, wanted)),
                }
            }
            msg => return Flow::Wait(Step::Answer(msg)),
        };
        match self.queue(Some(reply)) {
            Ok(Some(next)) => Flow::Next(next),
            Ok(None) => Flow::Wait(Step::Flush),
            Err(e) => Flow::End(e.into()),
        }
    }

    /// What [`Online::handle`] could not do without waiting; the next request if it was already
    /// read.
    async fn step(&mut self, step: Step) -> Result<Option<Received>, End> {
        let reply = match step {
            Step::Push(push) => {
                self.writer.send_msg(&*push).await?;
                self.dir.metrics.pushes(1, 0);
                return Ok(None);
            }
            Step::Last(end) => {
                // The requests read before the end (or before a broken one) are answered; the
                // session ends whatever this gives.
                if self.unflushed > 0 {
                    let _ = self.write_batch().await;
                }
                return Err(end);
            }
            Step::LookupStored(req, wanted) => Some(self.lookup_stored(req, wanted).await),
            Step::Answer(msg) => self.answer(msg).await?,
            Step::Flush => None,
        };
        match self.queue(reply)? {
            Some(next) => Ok(Some(next)),
            None => {
                self.write_batch().await?;
                Ok(None)
            }
        }
    }

    /// Queues `reply`. Pipelined requests already here are answered in the same write: returns the
    /// next one if it was already read; `None` when the batch should be written out
    /// ([`Online::write_batch`]).
    fn queue(&mut self, reply: Option<ServerToClient>) -> Result<Option<Received>, LinkError> {
        if let Some(reply) = reply {
            self.writer.queue_msg(&reply)?;
            self.unflushed += 1;
        }
        if self.unflushed < MAX_UNFLUSHED && !self.writer.should_flush() {
            return Ok(self.pipelined());
        }
        Ok(None)
    }

    /// Writes out the answers queued since the last write.
    async fn write_batch(&mut self) -> Result<(), LinkError> {
        // The batch is over: its buffer goes, so an idle session holds none.
        self.batch = Vec::new();
        if self.unflushed > 0 {
            self.writer.flush().await?;
            self.unflushed = 0;
            // Counted once per write: a counter shared by every session is a cache line the cores
            // would otherwise pass around on every lookup.
            self.dir.metrics.looked_up(std::mem::take(&mut self.looked_up).into());
        }
        Ok(())
    }

    /// A lookup, answered at once when the number is online here (or in this instance's copy of
    /// the store's presence); otherwise gives back the number, for [`Online::lookup_stored`].
    fn lookup_now(
        &mut self,
        req: u32,
        wanted: &WireNumber,
        intent: LookupIntent,
        now: tokio::time::Instant,
    ) -> Result<ServerToClient, Number> {
        let (dir, addr) = (self.dir, self.addr);
        if let Err(limited) = dir.limits.lookup_rate(&self.asker, SourceAddr::from(addr.ip())) {
            return Ok(self.limited(Some(req), limited));
        }
        let wanted = match Number::try_from(wanted) {
            Ok(n) => n,
            Err(e) => {
                info!("Request from {} {}", addr.ip(), addr.port());
                info!("Refusing a lookup of an invalid number: {e}");
                let message = invalid_number(wanted, &e);
                return Ok(ServerToClient::Error { req: Some(req), message });
            }
        };
        if let Err(limited) = dir.limits.distinct(&mut self.asker, &wanted, now) {
            return Ok(self.limited(Some(req), limited));
        }
        // Only lookups that are served are logged one by one (refusals go by the budget).
        info!("Request from {} {}", addr.ip(), addr.port());
        match intent {
            LookupIntent::Address => info!("Retrieving Address of {wanted}"),
            _ => info!("Pinging {wanted}"),
        }
        self.looked_up += 1;
        match dir.presence.get_now(&wanted) {
            Some(Some(e)) => {
                Ok(ServerToClient::LookupResult { req, number: wanted, key: Some(e.key), online: e.location })
            }
            // Offline (its key is in the bindings) or not known here (the store knows).
            _ => Err(wanted),
        }
    }

    /// The rest of a lookup that [`Online::lookup_now`] could not answer: asks the stores.
    async fn lookup_stored(&mut self, req: u32, wanted: Number) -> ServerToClient {
        match self.dir.status_of(&wanted).await {
            Ok((key, online)) => ServerToClient::LookupResult { req, number: wanted, key, online },
            Err(e) => ServerToClient::Error { req: Some(req), message: short(e.to_string()) },
        }
    }

    /// The answer to one request, if it has one.
    async fn answer(&mut self, msg: ClientToServer) -> Result<Option<ServerToClient>, End> {
        let (dir, number) = (self.dir, &self.number);
        let reply = match msg {
            ClientToServer::Register { listen } => Some(Box::pin(self.register(listen)).await?),
            // `requests` answers lookups itself; this keeps `answer` whole.
            ClientToServer::Lookup { req, number, intent } => {
                Some(match self.lookup_now(req, &number, intent, tokio::time::Instant::now()) {
                    Ok(reply) => reply,
                    Err(wanted) => self.lookup_stored(req, wanted).await,
                })
            }
            ClientToServer::Watch { numbers } => {
                if numbers.len() > MAX_WATCH_BATCH || self.watched.len() + numbers.len() > MAX_WATCHED {
                    Some(ServerToClient::Error {
                        req: None,
                        message: format!("watch at most {MAX_WATCHED} numbers, {MAX_WATCH_BATCH} at a time"),
                    })
                } else {
                    info!("{number} watches {} numbers", numbers.len());
                    let (numbers, invalid) = check_numbers(numbers);
                    if let Some(message) = invalid {
                        info!("Not watching invalid numbers: {message}");
                        self.writer.send_msg(&ServerToClient::Error { req: None, message }).await?;
                    }
                    let push = self.push.0.clone();
                    let mut limited = None;
                    for n in numbers {
                        // Past a limit, the rest of the batch is not watched (and said once, below).
                        if let Err(l) = dir.limits.distinct(&mut self.asker, &n, tokio::time::Instant::now())
                        {
                            limited = Some(l);
                            break;
                        }
                        dir.watchers.watch(&n, self.session, &push);
                        let (key, online) = dir.status_of(&n).await.unwrap_or_default();
                        let status = ServerToClient::Presence { number: n.clone(), key, online };
                        self.watched.insert(n);
                        self.writer.send_msg(&status).await?;
                    }
                    limited.map(|l| self.limited(None, l))
                }
            }
            ClientToServer::Heartbeat => {
                Box::pin(self.renew()).await?;
                Some(ServerToClient::HeartbeatAck)
            }
            ClientToServer::Logout => return Err(End::Logout),
            ClientToServer::Announce { candidates, nat } => self.announce(candidates, nat),
            ClientToServer::Introduce { req, number } => Some(self.introduce(req, number)),
            ClientToServer::RelayRequest { req, number, reason } => {
                Some(self.relay_request(req, number, reason))
            }
            _ => Some(ServerToClient::Error { req: None, message: "unsupported request".into() }),
        };
        Ok(reply)
    }

    /// The next request if it is already here, without waiting. The read is cancel-safe, so
    /// polling it once loses nothing when none is; the frames of one batch are opened into one
    /// buffer, [`Online::batch`], instead of one allocation each.
    fn pipelined(&mut self) -> Option<Received> {
        loop {
            let n = match self.reader.recv_into(&mut self.batch).now_or_never()? {
                Ok(Some(n)) => n,
                Ok(None) => return Some(Ok(None)),
                Err(e) => return Some(Err(e)),
            };
            match decode_or_skip::<ClientToServer>(&self.batch[..n]) {
                Ok(Some(msg)) => return Some(Ok(Some(msg))),
                Ok(None) => continue,
                Err(e) => return Some(Err(e.into())),
            }
        }
    }

    /// Goes online at `listen` (or moves there). When the store cannot record it, a first
    /// registration is refused (and the session ends); a repeated one gets an error and the
    /// session keeps its old entry.
    async fn register(&mut self, listen: SocketAddr) -> Result<ServerToClient, End> {
        if !self.bound {
            if let Some(refused) = Box::pin(self.bind()).await? {
                return Ok(refused);
            }
        }
        let (dir, number) = (self.dir, &self.number);
        let listen = if listen.ip().is_unspecified() {
            SocketAddr::new(self.addr.ip(), listen.port())
        } else {
            listen
        };
        let location = Location { addr: listen, since_unix_ms: now_ms() };
        let entry = PresenceEntry { key: self.key, location: Some(location), owner: self.owner() };
        match dir.presence.set_online(number, &entry).await {
            Ok(Held::Replaced) => Err(End::Replaced),
            Ok(Held::Yes(applied)) => {
                if self.location.replace(location).is_none() {
                    dir.metrics.registered();
                }
                if self.token.is_some() {
                    dir.meetings.registered(number, self.session, listen);
                }
                if let Some(change) = applied {
                    dir.apply(change).await;
                }
                info!("Registered {number} listening at {}/{}", listen.ip(), listen.port());
                Ok(ServerToClient::Registered { listen })
            }
            Err(e) => {
                warn!("Cannot register {number}: {e}");
                dir.metrics.refused(Refusal::StoreUnavailable);
                if self.location.is_some() {
                    return Ok(ServerToClient::Error { req: None, message: short(e.to_string()) });
                }
                self.end(CloseCode::StoreUnavailable, UNAVAILABLE.into()).await?;
                Err(End::Unavailable)
            }
        }
    }

    /// A heartbeat: keeps the session's presence alive in the store. Puts it back if the store lost
    /// it; ends the session if another one of the number owns it now (a replacement this instance
    /// did not hear of). A store that fails keeps the session as it is.
    async fn renew(&mut self) -> Result<(), End> {
        if !self.bound {
            // Nothing held: nothing to keep alive.
            return Ok(());
        }
        let (dir, number) = (self.dir, &self.number);
        match dir.presence.renew(number, self.owner()).await {
            Ok(Renewal::Renewed) => Ok(()),
            Ok(Renewal::Replaced) => Err(End::Replaced),
            Ok(Renewal::Missing) => {
                info!("The store lost {number}'s entry: putting it back");
                let entry = PresenceEntry { key: self.key, location: self.location, owner: self.owner() };
                match dir.presence.set_online(number, &entry).await {
                    Ok(Held::Yes(Some(change))) => dir.apply(change).await,
                    Ok(Held::Yes(None)) => {}
                    Ok(Held::Replaced) => return Err(End::Replaced),
                    Err(e) => warn!("Cannot put {number}'s entry back: {e}"),
                }
                Ok(())
            }
            Err(e) => {
                warn!("Cannot renew {number}'s presence: {e}");
                Ok(())
            }
        }
    }

    /// Takes the user offline (if this session still owns its presence), tells watchers, logs why
    /// and closes the connection.
    async fn close(&mut self, end: End) {
        self.leave_meetings();
        let (dir, number) = (self.dir, &self.number);
        dir.watchers.unwatch(self.session, &self.watched);
        dir.metrics.session_opened(false);
        if self.location.is_some() {
            dir.metrics.went_offline();
        }
        match dir.presence.set_offline(number, self.owner(), self.key).await {
            Ok(Some(change)) => dir.apply(change).await,
            Ok(None) => {}
            // The entry expires by itself within the heartbeat timeout.
            Err(e) => warn!("Cannot take {number} offline in the store: {e}"),
        }
        match end {
            // The client must not reconnect by itself, or two copies of one profile would take
            // the number from each other in turn.
            End::Replaced => {
                dir.metrics.refused(Refusal::Replaced);
                let reason = "replaced: a newer session of this number connected".to_owned();
                let _ = end_with(&mut self.writer, self.version, CloseCode::Replaced, reason).await;
            }
            // Said only to clients that act on it (reconnect at once, elsewhere): a version 2
            // client would take a `Refused` for a refusal.
            End::Shutdown if self.version() >= V3 => {
                let reason = "this instance of the directory is shutting down".to_owned();
                let _ = end_with(&mut self.writer, self.version, CloseCode::Shutdown, reason).await;
            }
            _ => {}
        }
        match end {
            End::Logout => info!("Disconnecting {number}"),
            End::Silent => {
                warn!("Disconnecting {number}: no heartbeat for {:?}", dir.config.heartbeat_timeout)
            }
            End::Closed => info!("Disconnecting {number}: connection closed"),
            End::Shutdown => info!("Disconnecting {number}: server shutting down"),
            End::Replaced => info!("Disconnecting {number}: a newer session of the number registered"),
            End::Unavailable => warn!("Disconnecting {number}: the store cannot record its registration"),
            End::Taken => info!("Disconnecting {number}: it is bound to another key"),
            End::Failed(e) => warn!("Disconnecting {number}: {e}"),
        }
        let _ = self.writer.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identities::SqliteIdentities;
    use crate::presence::MemoryPresence;

    /// Most of what a held client costs the server is this future, kept for the whole session
    /// (issue 6: at most 4 KiB per client in all), which tokio's task rounds up to 128 bytes: with
    /// tokio's 104 bytes and the tracker's 8, up to 408 bytes here make a 512-byte task (384 now),
    /// 409 a 640-byte one. A growing state machine shows up here first.
    #[tokio::test]
    async fn given_a_connection_then_its_session_task_stays_within_400_bytes() {
        let data = tempfile::tempdir().expect("tempdir");
        let ids = SqliteIdentities::open(&data.path().join("ids.sqlite")).expect("db");
        let key = whatsap2p_link::StaticKeypair::generate().expect("key");
        let dir =
            Arc::new(Directory::new(Arc::new(MemoryPresence::new()), Arc::new(ids), key, Default::default()));
        let permit = Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().expect("permit");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        let slot = dir.sources.admit(peer.ip()).expect("a slot");
        let task = serve(stream, peer, dir, (permit, slot));
        let size = std::mem::size_of_val(&task);
        assert!(size <= 400, "a session's task is {size} bytes");
    }
}
