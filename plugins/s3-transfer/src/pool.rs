//! A bounded pool of part buffers, so multipart memory does not grow with the
//! object size.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Hands out at most `count` buffers of `size` bytes at a time and reuses
/// returned ones (no page faults or mmap/munmap per part).
#[derive(Clone)]
pub(crate) struct BufferPool {
    inner: Arc<Inner>,
}

struct Inner {
    free: Mutex<Vec<BytesMut>>,
    permits: Arc<Semaphore>,
    size: usize,
}

impl BufferPool {
    pub(crate) fn new(size: usize, count: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                free: Mutex::new(Vec::with_capacity(count)),
                permits: Arc::new(Semaphore::new(count)),
                size,
            }),
        }
    }

    /// Waits for a free buffer. Its length is the pool's buffer size; the
    /// content is unspecified (zeros or a previous part).
    pub(crate) async fn acquire(&self) -> PooledBuf {
        // The semaphore is never closed, so acquiring only fails if it were;
        // fall back to an unbounded buffer rather than panicking.
        let permit = self.inner.permits.clone().acquire_owned().await.ok();
        let reused = self.inner.free.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut buf = reused.unwrap_or_else(|| BytesMut::zeroed(self.inner.size));
        // A reused buffer may have been truncated to a short last part:
        // zero-fill back to full length (only the tail is touched).
        buf.resize(self.inner.size, 0);
        PooledBuf { buf: Some(buf), pool: self.inner.clone(), _permit: permit }
    }
}

/// A buffer lent from a [`BufferPool`]; going out of scope returns it.
pub(crate) struct PooledBuf {
    buf: Option<BytesMut>,
    pool: Arc<Inner>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl PooledBuf {
    /// The whole buffer, to fill.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or_default()
    }

    /// Freezes the first `len` bytes for sending. Pass the `Bytes` (or a
    /// clone) to the request and hand it back with [`PooledBuf::restore`]
    /// once the request is done, so the allocation can be reused.
    pub(crate) fn freeze(&mut self, len: usize) -> Bytes {
        let mut buf = self.buf.take().unwrap_or_default();
        buf.truncate(len);
        buf.freeze()
    }

    /// Takes back frozen bytes. If something still shares them, they are
    /// simply dropped and a fresh buffer is allocated next time.
    pub(crate) fn restore(&mut self, bytes: Bytes) {
        if let Ok(buf) = bytes.try_into_mut() {
            self.buf = Some(buf);
        }
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            if buf.capacity() >= self.pool.size {
                self.pool.free.lock().unwrap_or_else(PoisonError::into_inner).push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reuses_buffers_and_bounds_count() {
        let pool = BufferPool::new(1024, 2);
        let mut a = pool.acquire().await;
        let ptr = a.as_mut_slice().as_ptr();
        a.as_mut_slice()[0] = 7;
        let bytes = a.freeze(10);
        let clone = bytes.clone();
        assert_eq!(clone.len(), 10);
        drop(clone);
        a.restore(bytes);
        drop(a);

        let mut b = pool.acquire().await;
        assert_eq!(b.as_mut_slice().as_ptr(), ptr, "allocation reused");
        assert_eq!(b.as_mut_slice().len(), 1024, "length restored after truncation");
        let _c = pool.acquire().await;
        // Two out: a third must wait.
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), pool.acquire()).await;
        assert!(third.is_err());
        drop(b);
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), pool.acquire()).await;
        assert!(third.is_ok());
    }

    #[tokio::test]
    async fn shared_bytes_are_not_reused() {
        let pool = BufferPool::new(64, 1);
        let mut a = pool.acquire().await;
        let bytes = a.freeze(64);
        let kept = bytes.clone();
        a.restore(bytes);
        drop(a);
        let mut b = pool.acquire().await;
        b.as_mut_slice()[0] = 1;
        assert_eq!(kept[0], 0, "bytes still held elsewhere are never written");
    }
}
