//! End-to-end tests of "Photos and files": a real directory server and real JSON-lines clients
//! sending files to each other over loopback TCP. Each test starts its own server (free port,
//! temporary data dir) and clients (temporary profiles, temporary downloads folders), so tests run in
//! parallel.
//!
//! Every receiver's downloads folder is `ROOT/downloads` in a temporary `ROOT` that holds nothing else,
//! so anything written outside the downloads folder shows up in `ROOT`.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{is, tempdir, Client, Server, TIMEOUT};
use serde_json::{json, Value};
use tempfile::TempDir;

const MIB: u64 = 1024 * 1024;
/// The longest wait for a big transfer (hundreds of MiB, with other tests running alongside).
const BIG: Duration = Duration::from_secs(50);
/// How long the rest of an interrupted big transfer may take once both sides are back: well under
/// the 30 s a transfer waits before calling its peer stalled.
const RESUME_WITHIN: Duration = Duration::from_secs(20);
/// Where a receiver keeps partial files, inside its downloads folder.
const PARTIAL_DIR: &str = ".whatsap2p-partial";

// ---------------------------------------------------------------------------------------------
// Files on disk
// ---------------------------------------------------------------------------------------------

/// Writes `size` deterministic pseudo-random bytes (BLAKE3 in XOF mode, from `seed`) to `path`;
/// returns their BLAKE3 hash in hex.
fn write_random(path: &Path, size: u64, seed: u64) -> String {
    let mut xof = blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof();
    let mut hasher = blake3::Hasher::new();
    let file = std::fs::File::create(path).expect("creating a source file");
    let mut out = std::io::BufWriter::with_capacity(MIB as usize, file);
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB) as usize;
        xof.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).expect("writing a source file");
        left -= n as u64;
    }
    out.flush().expect("flushing a source file");
    hasher.finalize().to_hex().to_string()
}

/// [`write_random`] on a blocking thread (big files).
async fn write_random_async(path: &Path, size: u64, seed: u64) -> String {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || write_random(&path, size, seed)).await.expect("writing a random file")
}

/// The BLAKE3 hash (hex) of a file, computed on a blocking thread.
async fn hash_file(path: &Path) -> String {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let mut hasher = blake3::Hasher::new();
        hasher.update_reader(file).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        hasher.finalize().to_hex().to_string()
    })
    .await
    .expect("hashing a file")
}

/// A 2D gradient image, a plausible photo.
fn gradient(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, ((x + y) % 256) as u8])
    })
}

