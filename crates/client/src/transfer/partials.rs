//! The folder of partial files (incoming transfers kept for a resume) and what it may take of the
//! disk: at most [`StorageLimits::max_partial_bytes`] together, each counted at the size it was
//! offered at (what it grows to), the oldest given up first; none older than
//! [`StorageLimits::partial_expiry`] (swept when the client starts and every [`SWEEP_EVERY`]); and
//! no transfer that would leave less than [`StorageLimits::min_free_space`] free on the disk.
//!
//! A partial file is named `PEER-HASH-SIZE.part` (see `receive.rs`), so the size it grows to is
//! read from its name. Files a running transfer is writing (its claim) are never removed here.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::config::StorageLimits;

/// Folder inside the downloads folder where partial files wait to be resumed.
pub(crate) const PARTIAL_DIR: &str = ".whatsap2p-partial";
/// How often expired partial files are looked for while the client runs (and once at start).
pub const SWEEP_EVERY: Duration = Duration::from_secs(15 * 60);

/// Why an incoming file gets no room.
#[derive(Debug)]
pub(crate) enum NoRoom {
    /// Partial files of running transfers already take the folder's limit: retry later.
    Full(String),
    /// The disk would be left with less than the free-space floor (or cannot be measured): retry
    /// later.
    Disk(String),
}

/// A partial file on disk.
struct Partial {
    path: PathBuf,
    /// Bytes it will take once complete: the size offered, or its length if larger or unnamed.
    grows_to: u64,
    len: u64,
    modified: SystemTime,
}

/// The partial files' folder and its limits.
#[derive(Clone)]
pub(crate) struct PartialFolder {
    dir: PathBuf,
    limits: StorageLimits,
}

