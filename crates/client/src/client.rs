//! [`Client`]: what a user interface drives, and the [`Event`]s it shows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;
use whatsap2p_proto::directory::LookupIntent;
use whatsap2p_proto::{MessageId, Number, PublicKey, MAX_TEXT_LEN};

use crate::directory::{self, DirectoryHandle};
use crate::peer::{self, Links};
use crate::profile::{Identity, Profile};
use crate::store::Store;
use crate::ClientError;

/// Events waiting for the UI. Peers wait (back-pressure) rather than lose an event.
const EVENT_QUEUE: usize = 1024;

/// Timeouts of the client, each bounding one kind of wait.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// TCP connect to the directory or a peer.
    pub connect: Duration,
    /// A whole Noise handshake.
    pub handshake: Duration,
    /// A directory request's answer.
    pub request: Duration,
    /// Interval between heartbeats to the directory (its timeout is three times this by default).
    pub heartbeat: Duration,
    /// A peer link with no traffic for this long is closed (it is redialed when needed).
    pub link_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            handshake: Duration::from_secs(5),
            request: Duration::from_secs(5),
            heartbeat: Duration::from_secs(10),
            link_idle: Duration::from_secs(600),
        }
    }
}

/// How to start a client.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Our number.
    pub number: Number,
    /// The profile folder.
    pub profile_dir: PathBuf,
    /// The directory server.
    pub server: SocketAddr,
    /// Where to accept peers. An unspecified IP is published as the address the server sees.
    pub listen: SocketAddr,
    /// Timeouts.
    pub timeouts: Timeouts,
}

/// Something the user should see.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message arrived.
    Message {
        /// Its id.
        id: MessageId,
        /// The sender (its key was checked).
        from: Number,
        /// The text.
        text: String,
        /// The sender's clock at sending.
        sent_at_ms: u64,
    },
    /// The recipient confirmed it has the message.
    Delivered {
        /// The message.
        id: MessageId,
        /// The recipient.
        to: Number,
    },
    /// A sent message was never confirmed: the link ended first.
    Undelivered {
        /// The message.
        id: MessageId,
        /// The recipient.
        to: Number,
        /// Why.
        reason: String,
    },
    /// A security-relevant refusal nobody asked about (a peer with the wrong key, say).
    Warning {
        /// What happened.
        message: String,
    },
    /// The directory session ended unexpectedly.
    DirectoryLost {
        /// Why.
        reason: String,
    },
}

/// A number's status as the directory sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presence {
    /// Who.
    pub number: Number,
    /// Where it listens, if online.
    pub online: Option<SocketAddr>,
    /// Its identity key, if it ever registered.
    pub key: Option<PublicKey>,
}

/// A contact and its status.
pub type ContactStatus = Presence;

/// State shared by the client's tasks.
pub(crate) struct Core {
    pub(crate) number: Number,
    pub(crate) identity: Identity,
    pub(crate) store: Store,
    pub(crate) directory: DirectoryHandle,
    pub(crate) events: mpsc::Sender<Event>,
    pub(crate) links: Links,
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

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let directory = directory::spawn(session, &config.timeouts, events.clone(), cancel.clone(), &tracker);
        let core = Arc::new(Core {
            number: config.number.clone(),
            identity: profile.identity.clone(),
            store,
            directory,
            events,
            links: Links::default(),
            config,
            cancel,
            tracker,
        });
        core.tracker.spawn(peer::accept_loop(core.clone(), listener));
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
        Ok(Presence { number: a.number, online: a.online.map(|l| l.addr), key: a.key })
    }

    /// Sends `text` to `to` directly. Returns the message id once it is written to the peer;
    /// [`Event::Delivered`] follows when the peer confirms.
    pub async fn send(&self, to: &Number, text: &str) -> Result<MessageId, ClientError> {
        if text.len() > MAX_TEXT_LEN {
            return Err(ClientError::TextTooLong(text.len()));
        }
        if *to == self.core.number {
            return Err(ClientError::OwnNumber);
        }
        let id = MessageId::new();
        peer::send_text(&self.core, to, id, text.to_owned()).await?;
        Ok(id)
    }

    /// Adds a contact, pinning its key if the directory knows it. Returns whether it was new and the
    /// pinned key.
    pub async fn add_contact(&self, number: &Number) -> Result<(bool, Option<PublicKey>), ClientError> {
        if *number == self.core.number {
            return Err(ClientError::OwnNumber);
        }
        let new = self.core.store.add_contact(number).await?;
        if let Ok(answer) = self.core.directory.lookup(number, LookupIntent::Ping).await {
            if let Some(key) = answer.key {
                peer::check_pin(&self.core, number, key).await?;
            }
        }
        let key = self.core.store.contact(number).await?.and_then(|c| c.key);
        Ok((new, key))
    }

    /// Every contact with its status; the lookups run concurrently on the one directory session.
    pub async fn contacts(&self) -> Result<Vec<ContactStatus>, ClientError> {
        let contacts = self.core.store.contacts().await?;
        let lookups = contacts.iter().map(|c| self.core.directory.lookup(&c.number, LookupIntent::Ping));
        let answers = futures::future::join_all(lookups).await;
        contacts
            .into_iter()
            .zip(answers)
            .map(|(c, a)| {
                let a = a?;
                Ok(Presence { number: c.number, online: a.online.map(|l| l.addr), key: c.key.or(a.key) })
            })
            .collect()
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
