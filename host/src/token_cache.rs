//! Registry credentials cached until shortly before they expire, with one
//! fetch in flight per key; and, when a refresh fails with an error worth
//! retrying (the platform unreachable, failing, slow), the cached answer
//! served until it really expires, the refresh tried again with a growing
//! pause. Never after an authentication failure: a revoked identity gets
//! no stale token.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use credhost_plugin_api::rules::{reuse_until, unix_now};

use crate::{types::unix_seconds, RegistryAuth};

/// How long credentials without an expiry (and "no credentials needed"
/// answers) are reused.
pub const NO_EXPIRY_TTL: Duration = Duration::from_secs(600);

#[derive(Clone)]
struct Entry {
    auth: Option<RegistryAuth>,
    /// Unix seconds after which the entry must be refreshed.
    use_until: i64,
    /// Unix seconds after which it must not be used at all, even when its
    /// refresh fails: its expiry (an answer without one: one more
    /// [`NO_EXPIRY_TTL`] past its refresh point).
    hard_until: i64,
    /// Refreshes that failed in a row (the answer served stale meanwhile),
    /// and when the next may be tried.
    failed: u32,
    retry_at: Option<Instant>,
}

/// What a caller makes of a failed fetch.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OnError {
    /// Worth retrying (unreachable, failing, timed out): a cached answer
    /// that has not expired yet is served meanwhile.
    ServeStale,
    /// Final (an authentication failure above all): the cached answer is
    /// dropped, the error returned.
    Drop,
}

/// The pause before refresh `n` after `n` failed in a row: 1 s, doubling,
/// at most a minute.
fn retry_pause(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(6)).min(Duration::from_secs(60))
}

/// The cache. Cheap to share; each key has its own slot: a hit reads it
/// under a short synchronous lock (no waiting behind other callers). On a
/// miss one caller takes the key's fetch lock and fetches; the others wait
/// for its end and are all woken together (not handed the lock one by one),
/// so concurrent callers of the same key share one fetch while other keys
/// proceed.
#[derive(Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    cached: RwLock<Option<Entry>>,
    fetching: tokio::sync::Mutex<()>,
    /// Woken when a fetch ends, whether it succeeded, failed or was dropped.
    fetched: tokio::sync::Notify,
}

/// The fetch lock of a slot; on drop it is released first, then the
/// waiters are woken, so that a woken waiter finds it free.
struct Fetching<'a> {
    lock: Option<tokio::sync::MutexGuard<'a, ()>>,
    done: &'a tokio::sync::Notify,
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        self.lock.take();
        self.done.notify_waiters();
    }
}

impl Slot {
    /// The cached answer, when it is still live, or past its refresh point
    /// but served stale until the pause after a failed refresh is over.
    fn live(&self) -> Option<Option<RegistryAuth>> {
        let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
        let now = unix_now();
        cached
            .as_ref()
            .filter(|e| now < e.use_until || (now < e.hard_until && e.retry_at.is_some_and(|at| Instant::now() < at)))
            .map(|e| e.auth.clone())
    }
}

/// When to stop using credentials fetched at `now` that expire at
/// `expires_at`: the interface's refresh rule (5 minutes before expiry, or a
/// quarter of the lifetime for short-lived ones); [`NO_EXPIRY_TTL`] for
/// answers without an expiry. `None` when they must not be cached at all
/// (already expired, or too close).
pub fn use_until(now: i64, expires_at: Option<i64>) -> Option<i64> {
    match expires_at {
        None => Some(now + NO_EXPIRY_TTL.as_secs() as i64),
        Some(exp) => reuse_until(now, exp),
    }
}

impl TokenCache {
    /// Returns the cached answer for `key`, or runs `fetch` (once, however many
    /// callers wait) and caches its answer when it may be cached.
    #[cfg(test)]
    pub async fn get_or_fetch<F, Fut, E>(&self, key: &str, fetch: F) -> Result<Option<RegistryAuth>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<RegistryAuth>, E>>,
        E: std::fmt::Display,
    {
        self.get_or_refresh(key, fetch, |_| OnError::Drop).await
    }

