//! The AMQP form of an event's copy in a subscription queue: its properties
//! (event type, tenant, queued-at) and the incarnation stamp of each copy.

use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use postline_shared::amqp::redelivery::INCARNATION_HEADER;
use postline_shared::amqp::topology::QUEUED_AT_HEADER;
use postline_shared::Envelope;

/// The header of a copy naming the event's tenant (absent for untenanted events).
pub const TENANT_HEADER: &str = "postline-tenant";

/// `properties` stamped with the subscription incarnation the copy is made
/// for, so delivery can tell it from a copy for another life of the same id
/// (see delivery's `decision` module). None for subscriptions stored before
/// incarnations existed.
pub(crate) fn for_incarnation(properties: BasicProperties, incarnation: &str) -> BasicProperties {
    if incarnation.is_empty() {
        return properties;
    }
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        INCARNATION_HEADER.into(),
        AMQPValue::LongString(LongString::from(incarnation)),
    );
    properties.with_headers(headers)
}

/// The AMQP properties of a copy of `envelope` in a subscription queue.
pub(crate) fn copy_properties(envelope: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "postline-event-type".into(),
        AMQPValue::LongString(LongString::from(envelope.event_type.as_str())),
    );
    // The event's tenant, for delivery's check that a copy reaches only its
    // tenant's subscription (the body's `tenant` says the same).
    if let Some(tenant) = &envelope.tenant {
        headers.insert(
            TENANT_HEADER.into(),
            AMQPValue::LongString(LongString::from(tenant.as_str())),
        );
    }
    // Interval subscriptions deliver a copy at the first tick after this.
    headers.insert(
        QUEUED_AT_HEADER.into(),
        AMQPValue::LongString(LongString::from(
            chrono::Utc::now().timestamp_millis().to_string(),
        )),
    );
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(envelope.id.as_str().into())
        .with_priority(0)
        .with_headers(headers)
}
