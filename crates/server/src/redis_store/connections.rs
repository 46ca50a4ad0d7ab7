//! The connections of a [`super::RedisStore`], for one Redis or a cluster alike.
//!
//! - [`Commands`]: where commands and scripts go. One node's `ConnectionManager`, or a cluster's
//!   connection, which routes each command to the primary of its key's slot. Both multiplex every
//!   session's commands over one connection per node and reconnect by themselves.
//! - [`Listener`]s: RESP3 connections that carry subscriptions, made again after a reconnection,
//!   whose pushes go to a [`super::Subscriber`]. One Redis: one listener for both channels. A
//!   cluster: the presence channel on the cluster's own connection (a `PUBLISH` reaches every node,
//!   so one subscription hears all; the cluster client moves it when slots move), and one listener
//!   per primary for its expiry notifications, which a node only sends to its own subscribers.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A connection to one node or to a cluster.
#[derive(Clone)]
pub(crate) enum Commands {
    /// One node (reconnects by itself).
    Node(ConnectionManager),
    /// A cluster (routes by slot, follows the topology, reconnects by itself).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A RESP3 connection that holds subscriptions.
pub(crate) struct Listener {
    /// Its connection (pushes go to the subscriber given when it was made).
    conn: Commands,
    /// The node it is on (`HOST:PORT`), or the cluster's description: for the log.
    pub(crate) at: String,
    /// The channels it subscribes to.
    channels: Vec<String>,
    /// Whether it hears its node's expiries, so it also keeps the node's `notify-keyspace-events`
    /// on (a cluster's own connection does not: it has no one node).
    pub(crate) notifications: bool,
    /// Whether its subscriptions were made; the connection makes them again after a reconnection.
    pub(crate) subscribed: bool,
}

impl Listener {
    /// A listener on `conn` for `channels`.
    pub(crate) fn new(conn: Commands, at: String, channels: Vec<String>, notifications: bool) -> Self {
        Self { conn, at, channels, notifications, subscribed: false }
    }

    /// Its connection, for a ping or a `CONFIG`.
    pub(crate) fn conn(&mut self) -> &mut Commands {
        &mut self.conn
    }

    /// Subscribes to its channels (once: the connection renews them after a reconnection).
    pub(crate) async fn subscribe(&mut self) -> RedisResult<()> {
        if self.subscribed {
            return Ok(());
        }
        for channel in &self.channels {
            match &mut self.conn {
                Commands::Node(c) => c.subscribe(channel).await?,
                Commands::Cluster(c) => c.subscribe(channel).await?,
            }
        }
        self.subscribed = true;
        Ok(())
    }
}

/// The primaries in the text of `CLUSTER NODES` (`HOST:PORT` each, sorted): the nodes that hold
/// keys, and so send expiry notifications. Nodes marked failing or without an address are left out.
pub(crate) fn primaries(cluster_nodes: &str) -> Vec<String> {
    let mut out: Vec<String> = cluster_nodes
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_id, addr, flags) = (fields.next()?, fields.next()?, fields.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master")
                || flags.iter().any(|f| matches!(*f, "fail" | "noaddr" | "handshake"))
            {
                return None;
            }
            // `IP:PORT@CPORT[,HOSTNAME]`.
            let addr = addr.split(['@', ',']).next()?;
            (!addr.starts_with(':')).then(|| addr.to_owned())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_cluster_nodes_then_the_live_primaries_are_found() {
        let text = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 master,fail - 0 1426238316232 5 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460
a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2 :0@0 master,noaddr - 0 0 0 disconnected
";
        assert_eq!(primaries(text), vec!["127.0.0.1:30001", "127.0.0.1:30002", "127.0.0.1:30003"]);
        assert!(primaries("").is_empty());
    }
}
