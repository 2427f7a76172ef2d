//! The plugin kit as interface 1.0 released it: frozen, so that a plugin
//! written against it keeps compiling against every later 1.x (new kits
//! live beside it, in their own crate). Only the plumbing under it may
//! change.

use std::{collections::HashMap, future::Future, path::PathBuf, sync::Arc};

use abi_stable::std_types::RVec;
use async_ffi::FfiFuture;

use super::{
    extra_to_map, runtime::construct, spawn_guarded, wait_idle, Context, ProgressHandle, SinkWriter, SourceReader,
};
use crate::{
    Capabilities, CheckReport, CheckRequest, CredentialEntry, CredentialsRequest, DownloadDest, DownloadRequest, Extra,
    HostServicesBox, PResult, PluginError, PluginInfo, Provider, RegistryAuth, RegistryRequest, TransferResult,
    UploadRequest, UploadSource, API_VERSION,
};

/// A plugin library: its identity and how to build a provider from settings.
pub trait Plugin: CredentialProvider + Sized {
    /// The platform name, e.g. `local`. Unique among the plugins a host loads.
    const NAME: &'static str;
    /// The plugin's own version (usually `env!("CARGO_PKG_VERSION")`).
    const VERSION: &'static str;
    /// What the plugin offers (this kit offers the 1.0 operations).
    const CAPABILITIES: Capabilities = Capabilities::V1_0;

    /// Builds a provider from the plugin's settings (a JSON object). Runs on
    /// the plugin runtime; it must not block, but may await I/O.
    fn new(settings: serde_json::Value, ctx: Context) -> impl Future<Output = Result<Self, PluginError>> + Send;
}

/// The operations of a provider, as ordinary async Rust.
pub trait CredentialProvider: Send + Sync + 'static {
    /// Credentials for a registry, `None` when it needs none.
    fn registry_auth(
        &self,
        req: RegistryRequest,
    ) -> impl Future<Output = Result<Option<RegistryAuth>, PluginError>> + Send;

    /// Stores a project archive; all or nothing.
    fn upload(&self, req: Upload) -> impl Future<Output = Result<TransferResult, PluginError>> + Send;

    /// Fetches a project archive into the destination, verified.
    fn download(&self, req: Download) -> impl Future<Output = Result<TransferResult, PluginError>> + Send;

    /// The entries a build job needs.
    fn credentials(
        &self,
        req: CredentialsRequest,
    ) -> impl Future<Output = Result<Vec<CredentialEntry>, PluginError>> + Send;

    /// A cheap live probe.
    fn check(&self, req: CheckRequest) -> impl Future<Output = Result<CheckReport, PluginError>> + Send;
}

/// An upload, with the host's byte source turned into Rust types.
pub struct Upload {
    /// Object name (already validated by the host).
    pub name: String,
    /// The bytes.
    pub source: Source,
    /// Size in bytes when known in advance.
    pub size_hint: Option<u64>,
    /// Progress reporting (a no-op when the host did not ask for it).
    pub progress: ProgressHandle,
    /// Extra options.
    pub extra: HashMap<String, String>,
}

/// Where upload bytes come from.
pub enum Source {
    /// A local file; read it in parallel if that helps.
    Path(PathBuf),
    /// A host stream, as an `AsyncRead`.
    Stream(SourceReader),
}

/// A download, with the host's destination turned into Rust types.
pub struct Download {
    /// Bucket to read from.
    pub bucket: String,
    /// Object name.
    pub name: String,
    /// Where the bytes go.
    pub dest: Dest,
    /// Progress reporting (a no-op when the host did not ask for it).
    pub progress: ProgressHandle,
    /// Extra options.
    pub extra: HashMap<String, String>,
}

/// Where download bytes go.
pub enum Dest {
    /// Write the whole object to this file (create or truncate).
    Path(PathBuf),
    /// A host sink, as an `AsyncWrite`; call [`SinkWriter::finish`] once the
    /// object was written and verified.
    Sink(SinkWriter),
}

/// The ABI-facing provider wrapping a [`CredentialProvider`]. Used by
/// [`export_plugin!`](crate::export_plugin); not meant to be named directly.
#[doc(hidden)]
pub struct Adapter<P>(Arc<P>);

