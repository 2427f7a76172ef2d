//! What the host offers every provider it builds: the base directory for
//! relative paths in settings, and a log that ends up in the host's
//! `tracing` output, attributed to the plugin.

use std::path::Path;

use abi_stable::std_types::{RStr, RString};
use credhost_plugin_api::{HostServices, LogLevel};

/// The host services of one plugin.
pub(crate) struct Services {
    plugin: String,
    base_dir: String,
}

impl Services {
    pub(crate) fn new(plugin: &str, base_dir: &Path) -> Self {
        // Absolute: a plugin (of any kit) resolves its paths against it, and
        // a service may change directory later.
        let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
        Self { plugin: plugin.to_owned(), base_dir: base_dir.display().to_string() }
    }
}

impl HostServices for Services {
    fn max_log_level(&self) -> LogLevel {
        use tracing::level_filters::LevelFilter;
        match LevelFilter::current() {
            LevelFilter::OFF => LogLevel(0),
            LevelFilter::ERROR => LogLevel::ERROR,
            LevelFilter::WARN => LogLevel::WARN,
            LevelFilter::INFO => LogLevel::INFO,
            LevelFilter::DEBUG => LogLevel::DEBUG,
            _ => LogLevel::TRACE,
        }
    }

    fn base_dir(&self) -> RString {
        self.base_dir.as_str().into()
    }

    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        // Transport errors quote URLs, and URLs can be credentials (signed
        // queries, upload session ids, user:password@).
        let message = credhost_plugin_api::rules::scrub_urls(message.as_str());
        let (plugin, target, message) = (self.plugin.as_str(), target.as_str(), message.as_str());
        match level {
            LogLevel::ERROR => tracing::error!(target: "credhost::plugin", plugin, target, "{message}"),
            LogLevel::WARN => tracing::warn!(target: "credhost::plugin", plugin, target, "{message}"),
            LogLevel::INFO => tracing::info!(target: "credhost::plugin", plugin, target, "{message}"),
            LogLevel::DEBUG => tracing::debug!(target: "credhost::plugin", plugin, target, "{message}"),
            _ => tracing::trace!(target: "credhost::plugin", plugin, target, "{message}"),
        }
    }
}
