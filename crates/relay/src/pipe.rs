//! The bytes of a pair, both ways, until both sides have closed, one fails, the pair has been idle
//! too long, or it has moved its byte allowance. What the bytes are is none of the relay's business:
//! Noise runs end to end through it, and it never looks.
//!
//! One direction ending (EOF) closes the other side's write half and lets the other direction go on
//! (a TCP half-close passes through); an error on either ends both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most bytes read at once per direction: what a pair holds at most while it pipes (twice this). A
/// file through the relay moves in reads this large (a few Noise frames each): a quarter of the
/// syscalls, and of the relay's CPU per GiB, of 32 KiB reads.
pub const BUFFER: usize = 128 * 1024;

/// What a direction reads into first. It doubles, up to [`BUFFER`], each time a read fills it: a
/// pair that carries texts keeps a small buffer, one that carries a file gets a large one.
const FIRST_BUFFER: usize = 16 * 1024;

/// How a pair ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeEnd {
    /// Both sides closed.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// The pair moved its byte allowance.
    Allowance,
    /// A side failed (reset, broken pipe).
    Failed,
    /// The relay is shutting down.
    Shutdown,
}

impl std::fmt::Display for PipeEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PipeEnd::Closed => "closed by the clients",
            PipeEnd::Idle => "idle",
            PipeEnd::Allowance => "byte allowance used up",
            PipeEnd::Failed => "a side failed",
            PipeEnd::Shutdown => "relay shutting down",
        })
    }
}

/// What went through a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// From the first side to connect to the second.
    pub first_to_second: u64,
    /// From the second to the first.
    pub second_to_first: u64,
    /// How it ended.
    pub end: PipeEnd,
}

/// Activity shared by both directions (one task polls both; atomics only because the future must
/// be `Send`).
struct Shared {
    start: Instant,
    /// Milliseconds from `start` to the last byte moved either way.
    last_ms: AtomicU64,
    /// Bytes moved both ways.
    total: AtomicU64,
    allowance: u64,
}

impl Shared {
    fn moved(&self, n: usize) -> bool {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
        let total = self.total.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        total <= self.allowance
    }

