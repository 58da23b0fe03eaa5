//! A TCP proxy between a service and RabbitMQ that a test can sever, to
//! show that the services' supervisors reconnect after losing the broker.
//! Severing closes every proxied connection; new connections still go through.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A running proxy; it stops when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    connections: Arc<Mutex<JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.sever();
    }
}

impl TcpProxy {
    /// Proxies 127.0.0.1:PORT (a fresh port) to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let connections: Arc<Mutex<JoinSet<()>>> = Arc::default();
        let tracked = connections.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                tracked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .spawn(async move {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    });
            }
        });
        Self {
            addr,
            connections,
            accept,
        }
    }

    /// An AMQP URL through the proxy, as guest (a list of one node).
    pub fn amqp_url(&self) -> postline_shared::amqp::broker_nodes::BrokerNodes {
        let url = format!("amqp://guest:guest@{}/%2f", self.addr);
        url.parse()
            .unwrap_or_else(|error| panic!("the proxy's own URL: {error}"))
    }

    /// Drops every connection going through the proxy, as a network failure would.
    pub fn sever(&self) {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
    }
}
