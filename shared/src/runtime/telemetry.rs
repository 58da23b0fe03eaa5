//! Log setup for the service binaries: `tracing` to stderr, filtered by
//! `RUST_LOG` (default `info`), as JSON when `POSTLINE_LOG_FORMAT=json`
//! (see [`crate::runtime::config::LogFormat`]).
//! Whatever the filter says, log lines that would carry event payloads are
//! switched off (see [`PAYLOAD_TARGETS_OFF`]).

use crate::runtime::config::LogFormat;
use tracing_subscriber::filter::Directive;
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(without_payload_targets(filter))
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
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
}
