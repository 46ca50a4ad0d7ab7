//! What the directory's stores have in common: their error type, and the owner of a presence entry.
//!
//! Two stores implement both [`crate::identities::IdentityStore`] and
//! [`crate::presence::PresenceStore`]: the embedded one (SQLite bindings, presence in memory: one
//! instance) and [`crate::redis_store::RedisStore`] (both in Redis, shared by every instance that
//! points at it).

use whatsap2p_proto::Number;

/// A unique id for one directory session within its instance.
pub type SessionId = u64;

/// Which session of which instance made a presence entry. Only that session renews or deletes it,
/// so a session that ends late cannot take offline a user who registered again elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The instance (random per process start, see [`crate::Directory::instance`]).
    pub instance: u64,
    /// The session within it.
    pub session: SessionId,
}

impl Owner {
    /// Length of [`Owner::to_bytes`].
    pub const LEN: usize = 16;

    /// Instance then session, each a big-endian u64: how Redis keeps and compares it.
    pub fn to_bytes(self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        out[..8].copy_from_slice(&self.instance.to_be_bytes());
        out[8..].copy_from_slice(&self.session.to_be_bytes());
        out
    }

    /// The owner at the start of `bytes`, if there are enough of them.
    pub fn from_prefix(bytes: &[u8]) -> Option<Self> {
        let (instance, rest) = bytes.split_first_chunk::<8>()?;
        let (session, _) = rest.split_first_chunk::<8>()?;
        Some(Self { instance: u64::from_be_bytes(*instance), session: u64::from_be_bytes(*session) })
    }
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}/{}", self.instance, self.session)
    }
}

/// Errors of a store. A failing store never ends a session that is already established; it makes
/// the directory refuse what it cannot record (see `docs/operators.md`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite database failed.
    #[error("identity database: {0}")]
    Db(#[from] rusqlite::Error),
    /// A blocking task of the SQLite store failed.
    #[error("identity database task failed")]
    Task,
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The store did not answer its last health check or a command in time; it is not asked again
    /// until it does (at most a second, see `redis_store::CHECK_PERIOD`).
    #[error("the directory's store is unreachable")]
    Unavailable,
    /// Redis holds something for `number` that this version cannot read.
    #[error("redis holds a malformed {what} for {number}")]
    Malformed {
        /// What was malformed.
        what: &'static str,
        /// Whose.
        number: Number,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_owner_then_its_bytes_read_back_and_short_input_is_none() {
        let o = Owner { instance: 0x0102_0304_0506_0708, session: 42 };
        let mut bytes = o.to_bytes().to_vec();
        bytes.extend_from_slice(b"rest");
        assert_eq!(Owner::from_prefix(&bytes), Some(o));
        assert_eq!(Owner::from_prefix(&bytes[..15]), None);
    }
}
