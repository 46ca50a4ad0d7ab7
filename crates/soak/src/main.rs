//! `whatsap2p-soak`: several real clients (the JSON-lines interface) and a directory exchange texts
//! and files for a while, as fast as a busy user would, while the directory and random clients are
//! killed with SIGKILL at random moments and started again on their data. Then everyone comes back,
//! the outboxes drain, and a checker proves every stored message shown exactly once (by id) and
//! every file intact, or names each message and file that was not.
//!
//! Not in the unit suite: it runs for minutes. `.ci/run` runs a 60-second version.

mod check;
mod proc;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use check::{Answered, QueuedFile, Stored};
use proc::{is, Client, Directory, KillSwitch};

/// Kill the directory and clients at random while they exchange texts and files; then prove that
/// nothing was lost, shown twice or corrupted.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Seconds of traffic and kills before the drain.
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// Clients, each writing to every other.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Mean seconds between two kills.
    #[arg(long, default_value_t = 3.0)]
    kill_every: f64,
    /// Seconds the outboxes get to drain once everyone is back.
    #[arg(long, default_value_t = 120)]
    drain: u64,
    /// Where `whatsap2p` and `whatsap2p-server` are [default: this program's folder].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Seed of the random choices [default: from the clock, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Keep the folder of profiles and logs (its path is printed).
    #[arg(long)]
    keep: bool,
}

/// What the senders were told, for the checker.
#[derive(Default)]
struct Ledger {
    answered: Vec<Answered>,
    files: Vec<QueuedFile>,
    /// `send`s whose answer never came (the sender was killed first): the store decides.
    unanswered: usize,
    /// `send`s refused with an `error`.
    refused: Vec<String>,
}

type Shared<T> = Arc<StdMutex<T>>;

