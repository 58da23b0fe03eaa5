//! `postline-ingest`: runs the ingest service until SIGTERM or Ctrl-C.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    postline_shared::runtime::telemetry::init();
    let config = postline_ingest::IngestConfig::from_env().context("reading configuration")?;
    if config.admin_token.expose() == postline_ingest::config::DEV_ADMIN_TOKEN {
        tracing::warn!("POSTLINE_ADMIN_TOKEN is not set: using the development token");
    }
    config.common.warn_about_defaults();
    let shutdown = postline_shared::runtime::shutdown::on_signal();
    let running = postline_ingest::start(config, shutdown).await?;
    running.done.await.context("ingest task failed")?;
    Ok(())
}
