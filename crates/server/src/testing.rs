//! Test utilities for this crate's and other crates' tests (feature `test-utils`): a
//! `redis-server` of the test's own, on a free loopback port, in a temporary dir, ended with it;
//! the same over TLS with a private CA made for the test ([`TestCa`]); and a Redis Cluster of
//! several such servers ([`RedisCluster`]).
//!
//! [`Redis::start`] (and the others) return `None` (and say so on stderr) when `redis-server` is
//! not installed: `scripts/test-deps` (which `.ci/run` runs) installs it, so in CI those tests
//! always run.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a server (or a cluster) may take to be ready.
const READY: Duration = Duration::from_secs(10);

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    l.local_addr().expect("addr").port()
}

fn installed(program: &str) -> bool {
    let found = std::process::Command::new(program).arg("--version").output();
    if !found.map(|o| o.status.success()).unwrap_or(false) {
        eprintln!("SKIPPED: {program} is not installed (apt-get install redis-server; .ci/run does)");
        return false;
    }
    true
}

/// A private CA, a server certificate it signed for `127.0.0.1` and `localhost`, and a client
/// certificate it signed, as PEM files in a temporary dir.
pub struct TestCa {
    dir: tempfile::TempDir,
    /// The CA's certificate, in PEM.
    pub ca_pem: String,
}

