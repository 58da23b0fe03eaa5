//! Postline on RabbitMQ: connecting to the nodes of a cluster, confirmed
//! publishing, the topology of exchanges and queues, sending copies back
//! through the retry ladder, and the classic-to-quorum migration.

pub mod broker;
pub mod broker_nodes;
pub mod migration;
pub mod redelivery;
pub mod topology;
