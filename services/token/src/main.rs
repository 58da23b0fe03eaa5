//! `postline-token`: runs the token service until SIGTERM or Ctrl-C;
//! `postline-token --help` lists every setting.

use anyhow::Context;
use postline_shared::runtime::config::ServiceConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = postline_token::TokenConfig::from_env().context("reading configuration")?;
    postline_shared::runtime::service::init_process(&config.common);
    let shutdown = postline_shared::runtime::shutdown::on_signal();
    let running = postline_token::start(config, shutdown).await?;
    running.done.await.context("token task failed")?;
    Ok(())
}
