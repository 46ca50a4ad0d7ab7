//! The file a transfer is received into, until its hash is checked: written in aligned units,
//! hashed as it is written, and flushed to the disk while the transfer runs.
//!
//! Chunks arrive in sizes the frame dictates (a little under 64 KiB), which do not line up with the
//! page cache's large folios: written one by one, each write splits a folio with the next, and ext4
//! then spends half again as long per byte (`scripts/write-units`: 256 MiB in 64 512-byte writes
//! 120-225 ms, in aligned 128 KiB writes 77-87 ms). So chunks wait here, already hashed, until a
//! whole aligned unit is in, and go to the file in one vectored write, straight from the buffers
//! they arrived in.
//!
//! Bytes from an earlier attempt (a resume) are read back and hashed once when the file is opened.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Read, Seek, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

/// Writes go to the file in whole units of this size, at offsets that are multiples of it (except
/// the first one after a resume from an odd offset, and the file's tail).
const WRITE_UNIT: u64 = 128 * 1024;
/// Most buffers handed to one vectored write, and most chunks that wait for a whole unit: a sender
/// of many small chunks gets unaligned writes, not a long queue.
const MAX_SLICES: usize = 8;
/// Writeback of what was written starts each time this much more is in the file.
const SYNC_EVERY: u64 = 16 * 1024 * 1024;
/// Bytes held from an earlier attempt are read back in stretches of this size.
const READ_BACK_STRETCH: u64 = 64 * 1024 * 1024;
/// Most written-out buffers kept for the link to decrypt into again.
const MAX_SPARES: usize = 16;

/// Buffers whose chunks are written, handed back to the link that decrypted them, so a transfer
/// cycles a few buffers instead of allocating (and the kernel faulting in) one per chunk.
#[derive(Clone, Default)]
pub(crate) struct Spares(Arc<Mutex<Vec<Vec<u8>>>>);

impl Spares {
    /// A buffer to decrypt the next frame into: a spent one if there is one.
    pub(crate) fn take(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default()
    }

    fn put(&self, buf: Vec<u8>) {
        let mut spares = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if spares.len() < MAX_SPARES {
            spares.push(buf);
        }
    }
}

/// Bytes of a file chunk inside the buffer they arrived in.
pub(crate) struct ChunkBytes {
    buf: Vec<u8>,
    range: Range<usize>,
}

impl ChunkBytes {
    /// The bytes `range` of `buf`, if it is inside it.
    pub(crate) fn new(buf: Vec<u8>, range: Range<usize>) -> Option<Self> {
        (range.start <= range.end && range.end <= buf.len()).then_some(Self { buf, range })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf[self.range.clone()]
    }

    pub(crate) fn len(&self) -> usize {
        self.range.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.range.is_empty()
    }
}

/// A partial file being received.
pub(crate) struct PartialFile {
    file: File,
    hasher: blake3::Hasher,
    /// Hashed but not yet written: less than one write unit and one chunk.
    queued: VecDeque<ChunkBytes>,
    queued_len: u64,
    /// Bytes in the file.
    on_disk: u64,
    /// Written since writeback last started.
    unsynced: u64,
    /// Asks the writeback thread to sync again; closed to stop it.
    sync: Option<mpsc::SyncSender<()>>,
    syncer: Option<std::thread::JoinHandle<io::Result<()>>>,
    /// Where buffers go once their bytes are written.
    spares: Spares,
}

