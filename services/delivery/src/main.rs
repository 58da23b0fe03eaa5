//! `postline-delivery`: runs the delivery service until SIGTERM or Ctrl-C.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    postline_shared::runtime::telemetry::init();
    let config = postline_delivery::DeliveryConfig::from_env().context("reading configuration")?;
    config.common.warn_about_defaults();
    let shutdown = postline_shared::runtime::shutdown::on_signal();
    let running = postline_delivery::start(config, shutdown).await?;
    running.done.await.context("delivery task failed")?;
    Ok(())
}
