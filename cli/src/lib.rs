//! The `credhost` command line and `docker-credential-credhost`, thin front
//! ends over the `credhost` library: flags are parsed ([`flags`]), resolved
//! once into per-command arguments ([`args`]), and each command is one small
//! function ([`commands`]); library errors become exit codes ([`error`]).

pub mod args;
pub mod commands;
pub mod credhelper;
pub mod docker_config;
pub mod error;
pub mod flags;
pub mod job_env;
pub mod logging;
pub mod output;
pub mod progress;

use clap::Parser;

use crate::error::exit;

/// Runs `credhost` and returns the process exit code.
pub fn run() -> i32 {
    let cli = match flags::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            return code;
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
            r = commands::run(&global, &command, &active) => match r {
                Ok(code) => code,
                Err(e) => report(e),
            },
            signal = termination() => {
                // The operation's future is dropped here, which cancels it in
                // the plugin and removes a download's temporary directory;
                // give the plugin a moment to clean up (abort a multipart
                // upload) before the process exits.
                eprintln!("credhost: {}", signal.describe());
                if let Some(p) = active.get() {
                    p.wait_idle(std::time::Duration::from_secs(10)).await;
                }
                signal.exit_code()
            }
        }
    });
    // Plugin tasks may still be winding down on their own runtimes; the
    // process exits regardless.
    runtime.shutdown_background();
    code
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
