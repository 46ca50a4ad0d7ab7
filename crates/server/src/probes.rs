//! The directory's UDP port: probes from clients that want to know their public UDP address.
//!
//! Each session that is told its [`whatsap2p_proto::directory::ServerToClient::Reachability`] gets a
//! probe token ([`Probes::issue`]); a probe carrying it is answered with the address it came from,
//! which is kept as the session's *observed* UDP address, the one the directory publishes for it
//! (never an address a client claims). The map holds exactly the tokens of this instance's live
//! sessions: a session forgets its token when it ends ([`Probes::forget`]), so it is bounded by
//! the connection cap. A token that is not in it (forged, guessed, of an ended session, or of
//! another instance) gets no answer: counted, and logged at most once a minute
//! (`whatsap2p_relay::probe`, which also bounds answers per source).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use whatsap2p_proto::nat::ProbeToken;
use whatsap2p_relay::{Observer, RelayKeys};

/// Live sessions' probe tokens, and the UDP address each one's probes came from.
#[derive(Default)]
pub struct Probes {
    // A std lock: held for one map operation, never across an await.
    tokens: Mutex<HashMap<ProbeToken, Option<SocketAddr>>>,
}

impl Probes {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<ProbeToken, Option<SocketAddr>>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new token for a session (made with `keys`, so the directory's relays can check it too).
    pub fn issue(&self, keys: &RelayKeys) -> ProbeToken {
        let mut map = self.map();
        loop {
            let token = keys.probe_token();
            // 64 random bits: a collision is a curiosity, but a token must name one session.
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(token) {
                e.insert(None);
                return token;
            }
        }
    }

    /// A probe with `token` came from `from`: records it if the token is a live session's.
    pub fn record(&self, token: &ProbeToken, from: SocketAddr) -> bool {
        match self.map().get_mut(token) {
            Some(observed) => {
                *observed = Some(from);
                true
            }
            None => false,
        }
    }

    /// Where the probes of `token`'s session came from last.
    pub fn observed(&self, token: &ProbeToken) -> Option<SocketAddr> {
        self.map().get(token).copied().flatten()
    }

    /// The session ended.
    pub fn forget(&self, token: &ProbeToken) {
        self.map().remove(token);
    }

    /// Live tokens.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Answers probes on `socket` until `cancel`, recording each live session's observed address.
pub async fn serve(
    socket: UdpSocket,
    probes: Arc<Probes>,
    observer: Arc<dyn Observer>,
    cancel: CancellationToken,
) {
    whatsap2p_relay::probe::serve(socket, move |token, from| probes.record(token, from), observer, cancel)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_token_then_its_probes_are_recorded_until_the_session_forgets_it() {
        let probes = Probes::default();
        let keys = RelayKeys::derive(&[1; 32]);
        let token = probes.issue(&keys);
        assert!(keys.is_probe_token(&token));
        assert_eq!(probes.observed(&token), None);
        let from: SocketAddr = "203.0.113.9:40000".parse().expect("addr");
        assert!(probes.record(&token, from));
        assert_eq!(probes.observed(&token), Some(from));
        assert!(!probes.record(&keys.probe_token(), from), "a valid token of no session here");
        probes.forget(&token);
        assert!(!probes.record(&token, from));
        assert!(probes.is_empty());
    }
}
