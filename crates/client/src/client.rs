//! [`Client`]: what a user interface drives, and the [`Event`]s it shows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use whatsap2p_proto::directory::{Location, LookupIntent};
use whatsap2p_proto::group::GroupId;
use whatsap2p_proto::{MessageId, Number, PublicKey, MAX_TEXT_LEN};

use crate::directory::{self, DirectoryHandle, Note};
use crate::groups::{Change, Group};
use crate::outbox::Outbox;
use crate::peer::{self, Links};
use crate::profile::{Identity, Profile};
use crate::store::{FileRecord, Store, StoredMessage};
use crate::ClientError;

pub use crate::config::{ClientConfig, Timeouts};
pub use crate::event::{ContactStatus, Event, Presence, SendOutcome};

/// Events waiting for the UI. Peers wait (back-pressure) rather than lose an event.
const EVENT_QUEUE: usize = 1024;
/// How often the profile database is checkpointed (see `Store::checkpoint`).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// State shared by the client's tasks.
pub(crate) struct Core {
    pub(crate) number: Number,
    pub(crate) identity: Identity,
    pub(crate) store: Store,
    pub(crate) directory: DirectoryHandle,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) links: Links,
    pub(crate) outbox: Outbox,
    /// Serializes group changes and group texts, so a member never shows a group's message before
    /// the group itself (or takes a text against a state that is being replaced).
    pub(crate) groups_lock: tokio::sync::Mutex<()>,
    /// The last status the directory pushed for each watched number.
    pub(crate) presence: Mutex<HashMap<Number, Option<Location>>>,
    /// Partial files a receiving attempt is writing, on whatever link: an attempt on a new link
    /// (the old one dropped) must not open a file the old attempt's writer is still finishing.
    pub(crate) receiving: Mutex<std::collections::HashSet<std::path::PathBuf>>,
    pub(crate) config: ClientConfig,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
}

/// A running client.
pub struct Client {
    core: Arc<Core>,
    published: SocketAddr,
    server_key: PublicKey,
    // Held for its lock on the profile folder.
    _profile: Profile,
}

impl Core {
    /// A lookup found `number` online: a watched number cached as offline is online now. A push
    /// saying so may still be on its way (a watch answered before the number registered again, on
    /// a busy machine); until it comes, a send would queue instead of writing. Only this direction
    /// is taken from lookups, and a cached "online" is never touched. An answer that lands after a
    /// later "offline" push costs a failed dial, after which the courier retries with backoff.
    pub(crate) fn saw_online(&self, number: &Number, location: Option<Location>) {
        let Some(location) = location else { return };
        let mut presence = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached @ None) = presence.get_mut(number) {
            *cached = Some(location);
        }
    }

    /// True when the directory told us `number` is offline (and nothing since said otherwise).
    pub(crate) fn known_offline(&self, number: &Number) -> bool {
        matches!(self.presence.lock().unwrap_or_else(|p| p.into_inner()).get(number), Some(None))
    }

    fn presence_of(&self, number: &Number) -> Option<Option<Location>> {
        self.presence.lock().unwrap_or_else(|p| p.into_inner()).get(number).copied()
    }
}

