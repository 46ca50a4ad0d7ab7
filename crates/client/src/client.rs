//! [`Client`]: what a user interface drives. It composes the subsystems, each a handle owning its
//! own state (`link`, `outbox`, `transfer`, `groups`, `directory`, `presence`, `store`), starts and
//! stops their tasks, and answers the user interface's calls by asking the one that owns the answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use whatsap2p_proto::directory::LookupIntent;
use whatsap2p_proto::group::GroupId;
use whatsap2p_proto::{MessageId, Number, PublicKey, MAX_TEXT_LEN};

use crate::directory::{self, Begin, DirectoryHandle, Note, Round};
use crate::groups::{Change, Group, GroupParts, Groups};
use crate::inbound::Router;
use crate::inbox::Inbox;
use crate::link::{LinkParts, Links};
use crate::outbox::{Outbox, OutboxParts};
use crate::presence::PresenceCache;
use crate::profile::{Identity, Profile};
use crate::reach::Reachability;
use crate::requests::Requests;
use crate::shown::Shown;
use crate::store::{Chat, ChatItem, Conversation, FileRecord, Held, Request, Store, StoredMessage};
use crate::transfer::{TransferParts, Transfers};
use crate::transport::PeerListener;
use crate::ClientError;

pub use crate::config::{ClientConfig, Timeouts};
pub use crate::event::{ContactStatus, Event, Presence, SendOutcome};

/// Events waiting for the UI. Peers wait (back-pressure) rather than lose an event.
const EVENT_QUEUE: usize = 1024;
/// How often the profile database is checkpointed (see `Store::checkpoint`).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// How long shutdown waits for the client's tasks to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);
/// Longest contact name, in characters.
pub const MAX_CONTACT_NAME: usize = 64;
/// The setting that keeps whether read receipts are sent.
const READ_RECEIPTS: &str = "read_receipts";

/// What the client holds: a count of each kind of thing a remote party can make it keep, for
/// tests and diagnostics (see [`Client::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// The client's tasks alive (links have two each, couriers and transfers one).
    pub tasks: usize,
    /// Peers with a link slot: a live link or a dial under way.
    pub links: usize,
    /// Peers with a courier: something owed to them, or a text just written.
    pub couriers: usize,
    /// Outgoing files not yet delivered, and incoming ones being written.
    pub transfers: usize,
}

/// A running client.
pub struct Client {
    number: Number,
    identity: Identity,
    config: ClientConfig,
    store: Store,
    directory: DirectoryHandle,
    presence: PresenceCache,
    links: Links,
    outbox: Outbox,
    transfers: Transfers,
    groups: Groups,
    requests: Requests,
    inbox: Inbox,
    /// Whether reading a message sends its sender a read receipt.
    read_receipts: std::sync::atomic::AtomicBool,
    /// Where the peer listener is bound.
    bound: SocketAddr,
    reach: Reachability,
    server_key: PublicKey,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Texts shown to the user, and those to show again after a crash.
    shown: Arc<Shown>,
    // Held for its lock on the profile folder.
    _profile: Profile,
}

/// A contact's name as given, trimmed: refused when empty, too long, or with control or bidi
/// characters (a name is printed as it is).
fn contact_name(name: &str) -> Result<String, ClientError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(ClientError::ContactName("it is empty".into()));
    }
    if name.chars().count() > MAX_CONTACT_NAME {
        return Err(ClientError::ContactName(format!("longer than {MAX_CONTACT_NAME} characters")));
    }
    if !crate::display::is_clean(name) {
        return Err(ClientError::ContactName("it has control characters".into()));
    }
    Ok(name.to_owned())
}

/// Checkpoints the profile database every second while the client runs (see `Store::checkpoint`),
/// with what front ends reported shown since the last time.
async fn checkpoints(store: Store, shown: Arc<Shown>, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
        }
        // What front ends showed since the last time, in one transaction.
        shown.flush().await;
        if let Err(e) = store.checkpoint().await {
            warn!("checkpointing the profile database: {e}");
        }
    }
}