const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?.parent().context("this program's folder")?.to_path_buf(),
    };
    let seed = args.seed.unwrap_or_else(now_ms);
    let dir = tempfile::Builder::new().prefix("whatsap2p-soak-").tempdir()?;
    let root = dir.path().to_path_buf();
    println!(
        "soak: {} clients for {} s, a kill every {} s on average, seed {seed}, in {}",
        args.clients,
        args.duration,
        args.kill_every,
        root.display()
    );
    let verdict = soak(&args, &bin_dir, &root, seed).await;
    if args.keep {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    let failed = verdict?;
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// Runs the whole soak; true when the checker found defects.
async fn soak(args: &Args, bin_dir: &Path, root: &Path, seed: u64) -> anyhow::Result<bool> {
    std::fs::create_dir_all(root.join("outgoing"))?;
    let mut directory = Directory::new(bin_dir, root)?;
    directory.start().await?;
    let numbers: Vec<String> = (0..args.clients).map(|i| format!("55510{i:02}")).collect();
    let mut clients = Vec::new();
    for number in &numbers {
        let mut client = Client::new(bin_dir, root, number, directory.port);
        client.start().await?;
        clients.push(client);
    }
    // Everyone a contact of everyone: a stranger's texts would wait as requests.
    for client in &mut clients {
        let me = client.number.clone();
        for other in numbers.iter().filter(|n| **n != me) {
            let added = client
                .command(&json!({"cmd":"add_contact","number":other}), COMMAND_TIMEOUT, &|e| {
                    is(e, "contact_added") || is(e, "error")
                })
                .await;
            anyhow::ensure!(
                added.as_ref().is_some_and(|e| is(e, "contact_added")),
                "{me} could not add {other}: {added:?}"
            );
        }
    }
    let kill_switches: Vec<KillSwitch> = clients.iter().map(Client::kill_switch).collect();
    let clients: Vec<Arc<Mutex<Client>>> = clients.into_iter().map(|c| Arc::new(Mutex::new(c))).collect();
    let directory = Arc::new(Mutex::new(directory));
    let ledger: Shared<Ledger> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();

    let mut drivers = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let (client, numbers, ledger, stop) = (client.clone(), numbers.clone(), ledger.clone(), stop.clone());
        let outgoing = root.join("outgoing");
        drivers.push(tokio::spawn(async move {
            drive(client, numbers, ledger, stop, outgoing, seed.wrapping_add(i as u64)).await
        }));
    }
    let kills = Arc::new(AtomicUsize::new(0));
    let directory_kills = Arc::new(AtomicUsize::new(0));
    let chaos = {
        let (clients, directory, stop) = (clients.clone(), directory.clone(), stop.clone());
        let (kills, directory_kills) = (kills.clone(), directory_kills.clone());
        let mean = args.kill_every;
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs_f64(mean * rng.gen_range(0.3..1.7))).await;
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let down_for = Duration::from_millis(rng.gen_range(100..2_000));
                kills.fetch_add(1, Ordering::SeqCst);
                if rng.gen_ratio(1, 4) {
                    directory_kills.fetch_add(1, Ordering::SeqCst);
                    let mut directory = directory.lock().await;
                    directory.kill();
                    tokio::time::sleep(down_for).await;
                    directory.start().await?;
                } else {
                    let i = rng.gen_range(0..clients.len());
                    kill_switches[i].kill();
                    tokio::time::sleep(down_for).await;
                    clients[i].lock().await.start().await?;
                }
            }
            anyhow::Ok(())
        })
    };

    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::SeqCst);
    chaos.await??;
    for driver in drivers {
        driver.await??;
    }
    let traffic = t0.elapsed();
    {
        let mut directory = directory.lock().await;
        if !directory.is_up() {
            directory.start().await?;
        }
    }
    for client in &clients {
        let mut client = client.lock().await;
        if !client.is_alive() {
            client.start().await?;
        }
    }

    // Drain: until every answered or stored message and every file has arrived, or the time is up.
    let drain_start = Instant::now();
    let (answered, files) = {
        let ledger = ledger.lock().map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
        (ledger.answered.clone(), ledger.files.clone())
    };
    let mut stored;
    loop {
        stored = histories(&clients, &numbers).await?;
        let printed = printed(&clients).await;
        let left = check::missing(&answered, &stored, &printed) + check::missing_files(&files, &printed);
        if left == 0 || drain_start.elapsed() > Duration::from_secs(args.drain) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drained = drain_start.elapsed();
    let printed = printed(&clients).await;
    let mut verdict = check::verdict(&answered, &stored, &files, &printed);
    for client in &clients {
        let client = client.lock().await;
        if let Ok(crashes) = client.crashes.lock() {
            for (run, why) in crashes.iter() {
                verdict.defects.push(format!("{} run {run} ended by itself: {why}", client.number));
            }
        }
        let log = std::fs::read_to_string(client.profile().with_extension("stderr.log")).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("panicked")) {
            verdict.defects.push(format!("{} panicked: {line}", client.number));
        }
    }
    for client in &clients {
        client.lock().await.stop().await;
    }
    directory.lock().await.kill();

    let ledger = ledger.lock().map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
    println!(
        "{:.0} s of traffic, {} kills ({} of the directory); drained in {:.1} s",
        traffic.as_secs_f64(),
        kills.load(Ordering::SeqCst),
        directory_kills.load(Ordering::SeqCst),
        drained.as_secs_f64()
    );
    println!(
        "texts: {} stored ({} answered, {} sends cut short by a kill, {} refused); {} shown again under the same id after a kill",
        verdict.texts,
        answered.len(),
        ledger.unanswered,
        ledger.refused.len(),
        verdict.reshown
    );
    for refusal in ledger.refused.iter().take(5) {
        println!("  refused: {refusal}");
    }
    println!("files: {} queued", verdict.files);
    if verdict.defects.is_empty() {
        println!("OK: every stored message shown exactly once, every file intact");
        return Ok(false);
    }
    println!("FAILED: {} defects", verdict.defects.len());
    for defect in verdict.defects.iter().take(50) {
        println!("  {defect}");
    }
    Ok(true)
}

