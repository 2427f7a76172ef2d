//! The main job on the configured platform (the zero-setup default is the
//! filesystem store): build a project ZIP, upload it through the active
//! provider, download it again, and check the bytes are identical.
//!
//! ```text
//! cargo build --release -p credhost-local -p credhost --lib --example roundtrip && target/release/examples/roundtrip [PLUGINS_TOML]
//! ```
//!
//! (One `cargo build` for the plugin and the example: two invocations would
//! resolve different feature sets and compile much of the tree twice.)

use std::{io::Write, path::Path, time::Instant};

fn main() {
    if let Err(e) = run() {
        eprintln!("roundtrip: {e} ({})", e.kind());
        std::process::exit(1);
    }
}

fn run() -> credhost::Result<()> {
    let config = std::env::args().nth(1).unwrap_or_else(|| "plugins.toml".to_owned());
    let rt = tokio::runtime::Runtime::new().map_err(|e| credhost::Error::Internal(e.to_string()))?;
    rt.block_on(async {
        let host = credhost::Host::from_file(Path::new(&config), None)?;
        let provider = host.active().await?;
        println!("platform: {} (plugin {} {})", provider.name(), provider.plugin(), provider.info().version);

        let work = tempfile::tempdir().map_err(|e| credhost::Error::io("cannot create", "temp dir", e))?;
        let zip_path = work.path().join("1234.zip");
        write_project_zip(&zip_path).map_err(|e| credhost::Error::io("cannot write", &zip_path, e))?;

        let t = Instant::now();
        let put = provider.upload_file(&zip_path, &Default::default()).await?;
        println!(
            "uploaded   {}/{} ({} bytes, {}) in {:.2?}",
            put.bucket,
            put.name,
            put.size,
            put.checksum,
            t.elapsed()
        );

        let back = work.path().join("downloaded.zip");
        let t = Instant::now();
        let got = provider.download_to_path(&put.bucket, &put.name, &back, &Default::default()).await?;
        println!(
            "downloaded {}/{} ({} bytes, {}) in {:.2?}",
            got.bucket,
            got.name,
            got.size,
            got.checksum,
            t.elapsed()
        );

        let same = std::fs::read(&zip_path).ok() == std::fs::read(&back).ok();
        if !same || put.checksum != got.checksum {
            return Err(credhost::Error::Internal("downloaded bytes differ from the upload".into()));
        }
        println!("round trip ok: identical bytes");
        Ok(())
    })
}

/// A small project archive: a Dockerfile and a scraper script, as a deploy
/// endpoint would receive.
fn write_project_zip(path: &Path) -> std::io::Result<()> {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path)?);
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("Dockerfile", opts)?;
    zip.write_all(b"FROM python:3.12-slim\nCOPY . /app\nCMD [\"python\", \"/app/main.py\"]\n")?;
    zip.start_file("main.py", opts)?;
    for i in 0..2000 {
        writeln!(zip, "print('scraping page {i}')")?;
    }
    zip.finish()?;
    Ok(())
}
