//! The broker nodes a service may connect to: `POSTLINE_AMQP_URL` holds one
//! URL or a comma-separated list of them (the nodes of a RabbitMQ cluster).
//!
//! The list is parsed and checked once, in configuration. A service connects
//! to the first node that answers, trying them in turn; when the connection it
//! had is lost, the next attempt starts with the node after that one, so a
//! dead node is tried last rather than first. The rotation is a pure value
//! ([`Rotation`]); [`BrokerConnector`] applies it to real connections.

use crate::runtime::backoff::{self, Backoff};
use lapin::Connection;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// One broker node: its URL (which may carry credentials) and a label safe to log.
#[derive(Clone, PartialEq, Eq)]
struct BrokerNode {
    url: String,
    label: String,
}

/// A non-empty list of broker node URLs, checked.
///
/// `Debug` and `Display` show the nodes without credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerNodes {
    nodes: Vec<BrokerNode>,
}

/// Why a `POSTLINE_AMQP_URL` value was refused. Never contains credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerNodesError {
    /// Nothing but separators and spaces.
    #[error("no broker URL given")]
    Empty,
    /// One entry of the list is empty (e.g. `a,,b`).
    #[error("entry {position} of the list is empty")]
    EmptyEntry {
        /// 1-based position in the list.
        position: usize,
    },
    /// One entry is not a usable AMQP URL.
    #[error("entry {position} of the list is not a usable AMQP URL: {reason}")]
    Invalid {
        /// 1-based position in the list.
        position: usize,
        /// What is wrong with it (no part of the URL itself).
        reason: String,
    },
}

impl FromStr for BrokerNodes {
    type Err = BrokerNodesError;

    fn from_str(list: &str) -> Result<Self, Self::Err> {
        if list.split(',').all(|entry| entry.trim().is_empty()) {
            return Err(BrokerNodesError::Empty);
        }
        let nodes = list
            .split(',')
            .enumerate()
            .map(|(index, entry)| parse_node(index + 1, entry.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { nodes })
    }
}

fn parse_node(position: usize, entry: &str) -> Result<BrokerNode, BrokerNodesError> {
    if entry.is_empty() {
        return Err(BrokerNodesError::EmptyEntry { position });
    }
    let invalid = |reason: String| BrokerNodesError::Invalid { position, reason };
    // url's messages never quote the input; lapin's URI parser's sometimes do,
    // so it runs second and its message is not passed on.
    let parsed = url::Url::parse(entry).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "amqp" | "amqps") {
        return Err(invalid(format!(
            "scheme {:?} is neither amqp nor amqps",
            parsed.scheme()
        )));
    }
    let host = match parsed.host_str() {
        Some(host) if !host.is_empty() => host,
        _ => return Err(invalid("no host".into())),
    };
    lapin::uri::AMQPUri::from_str(entry).map_err(|_| {
        invalid("refused by the AMQP URI parser (check the query parameters)".into())
    })?;
    let port = parsed
        .port()
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    let label = format!("{}://{host}{port}{}", parsed.scheme(), parsed.path());
    Ok(BrokerNode {
        url: entry.to_string(),
        label,
    })
}

impl BrokerNodes {
    /// How many nodes there are (at least one).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a list has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The URL of node `index`, credentials included: for connecting, never for logs.
    pub fn url(&self, index: usize) -> Option<&str> {
        self.nodes.get(index).map(|node| node.url.as_str())
    }

    /// Node `index` without credentials, for logs and errors.
    pub fn label(&self, index: usize) -> Option<&str> {
        self.nodes.get(index).map(|node| node.label.as_str())
    }

    /// The list as `POSTLINE_AMQP_URL` takes it, credentials included: for
    /// handing to a child process, never for logs.
    pub fn to_env_value(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl fmt::Display for BrokerNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<&str> = self.nodes.iter().map(|node| node.label.as_str()).collect();
        f.write_str(&labels.join(","))
    }
}

impl fmt::Debug for BrokerNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerNodes({self})")
    }
}

/// Which node to try first: a pure value, so the rule can be tested alone.
///
/// Attempts go round the list starting at `first`. A node that refuses moves
/// `first` past it; a node that accepts becomes `first` (reconnecting after a
/// channel error goes back to the same node); losing the connection to the
/// node in use moves `first` past that node, so the next round tries the
/// others before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    first: usize,
    current: Option<usize>,
}

impl Rotation {
    /// The order in which to try `len` nodes now.
    pub fn order(&self, len: usize) -> Vec<usize> {
        (0..len).map(|step| (self.first + step) % len).collect()
    }

