//! What the sender knows of a file before offering it: size, BLAKE3 hash and media type.

use std::io::{Read, Seek};
use std::path::Path;

use super::media::{Sniffed, HEAD_LEN};
use crate::ClientError;

/// Hashes a file and sniffs its media type, on blocking threads.
pub(crate) async fn describe(path: &Path) -> Result<(u64, [u8; 32], String), ClientError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let ctx = format!("reading {}", path.display());
        let file = std::fs::File::open(&path).map_err(ClientError::io(ctx.clone()))?;
        let meta = file.metadata().map_err(ClientError::io(ctx.clone()))?;
        if !meta.is_file() {
            return Err(ClientError::Io {
                context: ctx,
                source: std::io::Error::other("not a regular file"),
            });
        }
        let mut head = Vec::with_capacity(HEAD_LEN as usize);
        (&file).take(HEAD_LEN).read_to_end(&mut head).map_err(ClientError::io(ctx.clone()))?;
        let media_type = Sniffed::from_head(&head).media_type.to_owned();
        let hash = hash_file(&path, meta.len()).map_err(ClientError::io(ctx))?;
        Ok((meta.len(), hash, media_type))
    })
    .await
    .map_err(|_| ClientError::ShuttingDown)?
}

/// Files at least this large are hashed in two halves at once: the sender waits for the hash before
/// it can offer the file, and on two cores that wait halves.
const PARALLEL_HASH_FROM: u64 = 4 * 1024 * 1024;

/// BLAKE3 of the first `len` bytes of `path`. A large file is hashed as BLAKE3's own tree splits it:
/// the left subtree and the right one on two threads, joined by their root node, which is the same
/// hash as one pass (the tests check it against `blake3::hash`).
fn hash_file(path: &Path, len: u64) -> std::io::Result<[u8; 32]> {
    use blake3::hazmat::{left_subtree_len, merge_subtrees_root, HasherExt, Mode};
    let part = |offset: u64, n: u64| -> std::io::Result<blake3::Hasher> {
        let mut file = std::fs::File::open(path)?;
        file.seek(std::io::SeekFrom::Start(offset))?;
        let mut hasher = blake3::Hasher::new();
        hasher.set_input_offset(offset);
        let mut part = file.take(n);
        hasher.update_reader(&mut part)?;
        if part.limit() != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while hashed",
            ));
        }
        Ok(hasher)
    };
    if len < PARALLEL_HASH_FROM {
        return Ok(*part(0, len)?.finalize().as_bytes());
    }
    let left_len = left_subtree_len(len);
    let (left, right) = std::thread::scope(|s| {
        let right = s.spawn(|| part(left_len, len - left_len));
        let left = part(0, left_len);
        (left, right.join().unwrap_or_else(|_| Err(std::io::Error::other("hashing thread panicked"))))
    });
    let root = merge_subtrees_root(&left?.finalize_non_root(), &right?.finalize_non_root(), Mode::Hash);
    Ok(*root.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_files_around_the_split_points_then_the_two_part_hash_is_blake3() {
        let dir = tempfile::tempdir().expect("tempdir");
        let big = PARALLEL_HASH_FROM as usize;
        // Below and at the parallel threshold, powers of two and one byte either side, uneven tails.
        for len in [0, 1, 1024, 1025, big - 1, big, big + 1, 2 * big, 2 * big + 1, 3 * big + 12_345] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            std::fs::write(&path, &data).expect("write");
            assert_eq!(hash_file(&path, len as u64).expect("hash"), *blake3::hash(&data).as_bytes(), "{len}");
        }
    }

    #[test]
    fn given_file_shorter_than_said_then_hashing_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("short");
        std::fs::write(&path, vec![7u8; 5 * 1024 * 1024]).expect("write");
        assert!(hash_file(&path, 6 * 1024 * 1024).is_err());
    }
}
