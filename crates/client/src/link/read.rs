//! A link's reader task: decrypts each frame and hands what it holds to the link's owner (see
//! [`super::LinkOwner`]), then writes the owner's reply. It ends when the peer closes the stream,
//! on garbage, after [`crate::Timeouts::link_idle`] without a frame, when the link is closed, or
//! [`RETIRED_READ`] after the link was retired.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, warn};
use whatsap2p_link::{decode_or_skip, SessionReader};
use whatsap2p_proto::chunk::{view_chunk, ChunkView};
use whatsap2p_proto::peer::PeerMessage;
use whatsap2p_proto::DecodeError;

use super::{LinkHandle, LinkOwner, Links, Verdict};
use crate::transport::PeerStream;

/// How much more than the frame in hand one read on a link may take in while a file's chunks are
/// coming: they then arrive several per read. (Any peer could otherwise make each link hold this
/// much by sending the start of a frame.)
const READ_AHEAD: usize = 256 * 1024;
/// A link's frame buffer is freed after a message when it is larger than this and no transfer runs.
const IDLE_FRAME_BUFFER: usize = 16 * 1024;
/// How long a retired link's reader waits for the peer's side to end (the peer retires it too as
/// soon as it sees the new link or our end of stream), and how long a link that replaced it waits
/// for that reader before reading anyway.
pub(crate) const RETIRED_READ: Duration = Duration::from_secs(5);

/// How a reader runs.
pub(super) struct ReadOptions {
    /// Close the link after this long without a frame.
    pub(super) idle: Duration,
    /// An accepted connection's place under the connection cap, held until the end.
    pub(super) permit: Option<OwnedSemaphorePermit>,
    /// The link this one replaces: read only once its reader is done.
    pub(super) after: Option<LinkHandle>,
}

pub(super) type Reader = SessionReader<PeerStream>;

/// What one frame on a link holds.
enum Incoming {
    Message(PeerMessage),
    /// File bytes, left where they are in the frame.
    Chunk(ChunkView),
    /// A message of a kind from a newer protocol version.
    Skipped,
}

fn decode_frame(frame: &[u8]) -> Result<Incoming, DecodeError> {
    if let Some(chunk) = view_chunk(frame) {
        return chunk.map(Incoming::Chunk);
    }
    Ok(decode_or_skip(frame)?.map_or(Incoming::Skipped, Incoming::Message))
}

/// Reads `link` until it ends, then closes it, gives its slot back and tells the owner.
pub(super) async fn read_loop(
    links: Links,
    owner: Arc<dyn LinkOwner>,
    mut reader: Reader,
    link: LinkHandle,
    options: ReadOptions,
) {
    let ReadOptions { idle, permit, after } = options;
    let peer = link.peer().clone();
    if let Some(before) = after {
        tokio::select! {
            _ = link.closed() => {}
            _ = before.reader_done() => {}
            _ = tokio::time::sleep(RETIRED_READ) => debug!("reading the new link to {peer} before the old one ended"),
        }
    }
    let mut retired_at: Option<tokio::time::Instant> = None;
    // Reads take in more than the frame at hand only while a file's chunks are coming.
    let mut bulk = false;
    // Frames are decrypted into this buffer; a file chunk takes it along to the disk writer and
    // leaves a spent one in its place.
    let mut frame = Vec::new();
    loop {
        // A retired link reads only until the peer's side ends, within a bound.
        let wait =
            retired_at.map_or(idle, |at: tokio::time::Instant| RETIRED_READ.saturating_sub(at.elapsed()));
        let got = tokio::select! {
            _ = link.closed() => break,
            _ = link.retired(), if retired_at.is_none() => {
                retired_at = Some(tokio::time::Instant::now());
                continue;
            }
            m = tokio::time::timeout(wait, reader.recv_into(&mut frame)) => m,
        };
        let n = match got {
            Err(_) => {
                debug!("closing the link with {peer}: idle for {wait:?}");
                break;
            }
            Ok(Ok(None)) => {
                debug!("{peer} closed the link");
                break;
            }
            Ok(Err(e)) => {
                warn!("dropping link with {peer}: {e}");
                break;
            }
            Ok(Ok(Some(n))) => n,
        };
        let incoming = decode_frame(&frame[..n]);
        let chunk = matches!(incoming, Ok(Incoming::Chunk(_)));
        if chunk != bulk {
            reader.set_read_ahead(if chunk { READ_AHEAD } else { 0 });
            bulk = chunk;
        }
        let verdict = match incoming {
            Err(e) => Verdict::Close(e.to_string()),
            Ok(Incoming::Skipped) => Verdict::Done,
            Ok(Incoming::Chunk(chunk)) => {
                owner.chunk(&link, chunk, &mut frame).map_or(Verdict::Done, Verdict::Reply)
            }
            Ok(Incoming::Message(msg)) => owner.message(&link, msg).await,
        };
        match verdict {
            Verdict::Done => {}
            Verdict::Reply(reply) => link.reply(reply).await,
            Verdict::Close(why) => {
                warn!("dropping link with {peer}: {why}");
                break;
            }
        }
        // A link with no transfer running keeps no frame-sized buffer.
        if !bulk && frame.len() > IDLE_FRAME_BUFFER && !owner.carries_bulk(&link) {
            frame = Vec::new();
        }
    }
    link.close();
    drop(reader);
    link.reader_finished();
    links.release(&peer);
    owner.closed(&link);
    drop(permit);
}