    /// Node `node` accepted a connection.
    pub fn connected(&mut self, node: usize) {
        self.first = node;
        self.current = Some(node);
    }

    /// Node `node` refused a connection (or did not answer in time).
    pub fn refused(&mut self, node: usize, len: usize) {
        if len > 0 && self.first == node {
            self.first = (node + 1) % len;
        }
    }

    /// The connection to the node in use was lost.
    pub fn lost(&mut self, len: usize) {
        if let (Some(node), true) = (self.current.take(), len > 0) {
            self.first = (node + 1) % len;
        }
    }

    /// The node last connected to, while its connection is deemed alive.
    pub fn current(&self) -> Option<usize> {
        self.current
    }
}

/// No node of the list accepted a connection.
#[derive(Debug, thiserror::Error)]
#[error("no broker node accepted a connection: {}", .failures.join("; "))]
pub struct ConnectError {
    /// One line per node tried: its label and what went wrong.
    pub failures: Vec<String>,
}

impl From<ConnectError> for lapin::Error {
    /// For callers that report every broker failure as a lapin error.
    fn from(error: ConnectError) -> Self {
        std::io::Error::other(error.to_string()).into()
    }
}

/// Connects a service to whichever node of its list answers, following a [`Rotation`].
///
/// One connector serves all the connections of a service (delivery opens
/// several), so they all land on the same node while it is up.
#[derive(Debug)]
pub struct BrokerConnector {
    nodes: BrokerNodes,
    rotation: Mutex<Rotation>,
}

impl BrokerConnector {
    /// A connector over `nodes`, starting with the first.
    pub fn new(nodes: BrokerNodes) -> Self {
        Self {
            nodes,
            rotation: Mutex::default(),
        }
    }

    /// The nodes it connects to.
    pub fn nodes(&self) -> &BrokerNodes {
        &self.nodes
    }

