//! A network lab for tests that must cross a real network: hosts in Linux network namespaces, a bridge
//! playing the internet, and Linux routers doing NAT the way home routers and carriers do.
//!
//! Every [`Lab`] has its own "internet" namespace holding a bridge on `203.0.113.0/24` (TEST-NET-3), so
//! labs of tests running in parallel never see each other. [`Lab::public_host`] puts a host straight
//! on it; [`Lab::router`] adds a NAT router with its own LAN (`10.K.0.0/24`), and [`Lab::host_behind`]
//! a host on that LAN. What the NAT does is the kernel's own:
//! - [`Nat::Cone`]: `MASQUERADE`, which keeps one public port per inside socket whatever the destination
//!   (endpoint-independent mapping) and lets in only replies (a port-restricted cone);
//! - [`Nat::Symmetric`]: `MASQUERADE --random-fully`, a new random public port per destination.
//!
//! Either way the router drops unsolicited inbound packets. [`Router::block_udp`] makes it drop all
//! forwarded UDP (a network where punching cannot work), [`Router::allow_udp`] undoes it.
//!
//! Veth ends are created directly inside their namespaces, so interface names are short and fixed per
//! namespace and nothing is left in the root namespace. Dropping the lab deletes its namespaces, which
//! deletes their interfaces; a lab of a process that died is removed by the next [`Lab::new`].
//!
//! Needs root and iproute2 + iptables; [`Lab::new`] says precisely what is missing, so a test can
//! report that it was skipped, and why.

#![forbid(unsafe_code)]

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where namespaces live; each lab's names start with [`PREFIX`] and the owning process id.
const NETNS_DIR: &str = "/run/netns";
const PREFIX: &str = "w2plab";

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// Why the lab could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The machine cannot host a lab (not root, a tool missing): tests should skip, saying this.
    #[error("network lab unavailable: {0}")]
    Unavailable(String),
    /// A command that builds the lab failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A command could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What kind of NAT a router does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// Linux `MASQUERADE`: endpoint-independent mapping, replies only (port-restricted cone).
    Cone,
    /// Linux `MASQUERADE --random-fully`: a new public port per destination (symmetric).
    Symmetric,
}

/// A host: a network namespace with one address.
#[derive(Clone, Debug)]
pub struct Host {
    /// The name the test gave it.
    pub name: String,
    /// Its address (public for a public host, on the LAN behind a router otherwise).
    pub ip: Ipv4Addr,
    ns: String,
}

/// A NAT router between the internet bridge and a LAN of its own.
#[derive(Debug)]
pub struct Router {
    /// The name the test gave it.
    pub name: String,
    /// Its address on the internet: what peers see hosts behind it as.
    pub public_ip: Ipv4Addr,
    /// Its address on its LAN (the hosts' gateway); the LAN is the /24 around it.
    pub lan_ip: Ipv4Addr,
    /// The kind of NAT it does.
    pub nat: Nat,
    ns: String,
    hosts: u8,
}

/// A lab: its namespaces exist until it is dropped.
#[derive(Debug)]
pub struct Lab {
    id: String,
    inet: String,
    namespaces: Vec<String>,
    public_hosts: u8,
    routers: u8,
    ports: u32,
}

/// The internet's prefix.
const INET: [u8; 3] = [203, 0, 113];