/// Checkpoints the profile database every second while the client runs (see `Store::checkpoint`).
async fn checkpoints(core: Arc<Core>) {
    loop {
        tokio::select! {
            _ = core.cancel.cancelled() => return,
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        if let Err(e) = core.store.checkpoint().await {
            warn!("checkpointing the profile database: {e}");
        }
    }
}

/// Applies what the directory task reports: presence changes (waking couriers), losses and returns.
async fn route_notes(core: Arc<Core>, mut notes: mpsc::Receiver<Note>) {
    while let Some(note) = notes.recv().await {
        match note {
            Note::Presence { number, online, .. } => {
                let before =
                    core.presence.lock().unwrap_or_else(|p| p.into_inner()).insert(number.clone(), online);
                let changed = before.map(|b| b.map(|l| l.addr)) != Some(online.map(|l| l.addr));
                if online.is_some() {
                    crate::outbox::kick(&core, &number);
                }
                if changed {
                    let event = Event::Presence { number, online: online.map(|l| l.addr) };
                    if core.events.send(event).await.is_err() {
                        return;
                    }
                }
            }
            Note::Lost { reason } => {
                core.presence.lock().unwrap_or_else(|p| p.into_inner()).clear();
                let _ = core.events.send(Event::DirectoryLost { reason }).await;
            }
            Note::Refused { reason } => {
                let _ = core.events.send(Event::Warning { message: reason }).await;
            }
            Note::Reconnected => {
                let _ = core.events.send(Event::Reconnected).await;
                kick_all(&core).await;
            }
        }
    }
}

/// Wakes the courier of every peer with something to deliver.
async fn kick_all(core: &Arc<Core>) {
    match core.store.peers_with_work().await {
        Ok(peers) => {
            for p in peers {
                crate::outbox::kick(core, &p);
            }
        }
        Err(e) => tracing::error!("cannot read the outbox: {e}"),
    }
}

impl Client {
    /// Opens the profile, starts listening for peers and registers with the directory.
    pub async fn start(config: ClientConfig) -> Result<(Self, mpsc::Receiver<Event>), ClientError> {
        let profile = Profile::open(&config.profile_dir)?;
        let store = Store::open(&profile.dir.join("profile.sqlite"))?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(ClientError::io(format!("listening for peers on {}", config.listen)))?;
        let bound = listener.local_addr().map_err(ClientError::io("reading the listen address"))?;
        let session = directory::connect(
            config.server,
            &config.number,
            &profile.identity,
            bound,
            &store,
            &config.timeouts,
        )
        .await?;
        let (published, server_key) = (session.published, session.server_key);
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (notes_tx, notes) = mpsc::channel(EVENT_QUEUE);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let params = directory::Params {
            server: config.server,
            number: config.number.clone(),
            identity: profile.identity.clone(),
            listen: bound,
            store: store.clone(),
            timeouts: config.timeouts.clone(),
        };
        let directory = directory::spawn(session, params, notes_tx, cancel.clone(), &tracker);
        let core = Arc::new(Core {
            number: config.number.clone(),
            identity: profile.identity.clone(),
            store,
            directory,
            events,
            links: Links::default(),
            outbox: Outbox::default(),
            groups_lock: tokio::sync::Mutex::new(()),
            presence: Mutex::new(HashMap::new()),
            receiving: Mutex::default(),
            config,
            cancel,
            tracker,
        });
        core.tracker.spawn(peer::accept_loop(core.clone(), listener));
        core.tracker.spawn(route_notes(core.clone(), notes));
        core.tracker.spawn(checkpoints(core.clone()));
        // Contacts, and whoever the outbox still owes something, so a push wakes their courier.
        let mut watched: Vec<Number> = core.store.contacts().await?.into_iter().map(|c| c.number).collect();
        watched.extend(core.store.peers_with_work().await?);
        core.directory.watch(watched).await;
        // An outbox written before a crash or a restart goes out now, files included.
        kick_all(&core).await;
        for file in core.store.pending_files().await? {
            crate::transfer::spawn_sender(&core, file);
        }
        info!("online as {} at {published}", core.number);
        Ok((Self { core, published, server_key, _profile: profile }, events_rx))
    }

    /// Our number.
    pub fn number(&self) -> &Number {
        &self.core.number
    }

    /// The address the directory gives peers for us.
    pub fn published_addr(&self) -> SocketAddr {
        self.published
    }

    /// Our identity key.
    pub fn identity_key(&self) -> PublicKey {
        self.core.identity.public()
    }

    /// The directory server's (pinned) key.
    pub fn server_key(&self) -> PublicKey {
        self.server_key
    }

    /// Is `number` online, and where?
    pub async fn ping(&self, number: &Number) -> Result<Presence, ClientError> {
        let a = self.core.directory.lookup(number, LookupIntent::Ping).await?;
        self.core.saw_online(number, a.online);
        Ok(Presence { number: a.number, online: a.online.map(|l| l.addr), key: a.key })
    }

    /// Sends `text` to `to`: stores it in the outbox, then writes it to the recipient at once if it
    /// is reachable. [`Event::Delivered`] follows when the recipient confirms; a queued message goes
    /// out (with [`Event::Sent`]) as soon as the recipient is online.
    pub async fn send(&self, to: &Number, text: &str) -> Result<(MessageId, SendOutcome), ClientError> {
        if text.len() > MAX_TEXT_LEN {
            return Err(ClientError::TextTooLong(text.len()));
        }
        if *to == self.core.number {
            return Err(ClientError::OwnNumber);
        }
        let core = &self.core;
        // A status in the cache means the number is watched already; otherwise ask, and watch it.
        let online = match core.presence_of(to) {
            Some(status) => status.is_some(),
            None => {
                let online = match core.directory.lookup(to, LookupIntent::Address).await {
                    Ok(a) if a.key.is_none() => return Err(ClientError::UnknownNumber(to.clone())),
                    Ok(a) => a.online.is_some(),
                    // The directory is away: keep the message; the courier delivers it later.
                    Err(_) => false,
                };
                core.directory.watch(vec![to.clone()]).await;
                online
            }
        };
        let id = MessageId::new();
        let outcome = crate::outbox::send_now(core, to, id, text, online).await?;
        Ok((id, outcome))
    }

    /// Sends a file (a photo, or anything) directly to `to`: hashes it, records it, and delivers it in
    /// the background, resuming where a previous attempt stopped. [`Event::Progress`] reports the
    /// bytes confirmed, then [`Event::FileSent`] or [`Event::FileFailed`].
    pub async fn send_file(&self, to: &Number, path: &std::path::Path) -> Result<FileRecord, ClientError> {
        if *to == self.core.number {
            return Err(ClientError::OwnNumber);
        }
        if self.core.presence_of(to).is_none() {
            if let Ok(a) = self.core.directory.lookup(to, LookupIntent::Address).await {
                if a.key.is_none() {
                    return Err(ClientError::UnknownNumber(to.clone()));
                }
            }
        }
        self.core.directory.watch(vec![to.clone()]).await;
        let path =
            std::path::absolute(path).map_err(ClientError::io(format!("reading {}", path.display())))?;
        let (size, blake3, media_type) = crate::transfer::describe(&path).await?;
        let name =
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into());
        let file = FileRecord {
            id: MessageId::new(),
            peer: to.clone(),
            outgoing: true,
            path,
            name,
            size,
            media_type,
            blake3,
        };
        self.core.store.insert_file(&file, "pending").await?;
        crate::transfer::spawn_sender(&self.core, file.clone());
        Ok(file)
    }

    /// Creates a group of contacts; we are its first admin.
    pub async fn group_create(&self, name: &str, members: &[Number]) -> Result<Group, ClientError> {
        crate::groups::create(&self.core, name, members).await
    }

    /// Adds, removes or promotes a member (admins only).
    pub async fn group_change(
        &self,
        id: GroupId,
        who: &Number,
        change: Change,
    ) -> Result<Group, ClientError> {
        crate::groups::change(&self.core, id, who, change).await
    }

    /// Leaves a group.
    pub async fn group_leave(&self, id: GroupId) -> Result<Group, ClientError> {
        crate::groups::leave(&self.core, id).await
    }

    /// Every group we know.
    pub async fn groups(&self) -> Result<Vec<Group>, ClientError> {
        crate::groups::list(&self.core).await
    }

    /// Sends a text to every other member of a group; returns its id and how many members it goes to.
    pub async fn send_group(&self, id: GroupId, text: &str) -> Result<(MessageId, usize), ClientError> {
        crate::groups::send(&self.core, id, text).await
    }

    /// The last `limit` messages of a group, oldest first.
    pub async fn group_history(&self, id: GroupId, limit: usize) -> Result<Vec<StoredMessage>, ClientError> {
        self.core.store.group_history(id, limit).await
    }

    /// Whether the directory last said `number` is online (None: not watched yet).
    pub fn presence_of(&self, number: &Number) -> Option<Option<SocketAddr>> {
        self.core.presence_of(number).map(|o| o.map(|l| l.addr))
    }

    /// Marks a received message as read and sends the sender a read receipt (through the outbox).
    /// Returns false if no unread received message has this id.
    pub async fn mark_read(&self, id: MessageId) -> Result<bool, ClientError> {
        match self.core.store.mark_read(id).await? {
            Some(sender) => {
                crate::outbox::kick(&self.core, &sender);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The last `limit` messages with `peer`, oldest first.
    pub async fn history(&self, peer: &Number, limit: usize) -> Result<Vec<StoredMessage>, ClientError> {
        self.core.store.history(peer, limit).await
    }

    /// Adds a contact, pinning its key if the directory knows it. Returns whether it was new and the
    /// pinned key.
    pub async fn add_contact(&self, number: &Number) -> Result<(bool, Option<PublicKey>), ClientError> {
        if *number == self.core.number {
            return Err(ClientError::OwnNumber);
        }
        let new = self.core.store.add_contact(number).await?;
        self.core.directory.watch(vec![number.clone()]).await;
        if let Ok(answer) = self.core.directory.lookup(number, LookupIntent::Ping).await {
            if let Some(key) = answer.key {
                peer::check_pin(&self.core, number, key).await?;
            }
        }
        let key = self.core.store.contact(number).await?.and_then(|c| c.key);
        Ok((new, key))
    }

    /// Every contact with its status, from the presence the directory pushes (no round trip per
    /// contact; a contact not heard of yet is looked up).
    pub async fn contacts(&self) -> Result<Vec<ContactStatus>, ClientError> {
        let contacts = self.core.store.contacts().await?;
        let mut out = Vec::with_capacity(contacts.len());
        for c in contacts {
            let online = match self.core.presence_of(&c.number) {
                Some(status) => status.map(|l| l.addr),
                // Not pushed yet (or the directory is away): ask, and show offline if we cannot.
                None => match self.core.directory.lookup(&c.number, LookupIntent::Ping).await {
                    Ok(a) => a.online.map(|l| l.addr),
                    Err(_) => None,
                },
            };
            out.push(Presence { number: c.number, online, key: c.key });
        }
        Ok(out)
    }

    /// Tells the directory we leave, closes every link and waits for the tasks to end.
    pub async fn logout(self) {
        self.core.directory.logout().await;
        self.shutdown().await;
    }

    /// Closes every link and waits (at most a few seconds) for the tasks to end.
    pub async fn shutdown(self) {
        self.core.links.close_all();
        self.core.cancel.cancel();
        self.core.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.core.tracker.wait()).await;
    }
}
