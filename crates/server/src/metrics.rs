//! What operators watch: counters and gauges of this instance in the Prometheus text format, served
//! on an address of their own (`--metrics`, off by default).
//!
//! Every instance counts its own sessions; a directory of several instances is the sum of them in
//! Prometheus. Counting costs an atomic add per event, so it runs whether or not anyone scrapes.
//! The relay (in this process, or alone with `--relay-only`) counts here too, through
//! [`whatsap2p_relay::Observer`].

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use whatsap2p_proto::nat::RelayStatus;
use whatsap2p_relay::{Flow, ProbeOutcome};

/// Why the directory refused a session or a registration.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Refusal {
    /// The number is bound to another identity key.
    NumberTaken,
    /// The store could not record the binding or the presence (Redis unreachable).
    StoreUnavailable,
    /// Every session slot of the instance is taken.
    Full,
    /// The handshake failed or timed out (wrong version, bad proof, garbage).
    Handshake,
    /// A newer session of the same number replaced this one.
    Replaced,
    /// The connection's address had as many connections open as it may.
    SessionsPerAddress,
    /// The connection's address had as many handshakes in progress as it may.
    HandshakesPerAddress,
    /// A lookup over the lookups per second of its number or address.
    LookupRate,
    /// A lookup or watch over the distinct numbers per day of its number or address.
    DistinctLookups,
    /// A registration of a new number over its address's per day.
    NewNumbers,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: Refusal,
}

/// What became of a UDP datagram on a probe port (the directory's or the relay's).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
enum Probe {
    Answered,
    UnknownToken,
    Limited,
    Ignored,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: Probe,
}

/// Why the relay refused a connection (its `RelayStatus`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
enum RelayRefusal {
    BadTicket,
    Expired,
    Used,
    Busy,
    NoPartner,
    BadPreamble,
    Other,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: RelayRefusal,
}

/// What a client asked the directory for, to reach another one (version 3).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Meeting {
    /// An `Introduce` answered with the other side's candidates (and `Introduced` sent to it).
    Introduced,
    /// A `RelayRequest` answered with a ticket (and the same offer sent to the other side).
    RelayOffered,
    /// Either, refused: the other side offline or without candidates, or no relay.
    Unreachable,
    /// Either, refused: the asking session is over its rate.
    Limited,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MeetingLabel {
    result: Meeting,
}

/// The instance's metrics.
pub struct Metrics {
    registry: Registry,
    online: Gauge,
    sessions: Gauge,
    registrations: Counter,
    lookups: Counter,
    refusals: Family<ReasonLabel, Counter>,
    pushes_sent: Counter,
    pushes_dropped: Counter,
    changes_dropped: Counter,
    store_errors: Counter,
    store_up: Gauge,
    store_round_trip: Histogram,
    probes: Family<OutcomeLabel, Counter>,
    meetings: Family<MeetingLabel, Counter>,
    relay_pairs: Gauge,
    relay_paired: Counter,
    relay_bytes: Counter,
    relay_refusals: Family<StatusLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics of an instance with the embedded stores, at zero, under `whatsap2p_`.
    pub fn new() -> Self {
        Self::build(false)
    }

    /// The metrics of an instance on a shared store: those of [`Metrics::new`] and the store's.
    pub fn with_shared_store() -> Self {
        Self::build(true)
    }

    fn build(shared_store: bool) -> Self {
        let mut registry = Registry::with_prefix("whatsap2p");
        let m = Self {
            online: Gauge::default(),
            sessions: Gauge::default(),
            registrations: Counter::default(),
            lookups: Counter::default(),
            refusals: Family::default(),
            pushes_sent: Counter::default(),
            pushes_dropped: Counter::default(),
            changes_dropped: Counter::default(),
            store_errors: Counter::default(),
            store_up: Gauge::default(),
            // 50 µs to about 1.6 s.
            store_round_trip: Histogram::new(exponential_buckets(50e-6, 2.0, 16)),
            probes: Family::default(),
            meetings: Family::default(),
            relay_pairs: Gauge::default(),
            relay_paired: Counter::default(),
            relay_bytes: Counter::default(),
            relay_refusals: Family::default(),
            registry: Registry::default(),
        };
        registry.register("online_users", "Registered sessions on this instance", m.online.clone());
        registry.register("sessions", "Open sessions on this instance", m.sessions.clone());
        registry.register("registrations", "Registrations accepted", m.registrations.clone());
        registry.register("lookups", "Lookups answered", m.lookups.clone());
        registry.register(
            "refusals",
            "Connections, sessions, registrations or requests refused, by reason",
            m.refusals.clone(),
        );
        registry.register(
            "presence_pushes_sent",
            "Presence pushes written to watchers",
            m.pushes_sent.clone(),
        );
        registry.register(
            "presence_pushes_dropped",
            "Presence pushes dropped because a watcher's queue was full",
            m.pushes_dropped.clone(),
        );
        registry.register(
            "store_errors",
            "Failed operations of the shared store (Redis)",
            m.store_errors.clone(),
        );
        registry.register("probes", "UDP datagrams on a probe port, by outcome", m.probes.clone());
        registry.register(
            "meetings",
            "Introductions and relay offers asked for, by result",
            m.meetings.clone(),
        );
        registry.register("relay_pairs", "Relay pairs piping now", m.relay_pairs.clone());
        registry.register("relay_paired", "Relay pairs made", m.relay_paired.clone());
        registry.register("relay_bytes", "Bytes piped by the relay, both ways", m.relay_bytes.clone());
        registry.register(
            "relay_refusals",
            "Relay connections refused, by the status they were answered",
            m.relay_refusals.clone(),
        );
        if !shared_store {
            return Self { registry, ..m };
        }
        registry.register(
            "store_changes_dropped",
            "Presence changes from the shared store dropped because this instance fell behind",
            m.changes_dropped.clone(),
        );
        registry.register("store_up", "1 while the store answers, 0 while it does not", m.store_up.clone());
        registry.register(
            "store_round_trip_seconds",
            "Round-trip time of the store's health check",
            m.store_round_trip.clone(),
        );
        Self { registry, ..m }
    }

