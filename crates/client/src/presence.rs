//! What the directory last said about each watched number: online (and where) or offline.
//!
//! Filled by the directory's pushes (see `client::route_notes`), read by sends (is the recipient
//! online?) and couriers (do not dial someone known to be offline). Only watched numbers have an
//! entry; the watch list is ours (contacts, people we write to, group members), never a remote's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use whatsap2p_proto::directory::Location;
use whatsap2p_proto::Number;

/// The last status pushed for each watched number. Clones share it.
#[derive(Clone, Default)]
pub(crate) struct PresenceCache(Arc<Mutex<HashMap<Number, Option<Location>>>>);

impl PresenceCache {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Number, Option<Location>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The status pushed last: `None` when `number` is not watched yet.
    pub(crate) fn status(&self, number: &Number) -> Option<Option<Location>> {
        self.map().get(number).copied()
    }

    /// True when the directory told us `number` is offline (and nothing since said otherwise).
    pub(crate) fn known_offline(&self, number: &Number) -> bool {
        matches!(self.map().get(number), Some(None))
    }

    /// Records a push; returns whether the address changed (or the number was new).
    pub(crate) fn update(&self, number: Number, online: Option<Location>) -> bool {
        let before = self.map().insert(number, online);
        before.map(|b| b.map(|l| l.addr)) != Some(online.map(|l| l.addr))
    }

    /// A lookup found `number` online: a watched number cached as offline is online now. A push
    /// saying so may still be on its way (a watch answered before the number registered again, on
    /// a busy machine); until it comes, a send would queue instead of writing. Only this direction
    /// is taken from lookups, and a cached "online" is never touched. An answer that lands after a
    /// later "offline" push costs a failed dial, after which the courier retries with backoff.
    pub(crate) fn saw_online(&self, number: &Number, location: Option<Location>) {
        let Some(location) = location else { return };
        if let Some(cached @ None) = self.map().get_mut(number) {
            *cached = Some(location);
        }
    }

    /// Forgets everything (the directory session was lost: its pushes will come again).
    pub(crate) fn clear(&self) {
        self.map().clear();
    }
}
