//! The plugin's `tracing` events and panic messages, routed to the host's
//! log through its host-services object.

use std::sync::{Arc, OnceLock};

use abi_stable::std_types::RString;

use super::runtime::panic_message;
use crate::{HostServices, HostServicesBox, LogLevel};

struct HostLog {
    plugin: &'static str,
    host: HostServicesBox,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for HostLog {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: tracing_subscriber::layer::Context<'_, S>) {
        let meta = event.metadata();
        let level = to_level(*meta.level());
        let mut text = MessageText(String::new());
        event.record(&mut text);
        let _ = self.plugin;
        self.host.log(level, meta.target().into(), text.0.as_str().into());
    }
}

fn to_level(level: tracing::Level) -> LogLevel {
    match level {
        tracing::Level::ERROR => LogLevel::ERROR,
        tracing::Level::WARN => LogLevel::WARN,
        tracing::Level::INFO => LogLevel::INFO,
        tracing::Level::DEBUG => LogLevel::DEBUG,
        _ => LogLevel::TRACE,
    }
}

struct MessageText(String);

impl tracing::field::Visit for MessageText {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let sep = if self.0.is_empty() { "" } else { " " };
            let _ = write!(self.0, "{sep}{}={value:?}", field.name());
        }
    }
}

pub(super) fn install_host_logging(plugin: &'static str, host: HostServicesBox) {
    use tracing_subscriber::{layer::SubscriberExt as _, Layer as _};
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let host = Arc::new(host);
        let panic_host = host.clone();
        // This library has its own copy of std, so this hook sees only the
        // plugin's panics: they go to the host log instead of stderr.
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let msg = format!("panic{location}: {}", panic_message(payload));
            panic_host.log(LogLevel::ERROR, "panic".into(), msg.as_str().into());
        }));
        let filter_host = host.clone();
        let dependencies = std::env::var(LOG_DEPENDENCIES_VAR).is_ok_and(|v| v == "1");
        // Asked per event, so a host that changes its log level (or sets up
        // logging after loading the plugin) is obeyed.
        let filter = tracing_subscriber::filter::DynFilterFn::new(move |meta, _cx| {
            let max = filter_host.max_log_level();
            let level = to_level(*meta.level());
            if level > LogLevel::INFO && ((!dependencies && is_transport(meta.target())) || prints_sdk_output(meta)) {
                return false;
            }
            max != LogLevel(0) && level <= max
        });
        let layer = HostLog { plugin, host: ArcHost(host).into_box() };
        let subscriber = tracing_subscriber::registry().with(layer.with_filter(filter));
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

/// Set to `1`, forwards the debug and trace records of the HTTP, TLS and
/// cloud-SDK libraries a plugin uses; without it they stay in the plugin.
/// Those records can hold credentials: request and response bodies (an ECR
/// authorization token), headers, signed URLs.
pub const LOG_DEPENDENCIES_VAR: &str = "CREDHOST_LOG_DEPENDENCIES";

/// The AWS SDK's trace record of every answer it deserialized
/// (`output_or_error`): it prints each field the service model does not
/// mark sensitive, and ECR's authorization token (a registry password) is
/// not marked, so it would show even where a plugin has the response body
/// record redacted. Never forwarded.
fn prints_sdk_output(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("aws_smithy_runtime") && meta.fields().field("output_or_error").is_some()
}

/// Whether `target` is a module of a transport library (an HTTP client or
/// server, TLS, a cloud SDK's runtime).
fn is_transport(target: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "aws_smithy",
        "aws_sdk_",
        "aws_config",
        "aws_runtime",
        "aws_sigv4",
        "aws_credential_types",
        "aws_types",
        "hyper",
        "h2",
        "reqwest",
        "rustls",
        "tokio_rustls",
        "hyper_rustls",
        "tower",
        "http",
        "ring",
        "want",
    ];
    PREFIXES.iter().any(|p| target.starts_with(p))
}

/// Shares one host-services object between the log layer and the panic hook.
struct ArcHost(Arc<HostServicesBox>);

impl HostServices for ArcHost {
    fn max_log_level(&self) -> LogLevel {
        self.0.max_log_level()
    }
    fn base_dir(&self) -> RString {
        self.0.base_dir()
    }
    fn log(&self, level: LogLevel, target: abi_stable::std_types::RStr<'_>, message: abi_stable::std_types::RStr<'_>) {
        self.0.log(level, target, message)
    }
}

impl ArcHost {
    fn into_box(self) -> HostServicesBox {
        crate::HostServices_TO::from_value(self, abi_stable::sabi_trait::TD_Opaque)
    }
}
