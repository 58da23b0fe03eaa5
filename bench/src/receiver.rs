//! Fast local receivers: lean axum servers on 127.0.0.1 that answer 200 at
//! once and record, for each request, which listener got it, when, and the
//! body (parsed only after the run, so the hot path stays a push under a lock).
//!
//! One listener per subscription, like distinct partner endpoints: delivery's
//! HTTP client pools connections per host, so one shared endpoint would
//! measure the pool's limits rather than the pipeline.

use crate::error::BenchError;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// One request as a receiver got it.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// Which listener (= subscription index) got it.
    pub listener: u32,
    /// When the request (head and body) had arrived.
    pub at: Instant,
    /// The body.
    pub body: Bytes,
}

/// Every arrival of every listener, in arrival order.
#[derive(Debug, Default)]
pub struct Recorder {
    arrivals: Mutex<Vec<Arrival>>,
    count: AtomicUsize,
}

impl Recorder {
    fn push(&self, arrival: Arrival) {
        self.arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(arrival);
        self.count.fetch_add(1, Ordering::Release);
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Takes everything recorded so far, leaving the recorder empty.
    pub fn take(&self) -> Vec<Arrival> {
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        self.count.store(0, Ordering::Release);
        std::mem::take(&mut *arrivals)
    }
}

#[derive(Clone)]
struct Listener {
    index: u32,
    recorder: Arc<Recorder>,
}

async fn hook(State(listener): State<Listener>, body: Bytes) -> StatusCode {
    listener.recorder.push(Arrival {
        listener: listener.index,
        at: Instant::now(),
        body,
    });
    StatusCode::OK
}

/// A set of listening receivers sharing one recorder; stops when dropped.
pub struct ReceiverFarm {
    urls: Vec<String>,
    recorder: Arc<Recorder>,
    stop: CancellationToken,
}

impl Drop for ReceiverFarm {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl ReceiverFarm {
    /// Starts `listeners` receivers on `runtime` (so their CPU time can be told apart).
    pub async fn start(
        listeners: usize,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Self, BenchError> {
        let recorder = Arc::new(Recorder::default());
        let stop = CancellationToken::new();
        let mut urls = Vec::with_capacity(listeners);
        for index in 0..listeners {
            let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| BenchError::io("binding a receiver", e))?;
            let addr = socket
                .local_addr()
                .map_err(|e| BenchError::io("reading a receiver's address", e))?;
            urls.push(format!("http://{addr}/hook"));
            // Accepting on the receivers' runtime: the socket must be registered there.
            let socket = socket
                .into_std()
                .map_err(|e| BenchError::io("moving a receiver socket", e))?;
            let app = Router::new()
                .route("/hook", post(hook))
                .with_state(Listener {
                    index: index as u32,
                    recorder: recorder.clone(),
                });
            let stop = stop.clone();
            runtime.spawn(async move {
                let Ok(socket) = tokio::net::TcpListener::from_std(socket) else {
                    return;
                };
                // Small answers on kept-alive connections: never wait for Nagle.
                let socket = socket.tap_io(|stream| {
                    let _ = stream.set_nodelay(true);
                });
                let _ = axum::serve(socket, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await;
            });
        }
        Ok(Self {
            urls,
            recorder,
            stop,
        })
    }

    /// The endpoint URL of listener `index`.
    pub fn url(&self, index: usize) -> &str {
        &self.urls[index % self.urls.len()]
    }

    /// The shared recorder.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }
}