impl Lab {
    /// An empty internet: a bridge in a namespace of its own.
    pub fn new() -> Result<Self, LabError> {
        check_machine()?;
        remove_stale_labs();
        let id = format!("{PREFIX}-{}-{}", std::process::id(), NEXT_LAB.fetch_add(1, Ordering::Relaxed));
        let mut lab = Self {
            inet: format!("{id}-inet"),
            id,
            namespaces: Vec::new(),
            public_hosts: 0,
            routers: 0,
            ports: 0,
        };
        lab.add_namespace(&lab.inet.clone())?;
        lab.exec(&lab.inet, &["ip", "link", "add", "br0", "type", "bridge"])?;
        lab.exec(&lab.inet, &["ip", "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    /// A host with a public address on the internet bridge.
    pub fn public_host(&mut self, name: &str) -> Result<Host, LabError> {
        self.public_hosts += 1;
        let ip = Ipv4Addr::new(INET[0], INET[1], INET[2], self.public_hosts);
        let ns = format!("{}-{name}", self.id);
        self.add_namespace(&ns)?;
        self.plug_into_internet(&ns, "eth0", ip)?;
        self.exec(&ns, &["ip", "route", "add", "default", "dev", "eth0"])?;
        Ok(Host { name: name.to_owned(), ip, ns })
    }

    /// A NAT router with a public address and a LAN of its own.
    pub fn router(&mut self, name: &str, nat: Nat) -> Result<Router, LabError> {
        self.routers += 1;
        let k = self.routers;
        let public_ip = Ipv4Addr::new(INET[0], INET[1], INET[2], 100 + k);
        let lan_ip = Ipv4Addr::new(10, k, 0, 1);
        let ns = format!("{}-{name}", self.id);
        self.add_namespace(&ns)?;
        self.plug_into_internet(&ns, "wan", public_ip)?;
        let sh = |args: &[&str]| self.exec(&ns, args);
        sh(&["ip", "link", "add", "lan", "type", "bridge"])?;
        sh(&["ip", "addr", "add", &format!("{lan_ip}/24"), "dev", "lan"])?;
        sh(&["ip", "link", "set", "lan", "up"])?;
        sh(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let mut masquerade =
            vec!["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"];
        if nat == Nat::Symmetric {
            masquerade.push("--random-fully");
        }
        sh(&masquerade)?;
        // Replies in, nothing unsolicited: what every home router does. For packets to the router
        // itself too: accepting them would make the kernel record an unsolicited packet to a public
        // port as a flow of its own (answered by an ICMP error), and the LAN host's own later
        // packets to that sender would then leave by another public port, so both sides of a
        // simultaneous UDP open would fail.
        for chain in ["FORWARD", "INPUT"] {
            let replies = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"];
            sh(&[&["iptables", "-A", chain, "-i", "wan"][..], &replies[..]].concat())?;
            sh(&["iptables", "-A", chain, "-i", "wan", "-j", "DROP"])?;
        }
        Ok(Router { name: name.to_owned(), public_ip, lan_ip, nat, ns, hosts: 1 })
    }

    /// A host on `router`'s LAN, with the router as its gateway.
    pub fn host_behind(&mut self, router: &mut Router, name: &str) -> Result<Host, LabError> {
        router.hosts += 1;
        let [a, b, c, _] = router.lan_ip.octets();
        let ip = Ipv4Addr::new(a, b, c, router.hosts);
        let ns = format!("{}-{name}", self.id);
        self.add_namespace(&ns)?;
        let port = self.next_port();
        self.veth(&ns, "eth0", &router.ns, &port)?;
        self.exec(&router.ns, &["ip", "link", "set", &port, "master", "lan"])?;
        self.exec(&router.ns, &["ip", "link", "set", &port, "up"])?;
        self.exec(&ns, &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        self.exec(&ns, &["ip", "link", "set", "eth0", "up"])?;
        self.exec(&ns, &["ip", "route", "add", "default", "via", &router.lan_ip.to_string()])?;
        Ok(Host { name: name.to_owned(), ip, ns })
    }

    /// Runs `args` inside `router`.
    pub fn on_router(&self, router: &Router, args: &[&str]) -> Result<String, LabError> {
        self.exec(&router.ns, args)
    }

    fn next_port(&mut self) -> String {
        self.ports += 1;
        format!("p{}", self.ports)
    }

    fn add_namespace(&mut self, ns: &str) -> Result<(), LabError> {
        run(&["ip", "netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        self.exec(ns, &["ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// A veth pair with `a` in namespace `ns_a` and `b` in `ns_b`, made in place.
    fn veth(&self, ns_a: &str, a: &str, ns_b: &str, b: &str) -> Result<(), LabError> {
        run(&["ip", "link", "add", a, "netns", ns_a, "type", "veth", "peer", "name", b, "netns", ns_b])
            .map(drop)
    }

    fn plug_into_internet(&mut self, ns: &str, dev: &str, ip: Ipv4Addr) -> Result<(), LabError> {
        let port = self.next_port();
        self.veth(ns, dev, &self.inet, &port)?;
        self.exec(&self.inet, &["ip", "link", "set", &port, "master", "br0"])?;
        self.exec(&self.inet, &["ip", "link", "set", &port, "up"])?;
        self.exec(ns, &["ip", "addr", "add", &format!("{ip}/24"), "dev", dev])?;
        self.exec(ns, &["ip", "link", "set", dev, "up"])?;
        Ok(())
    }

    fn exec(&self, ns: &str, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        run(&full)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

impl Router {
    /// Drops every forwarded UDP packet: hole punching cannot work through this router.
    pub fn block_udp(&self) -> Result<(), LabError> {
        in_ns(&self.ns, &["iptables", "-I", "FORWARD", "1", "-p", "udp", "-j", "DROP"]).map(drop)
    }

    /// Undoes [`Router::block_udp`] (and forgets the UDP mappings made meanwhile).
    pub fn allow_udp(&self) -> Result<(), LabError> {
        in_ns(&self.ns, &["iptables", "-D", "FORWARD", "-p", "udp", "-j", "DROP"])?;
        // Entries made while blocked would keep matching their (dropped) flows.
        let _ = in_ns(&self.ns, &["conntrack", "-D", "-p", "udp"]);
        Ok(())
    }
}

impl Host {
    /// A command that runs `program` inside this host.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// The same, as a Tokio command (for tests that await children).
    pub fn tokio_command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        tokio::process::Command::from(self.command(program))
    }

    /// Runs `args` inside this host and returns its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String, LabError> {
        in_ns(&self.ns, args)
    }
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

fn run(args: &[&str]) -> Result<String, LabError> {
    let command = args.join(" ");
    let out: Output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|source| LabError::Spawn { command: command.clone(), source })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(LabError::Command { command, stderr });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Root, `ip` and `iptables` (with its conntrack match) are what a lab needs.
fn check_machine() -> Result<(), LabError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next());
    if uid != Some("0") {
        return Err(LabError::Unavailable("not running as root (network namespaces need it)".into()));
    }
    for tool in ["ip", "iptables", "conntrack"] {
        let found = Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
            || Command::new(tool).arg("-V").output().map(|o| o.status.success()).unwrap_or(false);
        if !found {
            return Err(LabError::Unavailable(format!(
                "`{tool}` is not installed (apt-get install iproute2 iptables conntrack)"
            )));
        }
    }
    Ok(())
}

/// Deletes the namespaces of labs whose process is gone (a test that was killed).
fn remove_stale_labs() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else { continue };
        let Some(pid) = rest.split('-').next() else { continue };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run(&["ip", "netns", "del", &name]);
        }
    }
}