impl PartialFolder {
    pub(crate) fn new(downloads: &Path, limits: StorageLimits) -> Self {
        Self { dir: downloads.join(PARTIAL_DIR), limits }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> &StorageLimits {
        &self.limits
    }

    /// The partial files now in the folder, oldest first.
    fn list(&self) -> std::io::Result<Vec<Partial>> {
        let mut all = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(all),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let path = entry.path();
            let offered = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.rsplit('-').next())
                .and_then(|size| size.parse::<u64>().ok());
            let len = meta.len();
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            all.push(Partial { path, grows_to: offered.unwrap_or(0).max(len), len, modified });
        }
        all.sort_by(|a, b| (a.modified, &a.path).cmp(&(b.modified, &b.path)));
        Ok(all)
    }

    /// Removes the partial files untouched for longer than the expiry, then the oldest while they
    /// take more than the limit together; never one in `claimed`. Blocking. Returns how many went.
    pub(crate) fn sweep(&self, now: SystemTime, claimed: &HashSet<PathBuf>) -> std::io::Result<usize> {
        let mut partials = self.list()?;
        let mut removed = 0;
        let expired =
            |p: &Partial| now.duration_since(p.modified).is_ok_and(|age| age > self.limits.partial_expiry);
        partials.retain(|p| {
            if claimed.contains(&p.path) || !expired(p) || std::fs::remove_file(&p.path).is_err() {
                return true;
            }
            removed += 1;
            false
        });
        removed += self.evict_until(&mut partials, 0, claimed);
        Ok(removed)
    }

    /// Removes the oldest unclaimed partials while those left and `more` bytes exceed the limit.
    fn evict_until(&self, partials: &mut Vec<Partial>, more: u64, claimed: &HashSet<PathBuf>) -> usize {
        let mut total: u64 = partials.iter().map(|p| p.grows_to).sum::<u64>() + more;
        let mut removed = 0;
        partials.retain(|p| {
            if total <= self.limits.max_partial_bytes || claimed.contains(&p.path) {
                return true;
            }
            if std::fs::remove_file(&p.path).is_err() {
                return true;
            }
            total -= p.grows_to;
            removed += 1;
            false
        });
        removed
    }

    /// Makes room for the partial file `path` (already claimed) to grow from `held` to `size`
    /// bytes: other partials give way, oldest first, and the disk must keep its free-space floor
    /// once every running transfer is complete. Blocking.
    pub(crate) fn make_room(
        &self,
        path: &Path,
        size: u64,
        held: u64,
        claimed: &HashSet<PathBuf>,
    ) -> Result<(), NoRoom> {
        let disk = |what: &str, e: std::io::Error| NoRoom::Disk(format!("receiver cannot {what}: {e}"));
        let mut others = self.list().map_err(|e| disk("list its partial files", e))?;
        others.retain(|p| p.path != path);
        let evicted = self.evict_until(&mut others, size, claimed);
        if evicted > 0 {
            tracing::info!(
                "gave up {evicted} partial files to stay within {} bytes",
                self.limits.max_partial_bytes
            );
        }
        let total = others.iter().map(|p| p.grows_to).sum::<u64>() + size;
        let max = self.limits.max_partial_bytes;
        if total > max {
            return Err(NoRoom::Full(format!(
                "files being received take the receiver's limit of {max} bytes; try again later"
            )));
        }
        // What is still to be written, by this transfer and by the others running.
        let to_come = size.saturating_sub(held)
            + others.iter().filter(|p| claimed.contains(&p.path)).map(|p| p.grows_to - p.len).sum::<u64>();
        let free = fs4::available_space(&self.dir).map_err(|e| disk("measure its free space", e))?;
        let floor = self.limits.min_free_space;
        if free < to_come.saturating_add(floor) {
            return Err(NoRoom::Disk(format!(
                "receiver's disk has {free} bytes free: {to_come} more would leave less than its floor of {floor} bytes; try again later"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(max: u64) -> (tempfile::TempDir, PartialFolder) {
        let downloads = tempfile::tempdir().expect("tempdir");
        let limits = StorageLimits { max_partial_bytes: max, min_free_space: 0, ..Default::default() };
        let folder = PartialFolder::new(downloads.path(), limits);
        std::fs::create_dir_all(folder.dir()).expect("partial dir");
        (downloads, folder)
    }

    /// A partial of `len` bytes offered at `size`, last written `age` ago.
    fn partial(folder: &PartialFolder, name: &str, size: u64, len: usize, age: Duration) -> PathBuf {
        let path = folder.dir().join(format!("{name}-{size}.part"));
        std::fs::write(&path, vec![7u8; len]).expect("write");
        let file = std::fs::File::options().write(true).open(&path).expect("open");
        file.set_modified(SystemTime::now() - age).expect("set mtime");
        path
    }

    #[test]
    fn given_expired_and_excess_partials_then_a_sweep_removes_them_but_not_the_claimed() {
        let (_d, folder) = folder(1_000);
        let day = Duration::from_secs(24 * 3600);
        let old = partial(&folder, "old", 10, 5, 30 * day);
        let old_claimed = partial(&folder, "running", 10, 5, 30 * day);
        let a = partial(&folder, "a", 600, 10, Duration::from_secs(300));
        let b = partial(&folder, "b", 600, 10, Duration::from_secs(200));
        let claimed = HashSet::from([old_claimed.clone()]);
        assert_eq!(folder.sweep(SystemTime::now(), &claimed).expect("sweep"), 2);
        assert!(!old.exists() && !a.exists(), "the expired one and the oldest over the limit go");
        assert!(old_claimed.exists() && b.exists());
    }

    #[test]
    fn given_a_full_folder_then_room_is_made_from_the_oldest_or_refused_while_running() {
        let (_d, folder) = folder(1_000);
        let a = partial(&folder, "a", 500, 100, Duration::from_secs(30));
        let b = partial(&folder, "b", 400, 100, Duration::from_secs(20));
        let new = folder.dir().join("new-300.part");
        folder.make_room(&new, 300, 0, &HashSet::new()).expect("room");
        assert!(!a.exists() && b.exists(), "only the oldest gave way");
        // While `b` is being written it stays, and a file that does not fit beside it waits.
        let claimed = HashSet::from([b.clone()]);
        assert!(matches!(folder.make_room(&new, 700, 0, &claimed), Err(NoRoom::Full(_))));
        assert!(b.exists());
        folder.make_room(&new, 600, 0, &claimed).expect("fits beside b");
    }

    #[test]
    fn given_a_floor_above_the_free_space_then_the_disk_refuses() {
        let (_d, mut folder) = folder(u64::MAX);
        folder.limits.min_free_space = u64::MAX / 2;
        let refused = folder.make_room(&folder.dir().join("x-10.part"), 10, 0, &HashSet::new());
        assert!(matches!(refused, Err(NoRoom::Disk(reason)) if reason.contains("free")));
    }
}