    /// A session opened (`+1`) or closed (`-1`).
    pub fn session_opened(&self, opened: bool) {
        if opened {
            self.sessions.inc();
        } else {
            self.sessions.dec();
        }
    }

    /// A session registered for the first time.
    pub fn registered(&self) {
        self.registrations.inc();
        self.online.inc();
    }

    /// A registered session ended.
    pub fn went_offline(&self) {
        self.online.dec();
    }

    /// `n` lookups were answered.
    pub fn looked_up(&self, n: u64) {
        self.lookups.inc_by(n);
    }

    /// Something was refused.
    pub fn refused(&self, reason: Refusal) {
        self.refusals.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// A presence push was written (`sent`) or dropped.
    pub fn pushes(&self, sent: u64, dropped: u64) {
        self.pushes_sent.inc_by(sent);
        self.pushes_dropped.inc_by(dropped);
    }

    /// A change from the shared store was lost on the way to the sessions.
    pub fn change_dropped(&self) {
        self.changes_dropped.inc();
    }

    /// A store operation failed.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// The store answered a health check in `rtt`, or (`None`) did not.
    pub fn store_checked(&self, rtt: Option<Duration>) {
        match rtt {
            Some(rtt) => {
                self.store_up.set(1);
                self.store_round_trip.observe(rtt.as_secs_f64());
            }
            None => {
                self.store_up.set(0);
            }
        }
    }

    /// An introduction or relay request ended so.
    pub fn met(&self, result: Meeting) {
        self.meetings.get_or_create(&MeetingLabel { result }).inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl whatsap2p_relay::Observer for Metrics {
    fn probe(&self, outcome: ProbeOutcome) {
        let outcome = match outcome {
            ProbeOutcome::Answered => Probe::Answered,
            ProbeOutcome::UnknownToken => Probe::UnknownToken,
            ProbeOutcome::Limited => Probe::Limited,
            ProbeOutcome::Ignored => Probe::Ignored,
        };
        self.probes.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    fn relay_refused(&self, status: RelayStatus) {
        let status = match status {
            RelayStatus::BadTicket => RelayRefusal::BadTicket,
            RelayStatus::Expired => RelayRefusal::Expired,
            RelayStatus::Used => RelayRefusal::Used,
            RelayStatus::Busy => RelayRefusal::Busy,
            RelayStatus::NoPartner => RelayRefusal::NoPartner,
            RelayStatus::BadPreamble => RelayRefusal::BadPreamble,
            _ => RelayRefusal::Other,
        };
        self.relay_refusals.get_or_create(&StatusLabel { status }).inc();
    }

    fn relay_paired(&self) {
        self.relay_paired.inc();
        self.relay_pairs.inc();
    }

    fn relay_ended(&self, flow: &Flow) {
        self.relay_pairs.dec();
        self.relay_bytes.inc_by(flow.first_to_second + flow.second_to_first);
    }
}

/// Scrapes served at once; more wait for the listener's backlog.
const MAX_SCRAPES: usize = 8;
/// Most bytes of a request read before answering.
const MAX_REQUEST: usize = 4096;
/// How long a scraper has to send its request and take the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` on `listener` until `cancel`. Anything else gets a 404.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let permits = Arc::new(Semaphore::new(MAX_SCRAPES));
    let mut scrapes = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = scrapes.join_next(), if !scrapes.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, addr) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!("metrics: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    debug!("metrics: too many scrapes at once, dropping {addr}");
                    continue;
                };
                let metrics = metrics.clone();
                scrapes.spawn(async move {
                    let _permit = permit;
                    if tokio::time::timeout(SCRAPE_TIMEOUT, answer(stream, &metrics)).await.is_err() {
                        debug!("metrics: scrape from {addr} timed out");
                    }
                });
            }
        }
    }
    scrapes.shutdown().await;
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut request = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let path = request.split(|b| *b == b' ').nth(1).unwrap_or_default();
    let (status, body) = if request.starts_with(b"GET ") && path == b"/metrics" {
        ("200 OK", metrics.render())
    } else {
        ("404 Not Found", "not found; metrics are at /metrics\n".to_owned())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn given_a_scrape_then_counters_come_back_by_name_and_other_paths_get_404() {
        let metrics = Arc::new(Metrics::new());
        metrics.refused(Refusal::NumberTaken);
        metrics.registered();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(listener, metrics, cancel.clone()));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let page = get("/metrics").await;
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        assert!(page.contains("whatsap2p_refusals_total{reason=\"NumberTaken\"} 1"), "{page}");
        assert!(page.contains("whatsap2p_online_users 1"), "{page}");
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
        cancel.cancel();
        server.await.expect("join");
    }
}
