//! What a client can tell about its own network without asking anyone: its interfaces' addresses
//! (its LAN candidates), whether an address is on one of its LANs, and, from two probe answers,
//! what its NAT does. Pure functions over what the system lists, so they are tested without a
//! network.

use std::net::{IpAddr, SocketAddr};

use whatsap2p_proto::nat::{Candidate, NatKind, Source, Transport, MAX_CANDIDATES};

/// One address of one of our interfaces, with its prefix length (for "is this on my LAN?").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Interface {
    pub(crate) ip: IpAddr,
    pub(crate) prefix: u8,
}

/// Our interfaces' addresses, as the system lists them now (loopback included), sorted so two
/// listings compare equal when nothing changed. Link-local IPv6 addresses are left out: they need
/// a scope id that candidates do not carry.
pub(crate) fn interfaces() -> Vec<Interface> {
    let mut out: Vec<Interface> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| match i.addr {
            if_addrs::IfAddr::V4(a) => Interface { ip: IpAddr::V4(a.ip), prefix: a.prefixlen },
            if_addrs::IfAddr::V6(a) => Interface { ip: IpAddr::V6(a.ip), prefix: a.prefixlen },
        })
        .filter(|i| !matches!(i.ip, IpAddr::V6(v6) if v6.is_unicast_link_local()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The candidates we announce: for each address we accept peers on, TCP at the listener's port and
/// UDP at the socket's. Listening on loopback gives loopback; on one address, that address; on an
/// unspecified one, every non-loopback interface address of the same family (IPv4 first). At most
/// [`MAX_CANDIDATES`].
pub(crate) fn candidates(tcp: SocketAddr, udp: SocketAddr, interfaces: &[Interface]) -> Vec<Candidate> {
    let ips: Vec<IpAddr> = if !tcp.ip().is_unspecified() {
        vec![tcp.ip()]
    } else {
        let mut ips: Vec<IpAddr> = interfaces
            .iter()
            .map(|i| i.ip)
            .filter(|ip| !ip.is_loopback() && ip.is_ipv4() == tcp.is_ipv4())
            .collect();
        ips.sort_by_key(|ip| !ip.is_ipv4());
        ips
    };
    let local =
        |transport, ip, port| Candidate { transport, addr: SocketAddr::new(ip, port), source: Source::Local };
    ips.into_iter()
        .flat_map(|ip| [local(Transport::Tcp, ip, tcp.port()), local(Transport::Udp, ip, udp.port())])
        .take(MAX_CANDIDATES)
        .collect()
}

/// Whether `ip` is on one of our LANs (inside the prefix of one of our addresses), or ours.
pub(crate) fn on_lan(ip: IpAddr, interfaces: &[Interface]) -> bool {
    ip.is_loopback() || interfaces.iter().any(|i| same_prefix(i.ip, ip, i.prefix))
}

fn same_prefix(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    let bits = |x: &[u8]| x.iter().fold(0u128, |acc, &byte| (acc << 8) | u128::from(byte));
    let (a, b, width) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (bits(&a.octets()), bits(&b.octets()), 32u32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (bits(&a.octets()), bits(&b.octets()), 128u32),
        _ => return false,
    };
    let prefix = u32::from(prefix).min(width);
    if prefix == 0 {
        return true;
    }
    let shift = width - prefix;
    (a >> shift) == (b >> shift)
}

/// What our NAT does, from what the directory's probe port (`first`) and the relay's (`second`)
/// saw of our socket at `local` (its port; its IP may be unspecified). `asked` says whether any
/// probe was sent at all.
pub(crate) fn classify(
    local: SocketAddr,
    interfaces: &[Interface],
    asked: bool,
    first: Option<SocketAddr>,
    second: Option<SocketAddr>,
) -> NatKind {
    let ours = |seen: SocketAddr| {
        seen.port() == local.port()
            && (seen.ip() == local.ip() || interfaces.iter().any(|i| i.ip == seen.ip()))
    };
    match (first, second) {
        (None, None) if asked => NatKind::NoUdp,
        (None, None) => NatKind::Unmeasured,
        (Some(a), _) | (None, Some(a)) if ours(a) => NatKind::Open,
        (Some(a), Some(b)) if a == b => NatKind::Cone,
        (Some(_), Some(_)) => NatKind::Symmetric,
        // One answer tells where we are seen, not whether that changes with the destination.
        _ => NatKind::Unmeasured,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(ip: &str, prefix: u8) -> Interface {
        Interface { ip: ip.parse().expect("ip"), prefix }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn given_an_unspecified_listener_then_every_lan_address_is_a_candidate_and_loopback_is_not() {
        let ifaces = [iface("127.0.0.1", 8), iface("10.1.0.2", 24), iface("2001:db8::2", 64)];
        let c = candidates(addr("0.0.0.0:4000"), addr("0.0.0.0:5000"), &ifaces);
        let got: Vec<(Transport, SocketAddr)> = c.iter().map(|c| (c.transport, c.addr)).collect();
        assert_eq!(got, [(Transport::Tcp, addr("10.1.0.2:4000")), (Transport::Udp, addr("10.1.0.2:5000"))]);
        assert!(c.iter().all(|c| c.source == Source::Local));
    }

    #[test]
    fn given_a_loopback_listener_then_loopback_is_the_candidate() {
        let ifaces = [iface("127.0.0.1", 8), iface("10.1.0.2", 24)];
        let c = candidates(addr("127.0.0.1:4000"), addr("127.0.0.1:5000"), &ifaces);
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.addr.ip().is_loopback()));
    }

    #[test]
    fn given_many_interfaces_then_at_most_max_candidates() {
        let ifaces: Vec<Interface> = (1..20).map(|k| iface(&format!("10.{k}.0.2"), 24)).collect();
        assert_eq!(candidates(addr("0.0.0.0:1"), addr("0.0.0.0:2"), &ifaces).len(), MAX_CANDIDATES);
    }

    #[test]
    fn given_addresses_then_only_those_inside_our_prefixes_are_on_the_lan() {
        let ifaces = [iface("10.1.0.2", 24), iface("2001:db8::2", 64)];
        assert!(on_lan("10.1.0.7".parse().expect("ip"), &ifaces));
        assert!(!on_lan("10.1.1.7".parse().expect("ip"), &ifaces));
        assert!(on_lan("2001:db8::99".parse().expect("ip"), &ifaces));
        assert!(!on_lan("203.0.113.5".parse().expect("ip"), &ifaces));
        assert!(on_lan("127.0.0.1".parse().expect("ip"), &ifaces));
    }

    #[test]
    fn given_probe_answers_then_the_nat_kind_follows() {
        let ifaces = [iface("10.1.0.2", 24)];
        let local = addr("0.0.0.0:5000");
        let seen = |s| Some(addr(s));
        assert_eq!(classify(local, &ifaces, true, None, None), NatKind::NoUdp);
        assert_eq!(classify(local, &ifaces, false, None, None), NatKind::Unmeasured);
        assert_eq!(
            classify(local, &ifaces, true, seen("10.1.0.2:5000"), seen("10.1.0.2:5000")),
            NatKind::Open
        );
        // A cone NAT that kept our port number is still a NAT: the IP is not ours.
        let cone = classify(local, &ifaces, true, seen("203.0.113.101:5000"), seen("203.0.113.101:5000"));
        assert_eq!(cone, NatKind::Cone);
        let sym = classify(local, &ifaces, true, seen("203.0.113.101:40001"), seen("203.0.113.101:40002"));
        assert_eq!(sym, NatKind::Symmetric);
        assert_eq!(classify(local, &ifaces, true, seen("203.0.113.101:1"), None), NatKind::Unmeasured);
    }
}
