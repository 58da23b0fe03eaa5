//! The events the bench sends: JSON in Postline's intake format, padded to
//! an exact size, with ids that name the run and a sequence number, so that
//! whatever a receiver gets can be traced back to one event.

use chrono::{SecondsFormat, Utc};

/// Builds the intake bodies of one run.
#[derive(Debug, Clone)]
pub struct EventFactory {
    prefix: String,
    size: usize,
}

/// The smallest body the factory can make (id, type, timestamp, an empty pad).
const MIN_BODY: usize = 160;

impl EventFactory {
    /// Events with ids `<prefix>-<seq>`, each body `size` bytes (at least 160).
    pub fn new(prefix: &str, size: usize) -> Self {
        Self {
            prefix: prefix.to_string(),
            size: size.max(MIN_BODY),
        }
    }

    /// The id of event `seq`.
    pub fn id(&self, seq: u64) -> String {
        format!("{}-{seq}", self.prefix)
    }

    /// The intake JSON of event `seq` of type `event_type`, stamped now.
    pub fn body(&self, seq: u64, event_type: &str) -> Vec<u8> {
        let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let head = format!(
            r#"{{"id":"{}","type":"{event_type}","timestamp":"{timestamp}","payload":{{"seq":{seq},"pad":""#,
            self.id(seq)
        );
        let tail = r#""}}"#;
        let pad = self.size.saturating_sub(head.len() + tail.len());
        let mut body = Vec::with_capacity(head.len() + pad + tail.len());
        body.extend_from_slice(head.as_bytes());
        body.resize(head.len() + pad, b'x');
        body.extend_from_slice(tail.as_bytes());
        body
    }

    /// The sequence number of an event id of this run, `None` for anything else.
    pub fn seq_of(&self, id: &str) -> Option<u64> {
        id.strip_prefix(self.prefix.as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()
    }
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
}

/// The `id` of a delivered envelope body (what receivers get), if it has one.
pub fn delivered_id(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<IdOnly>(body).ok().map(|e| e.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_exact_size_and_parse_as_events() {
        let factory = EventFactory::new("bx", 512);
        let body = factory.body(42, "bench.s7");
        assert_eq!(body.len(), 512);
        let envelope =
            postline_shared::Envelope::from_input_bytes(&body, Utc::now()).expect("valid event");
        assert_eq!(envelope.id, "bx-42");
        assert_eq!(factory.seq_of(envelope.id.as_str()), Some(42));
        assert_eq!(factory.seq_of("other-42"), None);
        assert_eq!(factory.seq_of("bx-w1"), None);
        assert_eq!(delivered_id(&envelope.to_wire()).as_deref(), Some("bx-42"));
    }
}