/// The names in a folder, sorted.
fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("a folder entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Every path under `dir`, relative to it, recursively, sorted.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())) {
            let path = e.expect("a folder entry").path();
            out.insert(path.strip_prefix(base).expect("under base").to_path_buf());
            if path.is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// A receiver's folders: a profile, and a downloads folder alone in its own `root`.
struct Folders {
    profile: TempDir,
    root: TempDir,
}

impl Folders {
    fn new() -> Folders {
        Folders { profile: tempdir(), root: tempdir() }
    }

    fn downloads(&self) -> PathBuf {
        self.root.path().join("downloads")
    }

    /// What the downloads folder holds besides the (empty or absent) partial-file folder; checks that
    /// the root holds only the downloads folder.
    fn saved(&self) -> BTreeSet<String> {
        assert_eq!(
            names_in(self.root.path()),
            BTreeSet::from(["downloads".to_owned()]),
            "something was written next to the downloads folder"
        );
        let mut names = names_in(&self.downloads());
        names.remove(PARTIAL_DIR);
        names
    }

    /// The partial files waiting to be resumed: (name, size).
    fn partials(&self) -> Vec<(String, u64)> {
        let dir = self.downloads().join(PARTIAL_DIR);
        if !dir.exists() {
            return Vec::new();
        }
        std::fs::read_dir(&dir)
            .expect("listing the partial folder")
            .map(|e| {
                let e = e.expect("a folder entry");
                (e.file_name().to_string_lossy().into_owned(), e.metadata().expect("metadata").len())
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// Starts a receiver with `folders` (its profile and downloads folder) and `extra` flags.
async fn start_receiver(port: u16, number: &str, folders: &Folders, extra: &[&str]) -> Client {
    let downloads = folders.downloads();
    let mut flags = vec!["--downloads", downloads.to_str().expect("a UTF-8 tempdir")];
    flags.extend_from_slice(extra);
    Client::start_with(port, number, folders.profile.path(), &flags).await
}

/// A server, sender 100, and receiver 200 (started with `extra` flags, saving into the returned
/// folders) that has 100 as a contact.
async fn linked(extra: &[&str]) -> (Server, Client, Folders, Client) {
    let server = Server::start(&[]).await;
    let sender = Client::start(server.port, "100").await;
    let folders = Folders::new();
    let mut receiver = start_receiver(server.port, "200", &folders, extra).await;
    add_contact(&mut receiver, "100").await;
    (server, sender, folders, receiver)
}

async fn add_contact(c: &mut Client, number: &str) {
    c.send(json!({"cmd": "add_contact", "number": number})).await;
    let v = c.reply("contact_added", |v| is(v, "contact_added") && v["number"] == number).await;
    assert!(is(&v, "contact_added"), "{}: add_contact {number} failed: {v}", c.number);
}

/// `send_file` of `path` to `to`; returns the `file_queued` answer after checking its shape.
async fn send_file(c: &mut Client, to: &str, path: &Path) -> Value {
    let path_str = path.to_str().expect("a UTF-8 path");
    c.send(json!({"cmd": "send_file", "to": to, "path": path_str})).await;
    let v = c.reply("file_queued", |v| is(v, "file_queued")).await;
    assert!(
        is(&v, "file_queued"),
        "{}: send_file {path_str:?} failed: {v}\n{}",
        c.number.clone(),
        c.report()
    );
    assert_eq!(v["to"], to, "{v}");
    assert_eq!(v["id"].as_str().map(str::len), Some(26), "a ULID: {v}");
    assert_eq!(v["blake3"].as_str().map(str::len), Some(64), "{v}");
    v
}

/// `send_file` that must be refused at once; returns the error message.
async fn send_file_refused(c: &mut Client, to: &str, path: &Path) -> String {
    c.send(json!({"cmd": "send_file", "to": to, "path": path.to_str().expect("a UTF-8 path")})).await;
    let v = c.reply("error", |v| is(v, "file_queued")).await;
    assert!(is(&v, "error"), "{}: send_file {} should fail: {v}", c.number, path.display());
    v["message"].as_str().expect("error.message").to_owned()
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

/// Follows outgoing file `id` until `file_sent` or `file_failed`; returns its `progress` events and
/// that last event.
async fn outcome(c: &mut Client, id: &str, within: Duration) -> (Vec<Value>, Value) {
    let deadline = Instant::now() + within;
    let mut progress = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let v = c
            .expect_within(left, &format!("file_sent or file_failed of {id}"), |v| {
                (is(v, "progress") || is(v, "file_sent") || is(v, "file_failed")) && v["id"] == id
            })
            .await;
        if is(&v, "progress") {
            progress.push(v);
        } else {
            return (progress, v);
        }
    }
}

/// Follows outgoing file `id` until it must be `file_sent`; returns its `progress` events and
/// `file_sent`.
async fn sent(c: &mut Client, id: &str, to: &str, within: Duration) -> (Vec<Value>, Value) {
    let (progress, end) = outcome(c, id, within).await;
    assert!(is(&end, "file_sent"), "{}: file {id} not sent: {end}\n{}", c.number.clone(), c.report());
    assert_eq!(end["to"], to, "{end}");
    (progress, end)
}

/// Follows outgoing file `id` until it must be `file_failed` (direction out); returns its reason.
async fn failed_out(c: &mut Client, id: &str, peer: &str) -> String {
    let (_, end) = outcome(c, id, TIMEOUT).await;
    assert!(is(&end, "file_failed"), "{}: file {id} should fail: {end}\n{}", c.number.clone(), c.report());
    assert_eq!(end["direction"], "out", "{end}");
    assert_eq!(end["peer"], peer, "{end}");
    end["reason"].as_str().expect("file_failed.reason").to_owned()
}

/// The first event already seen that matches `pred`, else the next one to come within `within`.
/// For transfers running side by side, whose events interleave.
async fn seen_or_expect_within(
    c: &mut Client,
    within: Duration,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    if let Some(v) = c.events_so_far().into_iter().find(|v| pred(v)) {
        return v;
    }
    c.expect_within(within, what, pred).await
}

/// Waits for `file_sent` of `id`, which may already have been seen (failing on its `file_failed`).
async fn sent_seen(c: &mut Client, id: &str, to: &str) -> Value {
    let v = seen_or_expect_within(c, TIMEOUT, &format!("file_sent of {id}"), |v| {
        (is(v, "file_sent") || is(v, "file_failed")) && v["id"] == id
    })
    .await;
    assert!(is(&v, "file_sent"), "{}: file {id} not sent: {v}\n{}", c.number.clone(), c.report());
    assert_eq!(v["to"], to, "{v}");
    v
}

/// Waits for `file_received` of `id`, which may already have been seen (failing at once on a new
/// `file_failed` of it).
async fn received(c: &mut Client, id: &str, from: &str, within: Duration) -> Value {
    let found = c.events_so_far().into_iter().find(|v| is(v, "file_received") && v["id"] == id);
    let v = match found {
        Some(v) => v,
        None => {
            c.expect_within(within, &format!("file_received of {id}"), |v| {
                (is(v, "file_received") || is(v, "file_failed")) && v["id"] == id
            })
            .await
        }
    };
    assert!(is(&v, "file_received"), "{}: file {id} not received: {v}\n{}", c.number.clone(), c.report());
    assert_eq!(v["from"], from, "{v}");
    v
}

/// Progress events of one file: about `total`, never past it, never going back.
#[track_caller]
fn check_progress(progress: &[Value], total: u64) {
    let mut last = 0;
    for p in progress {
        assert_eq!(p["total"], total, "{p}");
        let bytes = p["bytes"].as_u64().expect("progress.bytes");
        assert!(bytes <= total, "{p}");
        assert!(bytes >= last, "progress went back: {progress:?}");
        last = bytes;
    }
}

/// Checks a `file_received` names a file directly inside `downloads` holding `size` bytes that hash
/// to `blake3`; returns its path.
async fn check_saved(r: &Value, downloads: &Path, size: u64, blake3: &str) -> PathBuf {
    assert_eq!(r["size"], size, "{r}");
    assert_eq!(r["blake3"], blake3, "{r}");
    let path = PathBuf::from(r["path"].as_str().expect("file_received.path"));
    assert_eq!(path.parent(), Some(downloads), "saved outside the downloads folder: {r}");
    assert_eq!(path.file_name().and_then(|n| n.to_str()), r["name"].as_str(), "{r}");
    assert_eq!(std::fs::metadata(&path).expect("the saved file").len(), size, "{r}");
    assert_eq!(hash_file(&path).await, blake3, "the saved file's bytes: {r}");
    path
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// 1. A JPEG and a PNG (one with a leading-dots, non-ASCII name) arrive byte-identical, with their
///    dimensions and media types, saved directly in the downloads folder; the sender sees
///    `file_queued`, progress, then `file_sent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_jpeg_and_png_photos_then_they_arrive_byte_identical_with_their_dimensions() {
    let src = tempdir();
    let jpeg = src.path().join("photo.jpg");
    let png = src.path().join("..Férias à beira-mar 🌊.png");
    gradient(640, 480).save_with_format(&jpeg, image::ImageFormat::Jpeg).expect("writing the JPEG");
    gradient(640, 480).save_with_format(&png, image::ImageFormat::Png).expect("writing the PNG");

    let (_server, mut sender, folders, mut receiver) = linked(&[]).await;

    let photos = [
        (&jpeg, "photo.jpg", "photo.jpg", "image/jpeg"),
        // Leading dots are stripped: the file must not be hidden.
        (&png, "..Férias à beira-mar 🌊.png", "Férias à beira-mar 🌊.png", "image/png"),
    ];
    for (path, name, saved_name, media_type) in photos {
        let bytes = std::fs::read(path).expect("reading the photo");
        let size = bytes.len() as u64;
        let hash = blake3::hash(&bytes).to_hex().to_string();

        let q = send_file(&mut sender, "200", path).await;
        assert_eq!(q["name"], name, "{q}");
        assert_eq!(q["size"], size, "{q}");
        assert_eq!(q["media_type"], media_type, "{q}");
        assert_eq!(q["blake3"], hash, "{q}");
        let id = id_of(&q);

        let (progress, end) = sent(&mut sender, &id, "200", TIMEOUT).await;
        assert!(!progress.is_empty(), "no progress before file_sent:\n{}", sender.report());
        check_progress(&progress, size);
        assert_eq!(end["resumed_from"], 0, "{end}");

        let r = received(&mut receiver, &id, "100", TIMEOUT).await;
        assert_eq!(r["name"], saved_name, "{r}");
        assert_eq!(r["media_type"], media_type, "{r}");
        assert_eq!(r["width"], 640, "{r}");
        assert_eq!(r["height"], 480, "{r}");
        assert_eq!(r["resumed_from"], 0, "{r}");
        let saved = check_saved(&r, &folders.downloads(), size, &hash).await;
        let saved_bytes = std::fs::read(&saved).expect("reading the saved photo");
        assert!(saved_bytes == bytes, "{} differs from {}", saved.display(), path.display());
    }
    assert_eq!(
        folders.saved(),
        BTreeSet::from(["photo.jpg".to_owned(), "Férias à beira-mar 🌊.png".to_owned()])
    );
    assert_eq!(folders.partials(), vec![], "no partial file is left");
}

/// 2. A 200 MiB random file arrives whole: the hash the receiver reports and the hash of the saved
///    file are the source's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_200_mib_random_file_then_it_arrives_with_the_right_hash() {
    let src = tempdir();
    let path = src.path().join("big.bin");
    let size = 200 * MIB;
    let hash = write_random_async(&path, size, 2).await;

    let (_server, mut sender, folders, mut receiver) = linked(&[]).await;

    let started = Instant::now();
    let q = send_file(&mut sender, "200", &path).await;
    assert_eq!(q["size"], size, "{q}");
    assert_eq!(q["blake3"], hash, "{q}");
    assert_eq!(q["media_type"], "application/octet-stream", "{q}");
    let id = id_of(&q);
    let (progress, end) = sent(&mut sender, &id, "200", BIG).await;
    eprintln!("200 MiB sent in {:?}", started.elapsed());
    assert!(!progress.is_empty(), "no progress for 200 MiB");
    check_progress(&progress, size);
    assert_eq!(end["resumed_from"], 0, "{end}");

    let r = received(&mut receiver, &id, "100", BIG).await;
    assert_eq!(r["name"], "big.bin", "{r}");
    assert_eq!(r["resumed_from"], 0, "{r}");
    assert!(r.get("width").is_none() && r.get("height").is_none(), "not an image: {r}");
    check_saved(&r, &folders.downloads(), size, &hash).await;
    assert_eq!(folders.saved(), BTreeSet::from(["big.bin".to_owned()]));
    assert_eq!(folders.partials(), vec![], "no partial file is left");
}

/// Waits for a `progress` of `id` at 30 % or more; returns its bytes, after checking the transfer
/// is not over (it must be interrupted halfway).
async fn progress_past_30_percent(c: &mut Client, id: &str, total: u64) -> u64 {
    let v = c
        .expect_within(BIG, "progress past 30 %", |v| {
            v["id"] == id
                && (is(v, "file_sent")
                    || is(v, "file_failed")
                    || (is(v, "progress") && v["bytes"].as_u64().is_some_and(|b| b * 10 >= total * 3)))
        })
        .await;
    assert!(is(&v, "progress"), "the transfer ended before 30 %: {v}");
    let bytes = v["bytes"].as_u64().expect("progress.bytes");
    assert!(bytes < total, "the transfer went from under 30 % to done between two progress events: {v}");
    bytes
}

/// 3a. A sender SIGKILLed past 30 % of a 300 MiB file resumes by itself once restarted with the same
///     profile: both sides report the offset it resumed from, at least what had been confirmed, and
///     the file arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sender_killed_halfway_then_after_restart_the_transfer_resumes_and_completes() {
    let src = tempdir();
    let path = src.path().join("resume.bin");
    let size = 300 * MIB;
    let hash = write_random_async(&path, size, 3).await;

    let server = Server::start(&[]).await;
    let sender_profile = tempdir();
    let mut sender = Client::start_with(server.port, "100", sender_profile.path(), &[]).await;
    let folders = Folders::new();
    let mut receiver = start_receiver(server.port, "200", &folders, &[]).await;
    add_contact(&mut receiver, "100").await;

    let id = id_of(&send_file(&mut sender, "200", &path).await);
    let confirmed = progress_past_30_percent(&mut sender, &id, size).await;
    sender.kill().await;

    // The receiver keeps what it has (at least every byte it confirmed).
    let partials = folders.partials();
    assert_eq!(partials.len(), 1, "one partial file: {partials:?}");
    assert!(
        partials[0].1 >= confirmed && partials[0].1 < size,
        "partial {partials:?}, confirmed {confirmed}"
    );
    assert_eq!(folders.saved(), BTreeSet::new(), "nothing saved before the hash is checked");

    // Same profile: the pending file goes out again by itself.
    let restarted = Instant::now();
    let mut sender = Client::start_with(server.port, "100", sender_profile.path(), &[]).await;
    let (progress, end) = sent(&mut sender, &id, "200", RESUME_WITHIN).await;
    eprintln!("sender killed: sent {:?} after the restart", restarted.elapsed());
    check_progress(&progress, size);
    let resumed_from = end["resumed_from"].as_u64().expect("file_sent.resumed_from");
    let r = received(&mut receiver, &id, "100", BIG).await;
    assert_eq!(r["resumed_from"], resumed_from, "both sides agree on the offset: {r} / {end}");
    assert!(resumed_from >= confirmed, "resumed from {resumed_from}, but {confirmed} bytes were confirmed");
    let resent = size - resumed_from;
    assert!(resent * 10 <= size * 7, "resent {resent} of {size} bytes");
    if let Some(first) = progress.first() {
        assert!(first["bytes"].as_u64().expect("progress.bytes") >= resumed_from, "{first}");
    }
    eprintln!("resumed from {resumed_from} of {size} (confirmed {confirmed} before the kill)");
    check_saved(&r, &folders.downloads(), size, &hash).await;
    assert_eq!(folders.saved(), BTreeSet::from(["resume.bin".to_owned()]));
    assert_eq!(folders.partials(), vec![], "the partial file became the saved one");
}

/// 3b. A receiver SIGKILLed past 30 % of a 300 MiB file keeps its partial file; restarted with the
///     same profile and downloads folder, the running sender resumes there by itself, at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_receiver_killed_halfway_then_after_restart_the_transfer_resumes_and_completes() {
    let src = tempdir();
    let path = src.path().join("resume-in.bin");
    let size = 300 * MIB;
    let hash = write_random_async(&path, size, 4).await;

    let (server, mut sender, folders, mut receiver) = linked(&[]).await;

    let id = id_of(&send_file(&mut sender, "200", &path).await);
    let confirmed = progress_past_30_percent(&mut sender, &id, size).await;
    receiver.kill().await;
    let partials = folders.partials();
    assert_eq!(partials.len(), 1, "one partial file: {partials:?}");
    assert!(
        partials[0].1 >= confirmed && partials[0].1 < size,
        "partial {partials:?}, confirmed {confirmed}"
    );

    let restarted = Instant::now();
    let mut receiver = start_receiver(server.port, "200", &folders, &[]).await;
    // A pending file is retried "when the peer comes online" (docs/protocol.md): the rest (at most
    // 70 % of 300 MiB, a few seconds here) goes out at once, not after the 30 s stall timeout.
    let (_, end) = sent(&mut sender, &id, "200", RESUME_WITHIN).await;
    eprintln!("receiver killed: sent {:?} after the restart", restarted.elapsed());
    let resumed_from = end["resumed_from"].as_u64().expect("file_sent.resumed_from");
    let r = received(&mut receiver, &id, "100", BIG).await;
    assert_eq!(r["resumed_from"], resumed_from, "both sides agree on the offset: {r} / {end}");
    assert!(resumed_from >= confirmed, "resumed from {resumed_from}, but {confirmed} bytes were confirmed");
    let resent = size - resumed_from;
    assert!(resent * 10 <= size * 7, "resent {resent} of {size} bytes");
    eprintln!("resumed from {resumed_from} of {size} (confirmed {confirmed} before the kill)");
    check_saved(&r, &folders.downloads(), size, &hash).await;
    assert_eq!(folders.saved(), BTreeSet::from(["resume-in.bin".to_owned()]));
    assert_eq!(folders.partials(), vec![], "the partial file became the saved one");
}

/// Windows device names, which the saved name's first dot-separated part must never be.
const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8", "COM9",
    "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// 4. Hostile file names (control characters, leading dots, Windows device names, backslash
///    "directories", a 240-byte name) land directly in the downloads folder under safe names, and
///    nothing is written outside it; a second file with the same name is numbered and overwrites
///    nothing. A path through `..` sends its base name; a directory is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_hostile_file_names_then_files_land_inside_downloads_under_safe_names() {
    let src = tempdir();
    let long = format!("{}.txt", "x".repeat(236));
    // (name on the sender's disk, the exact safe name when the docs fix it)
    let hostile: Vec<(String, Option<&str>)> = vec![
        ("bad\u{7}name\u{1b}[31m.txt".to_owned(), None),
        ("\nstarts with a newline.txt".to_owned(), None),
        ("tab\there\r.txt".to_owned(), None),
        (".hidden".to_owned(), Some("hidden")),
        ("...dots.txt".to_owned(), Some("dots.txt")),
        // A legal Linux name; on the receiver's side the backslashes are directories to strip.
        ("..\\..\\evil.txt".to_owned(), Some("evil.txt")),
        ("CON".to_owned(), None),
        ("nul.txt".to_owned(), None),
        ("com1.tar.gz".to_owned(), None),
        (long.clone(), None),
    ];
    for (i, (name, _)) in hostile.iter().enumerate() {
        std::fs::write(src.path().join(name), format!("file {i}: {name:?}")).expect("writing a source file");
    }
    std::fs::create_dir(src.path().join("sub")).expect("creating sub");
    std::fs::write(src.path().join("through-parent.txt"), "through ..").expect("writing a source file");
    let (dir_a, dir_b) = (src.path().join("a"), src.path().join("b"));
    std::fs::create_dir(&dir_a).expect("creating a");
    std::fs::create_dir(&dir_b).expect("creating b");
    std::fs::write(dir_a.join("same.txt"), "the first same.txt").expect("writing a source file");
    std::fs::write(dir_b.join("same.txt"), "the second same.txt, longer").expect("writing a source file");

    let (_server, mut sender, folders, mut receiver) = linked(&[]).await;
    let root_before = tree(folders.root.path());
    assert_eq!(root_before, BTreeSet::from([PathBuf::from("downloads")]));

    // Everything queued at once: several transfers on one link.
    let mut ids = Vec::new();
    for (name, _) in &hostile {
        let q = send_file(&mut sender, "200", &src.path().join(name)).await;
        assert_eq!(q["name"], name.as_str(), "the sender offers its base name as it is: {q}");
        ids.push(id_of(&q));
    }
    // `sub/../through-parent.txt`: the base name is what is offered.
    let q =
        send_file(&mut sender, "200", &src.path().join("sub").join("..").join("through-parent.txt")).await;
    assert_eq!(q["name"], "through-parent.txt", "{q}");
    let through_parent = id_of(&q);
    // A path ending in `..` is a folder, not a file.
    let err = send_file_refused(&mut sender, "200", &src.path().join("sub").join("..")).await;
    assert!(err.contains("not a regular file"), "{err}");

    let mut saved_names = BTreeSet::new();
    for (i, ((name, exact), id)) in hostile.iter().zip(&ids).enumerate() {
        sent_seen(&mut sender, id, "200").await;
        let r = received(&mut receiver, id, "100", TIMEOUT).await;
        let content = format!("file {i}: {name:?}");
        let hash = blake3::hash(content.as_bytes()).to_hex().to_string();
        let path = check_saved(&r, &folders.downloads(), content.len() as u64, &hash).await;
        assert_eq!(std::fs::read_to_string(&path).expect("reading a saved file"), content);
        let safe = r["name"].as_str().expect("file_received.name");
        if let Some(exact) = exact {
            assert_eq!(safe, *exact, "{name:?}: {r}");
        }
        assert!(!safe.is_empty() && safe.len() <= 200, "{name:?}: {r}");
        assert!(!safe.starts_with('.'), "{name:?} saved hidden: {r}");
        assert!(!safe.chars().any(|c| c.is_control() || c == '/' || c == '\\'), "{name:?}: {r}");
        let stem = safe.split('.').next().unwrap_or_default().to_ascii_uppercase();
        assert!(!RESERVED.contains(&stem.as_str()), "{name:?} saved as a device name: {r}");
        assert!(saved_names.insert(safe.to_owned()), "two files saved as {safe:?}");
        if *name == long {
            assert!(safe.ends_with(".txt") && safe.starts_with("xxxx"), "the cut keeps the extension: {r}");
        }
    }
    sent_seen(&mut sender, &through_parent, "200").await;
    let r = received(&mut receiver, &through_parent, "100", TIMEOUT).await;
    assert_eq!(r["name"], "through-parent.txt", "{r}");
    saved_names.insert("through-parent.txt".to_owned());

    // Same name twice: the second is numbered, the first is kept as it was.
    let first = id_of(&send_file(&mut sender, "200", &dir_a.join("same.txt")).await);
    sent(&mut sender, &first, "200", TIMEOUT).await;
    let r1 = received(&mut receiver, &first, "100", TIMEOUT).await;
    assert_eq!(r1["name"], "same.txt", "{r1}");
    let first_hash = blake3::hash(b"the first same.txt").to_hex().to_string();
    check_saved(&r1, &folders.downloads(), 18, &first_hash).await;
    let second = id_of(&send_file(&mut sender, "200", &dir_b.join("same.txt")).await);
    sent(&mut sender, &second, "200", TIMEOUT).await;
    let r2 = received(&mut receiver, &second, "100", TIMEOUT).await;
    assert_eq!(r2["path"], folders.downloads().join("same (1).txt").to_str().expect("UTF-8"), "{r2}");
    assert_eq!(r2["blake3"], blake3::hash(b"the second same.txt, longer").to_hex().as_str(), "{r2}");
    let downloads = folders.downloads();
    assert_eq!(std::fs::read_to_string(downloads.join("same.txt")).expect("same.txt"), "the first same.txt");
    assert_eq!(
        std::fs::read_to_string(downloads.join("same (1).txt")).expect("same (1).txt"),
        "the second same.txt, longer"
    );
    saved_names.extend(["same.txt".to_owned(), "same (1).txt".to_owned()]);

    // Nothing but the saved files, directly in the downloads folder; nothing outside it.
    assert_eq!(folders.saved(), saved_names);
    assert_eq!(folders.partials(), vec![], "no partial file is left");
    let root_after = tree(folders.root.path());
    let outside: Vec<&PathBuf> = root_after.iter().filter(|p| !p.starts_with("downloads")).collect();
    assert!(outside.is_empty(), "written outside the downloads folder: {outside:?}");
    let nested: Vec<&PathBuf> = root_after
        .iter()
        .filter(|p| p.components().count() > 2 && !p.starts_with(Path::new("downloads").join(PARTIAL_DIR)))
        .collect();
    assert!(nested.is_empty(), "written below the downloads folder: {nested:?}");

    // `name` is the name the file was saved under (docs/json-lines.md: "saved ... under a safe name
    // ... and numbered (`cat (1).jpg`)"), so it is the last component of `path`.
    assert_eq!(r2["name"], "same (1).txt", "file_received.name is not the saved file's name: {r2}");
}

/// Registers `number` with `folders` once (it adds `contact`), then logs it out.
async fn register_then_logout(port: u16, number: &str, folders: &Folders, contact: &str) {
    let mut c = start_receiver(port, number, folders, &[]).await;
    add_contact(&mut c, contact).await;
    c.logout().await;
}

/// 5a. A source file rewritten (same length, other bytes) after `file_queued`, while the receiver was
///     offline: the bytes do not match the offered hash, both sides report `file_failed`, and nothing
///     is saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_file_changed_after_queued_then_wrong_hash_fails_on_both_sides_and_nothing_is_saved() {
    let src = tempdir();
    let path = src.path().join("changed.bin");
    let size = 3 * MIB + 17;
    let offered_hash = write_random(&path, size, 51);

    let server = Server::start(&[]).await;
    let folders = Folders::new();
    register_then_logout(server.port, "200", &folders, "100").await;
    let mut sender = Client::start(server.port, "100").await;

    let q = send_file(&mut sender, "200", &path).await;
    assert_eq!(q["blake3"], offered_hash, "{q}");
    let id = id_of(&q);
    // Same size, other bytes.
    let changed_hash = write_random(&path, size, 52);
    assert_ne!(changed_hash, offered_hash);

    let mut receiver = start_receiver(server.port, "200", &folders, &[]).await;
    let reason = failed_out(&mut sender, &id, "200").await;
    assert!(reason.contains("hash"), "{reason}");
    let f = receiver
        .expect("file_failed", |v| (is(v, "file_failed") || is(v, "file_received")) && v["id"] == id)
        .await;
    assert!(is(&f, "file_failed"), "{f}");
    assert_eq!(f["direction"], "in", "{f}");
    assert_eq!(f["peer"], "100", "{f}");
    assert!(f["reason"].as_str().is_some_and(|r| r.contains("hash")), "{f}");
    assert_eq!(folders.saved(), BTreeSet::new(), "a file with the wrong hash was saved");
    assert_eq!(folders.partials(), vec![], "bytes that cannot be right are not kept");
}

