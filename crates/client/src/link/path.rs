//! [`Path`]: which way a live link to a peer goes, shown to the user beside the contact.

use whatsap2p_proto::nat::{NatKind, RelayReason, Transport};

/// Which way a link goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Path {
    /// Straight to the peer on a network we share (its address is inside one of our prefixes, or
    /// loopback), over TCP or UDP.
    DirectLan {
        /// TCP or UDP (QUIC).
        transport: Transport,
    },
    /// Straight to the peer over TCP, across the internet.
    DirectTcp,
    /// Straight to the peer over UDP (QUIC), through NATs opened by punching.
    DirectUdp,
    /// Through the relay (TCP to it from both sides; it only sees ciphertext).
    Relayed {
        /// Why no direct path was found.
        reason: RelayReason,
    },
}

impl Path {
    /// Whether the link goes straight to the peer.
    pub fn is_direct(self) -> bool {
        !matches!(self, Path::Relayed { .. })
    }

    /// The transport the link runs over from our side.
    pub fn transport(self) -> Transport {
        match self {
            Path::DirectLan { transport } => transport,
            Path::DirectUdp => Transport::Udp,
            Path::DirectTcp | Path::Relayed { .. } => Transport::Tcp,
        }
    }

    /// The path for people: "direct on the LAN (TCP)", "relayed: both sides behind symmetric NATs".
    pub fn detail(self) -> String {
        match self {
            Path::DirectLan { transport } => format!("direct on the LAN, {}", transport_name(transport)),
            Path::DirectTcp => "direct, TCP".into(),
            Path::DirectUdp => "direct, UDP punched".into(),
            Path::Relayed { reason } => format!("relayed: {}", reason_text(reason)),
        }
    }

    /// The path of a stream over `transport` with a peer at an address that is (or is not) on
    /// one of our LANs.
    pub(crate) fn direct(transport: Transport, on_lan: bool) -> Path {
        match (on_lan, transport) {
            (true, transport) => Path::DirectLan { transport },
            (false, Transport::Udp) => Path::DirectUdp,
            (false, _) => Path::DirectTcp,
        }
    }
}

fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        _ => "TCP",
    }
}

/// Why a link is relayed, for people.
pub fn reason_text(reason: RelayReason) -> &'static str {
    match reason {
        RelayReason::BothSymmetric => "both sides behind symmetric NATs",
        RelayReason::Symmetric => "a symmetric NAT on the way",
        RelayReason::UdpBlocked => "UDP blocked on the way",
        RelayReason::PunchTimedOut => "no direct path answered in time",
        RelayReason::NoDirectTransport => "no direct transport in common",
        _ => "no direct path",
    }
}

/// Why punching cannot work between NATs of these kinds (when `mine.can_punch(theirs)` is false).
pub(crate) fn relay_reason(mine: NatKind, theirs: NatKind) -> RelayReason {
    match (mine, theirs) {
        (NatKind::NoUdp, _) | (_, NatKind::NoUdp) => RelayReason::UdpBlocked,
        (NatKind::Symmetric, NatKind::Symmetric) => RelayReason::BothSymmetric,
        _ => RelayReason::Symmetric,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_nat_kinds_then_the_relay_reason_names_the_obstacle() {
        assert_eq!(relay_reason(NatKind::Symmetric, NatKind::Symmetric), RelayReason::BothSymmetric);
        assert_eq!(relay_reason(NatKind::Cone, NatKind::Symmetric), RelayReason::Symmetric);
        assert_eq!(relay_reason(NatKind::Cone, NatKind::NoUdp), RelayReason::UdpBlocked);
    }

    #[test]
    fn given_paths_then_transport_and_words_follow() {
        assert_eq!(Path::direct(Transport::Udp, false), Path::DirectUdp);
        assert_eq!(Path::direct(Transport::Tcp, true).transport(), Transport::Tcp);
        assert!(!Path::Relayed { reason: RelayReason::UdpBlocked }.is_direct());
        assert_eq!(Path::DirectUdp.detail(), "direct, UDP punched");
    }
}