    fn rotation(&self) -> std::sync::MutexGuard<'_, Rotation> {
        // The rotation is a pair of indices: a panic elsewhere cannot leave it inconsistent.
        crate::runtime::locks::lock(&self.rotation)
    }

    /// The label of the node in use, if any.
    pub fn current_node(&self) -> Option<String> {
        let current = self.rotation().current()?;
        self.nodes.label(current).map(str::to_string)
    }

    /// One round over the nodes: the first connection that opens, named
    /// `postline-<name>`, or every node's failure.
    pub async fn connect(&self, name: &str) -> Result<Connection, ConnectError> {
        let len = self.nodes.len();
        let order = self.rotation().order(len);
        let mut failures = Vec::new();
        for node in order {
            let (Some(url), Some(label)) = (self.nodes.url(node), self.nodes.label(node)) else {
                continue;
            };
            // No timeout of our own around lapin's connect: wrapped in
            // tokio::time::timeout, lapin 4.12's connection changed the
            // strict-ladder timing (tests/ladder.rs failed every run). An
            // unreachable node costs the OS's TCP connect timeout.
            match crate::amqp::broker::connect(url, name).await {
                Ok(connection) => {
                    self.rotation().connected(node);
                    if len > 1 {
                        tracing::info!(node = %label, connection = %name, "connected to broker node");
                    }
                    return Ok(connection);
                }
                Err(error) => failures.push(format!("{label}: {error}")),
            }
            self.rotation().refused(node, len);
        }
        Err(ConnectError { failures })
    }

    /// Like [`BrokerConnector::connect`], retried with capped exponential
    /// backoff until a node accepts or `cancel` fires.
    pub async fn connect_with_retry(
        &self,
        name: &str,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Option<Connection> {
        let mut backoff = Backoff::broker_reconnect();
        loop {
            let error = match self.connect(name).await {
                Ok(connection) => return Some(connection),
                Err(error) => error,
            };
            let delay = backoff.next_delay();
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "broker connection failed");
            if !backoff::pause(delay, cancel).await {
                return None;
            }
        }
    }

    /// The connection in use was lost (or given up): the next attempt starts
    /// with the node after it.
    pub fn lost(&self) {
        let len = self.nodes.len();
        let mut rotation = self.rotation();
        if let Some(label) = rotation.current().and_then(|node| self.nodes.label(node)) {
            tracing::warn!(node = %label, "lost the broker node; the next attempt starts with another");
        }
        rotation.lost(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

    #[test]
    fn a_single_url_is_a_list_of_one() {
        let nodes: BrokerNodes = ONE.parse().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes.url(0), Some(ONE));
        assert_eq!(nodes.to_env_value(), ONE);
    }

    #[test]
    fn a_comma_separated_list_keeps_its_order_and_ignores_spaces() {
        let nodes: BrokerNodes =
            " amqp://u:p@n1:5681/%2f , amqp://u:p@n2:5682/%2f,amqps://u:p@n3/vh "
                .parse()
                .unwrap();
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes.url(0), Some("amqp://u:p@n1:5681/%2f"));
        assert_eq!(nodes.url(2), Some("amqps://u:p@n3/vh"));
        assert_eq!(
            nodes.to_env_value(),
            "amqp://u:p@n1:5681/%2f,amqp://u:p@n2:5682/%2f,amqps://u:p@n3/vh"
        );
    }

    #[test]
    fn labels_display_and_debug_never_show_credentials() {
        let nodes: BrokerNodes = "amqp://admin:s3cret@n1:5681/%2f,amqps://admin:s3cret@n2/prod"
            .parse()
            .unwrap();
        assert_eq!(nodes.label(0), Some("amqp://n1:5681/%2f"));
        assert_eq!(nodes.label(1), Some("amqps://n2/prod"));
        for shown in [nodes.to_string(), format!("{nodes:?}")] {
            assert!(
                !shown.contains("s3cret") && !shown.contains("admin"),
                "{shown}"
            );
        }
    }

    #[test]
    fn empty_lists_and_empty_entries_are_refused() {
        assert_eq!("".parse::<BrokerNodes>(), Err(BrokerNodesError::Empty));
        assert_eq!(" , ".parse::<BrokerNodes>(), Err(BrokerNodesError::Empty));
        assert_eq!(
            format!("{ONE},,{ONE}").parse::<BrokerNodes>(),
            Err(BrokerNodesError::EmptyEntry { position: 2 })
        );
        assert_eq!(
            format!("{ONE},").parse::<BrokerNodes>(),
            Err(BrokerNodesError::EmptyEntry { position: 2 })
        );
    }

    #[test]
    fn entries_that_are_not_amqp_urls_are_refused_without_echoing_them() {
        for bad in [
            "http://user:hunter2@host:5672/",
            "user:hunter2@host:5672",
            "amqp://user:hunter2@host:notaport/",
            "amqp:///%2f",
            "amqp://user:hunter2@host:5672/%2f?frame_max=banana",
        ] {
            let error = format!("{ONE},{bad}").parse::<BrokerNodes>().unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(error, BrokerNodesError::Invalid { position: 2, .. }),
                "{bad}: {error:?}"
            );
            assert!(!message.contains("hunter2"), "{bad}: {message}");
        }
    }

    #[test]
    fn rotation_starts_with_the_first_node() {
        assert_eq!(Rotation::default().order(3), vec![0, 1, 2]);
        assert_eq!(Rotation::default().order(1), vec![0]);
    }

    #[test]
    fn rotation_stays_on_a_node_that_accepted() {
        let mut rotation = Rotation::default();
        rotation.refused(0, 3);
        rotation.connected(1);
        assert_eq!(rotation.current(), Some(1));
        assert_eq!(rotation.order(3), vec![1, 2, 0]);
    }

    #[test]
    fn rotation_tries_a_lost_node_last() {
        let mut rotation = Rotation::default();
        rotation.connected(0);
        rotation.lost(3);
        assert_eq!(rotation.current(), None);
        assert_eq!(rotation.order(3), vec![1, 2, 0]);
        rotation.connected(2);
        rotation.lost(3);
        assert_eq!(rotation.order(3), vec![0, 1, 2]);
    }

    #[test]
    fn rotation_after_a_full_round_of_refusals_starts_where_it_began() {
        let mut rotation = Rotation::default();
        rotation.connected(1);
        rotation.lost(3);
        for node in rotation.order(3) {
            rotation.refused(node, 3);
        }
        assert_eq!(rotation.order(3), vec![2, 0, 1]);
    }

    #[test]
    fn rotation_over_one_node_always_retries_it() {
        let mut rotation = Rotation::default();
        rotation.connected(0);
        rotation.lost(1);
        rotation.refused(0, 1);
        assert_eq!(rotation.order(1), vec![0]);
    }

    #[test]
    fn losing_a_connection_twice_moves_on_only_once() {
        let mut rotation = Rotation::default();
        rotation.connected(0);
        rotation.lost(3);
        rotation.lost(3);
        assert_eq!(rotation.order(3), vec![1, 2, 0]);
    }
}