/// 5b. A source file truncated after `file_queued` (fewer bytes than offered): the sender gives up with
///     `file_failed` and nothing is saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_file_truncated_after_queued_then_sender_fails_and_nothing_is_saved() {
    let src = tempdir();
    let path = src.path().join("truncated.bin");
    let size = 3 * MIB;
    write_random(&path, size, 53);

    let server = Server::start(&[]).await;
    let folders = Folders::new();
    register_then_logout(server.port, "200", &folders, "100").await;
    let mut sender = Client::start(server.port, "100").await;

    let q = send_file(&mut sender, "200", &path).await;
    assert_eq!(q["size"], size, "{q}");
    let id = id_of(&q);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(size / 2))
        .expect("truncating the source");

    let _receiver = start_receiver(server.port, "200", &folders, &[]).await;
    let reason = failed_out(&mut sender, &id, "200").await;
    assert!(reason.contains("changed"), "{reason}");
    assert_eq!(folders.saved(), BTreeSet::new(), "a short file was saved");
}

/// 5c. An offer from a number that is not a contact of the receiver is held as a message request:
///     the sender sees it pending, the receiver sees its name and size, and not a byte is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_sender_not_a_contact_then_the_file_waits_as_a_request_and_nothing_is_written() {
    let src = tempdir();
    let path = src.path().join("unsolicited.txt");
    std::fs::write(&path, "you did not ask for this").expect("writing the source");

    let server = Server::start(&[]).await;
    let mut sender = Client::start(server.port, "100").await;
    let folders = Folders::new();
    let mut receiver = start_receiver(server.port, "200", &folders, &[]).await;
    // The receiver knows 300, not 100.
    add_contact(&mut receiver, "300").await;

    let id = id_of(&send_file(&mut sender, "200", &path).await);
    let v = sender
        .expect("pending or failed", |v| (is(v, "pending") || is(v, "file_failed")) && v["id"] == id.as_str())
        .await;
    assert!(is(&v, "pending"), "{v}");
    let r = receiver.expect("request", |v| is(v, "request") && v["from"] == "100").await;
    assert_eq!(
        (r["kind"].as_str(), r["name"].as_str(), r["size"].as_u64()),
        (Some("file"), Some("unsolicited.txt"), Some(24)),
        "{r}"
    );
    // A barrier: a text sent after the file is held after the offer was dealt with.
    let m = sender.send_text("200", "did you get it?").await;
    receiver.expect("the text's request", |v| is(v, "request") && v["id"] == m.as_str()).await;
    let got: Vec<Value> = receiver.events_so_far().into_iter().filter(|v| is(v, "file_received")).collect();
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(folders.saved(), BTreeSet::new(), "a file from a stranger was saved");
    assert_eq!(folders.partials(), vec![]);
}

