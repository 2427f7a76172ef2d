//! `credhost-plugin-runner`: runs one plugin instance in a process of its
//! own for a credhost host (`isolation = "process"`), serving it over the
//! socket the host hands it as descriptor 3. Started by credhost only.

fn main() {
    let level = std::env::var(credhost::isolation::LOG_LEVEL_ENV).unwrap_or_else(|_| "warn".into());
    let filter = tracing_subscriber::EnvFilter::try_from_env("CREDHOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
    std::process::exit(credhost::isolation::runner_main());
}
