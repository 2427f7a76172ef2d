//! Multipart uploads whose Create or Complete answers are lost, against a
//! real S3-compatible server (SeaweedFS in CI) behind a small proxy.
//!
//! A real server cannot be made to act on a request and then lose its
//! answer, so the proxy does that part: it forwards a request, reads the
//! server's whole answer (the server has acted), and closes the client's
//! connection without passing the answer on. It can also close a connection
//! without forwarding the request, answer `503 SlowDown` itself, or answer
//! `500 InternalError` with a message that spans lines. Those four faults
//! are the only mock here; everything else is the real server. A fault
//! applies to the next request of one call, or to its n-th request; the
//! proxy also keeps the `Range` header of every ranged GET, in order.
//!
//! The server comes from the environment, as for `seaweedfs.rs`:
//! CREDHOST_TEST_S3_ENDPOINT, CREDHOST_TEST_S3_ACCESS_KEY,
//! CREDHOST_TEST_S3_SECRET_KEY, CREDHOST_TEST_S3_REGION and
//! CREDHOST_TEST_S3_BUCKET. Without them every test fails.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_s3::Client;
use credhost_s3_transfer::{
    build_client, download_to_path, upload_path, upload_reader, TransferErrorKind, TransferOptions, Transferred,
};

mod common;
use common::*;

/// A client talking to the server directly, for checking what it holds.
fn direct() -> (Client, String) {
    init_logging("debug");
    (build_client(&settings(var("CREDHOST_TEST_S3_ENDPOINT"))), var("CREDHOST_TEST_S3_BUCKET"))
}

/// A key unique to this test run.
fn key(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("s3-transfer-tests/lost-answers/{}-{nanos}/{name}", std::process::id())
}

fn opts() -> TransferOptions {
    TransferOptions { part_size: PART, concurrency: 2, single_put_threshold: PART, ..Default::default() }
}

/// The S3 request a proxied request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Call {
    Create,
    UploadPart,
    Complete,
    Abort,
    ListUploads,
    /// A `PutObject` (a PUT that is not a part).
    Put,
    /// A GET of an object with a `Range` header.
    RangedGet,
    Other,
}

/// What the proxy does to a request instead of relaying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Forward the request, read the server's whole answer, then close the
    /// client's connection unanswered: the server acted, the client never
    /// hears so.
    LoseAnswer,
    /// Close the client's connection without forwarding: the server never
    /// sees the request.
    Swallow,
    /// Answer `503 SlowDown` without forwarding.
    Busy,
    /// Answer `500 InternalError` without forwarding, with a message that
    /// spans lines, and a request id.
    Broken,
}

/// A fault waiting for its request.
struct Armed {
    call: Call,
    /// The request of `call` it applies to, counting from 1 over all of the
    /// proxy's requests; `None` for the next one.
    nth: Option<usize>,
    fault: Fault,
}

#[derive(Default)]
struct State {
    faults: Vec<Armed>,
    /// Requests seen per call.
    seen: HashMap<Call, usize>,
    /// The `Range` header of every ranged GET, in the order they came.
    ranges: Vec<String>,
}

/// An HTTP/1.1 proxy in front of the server, one request per connection.
struct Proxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Proxy {
    fn start() -> Self {
        let endpoint = var("CREDHOST_TEST_S3_ENDPOINT");
        let upstream: SocketAddr = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("CREDHOST_TEST_S3_ENDPOINT {endpoint} is not http://IP:PORT: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let state = shared.clone();
                std::thread::spawn(move || {
                    if let Err(e) = relay(conn, upstream, &state) {
                        eprintln!("proxy: {e}");
                    }
                });
            }
        });
        Self { addr, state }
    }

    /// A client that talks to the server through this proxy.
    fn client(&self) -> Client {
        build_client(&settings(format!("http://{}", self.addr)))
    }

    /// Arms `fault` for the next request of `call`.
    fn arm(&self, call: Call, fault: Fault) {
        self.state.lock().unwrap().faults.push(Armed { call, nth: None, fault });
    }

    /// Arms `fault` for request number `n` (from 1) of `call`.
    fn arm_nth(&self, call: Call, n: usize, fault: Fault) {
        self.state.lock().unwrap().faults.push(Armed { call, nth: Some(n), fault });
    }

    /// The `Range` headers of the ranged GETs seen so far, in order.
    fn ranges(&self) -> Vec<String> {
        self.state.lock().unwrap().ranges.clone()
    }

    fn seen(&self, call: Call) -> usize {
        self.state.lock().unwrap().seen.get(&call).copied().unwrap_or(0)
    }
}