/// 5d. A file over the receiver's `--max-file-size` is refused with the reason; one of exactly the
///     limit is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_file_over_max_file_size_then_it_is_refused_and_one_at_the_limit_is_accepted() {
    let src = tempdir();
    let (over, at) = (src.path().join("over.bin"), src.path().join("at.bin"));
    let over_hash = write_random(&over, 1001, 54);
    let at_hash = write_random(&at, 1000, 55);
    assert_ne!(over_hash, at_hash);

    let (_server, mut sender, folders, mut receiver) = linked(&["--max-file-size", "1000"]).await;

    let id = id_of(&send_file(&mut sender, "200", &over).await);
    let reason = failed_out(&mut sender, &id, "200").await;
    assert!(reason.contains("limit") && reason.contains("1000"), "{reason}");

    let id = id_of(&send_file(&mut sender, "200", &at).await);
    sent(&mut sender, &id, "200", TIMEOUT).await;
    let r = received(&mut receiver, &id, "100", TIMEOUT).await;
    check_saved(&r, &folders.downloads(), 1000, &at_hash).await;
    assert_eq!(folders.saved(), BTreeSet::from(["at.bin".to_owned()]));
}

/// Position of the first event matching `pred` in `events`.
fn position(events: &[Value], pred: impl Fn(&Value) -> bool) -> Option<usize> {
    events.iter().position(pred)
}

