//! `postline-delivery`: runs the delivery service until SIGTERM or Ctrl-C;
//! `postline-delivery --help` lists every setting.

use anyhow::Context;
use postline_shared::runtime::config::ServiceConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = postline_delivery::DeliveryConfig::from_env().context("reading configuration")?;
    postline_shared::runtime::service::init_process(&config.common);
    let shutdown = postline_shared::runtime::shutdown::on_signal();
    let running = postline_delivery::start(config, shutdown).await?;
    running.done.await.context("delivery task failed")?;
    Ok(())
}
