//! What `--store` names and how to trust it: one Redis (`redis://`, or `rediss://` over TLS) or a
//! Redis Cluster (`redis+cluster://HOST:PORT[,HOST:PORT…]`, `rediss+cluster://…`), and the PEM
//! files of a private CA and of this instance's own certificate for a `rediss` store.

use std::path::{Path, PathBuf};

/// Where the store is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreAddress {
    /// One Redis (or whatever answers for one at that address: a proxy, a Sentinel-managed
    /// primary behind one name): its URL, `redis[s]://[[USER]:PASSWORD@]HOST:PORT[/DB]`.
    Node(String),
    /// A Redis Cluster: the URLs of the nodes given (`redis[s]://[[USER]:PASSWORD@]HOST:PORT`), from
    /// which the client learns the others. Database 0 only: a cluster has no other.
    Cluster(Vec<String>),
}

/// Why a `--store` value is not an address this build can use. Never repeats the value: it may hold
/// a password.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not one of the four schemes.
    #[error("the store's address starts with redis://, rediss://, redis+cluster:// or rediss+cluster://")]
    Scheme,
    /// A cluster address with a database other than 0.
    #[error("a Redis Cluster has only database 0: give no /DB in a redis+cluster:// address")]
    ClusterDb,
    /// A cluster address naming no node.
    #[error("a redis+cluster:// address names at least one HOST:PORT")]
    NoNode,
}

impl std::str::FromStr for StoreAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, AddressError> {
        let (scheme, rest) = s.split_once("://").ok_or(AddressError::Scheme)?;
        let node_scheme = match scheme {
            "redis" | "rediss" => return Ok(Self::Node(s.to_owned())),
            "redis+cluster" => "redis",
            "rediss+cluster" => "rediss",
            _ => return Err(AddressError::Scheme),
        };
        // The credentials apply to every node; the last `@` ends them (a password may hold one).
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
            None => (String::new(), rest),
        };
        let (hosts, db) = hosts.split_once('/').unwrap_or((hosts, ""));
        if !matches!(db, "" | "0") {
            return Err(AddressError::ClusterDb);
        }
        let nodes: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| format!("{node_scheme}://{credentials}{h}"))
            .collect();
        if nodes.is_empty() {
            return Err(AddressError::NoNode);
        }
        Ok(Self::Cluster(nodes))
    }
}

impl StoreAddress {
    /// Whether it is reached over TLS (`rediss`).
    pub fn is_tls(&self) -> bool {
        match self {
            Self::Node(url) => url.starts_with("rediss://"),
            Self::Cluster(nodes) => nodes.iter().all(|n| n.starts_with("rediss://")),
        }
    }

    /// The hosts and ports, for the log: never the credentials.
    pub fn describe(&self) -> String {
        let host = |url: &str| {
            let rest = url.split_once("://").map_or(url, |(_, r)| r);
            let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            rest.split(['/', '?']).next().unwrap_or_default().to_owned()
        };
        match self {
            Self::Node(url) => host(url),
            Self::Cluster(nodes) => {
                format!("cluster {}", nodes.iter().map(|n| host(n)).collect::<Vec<_>>().join(","))
            }
        }
    }
}