/// 6. While a 200 MiB file is on its way, text messages keep flowing both ways: each is delivered
///    (and shown) before the file is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_large_transfer_running_then_chat_messages_pass_ahead_of_it_both_ways() {
    let src = tempdir();
    let path = src.path().join("big-with-chat.bin");
    let size = 200 * MIB;
    let hash = write_random_async(&path, size, 6).await;

    let (_server, mut sender, folders, mut receiver) = linked(&[]).await;

    let id = id_of(&send_file(&mut sender, "200", &path).await);
    // The transfer is running.
    let p = sender
        .expect_within(BIG, "first progress", |v| {
            v["id"] == id && (is(v, "progress") || is(v, "file_sent") || is(v, "file_failed"))
        })
        .await;
    assert!(is(&p, "progress"), "{p}");

    let mut chat = Vec::new();
    for i in 0..3 {
        let text = format!("from 100 during the transfer, #{i}");
        let m = sender.send_text("200", &text).await;
        sender.delivered(&m, "200").await;
        receiver.message(&m, "100", &text).await;
        chat.push(m);
        let text = format!("from 200 during the transfer, #{i}");
        let m = receiver.send_text("100", &text).await;
        receiver.delivered(&m, "100").await;
        sender.message(&m, "200", &text).await;
        chat.push(m);
    }

    // Every chat event came before the end of the transfer, on both sides.
    for (c, done) in [(&mut sender, "file_sent"), (&mut receiver, "file_received")] {
        let events = c.events_so_far();
        let end = position(&events, |v| is(v, done) && v["id"] == id).unwrap_or(usize::MAX);
        for m in &chat {
            let at = position(&events, |v| (is(v, "delivered") || is(v, "message")) && v["id"] == m.as_str())
                .expect("seen above");
            assert!(at < end, "{}: chat {m} came after {done} (event {at} vs {end})", c.number);
        }
    }

    sent(&mut sender, &id, "200", BIG).await;
    let r = received(&mut receiver, &id, "100", BIG).await;
    check_saved(&r, &folders.downloads(), size, &hash).await;
}

