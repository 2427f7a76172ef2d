//! Registry credentials cached until shortly before they expire, with one
//! fetch in flight per key; and, when a refresh fails with an error worth
//! retrying (the platform unreachable, failing, slow), the cached answer
//! served until it really expires, the refresh tried again with a growing
//! pause. Never after an authentication failure: a revoked identity gets
//! no stale token.
//!
//! A long-running embedder refreshes answers ahead of time
//! ([`TokenCache::due`], [`TokenCache::refresh`]), so that its callers keep
//! finding them cached. Once it does, a caller is served an answer it asked
//! for within the last half hour until that answer expires, even while its
//! refreshes fail, and never waits on the platform for it. Without that, a
//! caller that finds an answer past its refresh point while another fetch
//! of it is under way is served the cached answer rather than waiting.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::{Duration, Instant},
};

use credhost_plugin_api::rules::{reuse_until, unix_now};

use crate::{types::unix_seconds, RegistryAuth};

/// How long credentials without an expiry (and "no credentials needed"
/// answers) are reused.
pub const NO_EXPIRY_TTL: Duration = Duration::from_secs(600);

/// Answers not asked for within this long are not refreshed ahead of time.
pub const REFRESH_AHEAD_IDLE: Duration = Duration::from_secs(1800);

/// The most an answer is refreshed ahead of its refresh point.
const REFRESH_AHEAD_MAX: i64 = 60;

#[derive(Clone)]
struct Entry {
    auth: Option<RegistryAuth>,
    /// Unix seconds after which the entry must be refreshed.
    use_until: i64,
    /// Unix seconds from which it is refreshed ahead of time: a quarter of
    /// its time to `use_until` before it, at most a minute.
    ahead_from: i64,
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
    /// Unix seconds of the latest [`TokenCache::due`]: while answers are
    /// refreshed ahead of time (it was called within [`AHEAD_ALIVE`]), a
    /// caller is served an answer asked for recently until it expires, its
    /// refresh left to the refresher.
    ahead: AtomicI64,
}

/// How recent the latest [`TokenCache::due`] must be for refreshes ahead of
/// time to count as running: a refresher that stopped (or stalls) leaves
/// callers to fetch for themselves again.
const AHEAD_ALIVE: i64 = 5;

#[derive(Default)]
struct Slot {
    cached: RwLock<Option<Entry>>,
    /// Unix seconds of the latest time the answer was asked for.
    asked: AtomicI64,
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
    /// but served stale until the pause after a failed refresh is over; or,
    /// when refreshes `ahead` of time look after an answer asked for
    /// recently, until it expires.
    fn live(&self, ahead: bool) -> Option<Option<RegistryAuth>> {
        let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
        let now = unix_now();
        let recent = now - self.asked.swap(now, Ordering::Relaxed) <= REFRESH_AHEAD_IDLE.as_secs() as i64;
        cached
            .as_ref()
            .filter(|e| {
                now < e.use_until
                    || (now < e.hard_until && ((ahead && recent) || e.retry_at.is_some_and(|at| Instant::now() < at)))
            })
            .map(|e| e.auth.clone())
    }

    /// The cached answer while it has not expired, however stale.
    fn unexpired(&self) -> Option<Option<RegistryAuth>> {
        let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
        cached.as_ref().filter(|e| unix_now() < e.hard_until).map(|e| e.auth.clone())
    }

    /// Whether the answer is due for a refresh ahead of time.
    fn due(&self, now: i64) -> bool {
        let cached = self.cached.read().unwrap_or_else(|p| p.into_inner());
        let recent = now - self.asked.load(Ordering::Relaxed) <= REFRESH_AHEAD_IDLE.as_secs() as i64;
        cached.as_ref().is_some_and(|e| {
            recent && now >= e.ahead_from && now < e.hard_until && e.retry_at.is_none_or(|at| Instant::now() >= at)
        })
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
        let slot = self.slot(key);
        let fetching = loop {
            let ahead = unix_now() - self.ahead.load(Ordering::Relaxed) <= AHEAD_ALIVE;
            if let Some(auth) = slot.live(ahead) {
                return Ok(auth);
            }
            // Registered before the lock is tried, so that the end of a
            // fetch that holds it cannot be missed.
            let mut ended = std::pin::pin!(slot.fetched.notified());
            ended.as_mut().enable();
            if let Ok(lock) = slot.fetching.try_lock() {
                break Fetching { lock: Some(lock), done: &slot.fetched };
            }
            // Another caller (or a refresh ahead of time) is fetching: an
            // answer that has not expired is served rather than waited for.
            if let Some(auth) = slot.unexpired() {
                return Ok(auth);
            }
            // After a failed fetch the cache is still empty: the woken
            // callers race for the lock and one of them fetches again.
            ended.await;
        };
        // Another caller may have fetched between the check and the lock.
        if let Some(auth) = slot.live(false) {
            return Ok(auth);
        }
        Self::fetch_into(&slot, key, fetch, on_error, fetching).await
    }

