//! The failure path on quorum subscription queues (RabbitMQ 3.10 and later,
//! no priorities): every scenario of [`scenarios`] — order held while
//! blocked, failover between replicas, the give-up rules, discard, replay,
//! retry now — with every queue of the namespace a quorum queue.

#[path = "ladder/scenarios.rs"]
mod scenarios;

use postline_shared::amqp::topology::QueueType;
use postline_tests::{TestEnv, TestEnvBuilder};

fn env_builder() -> TestEnvBuilder {
    TestEnv::builder().queue_type(QueueType::Quorum)
}

async fn start_env() -> TestEnv {
    env_builder().start().await
}