/// What the directory's notes change: the presence cache, and whoever waits for a peer.
struct NoteRoute {
    presence: PresenceCache,
    outbox: Outbox,
    transfers: Transfers,
    links: Links,
    events: mpsc::Sender<Event>,
}

impl NoteRoute {
    /// Applies what the directory task reports: presence changes (waking couriers and waiting
    /// files), losses and returns.
    async fn run(self, mut notes: mpsc::Receiver<Note>) {
        while let Some(note) = notes.recv().await {
            match note {
                Note::Presence { number, online, .. } => {
                    let changed = self.presence.update(number.clone(), online);
                    if online.is_some() {
                        self.outbox.kick(&number);
                        self.transfers.wake(&number);
                    }
                    if changed {
                        let event = Event::Presence { number, online: online.map(|l| l.addr) };
                        if self.events.send(event).await.is_err() {
                            return;
                        }
                    }
                }
                Note::Lost { reason } => {
                    self.presence.clear();
                    let _ = self.events.send(Event::DirectoryLost { reason }).await;
                }
                Note::Refused { reason } => {
                    let _ = self.events.send(Event::Warning { message: reason }).await;
                }
                Note::Replaced { reason } => {
                    self.presence.clear();
                    let _ = self.events.send(Event::Replaced { message: reason }).await;
                }
                Note::Reconnected => {
                    let _ = self.events.send(Event::Reconnected).await;
                    self.outbox.kick_all().await;
                }
                Note::Introduced { from, intro } => {
                    let targets = intro
                        .candidates
                        .iter()
                        .filter(|c| c.transport == whatsap2p_proto::nat::Transport::Udp)
                        .map(|c| c.addr)
                        .collect();
                    let parts = self.links.parts();
                    parts.reach.punch(&from, targets, &parts.tracker, parts.cancel.clone());
                    // Our probes may have found UDP blocked and it is open now: measure again
                    // (bounded), so the asker's next try has our public UDP address.
                    if let Some(reach) = parts.directory.reach() {
                        let (reachability, directory) = (parts.reach.clone(), parts.directory.clone());
                        self.links.run(async move { reachability.refresh_if_stale(&directory, reach).await });
                    }
                }
                Note::RelayOffered { from, offer } => self.links.take_relay(from, offer),
            }
        }
    }
}

/// The first round over the directory's addresses, at start: how the session task begins, and
/// the directory's key.
///
/// A refusal (the number is taken, the directory's key changed, no protocol version in common)
/// is an error: the user must act. A directory that does not answer is not, for a profile that
/// reached it before (its key is pinned): the client starts without it and keeps trying, and the
/// user can read and write meanwhile (messages wait in the outbox). A profile that never reached
/// it gets an error after that one round instead: nothing says the address is right, and a user
/// who typed a wrong address wants to hear so, not to wait.
async fn first_session(params: &directory::Params) -> Result<(Begin, PublicKey), ClientError> {
    match directory::round(params, None).await {
        Round::Registered(session) => {
            let key = session.server_key;
            Ok((Begin::Online(session), key))
        }
        Round::Final(e) => Err(e),
        Round::Failed { loud, reason } => {
            if let Some(e) = loud.into_iter().next() {
                return Err(e);
            }
            match directory::pinned_key(&params.store, &params.servers).await? {
                None => Err(ClientError::NeverReached { reason }),
                Some(key) => {
                    warn!("the directory is unreachable ({reason}); starting without it");
                    let reason = format!("cannot reach the directory ({reason}); retrying");
                    Ok((Begin::Offline { reason }, key))
                }
            }
        }
    }
}