    /// Keys whose answers near their refresh point (a quarter of their time
    /// to it, at most a minute, before it) and were asked for within
    /// [`REFRESH_AHEAD_IDLE`]; answers whose refresh failed only once the
    /// pause after the failure is over.
    pub fn due(&self) -> Vec<String> {
        let now = unix_now();
        self.ahead.store(now, Ordering::Relaxed);
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.iter().filter(|(_, slot)| slot.due(now)).map(|(key, _)| key.clone()).collect()
    }

    /// Forgets the keys not asked for within [`REFRESH_AHEAD_IDLE`] whose
    /// answer has expired (or was never cached) and that no fetch holds, so
    /// that a long-running service asked for ever new scopes keeps a bounded
    /// cache; returns them.
    pub fn prune(&self) -> Vec<String> {
        let now = unix_now();
        let idle = REFRESH_AHEAD_IDLE.as_secs() as i64;
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let stale: Vec<String> = slots
            .iter()
            .filter(|(_, slot)| {
                let expired =
                    slot.cached.read().unwrap_or_else(|p| p.into_inner()).as_ref().is_none_or(|e| now >= e.hard_until);
                expired && now - slot.asked.load(Ordering::Relaxed) > idle && slot.fetching.try_lock().is_ok()
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in &stale {
            slots.remove(key);
        }
        stale
    }

    /// Refreshes the answer for `key` now, unless a fetch of it is under
    /// way; a failure is handled as in [`TokenCache::get_or_refresh`] (the
    /// cached answer kept until it expires, or dropped). Callers meanwhile
    /// get the cached answer.
    pub async fn refresh<F, Fut, E, O>(&self, key: &str, fetch: F, on_error: O)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<RegistryAuth>, E>>,
        E: std::fmt::Display,
        O: FnOnce(&E) -> OnError,
    {
        let slot = self.slot(key);
        let Ok(lock) = slot.fetching.try_lock() else { return };
        let fetching = Fetching { lock: Some(lock), done: &slot.fetched };
        if let Err(e) = Self::fetch_into(&slot, key, fetch, on_error, fetching).await {
            tracing::warn!(
                target: "credhost::token",
                key = %key.replace('\u{0}', " "),
                "refreshing registry credentials ahead of time failed: {e}"
            );
        }
    }

    fn slot(&self, key: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get(key) {
            Some(slot) => slot.clone(),
            None => slots.entry(key.to_owned()).or_default().clone(),
        }
    }

    /// Runs `fetch` holding the slot's fetch lock, and caches its answer,
    /// or handles its error.
    async fn fetch_into<F, Fut, E, O>(
        slot: &Slot,
        key: &str,
        fetch: F,
        on_error: O,
        _fetching: Fetching<'_>,
    ) -> Result<Option<RegistryAuth>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<RegistryAuth>, E>>,
        E: std::fmt::Display,
        O: FnOnce(&E) -> OnError,
    {
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
            ahead_from: until - ((until - now) / 4).min(REFRESH_AHEAD_MAX),
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

    /// Sleeps until the unix second `at` has begun.
    async fn until(at: i64) {
        while unix_now() < at {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn secret(a: &Option<RegistryAuth>) -> String {
        a.as_ref().unwrap().secret.expose().to_owned()
    }

    fn token(secret: &str, expires_at: i64) -> Option<RegistryAuth> {
        let mut a = auth(Some(expires_at));
        a.as_mut().unwrap().secret = Secret::new(secret);
        a
    }

    /// An answer asked for recently becomes due before its refresh point;
    /// refreshed, callers get the new answer without fetching. One not asked
    /// for within the idle time is not refreshed.
    #[tokio::test]
    async fn answers_are_refreshed_ahead_of_their_refresh_point() {
        let cache = TokenCache::default();
        let expires = unix_now() + 9;
        cache.get_or_fetch("k", || async { Ok::<_, &str>(token("one", expires)) }).await.unwrap();
        let refresh_at = use_until(unix_now(), Some(expires)).unwrap();
        assert!(cache.due().is_empty(), "due at once");
        until(refresh_at - 1).await;
        assert_eq!(cache.due(), vec!["k".to_owned()]);

        // Not asked for within the idle time: not refreshed.
        let asked = cache.slot("k").asked.swap(unix_now() - REFRESH_AHEAD_IDLE.as_secs() as i64 - 1, Ordering::Relaxed);
        assert!(cache.due().is_empty(), "an idle answer is due");
        cache.slot("k").asked.store(asked, Ordering::Relaxed);

        cache.refresh("k", || async { Ok::<_, &str>(token("two", unix_now() + 3600)) }, |_| OnError::Drop).await;
        let calls = AtomicUsize::new(0);
        let got = cache
            .get_or_fetch("k", || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, &str>(token("three", unix_now() + 3600))
            })
            .await
            .unwrap();
        assert_eq!((secret(&got), calls.load(Ordering::SeqCst)), ("two".to_owned(), 0));
        assert!(cache.due().is_empty());
    }

    /// A refresh ahead of time that fails as unavailable keeps the answer
    /// (not due again within the pause); one refused drops it.
    #[tokio::test]
    async fn a_failed_refresh_ahead_keeps_or_drops_the_answer() {
        for outcome in [OnError::ServeStale, OnError::Drop] {
            let cache = TokenCache::default();
            let expires = unix_now() + 9;
            cache.get_or_fetch("k", || async { Ok::<_, &str>(token("one", expires)) }).await.unwrap();
            until(use_until(unix_now(), Some(expires)).unwrap() - 1).await;
            assert_eq!(cache.due().len(), 1);
            cache.refresh("k", || async { Err::<Option<RegistryAuth>, _>("failed") }, |_| outcome).await;
            assert!(cache.due().is_empty(), "due again at once after a failure");
            let got = cache.get_or_fetch("k", || async { Err::<Option<RegistryAuth>, _>("asked") }).await;
            match outcome {
                OnError::ServeStale => assert_eq!(secret(&got.unwrap()), "one"),
                OnError::Drop => assert_eq!(got.unwrap_err(), "asked"),
            }
        }
    }

    /// Past its refresh point, while another fetch of it is under way, a
    /// caller is served the unexpired answer rather than waiting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_do_not_wait_for_a_slow_refresh() {
        let cache = Arc::new(TokenCache::default());
        let expires = unix_now() + 8;
        cache.get_or_fetch("k", || async { Ok::<_, &str>(token("one", expires)) }).await.unwrap();
        until(use_until(unix_now(), Some(expires)).unwrap()).await;
        let slow = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .refresh(
                        "k",
                        || async {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            Ok::<_, &str>(token("two", unix_now() + 3600))
                        },
                        |_| OnError::ServeStale,
                    )
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = tokio::time::timeout(
            Duration::from_secs(1),
            cache.get_or_fetch("k", || async { Ok::<_, &str>(token("mine", unix_now() + 3600)) }),
        )
        .await
        .expect("a caller waited for the refresh under way");
        assert_eq!(secret(&got.unwrap()), "one");
        slow.abort();
    }

    /// Once answers are refreshed ahead of time, a caller past the refresh
    /// point of an answer it asked for recently is served it without
    /// fetching (the refresher's job); one idle for longer fetches.
    #[tokio::test]
    async fn with_refreshes_ahead_callers_never_fetch_an_answer_they_use() {
        let cache = TokenCache::default();
        let expires = unix_now() + 8;
        cache.get_or_fetch("k", || async { Ok::<_, &str>(token("one", expires)) }).await.unwrap();
        until(use_until(unix_now(), Some(expires)).unwrap()).await;
        cache.due();
        let calls = AtomicUsize::new(0);
        let fetch = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, &str>(token("mine", unix_now() + 3600))
        };
        assert_eq!(secret(&cache.get_or_fetch("k", fetch).await.unwrap()), "one");
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        cache.slot("k").asked.store(unix_now() - REFRESH_AHEAD_IDLE.as_secs() as i64 - 1, Ordering::Relaxed);
        assert_eq!(secret(&cache.get_or_fetch("k", fetch).await.unwrap()), "mine");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    /// Keys idle for longer than the idle time, whose answers expired, are
    /// forgotten; live or recently asked ones are kept.
    #[tokio::test]
    async fn idle_expired_keys_are_pruned() {
        let cache = TokenCache::default();
        cache.get_or_fetch("gone", || async { Ok::<_, &str>(token("a", unix_now() + 1)) }).await.unwrap();
        cache.get_or_fetch("live", || async { Ok::<_, &str>(token("b", unix_now() + 3600)) }).await.unwrap();
        cache.get_or_fetch("recent", || async { Ok::<_, &str>(token("c", unix_now() + 1)) }).await.unwrap();
        let long_ago = unix_now() - REFRESH_AHEAD_IDLE.as_secs() as i64 - 1;
        cache.slot("gone").asked.store(long_ago, Ordering::Relaxed);
        cache.slot("live").asked.store(long_ago, Ordering::Relaxed);
        until(unix_now() + 2).await;
        assert_eq!(cache.prune(), vec!["gone".to_owned()]);
        let mut left: Vec<String> = cache.slots.lock().unwrap().keys().cloned().collect();
        left.sort();
        assert_eq!(left, ["live", "recent"]);
    }
}
