//! The `credhost` command line and `docker-credential-credhost`, thin front
//! ends over the `credhost` library: flags are parsed ([`flags`]), resolved
//! once into per-command arguments ([`args`]), and each command is one small
//! function ([`commands`]); library errors become exit codes ([`error`]).

pub mod args;
pub mod commands;
pub mod credhelper;
pub mod distribution;
pub mod docker_config;
pub mod error;
pub mod flags;
pub mod inspect;
pub mod job_env;
pub mod logging;
pub mod output;
pub mod progress;

use clap::Parser;

use crate::error::exit;

/// Runs `credhost` and returns the process exit code.
pub fn run() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == inspect::CHILD_ARG) {
        logging::init(0, false);
        return inspect::child(&args[2..]);
    }
    let cli = match flags::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // `--help` and `--version`.
            let _ = e.print();
            return exit::OK;
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // clap would print the whole help; one line says what is missing.
            let rendered = e.render().to_string();
            let usage = rendered.lines().find_map(|l| l.trim().strip_prefix("Usage: ")).unwrap_or("credhost <COMMAND>");
            eprintln!("credhost: a command is missing; usage: {usage} (`--help` lists the commands)");
            return exit::USAGE;
        }
        Err(e) => {
            eprintln!("credhost: {}", usage_error_line(&e.render().to_string()));
            return exit::USAGE;
        }
    };
    logging::init(cli.verbose, cli.quiet);
    let (global, command) = match args::resolve(cli) {
        Ok(resolved) => resolved,
        Err(e) => return report(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("credhost: cannot start the async runtime: {e}");
            return exit::OTHER;
        }
    };
    let active = commands::Active::default();
    let code = runtime.block_on(async {
        tokio::select! {
            r = commands::run(&global, &command, &active) => {
                // A failed operation's clean-up (aborting a multipart upload,
                // cancelling a resumable session) runs after the error came
                // back: wait for it, within bounds, before the process ends.
                if let Some(p) = active.get() {
                    p.close(std::time::Duration::from_secs(10)).await;
                }
                match r {
                    Ok(code) => code,
                    Err(e) => report(e),
                }
            }
            signal = termination() => {
                // The operation's future is dropped here, which cancels it in
                // the plugin and removes a download's temporary directory;
                // give the plugin a moment to clean up (abort a multipart
                // upload) before the process exits.
                eprintln!("credhost: {}", signal.describe());
                if let Some(p) = active.get() {
                    p.close(std::time::Duration::from_secs(10)).await;
                }
                exit_now(signal.exit_code())
            }
        }
    });
    // Plugin tasks may still be winding down on their own runtimes; the
    // process exits regardless.
    runtime.shutdown_background();
    code
}

/// A command-line error as clap renders it (an `error:` line, indented
/// details, a tip, a `Usage:` line and a pointer to `--help`, on several
/// lines), on one line: the parts joined by `; `, the pointer left out.
pub fn usage_error_line(rendered: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut after_blank = true;
    for line in rendered.lines() {
        let text = line.trim();
        if text.is_empty() {
            after_blank = true;
            continue;
        }
        if text.starts_with("For more information, try") {
            continue;
        }
        let indented = line.starts_with(char::is_whitespace);
        match parts.last_mut() {
            Some(last) if indented && !after_blank => {
                last.push(' ');
                last.push_str(text);
            }
            _ => {
                let text = text.strip_prefix("error: ").unwrap_or(text);
                parts.push(match text.strip_prefix("Usage: ") {
                    Some(usage) => format!("usage: {usage}"),
                    None => text.to_owned(),
                });
            }
        }
        after_blank = false;
    }
    parts.join("; ")
}

/// Ends the process at once with `code`, after a signal: without the exit
/// handlers of `exit()`, which would wait for a thread still loading a
/// plugin library (the C library's exit takes the dynamic loader's lock,
/// which that thread holds while the library's constructors run).
/// Everything worth keeping is already done: the operation was cancelled
/// and its clean-up waited for; the output streams are flushed here.
fn exit_now(code: i32) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit has no preconditions; it ends the process.
    unsafe { libc::_exit(code) }
}

fn report(e: error::Error) -> i32 {
    if !e.is_quiet() {
        eprintln!("credhost: {}", e.message());
    }
    e.exit_code()
}

/// A signal that ends the process.
#[derive(Clone, Copy)]
enum Termination {
    Interrupt,
    Terminate,
    Hangup,
}

impl Termination {
    fn describe(self) -> &'static str {
        match self {
            Termination::Interrupt => "interrupted",
            Termination::Terminate => "terminated (SIGTERM)",
            Termination::Hangup => "hung up (SIGHUP)",
        }
    }

    /// 128 and the signal's number, as shells report it.
    fn exit_code(self) -> i32 {
        match self {
            Termination::Interrupt => exit::INTERRUPTED,
            Termination::Terminate => 143,
            Termination::Hangup => 129,
        }
    }
}

/// Waits for SIGINT (Ctrl-C), SIGTERM (what Kubernetes, CI runners and
/// `timeout` send) or SIGHUP. A signal that cannot be watched is not waited for.
async fn termination() -> Termination {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        async fn on(kind: SignalKind) {
            match signal(kind) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => Termination::Interrupt,
            _ = on(SignalKind::terminate()) => Termination::Terminate,
            _ = on(SignalKind::hangup()) => Termination::Hangup,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        Termination::Interrupt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_fit_on_one_line() {
        let rendered = "error: the following required arguments were not provided:\n  <FILE>\n\nUsage: credhost upload <FILE>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_error_line(rendered),
            "the following required arguments were not provided: <FILE>; usage: credhost upload <FILE>"
        );
        let rendered = "error: unexpected argument '--format' found\n\n  tip: 'token --format' exists\n\nUsage: credhost [OPTIONS] <COMMAND>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_error_line(rendered),
            "unexpected argument '--format' found; tip: 'token --format' exists; usage: credhost [OPTIONS] <COMMAND>"
        );
        let rendered = "error: invalid value 'xml' for '--format <FORMAT>'\n  [possible values: docker, json]\n\nFor more information, try '--help'.\n";
        assert_eq!(
            usage_error_line(rendered),
            "invalid value 'xml' for '--format <FORMAT>' [possible values: docker, json]"
        );
    }
}
