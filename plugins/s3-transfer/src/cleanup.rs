//! Cleaning up after multipart uploads that will not complete: aborting an
//! upload (now, from a dropped future, or again later while the server is
//! unreachable), and sweeping the uploads a Create whose answer was lost may
//! have started.

use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::abort_multipart_upload::AbortMultipartUploadError;
use aws_sdk_s3::operation::list_multipart_uploads::ListMultipartUploadsError;
use aws_sdk_s3::primitives::DateTime;
use aws_sdk_s3::Client;
use futures::future::{BoxFuture, FutureExt};

use crate::retry::{unit_random, unreachable_now};
use crate::timeouts::{control_timeouts, CONTROL_TIMEOUT};

/// How far the server's clock may be from this machine's when telling which
/// multipart uploads a failed Create may have started (the server stamps
/// them with its own time).
const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Pages of `ListMultipartUploads` read when cleaning up after a failed
/// Create (1000 uploads each on AWS).
const MAX_SWEEP_PAGES: usize = 10;

/// Runs a clean-up future after its owner is gone: in a plugin as work the
/// host waits for before it exits, else on the current tokio runtime.
fn spawn_cleanup(what: &str, fut: impl Future<Output = ()> + Send + 'static) {
    #[cfg(feature = "sdk")]
    {
        let _ = what;
        credhost_plugin_sdk::spawn_cleanup(fut);
    }
    #[cfg(not(feature = "sdk"))]
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(fut);
    } else {
        tracing::warn!("upload dropped outside a tokio runtime; {what} is left behind");
    }
}

/// Clean-up work that runs unless disarmed: awaited by an owner that can
/// wait for it ([`Cleanup::run`]), and spawned ([`spawn_cleanup`]) when the
/// owner is dropped first, as an upload future that is cancelled.
pub(crate) struct Cleanup {
    /// What is left behind when the work cannot be spawned, for the log.
    what: &'static str,
    work: Option<BoxFuture<'static, ()>>,
}

impl Cleanup {
    /// Aborts the multipart upload `upload_id`: for an upload that was
    /// created and has not completed.
    pub(crate) fn abort(client: &Client, bucket: &str, key: &str, upload_id: &str) -> Self {
        let work = abort_upload(client.clone(), bucket.to_owned(), key.to_owned(), upload_id.to_owned());
        Self { what: "its multipart upload", work: Some(work.boxed()) }
    }

    /// Aborts the multipart uploads of `key` started since `since`: for a
    /// Create whose outcome is unknown, or still in flight.
    pub(crate) fn sweep(client: &Client, bucket: &str, key: &str, since: SystemTime) -> Self {
        let work = sweep_uploads(client.clone(), bucket.to_owned(), key.to_owned(), since);
        Self { what: "any multipart upload its create started", work: Some(work.boxed()) }
    }

    /// Drops the work: there is nothing to clean up.
    pub(crate) fn disarm(mut self) {
        self.work = None;
    }

    /// Does the work now.
    pub(crate) async fn run(mut self) {
        if let Some(work) = self.work.take() {
            work.await;
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            spawn_cleanup(self.what, work);
        }
    }
}

/// Aborts the multipart uploads of `key` initiated between `since` and now
/// (widened by [`CLOCK_SKEW`], as the server's clock stamps them): what a
/// Create whose answer was lost may have started. Best effort, and bounded
/// by [`CONTROL_TIMEOUT`]; a bucket lifecycle rule must clean up what it
/// misses. An upload of the same key that another client started within
/// that window is aborted too, and fails as it could when racing this one
/// for the key.
async fn sweep_uploads(client: Client, bucket: String, key: String, since: SystemTime) {
    match tokio::time::timeout(CONTROL_TIMEOUT, abort_started_since(&client, &bucket, &key, since)).await {
        Ok(Ok(n)) => tracing::debug!(bucket, key, aborted = n, "cleaned up after a failed CreateMultipartUpload"),
        Ok(Err(e)) => tracing::warn!(
            bucket,
            key,
            error = %DisplayErrorContext(&e),
            "could not list the multipart uploads a failed create may have started; a bucket lifecycle rule must clean them up"
        ),
        Err(_) => tracing::warn!(
            bucket,
            key,
            "timed out cleaning up after a failed CreateMultipartUpload; a bucket lifecycle rule must clean up"
        ),
    }
}

