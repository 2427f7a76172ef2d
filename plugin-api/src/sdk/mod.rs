//! The plugin-author SDK.
//!
//! Implement [`CredentialProvider`] (ordinary `async fn`s returning
//! `Result<_, PluginError>`) and [`Plugin`] for one type, then call
//! [`export_plugin!`](crate::export_plugin) once:
//!
//! ```text
//! struct MyProvider { /* settings */ }
//! impl credhost_plugin_api::sdk::Plugin for MyProvider { /* NAME, VERSION, new() */ }
//! impl credhost_plugin_api::sdk::CredentialProvider for MyProvider { /* async fns */ }
//! credhost_plugin_api::export_plugin!(MyProvider);
//! ```
//!
//! The plugin crate must also depend on `abi_stable` (the export attribute
//! refers to it by name) and be built as a `cdylib` with `panic = "unwind"`.
//!
//! What the SDK takes care of, so that every plugin keeps the ABI rules:
//! - each plugin library owns a small tokio runtime, built on first use; every
//!   call is spawned there and the host receives an [`FfiFuture`] that only
//!   awaits the task, so any host executor can poll it; dropping the future
//!   aborts the task;
//! - no panic crosses the boundary: constructor, method bodies and tasks are
//!   guarded and a panic becomes an [`ErrorKind::PANICKED`] error;
//! - the plugin's `tracing` events (and panic messages) go to the host's log
//!   through [`HostServices`], attributed to the plugin;
//! - host byte sources and sinks become tokio `AsyncRead` / `AsyncWrite`.

//!
//! Its parts: the frozen 1.0 kit (`kit_v1_0`: the traits and request types a
//! 1.0 plugin was written against, and its export macro), the runtime and
//! boundary guards every kit shares (`runtime`), log routing (`logging`),
//! the host's byte streams as tokio types (`io`), and helpers for settings
//! and errors (`helpers`). Everything is re-exported here under the names
//! 1.0 plugins use.

mod helpers;
mod io;
mod kit_v1_0;
mod logging;
mod process;
mod runtime;

pub use helpers::{error_chain, io_error, parse_settings, secret_from_env, Context};
pub use io::{host_error, ProgressHandle, SinkWriter, SourceReader};
pub use kit_v1_0::{info_for, new_provider_for, Adapter, CredentialProvider, Dest, Download, Plugin, Source, Upload};
pub use logging::LOG_DEPENDENCIES_VAR;
pub use process::ProcessRuntime;
pub use runtime::{construct, extra_to_map, panic_strategy, runtime, spawn_cleanup, spawn_guarded, wait_idle};
