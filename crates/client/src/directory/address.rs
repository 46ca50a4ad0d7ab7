//! Where the directory is: the addresses a user gives ([`ServerAddr`], an IP or a host name with a
//! port), and the order in which a round of connection attempts tries what they resolve to.
//!
//! A host name is resolved again at every round, so a name that maps to several instances of the
//! directory spreads clients over them (its addresses are taken from a random starting point) and
//! follows the operator's changes.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// Longest host name (RFC 1035).
const MAX_HOST_LEN: usize = 253;

/// One address of the directory as the user gave it. Its text (`127.0.0.1:7000`, `[::1]:7000`,
/// `chat.example.org:7000`) is what the profile pins the directory's key under.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerAddr {
    host: Host,
    port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Host {
    Ip(IpAddr),
    /// A DNS name: ASCII letters, digits, `-` and `.`, checked.
    Name(String),
}

/// Why a text is not a directory address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Not `HOST:PORT`.
    #[error("{0:?} is not HOST:PORT (an IP address or a host name, then a port)")]
    Form(String),
    /// The host is neither an IP address nor a host name.
    #[error("{0:?} is not an IP address or a host name")]
    Host(String),
}

impl ServerAddr {
    /// `host` (an IP address, or a host name such as `localhost` or `chat.example.org`) and
    /// `port`.
    pub fn new(host: &str, port: u16) -> Result<Self, AddrError> {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self { host: Host::Ip(ip), port });
        }
        let name_ok = !host.is_empty()
            && host.len() <= MAX_HOST_LEN
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !name_ok {
            return Err(AddrError::Host(host.to_owned()));
        }
        Ok(Self { host: Host::Name(host.to_ascii_lowercase()), port })
    }

    /// Whether it is a host name (which may resolve to several addresses).
    pub(crate) fn is_name(&self) -> bool {
        matches!(self.host, Host::Name(_))
    }

    /// The host as given: an IP address (without brackets) or a host name.
    pub fn host(&self) -> String {
        match &self.host {
            Host::Ip(ip) => ip.to_string(),
            Host::Name(name) => name.clone(),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether every address this names is on this machine (`localhost` counts; other names are
    /// not resolved for this).
    pub fn is_loopback(&self) -> bool {
        match &self.host {
            Host::Ip(ip) => ip.is_loopback(),
            Host::Name(name) => name == "localhost",
        }
    }

    /// The socket addresses it names now: itself for an IP, what the name resolves to (within
    /// `within`) for a host name.
    pub(crate) async fn resolve(&self, within: Duration) -> Result<Vec<SocketAddr>, String> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => name,
        };
        match tokio::time::timeout(within, tokio::net::lookup_host((name.as_str(), self.port))).await {
            Err(_) => Err(format!("resolving {name} timed out")),
            Ok(Err(e)) => Err(format!("resolving {name}: {e}")),
            Ok(Ok(found)) => {
                let mut addrs: Vec<SocketAddr> = Vec::new();
                for a in found {
                    if !addrs.contains(&a) {
                        addrs.push(a);
                    }
                }
                if addrs.is_empty() {
                    return Err(format!("{name} has no address"));
                }
                // Clients of one name start at different instances.
                let start = rand::random::<usize>() % addrs.len();
                addrs.rotate_left(start);
                Ok(addrs)
            }
        }
    }
}

impl From<SocketAddr> for ServerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self { host: Host::Ip(addr.ip()), port: addr.port() }
    }
}

impl FromStr for ServerAddr {
    type Err = AddrError;

    /// `HOST:PORT`, with an IPv6 address in brackets: `[::1]:7000`.
    fn from_str(s: &str) -> Result<Self, AddrError> {
        let form = || AddrError::Form(s.to_owned());
        let (host, port) = s.rsplit_once(':').ok_or_else(form)?;
        let port = port.parse().map_err(|_| form())?;
        if host.contains(':') && !host.starts_with('[') {
            return Err(form());
        }
        Self::new(host, port)
    }
}

impl fmt::Display for ServerAddr {
    /// As `SocketAddr` shows it for an IP (so a profile's pins from before host names still
    /// match), `name:port` for a host name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// One address to try: the socket address, and the address given that it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) given: ServerAddr,
    pub(crate) addr: SocketAddr,
}

/// What a round tries, in order: every address the directory's `servers` name now, in the order
/// given, with `last` (the one just lost) moved to the end. Names that do not resolve are
/// reported beside.
pub(crate) async fn targets(
    servers: &[ServerAddr],
    last: Option<SocketAddr>,
    within: Duration,
) -> (Vec<Target>, Vec<String>) {
    let mut targets: Vec<Target> = Vec::new();
    let mut unresolved = Vec::new();
    for given in servers {
        match given.resolve(within).await {
            Ok(addrs) => {
                for addr in addrs {
                    if !targets.iter().any(|t| t.addr == addr) {
                        targets.push(Target { given: given.clone(), addr });
                    }
                }
            }
            Err(e) => unresolved.push(e),
        }
    }
    if let Some(i) = last.and_then(|last| targets.iter().position(|t| t.addr == last)) {
        let lost = targets.remove(i);
        targets.push(lost);
    }
    (targets, unresolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_addresses_as_text_then_ips_and_names_parse_and_show_as_given() {
        for text in ["127.0.0.1:7000", "[::1]:7000", "localhost:7000", "chat.example.org:443"] {
            let addr: ServerAddr = text.parse().expect(text);
            assert_eq!(addr.to_string(), text);
        }
        let from_socket = ServerAddr::from(SocketAddr::from(([10, 0, 0, 1], 9)));
        assert_eq!(from_socket.to_string(), "10.0.0.1:9");
        assert_eq!(ServerAddr::new("Chat.Example.ORG", 1).expect("name").to_string(), "chat.example.org:1");
        assert!(ServerAddr::new("localhost", 1).expect("name").is_loopback());
        assert!(!ServerAddr::new("chat.example.org", 1).expect("name").is_loopback());
    }

    #[test]
    fn given_bad_addresses_then_refused_with_what_is_wrong() {
        assert_eq!("chat".parse::<ServerAddr>(), Err(AddrError::Form("chat".into())));
        assert_eq!("::1:7000".parse::<ServerAddr>(), Err(AddrError::Form("::1:7000".into())));
        assert_eq!("chat:x".parse::<ServerAddr>(), Err(AddrError::Form("chat:x".into())));
        for host in ["", "a b", "-x.org", "a..b", "é.org"] {
            assert_eq!(ServerAddr::new(host, 1), Err(AddrError::Host(host.into())), "{host:?}");
        }
    }

    #[tokio::test]
    async fn given_a_lost_address_then_a_round_tries_it_last() {
        let servers: Vec<ServerAddr> =
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"].iter().map(|s| s.parse().expect("addr")).collect();
        let lost = SocketAddr::from(([127, 0, 0, 1], 1));
        let (round, unresolved) = targets(&servers, Some(lost), Duration::from_secs(1)).await;
        let ports: Vec<u16> = round.iter().map(|t| t.addr.port()).collect();
        assert_eq!((ports, unresolved.len()), (vec![2, 3, 1], 0));
    }
}