async fn abort_started_since(
    client: &Client,
    bucket: &str,
    key: &str,
    since: SystemTime,
) -> Result<usize, SdkError<ListMultipartUploadsError, HttpResponse>> {
    let from = DateTime::from(since.checked_sub(CLOCK_SKEW).unwrap_or(since));
    let to = DateTime::from(SystemTime::now() + CLOCK_SKEW);
    let (mut key_marker, mut id_marker) = (None, None);
    let mut aborted = 0;
    for _ in 0..MAX_SWEEP_PAGES {
        let page = client
            .list_multipart_uploads()
            .bucket(bucket)
            .prefix(key)
            .set_key_marker(key_marker)
            .set_upload_id_marker(id_marker)
            .customize()
            .config_override(aws_sdk_s3::config::Builder::default().timeout_config(control_timeouts()))
            .send()
            .await?;
        for upload in page.uploads() {
            let (Some(k), Some(id), Some(at)) = (upload.key(), upload.upload_id(), upload.initiated()) else {
                continue;
            };
            if k == key && (from..=to).contains(at) {
                abort_upload(client.clone(), bucket.to_owned(), key.to_owned(), id.to_owned()).await;
                aborted += 1;
            }
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        id_marker = page.next_upload_id_marker().map(str::to_owned);
        if page.is_truncated() != Some(true) || (key_marker.is_none() && id_marker.is_none()) {
            break;
        }
    }
    Ok(aborted)
}

/// Aborts a multipart upload. Aborting is idempotent (a second abort finds
/// the upload gone, which counts as done), so the SDK retries it like any
/// idempotent request, each attempt bounded by [`CONTROL_TIMEOUT`]. When the
/// server cannot be reached (it died with the upload), the abort is tried
/// again in the background while the process runs ([`abort_later`]).
async fn abort_upload(client: Client, bucket: String, key: String, upload_id: String) {
    match send_abort(&client, &bucket, &key, &upload_id).await {
        Ok(()) => tracing::debug!(bucket, key, upload_id, "multipart upload aborted"),
        Err(e) if unreachable_now(&e) => {
            tracing::warn!(
                bucket,
                key,
                upload_id,
                error = %DisplayErrorContext(&e),
                "could not abort multipart upload; trying again in the background while this process runs \
                 (a bucket lifecycle rule cleans it up otherwise)"
            );
            abort_later(client, bucket, key, upload_id);
        }
        Err(e) => tracing::warn!(
            bucket,
            key,
            upload_id,
            error = %DisplayErrorContext(&e),
            "could not abort multipart upload; a bucket lifecycle rule must clean it up"
        ),
    }
}

/// One abort request (with the SDK's retries); an upload already gone is done.
async fn send_abort(
    client: &Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), SdkError<AbortMultipartUploadError, HttpResponse>> {
    let result = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .customize()
        .config_override(aws_sdk_s3::config::Builder::default().timeout_config(control_timeouts()))
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(e)) if e.err().code() == Some("NoSuchUpload") => Ok(()),
        Err(e) => Err(e),
    }
}

/// How long a process keeps trying to abort an upload whose server could
/// not be reached, and the longest pause between tries.
const ABORT_LATER_FOR: Duration = Duration::from_secs(15 * 60);
const ABORT_LATER_MAX_PAUSE: Duration = Duration::from_secs(60);

/// Tries the abort again, with growing pauses, until it succeeds, the server
/// refuses it, or [`ABORT_LATER_FOR`] has passed. A long-running service
/// (the storage server restarted after it died mid-upload) thus leaves no
/// upload behind; a command-line process usually ends first, and the
/// bucket's lifecycle rule is left to clean up. The task is not the
/// caller's cleanup: nothing waits for it (`wait_idle` neither).
fn abort_later(client: Client, bucket: String, key: String, upload_id: String) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let give_up = tokio::time::Instant::now() + ABORT_LATER_FOR;
        let mut pause = Duration::from_secs(1);
        loop {
            tokio::time::sleep(pause.mul_f64(0.5 + 0.5 * unit_random())).await;
            match send_abort(&client, &bucket, &key, &upload_id).await {
                Ok(()) => {
                    tracing::info!(
                        bucket,
                        key,
                        upload_id,
                        "aborted the multipart upload once the server answered again"
                    );
                    return;
                }
                Err(e) if unreachable_now(&e) && tokio::time::Instant::now() + pause < give_up => {
                    pause = (pause * 2).min(ABORT_LATER_MAX_PAUSE);
                }
                Err(e) => {
                    tracing::warn!(
                        bucket,
                        key,
                        upload_id,
                        error = %DisplayErrorContext(&e),
                        "gave up aborting the multipart upload; a bucket lifecycle rule must clean it up"
                    );
                    return;
                }
            }
        }
    });
}
