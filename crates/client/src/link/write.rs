//! A link's writer task: writes what waits in the link's queue, in order, several frames per flush.

use tokio::sync::mpsc;

use super::handle::{LinkHandle, Outgoing, WriteError};

/// Most frames written together in one flush.
const WRITE_BATCH: usize = 32;

/// Writes until the link closes or a write fails; then closes the write side and drops it, which
/// (with the reader gone too) releases the stream.
///
/// A retired link (see `LinkHandle::retire`) stops after its finishing batch without closing the
/// link: its reader goes on until the peer's side ends.
pub(super) async fn write_loop(link: LinkHandle, mut rx: mpsc::Receiver<Outgoing>) {
    let mut batch: Vec<Outgoing> = Vec::with_capacity(WRITE_BATCH);
    let mut finished = false;
    loop {
        let first = tokio::select! {
            biased;
            _ = link.closed() => break,
            out = rx.recv() => match out { Some(o) => o, None => break },
        };
        // Whatever else is already waiting leaves in the same write, chat before file chunks.
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        let mut writer = link.writer().lock().await;
        let result = match writer.as_mut() {
            None => Err(WriteError::Closed),
            Some(w) => async {
                for msg in batch.iter().filter_map(|out| out.msg.as_ref()) {
                    w.feed_msg(msg).await?;
                }
                w.flush().await
            }
            .await
            .map_err(WriteError::from),
        };
        link.dequeued(batch.len());
        drop(writer);
        let failed = result.is_err();
        finished = batch.iter().any(|out| out.finish);
        for out in batch.drain(..) {
            if let Some(written) = out.written {
                let _ = written.send(result.clone());
            }
        }
        if failed || finished {
            break;
        }
    }
    if !finished {
        link.close();
    }
    // Taken out even if closing fails: nothing may write on this link any more.
    let writer = link.writer().lock().await.take();
    if let Some(mut writer) = writer {
        let _ = writer.close().await;
    }
    // Whatever is still queued learns the link is gone.
    rx.close();
    while let Ok(out) = rx.try_recv() {
        link.dequeued(1);
        if let Some(written) = out.written {
            let _ = written.send(Err(WriteError::Closed));
        }
    }
}
