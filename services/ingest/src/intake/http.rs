//! The HTTP intake's way into the pipeline: each request (one event or a
//! batch) queues its events, and a few workers each take every request
//! waiting and run them through the pipeline as one batch — one Redis round
//! trip, one publish, one round of confirms, one marker write — however many
//! requests it joins. Each request is answered with its own events' fates,
//! and only after the whole batch is confirmed and remembered.

use super::{Accepted, Intake, IntakeError, Source};
use crate::broker_link::{BrokerLink, LinkHandle};
use postline_shared::Envelope;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// Batches in the pipeline at once. Each waits for its confirms (a broker
/// fsync, milliseconds) while others are gathered and published, so there
/// are enough for every producer waiting on an answer to be in one: with
/// fewer, a request arriving while all are busy waits a whole confirm
/// round before its own starts. Requests in memory are bounded by the HTTP
/// server's connection limit, not by this.
const WORKERS: usize = 32;
/// A worker stops gathering requests once its batch holds this many events
/// (a single request may bring up to the batch limit on its own).
const GATHER_UP_TO: usize = 1_000;
/// Requests waiting for a worker; more wait for room (bounded memory).
const WAITING: usize = 1_024;

/// Why a request's events were not accepted (the producer retries with the same ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The broker link is down or did not confirm, or Redis failed.
    Unavailable(&'static str),
    /// Redis lost Postline's state.
    StateLost,
}

impl From<&IntakeError> for Refused {
    fn from(error: &IntakeError) -> Self {
        match error {
            IntakeError::Publish(_) | IntakeError::StillUnroutable(_) => {
                Self::Unavailable("broker did not confirm; retry with the same ids")
            }
            IntakeError::Redis(_) => {
                Self::Unavailable("redis unavailable; retry with the same ids")
            }
            IntakeError::StateLost => Self::StateLost,
        }
    }
}

/// One request's events and where its answer goes.
struct Request {
    events: Vec<Envelope>,
    answer: oneshot::Sender<Result<Vec<Accepted>, Refused>>,
}

/// Hands requests' events to the pipeline workers.
#[derive(Clone)]
pub struct HttpIntake {
    requests: mpsc::Sender<Request>,
}

impl HttpIntake {
    /// Starts the workers; they end when every handle is dropped.
    pub fn start(intake: Intake, broker: LinkHandle) -> Self {
        let (requests, waiting) = mpsc::channel(WAITING);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..WORKERS {
            tokio::spawn(work(intake.clone(), broker.clone(), waiting.clone()));
        }
        Self { requests }
    }

    /// Accepts `events` (valid, in order): each one's fate once every copy
    /// of the batch it joined is confirmed and its id remembered.
    pub async fn accept(&self, events: Vec<Envelope>) -> Result<Vec<Accepted>, Refused> {
        let stopped = Refused::Unavailable("intake is stopping; retry");
        let (answer, answered) = oneshot::channel();
        self.requests
            .send(Request { events, answer })
            .await
            .map_err(|_| stopped)?;
        answered.await.map_err(|_| stopped)?
    }
}

async fn work(intake: Intake, broker: LinkHandle, waiting: Arc<Mutex<mpsc::Receiver<Request>>>) {
    loop {
        let batch = {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else {
                return;
            };
            let mut events = first.events.len();
            let mut batch = vec![first];
            // Whatever else is already waiting joins; nothing waits for more.
            while events < GATHER_UP_TO {
                let Ok(request) = waiting.try_recv() else {
                    break;
                };
                events += request.events.len();
                batch.push(request);
            }
            batch
        };
        run(&intake, &broker, batch).await;
    }
}

/// Runs the requests of `batch` through the pipeline as one batch and answers each.
async fn run(intake: &Intake, broker: &LinkHandle, batch: Vec<Request>) {
    let link = broker.borrow().clone().filter(BrokerLink::is_connected);
    let Some(link) = link else {
        for request in batch {
            let _ = request
                .answer
                .send(Err(Refused::Unavailable("broker not connected; retry")));
        }
        return;
    };
    let mut answers = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    for request in batch {
        answers.push((request.events.len(), request.answer));
        events.extend(request.events);
    }
    match intake.accept(&link.publisher, events, Source::Http).await {
        Ok(fates) => {
            // Safe to answer 202: every copy of every event of the batch is
            // confirmed by the broker and every new id is remembered.
            let mut fates = fates.into_iter();
            for (count, answer) in answers {
                let _ = answer.send(Ok(fates.by_ref().take(count).collect()));
            }
        }
        Err(error) => {
            tracing::warn!(%error, "events not accepted over HTTP");
            let refused = Refused::from(&error);
            for (_, answer) in answers {
                let _ = answer.send(Err(refused));
            }
        }
    }
}
