//! Registry credentials cached until shortly before they expire, with one
//! fetch in flight per key.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use credhost_plugin_api::rules::{reuse_until, unix_now};

use crate::{types::unix_seconds, RegistryAuth};

/// How long credentials without an expiry (and "no credentials needed"
/// answers) are reused.
pub const NO_EXPIRY_TTL: Duration = Duration::from_secs(600);

#[derive(Clone)]
struct Entry {
    auth: Option<RegistryAuth>,
    /// Unix seconds after which the entry must not be used.
    use_until: i64,
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
    /// The cached answer, when it is still live.
    fn live(&self) -> Option<Option<RegistryAuth>> {
        let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
        cached.as_ref().filter(|e| unix_now() < e.use_until).map(|e| e.auth.clone())
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
    pub async fn get_or_fetch<F, Fut, E>(&self, key: &str, fetch: F) -> Result<Option<RegistryAuth>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<RegistryAuth>, E>>,
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
        let auth = fetch().await?;
        let now = unix_now();
        let expires = auth.as_ref().and_then(|a| a.expires_at).map(unix_seconds);
        let entry = use_until(now, expires).map(|until| Entry { auth: auth.clone(), use_until: until });
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
                    Ok::<_, ()>(auth(Some(unix_now() + 3600)))
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
                    Ok::<_, ()>(auth(Some(1_420_070_400))) // 2015, as moto answers
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
                        Ok::<_, ()>(auth(None))
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
}