    /// [`TokenCache::get_or_fetch`], serving the cached answer stale when a
    /// refresh fails with an error `on_error` calls [`OnError::ServeStale`]
    /// and the answer has not expired: logged at warn, the refresh tried
    /// again after a pause (1 s, doubling, at most a minute).
    pub async fn get_or_refresh<F, Fut, E, O>(
        &self,
        key: &str,
        fetch: F,
        on_error: O,
    ) -> Result<Option<RegistryAuth>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<RegistryAuth>, E>>,
        E: std::fmt::Display,
        O: FnOnce(&E) -> OnError,
    {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.get(key) {
                Some(slot) => slot.clone(),
                None => slots.entry(key.to_owned()).or_default().clone(),
            }
        };
        let _fetching = loop {
            if let Some(auth) = slot.live() {
                return Ok(auth);
            }
            // Registered before the lock is tried, so that the end of a
            // fetch that holds it cannot be missed.
            let mut ended = std::pin::pin!(slot.fetched.notified());
            ended.as_mut().enable();
            if let Ok(lock) = slot.fetching.try_lock() {
                break Fetching { lock: Some(lock), done: &slot.fetched };
            }
            // After a failed fetch the cache is still empty: the woken
            // callers race for the lock and one of them fetches again.
            ended.await;
        };
        // Another caller may have fetched between the check and the lock.
        if let Some(auth) = slot.live() {
            return Ok(auth);
        }
        let auth = match fetch().await {
            Ok(auth) => auth,
            Err(e) => {
                let mut cached = slot.cached.write().unwrap_or_else(|p| p.into_inner());
                let now = unix_now();
                match (on_error(&e), cached.as_mut()) {
                    (OnError::ServeStale, Some(entry)) if now < entry.hard_until => {
                        entry.failed += 1;
                        let pause = retry_pause(entry.failed);
                        entry.retry_at = Some(Instant::now() + pause);
                        tracing::warn!(
                            target: "credhost::token",
                            key = %key.replace('\u{0}', " "),
                            "refreshing registry credentials failed ({} in a row): serving the cached ones, valid for {} s more; trying again in {} s: {e}",
                            entry.failed,
                            entry.hard_until - now,
                            pause.as_secs()
                        );
                        return Ok(entry.auth.clone());
                    }
                    (OnError::Drop, _) => *cached = None,
                    _ => {}
                }
                return Err(e);
            }
        };
        let now = unix_now();
        let expires = auth.as_ref().and_then(|a| a.expires_at).map(unix_seconds);
        let entry = use_until(now, expires).map(|until| Entry {
            auth: auth.clone(),
            use_until: until,
            hard_until: expires.unwrap_or(until + NO_EXPIRY_TTL.as_secs() as i64),
            failed: 0,
            retry_at: None,
        });
        if entry.is_none() {
            tracing::debug!(target: "credhost::token", key, "not caching registry credentials: expired or about to");
        }
        *slot.cached.write().unwrap_or_else(|p| p.into_inner()) = entry;
        Ok(auth)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{types::from_unix, AuthKind, Secret};

    fn auth(expires_at: Option<i64>) -> Option<RegistryAuth> {
        Some(RegistryAuth {
            server: "r:5000".into(),
            username: "u".into(),
            secret: Secret::new("s"),
            expires_at: expires_at.map(from_unix),
            kind: AuthKind::Basic,
        })
    }

    #[test]
    fn margins() {
        assert_eq!(use_until(1000, Some(1000 + 3600)), Some(1000 + 3600 - 300));
        assert_eq!(use_until(1000, Some(1000 + 60)), Some(1000 + 45));
        assert_eq!(use_until(1000, Some(999)), None);
        assert_eq!(use_until(1000, Some(1000)), None);
        assert_eq!(use_until(1000, Some(1001)), None);
        assert_eq!(use_until(1000, None), Some(1600));
    }

