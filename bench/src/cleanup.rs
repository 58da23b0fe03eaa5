//! Removing everything a measurement created: its queues, exchanges and
//! Redis keys, so runs leave nothing behind on the shared broker and Redis.

use crate::error::BenchError;
use crate::Endpoints;
use futures::StreamExt;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Channel, Connection, ConnectionProperties};
use postline_shared::amqp::topology::Topology;
use postline_shared::model::ids::SubscriptionId;
use postline_shared::model::retry_policy::RetryPolicy;
use postline_shared::redis::keys::RedisKeys;
use redis::AsyncCommands;

/// Deletes the namespace's core queues and exchanges, the delay queues of
/// the default retry policy (the bench's subscriptions use it), the queues
/// of `subscription_ids`, `extra_queues`, and every Redis key of the
/// namespace.
pub async fn purge(
    endpoints: &Endpoints,
    namespace: &str,
    subscription_ids: &[String],
    extra_queues: &[String],
) -> Result<(), BenchError> {
    let topology = Topology::new(namespace, endpoints.queue_type);
    let connection =
        Connection::connect(endpoints.first_node(), ConnectionProperties::default()).await?;
    let mut queues = vec![topology.ingest_queue(), topology.rejected_queue()];
    // Only a well-formed id can have a queue.
    queues.extend(
        subscription_ids
            .iter()
            .filter_map(|id| SubscriptionId::parse(id).ok())
            .map(|id| topology.subscription_queue(&id)),
    );
    queues.extend(
        RetryPolicy::default()
            .delays_ms()
            .into_iter()
            .map(|delay_ms| topology.delay_queue(delay_ms)),
    );
    queues.extend(extra_queues.iter().cloned());
    let mut channel = connection.create_channel().await?;
    for queue in &queues {
        if queue_delete(&channel, queue).await.is_err() {
            // A missing queue closes the channel (404): carry on with a new one.
            channel = connection.create_channel().await?;
        }
    }
    for exchange in [
        topology.ingest_exchange(),
        topology.deliver_exchange(),
        topology.delay_exchange(),
    ] {
        if channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .is_err()
        {
            channel = connection.create_channel().await?;
        }
    }
    let _ = connection.close(200, "bench clean-up".into()).await;

    let client = redis::Client::open(endpoints.redis_url.as_str())?;
    let mut redis = client.get_multiplexed_async_connection().await?;
    let pattern = RedisKeys::new(namespace).all();
    let mut keys = Vec::new();
    {
        let mut scan = redis.scan_match::<_, String>(&pattern).await?;
        while let Some(key) = scan.next().await {
            keys.push(key?);
        }
    }
    for chunk in keys.chunks(1000) {
        let _: () = redis.del(chunk).await?;
    }
    Ok(())
}

async fn queue_delete(channel: &Channel, queue: &str) -> Result<u32, lapin::Error> {
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
}
