//! Runs what the UI asks for off the draw loop: backend calls on their own tasks, folder listings
//! and photo decoding on blocking threads. The UI hands over a [`Request`] and later gets an
//! [`Outcome`]; it never awaits a call, so a dial that takes seconds leaves the screen responsive.
//!
//! Sends keep their order per conversation (a conversation's sends run one after another, in a
//! lane); everything else runs at once, up to [`MAX_RUNNING`] calls. Requests beyond the bounds
//! wait in queues of at most [`MAX_WAITING`], and past that are refused (the UI says so).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ratatui::layout::Size;
use ratatui_image::picker::Picker;
use ratatui_image::protocol::Protocol;
use tokio::task::JoinSet;
use whatsap2p_client::{Change, Group, GroupId, MessageId, Number, Presence};

use crate::backend::{Added, Answer, Backend, Chat, Conversation, Entry, Page, PageAt};
use crate::complete::{self, Completion};
use crate::photo;

/// Most calls running at once.
pub const MAX_RUNNING: usize = 16;
/// Most requests waiting (for a lane or a free slot) before new ones are refused.
pub const MAX_WAITING: usize = 256;
/// How long logging out waits for calls still running (sends being written) before dropping them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Photos decoded at once: each may take up to `photo::MAX_DECODE_BYTES`.
pub const MAX_DECODING: usize = 2;

/// Something the UI wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The conversation list.
    Conversations,
    /// A page of a conversation's history.
    Page {
        /// Which conversation.
        chat: Chat,
        /// Which page.
        at: PageAt,
        /// How many messages at most.
        limit: usize,
    },
    /// Send a text.
    SendText {
        /// Where.
        chat: Chat,
        /// What.
        text: String,
    },
    /// Send a photo or a file.
    SendFile {
        /// Where.
        chat: Chat,
        /// The file.
        path: PathBuf,
    },
    /// These received messages were shown.
    MarkRead(Vec<MessageId>),
    /// Add a contact.
    AddContact(Number),
    /// Is this number online?
    Ping(Number),
    /// Every contact with its status.
    Contacts,
    /// The numbers whose message requests wait.
    MessageRequests,
    /// Ignore a message request, or block or unblock a number.
    AnswerRequest {
        /// Whose.
        number: Number,
        /// What to do.
        answer: Answer,
    },
    /// Create a group.
    GroupCreate {
        /// Its name.
        name: String,
        /// Members besides us.
        members: Vec<Number>,
    },
    /// Add or remove a member.
    GroupChange {
        /// The group.
        id: GroupId,
        /// Who.
        who: Number,
        /// What.
        change: Change,
    },
    /// Leave a group.
    GroupLeave(GroupId),
    /// Stop sending a file.
    CancelTransfer(MessageId),
    /// Complete a partial path (reads a folder).
    Complete(String),
    /// Decode a photo and encode it for the terminal at a size in cells.
    DecodePhoto {
        /// The message it belongs to.
        id: MessageId,
        /// The file.
        path: PathBuf,
        /// The box to fit it in.
        cells: Size,
    },
}

impl Request {
    /// The lane a request must wait its turn in: sends, per conversation.
    fn lane(&self) -> Option<&Chat> {
        match self {
            Request::SendText { chat, .. } | Request::SendFile { chat, .. } => Some(chat),
            _ => None,
        }
    }
}

