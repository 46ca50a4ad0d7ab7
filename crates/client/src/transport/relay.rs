//! Links through the relay: a TCP connection to the relay, the ticket the directory gave both sides,
//! and then a plain byte stream to the other side, which the Noise session runs over end to end
//! (the relay only ever sees ciphertext).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use whatsap2p_proto::nat::{relay_preamble, RelayStatus};

use super::PeerStream;
use crate::ClientError;

/// How long the side that was offered the relay waits to be paired: the relay waits about 10 s for
/// the second connection itself, so a little more than that.
pub(crate) const RELAY_PAIRING: Duration = Duration::from_secs(12);

/// How long the side that asked for the relay waits to be paired. The directory sent the other side
/// the same offer at the same moment, so a live peer is there within a round trip or two; one that
/// is gone or stuck (the directory still lists it) never comes, and a send must not wait on it much
/// longer than on a direct dial.
pub(crate) const RELAY_PAIRING_ASKER: Duration = Duration::from_secs(4);

/// Why the relay did not pair us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the relay answered {0:?}")]
pub struct RelayRefused(pub RelayStatus);

/// Connects to the relay at `relay`, presents `ticket` and waits (at most `pairing`) until the other
/// side is there.
pub(crate) async fn connect(
    relay: SocketAddr,
    ticket: &[u8],
    timeouts: &crate::Timeouts,
    pairing: Duration,
) -> Result<PeerStream, ClientError> {
    let mut stream = super::dial(relay, timeouts.connect, "connecting to the relay").await?;
    let preamble =
        relay_preamble(ticket).map_err(|e| ClientError::Directory(format!("relay ticket: {e}")))?;
    let io = |e| ClientError::io(format!("relay {relay}"))(e);
    stream.write_all(&preamble).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut status = [0u8; 1];
    tokio::time::timeout(pairing, stream.read_exact(&mut status))
        .await
        .map_err(|_| ClientError::Timeout("relay pairing"))?
        .map_err(io)?;
    // One byte is the whole varint for every status a relay sends today.
    match RelayStatus::from_code(u32::from(status[0])) {
        RelayStatus::Paired => Ok(stream),
        other => Err(ClientError::io(format!("relay {relay}"))(std::io::Error::other(RelayRefused(other)))),
    }
}