    #[tokio::test]
    async fn caches_live_tokens_and_never_expired_ones() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            let a = cache
                .get_or_fetch("k", || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, &str>(auth(Some(unix_now() + 3600)))
                })
                .await
                .unwrap();
            assert!(a.is_some());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let expired = AtomicUsize::new(0);
        for _ in 0..3 {
            cache
                .get_or_fetch("old", || async {
                    expired.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, &str>(auth(Some(1_420_070_400))) // 2015, as moto answers
                })
                .await
                .unwrap();
        }
        assert_eq!(expired.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn one_fetch_in_flight_per_key() {
        let cache = Arc::new(TokenCache::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch("k", || async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, &str>(auth(None))
                    })
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let cache = TokenCache::default();
        let r = cache.get_or_fetch("k", || async { Err::<Option<RegistryAuth>, _>("boom") }).await;
        assert!(r.is_err());
        let r = cache.get_or_fetch("k", || async { Ok::<_, &str>(auth(None)) }).await;
        assert!(r.unwrap().is_some());
    }

    /// Waiters of a fetch that fails, or whose caller gives up (its future
    /// dropped), are woken and one of them fetches again: nobody waits for
    /// ever, and the next answer is shared.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_of_a_failed_or_dropped_fetch_fetch_again() {
        for give_up in [false, true] {
            let cache = Arc::new(TokenCache::default());
            let calls = Arc::new(AtomicUsize::new(0));
            let first = {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_fetch("k", || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(if give_up { 10_000 } else { 100 })).await;
                            Err::<Option<RegistryAuth>, _>("boom")
                        })
                        .await
                })
            };
            tokio::time::sleep(Duration::from_millis(30)).await;
            let mut waiters = Vec::new();
            for _ in 0..50 {
                let (cache, calls) = (cache.clone(), calls.clone());
                waiters.push(tokio::spawn(async move {
                    cache
                        .get_or_fetch("k", || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, &str>(auth(None))
                        })
                        .await
                }));
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            if give_up {
                first.abort();
            } else {
                assert!(first.await.unwrap().is_err());
            }
            for w in waiters {
                let got = tokio::time::timeout(Duration::from_secs(5), w).await.expect("a waiter hung");
                assert!(got.unwrap().unwrap().is_some());
            }
            assert_eq!(calls.load(Ordering::SeqCst), 2, "give_up: {give_up}");
        }
    }

    /// Past its refresh point, a token whose refresh fails with an error
    /// worth retrying is served (the refresh paused meanwhile) until it
    /// expires, never after; an authentication failure drops it at once.
    #[tokio::test]
    async fn stale_on_error_until_expiry_and_never_after_a_refusal() {
        let cache = TokenCache::default();
        let calls = AtomicUsize::new(0);
        let expires = unix_now() + 4;
        let fresh = auth(Some(expires));
        let got = cache.get_or_fetch("k", || async { Ok::<_, &str>(fresh.clone()) }).await.unwrap();
        assert!(got.is_some());
        let refresh_at = use_until(unix_now(), Some(expires)).unwrap();
        while unix_now() < refresh_at {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let down = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<Option<RegistryAuth>, _>("the token server is unreachable")
        };
        let stale = |_: &&str| OnError::ServeStale;
        // Served stale; the next caller within the pause does not try.
        assert!(cache.get_or_refresh("k", down, stale).await.unwrap().is_some());
        assert!(cache.get_or_refresh("k", down, stale).await.unwrap().is_some());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // After its expiry: the error.
        while unix_now() < expires {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(cache.get_or_refresh("k", down, stale).await.is_err());

        // A refusal drops what was cached.
        let cache = TokenCache::default();
        cache.get_or_fetch("k", || async { Ok::<_, &str>(auth(Some(unix_now() + 4))) }).await.unwrap();
        let refresh_at = use_until(unix_now(), Some(unix_now() + 4)).unwrap();
        while unix_now() < refresh_at {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let refused = || async { Err::<Option<RegistryAuth>, _>("401: the identity was revoked") };
        assert!(cache.get_or_refresh("k", refused, |_| OnError::Drop).await.is_err());
        assert!(cache.get_or_refresh("k", down, stale).await.is_err(), "a refused token was served stale");
    }
}