impl Client {
    /// Opens the profile, starts listening for peers and registers with the directory (or, for a
    /// profile that reached it before, starts without it while it is unreachable: see
    /// [`Event::DirectoryLost`]).
    pub async fn start(config: ClientConfig) -> Result<(Self, mpsc::Receiver<Event>), ClientError> {
        let profile = Profile::open(&config.profile_dir)?;
        let store = Store::open(&profile.dir.join("profile.sqlite"))?;
        let listener = PeerListener::bind(config.listen).await?;
        let bound = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let reach = Reachability::start(bound, config.listen_udp, &tracker, cancel.clone())?;
        let number = config.number.clone();
        let identity = profile.identity.clone();
        let params = directory::Params {
            servers: config.servers.clone(),
            number: number.clone(),
            identity: identity.clone(),
            listen: bound,
            store: store.clone(),
            timeouts: config.timeouts.clone(),
            versions: config.versions,
        };
        let (begin, server_key) = first_session(&params).await?;
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let (notes_tx, notes) = mpsc::channel(EVENT_QUEUE);
        let directory = directory::spawn(begin, params, notes_tx, cancel.clone(), &tracker);
        let presence = PresenceCache::default();
        let links = Links::new(LinkParts {
            me: number.clone(),
            identity: identity.clone(),
            directory: directory.clone(),
            store: store.clone(),
            presence: presence.clone(),
            reach: reach.clone(),
            events: events.clone(),
            timeouts: config.timeouts.clone(),
            versions: config.versions,
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        });
        let outbox = Outbox::new(OutboxParts {
            links: links.clone(),
            store: store.clone(),
            events: events.clone(),
            presence: presence.clone(),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        });
        let transfers = Transfers::new(TransferParts {
            me: number.clone(),
            links: links.clone(),
            store: store.clone(),
            events: events.clone(),
            presence: presence.clone(),
            downloads: config.downloads.clone(),
            max_file_size: config.max_file_size,
            storage: config.storage.clone(),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
        });
        let inbox = Inbox::new(store.clone(), events.clone());
        let requests = Requests::load(store.clone(), events.clone()).await?;
        let read_receipts = store.setting(READ_RECEIPTS).await?.as_deref() != Some("0");
        let groups = Groups::new(GroupParts {
            me: number.clone(),
            signing: identity.signing.clone(),
            store: store.clone(),
            directory: directory.clone(),
            outbox: outbox.clone(),
            inbox: inbox.clone(),
            requests: requests.clone(),
            events: events.clone(),
        });
        links.set_owner(Arc::new(Router {
            inbox: inbox.clone(),
            outbox: outbox.clone(),
            transfers: transfers.clone(),
            groups: groups.clone(),
            requests: requests.clone(),
        }));
        // Where the texts stored before this start end, read before any link can bring a new one:
        // a text that came in between would be shown live and then again by the replay.
        let shown = Arc::new(Shown::new(store.clone(), events.clone()).await?);
        links.accept(listener);
        links.accept_quic();
        // Measured before we say we are online, so the first links already know our NAT.
        if let Some(r) = directory.reach() {
            reach.refresh(&directory, r).await;
        }
        tracker.spawn(reach.clone().follow(directory.clone(), cancel.clone()));
        let route = NoteRoute {
            presence: presence.clone(),
            outbox: outbox.clone(),
            transfers: transfers.clone(),
            links: links.clone(),
            events: events.clone(),
        };
        tracker.spawn(route.run(notes));
        tracker.spawn(checkpoints(store.clone(), shown.clone(), cancel.clone()));
        let client = Self {
            number,
            identity,
            config,
            store,
            directory,
            presence,
            links,
            outbox,
            transfers,
            groups,
            requests,
            inbox,
            read_receipts: read_receipts.into(),
            bound,
            reach,
            server_key,
            cancel,
            tracker,
            shown,
            _profile: profile,
        };
        // Contacts, and whoever the outbox still owes something, so a push wakes their courier.
        let mut watched: Vec<Number> = client.store.contacts().await?.into_iter().map(|c| c.number).collect();
        watched.extend(client.store.peers_with_work().await?);
        client.directory.watch(watched).await;
        // An outbox written before a crash or a restart goes out now, files included.
        client.outbox.kick_all().await;
        for file in client.store.pending_files().await? {
            client.transfers.send(file);
        }
        info!("online as {} at {}", client.number, client.published_addr());
        Ok((client, events_rx))
    }