impl TestCa {
    /// A new CA and its certificates (ECDSA P-256).
    pub fn new() -> TestCa {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let dir = tempfile::tempdir().expect("tempdir");
        // A name of its own: another test CA is another issuer, as in the field.
        let name = format!("whatsap2p test CA {}", dir.path().display());
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA");
        let issue = |name: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
            let key = KeyPair::generate().expect("key");
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("params");
            params.extended_key_usages = usages;
            let cert = params.signed_by(&key, &ca).expect("certificate");
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).expect("write cert");
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).expect("write key");
        };
        // A cluster node shows its certificate as a client too (on the cluster bus, which always
        // asks for one).
        issue("server", vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth]);
        issue("client", vec![ExtendedKeyUsagePurpose::ClientAuth]);
        let ca_pem = ca.pem();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("write CA");
        TestCa { dir, ca_pem }
    }

    /// The CA's certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The client certificate and key files.
    pub fn client_files(&self) -> (PathBuf, PathBuf) {
        (self.dir.path().join("client.pem"), self.dir.path().join("client.key"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// How a test's redis-server is reached over TLS.
struct Tls {
    ca: TestCa,
    /// Whether it asks clients for a certificate (`--tls-auth-clients yes`).
    client_auth: bool,
}

/// A `redis-server` child of the test.
pub struct Redis {
    child: Option<Child>,
    /// Its loopback port (the TLS port, for one over TLS).
    pub port: u16,
    dir: tempfile::TempDir,
    aof: bool,
    tls: Option<Tls>,
}

impl Redis {
    /// A fresh redis-server (append-only file, fsync on every write, when `aof`), or `None` when
    /// the program is missing.
    pub async fn start(aof: bool) -> Option<Redis> {
        Self::start_with(aof, None).await
    }

    /// A fresh redis-server that speaks only TLS, with a certificate from a new [`TestCa`] (see
    /// [`Redis::ca`]); `client_auth`: it refuses clients without a certificate from that CA.
    pub async fn start_tls(client_auth: bool) -> Option<Redis> {
        Self::start_with(false, Some(Tls { ca: TestCa::new(), client_auth })).await
    }

    async fn start_with(aof: bool, tls: Option<Tls>) -> Option<Redis> {
        if !installed("redis-server") {
            return None;
        }
        let mut r =
            Redis { child: None, port: free_port(), dir: tempfile::tempdir().expect("tempdir"), aof, tls };
        r.spawn().await;
        Some(r)
    }

    async fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &port]),
            Some(Tls { ca, client_auth }) => command
                .args(["--port", "0", "--tls-port", &port])
                .arg("--tls-cert-file")
                .arg(ca.path("server.pem"))
                .arg("--tls-key-file")
                .arg(ca.path("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(ca.ca_file())
                .args(["--tls-auth-clients", if *client_auth { "yes" } else { "no" }]),
        };
        let child = command
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", if self.aof { "yes" } else { "no" }, "--appendfsync", "always"])
            .args(["--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        wait_listening(self.port).await;
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://` for one over TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA of one over TLS.
    pub fn ca(&self) -> Option<&TestCa> {
        self.tls.as_ref().map(|t| &t.ca)
    }

    /// Kills redis-server at once (SIGKILL: what a crash does; with AOF and `appendfsync always`
    /// every acknowledged write is on disk).
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts it again on the same port and dir.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Its data dir.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

async fn wait_listening(port: u16) {
    let t0 = Instant::now();
    while t0.elapsed() < READY {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("redis-server did not listen on {port} within {READY:?}");
}

/// A Redis Cluster of the test's own: primaries only (no replicas), each a `redis-server` on a free
/// loopback port with its cluster bus on another, in a temporary dir; its slots spread over them by
/// `redis-cli --cluster create`.
pub struct RedisCluster {
    children: Vec<Child>,
    /// The nodes' ports.
    pub ports: Vec<u16>,
    /// Their cluster bus ports.
    buses: Vec<u16>,
    /// Their dirs (with `nodes.conf`, which a restarted node reads to join the cluster again).
    dirs: Vec<tempfile::TempDir>,
    /// For a cluster over TLS (clients and the cluster bus alike): its CA.
    tls: Option<TestCa>,
}

impl RedisCluster {
    /// A cluster of `primaries` nodes (at least 3: `redis-cli` makes no smaller one), ready
    /// (`cluster_state:ok` on every node), or `None` when redis-server or redis-cli is missing.
    pub async fn start(primaries: usize) -> Option<RedisCluster> {
        Self::start_with(primaries, None).await
    }

    /// The same over TLS only (`rediss+cluster://`), with certificates from a new [`TestCa`] (see
    /// [`RedisCluster::ca`]).
    pub async fn start_tls(primaries: usize) -> Option<RedisCluster> {
        Self::start_with(primaries, Some(TestCa::new())).await
    }

    async fn start_with(primaries: usize, tls: Option<TestCa>) -> Option<RedisCluster> {
        if !installed("redis-server") || !installed("redis-cli") {
            return None;
        }
        let mut cluster = RedisCluster {
            children: Vec::new(),
            ports: (0..primaries).map(|_| free_port()).collect(),
            buses: (0..primaries).map(|_| free_port()).collect(),
            dirs: (0..primaries).map(|_| tempfile::tempdir().expect("tempdir")).collect(),
            tls,
        };
        cluster.spawn().await;
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let create = Command::new("redis-cli")
            .args(cluster.cli_tls())
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let created = tokio::time::timeout(READY, create)
            .await
            .expect("redis-cli --cluster create did not finish in time")
            .expect("running redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_ready().await;
        Some(cluster)
    }

    async fn spawn(&mut self) {
        for ((port, bus), dir) in self.ports.iter().zip(&self.buses).zip(&self.dirs) {
            let mut command = Command::new("redis-server");
            match &self.tls {
                None => command.args(["--port", &port.to_string()]),
                Some(ca) => command
                    .args(["--port", "0", "--tls-port", &port.to_string(), "--tls-cluster", "yes"])
                    .arg("--tls-cert-file")
                    .arg(ca.path("server.pem"))
                    .arg("--tls-key-file")
                    .arg(ca.path("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(ca.ca_file())
                    .args(["--tls-auth-clients", "no"]),
            };
            let child = command
                .args(["--cluster-port", &bus.to_string()])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "2000", "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "no", "--protected-mode", "no", "--daemonize", "no"])
                .args(["--loglevel", "warning"])
                .arg("--dir")
                .arg(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("starting redis-server");
            self.children.push(child);
        }
        for port in &self.ports {
            wait_listening(*port).await;
        }
    }

    async fn wait_ready(&self) {
        let t0 = Instant::now();
        for port in &self.ports {
            while !cluster_ok(*port, &self.cli_tls()).await {
                assert!(t0.elapsed() < READY, "the cluster was not ready within {READY:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Starts every node again (after [`RedisCluster::kill`]) on its ports and dir, and waits until
    /// the cluster is ready. No persistence: the nodes come back empty, in the same cluster.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
        self.wait_ready().await;
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,…` (`rediss+cluster://` over TLS).
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}+cluster://{}", nodes.join(","))
    }

    /// The CA of one over TLS.
    pub fn ca(&self) -> Option<&TestCa> {
        self.tls.as_ref()
    }

    /// `redis-cli`'s TLS arguments for this cluster (none without TLS).
    fn cli_tls(&self) -> Vec<std::ffi::OsString> {
        match &self.tls {
            None => Vec::new(),
            Some(ca) => vec!["--tls".into(), "--cacert".into(), ca.ca_file().into_os_string()],
        }
    }

    /// Kills every node at once.
    pub async fn kill(&mut self) {
        for mut c in self.children.drain(..) {
            let _ = c.kill().await;
        }
    }

    /// Runs `redis-cli -p PORT ARGS…` against the node on `port` and returns what it printed.
    pub async fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, &self.cli_tls(), args).await
    }
}

async fn cli(port: u16, tls: &[std::ffi::OsString], args: &[&str]) -> String {
    let run = Command::new("redis-cli")
        .args(tls)
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(READY, run)
        .await
        .expect("redis-cli did not finish in time")
        .expect("running redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the node on `port` says the cluster is ready and knows every slot.
async fn cluster_ok(port: u16, tls: &[std::ffi::OsString]) -> bool {
    let info = cli(port, tls, &["cluster", "info"]).await;
    info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
}