/// The first `progress` of outgoing file `id`: the transfer is under way (and not over).
async fn under_way(sender: &mut Client, id: &str) {
    let p = sender
        .expect_within(BIG, "first progress", |v| {
            v["id"] == id && (is(v, "progress") || is(v, "file_sent") || is(v, "file_failed"))
        })
        .await;
    assert!(is(&p, "progress"), "{p}");
}

/// `cancel_file` of `id`; returns the answer after checking it is `file_cancelled`.
async fn cancel(c: &mut Client, id: &str) {
    c.send(json!({"cmd": "cancel_file", "id": id})).await;
    let v = c.reply("file_cancelled", |v| is(v, "file_cancelled")).await;
    assert_eq!((v["event"].as_str(), v["id"].as_str()), (Some("file_cancelled"), Some(id)), "{v}");
}

/// The `file_failed` of transfer `id` with code `cancelled`, going `direction`.
async fn cancelled(c: &mut Client, id: &str, direction: &str, peer: &str, by: &str) {
    let v = seen_or_expect_within(c, TIMEOUT, "file_failed (cancelled)", |v| {
        is(v, "file_failed") && v["id"] == id
    })
    .await;
    assert_eq!(
        (v["direction"].as_str(), v["peer"].as_str(), v["code"].as_str()),
        (Some(direction), Some(peer), Some("cancelled")),
        "{}: {v}",
        c.number
    );
    assert_eq!(v["reason"], format!("cancelled by {by}"), "{v}");
}