impl PartialFile {
    /// Opens (or creates) `path`, keeps its first `offset` bytes and hashes them, calling
    /// `progress` after each stretch read back: on a slow disk a large partial takes a while.
    /// Buffers whose bytes are written go to `spares`.
    pub(crate) fn open(
        path: &Path,
        offset: u64,
        spares: Spares,
        mut progress: impl FnMut(),
    ) -> io::Result<Self> {
        let mut file =
            std::fs::OpenOptions::new().create(true).read(true).write(true).truncate(false).open(path)?;
        file.set_len(offset)?;
        let mut hasher = blake3::Hasher::new();
        let mut stretch = (&mut file).take(0);
        loop {
            stretch.set_limit(READ_BACK_STRETCH);
            hasher.update_reader(&mut stretch)?;
            if stretch.limit() > 0 {
                break;
            }
            progress();
        }
        file.seek(io::SeekFrom::Start(offset))?;
        // Writeback runs on a thread of its own while chunks come in, so the sync at the end waits
        // for the last stretch only, not for the whole file to reach the disk.
        let (sync, wanted) = mpsc::sync_channel::<()>(1);
        let syncing = file.try_clone()?;
        let syncer = std::thread::Builder::new().name("file-sync".into()).spawn(move || {
            while wanted.recv().is_ok() {
                syncing.sync_data()?;
            }
            Ok(())
        })?;
        Ok(Self {
            file,
            hasher,
            queued: VecDeque::new(),
            queued_len: 0,
            on_disk: offset,
            unsynced: 0,
            sync: Some(sync),
            syncer: Some(syncer),
            spares,
        })
    }

    /// Bytes received so far, written or queued.
    pub(crate) fn received(&self) -> u64 {
        self.on_disk + self.queued_len
    }

    /// Bytes in the file: what a resume would keep.
    pub(crate) fn on_disk(&self) -> u64 {
        self.on_disk
    }

    /// Hashes the next bytes of the file and writes every whole unit now complete.
    pub(crate) fn push(&mut self, chunk: ChunkBytes) -> io::Result<()> {
        self.hasher.update(chunk.bytes());
        self.queued_len += chunk.len() as u64;
        self.queued.push_back(chunk);
        if self.queued.len() >= MAX_SLICES {
            return self.flush();
        }
        let end = self.received();
        let aligned = end - end % WRITE_UNIT;
        if aligned > self.on_disk {
            self.write_front(aligned - self.on_disk)?;
        }
        Ok(())
    }

