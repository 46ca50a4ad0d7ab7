//! A session's bounded queue of pushes (presence changes, introductions, relay offers), shared by
//! whoever may push to it: the watch maps and the meetings table; and how the roster ends a
//! session, replaced or at shutdown ([`Sender::end`]), so that a held session waits on this one
//! queue and its socket, and nothing else.
//!
//! Every version 3 session must be reachable for introductions from its registration on, so each
//! held session has one. A `tokio::sync::mpsc` channel allocates its first block of slots when
//! made, about 1.2 KiB more per held session than the 4 KiB a session may cost (issue 6); this
//! queue allocates nothing until a push is queued and frees its slots once they are written.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};

use crate::watchers::Push;

/// Pushes waiting to be written to one session.
pub const PUSH_QUEUE: usize = 1024;

struct Shared {
    // A std lock: held for one queue operation, never across an await.
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    pushes: VecDeque<Push>,
    /// The session, waiting for a push. A waker rather than a `Notify`: the wait is part of every
    /// held session's future, and this keeps it one pointer.
    waiting: Option<Waker>,
    /// The session is gone: pushing to it is pointless.
    closed: bool,
    /// The session is to end, and why ([`Sender::end`]).
    ended: Option<Ending>,
}

/// Why a session is told to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// A newer session of its number replaced it.
    Replaced,
    /// The server shuts down.
    Shutdown,
}

/// The pushing side; cheap to clone (one pointer).
#[derive(Clone)]
pub struct Sender(Arc<Shared>);

/// The session's side. Dropping it closes the queue.
pub struct Receiver(Arc<Shared>);

/// Why a push was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// [`PUSH_QUEUE`] pushes wait already: the session is not keeping up.
    Full,
    /// The session ended.
    Closed,
}

/// A new, empty queue.
pub fn mailbox() -> (Sender, Receiver) {
    let shared = Arc::new(Shared { queue: Mutex::default() });
    (Sender(shared.clone()), Receiver(shared))
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Sender {
    /// Queues `push` without waiting.
    pub fn try_send(&self, push: Push) -> Result<(), Refused> {
        let waiting = {
            let mut queue = self.0.queue();
            if queue.closed {
                return Err(Refused::Closed);
            }
            if queue.pushes.len() >= PUSH_QUEUE {
                return Err(Refused::Full);
            }
            queue.pushes.push_back(push);
            queue.waiting.take()
        };
        // Woken outside the lock.
        if let Some(waker) = waiting {
            waker.wake();
        }
        Ok(())
    }

    /// Tells the session to end: its next [`Receiver::recv`] says so, before any push. The first
    /// reason given is the one it hears.
    pub fn end(&self, why: Ending) {
        let waiting = {
            let mut queue = self.0.queue();
            queue.ended.get_or_insert(why);
            queue.waiting.take()
        };
        if let Some(waker) = waiting {
            waker.wake();
        }
    }
}

impl Receiver {
    /// The next push, waiting for one; why the session is to end once it is ([`Sender::end`]).
    /// Cancel-safe: nothing is taken until it is returned.
    pub async fn recv(&self) -> Result<Push, Ending> {
        poll_fn(|cx| {
            let mut queue = self.0.queue();
            if let Some(why) = queue.ended {
                return Poll::Ready(Err(why));
            }
            match Self::pop(&mut queue) {
                Some(push) => Poll::Ready(Ok(push)),
                None => {
                    queue.waiting = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// The next push if one waits.
    pub fn try_recv(&self) -> Option<Push> {
        Self::pop(&mut self.0.queue())
    }

    fn pop(queue: &mut Queue) -> Option<Push> {
        let push = queue.pushes.pop_front();
        if queue.pushes.is_empty() && queue.pushes.capacity() > 0 {
            // An idle session keeps no slots.
            queue.pushes = VecDeque::new();
        }
        push
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // What waits is dropped with the session, not with the last sender.
        *self.0.queue() = Queue { closed: true, ..Queue::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsap2p_proto::directory::ServerToClient;

    fn push() -> Push {
        Arc::new(ServerToClient::HeartbeatAck)
    }

    #[tokio::test]
    async fn given_pushes_then_they_come_out_in_order_and_a_waiting_receiver_wakes() {
        let (tx, rx) = mailbox();
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await.expect("a push");
            let second = rx.recv().await.expect("another");
            (first, second, rx)
        });
        tokio::task::yield_now().await;
        tx.try_send(push()).expect("queued");
        tx.try_send(Arc::new(ServerToClient::Error { req: None, message: "x".into() })).expect("queued");
        let (first, second, rx) = waiting.await.expect("task");
        assert_eq!(*first, ServerToClient::HeartbeatAck);
        assert!(matches!(*second, ServerToClient::Error { .. }));
        assert!(rx.try_recv().is_none());
    }

    #[test]
    fn given_a_full_queue_then_pushes_are_refused_until_one_is_taken() {
        let (tx, rx) = mailbox();
        for _ in 0..PUSH_QUEUE {
            tx.try_send(push()).expect("room");
        }
        assert_eq!(tx.try_send(push()), Err(Refused::Full));
        assert!(rx.try_recv().is_some());
        tx.try_send(push()).expect("room again");
    }

    #[tokio::test]
    async fn given_an_end_then_a_waiting_receiver_wakes_to_it_before_any_push() {
        let (tx, rx) = mailbox();
        let waiting = tokio::spawn(async move { rx.recv().await.err() });
        tokio::task::yield_now().await;
        tx.end(Ending::Replaced);
        assert_eq!(waiting.await.expect("task"), Some(Ending::Replaced), "woken to end");
        let (tx, rx) = mailbox();
        tx.try_send(push()).expect("queued");
        tx.end(Ending::Shutdown);
        tx.end(Ending::Replaced);
        assert_eq!(rx.recv().await.err(), Some(Ending::Shutdown), "the first end, before any push");
    }

    #[test]
    fn given_a_dropped_receiver_then_pushes_are_refused_as_closed_and_nothing_is_held() {
        let (tx, rx) = mailbox();
        tx.try_send(push()).expect("queued");
        drop(rx);
        assert_eq!(tx.try_send(push()), Err(Refused::Closed));
        assert_eq!(tx.0.queue().pushes.capacity(), 0);
    }
}
