//! In-process request coalescing: concurrent callers asking for the same key
//! share one piece of work and its outcome (success or error) instead of
//! each doing it. The token service and delivery's token client use it so a
//! burst of deliveries needing the same cold token makes one call.

use futures::future::{BoxFuture, FutureExt, Shared};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

/// Work in flight by key; each outcome is handed to every caller that joined.
pub struct Coalesce<T: Clone> {
    inflight: Mutex<InFlight<T>>,
}

impl<T: Clone> Default for Coalesce<T> {
    fn default() -> Self {
        Self {
            inflight: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> std::fmt::Debug for Coalesce<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalesce")
            .field("in_flight", &self.lock().len())
            .finish()
    }
}

impl<T: Clone + Send + Sync + 'static> Coalesce<T> {
    /// Runs `work()` for `key`, or joins the run already in flight for it.
    /// The work is driven by whichever caller polls it, so it goes on while
    /// at least one caller still waits.
    pub async fn run<F>(&self, key: &str, work: impl FnOnce() -> F) -> T
    where
        F: Future<Output = T> + Send + 'static,
    {
        let shared = {
            let mut inflight = self.lock();
            match inflight.get(key) {
                Some(running) => running.clone(),
                None => {
                    let started = work().boxed().shared();
                    inflight.insert(key.to_string(), started.clone());
                    started
                }
            }
        };
        let outcome = shared.clone().await;
        let mut inflight = self.lock();
        // Only this run's entry: a newer run for the key may have replaced it.
        if inflight.get(key).is_some_and(|f| f.ptr_eq(&shared)) {
            inflight.remove(key);
        }
        outcome
    }
}

type InFlight<T> = HashMap<String, Shared<BoxFuture<'static, T>>>;

impl<T: Clone> Coalesce<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight<T>> {
        // The map holds only futures; a panic elsewhere leaves it consistent.
        crate::runtime::locks::lock(&self.inflight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run_and_later_callers_start_another() {
        let coalesce = Arc::new(Coalesce::<Result<u32, String>>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut callers = Vec::new();
        for _ in 0..50 {
            let (coalesce, runs) = (coalesce.clone(), runs.clone());
            callers.push(tokio::spawn(async move {
                coalesce
                    .run("k", || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err::<u32, String>("down".into())
                    })
                    .await
            }));
        }
        for caller in callers {
            assert_eq!(caller.await.unwrap(), Err("down".into()));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "errors are shared too");
        let again = coalesce.run("k", || async { Ok(7) }).await;
        assert_eq!(again, Ok(7));
    }
}