    fn idle_since(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

enum DirectionEnd {
    Eof,
    Allowance,
    Failed,
}

async fn direction<R, W>(mut from: R, mut to: W, count: &AtomicU64, shared: &Shared) -> DirectionEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; FIRST_BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                // Pass the half-close on; the other direction goes on.
                let _ = to.shutdown().await;
                return DirectionEnd::Eof;
            }
            Ok(n) => n,
            Err(_) => return DirectionEnd::Failed,
        };
        if !shared.moved(n) {
            return DirectionEnd::Allowance;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return DirectionEnd::Failed;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        // A write that took long is activity too: the receiver was reading.
        shared.moved(0);
        if n == buf.len() && buf.len() < BUFFER {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// Pipes between `first` and `second` until the pair ends (see the module's doc).
pub async fn pipe<A, B>(
    first: A,
    second: B,
    idle: Duration,
    allowance: u64,
    cancel: &CancellationToken,
) -> Flow
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (first_read, first_write) = tokio::io::split(first);
    let (second_read, second_write) = tokio::io::split(second);
    let shared =
        Shared { start: Instant::now(), last_ms: AtomicU64::new(0), total: AtomicU64::new(0), allowance };
    let (there, back) = (AtomicU64::new(0), AtomicU64::new(0));
    let forth = direction(first_read, second_write, &there, &shared);
    let back_again = direction(second_read, first_write, &back, &shared);
    tokio::pin!(forth, back_again);
    let (mut forth_done, mut back_done) = (false, false);
    let end = loop {
        let idle_at = shared.idle_since() + idle;
        let ended = tokio::select! {
            _ = cancel.cancelled() => break PipeEnd::Shutdown,
            _ = tokio::time::sleep_until(idle_at) => {
                if shared.idle_since() + idle <= Instant::now() {
                    break PipeEnd::Idle;
                }
                continue;
            }
            e = &mut forth, if !forth_done => { forth_done = true; e }
            e = &mut back_again, if !back_done => { back_done = true; e }
        };
        match ended {
            DirectionEnd::Eof if forth_done && back_done => break PipeEnd::Closed,
            DirectionEnd::Eof => {}
            DirectionEnd::Allowance => break PipeEnd::Allowance,
            DirectionEnd::Failed => break PipeEnd::Failed,
        }
    };
    Flow {
        first_to_second: there.load(Ordering::Relaxed),
        second_to_first: back.load(Ordering::Relaxed),
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    const IDLE: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn given_a_file_sized_stream_over_tcp_then_every_byte_arrives_in_order() {
        // Large enough for the buffers to grow to their most, over real sockets.
        let data: Vec<u8> =
            (0..6 * BUFFER as u32 + 123).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (mut a, a_relay) = (
            tokio::net::TcpStream::connect(addr).await.expect("a"),
            listener.accept().await.expect("accept").0,
        );
        let (b_relay, mut b) = (
            tokio::net::TcpStream::connect(addr).await.expect("b"),
            listener.accept().await.expect("accept").0,
        );
        let cancel = CancellationToken::new();
        let relay = tokio::spawn(async move { pipe(a_relay, b_relay, IDLE, u64::MAX, &cancel).await });
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&sent).await.expect("write");
            a.shutdown().await.expect("shutdown");
            a
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert!(got == data, "{} bytes arrived of {}, or out of order", got.len(), data.len());
        drop(b);
        drop(writer.await.expect("join"));
        let flow = relay.await.expect("join");
        assert_eq!(flow.first_to_second, data.len() as u64);
        assert_eq!(flow.end, PipeEnd::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn given_bytes_both_ways_then_they_arrive_and_the_pair_ends_when_both_close() {
        let (mut a, a_relay) = duplex(1024);
        let (b_relay, mut b) = duplex(1024);
        let cancel = CancellationToken::new();
        let relay = tokio::spawn(async move { pipe(a_relay, b_relay, IDLE, u64::MAX, &cancel).await });
        a.write_all(b"hello").await.expect("write");
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hello");
        b.write_all(b"hi there").await.expect("write");
        let mut got = [0u8; 8];
        a.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"hi there");
        // A half-close passes through, and the other way still works.
        a.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        b.write_all(b"!").await.expect("write after the other's half-close");
        assert_eq!(b.read_to_end(&mut rest).await.expect("eof"), 0);
        let mut bang = [0u8; 1];
        a.read_exact(&mut bang).await.expect("read");
        b.shutdown().await.expect("shutdown");
        let flow = relay.await.expect("join");
        assert_eq!(flow, Flow { first_to_second: 5, second_to_first: 9, end: PipeEnd::Closed });
    }

    #[tokio::test(start_paused = true)]
    async fn given_a_pair_idle_for_the_timeout_then_it_ends_and_activity_postpones_that() {
        let (mut a, a_relay) = duplex(1024);
        let (b_relay, mut b) = duplex(1024);
        let cancel = CancellationToken::new();
        let start = Instant::now();
        let relay = tokio::spawn(async move { pipe(a_relay, b_relay, IDLE, u64::MAX, &cancel).await });
        tokio::time::sleep(IDLE / 2).await;
        a.write_all(b"x").await.expect("write");
        let mut x = [0u8; 1];
        b.read_exact(&mut x).await.expect("read");
        let flow = relay.await.expect("join");
        assert_eq!(flow.end, PipeEnd::Idle);
        let took = start.elapsed();
        assert!(took >= IDLE + IDLE / 2 && took < IDLE * 2, "ended after {took:?}");
        // Both sides see the end.
        assert_eq!(b.read(&mut x).await.expect("eof"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn given_a_pair_over_its_allowance_then_it_ends() {
        let (mut a, a_relay) = duplex(64 * 1024);
        let (b_relay, mut b) = duplex(64 * 1024);
        let cancel = CancellationToken::new();
        let relay = tokio::spawn(async move { pipe(a_relay, b_relay, IDLE, 10, &cancel).await });
        a.write_all(b"0123456789").await.expect("write");
        let mut got = [0u8; 10];
        b.read_exact(&mut got).await.expect("within the allowance");
        a.write_all(b"more").await.expect("write");
        let flow = relay.await.expect("join");
        assert_eq!(flow.end, PipeEnd::Allowance);
        assert_eq!(flow.first_to_second, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn given_shutdown_then_the_pair_ends() {
        let (_a, a_relay) = duplex(1024);
        let (b_relay, _b) = duplex(1024);
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let relay = tokio::spawn(async move { pipe(a_relay, b_relay, IDLE, u64::MAX, &c).await });
        cancel.cancel();
        assert_eq!(relay.await.expect("join").end, PipeEnd::Shutdown);
    }
}