impl<P: CredentialProvider> Provider for Adapter<P> {
    fn registry_auth(&self, req: RegistryRequest) -> FfiFuture<PResult<abi_stable::std_types::ROption<RegistryAuth>>> {
        let p = self.0.clone();
        spawn_guarded("registry_auth", move || async move { p.registry_auth(req).await.map(Into::into) })
    }

    fn upload(&self, req: UploadRequest) -> FfiFuture<PResult<TransferResult>> {
        let p = self.0.clone();
        spawn_guarded("upload", move || async move {
            let source = match req.source {
                UploadSource::Path(p) => Source::Path(PathBuf::from(p.as_str())),
                UploadSource::Stream(s) => Source::Stream(SourceReader::new(s)),
            };
            let upload = Upload {
                name: req.name.into_string(),
                source,
                size_hint: req.size_hint.into_option(),
                progress: ProgressHandle::new(req.progress.into_option()),
                extra: extra_to_map(req.extra),
            };
            p.upload(upload).await
        })
    }

    fn download(&self, req: DownloadRequest) -> FfiFuture<PResult<TransferResult>> {
        let p = self.0.clone();
        spawn_guarded("download", move || async move {
            let dest = match req.dest {
                DownloadDest::Path(p) => Dest::Path(PathBuf::from(p.as_str())),
                DownloadDest::Sink(s) => Dest::Sink(SinkWriter::new(s)),
            };
            let download = Download {
                bucket: req.bucket.into_string(),
                name: req.name.into_string(),
                dest,
                progress: ProgressHandle::new(req.progress.into_option()),
                extra: extra_to_map(req.extra),
            };
            p.download(download).await
        })
    }

    fn credentials(&self, req: CredentialsRequest) -> FfiFuture<PResult<RVec<CredentialEntry>>> {
        let p = self.0.clone();
        spawn_guarded("credentials", move || async move { p.credentials(req).await.map(RVec::from) })
    }

    fn check(&self, req: CheckRequest) -> FfiFuture<PResult<CheckReport>> {
        let p = self.0.clone();
        spawn_guarded("check", move || async move { p.check(req).await })
    }

    fn wait_idle(&self) -> FfiFuture<PResult<()>> {
        wait_idle()
    }
}

/// The body of the exported `info` function.
#[doc(hidden)]
pub fn info_for<P: Plugin>() -> PluginInfo {
    PluginInfo {
        name: P::NAME.into(),
        version: P::VERSION.into(),
        api_version: API_VERSION.into(),
        capabilities: P::CAPABILITIES,
        extra: Extra::new(),
    }
}

/// The body of the exported `new_provider` function: parses the settings,
/// routes logs, and builds the provider on the plugin runtime.
#[doc(hidden)]
pub fn new_provider_for<P: Plugin>(settings_json: &str, host: HostServicesBox) -> PResult<crate::ProviderBox> {
    construct(P::NAME, settings_json, host, |settings, ctx| async move {
        P::new(settings, ctx).await.map(|p| Adapter(Arc::new(p)))
    })
}

/// Exports a plugin type implementing [`Plugin`] as the library's root module.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        #[allow(missing_docs)]
        pub mod __credhost_export {
            #[allow(unused_imports)]
            use super::*;

            #[::abi_stable::sabi_extern_fn]
            fn plugin_info() -> $crate::PluginInfo {
                // `info_for` only copies constants; it cannot panic. The
                // panic strategy is read here, where the plugin is compiled.
                $crate::sdk::info_for::<$plugin>()
                    .with_extra($crate::keys::PANIC, $crate::sdk::panic_strategy(cfg!(panic = "abort")))
            }

            #[::abi_stable::sabi_extern_fn]
            fn new_provider(
                settings_json: ::abi_stable::std_types::RStr<'_>,
                host: $crate::HostServicesBox,
            ) -> $crate::PResult<$crate::ProviderBox> {
                $crate::sdk::new_provider_for::<$plugin>(settings_json.as_str(), host)
            }

            #[::abi_stable::export_root_module]
            pub fn root_module() -> $crate::PluginRoot_Ref {
                use ::abi_stable::prefix_type::PrefixTypeTrait as _;
                $crate::PluginRoot { info: plugin_info, new_provider }.leak_into_prefix()
            }
        }
    };
}