/// 7a. The receiver cancels a file halfway (the sender frozen meanwhile, so it cannot finish):
///     the receiver keeps nothing of it, the sender hears it once it runs again and gives the
///     file up for good, and incoming progress and `file_incoming` were reported before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_receiver_cancels_halfway_then_both_sides_stop_for_good_and_nothing_is_kept() {
    let src = tempdir();
    let path = src.path().join("unwanted.bin");
    let size = 200 * MIB;
    write_random_async(&path, size, 71).await;
    let (_server, mut sender, folders, mut receiver) = linked(&[]).await;

    let id = id_of(&send_file(&mut sender, "200", &path).await);
    under_way(&mut sender, &id).await;
    sender.stop().await;
    let incoming = seen_or_expect_within(&mut receiver, TIMEOUT, "file_incoming", |v| {
        is(v, "file_incoming") && v["id"] == id.as_str()
    })
    .await;
    assert_eq!(
        (incoming["from"].as_str(), incoming["name"].as_str(), incoming["size"].as_u64()),
        (Some("100"), Some("unwanted.bin"), Some(size)),
        "{incoming}"
    );
    assert_eq!(incoming["resumed_from"], 0, "{incoming}");

    cancel(&mut receiver, &id).await;
    cancelled(&mut receiver, &id, "in", "100", "200").await;
    assert_eq!(folders.partials(), vec![], "the partial file is gone");
    assert_eq!(folders.saved(), BTreeSet::new());

    sender.signal("CONT");
    cancelled(&mut sender, &id, "out", "200", "200").await;
    // No new attempt: a text sent after it is the next thing the receiver hears of 100.
    let m = sender.send_text("200", "ok, never mind").await;
    receiver.message(&m, "100", "ok, never mind").await;
    let offers = receiver.events_so_far().into_iter().filter(|v| is(v, "file_incoming")).count();
    assert_eq!(offers, 1, "offered once:\n{}", receiver.report());
    assert_eq!(folders.partials(), vec![]);
    assert_eq!(folders.saved(), BTreeSet::new());
    assert_eq!(std::fs::metadata(&path).map(|m| m.len()).ok(), Some(size), "the sender's own file is kept");
}