    /// Our number.
    pub fn number(&self) -> &Number {
        &self.number
    }

    /// The address the directory gives peers for us; until the first registration (a client that
    /// started while its directory was unreachable), the address the peer listener is bound to.
    pub fn published_addr(&self) -> SocketAddr {
        self.directory.published().unwrap_or(self.bound)
    }

    /// The protocol version of the session with the directory, `None` while there is none (the
    /// client is reconnecting, or stopped talking to the directory).
    pub fn directory_version(&self) -> Option<u16> {
        self.directory.version()
    }

    /// Our identity key.
    pub fn identity_key(&self) -> PublicKey {
        self.identity.public()
    }

    /// The directory's (pinned) key: the same for every address of the directory.
    pub fn server_key(&self) -> PublicKey {
        self.server_key
    }

    /// How many tasks, links, couriers and transfers the client holds right now.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            tasks: self.tracker.len(),
            links: self.links.count(),
            couriers: self.outbox.count(),
            transfers: self.transfers.count(),
        }
    }

    /// What our NAT does, as last measured (`Unmeasured` with a directory older than version 3).
    pub fn nat(&self) -> whatsap2p_proto::nat::NatKind {
        self.reach.nat()
    }

    /// Whether the directory offers NAT traversal (it speaks version 3): then [`Client::nat`] was
    /// measured, and links may be punched or relayed.
    pub fn reaches_through_nats(&self) -> bool {
        self.directory.reach().is_some()
    }

    /// Our UDP socket's address (QUIC, probes and punches).
    pub fn udp_addr(&self) -> SocketAddr {
        self.reach.udp_addr()
    }

    /// Which way the live link to `number` goes, if there is one.
    pub fn path_of(&self, number: &Number) -> Option<crate::link::Path> {
        self.links.path(number)
    }

    /// Is `number` online, and where?
    pub async fn ping(&self, number: &Number) -> Result<Presence, ClientError> {
        let a = self.directory.lookup(number, LookupIntent::Ping).await?;
        self.presence.saw_online(number, a.online);
        let path = self.links.path(number);
        Ok(Presence { number: a.number, online: a.online.map(|l| l.addr), key: a.key, path })
    }

    /// Sends `text` to `to`: stores it in the outbox, then writes it to the recipient at once if it
    /// is reachable. [`Event::Delivered`] follows when the recipient confirms; a queued message goes
    /// out (with [`Event::Sent`]) as soon as the recipient is online.
    pub async fn send(&self, to: &Number, text: &str) -> Result<(MessageId, SendOutcome), ClientError> {
        if text.len() > MAX_TEXT_LEN {
            return Err(ClientError::TextTooLong(text.len()));
        }
        if *to == self.number {
            return Err(ClientError::OwnNumber);
        }
        // A status in the cache means the number is watched already; otherwise ask, and watch it.
        let online = match self.presence.status(to) {
            Some(status) => status.is_some(),
            None => {
                let online = match self.directory.lookup(to, LookupIntent::Address).await {
                    Ok(a) if a.key.is_none() => return Err(ClientError::UnknownNumber(to.clone())),
                    Ok(a) => a.online.is_some(),
                    // The directory is away: keep the message; the courier delivers it later.
                    Err(_) => false,
                };
                self.directory.watch(vec![to.clone()]).await;
                online
            }
        };
        let id = MessageId::new();
        // Written to first: what it answers is taken, as from a contact.
        self.requests.know(to);
        let outcome = self.outbox.send(to, id, text, online).await?;
        Ok((id, outcome))
    }

    /// Sends a file (a photo, or anything) directly to `to`: hashes it, records it, and delivers it in
    /// the background, resuming where a previous attempt stopped. [`Event::Progress`] reports the
    /// bytes confirmed, then [`Event::FileSent`] or [`Event::FileFailed`].
    pub async fn send_file(&self, to: &Number, path: &std::path::Path) -> Result<FileRecord, ClientError> {
        if *to == self.number {
            return Err(ClientError::OwnNumber);
        }
        if self.presence.status(to).is_none() {
            if let Ok(a) = self.directory.lookup(to, LookupIntent::Address).await {
                if a.key.is_none() {
                    return Err(ClientError::UnknownNumber(to.clone()));
                }
            }
        }
        self.directory.watch(vec![to.clone()]).await;
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
        self.store.insert_file(&file, "pending").await?;
        self.requests.know(to);
        self.transfers.send(file.clone());
        Ok(file)
    }

    /// Cancels a file transfer for good, sending or receiving: the attempt under way stops, the
    /// other side is told (if a link to it is up) and drops what it has, the partial file here
    /// goes, and the file is recorded as cancelled (an outgoing one is not retried, an incoming
    /// one is refused if offered again). [`Event::FileFailed`] reports it, as for any end, before
    /// this returns. [`ClientError::NoTransfer`] when the transfer is not under way (delivered,
    /// failed, or unknown).
    pub async fn cancel_transfer(&self, id: MessageId) -> Result<(), ClientError> {
        self.transfers.cancel(id).await
    }

    /// Creates a group of contacts; we are its first admin.
    pub async fn group_create(&self, name: &str, members: &[Number]) -> Result<Group, ClientError> {
        self.groups.create(name, members).await
    }

    /// Adds, removes or promotes a member (admins only).
    pub async fn group_change(
        &self,
        id: GroupId,
        who: &Number,
        change: Change,
    ) -> Result<Group, ClientError> {
        self.groups.change(id, who, change).await
    }

    /// Leaves a group.
    pub async fn group_leave(&self, id: GroupId) -> Result<Group, ClientError> {
        self.groups.leave(id).await
    }

    /// Every group we know.
    pub async fn groups(&self) -> Result<Vec<Group>, ClientError> {
        self.groups.list().await
    }

    /// Sends a text to every other member of a group; returns its id and how many members it goes to.
    pub async fn send_group(&self, id: GroupId, text: &str) -> Result<(MessageId, usize), ClientError> {
        self.groups.send(id, text).await
    }

    /// The last `limit` messages of a group, oldest first.
    pub async fn group_history(&self, id: GroupId, limit: usize) -> Result<Vec<StoredMessage>, ClientError> {
        self.store.group_history(id, limit).await
    }

    /// Whether the directory last said `number` is online (None: not watched yet).
    pub fn presence_of(&self, number: &Number) -> Option<Option<SocketAddr>> {
        self.presence.status(number).map(|o| o.map(|l| l.addr))
    }

    /// Marks a received message as read and sends the sender a read receipt (through the outbox).
    /// Returns false if no unread received message has this id.
    pub async fn mark_read(&self, id: MessageId) -> Result<bool, ClientError> {
        let receipt = self.read_receipts();
        match self.store.mark_read(id, receipt).await? {
            Some(sender) => {
                if receipt {
                    self.outbox.kick(&sender);
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The last `limit` messages with `peer`, oldest first.
    pub async fn history(&self, peer: &Number, limit: usize) -> Result<Vec<StoredMessage>, ClientError> {
        self.store.history(peer, limit).await
    }

    /// Every conversation, the most recent first: with whom, the last text or file, how many texts
    /// are unread, when it last moved. Read from a table the database keeps up to date, so it costs
    /// the same whatever the history's length.
    pub async fn conversations(&self) -> Result<Vec<Conversation>, ClientError> {
        self.store.conversations().await
    }

    /// A page of a conversation, texts and files: the `limit` items before `before` (the newest
    /// when `None`), oldest first. Pass the first item's id as `before` for the page before it.
    pub async fn history_page(
        &self,
        chat: &Chat,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<ChatItem>, ClientError> {
        self.store.history_page(chat, before, limit).await
    }

    /// A page of a conversation, texts and files: the `limit` items after `after`, oldest first.
    /// Pass the last item's id for the page after it.
    pub async fn history_after(
        &self,
        chat: &Chat,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<ChatItem>, ClientError> {
        self.store.history_after(chat, after, limit).await
    }

    /// Adds a contact (with a name, which also renames one already there), pinning its key if the
    /// directory knows it. A message request from the number is accepted with it (see
    /// [`Client::accept`]). Returns whether it was new and the pinned key.
    pub async fn add_contact(
        &self,
        number: &Number,
        name: Option<&str>,
    ) -> Result<(bool, Option<PublicKey>), ClientError> {
        if *number == self.number {
            return Err(ClientError::OwnNumber);
        }
        let name = name.map(contact_name).transpose()?;
        let new = self.store.add_contact(number, name.as_deref()).await?;
        self.requests.know(number);
        self.directory.watch(vec![number.clone()]).await;
        if let Ok(answer) = self.directory.lookup(number, LookupIntent::Ping).await {
            if let Some(key) = answer.key {
                self.store.check_pin(number, key).await?;
            }
        }
        let key = self.store.contact(number).await?.and_then(|c| c.key);
        if let Some(items) = self.store.take_request(number).await? {
            self.deliver_request(number, items).await?;
        }
        Ok((new, key))
    }

    /// Gives a contact a name (an empty one removes it).
    pub async fn rename_contact(&self, number: &Number, name: &str) -> Result<(), ClientError> {
        let name = if name.trim().is_empty() { None } else { Some(contact_name(name)?) };
        if !self.store.rename_contact(number, name.as_deref()).await? {
            return Err(ClientError::NotAContact(number.clone()));
        }
        Ok(())
    }

    /// Removes a contact and the key pinned for it. What it sends afterwards is a message request,
    /// unless we wrote to it.
    pub async fn remove_contact(&self, number: &Number) -> Result<(), ClientError> {
        if !self.store.remove_contact(number).await? {
            return Err(ClientError::NotAContact(number.clone()));
        }
        self.requests.forget(number);
        Ok(())
    }

    /// Every contact with its name and status, from the presence the directory pushes (no round
    /// trip per contact; a contact not heard of yet is looked up).
    pub async fn contacts(&self) -> Result<Vec<ContactStatus>, ClientError> {
        let contacts = self.store.contacts().await?;
        let mut out = Vec::with_capacity(contacts.len());
        for c in contacts {
            let online = match self.presence.status(&c.number) {
                Some(status) => status.map(|l| l.addr),
                // Not pushed yet (or the directory is away): ask, and show offline if we cannot.
                None => match self.directory.lookup(&c.number, LookupIntent::Ping).await {
                    Ok(a) => a.online.map(|l| l.addr),
                    Err(_) => None,
                },
            };
            let path = online.and(self.links.path(&c.number));
            out.push(ContactStatus { number: c.number, online, key: c.key, name: c.name, path });
        }
        Ok(out)
    }

    /// The message requests waiting, the oldest first.
    pub async fn requests(&self) -> Result<Vec<Request>, ClientError> {
        self.store.requests().await
    }

    /// Accepts `number`'s message request: the number becomes a contact, its texts are shown (as
    /// [`Event::Message`]s, in the order they came), the group it invited us to is joined with the
    /// texts held for it, and the sender (and each member whose group texts were held) is told,
    /// so that it writes its pending messages again and offers its files again. Returns how many
    /// items the request held.
    pub async fn accept(&self, number: &Number) -> Result<usize, ClientError> {
        let requests = self.store.requests().await?;
        let Some(request) = requests.iter().find(|r| r.from == *number) else {
            return Err(ClientError::NoRequest(number.clone()));
        };
        // Adding the contact takes the request and delivers it.
        self.add_contact(number, None).await?;
        Ok(request.items.len())
    }

    /// Delivers what `number`'s accepted request held (see [`Client::accept`]).
    async fn deliver_request(&self, number: &Number, items: Vec<(Number, Held)>) -> Result<(), ClientError> {
        let mut told = std::collections::BTreeSet::from([number.clone()]);
        for (sender, _) in &items {
            told.insert(sender.clone());
        }
        // Queued before the texts are shown, so the notice goes out before any read receipt; sent
        // once they are, so that what the senders write again on the notice (the same messages)
        // comes after what was held, and the texts show in the order they came.
        for peer in &told {
            self.directory.watch(vec![peer.clone()]).await;
            self.outbox.accepted(peer).await?;
        }
        for (sender, item) in items {
            match item {
                Held::Text { id, text, sent_at_ms } => {
                    self.inbox.take(&sender, id, sent_at_ms, text, None).await;
                }
                Held::Group { update, .. } => {
                    self.groups.join(update).await;
                }
                Held::GroupText { group, id, text, sent_at_ms } => {
                    self.groups.on_text(&sender, group, id, sent_at_ms, text).await;
                }
                // The sender offers it again once told.
                Held::File { .. } => {}
            }
        }
        for peer in &told {
            self.outbox.kick(peer);
        }
        Ok(())
    }

    /// Ignores `number`'s message request: what it held is dropped, and the sender is not told.
    pub async fn ignore(&self, number: &Number) -> Result<(), ClientError> {
        if !self.store.drop_request(number).await? {
            return Err(ClientError::NoRequest(number.clone()));
        }
        Ok(())
    }

    /// Blocks `number`: its request is dropped, and nothing it sends is shown again (it is not
    /// told: its messages stay pending on its side). Returns false if it was blocked already.
    pub async fn block(&self, number: &Number) -> Result<bool, ClientError> {
        if *number == self.number {
            return Err(ClientError::OwnNumber);
        }
        self.requests.set_blocked(number, true).await
    }

    /// Unblocks `number`; returns false if it was not blocked.
    pub async fn unblock(&self, number: &Number) -> Result<bool, ClientError> {
        self.requests.set_blocked(number, false).await
    }

    /// The numbers blocked.
    pub async fn blocked(&self) -> Result<Vec<Number>, ClientError> {
        self.store.blocked().await
    }

    /// Whether reading a message sends its sender a read receipt.
    pub fn read_receipts(&self) -> bool {
        self.read_receipts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Turns read receipts on or off; `remember` keeps the choice in the profile for the next runs
    /// (a command-line flag does not).
    pub async fn set_read_receipts(&self, on: bool, remember: bool) -> Result<(), ClientError> {
        self.read_receipts.store(on, std::sync::atomic::Ordering::Relaxed);
        if remember {
            self.store.set_setting(READ_RECEIPTS, if on { "1" } else { "0" }.into()).await?;
        }
        Ok(())
    }

    /// The configuration the client was started with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Tells the directory we leave, closes every link and waits for the tasks to end.
    pub async fn logout(self) {
        self.directory.logout().await;
        self.shutdown().await;
    }

    /// A front end has shown the user text `id` from `from` (printed and flushed it, or drawn
    /// it): it will not be shown again at the next start. Cheap: written with the next checkpoint.
    pub fn shown(&self, from: &Number, id: MessageId) {
        self.shown.note(from, id);
    }

    /// Sends again, as [`Event::Message`], every text received before this start that no front end
    /// reported shown (see [`Client::shown`]): what a crash kept from the user. Once per start, in
    /// the background; a front end that reports what it shows calls it when it is ready for events.
    pub fn replay_unshown(&self) {
        let shown = self.shown.clone();
        self.tracker.spawn(async move { shown.replay().await });
    }

    /// Closes every link and waits (at most a few seconds) for the tasks to end.
    pub async fn shutdown(self) {
        self.shown.flush().await;
        self.links.close_all();
        self.cancel.cancel();
        self.tracker.close();
        let _ = tokio::time::timeout(SHUTDOWN_WAIT, self.tracker.wait()).await;
    }
}
