//! Why a consumer session failed: the error every step of a session (acks,
//! dead letters, the broker channel) returns, so the supervisor can start a
//! new session on the next connection.

use postline_shared::amqp::broker::PublishError;

/// Why a consumer session failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// Channel or connection trouble.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The channel ended before the broker took an ack or nack: the message
    /// is unsettled and the broker hands it out again.
    #[error("broker: the channel ended before the ack or nack reached it")]
    Unsettled,
    /// Dead-lettering an unreadable message failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
}