/// 7b. The sender cancels a file halfway (the receiver frozen meanwhile): the receiver drops its
///     partial file, the sender never offers it again (not even after a restart), and a second
///     cancel is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_the_sender_cancels_halfway_then_the_receiver_drops_it_and_it_is_never_offered_again() {
    let src = tempdir();
    let path = src.path().join("oops.bin");
    let size = 200 * MIB;
    write_random_async(&path, size, 72).await;
    let server = Server::start(&[]).await;
    let sender_profile = tempdir();
    let mut sender = Client::start_with(server.port, "100", sender_profile.path(), &[]).await;
    let folders = Folders::new();
    let mut receiver = start_receiver(server.port, "200", &folders, &[]).await;
    add_contact(&mut receiver, "100").await;

    let id = id_of(&send_file(&mut sender, "200", &path).await);
    under_way(&mut sender, &id).await;
    // Frozen, the receiver lets the sender run at most a window ahead: the file cannot finish.
    receiver.stop().await;
    sender.send(json!({"cmd": "cancel_file", "id": id})).await;
    // The cancel tells the receiver on the link, which the frozen receiver may have left full.
    receiver.signal("CONT");
    let v = sender.reply("file_cancelled", |v| is(v, "file_cancelled")).await;
    assert!(is(&v, "file_cancelled"), "{v}");
    cancelled(&mut sender, &id, "out", "200", "100").await;
    cancelled(&mut receiver, &id, "in", "100", "100").await;
    assert_eq!(folders.partials(), vec![], "the partial file is gone");
    assert_eq!(folders.saved(), BTreeSet::new());

    sender.send(json!({"cmd": "cancel_file", "id": id})).await;
    let again = sender.reply("an error", |v| is(v, "file_cancelled")).await;
    assert!(
        is(&again, "error") && again["message"].as_str().is_some_and(|m| m.contains("no file transfer")),
        "{again}"
    );

    // A restart of the sender does not bring the file back.
    sender.logout().await;
    let mut sender = Client::start_with(server.port, "100", sender_profile.path(), &[]).await;
    let m = sender.send_text("200", "forget that file").await;
    receiver.message(&m, "100", "forget that file").await;
    let offers = receiver.events_so_far().into_iter().filter(|v| is(v, "file_incoming")).count();
    assert_eq!(offers, 1, "offered once:\n{}", receiver.report());
    assert_eq!(folders.partials(), vec![]);
    assert_eq!(folders.saved(), BTreeSet::new());
}