/// Certificates for a `rediss` store beyond the system's: the CA that signed Redis's certificate (a
/// private one), and this instance's certificate and key, for a Redis that asks its clients for one
/// (`tls-auth-clients yes`). Empty: the system's roots, and no client certificate.
#[derive(Clone, Default)]
pub struct StoreTls {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for StoreTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A private key is never printed.
        f.debug_struct("StoreTls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

/// Why the certificates could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file that should hold certificates holds no PEM certificate.
    #[error("{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no PEM private key.
    #[error("{path} holds no PEM private key")]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("a client certificate goes with its key: give both --store-cert and --store-key")]
    Half,
}

impl StoreTls {
    /// Reads a CA file (certificates in PEM; trusted instead of the system's roots), and a client
    /// certificate chain and its key (PEM), each optional. Checked here, so that a wrong file is
    /// said at start rather than as a failing connection.
    pub fn from_files(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read { path: path.to_owned(), source })
        };
        let certificates = |path: &Path| {
            let pem = read(path)?;
            if !contains(&pem, b"-----BEGIN CERTIFICATE-----") {
                return Err(TlsError::NoCertificate { path: path.to_owned() });
            }
            Ok(pem)
        };
        let ca = ca.map(certificates).transpose()?;
        let client = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let key_pem = read(key)?;
                if !contains(&key_pem, b"PRIVATE KEY-----") {
                    return Err(TlsError::NoKey { path: key.to_owned() });
                }
                Some((certificates(cert)?, key_pem))
            }
            _ => return Err(TlsError::Half),
        };
        Ok(Self { ca, client })
    }

    /// From PEM text already in memory (a CA's certificates), for tests and embedders.
    pub fn with_ca(ca_pem: impl Into<Vec<u8>>) -> Self {
        Self { ca: Some(ca_pem.into()), client: None }
    }

    /// Whether it adds nothing to the defaults.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.client.is_none()
    }

    /// What the `redis` crate takes; `None` for the defaults.
    pub(crate) fn certificates(&self) -> Option<redis::TlsCertificates> {
        (!self.is_empty()).then(|| redis::TlsCertificates {
            client_tls: self.client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: self.ca.clone(),
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_single_node_urls_then_they_are_kept_as_they_are() {
        for url in ["redis://127.0.0.1:6379/2", "rediss://:pw@redis.example:6380"] {
            assert_eq!(url.parse(), Ok(StoreAddress::Node(url.to_owned())));
        }
        assert!(!StoreAddress::Node("redis://h:1".into()).is_tls());
        assert!(StoreAddress::Node("rediss://h:1".into()).is_tls());
    }

    #[test]
    fn given_a_cluster_url_then_each_node_gets_the_scheme_and_credentials() {
        let a: StoreAddress =
            "rediss+cluster://u:p@w@10.0.0.1:7000,10.0.0.2:7000, 10.0.0.3:7001/0".parse().expect("cluster");
        assert_eq!(
            a,
            StoreAddress::Cluster(vec![
                "rediss://u:p@w@10.0.0.1:7000".into(),
                "rediss://u:p@w@10.0.0.2:7000".into(),
                "rediss://u:p@w@10.0.0.3:7001".into(),
            ])
        );
        assert!(a.is_tls());
        assert_eq!(a.describe(), "cluster 10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7001");
        let plain: StoreAddress = "redis+cluster://h1:1".parse().expect("one node");
        assert_eq!(plain, StoreAddress::Cluster(vec!["redis://h1:1".into()]));
        assert!(!plain.is_tls());
    }

    #[test]
    fn given_bad_addresses_then_errors_say_why_without_the_password() {
        assert_eq!("http://h:1".parse::<StoreAddress>(), Err(AddressError::Scheme));
        assert_eq!("h:1".parse::<StoreAddress>(), Err(AddressError::Scheme));
        assert_eq!("redis+cluster://h:1/3".parse::<StoreAddress>(), Err(AddressError::ClusterDb));
        assert_eq!("redis+cluster://:secret@,".parse::<StoreAddress>(), Err(AddressError::NoNode));
        assert!(!AddressError::Scheme.to_string().contains("secret"));
        assert_eq!(StoreAddress::Node("redis://:secret@h:1/2".into()).describe(), "h:1");
    }

    #[test]
    fn given_certificate_files_then_they_are_checked_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca, key, junk) = (dir.path().join("ca.pem"), dir.path().join("key.pem"), dir.path().join("j"));
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").expect("write");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .expect("write");
        std::fs::write(&junk, "not pem").expect("write");
        let tls = StoreTls::from_files(Some(&ca), Some(&ca), Some(&key)).expect("files");
        assert!(!tls.is_empty() && tls.certificates().is_some());
        assert!(StoreTls::from_files(None, None, None).expect("none").certificates().is_none());
        assert!(matches!(StoreTls::from_files(Some(&junk), None, None), Err(TlsError::NoCertificate { .. })));
        assert!(matches!(StoreTls::from_files(None, Some(&ca), Some(&junk)), Err(TlsError::NoKey { .. })));
        assert!(matches!(StoreTls::from_files(None, Some(&ca), None), Err(TlsError::Half)));
        let missing = StoreTls::from_files(Some(&dir.path().join("nope")), None, None);
        assert!(matches!(missing, Err(TlsError::Read { .. })));
    }
}