    /// Writes everything queued: at the end, or to keep it for a resume when the transfer stops.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.write_front(self.queued_len)
    }

    /// Writes what is queued, waits until the whole file is on the disk, and returns its hash.
    pub(crate) fn finish(mut self) -> io::Result<[u8; 32]> {
        self.flush()?;
        drop(self.sync.take());
        if let Some(syncer) = self.syncer.take() {
            syncer.join().map_err(|_| io::Error::other("the file sync thread panicked"))??;
        }
        self.file.sync_all()?;
        Ok(*self.hasher.finalize().as_bytes())
    }

    /// Writes the first `n` queued bytes.
    fn write_front(&mut self, mut n: u64) -> io::Result<()> {
        while n > 0 {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let (mut count, mut offered) = (0, 0u64);
            for chunk in self.queued.iter().take(MAX_SLICES) {
                let take = (chunk.len() as u64).min(n - offered) as usize;
                slices[count] = IoSlice::new(&chunk.bytes()[..take]);
                count += 1;
                offered += take as u64;
                if offered == n {
                    break;
                }
            }
            let written = self.file.write_vectored(&slices[..count])?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(written);
            n -= written as u64;
        }
        Ok(())
    }

    /// Drops the first `n` queued bytes, just written.
    fn consume(&mut self, mut n: usize) {
        let written = n as u64;
        while n > 0 {
            let Some(front) = self.queued.front_mut() else { break };
            if front.len() <= n {
                n -= front.len();
                if let Some(spent) = self.queued.pop_front() {
                    self.spares.put(spent.buf);
                }
            } else {
                front.range.start += n;
                n = 0;
            }
        }
        self.queued_len -= written;
        self.on_disk += written;
        self.unsynced += written;
        if self.unsynced >= SYNC_EVERY {
            // A sync still running takes this stretch along when it ends: no need to queue.
            if let Some(sync) = &self.sync {
                let _ = sync.try_send(());
            }
            self.unsynced = 0;
        }
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        // Stops the writeback thread; it ends after the sync it may be running.
        drop(self.sync.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(buf: Vec<u8>) -> ChunkBytes {
        let len = buf.len();
        ChunkBytes::new(buf, 0..len).expect("whole buffer")
    }

    fn pattern(len: usize, seed: usize) -> Vec<u8> {
        (0..len).map(|i| ((i + seed) * 131 % 251) as u8).collect()
    }

    #[test]
    fn given_chunks_of_odd_sizes_then_the_file_and_hash_are_exactly_the_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p");
        let mut want = Vec::new();
        let spares = Spares::default();
        let mut partial = PartialFile::open(&path, 0, spares.clone(), || {}).expect("open");
        for (i, len) in [64_512usize, 1, 64_512, 131_072, 7, 300_000, 64_512, 12_345].into_iter().enumerate()
        {
            let data = pattern(len, i);
            want.extend_from_slice(&data);
            // Some arrive inside a larger buffer, as a decrypted frame would carry them.
            let mut buf = vec![0xee; 3];
            buf.extend_from_slice(&data);
            buf.extend_from_slice(&[0xee; 5]);
            partial.push(ChunkBytes::new(buf, 3..3 + len).expect("range")).expect("push");
            assert_eq!(partial.received(), want.len() as u64);
            assert_eq!(partial.on_disk() % WRITE_UNIT, 0, "only whole units are written before the end");
        }
        let hash = partial.finish().expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), want);
        assert_eq!(spares.0.lock().expect("spares").len(), 8, "every written buffer came back");
        assert_eq!(hash, *blake3::hash(&want).as_bytes());
    }

    #[test]
    fn given_a_resume_then_the_held_part_is_kept_and_hashed_with_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p");
        let data = pattern(1_000_000, 9);
        // An earlier attempt left 300 001 bytes and some garbage past them.
        let mut held = data[..300_001].to_vec();
        held.extend_from_slice(b"garbage");
        std::fs::write(&path, &held).expect("write");
        let mut partial = PartialFile::open(&path, 300_001, Spares::default(), || {}).expect("open");
        partial.push(whole(data[300_001..700_000].to_vec())).expect("push");
        partial.push(whole(data[700_000..].to_vec())).expect("push");
        let hash = partial.finish().expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), data);
        assert_eq!(hash, *blake3::hash(&data).as_bytes());
    }

    #[test]
    fn given_a_stop_midway_then_flush_keeps_every_byte_received() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p");
        let data = pattern(200_000, 3);
        let mut partial = PartialFile::open(&path, 0, Spares::default(), || {}).expect("open");
        partial.push(whole(data.clone())).expect("push");
        assert!(partial.on_disk() < data.len() as u64, "the tail waits for a whole unit");
        partial.flush().expect("flush");
        assert_eq!(partial.on_disk(), data.len() as u64);
        drop(partial);
        assert_eq!(std::fs::read(&path).expect("read"), data);
    }

    #[test]
    fn given_a_range_outside_the_buffer_then_no_chunk() {
        assert!(ChunkBytes::new(vec![0; 4], 2..5).is_none());
        assert!(ChunkBytes::new(vec![0; 4], Range { start: 3, end: 2 }).is_none());
        assert!(ChunkBytes::new(vec![0; 4], 1..4).is_some_and(|c| c.len() == 3));
    }

    #[test]
    fn given_many_tiny_chunks_then_few_wait_and_every_byte_lands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p");
        let data = pattern(5_000, 1);
        let mut partial = PartialFile::open(&path, 0, Spares::default(), || {}).expect("open");
        for byte in &data {
            partial.push(whole(vec![*byte])).expect("push");
            assert!(partial.queued.len() < MAX_SLICES, "{} chunks wait", partial.queued.len());
        }
        let hash = partial.finish().expect("finish");
        assert_eq!(std::fs::read(&path).expect("read"), data);
        assert_eq!(hash, *blake3::hash(&data).as_bytes());
    }
}
