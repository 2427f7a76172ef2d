//! Log output on standard error, chosen by `-v`/`--quiet` or `CREDHOST_LOG`.

/// Installs the log subscriber: warnings by default, `-v` info, `-vv`
/// debug, `-vvv` trace, `--quiet` errors only; `CREDHOST_LOG` (a tracing
/// filter such as `debug` or `credhost=trace`) overrides them.
pub fn init(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("CREDHOST_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(verbose > 1)
        .try_init();
}
