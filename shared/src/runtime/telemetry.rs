//! Log setup for the service binaries: `tracing` to stderr, filtered by
//! `RUST_LOG` (default `info`), as JSON when `POSTLINE_LOG_FORMAT=json`
//! (see [`crate::runtime::config::LogFormat`]).
//! Whatever the filter says, log lines that would carry event payloads are
//! switched off (see [`PAYLOAD_TARGETS_OFF`]).

use crate::runtime::config::LogFormat;
use tracing_subscriber::filter::Directive;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Targets of other crates that log message bodies, always off: lapin logs a
/// message the broker returned (an unroutable publish) whole, payload
/// included, at WARN. Postline logs such returns itself, with ids only.
pub const PAYLOAD_TARGETS_OFF: &[&str] = &["lapin::returned_messages=off"];

/// `filter` with the [`PAYLOAD_TARGETS_OFF`] directives added.
pub fn without_payload_targets(mut filter: EnvFilter) -> EnvFilter {
    for directive in PAYLOAD_TARGETS_OFF {
        if let Ok(directive) = directive.parse::<Directive>() {
            filter = filter.add_directive(directive);
        }
    }
    filter
}

/// Installs the global subscriber; call once, early in `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = format == LogFormat::Json;
    // Colours only on a terminal: in files and log collectors they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    subscriber(filter, ansi, json, std::io::stderr).init();
}

/// The subscriber [`init`] installs, writing to `writer`. As JSON, each line
/// carries the fields of the spans it was logged in (`span`, the innermost,
/// and `spans`, all of them): a delivery's lines name the subscription and
/// the event through their spans rather than repeating them.
fn subscriber<W>(
    filter: EnvFilter,
    ansi: bool,
    json: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(without_payload_targets(filter))
        .with_ansi(ansi)
        .with_writer(writer);
    if json {
        Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        )
    } else {
        Box::new(builder.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_payload_target_directive_parses() {
        for directive in PAYLOAD_TARGETS_OFF {
            assert!(directive.parse::<Directive>().is_ok(), "{directive}");
        }
    }

    /// A log buffer for one test.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            crate::runtime::locks::lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    #[test]
    fn json_lines_carry_the_fields_of_their_spans() {
        let lines = Lines::default();
        let json = subscriber(EnvFilter::new("info"), false, true, lines.clone());
        tracing::subscriber::with_default(json, || {
            let session = tracing::info_span!("session", subscription = "acme");
            let _session = session.enter();
            let delivery = tracing::info_span!("delivery", event_id = "e1", attempt = 2);
            let _delivery = delivery.enter();
            tracing::info!(status = 200, "delivered");
        });
        let text = String::from_utf8(crate::runtime::locks::lock(&lines.0).clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["message"], "delivered", "{line}");
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["span"]["event_id"], "e1", "{line}");
        assert_eq!(line["spans"][0]["subscription"], "acme", "{line}");
        assert_eq!(line["spans"][1]["attempt"], 2, "{line}");
    }
}
