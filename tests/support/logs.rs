//! Log capture: one global `tracing` subscriber per test binary, installed
//! once, recording every line of the Postline crates at DEBUG into memory so
//! a test can assert that a secret never reached a log line. Lines also go to
//! stderr when `POSTLINE_TEST_LOG` is set (its value, if it looks like a
//! filter such as `debug` or `postline_delivery=trace`, replaces the default filter).

use postline_shared::runtime::telemetry::without_payload_targets;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// What is captured: DEBUG for Postline's crates, WARN for everything else.
pub const CAPTURE_FILTER: &str = "warn,postline_shared=debug,postline_ingest=debug,\
postline_delivery=debug,postline_token=debug,postline_tests=debug";

static BUFFER: OnceLock<Buffer> = OnceLock::new();

/// The in-memory log: every formatted line appended in order.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buffer {
    type Writer = BufferWriter;

    fn make_writer(&'a self) -> Self::Writer {
        BufferWriter(self.0.clone())
    }
}

/// Installs the capturing subscriber (once per process; later calls do nothing).
pub fn init() {
    BUFFER.get_or_init(|| {
        let buffer = Buffer::default();
        let capture = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(buffer.clone())
            // The services' own filter rules apply on top, as in production.
            .with_filter(without_payload_targets(EnvFilter::new(CAPTURE_FILTER)));
        let stderr = std::env::var("POSTLINE_TEST_LOG").ok().map(|value| {
            let directives = if value.is_empty() || value == "1" || value == "true" {
                CAPTURE_FILTER.to_string()
            } else {
                value
            };
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(without_payload_targets(EnvFilter::new(directives)))
        });
        // Another subscriber may already be installed by someone else; then
        // capture is simply empty and `captured_lines` says so loudly.
        let _ = tracing_subscriber::registry()
            .with(capture)
            .with(stderr)
            .try_init();
        buffer
    });
}

/// Everything captured so far (from every test in this binary).
pub fn captured() -> String {
    init();
    let buffer = BUFFER.get().expect("initialised above");
    let bytes = buffer.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The captured lines that contain `needle`.
pub fn lines_containing(needle: &str) -> Vec<String> {
    captured()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_string)
        .collect()
}
