//! The client's one UDP socket, shared by QUIC and our own datagrams.
//!
//! quinn runs on [`SharedSocket`], an [`AsyncUdpSocket`] that wraps the socket quinn's Tokio runtime
//! would make (so GSO and GRO stay on) and takes out every datagram whose first byte is 0
//! ([`whatsap2p_proto::nat::is_ours`]: probe replies and punches; a QUIC packet always has the fixed
//! bit 0x40 set) before quinn sees it. Those go to a bounded queue read by `crate::reach`; our own
//! datagrams leave through the same socket ([`SharedSocket::send_ours`]), so the NAT mapping the
//! directory observes for our probes is the very one QUIC uses.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};
use tokio::sync::mpsc;
use whatsap2p_proto::nat::{is_ours, MAX_DATAGRAM_LEN};

/// Datagrams of ours waiting for `crate::reach` to read them; more are dropped (and counted): they
/// are tiny, retransmitted by their senders, and a stranger could send any number of them.
pub(crate) const OURS_QUEUE: usize = 256;

/// A datagram of ours and where it came from.
pub(crate) type Received = (Vec<u8>, SocketAddr);

/// The client's UDP socket: QUIC's, with our datagrams taken out on the way in.
pub(crate) struct SharedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    ours: mpsc::Sender<Received>,
    /// Datagrams of ours dropped because the queue was full, or because they were too long.
    dropped: AtomicU64,
}

impl fmt::Debug for SharedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSocket").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl SharedSocket {
    /// Wraps `socket`; our datagrams arrive on the returned receiver.
    pub(crate) fn new(socket: std::net::UdpSocket) -> io::Result<(Arc<Self>, mpsc::Receiver<Received>)> {
        let inner = TokioRuntime.wrap_udp_socket(socket)?;
        let (ours, rx) = mpsc::channel(OURS_QUEUE);
        Ok((Arc::new(Self { inner, ours, dropped: AtomicU64::new(0) }), rx))
    }

    /// Sends one datagram of ours to `to`. Best effort, like UDP itself: a full socket buffer drops
    /// it, and its sender retransmits.
    pub(crate) fn send_ours(&self, to: SocketAddr, bytes: &[u8]) -> io::Result<()> {
        let transmit =
            Transmit { destination: to, ecn: None, contents: bytes, segment_size: None, src_ip: None };
        self.inner.try_send(&transmit)
    }

    /// How many datagrams of ours were dropped on the way in.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Hands datagram `bytes` from `from` to our queue.
    fn take(&self, bytes: &[u8], from: SocketAddr) {
        if bytes.len() > MAX_DATAGRAM_LEN || self.ours.try_send((bytes.to_vec(), from)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes ours out of the `n` received entries; returns how many are left for quinn (moved to the
    /// front, in order).
    fn sift(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta], n: usize) -> usize {
        let mut kept = 0;
        for i in 0..n {
            let m = meta[i];
            let data = &bufs[i][..m.len];
            if !is_ours(data) {
                if kept != i {
                    bufs.swap(kept, i);
                    meta.swap(kept, i);
                }
                kept += 1;
                continue;
            }
            // With GRO one entry holds several datagrams of one size from one sender; when the first
            // is ours the rest are taken one by one, and a QUIC packet among them is dropped (QUIC
            // retransmits; ours and QUIC's of one size back to back are rare).
            let stride = m.stride.max(1);
            for segment in data.chunks(stride) {
                if is_ours(segment) {
                    self.take(segment, m.addr);
                }
            }
        }
        kept
    }
}

impl AsyncUdpSocket for SharedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let n = match self.inner.poll_recv(cx, bufs, meta) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let kept = self.sift(bufs, meta, n);
            // Everything was ours: read again (which registers the waker when nothing is left).
            if kept > 0 {
                return Poll::Ready(Ok(kept));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
