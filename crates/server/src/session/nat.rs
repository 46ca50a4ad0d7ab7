//! A session's part in reaching clients behind NATs (protocol version 3, `docs/protocol.md`
//! section 8): its probe token and `Reachability`.

use whatsap2p_proto::directory::ServerToClient;

use super::Online;

/// When a session is told its `Reachability`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timing {
    /// Right after the handshake: a session that agreed on version 3 or later.
    AfterHandshake,
    /// Right after the answer to its first `Register`: a session this server cannot tell is a
    /// version 3 one (see [`Online::reachability_timing`]).
    AfterFirstRegister,
}

impl Online<'_> {
    /// When this session is told its `Reachability`: the one place that version 3 gates it.
    ///
    /// Until the handshake negotiates versions (`docs/protocol.md` §3.3, being wired on another
    /// branch) every session is a version 2 one to this server, and the v2 client reads the answer
    /// to its `Register` before anything else and skips what it does not expect afterwards: it gets
    /// `Reachability` right after that answer. Once negotiation is in, this becomes
    /// `if agreed >= 3 { AfterHandshake } else { never }`, and a v2 session gets nothing new.
    pub(super) fn reachability_timing(&self) -> Timing {
        Timing::AfterFirstRegister
    }

    /// Gives the session its probe token and says how to use it: the directory's UDP port and the
    /// relay, if there are.
    pub(super) fn reachability(&mut self) -> ServerToClient {
        let dir = self.dir;
        let token = *self.token.get_or_insert_with(|| dir.probes.issue(&dir.relay_keys));
        ServerToClient::Reachability { token, udp_port: dir.udp_port(), relay: dir.config.relay }
    }
}
