//! `postline-ingest`: runs the ingest service until SIGTERM or Ctrl-C;
//! `postline-ingest --help` lists every setting.

use anyhow::Context;
use postline_shared::runtime::config::ServiceConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = postline_ingest::IngestConfig::from_env().context("reading configuration")?;
    postline_shared::runtime::service::init_process(&config.common);
    if config.admin_token.expose() == postline_ingest::config::DEV_ADMIN_TOKEN {
        tracing::warn!("POSTLINE_ADMIN_TOKEN is not set: using the development token");
    }
    let shutdown = postline_shared::runtime::shutdown::on_signal();
    let running = postline_ingest::start(config, shutdown).await?;
    running.done.await.context("ingest task failed")?;
    Ok(())
}
