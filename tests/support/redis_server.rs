//! A private `redis-server` for a test that must lose Redis's data: started
//! on a free port without persistence, restartable empty (which is exactly
//! a Redis without persistence coming back after a crash), and shut down
//! when dropped. Never the shared Redis other tests use.

use std::process::Command;
use std::time::Duration;

/// A `redis-server` this test owns.
pub struct PrivateRedis {
    port: u16,
}

impl PrivateRedis {
    /// Starts one on a free port and waits until it answers.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let redis = Self { port };
        redis.launch().await;
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Shuts it down without saving and starts it again: it comes back empty.
    pub async fn restart_empty(&self) {
        self.shutdown();
        self.launch().await;
    }

    fn shutdown(&self) {
        let _ = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .output();
    }

    async fn launch(&self) {
        let status = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "yes",
                "--dir",
                "/tmp",
                "--pidfile",
                &format!("/tmp/postline-test-redis-{}.pid", self.port),
                "--logfile",
                "",
            ])
            .status()
            .expect("redis-server must be installed for this test");
        assert!(status.success(), "redis-server did not start");
        let url = self.url();
        crate::wait::until(
            "the private redis-server to answer",
            Duration::from_secs(10),
            || {
                let url = url.clone();
                async move {
                    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
                    let mut connection = client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|e| e.to_string())?;
                    redis::cmd("PING")
                        .query_async::<String>(&mut connection)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        )
        .await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.shutdown();
    }
}
