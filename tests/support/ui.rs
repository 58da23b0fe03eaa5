//! A real browser for the status page tests: Debian's `chromium` driven
//! through `chromedriver` (started on a free loopback port, stopped when the
//! [`Chromedriver`] is dropped) with the `fantoccini` WebDriver client. Each
//! [`Chromedriver::browser`] is a browser of its own (its own cookies), so
//! two partners' sessions never share anything. Screenshots go to
//! `target/ui-screenshots/` for people to look at.

use crate::{wait, DEADLINE};
use fantoccini::{Client, ClientBuilder};
use hyper_util_client::client::legacy::connect::HttpConnector;
use serde_json::json;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::process::{Child, Command};

/// A running chromedriver.
pub struct Chromedriver {
    url: String,
    _child: Child,
}

/// The chromedriver program (`POSTLINE_CHROMEDRIVER`, else `chromedriver` on PATH).
fn program() -> String {
    std::env::var("POSTLINE_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_string())
}

/// The browser binary (`POSTLINE_CHROMIUM`, else Debian's `/usr/bin/chromium`).
fn chromium() -> String {
    std::env::var("POSTLINE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string())
}

impl Chromedriver {
    /// Starts chromedriver on a free loopback port and waits until it is ready.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(program())
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting chromedriver failed ({e}); scripts/test installs chromium and chromium-driver")
            });
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let status = format!("{url}/status");
        wait::until("chromedriver to answer /status", DEADLINE, || {
            let request = http.get(&status).send();
            async move {
                match request.await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        Self { url, _child: child }
    }

    /// A new headless browser (a session of its own, with its own cookies).
    pub async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_string(),
            json!({
                "binary": chromium(),
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1280,1000",
                ],
            }),
        );
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| {
                panic!("starting a headless chromium through chromedriver failed: {e}")
            })
    }
}

/// Where screenshots go: `target/ui-screenshots/` of the workspace.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("ui-screenshots")
}

/// Saves a screenshot of what `browser` shows as `<name>.png`.
pub async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).expect("creating target/ui-screenshots");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("writing a screenshot");
}

/// Waits until `css` finds an element on the current page; returns it.
pub async fn element(browser: &Client, css: &str) -> fantoccini::elements::Element {
    wait::until(
        &format!("an element {css} on the page"),
        DEADLINE,
        || async {
            match browser.find(fantoccini::Locator::Css(css)).await {
                Ok(element) => Ok(element),
                Err(e) => Err(format!(
                    "{e}; page: {}",
                    browser
                        .current_url()
                        .await
                        .map(|u| u.path().to_string())
                        .unwrap_or_default()
                )),
            }
        },
    )
    .await
}

/// Reloads `url` until the element `css` has attribute `data-status` =
/// `status` (the page shows what delivery did since); returns the page source.
pub async fn until_status(browser: &Client, url: &str, css: &str, status: &str) -> String {
    wait::until(
        &format!("{css} to show status {status}"),
        DEADLINE,
        || async {
            browser.goto(url).await.map_err(|e| e.to_string())?;
            let element = browser
                .find(fantoccini::Locator::Css(css))
                .await
                .map_err(|e| e.to_string())?;
            let shown = element
                .attr("data-status")
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            if shown == status {
                browser.source().await.map_err(|e| e.to_string())
            } else {
                Err(format!("status {shown}"))
            }
        },
    )
    .await
}
