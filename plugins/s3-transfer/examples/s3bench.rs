//! Upload and download throughput of this crate against a real endpoint.
//!
//! Usage: `s3bench [MIB] [CONCURRENCY] [PART_MIB] [SINGLE_PUT_MIB]` (defaults
//! 512, 4, 16, PART_MIB), with
//! the endpoint from CREDHOST_TEST_S3_ENDPOINT, CREDHOST_TEST_S3_ACCESS_KEY,
//! CREDHOST_TEST_S3_SECRET_KEY, CREDHOST_TEST_S3_REGION and
//! CREDHOST_TEST_S3_BUCKET. Generates a file of MIB MiB in a temporary
//! directory, then times `upload_path`, `upload_reader`, `download_to_path`
//! and `download_to_writer`, printing MiB/s, client CPU seconds and peak RSS
//! (VmHWM, reset before each step) for each. The peak includes the runtime
//! and SDK, so compare steps rather than read it as the buffers alone.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use credhost_s3_transfer::{
    build_client, download_to_path, download_to_writer, upload_path, upload_reader, ClientSettings, TransferOptions,
    Transferred,
};

const MIB: u64 = 1024 * 1024;

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("s3bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s3bench: {e}");
            let mut source = std::error::Error::source(&*e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| -> Result<u64, BoxError> {
        match args.get(i) {
            Some(a) => Ok(a.parse().map_err(|_| format!("argument {a:?} is not a number"))?),
            None => Ok(default),
        }
    };
    let mib = arg(0, 512)?;
    let opts = TransferOptions {
        concurrency: usize::try_from(arg(1, 4)?)?,
        part_size: arg(2, 16)? * MIB,
        single_put_threshold: arg(3, arg(2, 16)?)? * MIB,
        ..TransferOptions::default()
    };
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let settings = ClientSettings {
        endpoint: Some(var("CREDHOST_TEST_S3_ENDPOINT")?),
        region: var("CREDHOST_TEST_S3_REGION")?,
        access_key_id: var("CREDHOST_TEST_S3_ACCESS_KEY")?,
        secret_access_key: var("CREDHOST_TEST_S3_SECRET_KEY")?,
        session_token: None,
        force_path_style: true,
    };
    let bucket = var("CREDHOST_TEST_S3_BUCKET")?;
    let client = build_client(&settings);

    let dir = tempfile::tempdir()?;
    let src = dir.path().join("source.bin");
    let size = mib * MIB;
    let src_crc = generate(&src, size)?;
    let key = format!("s3bench/{}-{mib}MiB", std::process::id());
    println!(
        "s3bench: {mib} MiB, part {} MiB, concurrency {}, single put below {} MiB",
        opts.part_size / MIB,
        opts.concurrency,
        opts.single_put_threshold / MIB
    );

    let up = step("upload_path", size, upload_path(&client, &bucket, &key, &src, &opts, None)).await?;
    check(up, size, src_crc)?;

    let reader = tokio::fs::File::open(&src).await?;
    let key2 = format!("{key}-reader");
    let up = step("upload_reader", size, upload_reader(&client, &bucket, &key2, reader, &opts, None)).await?;
    check(up, size, src_crc)?;

    let dest = dir.path().join("download.bin");
    let down = step("download_to_path", size, download_to_path(&client, &bucket, &key, &dest, &opts, None)).await?;
    check(down, size, src_crc)?;

    let writer = tokio::fs::File::create(dir.path().join("written.bin")).await?;
    let down =
        step("download_to_writer", size, download_to_writer(&client, &bucket, &key, writer, &opts, None)).await?;
    check(down, size, src_crc)?;

    for k in [&key, &key2] {
        client.delete_object().bucket(&bucket).key(k).send().await?;
    }
    Ok(())
}

/// Runs one transfer and prints its figures.
async fn step<F>(name: &str, size: u64, transfer: F) -> Result<Transferred, BoxError>
where
    F: std::future::Future<Output = Result<Transferred, credhost_s3_transfer::TransferError>>,
{
    let before = rss("VmRSS:");
    reset_peak_rss();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let result = transfer.await?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds().zip(cpu0).map(|(b, a)| b - a);
    println!(
        "{name:<20} {:>8.1} MiB/s  {secs:>6.2} s  client cpu {}  peak rss {} (rss before {})",
        size as f64 / MIB as f64 / secs,
        cpu.map_or("?".to_owned(), |c| format!("{c:.2} s")),
        mib_text(rss("VmHWM:")),
        mib_text(before),
    );
    Ok(result)
}

fn check(t: Transferred, size: u64, crc: u32) -> Result<(), BoxError> {
    if t.size != size || t.crc32c != crc {
        return Err(format!("transfer returned {t:?}, expected size {size} crc {crc:08x}").into());
    }
    Ok(())
}

/// Writes `size` incompressible bytes through a 1 MiB buffer; returns their CRC32C.
fn generate(path: &std::path::Path, size: u64) -> Result<u32, BoxError> {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    let (mut written, mut crc) = (0u64, 0u32);
    while written < size {
        for chunk in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes());
        }
        let n = (size - written).min(block.len() as u64) as usize;
        file.write_all(&block[..n])?;
        crc = crc32c::crc32c_append(crc, &block[..n]);
        written += n as u64;
    }
    file.flush()?;
    Ok(crc)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0); ignored elsewhere.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A memory figure from /proc/self/status in KiB: `VmRSS:` (now) or
/// `VmHWM:` (peak since the last reset).
fn rss(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib_text(kib: Option<u64>) -> String {
    kib.map_or("?".to_owned(), |k| format!("{} MiB", k / 1024))
}

/// User + system CPU time of this process, assuming the usual 100 ticks/s.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