/// What came of a [`Request`]. Errors are the text to show the user.
pub enum Outcome {
    /// The conversation list.
    Conversations(Result<Vec<Conversation>, String>),
    /// A page of history.
    Page {
        /// Its conversation.
        chat: Chat,
        /// Which page it is.
        at: PageAt,
        /// The page.
        result: Result<Page, String>,
    },
    /// A text or file sent (or queued).
    Sent {
        /// Where.
        chat: Chat,
        /// The message, as stored.
        result: Result<Entry, String>,
        /// The text sent (none for a file), so a refused one can be given back to edit.
        text: Option<String>,
    },
    /// Received messages marked read.
    Marked(Result<(), String>),
    /// A contact added.
    ContactAdded {
        /// Who.
        number: Number,
        /// What happened.
        result: Result<Added, String>,
    },
    /// A ping answered.
    Pinged {
        /// Who.
        number: Number,
        /// Their status.
        result: Result<Presence, String>,
    },
    /// The contacts.
    Contacts(Result<Vec<Presence>, String>),
    /// The numbers whose message requests wait.
    MessageRequests(Result<Vec<Number>, String>),
    /// A request ignored, or a number blocked or unblocked.
    Answered {
        /// Whose.
        number: Number,
        /// What was done.
        answer: Answer,
        /// False when there was nothing to change.
        result: Result<bool, String>,
    },
    /// A group created, changed or left.
    Group(Result<Group, String>),
    /// A transfer cancelled.
    Cancelled {
        /// Which.
        id: MessageId,
        /// Whether it worked.
        result: Result<(), String>,
    },
    /// A path completed.
    Completed {
        /// What was typed when Tab was pressed.
        partial: String,
        /// What it completes to.
        completion: Completion,
    },
    /// A photo ready to draw.
    Photo {
        /// Its message.
        id: MessageId,
        /// The box it was fitted in.
        cells: Size,
        /// The encoded picture.
        result: Result<Box<Protocol>, String>,
    },
    /// A call's task panicked or was cancelled.
    Lost(String),
}

/// Why a request was not taken.
#[derive(Debug, thiserror::Error)]
#[error("too many requests waiting ({MAX_WAITING}); try again in a moment")]
pub struct Busy;

/// The calls in flight and those waiting.
pub struct Calls<B> {
    backend: Arc<B>,
    picker: Picker,
    decoding: Arc<tokio::sync::Semaphore>,
    running: JoinSet<(Option<Chat>, Outcome)>,
    /// Conversations with a send running; their next sends wait in `lanes`.
    busy_lanes: HashSet<Chat>,
    lanes: HashMap<Chat, VecDeque<Request>>,
    /// Requests waiting for a free slot.
    waiting: VecDeque<Request>,
}

impl<B: Backend> Calls<B> {
    /// Calls to `backend`; photos are encoded with `picker`.
    pub fn new(backend: Arc<B>, picker: Picker) -> Self {
        Self {
            backend,
            picker,
            decoding: Arc::new(tokio::sync::Semaphore::new(MAX_DECODING)),
            running: JoinSet::new(),
            busy_lanes: HashSet::new(),
            lanes: HashMap::new(),
            waiting: VecDeque::new(),
        }
    }

    /// The backend the calls go to.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    fn queued(&self) -> usize {
        self.waiting.len() + self.lanes.values().map(VecDeque::len).sum::<usize>()
    }

    /// Starts `request`, or queues it behind its lane or the running calls.
    pub fn submit(&mut self, request: Request) -> Result<(), Busy> {
        let lane_busy = request.lane().is_some_and(|chat| self.busy_lanes.contains(chat));
        if lane_busy || self.running.len() >= MAX_RUNNING {
            if self.queued() >= MAX_WAITING {
                return Err(Busy);
            }
            match request.lane() {
                Some(chat) if lane_busy => self.lanes.entry(chat.clone()).or_default().push_back(request),
                _ => self.waiting.push_back(request),
            }
            return Ok(());
        }
        self.start(request);
        Ok(())
    }

    /// Nothing running and nothing waiting.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty()
    }

    fn start(&mut self, request: Request) {
        let lane = request.lane().cloned();
        if let Some(chat) = &lane {
            self.busy_lanes.insert(chat.clone());
        }
        let backend = self.backend.clone();
        let picker = self.picker.clone();
        let decoding = self.decoding.clone();
        self.running.spawn(async move { (lane, run(&*backend, &picker, &decoding, request).await) });
    }

    /// The next outcome; pending forever while nothing runs (use beside [`Calls::is_idle`]).
    pub async fn next(&mut self) -> Outcome {
        let Some(done) = self.running.join_next().await else {
            return std::future::pending().await;
        };
        let (lane, outcome) = match done {
            Ok(done) => done,
            Err(e) => (None, Outcome::Lost(format!("a background call failed: {e}"))),
        };
        if let Some(chat) = lane {
            self.busy_lanes.remove(&chat);
            if let Some(next) = self.lanes.get_mut(&chat).and_then(VecDeque::pop_front) {
                self.start(next);
            }
            if self.lanes.get(&chat).is_some_and(VecDeque::is_empty) {
                self.lanes.remove(&chat);
            }
        }
        while self.running.len() < MAX_RUNNING {
            let Some(next) = self.waiting.pop_front() else { break };
            match next.lane() {
                Some(chat) if self.busy_lanes.contains(chat) => {
                    self.lanes.entry(chat.clone()).or_default().push_back(next)
                }
                _ => self.start(next),
            }
        }
        outcome
    }

    /// Lets running calls finish (at most [`DRAIN_TIMEOUT`]), drops waiting ones and returns the
    /// backend once no task holds it.
    pub async fn finish(mut self) -> Option<B> {
        self.waiting.clear();
        self.lanes.clear();
        let drain = async { while self.running.join_next().await.is_some() {} };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            self.running.shutdown().await;
        }
        Arc::into_inner(self.backend)
    }
}