/// Which call a request names, from its method, query keys and whether it
/// has a `Range` header.
fn classify(method: &str, target: &str, ranged: bool) -> Call {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let has = |name: &str| query.split('&').any(|kv| kv.split('=').next() == Some(name));
    match method {
        "POST" if has("uploads") => Call::Create,
        "POST" if has("uploadId") => Call::Complete,
        "PUT" if has("partNumber") && has("uploadId") => Call::UploadPart,
        "PUT" if !has("partNumber") => Call::Put,
        "DELETE" if has("uploadId") => Call::Abort,
        "GET" if has("uploads") => Call::ListUploads,
        "GET" if ranged => Call::RangedGet,
        _ => Call::Other,
    }
}

/// The head of an HTTP message (through the blank line), or `None` at the
/// end of the stream.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

/// The head with any `Connection` header replaced by `Connection: close`, so
/// that both sides end the connection after one exchange.
fn closing(head: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for line in head.iter().filter(|l| !l.to_ascii_lowercase().starts_with("connection:")) {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn relay(client: TcpStream, upstream: SocketAddr, state: &Mutex<State>) -> io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let Some(head) = read_head(&mut from_client)? else { return Ok(()) };
    let mut parts = head.first().map(String::as_str).unwrap_or_default().split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let header = |name: &str| {
        head.iter().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    assert!(header("transfer-encoding").is_none(), "the proxy only relays bodies with a Content-Length");
    let length: usize = header("content-length").map_or(Ok(0), |v| v.parse()).map_err(io::Error::other)?;
    let mut body = vec![0; length];
    from_client.read_exact(&mut body)?;

    let range = header("range");
    let call = classify(method, target, range.is_some());
    let fault = {
        let mut s = state.lock().unwrap();
        let seen = s.seen.entry(call).or_default();
        *seen += 1;
        let n = *seen;
        if let (Call::RangedGet, Some(range)) = (call, range) {
            s.ranges.push(range);
        }
        let found = s.faults.iter().position(|a| a.call == call && a.nth.is_none_or(|nth| nth == n));
        found.map(|i| s.faults.remove(i).fault)
    };
    let mut client = client;
    match fault {
        Some(Fault::Swallow) => return client.shutdown(Shutdown::Both),
        Some(Fault::Busy) => {
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                       <Message>Please reduce your request rate.</Message></Error>";
            return answer_error(client, "503 Service Unavailable", "", xml);
        }
        Some(Fault::Broken) => {
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InternalError</Code>\
                       <Message>We broke.\n\t  Try again.</Message><RequestId>REQ42</RequestId></Error>";
            return answer_error(client, "500 Internal Server Error", "x-amz-request-id: REQ42\r\n", xml);
        }
        _ => {}
    }

    let mut server = TcpStream::connect(upstream)?;
    server.write_all(&closing(&head))?;
    server.write_all(&body)?;
    let mut from_server = BufReader::new(server);
    let Some(answer_head) = read_head(&mut from_server)? else {
        return Err(io::Error::other("the server closed the connection unanswered"));
    };
    // Asked to close, the server ends the stream after its answer.
    let mut answer_body = Vec::new();
    from_server.read_to_end(&mut answer_body)?;
    if fault == Some(Fault::LoseAnswer) {
        return client.shutdown(Shutdown::Both);
    }
    client.write_all(&closing(&answer_head))?;
    client.write_all(&answer_body)?;
    client.shutdown(Shutdown::Both)
}

/// Answers `status` with an S3 error document and closes the connection.
fn answer_error(mut client: TcpStream, status: &str, headers: &str, xml: &str) -> io::Result<()> {
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{xml}",
        xml.len()
    );
    client.write_all(answer.as_bytes())?;
    client.shutdown(Shutdown::Both)
}

/// Multipart uploads of `key` still open on the server.
async fn open_uploads(client: &Client, bucket: &str, key: &str) -> Vec<String> {
    let out = client.list_multipart_uploads().bucket(bucket).prefix(key).send().await.expect("ListMultipartUploads");
    out.uploads().iter().filter(|u| u.key() == Some(key)).filter_map(|u| u.upload_id().map(str::to_owned)).collect()
}

/// Asserts that the server holds exactly `content` at `key`.
async fn assert_stored(client: &Client, bucket: &str, key: &str, content: &[u8]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("back");
    let got = download_to_path(client, bucket, key, &dest, &opts(), None).await.expect("download");
    assert_eq!(got, Transferred { size: content.len() as u64, crc32c: crc32c::crc32c(content) });
    assert!(std::fs::read(&dest).expect("read back") == content, "stored bytes of {key} differ");
}

async fn assert_absent(client: &Client, bucket: &str, key: &str) {
    let head = client.head_object().bucket(bucket).key(key).send().await;
    assert!(head.is_err(), "object {key} exists");
}

/// Writes `content` to a file in `dir` and returns its path.
fn source(dir: &tempfile::TempDir, content: &[u8]) -> std::path::PathBuf {
    let path = dir.path().join("source.bin");
    std::fs::write(&path, content).expect("write source");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_whose_answer_is_lost_succeeds_when_the_object_is_stored() {
    let (direct, bucket) = direct();
    let proxy = Proxy::start();
    let content = data(PART * 2 + 777, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key("complete-lost/path");
    proxy.arm(Call::Complete, Fault::LoseAnswer);

    let up = upload_path(&proxy.client(), &bucket, &k, &source(&dir, &content), &opts(), None)
        .await
        .expect("the object is stored, so the upload succeeds");
    assert_eq!(up, Transferred { size: content.len() as u64, crc32c: crc32c::crc32c(&content) });
    // Sent once: neither the SDK nor the upload sent it again.
    assert_eq!(proxy.seen(Call::Complete), 1);
    assert_eq!(proxy.seen(Call::Abort), 0);
    assert_stored(&direct, &bucket, &k, &content).await;
    assert!(open_uploads(&direct, &bucket, &k).await.is_empty());
}

/// A create-only `PutObject` whose answer is lost stored the object: the
/// retry is refused (412), and the upload is reported stored, not "taken".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_put_whose_answer_is_lost_is_reported_stored() {
    let (direct, bucket) = direct();
    let proxy = Proxy::start();
    let content = data(PART / 2 + 5, 7);
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key("create-only-put-lost/path");
    proxy.arm(Call::Put, Fault::LoseAnswer);
    let o = TransferOptions { if_absent: true, ..opts() };
    let up = upload_path(&proxy.client(), &bucket, &k, &source(&dir, &content), &o, None)
        .await
        .expect("the object is this upload's, so the upload succeeds");
    assert_eq!(up.size, content.len() as u64);
    assert_eq!(proxy.seen(Call::Put), 2, "sent again once, and refused as the name was taken");
    assert_stored(&direct, &bucket, &k, &content).await;

    // Another upload of the name is refused as taken.
    let other = data(PART / 2 + 5, 8);
    let err = upload_path(&proxy.client(), &bucket, &k, &source(&dir, &other), &o, None).await.unwrap_err();
    assert_eq!(err.kind(), credhost_s3_transfer::TransferErrorKind::AlreadyExists, "{err}");
    assert_stored(&direct, &bucket, &k, &content).await;
}

/// A create-only complete whose answer is lost is reported stored too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_complete_whose_answer_is_lost_is_reported_stored() {
    let (direct, bucket) = direct();
    let proxy = Proxy::start();
    let content = data(PART * 2 + 9, 9);
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key("create-only-complete-lost/path");
    proxy.arm(Call::Complete, Fault::LoseAnswer);
    let o = TransferOptions { if_absent: true, ..opts() };
    upload_path(&proxy.client(), &bucket, &k, &source(&dir, &content), &o, None)
        .await
        .expect("the object is this upload's, so the upload succeeds");
    assert_stored(&direct, &bucket, &k, &content).await;
    assert!(open_uploads(&direct, &bucket, &k).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_complete_whose_answer_is_lost_succeeds_by_the_full_object_checksum() {
    let (direct, bucket) = direct();
    let proxy = Proxy::start();
    let content = data(PART * 2 + 999, 2);
    let k = key("complete-lost/stream");
    proxy.arm(Call::Complete, Fault::LoseAnswer);

    let up = upload_reader(&proxy.client(), &bucket, &k, &content[..], &opts(), None)
        .await
        .expect("the object is stored, so the upload succeeds");
    assert_eq!(up, Transferred { size: content.len() as u64, crc32c: crc32c::crc32c(&content) });
    assert_eq!(proxy.seen(Call::Complete), 1);
    assert_stored(&direct, &bucket, &k, &content).await;
    assert!(open_uploads(&direct, &bucket, &k).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_that_never_arrives_fails_and_leaves_nothing() {
    let (direct, bucket) = direct();
    let proxy = Proxy::start();
    let content = data(PART + 1, 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key("complete-swallowed");
    proxy.arm(Call::Complete, Fault::Swallow);

    let err = upload_path(&proxy.client(), &bucket, &k, &source(&dir, &content), &opts(), None)
        .await
        .expect_err("nothing was stored");
    assert_eq!(err.kind(), TransferErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(proxy.seen(Call::Complete), 1, "CompleteMultipartUpload was sent again");
    assert!(proxy.seen(Call::Abort) >= 1, "the upload was not aborted");
    assert_absent(&direct, &bucket, &k).await;
    assert!(open_uploads(&direct, &bucket, &k).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_whose_answer_is_lost_leaves_no_upload_and_a_second_try_succeeds() {
    let (direct, bucket) = direct();
    let proxy = Proxy::start();
    let content = data(PART * 2, 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = source(&dir, &content);
    let k = key("create-lost");
    proxy.arm(Call::Create, Fault::LoseAnswer);

    let client = proxy.client();
    let err = upload_path(&client, &bucket, &k, &path, &opts(), None).await.expect_err("the create answer was lost");
    assert_eq!(err.kind(), TransferErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(proxy.seen(Call::Create), 1, "CreateMultipartUpload was sent again");
    assert_eq!(proxy.seen(Call::UploadPart), 0);
    // The upload the lost create started was found and aborted.
    assert!(proxy.seen(Call::ListUploads) >= 1);
    assert_eq!(proxy.seen(Call::Abort), 1);
    assert!(open_uploads(&direct, &bucket, &k).await.is_empty(), "an upload was left behind");
    assert_absent(&direct, &bucket, &k).await;

    // The caller tries again.
    upload_path(&client, &bucket, &k, &path, &opts(), None).await.expect("second try");
    assert_stored(&direct, &bucket, &k, &content).await;
    assert!(open_uploads(&direct, &bucket, &k).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_that_never_arrives_aborts_nothing_else() {
    let (direct, bucket) = direct();
    let proxy = Proxy::start();
    let content = data(PART * 2, 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key("create-swallowed");
    // An upload of the key started long enough before this one is not its own.
    let earlier = direct.create_multipart_upload().bucket(&bucket).key(&k).send().await.expect("earlier upload");
    let earlier = earlier.upload_id().expect("upload id").to_owned();
    tokio::time::sleep(Duration::from_secs(7)).await;
    proxy.arm(Call::Create, Fault::Swallow);

    let err = upload_path(&proxy.client(), &bucket, &k, &source(&dir, &content), &opts(), None)
        .await
        .expect_err("the create never arrived");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(proxy.seen(Call::Create), 1);
    assert_eq!(proxy.seen(Call::Abort), 0, "an upload started before this one was aborted");
    assert_eq!(open_uploads(&direct, &bucket, &k).await, vec![earlier.clone()]);
    direct.abort_multipart_upload().bucket(&bucket).key(&k).upload_id(&earlier).send().await.expect("abort");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_answers_to_create_and_complete_are_sent_again() {
    let (direct, bucket) = direct();
    let proxy = Proxy::start();
    let content = data(PART + 12_345, 6);
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key("busy");
    proxy.arm(Call::Create, Fault::Busy);
    proxy.arm(Call::Complete, Fault::Busy);

    upload_path(&proxy.client(), &bucket, &k, &source(&dir, &content), &opts(), None).await.expect("upload");
    assert_eq!(proxy.seen(Call::Create), 2);
    assert_eq!(proxy.seen(Call::Complete), 2);
    assert_eq!(proxy.seen(Call::ListUploads), 0, "a refused create started nothing to clean up");
    assert_stored(&direct, &bucket, &k, &content).await;
    assert!(open_uploads(&direct, &bucket, &k).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_whose_answers_are_lost_are_retried_by_the_sdk() {
    let (direct, bucket) = direct();
    let proxy = Proxy::start();
    let content = data(PART * 3, 7);
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key("part-lost");
    proxy.arm(Call::UploadPart, Fault::LoseAnswer);
    proxy.arm(Call::UploadPart, Fault::Swallow);

    upload_path(&proxy.client(), &bucket, &k, &source(&dir, &content), &opts(), None).await.expect("upload");
    assert_eq!(proxy.seen(Call::UploadPart), 5, "3 parts, 2 of them twice");
    assert_eq!(proxy.seen(Call::Complete), 1);
    assert_stored(&direct, &bucket, &k, &content).await;
    assert!(open_uploads(&direct, &bucket, &k).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_failure_is_one_clean_line_with_the_servers_words_and_request_id() {
    let (direct, bucket) = direct();
    let proxy = Proxy::start();
    let content = data(PART + 5, 8);
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key("broken");
    for _ in 0..10 {
        proxy.arm(Call::Create, Fault::Broken);
    }

    let err = upload_path(&proxy.client(), &bucket, &k, &source(&dir, &content), &opts(), None)
        .await
        .expect_err("every create fails");
    assert_eq!(err.kind(), TransferErrorKind::Unavailable);
    assert!(err.is_retryable());
    assert_eq!((err.service_code(), err.http_status()), (Some("InternalError"), Some(500)));
    assert_eq!(
        err.to_string(),
        format!(
            "upload of {bucket}/{k} failed: service unavailable (InternalError: We broke. Try again.; request id REQ42)"
        )
    );
    assert_absent(&direct, &bucket, &k).await;
    assert!(open_uploads(&direct, &bucket, &k).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_gets_whose_answers_are_lost_are_sent_again_once() {
    let (direct, bucket) = direct();
    let proxy = Proxy::start();
    let content = data(PART * 3 + 4321, 10);
    let dir = tempfile::tempdir().expect("tempdir");
    let k = key("ranged-get-lost");
    upload_path(&direct, &bucket, &k, &source(&dir, &content), &opts(), None).await.expect("upload");
    // A 4-part object read by 3 streams at once, one range each. Which
    // request comes first is up to the streams; the first and the second
    // to arrive fail.
    proxy.arm_nth(Call::RangedGet, 1, Fault::LoseAnswer);
    proxy.arm_nth(Call::RangedGet, 2, Fault::Swallow);

    let dest = dir.path().join("back");
    let o = TransferOptions { concurrency: 3, ..opts() };
    let got = download_to_path(&proxy.client(), &bucket, &k, &dest, &o, None).await.expect("download");
    assert_eq!(got, Transferred { size: content.len() as u64, crc32c: crc32c::crc32c(&content) });
    assert!(std::fs::read(&dest).expect("read back") == content, "downloaded bytes differ");

    let sent = proxy.ranges();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in &sent {
        *counts.entry(r).or_default() += 1;
    }
    let mut distinct: Vec<(u64, u64)> = counts.keys().map(|r| parse_range(r)).collect();
    distinct.sort_unstable();
    assert!(distinct.len() >= 3, "{} ranges for a 4-part object at concurrency 3: {sent:?}", distinct.len());
    // The ranges cover the object exactly once, end to end.
    let mut next = 0;
    for (first, last) in &distinct {
        assert_eq!(*first, next, "ranges overlap or leave a gap: {sent:?}");
        next = last + 1;
    }
    assert_eq!(next, content.len() as u64, "ranges end before the object does: {sent:?}");
    // One more GET per fault, for the range that failed, and none other.
    assert_eq!(proxy.seen(Call::RangedGet), distinct.len() + 2, "{sent:?}");
    for (range, n) in &counts {
        let faulted = sent[..2].iter().filter(|r| r == range).count();
        assert_eq!(*n, 1 + faulted, "{range} was asked for {n} times: {sent:?}");
    }
}

/// `(first, last)` of a `bytes=FIRST-LAST` header.
fn parse_range(header: &str) -> (u64, u64) {
    let span = header.strip_prefix("bytes=").unwrap_or_else(|| panic!("not a byte range: {header}"));
    let (first, last) = span.split_once('-').unwrap_or_else(|| panic!("not a closed range: {header}"));
    (first.parse().expect("range start"), last.parse().expect("range end"))
}