/// One client's traffic: a text (or now and then a file) to a random other client, at a busy
/// user's pace, while the process lives.
async fn drive(
    client: Arc<Mutex<Client>>,
    numbers: Vec<String>,
    ledger: Shared<Ledger>,
    stop: Arc<AtomicBool>,
    outgoing: PathBuf,
    seed: u64,
) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seq = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(30..200))).await;
        let mut c = client.lock().await;
        if !c.is_alive() {
            continue;
        }
        let me = c.number.clone();
        let others: Vec<&String> = numbers.iter().filter(|n| **n != me).collect();
        let to = others[rng.gen_range(0..others.len())].clone();
        seq += 1;
        if rng.gen_ratio(1, 30) {
            let name = format!("{me}-{seq}.bin");
            let path = outgoing.join(&name);
            let mut bytes = vec![0u8; rng.gen_range(1_000..600_000)];
            rng.fill_bytes(&mut bytes);
            std::fs::write(&path, &bytes)?;
            let cmd = json!({"cmd":"send_file","to":to,"path":path});
            let answer = c
                .command(&cmd, COMMAND_TIMEOUT, &|e| {
                    (is(e, "file_queued") && e.get("name").and_then(Value::as_str) == Some(name.as_str()))
                        || is(e, "error")
                })
                .await;
            let mut ledger = ledger.lock().map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
            match answer {
                Some(e) if is(&e, "file_queued") => ledger.files.push(QueuedFile {
                    from: me,
                    to,
                    id: field(&e, "id"),
                    blake3: blake3::hash(&bytes).to_hex().to_string(),
                }),
                Some(e) => ledger.refused.push(field(&e, "message")),
                None => ledger.unanswered += 1,
            }
            continue;
        }
        let text = format!("soak {me}>{to} #{seq}");
        let asked_at = now_ms();
        let answer = c
            .command(&json!({"cmd":"send","to":to,"text":text}), COMMAND_TIMEOUT, &|e| {
                // An outbox that resumes after a restart prints `sent` for messages stored before
                // it: the answer is the one whose id (a ULID) was made after the question.
                let made_after =
                    ulid::Ulid::from_string(e.get("id").and_then(Value::as_str).unwrap_or_default())
                        .is_ok_and(|id| id.timestamp_ms() >= asked_at);
                ((is(e, "sent") || is(e, "queued"))
                    && e.get("to").and_then(Value::as_str) == Some(to.as_str())
                    && made_after)
                    || is(e, "error")
            })
            .await;
        let mut ledger = ledger.lock().map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
        match answer {
            Some(e) if is(&e, "error") => ledger.refused.push(field(&e, "message")),
            Some(_) => ledger.answered.push(Answered { from: me, to, text }),
            None => ledger.unanswered += 1,
        }
    }
    Ok(())
}

fn field(e: &Value, name: &str) -> String {
    e.get(name).and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Every outgoing message in every sender's history.
async fn histories(clients: &[Arc<Mutex<Client>>], numbers: &[String]) -> anyhow::Result<Vec<Stored>> {
    let mut stored = Vec::new();
    for client in clients {
        let mut client = client.lock().await;
        let me = client.number.clone();
        for other in numbers.iter().filter(|n| **n != me) {
            let cmd = json!({"cmd":"history","with":other,"limit":1000});
            let answer = client
                .command(&cmd, COMMAND_TIMEOUT, &|e| {
                    is(e, "history") && e.get("with").and_then(Value::as_str) == Some(other.as_str())
                })
                .await
                .with_context(|| format!("{me}'s history with {other}"))?;
            let messages = answer.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
            anyhow::ensure!(
                messages.len() < 1000,
                "more than 1000 messages between two clients: run shorter"
            );
            for m in messages.iter().filter(|m| m.get("direction").and_then(Value::as_str) == Some("out")) {
                stored.push(Stored { from: me.clone(), to: other.clone(), text: field(m, "text") });
            }
        }
    }
    Ok(stored)
}

async fn printed(clients: &[Arc<Mutex<Client>>]) -> HashMap<String, Vec<Value>> {
    let mut printed = HashMap::new();
    for client in clients {
        let client = client.lock().await;
        printed.insert(client.number.clone(), client.log.snapshot());
    }
    printed
}