async fn run<B: Backend>(
    backend: &B,
    picker: &Picker,
    decoding: &tokio::sync::Semaphore,
    request: Request,
) -> Outcome {
    let text = |e: crate::backend::BackendError| e.to_string();
    match request {
        Request::Conversations => Outcome::Conversations(backend.conversations().await.map_err(text)),
        Request::Page { chat, at, limit } => {
            let result = backend.history_page(&chat, at, limit).await.map_err(text);
            Outcome::Page { chat, at, result }
        }
        Request::SendText { chat, text: body } => {
            let result = backend.send_text(&chat, &body).await.map_err(text);
            Outcome::Sent { chat, result, text: Some(body) }
        }
        Request::SendFile { chat, path } => {
            let result = backend.send_file(&chat, &path).await.map_err(text);
            Outcome::Sent { chat, result, text: None }
        }
        Request::MarkRead(ids) => Outcome::Marked(backend.mark_read(&ids).await.map_err(text)),
        Request::AddContact(number) => {
            let result = backend.add_contact(&number).await.map_err(text);
            Outcome::ContactAdded { number, result }
        }
        Request::Ping(number) => {
            let result = backend.ping(&number).await.map_err(text);
            Outcome::Pinged { number, result }
        }
        Request::Contacts => Outcome::Contacts(backend.contacts().await.map_err(text)),
        Request::MessageRequests => Outcome::MessageRequests(backend.message_requests().await.map_err(text)),
        Request::AnswerRequest { number, answer } => {
            let result = backend.answer_request(&number, answer).await.map_err(text);
            Outcome::Answered { number, answer, result }
        }
        Request::GroupCreate { name, members } => {
            Outcome::Group(backend.group_create(&name, &members).await.map_err(text))
        }
        Request::GroupChange { id, who, change } => {
            Outcome::Group(backend.group_change(id, &who, change).await.map_err(text))
        }
        Request::GroupLeave(id) => Outcome::Group(backend.group_leave(id).await.map_err(text)),
        Request::CancelTransfer(id) => {
            Outcome::Cancelled { id, result: backend.cancel_transfer(id).await.map_err(text) }
        }
        Request::Complete(partial) => {
            let typed = partial.clone();
            let job = move || complete::complete(&typed, complete::read_folder);
            match tokio::task::spawn_blocking(job).await {
                Ok(completion) => Outcome::Completed { partial, completion },
                Err(e) => Outcome::Lost(format!("completing a path: {e}")),
            }
        }
        Request::DecodePhoto { id, path, cells } => {
            let Ok(_slot) = decoding.acquire().await else {
                return Outcome::Lost("decoding a photo: shutting down".into());
            };
            let picker = picker.clone();
            let job = move || photo::encode(&picker, &path, cells);
            let result = match tokio::task::spawn_blocking(job).await {
                Ok(r) => r.map(Box::new),
                Err(e) => Err(format!("decoding a photo: {e}")),
            };
            Outcome::Photo { id, cells, result }
        }
    }
}
